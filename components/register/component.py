"""KFP component of the register stage (logic in core.py)."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import CPU_IMAGE, component


@component(CPU_IMAGE)
def register_op(
    model: Input[Model],
    metrics: Input[Metrics],
    train_data: Input[Dataset],
    model_name: str,
    registry: str,
    config_hash: str,
    gate_passed: bool,
    gate_reasons: str,
    pipeline_run: str,
    registered: Output[Model],
) -> str:
    """Register the exported, evaluated candidate as a registry version with lineage tags; alias `candidate`.

    Args:
        model: the exported Model artifact (weights, MODEL_CARD.md, lineage.json).
        metrics: the exported model's evaluation, logged on the version.
        train_data: the training rows, whose hash is recorded as lineage.
        model_name: registered model name.
        registry: JSON {backend: mlflow|vertex, ...}: where to register (components/register/backends.py).
        config_hash: sha256 of the validated config.
        gate_passed: the gate's verdict, recorded on the version (promotion checks it).
        gate_reasons: the gate's verdicts in words, stored as a tag.
        pipeline_run: the pipeline job name, stored as a tag.
        registered: a JSON record of the version (metadata carries model_uri).

    Returns:
        The registered model URI.
    """
    from components.register.core import register_to_outputs

    return register_to_outputs(
        model,
        metrics,
        train_data,
        registered,
        model_name=model_name,
        registry=registry,
        config_hash=config_hash,
        gate_passed=gate_passed,
        gate_reasons=gate_reasons,
        pipeline_run=pipeline_run,
    )
