"""gate: decide from rules whether a candidate may be registered, and say why in words."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Verdict:
    metric: str
    bound: str  # ">= 0.9" or "<= 0.1"
    value: float | None  # None = the metric was not reported
    passed: bool

    def sentence(self) -> str:
        if self.value is None:
            return f"FAIL {self.metric} {self.bound}: the metric was not reported"
        return f"{'PASS' if self.passed else 'FAIL'} {self.metric} = {self.value:.4f} (needs {self.bound})"


def apply_rules(metrics: dict[str, float], rules: list[dict]) -> tuple[bool, list[Verdict]]:
    """Every rule must pass; with no rules the gate passes (nothing was asked of the candidate)."""
    verdicts = []
    for rule in rules:
        name = rule["metric"]
        value = metrics.get(name)
        if "min" in rule and rule.get("min") is not None:
            bound, ok = f">= {rule['min']}", value is not None and value >= rule["min"]
        else:
            bound, ok = f"<= {rule['max']}", value is not None and value <= rule["max"]
        if value is not None and not math.isfinite(value):
            ok = False
        verdicts.append(Verdict(name, bound, value, bool(ok)))
    return all(v.passed for v in verdicts), verdicts


def report_markdown(passed: bool, verdicts: list[Verdict]) -> str:
    lines = [
        f"# Gate: {'PASSED' if passed else 'FAILED'}",
        "",
        "| metric | value | needs | verdict |",
        "|---|---|---|---|",
    ]
    for v in verdicts:
        value = "missing" if v.value is None else f"{v.value:.4f}"
        lines.append(f"| {v.metric} | {value} | {v.bound} | {'pass' if v.passed else 'FAIL'} |")
    if not verdicts:
        lines.append("| (no rules) | | | pass |")
    return "\n".join(lines) + "\n"
