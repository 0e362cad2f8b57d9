"""Gate rules: every rule must pass; missing or non-finite metrics fail; reasons carry the numbers."""

from __future__ import annotations

from components.gate.core import apply_rules, report_markdown

RULES = [{"metric": "exact_match", "min": 0.9}, {"metric": "schema_validity", "min": 0.99}]


def test_pass():
    passed, verdicts = apply_rules({"exact_match": 0.95, "schema_validity": 1.0}, RULES)
    assert passed and all(v.passed for v in verdicts)
    assert verdicts[0].sentence() == "PASS exact_match = 0.9500 (needs >= 0.9)"


def test_one_failing_rule_fails_the_gate():
    passed, verdicts = apply_rules({"exact_match": 0.5, "schema_validity": 1.0}, RULES)
    assert not passed
    assert [v.passed for v in verdicts] == [False, True]
    assert verdicts[0].sentence() == "FAIL exact_match = 0.5000 (needs >= 0.9)"
    assert report_markdown(passed, verdicts).startswith("# Gate: FAILED")


def test_missing_and_nan_metrics_fail():
    passed, verdicts = apply_rules({"schema_validity": float("nan")}, RULES)
    assert not passed
    assert verdicts[0].sentence() == "FAIL exact_match >= 0.9: the metric was not reported"
    assert not verdicts[1].passed


def test_max_bound_and_no_rules():
    assert apply_rules({"loss": 0.2}, [{"metric": "loss", "max": 0.3}])[0]
    assert not apply_rules({"loss": 0.4}, [{"metric": "loss", "max": 0.3}])[0]
    assert apply_rules({}, []) == (True, [])
    assert "| exact_match | 0.5000 | >= 0.9 | FAIL |" in report_markdown(
        *apply_rules({"exact_match": 0.5}, RULES[:1])
    )
