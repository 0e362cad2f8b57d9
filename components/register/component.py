"""KFP component of the register stage (logic in core.py)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register_op(
    model: Input[Model],
    metrics: Input[Metrics],
    train_data: Input[Dataset],
    model_name: str,
    tracking_uri: str,
    config_hash: str,
    gate_reasons: str,
    pipeline_run: str,
    registered: Output[Model],
) -> str:
    """Register the gated candidate as an MLflow model version with lineage tags; alias `candidate`.

    Args:
        model: the trained Model artifact that passed the gate.
        metrics: its evaluation metrics, logged on the registration run.
        train_data: the training rows, whose hash is recorded as lineage.
        model_name: registered model name.
        tracking_uri: MLflow tracking URI; empty = sqlite store under $SLMFORGE_HOME.
        config_hash: sha256 of the validated config.
        gate_reasons: the gate's verdicts, stored as a tag.
        pipeline_run: the pipeline job name, stored as a tag.
        registered: a JSON record of the version (metadata carries model_uri).

    Returns:
        The registered model URI, models:/<name>/<version>.
    """
    import json

    from components.register.core import register

    numbers = {k: float(v) for k, v in metrics.metadata.items() if isinstance(v, (int, float))}
    tags = {
        "data_sha256": train_data.metadata.get("sha256", ""),
        "config_hash": config_hash,
        "pipeline_run": pipeline_run,
        "base_model": model.metadata.get("base_model", ""),
        "git_sha": model.metadata.get("git_sha", ""),
        "gate": gate_reasons,
    }
    result = register(
        model.path,
        model_name=model_name,
        weights_sha256=model.metadata["sha256"],
        metrics=numbers,
        tags=tags,
        tracking_uri=tracking_uri,
    )
    record = {**vars(result), "weights_sha256": model.metadata["sha256"], "tags": tags}
    with open(registered.path, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2, sort_keys=True)
    registered.metadata.update(
        {k: record[k] for k in ("model_uri", "name", "version", "run_id", "weights_sha256")}
    )
    return result.model_uri
