"""gate: decide from rules whether a candidate may be registered, and say why in words.

Three kinds of rule (``gates.rules`` in the config; components/common/config.py validates them):

* threshold ``{metric: exact_match, min: 0.9}`` / ``{metric: ..., max: 0.1}``: the candidate's value
  against a fixed bound;
* hard constraint ``{metric: schema_validity, equals: 1.0}``: the value must be exactly this number;
* relative ``{metric: exact_match, not_worse_than: champion, margin: 0.0, required: false}``: the
  candidate must not be *confidently* worse than a baseline (base model, registered champion,
  retrieval baseline) scored on the same examples. Decided by a paired bootstrap over per-example
  scores: the rule fails when the upper bound of the two-sided confidence interval of the mean
  difference (candidate - baseline) lies below ``-margin``. A missing baseline skips the rule (it passes)
  unless ``required: true``. Higher is better for every metric a relative rule names.

Every rule must pass; with no rules the gate passes (nothing was asked of the candidate). Baselines
scored with other settings (eval set, template, decoding, token budget) or on another number of
examples are not comparable: ``decide`` raises ``GateError`` instead of deciding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.gate.bootstrap import GateError, paired_bootstrap

BASELINES = ("base", "champion", "retrieval")
# What the retrieval baseline shares with a generated answer (it reads no template and decodes nothing).
RETRIEVAL_KEYS = ("eval_sha256", "task_sha256", "examples")
BOOTSTRAP_DEFAULTS: dict[str, Any] = {"resamples": 2000, "seed": 0, "confidence": 0.95}


@dataclass(frozen=True)
class Verdict:
    kind: str  # threshold | equals | relative
    metric: str
    needs: str  # ">= 0.9", "<= 0.1", "== 1.0", "not worse than champion (margin 0.0)"
    value: float | None  # the candidate's value; None = not reported
    passed: bool
    status: str  # pass | fail | skipped (a skipped rule passes)
    sentence: str  # the verdict in words, with the numbers
    baseline: str | None = None  # relative rules: base | champion | retrieval
    baseline_value: float | None = None
    diff: float | None = None  # mean per-example difference, candidate - baseline
    ci_low: float | None = None
    ci_high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    passed: bool
    verdicts: list[Verdict]
    reasons: str  # one line per verdict, in words
    bootstrap: dict[str, Any] = field(default_factory=dict)  # the settings relative rules were decided with
    # every metric of the candidate beside each baseline's, with the bootstrap CI of the difference
    # (components/evaluate/report.py metric_rows); empty when the gate was decided without predictions
    comparison: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "reasons": self.reasons,
            "bootstrap": dict(self.bootstrap),
            "comparison": list(self.comparison),
        }


def _fmt(x: float | None) -> str:
    """Four decimals when they are exact, else enough digits not to show 0.89999 as 0.9000."""
    if x is None:
        return "missing"
    if not math.isfinite(x):
        return str(x)
    s = f"{x:.4f}"
    return s if float(s) == x else f"{x:.10g}"


def rule_kind(rule: dict) -> str:
    """threshold, equals or relative; GateError when a rule has not exactly one of its bounds."""
    given = [k for k in ("min", "max", "equals", "not_worse_than") if rule.get(k) is not None]
    if len(given) != 1:
        raise GateError(
            f"gate rule {rule!r} needs exactly one of min, max, equals, not_worse_than; got {given or 'none'}"
        )
    return {"min": "threshold", "max": "threshold", "equals": "equals"}.get(given[0], "relative")


def _n_examples(per_example: dict[str, list[float]], who: str) -> int | None:
    lengths = {len(v) for v in per_example.values()}
    if len(lengths) > 1:
        raise GateError(f"{who}'s per-example scores have different lengths per metric: {sorted(lengths)}")
    return lengths.pop() if lengths else None


def check_comparable(
    candidate_settings: dict, per_example: dict[str, list[float]], baselines: dict[str, dict]
) -> None:
    """Raise GateError when a baseline was scored with other settings or on another number of examples."""
    n = _n_examples(per_example, "the candidate")
    for name, baseline in baselines.items():
        if baseline is None:
            continue
        settings = baseline.get("settings") or {}
        keys = sorted(set(candidate_settings) | set(settings), key=str)
        if settings.get("decoding") == "retrieval":  # generates nothing: the eval rows and scorer must match
            keys = [k for k in keys if k in RETRIEVAL_KEYS]
        differ = [k for k in keys if candidate_settings.get(k, "<unset>") != settings.get(k, "<unset>")]
        if differ:
            detail = "; ".join(
                f"{k}: candidate {candidate_settings.get(k, '<unset>')!r}, {name} {settings.get(k, '<unset>')!r}"
                for k in differ
            )
            raise GateError(
                f"baseline {name!r} was scored with different settings than the candidate "
                f"({', '.join(map(str, differ))} differ: {detail}); re-score it with the candidate's settings"
            )
        n_base = _n_examples(baseline.get("per_example") or {}, f"baseline {name!r}")
        if n is not None and n_base is not None and n != n_base:
            raise GateError(
                f"baseline {name!r} was scored on {n_base} examples, the candidate on {n}; "
                "a paired comparison needs the same eval rows in the same order"
            )


def _bound_verdict(rule: dict, kind: str, value: float | None) -> Verdict:
    metric = rule["metric"]
    if kind == "equals":
        target = float(rule["equals"])
        needs, ok = f"== {rule['equals']}", value is not None and value == target
    elif rule.get("min") is not None:
        needs, ok = f">= {rule['min']}", value is not None and value >= rule["min"]
    else:
        needs, ok = f"<= {rule['max']}", value is not None and value <= rule["max"]
    words = f"exactly {rule['equals']}" if kind == "equals" else needs
    if value is None:
        sentence = f"FAIL {metric} {needs}: the metric was not reported"
    elif not math.isfinite(value):
        ok, sentence = False, f"FAIL {metric} = {value} (needs {words}): the value is not a finite number"
    else:
        sentence = f"{'PASS' if ok else 'FAIL'} {metric} = {_fmt(value)} (needs {words})"
    return Verdict(kind, metric, needs, value, bool(ok), "pass" if ok else "fail", sentence)


def _mean_or_none(scores: list[float] | None) -> float | None:
    return float(np.mean(scores)) if scores else None


def _relative_verdict(
    rule: dict,
    candidate: dict[str, float],
    per_example: dict[str, list[float]],
    baselines: dict[str, dict],
    boot: dict[str, Any],
) -> Verdict:
    metric, name = rule["metric"], rule["not_worse_than"]
    margin, required = float(rule.get("margin") or 0.0), bool(rule.get("required", False))
    needs = f"not worse than {name} (margin {margin:g})"
    value = candidate.get(metric, _mean_or_none(per_example.get(metric)))

    def verdict(ok: bool, status: str, sentence: str, **numbers) -> Verdict:
        return Verdict("relative", metric, needs, value, ok, status, sentence, baseline=name, **numbers)

    baseline = baselines.get(name)
    if baseline is None:
        if required:
            return verdict(
                False, "fail", f"FAIL {metric} {needs}: there is no {name} baseline and the rule is required"
            )
        why = " (no champion is registered yet)" if name == "champion" else ""
        return verdict(True, "skipped", f"SKIPPED {metric} {needs}: there is no {name} baseline{why}")
    base_scores = (baseline.get("per_example") or {}).get(metric)
    base_value = (baseline.get("metrics") or {}).get(metric, _mean_or_none(base_scores))
    cand_scores = per_example.get(metric)
    missing = [
        who for who, s in (("the candidate", cand_scores), (f"the {name} baseline", base_scores)) if not s
    ]
    if missing:
        return verdict(
            False,
            "fail",
            f"FAIL {metric} {needs}: no per-example {metric} scores for {' and '.join(missing)}, "
            "so the paired comparison cannot be made",
            baseline_value=base_value,
        )
    cand, base = np.asarray(cand_scores, dtype=np.float64), np.asarray(base_scores, dtype=np.float64)
    if not (np.isfinite(cand).all() and np.isfinite(base).all()):
        sentence = f"FAIL {metric} {needs}: per-example scores contain non-finite values"
        return verdict(False, "fail", sentence, baseline_value=base_value)
    diff, low, high = paired_bootstrap(cand, base, boot["resamples"], boot["seed"], boot["confidence"])
    pct = f"{boot['confidence'] * 100:g}%"
    numbers = (
        f"candidate {_fmt(value)} vs {name} {_fmt(base_value)}, difference {diff:+.4f}, "
        f"{pct} CI [{low:+.4f}, {high:+.4f}]"
    )
    ok = not high < -margin
    floor = f"{-margin:+.4f}" if margin else "0"
    if ok:
        why = (
            "the whole interval is at or above 0: the candidate is not worse"
            if low >= 0
            else f"its upper end {high:+.4f} is not below {floor}, so it is not confidently worse"
        )
        sentence = f"PASS {metric} {needs}: {numbers}; {why}"
    else:
        sentence = (
            f"FAIL {metric} {needs}: {numbers}; the whole interval lies below {floor}, "
            f"so the candidate is confidently worse than {name}"
        )
    return verdict(
        ok, "pass" if ok else "fail", sentence, baseline_value=base_value, diff=diff, ci_low=low, ci_high=high
    )


def decide(
    candidate: dict[str, float],
    per_example: dict[str, list[float]],
    baselines: dict[str, dict],
    candidate_settings: dict,
    rules: list[dict],
    bootstrap: dict | None = None,
) -> GateResult:
    """Apply every rule; the gate passes when all pass (a skipped rule passes).

    Args:
        candidate: the candidate's aggregate metrics, name -> value.
        per_example: the candidate's per-example scores, metric -> list in eval-row order.
        baselines: name (base | champion | retrieval) -> {"metrics": {...}, "per_example": {...},
            "settings": {...}}; a baseline that is absent (or None) skips the rules naming it.
        candidate_settings: what the candidate was scored with, e.g. {eval_sha256, template_sha256,
            decoding, max_new_tokens}; every baseline must have been scored with the same, key by key.
        rules: the config's gate rules (dicts as ``pipeline_parameters`` dumps them).
        bootstrap: {resamples, seed, confidence}; missing keys take BOOTSTRAP_DEFAULTS.

    Raises:
        GateError: a baseline is not comparable with the candidate (settings or example count differ),
            or a rule is malformed.
    """
    boot = {**BOOTSTRAP_DEFAULTS, **{k: v for k, v in (bootstrap or {}).items() if v is not None}}
    boot = {
        "resamples": int(boot["resamples"]),
        "seed": int(boot["seed"]),
        "confidence": float(boot["confidence"]),
    }
    baselines = {k: v for k, v in (baselines or {}).items() if v is not None}
    per_example = per_example or {}
    check_comparable(candidate_settings or {}, per_example, baselines)
    verdicts = []
    for rule in rules:
        kind = rule_kind(rule)
        if kind == "relative":
            if rule["not_worse_than"] not in BASELINES:
                raise GateError(f"gate rule {rule!r}: not_worse_than must be one of {', '.join(BASELINES)}")
            verdicts.append(_relative_verdict(rule, candidate, per_example, baselines, boot))
        else:
            verdicts.append(_bound_verdict(rule, kind, candidate.get(rule["metric"])))
    passed = all(v.passed for v in verdicts)
    reasons = "\n".join(v.sentence for v in verdicts) or "no gate rules: passed"
    relative = any(v.kind == "relative" for v in verdicts)
    return GateResult(passed, verdicts, reasons, boot if relative else {})


def apply_rules(metrics: dict[str, float], rules: list[dict]) -> tuple[bool, list[Verdict]]:
    """Threshold and equals rules on aggregate metrics alone (no baselines: relative rules are skipped,
    or fail when required). Kept for callers that have only the candidate's metrics."""
    result = decide(metrics, {}, {}, {}, rules)
    return result.passed, result.verdicts


def _cell(x: float | None, signed: bool = False) -> str:
    if x is None:
        return ""
    return f"{x:+.4f}" if signed and math.isfinite(x) else _fmt(x)


def report_markdown(result: GateResult) -> str:
    """Every verdict as a table row with its numbers, then every reason in words."""
    lines = [
        f"# Gate: {'PASSED' if result.passed else 'FAILED'}",
        "",
        "| kind | metric | value | needs | baseline | baseline value | diff | CI | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in result.verdicts:
        ci = f"[{v.ci_low:+.4f}, {v.ci_high:+.4f}]" if v.ci_low is not None and v.ci_high is not None else ""
        status = "FAIL" if v.status == "fail" else v.status
        lines.append(
            f"| {v.kind} | {v.metric} | {_cell(v.value)} | {v.needs} | {v.baseline or ''} "
            f"| {_cell(v.baseline_value)} | {_cell(v.diff, signed=True)} | {ci} | {status} |"
        )
    if not result.verdicts:
        lines.append("| (no rules) | | | | | | | | pass |")
    lines += ["", "## Reasons", ""]
    lines += [f"- {v.sentence}" for v in result.verdicts] or ["- no gate rules: passed"]
    if result.comparison:
        names = sorted({n for row in result.comparison for n in row["baselines"]})
        conf = float(result.bootstrap.get("confidence", 0.95)) if result.bootstrap else 0.95
        lines += ["", "## Metrics vs baselines", ""]
        lines.append(
            "| metric | candidate | "
            + " | ".join(f"{n} | candidate − {n} [{conf:.0%} CI]" for n in names)
            + " |"
        )
        lines.append("|---|---|" + "---|---|" * len(names))
        for row in result.comparison:
            cells = [row["metric"], _cell(row["candidate"])]
            for n in names:
                value, ci = row["baselines"].get(n, (None, None))
                cells += [_cell(value), f"{ci[0]:+.4f} [{ci[1]:+.4f}, {ci[2]:+.4f}]" if ci else "–"]
            lines.append("| " + " | ".join(cells) + " |")
    if result.bootstrap:
        b = result.bootstrap
        note = (
            f"Relative rules: paired bootstrap over per-example scores, {b['resamples']} resamples, "
            f"seed {b['seed']}, {b['confidence'] * 100:g}% two-sided interval of the mean difference "
            "(candidate - baseline); a rule fails only when the whole interval lies below -margin."
        )
        lines += ["", note]
    return "\n".join(lines) + "\n"


__all__ = [
    "BASELINES",
    "BOOTSTRAP_DEFAULTS",
    "GateError",
    "GateResult",
    "Verdict",
    "apply_rules",
    "check_comparable",
    "decide",
    "paired_bootstrap",
    "report_markdown",
    "rule_kind",
]


def confusion_from_metadata(metadata: dict) -> tuple[list[str], list[list[int]]] | None:
    """The confusion matrix a KFP ClassificationMetrics artifact holds, or None."""
    matrix = (metadata or {}).get("confusionMatrix") or {}
    structure = matrix.get("structure", matrix)  # kfp 2.x writes annotationSpecs and rows at the top
    if not structure.get("annotationSpecs"):
        return None
    labels = [spec["displayName"] for spec in structure["annotationSpecs"]]
    return labels, [[int(v) for v in row["row"]] for row in structure["rows"]]


def scored_inputs(metrics, predictions, classification=None) -> dict[str, Any]:
    """A component's evaluation inputs (KFP artifacts) as ``judge`` takes them."""
    return {
        "metrics": dict(metrics.metadata),
        "predictions": predictions.path,
        "settings": dict(predictions.metadata.get("settings") or {}),
        "confusion": confusion_from_metadata(classification.metadata) if classification is not None else None,
    }


def judge(
    candidate: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    *,
    task_type: str,
    rules: list[dict],
    bootstrap: dict,
    html_path: str | Path,
    divergences_path: str | Path,
    title: str,
):
    """Decide the gate on a candidate and its baselines and write the HTML report and divergence table.

    ``candidate`` and each baseline: {"metrics": dict, "predictions": path, "settings": dict}; a baseline
    whose metrics say ``available = 0`` (no champion yet) is absent. Returns the GateResult.
    """
    from dataclasses import replace

    from components.evaluate.report import Evaluated, divergences, metric_rows, render_html, write_divergences

    cand = Evaluated.load("candidate", candidate["metrics"], candidate["predictions"], candidate["settings"])
    present = [
        Evaluated.load(name, b["metrics"], b["predictions"], b["settings"])
        for name, b in baselines.items()
        if b["metrics"].get("available", 1) != 0
    ]
    result = decide(
        cand.metrics,
        cand.per_example(),
        {
            b.name: {"metrics": b.metrics, "per_example": b.per_example(), "settings": b.settings}
            for b in present
        },
        cand.settings,
        rules,
        bootstrap,
    )
    rows = divergences(cand, present, task_type)
    write_divergences(rows, divergences_path)
    boot = {**BOOTSTRAP_DEFAULTS, **(bootstrap or {})}
    comparison = metric_rows(
        cand, present, int(boot["resamples"]), int(boot["seed"]), float(boot["confidence"])
    )
    result = replace(result, comparison=comparison)
    Path(html_path).parent.mkdir(parents=True, exist_ok=True)
    Path(html_path).write_text(
        render_html(
            title=title,
            task_type=task_type,
            candidate=cand,
            baselines=present,
            verdicts=[v.to_dict() for v in result.verdicts],
            passed=result.passed,
            divergence_rows=rows,
            comparison=comparison,
            confusion=candidate.get("confusion"),
            resamples=int(boot["resamples"]),
            seed=int(boot["seed"]),
            confidence=float(boot["confidence"]),
        ),
        encoding="utf-8",
    )
    return result
