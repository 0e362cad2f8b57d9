"""KFP component of the augment stage (options, teacher and tables in stage.py; the checks in core.py)."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from components.images import CPU_IMAGE, component


@component(CPU_IMAGE)
def augment_op(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    split_card: Input[Artifact],
    upstream_events: Input[Artifact],
    enabled: bool,
    n: int,
    teacher: str,
    model: str,
    endpoint: str,
    key_env: str,
    project: str,
    location: str,
    temperature: float,
    max_output_tokens: int,
    timeout_s: float,
    retries: int,
    oracle: str,
    prompt_template: str,
    max_usd: float,
    max_workers: int,
    cache: str,
    task_type: str,
    output_schema: str,
    labels: str,
    system_prompt: str,
    near_dup_threshold: float,
    config_hash: str,
    augmented: Output[Dataset],
    card: Output[Artifact],
    report: Output[Markdown],
    events: Output[Artifact],
):
    """Add teacher paraphrases of the training rows that a validator confirms (off: the rows as they are).

    Args:
        train_data: the split's training rows; every one is kept.
        eval_data: the held-out rows: no paraphrase may repeat one of their user turns.
        split_card: the split's dataset card, extended here with the augmentation report.
        upstream_events: the audit stream so far.
        enabled: whether to augment; false = train_data passes through unchanged.
        n: paraphrases asked for per user turn.
        teacher: gemini, openai or hf.
        model: the teacher model.
        endpoint: openai: the server's base URL; gemini: an API endpoint instead of Google's.
        key_env: openai: the environment variable that holds the key; empty = none.
        project: gemini: the GCP project.
        location: gemini: the Vertex AI location.
        temperature: sampling temperature of the paraphrases.
        max_output_tokens: the most tokens one reply may hold.
        timeout_s: seconds per teacher call before a retry.
        retries: retries of a call that timed out or got 408/429/5xx.
        oracle: module:function labelling a row; empty = the teacher re-labels.
        prompt_template: the request for paraphrases; empty = the default.
        max_usd: the dollars the teacher may cost; -1 = no cap.
        max_workers: teacher calls in flight at once.
        cache: sqlite file of answered calls; empty = under $SLMFORGE_HOME.
        task_type: structured, classification or generation (the label checks).
        output_schema: the task's JSON Schema as JSON text; empty = none.
        labels: JSON list of the classification labels.
        system_prompt: the task's system message (a teacher that re-labels answers with it).
        near_dup_threshold: Jaccard at which a paraphrase is a near duplicate, as clean's.
        config_hash: sha256 of the validated config, recorded as provenance.
        augmented: every training row, then the added ones.
        card: the dataset card with the augmentation report (manifest.json ``augment``).
        report: the augmentation report, shown in the pipeline UI.
        events: the audit stream with the augmentation's events appended.
    """
    from pathlib import Path

    from components.augment.core import report_markdown
    from components.augment.stage import AugmentOptions, extend_card, run_stage
    from components.common.events import write_events
    from components.common.provenance import stamp

    opts = AugmentOptions.from_inputs(
        enabled=enabled,
        n=n,
        teacher=teacher,
        model=model,
        endpoint=endpoint,
        key_env=key_env,
        project=project,
        location=location,
        temperature=temperature,
        max_output_tokens=max_output_tokens,
        timeout_s=timeout_s,
        retries=retries,
        oracle=oracle,
        prompt_template=prompt_template,
        max_usd=max_usd,
        max_workers=max_workers,
        cache=cache,
        task_type=task_type,
        output_schema=output_schema,
        labels=labels,
        system_prompt=system_prompt,
        near_dup_threshold=near_dup_threshold,
    )
    result = run_stage(train_data.path, eval_data.path, augmented.path, opts)
    augmented.metadata.update(
        {"rows": len(result.rows) if result else train_data.metadata.get("rows"), "augmented": opts.enabled}
    )
    if result:
        augmented.metadata.update({"rows_added": result.added, "teacher_cost_usd": result.cost_usd})
    train_sha = stamp(
        augmented.metadata,
        augmented.path,
        config_hash=config_hash,
        upstream={"train": train_data.metadata.get("sha256", "")},
    )
    extend_card(split_card.path, card.path, result, train_sha)
    Path(report.path).write_text(
        report_markdown(result) if result else "# Augmentation\n\nOff (data.augment.enabled: false).\n",
        encoding="utf-8",
    )
    write_events(events.path, upstream_events.path, result.events if result else [])
