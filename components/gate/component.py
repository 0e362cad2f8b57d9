"""KFP component of the gate stage (logic in core.py)."""

from kfp import dsl
from kfp.dsl import Input, Markdown, Metrics, Output

from components.images import CPU_IMAGE


# The decision is the single return value, not a NamedTuple field: kfp.local 2.17 cannot resolve a
# NamedTuple field inside a dsl.If condition and silently skips the branch (seen locally; a plain
# return value resolves). The reasons travel as a named output file.
@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def gate_op(
    candidate: Input[Metrics], rules: str, report: Output[Markdown], reasons: dsl.OutputPath(str)
) -> bool:
    """Apply the config's gate rules to the candidate's metrics; registration runs only on pass.

    Args:
        candidate: the candidate's evaluation metrics.
        rules: JSON list of rules, each {"metric": name, "min": x} or {"metric": name, "max": x}.
        report: a Markdown table of every rule's verdict.
        reasons: one line per rule, PASS or FAIL with the numbers.

    Returns:
        True when every rule passes.
    """
    import json

    from components.gate.core import apply_rules, report_markdown

    values = {k: float(v) for k, v in candidate.metadata.items() if isinstance(v, (int, float))}
    passed, verdicts = apply_rules(values, json.loads(rules))
    with open(report.path, "w", encoding="utf-8") as fh:
        fh.write(report_markdown(passed, verdicts))
    with open(reasons, "w", encoding="utf-8") as fh:
        fh.write("\n".join(v.sentence() for v in verdicts) or "no gate rules: passed")
    return passed
