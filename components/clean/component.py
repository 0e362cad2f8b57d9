"""KFP component of the clean stage (logic in core.py)."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from components.images import CPU_IMAGE, component


@component(CPU_IMAGE)
def clean_op(
    dataset: Input[Dataset],
    upstream_events: Input[Artifact],
    pii: str,
    pii_types: str,
    near_dup_threshold: float,
    max_tokens: int,
    base_model: str,
    system_prompt: str,
    max_reject_rate: float,
    config_hash: str,
    cleaned: Output[Dataset],
    rejects: Output[Dataset],
    events: Output[Artifact],
    report: Output[Markdown],
):
    """Redact PII, drop over-long rows, exact and near-duplicates (eval rows win over training copies).

    Args:
        dataset: the canonical table from ingest.
        upstream_events: the audit stream so far.
        pii: redact (replace with <TYPE>), block (reject the row) or off.
        pii_types: comma-separated PII types: EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS.
        near_dup_threshold: Jaccard similarity from which a row is a near-duplicate; -1 = exact only.
        max_tokens: tokens per rendered example, counted with the base model's tokenizer; -1 = no limit.
        base_model: the model whose tokenizer and chat template count tokens.
        system_prompt: the system turn rendered before rows that carry none (as in training).
        max_reject_rate: fail when ingest and clean together reject more than this share of rows.
        config_hash: sha256 of the validated config, recorded as provenance.
        cleaned: the rows that survived, canonical table.
        rejects: one JSON line per removed row: source, id, reason code, detail.
        events: the audit stream with this stage's events appended.
        report: what was removed and why, in Markdown.
    """
    from collections import Counter
    from pathlib import Path

    from components.clean.core import CleanOptions, clean, report_markdown
    from components.common.events import close_stage
    from components.common.provenance import stamp

    opts = CleanOptions.from_inputs(
        pii=pii,
        pii_types=pii_types,
        near_dup_threshold=near_dup_threshold,
        max_tokens=max_tokens,
        base_model=base_model,
        system_prompt=system_prompt,
    )
    result = clean(dataset.path, cleaned.path, rejects.path, opts)
    Path(report.path).write_text(report_markdown(result, opts), encoding="utf-8")
    cleaned.metadata.update({"rows": result.kept, "rows_in": result.rows_in, "pii": dict(result.pii)})
    rejects.metadata.update({"rows": sum(result.rejected.values()), "by_reason": dict(result.rejected)})
    for artifact in (cleaned, rejects):
        stamp(
            artifact.metadata,
            artifact.path,
            config_hash=config_hash,
            upstream={"dataset": dataset.metadata["sha256"]},
        )
    rejected = dict(result.rejected + Counter(dataset.metadata.get("rejected", {})))  # ingest + clean
    close_stage(
        events.path,
        upstream_events.path,
        result.events,
        stage="clean",
        rows_in=int(dataset.metadata.get("rows_in", result.rows_in)),
        rejected=rejected,
        max_reject_rate=max_reject_rate,
        samples=result.samples,
    )
