"""Scoring by task type: one scorer per ``task.type``, the same for the candidate and every baseline.

* structured (JSON with a JSON Schema). Validity family: ``json_validity`` (parses), ``schema_validity``
  (validates), ``vocabulary_validity`` (every enum/const-bearing field holds one of the schema's values).
  Match family: ``exact_match`` (parsed value equal), ``field_match`` (leaf agreement, and
  ``field_match/<field>`` per field), ``argument_fidelity`` (the free-valued leaves — arguments such as a
  slot's value — that agree, counted on the examples whose vocabulary leaves are all right: right command,
  right arguments?).
* classification (a label set): ``label_validity`` (the output is one of the labels, after trimming
  whitespace), ``accuracy``, ``macro_f1`` over the label set, ``precision/<label>``, ``recall/<label>``,
  ``f1/<label>`` (scikit-learn), and a confusion matrix.
* generation (free text): ``exact_match`` (after trimming whitespace), ``rouge_l`` (rouge-score, F-measure,
  Porter stemming off), ``chrf`` and ``bleu`` (sacrebleu, corpus level, scaled to [0, 1]).

Every metric is in [0, 1]. ``Scored.per_example`` holds the per-example values of the metrics that are
means over examples (what a paired bootstrap resamples); ``Scored.details`` what a person reads per row.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from components.common.task import METRICS, field_name, leaves, parse_json, schema_validator

INVALID = "(invalid)"  # confusion-matrix column of outputs that are no label


@dataclass
class Scored:
    metrics: dict[str, float]
    per_example: dict[str, list[float]]
    details: list[dict[str, Any]]
    confusion: tuple[list[str], list[list[int]]] | None = None  # categories, rows = expected


# -- structured ------------------------------------------------------------------------------------------
def schema_vocabulary(schema: dict) -> dict[str, set]:
    """Property name -> the values its enum/const allows, gathered over the whole schema ($refs local)."""
    vocab: dict[str, set] = defaultdict(set)
    seen: set[int] = set()

    def resolve(node: Any) -> Any:
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
            target: Any = schema
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            node = target
        return node

    def values(node: Any) -> list:
        node = resolve(node)
        if not isinstance(node, dict):
            return []
        found = list(node.get("enum", [])) + ([node["const"]] if "const" in node else [])
        for key in ("oneOf", "anyOf"):
            for sub in node.get(key, []):
                found += values(sub)
        return found

    def walk(node: Any) -> None:
        node = resolve(node)
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict) or id(node) in seen:
            return
        seen.add(id(node))
        for name, sub in (node.get("properties") or {}).items():
            allowed = values(sub)
            if allowed:
                vocab[name].update(json.dumps(v, sort_keys=True) for v in allowed)
        for value in node.values():
            if isinstance(value, (dict, list)):
                walk(value)

    walk(schema)
    return dict(vocab)


def _key(path: str) -> str:
    return path.rsplit(".", 1)[-1] if "." in path else path.split("]")[-1]


class StructuredScorer:
    def __init__(self, output_schema: dict):
        self.validator = schema_validator(output_schema)
        self.vocabulary = schema_vocabulary(output_schema)

    def _is_vocab(self, path: str) -> bool:
        return _key(path) in self.vocabulary

    def score(self, predictions: list[str], targets: list[str]) -> Scored:
        rows, details = [], []
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        arg_matched = arg_counted = 0
        for prediction, target in zip(predictions, targets, strict=True):
            expected, _ = parse_json(target)
            exp = leaves(expected)
            got_value, error = parse_json(prediction)
            json_ok = error is None
            got = leaves(got_value) if json_ok else {}
            schema_ok = vocab_ok = False
            if json_ok:
                problems = sorted(self.validator.iter_errors(got_value), key=lambda e: list(e.path))
                schema_ok = not problems
                error = f"schema: {problems[0].message}" if problems else None
                vocab_ok = all(
                    json.dumps(v, sort_keys=True) in self.vocabulary[_key(p)]
                    for p, v in got.items()
                    if self._is_vocab(p)
                )
            hits = {p: p in exp and p in got and exp[p] == got[p] for p in exp.keys() | got.keys()}
            for p, hit in hits.items():
                totals[field_name(p)][0] += hit
                totals[field_name(p)][1] += 1
            # Arguments (free-valued leaves) count where the vocabulary (commands, flows, slots) is right.
            if json_ok and all(hit for p, hit in hits.items() if self._is_vocab(p)):
                args = [hit for p, hit in hits.items() if not self._is_vocab(p)]
                arg_matched += sum(args)
                arg_counted += len(args)
            exact = json_ok and got_value == expected
            rows.append(
                {
                    "json_validity": float(json_ok),
                    "schema_validity": float(schema_ok),
                    "vocabulary_validity": float(vocab_ok),
                    "exact_match": float(exact),
                    "field_match": sum(hits.values()) / len(hits) if hits else float(exact),
                }
            )
            details.append(
                {
                    "error": error or "",
                    "fields_differing": sorted({field_name(p) for p, hit in hits.items() if not hit}),
                }
            )
        per_example = _columns(rows)
        metrics = {k: _mean(v) for k, v in per_example.items() if k != "field_match"}
        matched = sum(m for m, _ in totals.values())
        counted = sum(c for _, c in totals.values())
        metrics["field_match"] = matched / counted if counted else 0.0
        for f in sorted(totals):
            m, c = totals[f]
            metrics[f"field_match/{f}"] = m / c if c else 0.0
        metrics["argument_fidelity"] = arg_matched / arg_counted if arg_counted else 0.0
        return Scored(metrics, per_example, details)


# -- classification --------------------------------------------------------------------------------------
class ClassificationScorer:
    def __init__(self, labels: list[str]):
        if len(set(labels)) < 2:
            raise ValueError(f"a classification task needs at least 2 distinct labels, got {labels}")
        self.labels = list(labels)
        self._by_text = {label.strip(): label for label in labels}

    def parse(self, text: str) -> str | None:
        """The label an output names (whitespace trimmed), or None when it is no label."""
        return self._by_text.get(text.strip())

    def score(self, predictions: list[str], targets: list[str]) -> Scored:
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        parsed = [self.parse(p) for p in predictions]
        expected = [self.parse(t) for t in targets]
        unknown = sorted({t for t, e in zip(targets, expected, strict=True) if e is None})
        if unknown:
            raise ValueError(
                f"eval targets that are not labels of task.labels: {unknown[:5]}; fix the data or the labels"
            )
        got = [p if p is not None else INVALID for p in parsed]
        n = len(targets)
        per_example = {
            "label_validity": [float(p is not None) for p in parsed],
            "accuracy": [float(g == e) for g, e in zip(got, expected, strict=True)],
        }
        precision, recall, f1, _ = precision_recall_fscore_support(
            expected, got, labels=self.labels, average=None, zero_division=0
        )
        metrics = {k: sum(v) / n for k, v in per_example.items()}
        metrics["macro_f1"] = float(sum(f1) / len(self.labels))
        for label, p, r, f in zip(self.labels, precision, recall, f1, strict=True):
            metrics[f"precision/{label}"], metrics[f"recall/{label}"], metrics[f"f1/{label}"] = (
                float(p),
                float(r),
                float(f),
            )
        categories = self.labels + ([INVALID] if INVALID in got else [])
        matrix = confusion_matrix(expected, got, labels=categories).tolist()
        details = [
            {"error": "" if p is not None else "not a label", "fields_differing": [] if g == e else ["label"]}
            for p, g, e in zip(parsed, got, expected, strict=True)
        ]
        return Scored(metrics, per_example, details, (categories, matrix))


# -- generation ------------------------------------------------------------------------------------------
class GenerationScorer:
    def score(self, predictions: list[str], targets: list[str]) -> Scored:
        import sacrebleu
        from rouge_score import rouge_scorer

        rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        got = [p.strip() for p in predictions]
        exp = [t.strip() for t in targets]
        per_example = {
            "exact_match": [float(g == e) for g, e in zip(got, exp, strict=True)],
            "rouge_l": [rouge.score(e, g)["rougeL"].fmeasure for g, e in zip(got, exp, strict=True)],
            "chrf": [sacrebleu.sentence_chrf(g, [e]).score / 100 for g, e in zip(got, exp, strict=True)],
        }
        metrics = {k: _mean(v) for k, v in per_example.items()}
        metrics["chrf"] = sacrebleu.corpus_chrf(got, [exp]).score / 100  # corpus level; per example above
        metrics["bleu"] = sacrebleu.corpus_bleu(got, [exp]).score / 100
        details = [
            {"error": "", "fields_differing": [] if g == e else ["text"]}
            for g, e in zip(got, exp, strict=True)
        ]
        return Scored(metrics, per_example, details)


def _columns(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class TaskSpec:
    """What scoring needs to know of ``task``: its type and its schema or labels."""

    type: str = "structured"
    output_schema: dict | None = None
    labels: list[str] = field(default_factory=list)

    @classmethod
    def from_parts(cls, task_type: str, output_schema: str, labels: str) -> TaskSpec:
        """The task as the pipeline passes it: its type, the schema as JSON text, the labels as a JSON list."""
        return cls(task_type, json.loads(output_schema or "null"), list(json.loads(labels or "[]")))

    def scorer(self):
        if self.type == "structured":
            if self.output_schema is None:
                raise ValueError("a structured task needs task.schema")
            return StructuredScorer(self.output_schema)
        if self.type == "classification":
            return ClassificationScorer(self.labels)
        if self.type == "generation":
            return GenerationScorer()
        raise ValueError(f"task.type {self.type!r}: use one of {', '.join(METRICS)}")

    def constraint(self) -> dict:
        """What constrained decoding holds the output to: {json_schema} or {choices}; {} = nothing."""
        if self.type == "structured":
            return {"json_schema": self.output_schema}
        if self.type == "classification":
            return {"choices": list(self.labels)}
        return {}


def score(task: TaskSpec, predictions: list[str], targets: list[str]) -> Scored:
    """Score ``predictions`` against ``targets`` (same order) with the task's scorer."""
    if not targets:
        raise ValueError("no examples to score: the eval split is empty")
    scored = task.scorer().score(predictions, targets)
    scored.metrics["examples"] = float(len(targets))
    return scored
