"""KFP component of the gate stage (logic in core.py)."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Output

from components.images import CPU_IMAGE, component


# The decision is the single return value, not a NamedTuple field: kfp.local 2.17 cannot resolve a
# NamedTuple field inside a dsl.If condition and silently skips the branch (seen locally; a plain
# return value resolves). The reasons travel as a named output file.
@component(CPU_IMAGE)
def gate_op(
    candidate: Input[Metrics],
    candidate_predictions: Input[Dataset],
    candidate_classification: Input[ClassificationMetrics],
    base: Input[Metrics],
    base_predictions: Input[Dataset],
    champion: Input[Metrics],
    champion_predictions: Input[Dataset],
    retrieval: Input[Metrics],
    retrieval_predictions: Input[Dataset],
    task_type: str,
    rules: str,
    bootstrap: str,
    title: str,
    report: Output[Markdown],
    html_report: Output[HTML],
    divergences: Output[Dataset],
    reasons: dsl.OutputPath(str),
) -> bool:
    """Apply the config's gate rules to the candidate and its baselines; registration runs only on pass.

    Args:
        candidate: the candidate's evaluation metrics.
        candidate_predictions: the candidate's per-example answers and scores (settings in metadata).
        candidate_classification: the candidate's confusion matrix (classification tasks).
        base: the untrained base model's metrics.
        base_predictions: its per-example answers and scores.
        champion: the registry champion's metrics (available = 0 when there is none).
        champion_predictions: its per-example answers and scores.
        retrieval: the retrieval baseline's metrics.
        retrieval_predictions: its per-example answers and scores.
        task_type: structured, classification or generation.
        rules: JSON list of rules, each {"metric": name} with one of "min", "max", "equals" or
            "not_worse_than" (see components/gate/core.py).
        bootstrap: JSON {resamples, seed, confidence} of the paired bootstrap.
        title: the report's title (the config name).
        report: a Markdown table of every rule's verdict.
        html_report: the evaluation report: metrics vs baselines with CIs, verdicts, charts, divergences.
        divergences: per example, the candidate's and the baselines' answers side by side.
        reasons: one line per rule, PASS, FAIL or SKIPPED with the numbers.

    Returns:
        True when every rule passes.
    """
    import json

    from components.gate.core import judge, report_markdown, scored_inputs

    result = judge(
        scored_inputs(candidate, candidate_predictions, candidate_classification),
        {
            "base": scored_inputs(base, base_predictions),
            "champion": scored_inputs(champion, champion_predictions),
            "retrieval": scored_inputs(retrieval, retrieval_predictions),
        },
        task_type=task_type,
        rules=json.loads(rules),
        bootstrap=json.loads(bootstrap),
        html_path=html_report.path,
        divergences_path=divergences.path,
        title=title,
    )
    with open(report.path, "w", encoding="utf-8") as fh:
        fh.write(report_markdown(result))
    with open(reasons, "w", encoding="utf-8") as fh:
        fh.write(result.reasons)
    return result.passed
