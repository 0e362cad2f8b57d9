"""KFP component of the split stage (logic in core.py)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def split_op(
    dataset: Input[Dataset],
    eval_fraction: float,
    seed: int,
    config_hash: str,
    train_data: Output[Dataset],
    eval_data: Output[Dataset],
):
    """Split the canonical table into train and eval, whole groups to one side, seeded.

    Args:
        dataset: the canonical table from ingest.
        eval_fraction: share of rows (rounded to whole groups) held out for evaluation.
        seed: seed of the group shuffle.
        config_hash: sha256 of the validated config, recorded as provenance.
        train_data: rows to train on.
        eval_data: held-out rows; no group also appears in train_data.
    """
    from components.common.provenance import stamp
    from components.split.core import split

    result = split(dataset.path, train_data.path, eval_data.path, eval_fraction, seed)
    upstream = {"dataset": dataset.metadata.get("sha256", "")}
    for artifact, rows, groups in (
        (train_data, result.train_rows, result.train_groups),
        (eval_data, result.eval_rows, result.eval_groups),
    ):
        artifact.metadata.update({"rows": rows, "groups": groups, "seed": seed})
        stamp(artifact.metadata, artifact.path, config_hash=config_hash, upstream=upstream)
