"""KFP component of the split stage (logic in core.py, dataset card in card.py)."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from components.images import CPU_IMAGE, component


@component(CPU_IMAGE)
def split_op(
    dataset: Input[Dataset],
    upstream_events: Input[Artifact],
    eval_fraction: float,
    validation_fraction: float,
    seed: int,
    cover: str,
    output_schema: str,
    config_hash: str,
    train_data: Output[Dataset],
    eval_data: Output[Dataset],
    validation_data: Output[Dataset],
    card: Output[Artifact],
    summary: Output[Markdown],
    events: Output[Artifact],
):
    """Split into train and eval (seeded, whole groups, every label value in train); write the dataset card.

    Args:
        dataset: the cleaned canonical table.
        upstream_events: the audit stream so far (ingest and clean counts for the card).
        eval_fraction: share of rows (rounded to whole groups) held out, unless the data has an explicit eval set.
        validation_fraction: share of rows (whole groups of the training side) set aside as the validation
            slice training watches; 0 = none.
        seed: seed of the group shuffle.
        cover: JSON list of fields whose every value must be in train; null = the schema's enum values.
        output_schema: the task's JSON Schema as JSON text; empty = none.
        config_hash: sha256 of the validated config, recorded as provenance.
        train_data: rows to train on.
        eval_data: held-out rows; no group also appears in train_data.
        validation_data: the validation slice, from the training groups (none of its groups is in
            train_data or eval_data); empty when validation_fraction is 0.
        card: folder with manifest.json, schema.json and dataset_summary.md.
        summary: dataset_summary.md, shown in the pipeline UI.
        events: the audit stream with the split's events appended.
    """
    import shutil

    from components.common.events import read_events, write_events
    from components.common.provenance import stamp
    from components.split.card import write_card
    from components.split.core import SplitOptions, split

    opts = SplitOptions.from_inputs(
        eval_fraction=eval_fraction,
        validation_fraction=validation_fraction,
        seed=seed,
        cover=cover,
        output_schema=output_schema,
    )
    result, hashes = (
        split(dataset.path, train_data.path, eval_data.path, opts, validation_data.path),
        {"dataset": dataset.metadata["sha256"]},
    )
    for name, artifact, rows, groups in (
        ("train", train_data, result.train_rows, result.train_groups),
        ("eval", eval_data, result.eval_rows, result.eval_groups),
        ("validation", validation_data, result.validation_rows, result.validation_groups),
    ):
        artifact.metadata.update({"rows": rows, "groups": groups, "seed": seed})
        hashes[name] = stamp(
            artifact.metadata, artifact.path, config_hash=config_hash, upstream={"dataset": hashes["dataset"]}
        )
    man = write_card(
        card.path, read_events(upstream_events.path), result, opts, config_hash=config_hash, hashes=hashes
    )
    shutil.copyfile(f"{card.path}/dataset_summary.md", summary.path)
    card.metadata.update({"rows": man["rows"], "rejected_by_reason": man["rejected_by_reason"]})
    write_events(events.path, upstream_events.path, result.events)
