"""Gate rules: thresholds, hard constraints and "not worse than a baseline" by paired bootstrap.

Every rule must pass; missing or non-finite metrics fail; a missing baseline skips a relative rule unless
it is required; baselines scored differently from the candidate stop the decision; reasons carry numbers.
"""

from __future__ import annotations

import copy
import json
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml

from components.common import config as config_module
from components.common.config import GATE_BASELINES
from components.common.config_data import TaskConfig
from components.common.config_load import parse_config
from components.common.config_rules import RULES, ConfigError
from components.common.task import METRICS
from components.gate.core import (
    BASELINES,
    GateError,
    apply_rules,
    decide,
    paired_bootstrap,
    report_markdown,
)
from pipelines.parameters import pipeline_parameters

DEMO = Path(__file__).resolve().parents[2] / "examples" / "travel" / "config.yaml"
SETTINGS = {"eval_sha256": "e" * 64, "template_sha256": "t" * 64, "decoding": "greedy", "max_new_tokens": 96}
N = 200


def scores(correct: list[int] | range, n: int = N) -> list[float]:
    """Per-example 0/1 scores: 1.0 at the given indices."""
    out = np.zeros(n)
    out[list(correct)] = 1.0
    return out.tolist()


def baseline(per_example: dict[str, list[float]], settings: dict | None = None) -> dict:
    return {
        "metrics": {k: float(np.mean(v)) for k, v in per_example.items()},
        "per_example": per_example,
        "settings": dict(SETTINGS if settings is None else settings),
    }


def run(
    cand_scores: list[float], rules: list[dict], baselines: dict | None = None, metric: str = "exact_match"
):
    per_example = {metric: cand_scores}
    return decide(
        {metric: float(np.mean(cand_scores))}, per_example, baselines or {}, dict(SETTINGS), rules, {}
    )


# --- threshold and hard-constraint rules ------------------------------------------------------------

THRESHOLDS = [{"metric": "exact_match", "min": 0.9}, {"metric": "schema_validity", "min": 0.99}]


@pytest.mark.parametrize(
    ("metrics", "rules", "expected"),
    [
        ({"exact_match": 0.95}, [{"metric": "exact_match", "min": 0.9}], True),
        ({"exact_match": 0.9}, [{"metric": "exact_match", "min": 0.9}], True),  # the bound itself passes
        ({"exact_match": 0.89999}, [{"metric": "exact_match", "min": 0.9}], False),
        ({"loss": 0.2}, [{"metric": "loss", "max": 0.3}], True),
        ({"loss": 0.4}, [{"metric": "loss", "max": 0.3}], False),
        ({"schema_validity": 1.0}, [{"metric": "schema_validity", "equals": 1.0}], True),
        ({"schema_validity": 0.999}, [{"metric": "schema_validity", "equals": 1.0}], False),
        ({"schema_validity": 1.001}, [{"metric": "schema_validity", "equals": 1.0}], False),
        ({}, [{"metric": "schema_validity", "equals": 1.0}], False),  # not reported
        ({"exact_match": float("nan")}, [{"metric": "exact_match", "max": 1.0}], False),
        ({"exact_match": float("inf")}, [{"metric": "exact_match", "min": 0.9}], False),
    ],
)
def test_threshold_and_equals_matrix(metrics, rules, expected):
    result = decide(metrics, {}, {}, {}, rules, {})
    assert result.passed is expected
    (v,) = result.verdicts
    assert v.passed is expected and v.status == ("pass" if expected else "fail")
    assert v.kind == ("equals" if "equals" in rules[0] else "threshold")


def test_sentences_carry_the_numbers():
    result = decide({"exact_match": 0.95, "schema_validity": 0.98}, {}, {}, {}, THRESHOLDS, {})
    assert result.verdicts[0].sentence == "PASS exact_match = 0.9500 (needs >= 0.9)"
    assert not result.passed and [v.passed for v in result.verdicts] == [True, False]
    hard = decide({"schema_validity": 0.99999}, {}, {}, {}, [{"metric": "schema_validity", "equals": 1.0}])
    # 0.99999 is not shown rounded to 1.0000 next to "needs exactly 1.0"
    assert hard.verdicts[0].sentence == "FAIL schema_validity = 0.99999 (needs exactly 1.0)"
    missing = decide({}, {}, {}, {}, THRESHOLDS[:1])
    assert missing.verdicts[0].sentence == "FAIL exact_match >= 0.9: the metric was not reported"
    nan = decide({"exact_match": float("nan")}, {}, {}, {}, THRESHOLDS[:1])
    assert "not a finite number" in nan.verdicts[0].sentence
    assert result.reasons.splitlines() == [v.sentence for v in result.verdicts]


def test_no_rules_pass_and_the_old_entry_point_still_works():
    result = decide({}, {}, {}, {}, [], {})
    assert result.passed and result.verdicts == [] and result.reasons == "no gate rules: passed"
    assert "| (no rules) |" in report_markdown(result)
    assert apply_rules({"exact_match": 0.95, "schema_validity": 1.0}, THRESHOLDS)[0]
    passed, verdicts = apply_rules({"exact_match": 0.5, "schema_validity": 1.0}, THRESHOLDS)
    assert not passed and [v.passed for v in verdicts] == [False, True]


# --- relative rules: paired bootstrap ---------------------------------------------------------------

BASE = scores(range(180))  # the baseline gets 180 of 200 right (0.90)


@pytest.mark.parametrize(
    ("name", "cand", "rule_extra", "expected", "why"),
    [
        ("base", BASE, {}, True, "equal: difference 0, CI [0, 0]"),
        ("base", scores(range(195)), {}, True, "better"),
        ("champion", scores(range(120)), {}, False, "clearly worse than the champion"),
        ("retrieval", scores(range(120)), {}, False, "clearly worse than the retrieval baseline"),
        # worse on 7 rows, better on 5: observed -0.01, the CI straddles 0 -> within noise
        ("champion", scores([*range(173), *range(180, 185)]), {}, True, "slightly worse within noise"),
        # worse on 12 rows: confidently worse by ~0.06; a margin of 0.1 tolerates it, 0.02 does not
        ("champion", scores(range(168)), {"margin": 0.1}, True, "worse but within the margin"),
        ("champion", scores(range(168)), {"margin": 0.02}, False, "worse beyond the margin"),
    ],
)
def test_not_worse_than_matrix(name, cand, rule_extra, expected, why):
    rule = {"metric": "exact_match", "not_worse_than": name, **rule_extra}
    result = run(cand, [rule], {name: baseline({"exact_match": BASE})})
    (v,) = result.verdicts
    assert result.passed is expected, (why, v.sentence)
    assert v.status == ("pass" if expected else "fail") and v.kind == "relative" and v.baseline == name
    assert v.diff == pytest.approx(np.mean(cand) - np.mean(BASE))
    assert v.ci_low <= v.diff <= v.ci_high
    assert v.value == pytest.approx(np.mean(cand)) and v.baseline_value == pytest.approx(0.9)
    margin = rule_extra.get("margin", 0.0)
    assert (v.ci_high < -margin) is (not expected)  # the decision rule itself


def test_worse_than_champion_says_so_in_words():
    result = run(
        scores(range(120)),
        [{"metric": "exact_match", "not_worse_than": "champion"}],
        {"champion": baseline({"exact_match": BASE})},
    )
    (v,) = result.verdicts
    assert v.ci_high < 0 and v.diff == pytest.approx(-0.3)
    assert v.sentence.startswith("FAIL exact_match not worse than champion (margin 0): candidate 0.6000 vs ")
    assert "difference -0.3000, 95% CI [" in v.sentence and "confidently worse than champion" in v.sentence
    noise = run(
        scores([*range(173), *range(180, 185)]),
        [{"metric": "exact_match", "not_worse_than": "champion"}],
        {"champion": baseline({"exact_match": BASE})},
    )
    (n,) = noise.verdicts
    assert n.ci_low < 0 < n.ci_high and "not confidently worse" in n.sentence


def test_equal_scores_give_a_zero_interval():
    (v,) = run(
        BASE, [{"metric": "exact_match", "not_worse_than": "base"}], {"base": baseline({"exact_match": BASE})}
    ).verdicts
    assert (v.diff, v.ci_low, v.ci_high) == (0.0, 0.0, 0.0) and v.passed


def test_missing_champion_is_skipped_unless_required():
    rule = {"metric": "exact_match", "not_worse_than": "champion"}
    skipped = run(BASE, [rule], {"base": baseline({"exact_match": BASE})})
    (v,) = skipped.verdicts
    assert skipped.passed and v.passed and v.status == "skipped"
    assert v.sentence == (
        "SKIPPED exact_match not worse than champion (margin 0): there is no champion baseline "
        "(no champion is registered yet)"
    )
    assert run(BASE, [rule], {"champion": None}).verdicts[0].status == "skipped"  # None = absent
    required = run(BASE, [{**rule, "required": True}])
    assert not required.passed and required.verdicts[0].status == "fail"
    assert "there is no champion baseline and the rule is required" in required.verdicts[0].sentence


def test_relative_rule_without_per_example_scores_fails():
    rule = {"metric": "exact_match", "not_worse_than": "base"}
    no_candidate = decide(
        {"exact_match": 0.9}, {}, {"base": baseline({"exact_match": BASE})}, SETTINGS, [rule]
    )
    assert (
        not no_candidate.passed
        and "no per-example exact_match scores for the candidate" in no_candidate.reasons
    )
    no_base = run(BASE, [rule], {"base": baseline({"schema_validity": BASE})})
    assert not no_base.passed and "for the base baseline" in no_base.reasons
    nan = run([float("nan"), *BASE[1:]], [rule], {"base": baseline({"exact_match": BASE})})
    assert not nan.passed and "non-finite" in nan.reasons


def test_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(7)
    cand, base = rng.random(300), rng.random(300)
    a = paired_bootstrap(cand, base, resamples=500, seed=3, confidence=0.9)
    assert a == paired_bootstrap(cand, base, resamples=500, seed=3, confidence=0.9)
    assert a != paired_bootstrap(cand, base, resamples=500, seed=4, confidence=0.9)
    rule = [{"metric": "exact_match", "not_worse_than": "base"}]
    args = (
        {"exact_match": 0.5},
        {"exact_match": cand.tolist()},
        {"base": baseline({"exact_match": base.tolist()})},
        SETTINGS,
        rule,
        {"seed": 11},
    )
    assert decide(*args) == decide(*args)
    assert decide(*args).bootstrap == {"resamples": 2000, "seed": 11, "confidence": 0.95}


def test_bootstrap_matches_a_loop_over_resamples():
    """The vectorised resampling is the textbook one: same index draws, mean difference per resample."""
    rng = np.random.default_rng(1)
    cand, base = rng.integers(0, 2, 50).astype(float), rng.integers(0, 2, 50).astype(float)
    idx = np.random.default_rng(5).integers(0, 50, size=(400, 50))
    means = [float(np.mean(cand[row] - base[row])) for row in idx]
    expected = np.quantile(means, [0.025, 0.975])
    diff, low, high = paired_bootstrap(cand, base, resamples=400, seed=5, confidence=0.95)
    assert diff == pytest.approx(np.mean(cand - base))
    assert (low, high) == pytest.approx(tuple(expected))
    wider = paired_bootstrap(cand, base, resamples=400, seed=5, confidence=0.99)
    assert wider[1] <= low and wider[2] >= high


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("eval_sha256", "f" * 64),
        ("template_sha256", "x" * 64),
        ("decoding", "sample"),
        ("max_new_tokens", 128),
    ],
)
def test_baseline_scored_with_other_settings_stops_the_gate(key, value):
    champion = baseline({"exact_match": BASE}, {**SETTINGS, key: value})
    with pytest.raises(
        GateError, match=rf"baseline 'champion' was scored with different settings.*\({key} differ"
    ):
        run(BASE, [{"metric": "exact_match", "not_worse_than": "champion"}], {"champion": champion})


def test_settings_key_missing_on_one_side_and_example_count_mismatch_stop_the_gate():
    short = {k: v for k, v in SETTINGS.items() if k != "decoding"}
    with pytest.raises(GateError, match="decoding differ"):
        run(BASE, [], {"base": baseline({"exact_match": BASE}, short)})  # checked even with no rule naming it
    with pytest.raises(GateError, match="scored on 199 examples, the candidate on 200"):
        run(BASE, [{"metric": "exact_match", "min": 0}], {"base": baseline({"exact_match": BASE[:199]})})
    with pytest.raises(GateError, match="different lengths per metric"):
        decide({}, {"exact_match": BASE, "schema_validity": BASE[:10]}, {}, {}, [])


def test_report_names_every_verdict_with_numbers_ci_and_reasons():
    rules = [
        {"metric": "exact_match", "min": 0.5},
        {"metric": "schema_validity", "equals": 1.0},
        {"metric": "exact_match", "not_worse_than": "champion"},
        {"metric": "exact_match", "not_worse_than": "retrieval"},
    ]
    cand = scores(range(120))
    result = decide(
        {"exact_match": 0.6, "schema_validity": 1.0},
        {"exact_match": cand},
        {"champion": baseline({"exact_match": BASE})},
        SETTINGS,
        rules,
        {"resamples": 1000, "seed": 0},
    )
    md = report_markdown(result)
    assert md.startswith("# Gate: FAILED")
    assert "| threshold | exact_match | 0.6000 | >= 0.5 |  |  |  |  | pass |" in md
    assert "| equals | schema_validity | 1.0000 | == 1.0 |" in md
    v = result.verdicts[2]
    assert (
        f"| relative | exact_match | 0.6000 | not worse than champion (margin 0) | champion | 0.9000 | -0.3000 | [{v.ci_low:+.4f}, {v.ci_high:+.4f}] | FAIL |"
        in md
    )
    assert "| not worse than retrieval (margin 0) | retrieval |" in md and "| skipped |" in md
    for verdict in result.verdicts:
        assert f"- {verdict.sentence}" in md
    assert "1000 resamples, seed 0, 95% two-sided interval" in md
    assert json.loads(json.dumps(result.to_dict()))["verdicts"][2]["status"] == "fail"


def test_malformed_rules_raise():
    with pytest.raises(GateError, match="exactly one of"):
        decide({}, {}, {}, {}, [{"metric": "exact_match", "min": 0.1, "equals": 1.0}])
    with pytest.raises(GateError, match="not_worse_than must be one of"):
        decide({}, {}, {}, {}, [{"metric": "exact_match", "not_worse_than": "yesterday"}])


# --- config validation ------------------------------------------------------------------------------


@pytest.fixture()
def raw() -> dict:
    """The demo config with its first two gate rules (exact_match min, schema_validity equals), so the
    positions asserted below do not move when the demo gains rules."""
    data = yaml.safe_load(DEMO.read_text())
    data["gates"]["rules"] = data["gates"]["rules"][:2]
    return data


def violations(raw: dict) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, DEMO.parent)
    return err.value.violations


def test_every_rule_kind_parses_and_reaches_the_gate(raw):
    raw["gates"] = {
        "rules": [
            {"metric": "exact_match", "min": 0.9},
            {"metric": "schema_validity", "equals": 1.0},
            {"metric": "field_match/[].flow", "max": 1.0},
            {"metric": "exact_match", "not_worse_than": "champion", "margin": 0.01},
            {"metric": "exact_match", "not_worse_than": "base", "required": True},
        ],
        "bootstrap": {"resamples": 500, "seed": 3, "confidence": 0.9},
    }
    cfg = parse_config(raw, DEMO.parent)
    assert cfg.gates.bootstrap.resamples == 500
    rules = json.loads(pipeline_parameters(cfg)["gate_rules"])
    assert rules[0] == {"metric": "exact_match", "min": 0.9}  # unset options are not dumped
    assert rules[3] == {"metric": "exact_match", "not_worse_than": "champion", "margin": 0.01}
    result = decide(
        {"exact_match": 0.95, "schema_validity": 1.0, "field_match/[].flow": 0.5},
        {},
        {},
        {},
        rules,
        cfg.gates.bootstrap.model_dump(),
    )
    assert [v.status for v in result.verdicts] == ["pass", "pass", "pass", "skipped", "fail"]
    default = parse_config(yaml.safe_load(DEMO.read_text()), DEMO.parent).gates.bootstrap
    assert default.model_dump() == {"resamples": 2000, "seed": 0, "confidence": 0.95}


@pytest.mark.parametrize(
    ("rule", "rule_id", "words"),
    [
        ({"metric": "exact_match", "min": 0.9, "equals": 1.0}, "GATE-001", "has min and equals"),
        ({"metric": "exact_match", "min": 0.9, "max": 1.0}, "GATE-001", "has min and max"),
        ({"metric": "exact_match"}, "GATE-001", "has no bound"),
        (
            {"metric": "exact_match", "equals": 1.0, "not_worse_than": "base"},
            "GATE-001",
            "equals and not_worse",
        ),
        ({"metric": "bleu", "min": 0.5}, "GATE-002", "'bleu' is not reported by structured tasks"),
        ({"metric": "accuracy", "not_worse_than": "base"}, "GATE-002", "'accuracy' is not reported"),
        ({"metric": "exact_match", "not_worse_than": "yesterday"}, "GATE-003", "'yesterday' is not one of"),
        ({"metric": "exact_match", "not_worse_than": "base", "margin": -0.01}, "GATE-004", "margin=-0.01"),
        ({"metric": "exact_match", "min": 0.9, "margin": 0.01}, "GATE-005", "sets margin but has no"),
        ({"metric": "exact_match", "equals": 1.0, "required": True}, "GATE-005", "sets required but has no"),
    ],
)
def test_rule_validation_names_the_rule_and_the_fix(raw, rule, rule_id, words):
    raw["gates"]["rules"].append(rule)
    found = violations(raw)
    assert [(r, w) for r, w, _ in found] == [(rule_id, "gates.rules.2")], found
    assert words in found[0][2]
    with pytest.raises(ConfigError) as err:
        parse_config(raw, DEMO.parent)
    assert f"[{rule_id}] gates.rules.2: " in str(err.value) and f"Fix: {RULES[rule_id][1]}" in str(err.value)


@pytest.mark.parametrize(
    ("bootstrap", "where", "words"),
    [
        ({"resamples": 10}, "gates.bootstrap.resamples", "resamples=10 is below 100"),
        ({"confidence": 1.5}, "gates.bootstrap.confidence", "confidence=1.5 is outside (0, 1)"),
        ({"confidence": 0}, "gates.bootstrap.confidence", "outside (0, 1)"),
    ],
)
def test_bootstrap_settings_are_checked(raw, bootstrap, where, words):
    raw["gates"]["bootstrap"] = bootstrap
    (found,) = violations(raw)
    assert found[:2] == ("GATE-006", where) and words in found[2]


def test_every_unknown_metric_is_reported_at_its_rule(raw):
    raw["gates"]["rules"] += [{"metric": "rouge_l", "min": 0.1}, {"metric": "f1/billing", "min": 0.1}]
    assert [(r, w) for r, w, _ in violations(raw)] == [
        ("GATE-002", "gates.rules.2"),
        ("GATE-002", "gates.rules.3"),
    ]


def test_metric_names_follow_the_task_type_metric_list(raw, monkeypatch):
    """task.METRICS[task.type] decides which names a gate may use (here: a classification list)."""
    monkeypatch.setattr(config_module, "METRICS", {"structured": METRICS["classification"]})
    ok = copy.deepcopy(raw)
    ok["gates"]["rules"] = [
        {"metric": "accuracy", "min": 0.8},
        {"metric": "f1/billing", "not_worse_than": "base"},
    ]
    parse_config(ok, DEMO.parent)
    found = violations(raw)  # the demo's exact_match / schema_validity are not classification metrics
    assert [(r, w) for r, w, _ in found] == [("GATE-002", "gates.rules.0"), ("GATE-002", "gates.rules.1")]
    assert "accuracy, macro_f1" in found[0][2]


SUPPORT = DEMO.parents[1] / "support" / "config.yaml"


@pytest.mark.skipif(
    "classification" not in typing.get_args(TaskConfig.model_fields["type"].annotation)
    or not SUPPORT.is_file(),
    reason="no classification task config yet",
)
def test_unknown_metric_for_a_classification_task():
    raw = yaml.safe_load(SUPPORT.read_text())
    assert raw["task"]["type"] == "classification"
    ok = copy.deepcopy(raw)
    ok["gates"]["rules"] = [
        {"metric": "accuracy", "min": 0.8},
        {"metric": "f1/billing", "not_worse_than": "champion"},
        {"metric": "label_validity", "equals": 1.0},
    ]
    parse_config(ok, SUPPORT.parent)
    raw["gates"]["rules"].append({"metric": "exact_match", "min": 0.9})
    with pytest.raises(ConfigError) as err:
        parse_config(raw, SUPPORT.parent)
    assert [(r, w) for r, w, _ in err.value.violations] == [("GATE-002", "gates.rules.2")]
    assert "'exact_match' is not reported by classification tasks" in str(err.value)


def test_config_and_gate_agree_on_the_baselines():
    assert GATE_BASELINES == BASELINES
