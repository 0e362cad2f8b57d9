"""KFP component of the ingest stage (logic in core.py)."""

from kfp.dsl import Artifact, Dataset, Output

from components.images import CPU_IMAGE, component


@component(CPU_IMAGE)
def ingest_op(
    train_locator: str,
    eval_locator: str,
    shape: str,
    prompt_field: str,
    completion_field: str,
    group_field: str,
    id_field: str,
    output_schema: str,
    labels: str,
    label_normalize: str,
    chat_fixes: str,
    max_row_bytes: int,
    max_reject_rate: float,
    config_hash: str,
    dataset: Output[Dataset],
    rejects: Output[Dataset],
    events: Output[Artifact],
):
    """Read the data locators, recognise the row shape and map every row onto the canonical table.

    Args:
        train_locator: training data: PATH, jsonl:/json:/csv:/parquet:PATH (local or gs://), or hf:NAME:SPLIT.
        eval_locator: an explicit eval set in the same forms; empty = split eval from the training data.
        shape: auto, prompt_completion, alpaca, messages or sharegpt.
        prompt_field: prompt column of the prompt_completion shape.
        completion_field: target column of the prompt_completion shape.
        group_field: column with a group id; empty = each row is its own group.
        id_field: column with a stable row id; empty = source and row number.
        output_schema: the task's JSON Schema as JSON text (targets must validate); empty = no check.
        labels: a classification task's label set as a JSON list (targets must be one); [] = no check.
        label_normalize: comma-separated strip, lower: how a target is matched to a label; empty = exactly.
        chat_fixes: comma-separated drop_leading_assistant, drop_trailing_user: conversation repairs.
        max_row_bytes: source rows larger than this are rejected.
        max_reject_rate: fail when more than this share of rows is rejected.
        config_hash: sha256 of the validated config, recorded as provenance.
        dataset: the canonical table (id, group, source, history, prompt, completion).
        rejects: one JSON line per rejected row: source, row number, reason code, detail.
        events: the audit stream, started here.
    """

    from components.common.events import close_stage
    from components.common.provenance import stamp
    from components.ingest.core import IngestOptions, ingest

    opts = IngestOptions.from_inputs(
        shape=shape,
        prompt_field=prompt_field,
        completion_field=completion_field,
        group_field=group_field,
        id_field=id_field,
        output_schema=output_schema,
        labels=labels,
        label_normalize=label_normalize,
        chat_fixes=chat_fixes,
        max_row_bytes=max_row_bytes,
    )
    result = ingest(train_locator, eval_locator, opts, dataset.path, rejects.path)
    rejected = dict(result.rejected)
    dataset.metadata.update(
        {
            "rows": result.accepted,
            "rows_in": result.rows_in,
            "rejected": rejected,
            "chat_fixed": dict(result.fixed),
        }
    )
    dataset.metadata["shape"] = result.shape.shape
    rejects.metadata.update({"rows": sum(rejected.values()), "by_reason": rejected})
    for artifact in (dataset, rejects):
        stamp(artifact.metadata, artifact.path, config_hash=config_hash, upstream={})
    close_stage(
        events.path,
        None,
        result.events,
        stage="ingest",
        rows_in=result.rows_in,
        rejected=rejected,
        max_reject_rate=max_reject_rate,
        samples=result.samples,
    )
