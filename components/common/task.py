"""One definition of the task for every stage: how a row becomes chat messages, how an output is parsed
and how it is scored. Training, evaluation and (later) serving all call these functions, so the
prompt a model is trained on is byte for byte the prompt it is evaluated on.

Structured tasks (the only type so far) answer with JSON checked against a JSON Schema.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


def prompt_messages(system_prompt: str, prompt: str, history: str | list = "[]") -> list[dict[str, str]]:
    """The conversation up to the answer: the system turn, earlier turns (``history``, the canonical
    column: JSON text or a list), then the user turn. A system turn in the history replaces
    ``system_prompt`` — the row's own instructions win over the config's default."""
    turns = json.loads(history) if isinstance(history, str) else list(history)
    own_system = bool(turns) and turns[0]["role"] == "system"
    system = [{"role": "system", "content": system_prompt}] if system_prompt and not own_system else []
    return [*system, *turns, {"role": "user", "content": prompt}]


def conversation(system_prompt: str, prompt: str, completion: str, history: str | list = "[]") -> list[dict]:
    """The whole example as chat messages, answer included (what a token budget is measured on)."""
    return [*prompt_messages(system_prompt, prompt, history), {"role": "assistant", "content": completion}]


def training_example(
    system_prompt: str, prompt: str, completion: str, history: str | list = "[]"
) -> dict[str, list[dict[str, str]]]:
    """A TRL conversational prompt/completion row: TRL renders it with the tokenizer's chat template and
    puts the loss on the completion tokens only (earlier assistant turns in the history are context)."""
    return {
        "prompt": prompt_messages(system_prompt, prompt, history),
        "completion": [{"role": "assistant", "content": completion}],
    }


def training_token_ids(tokenizer, system_prompt: str, rows) -> list[list[int]]:
    """Token ids of whole examples (prompt and answer), as TRL's SFTTrainer tokenizes a conversational
    prompt/completion row: the chat template with tokenize=True, no special tokens added on top. What the
    token-length filter counts and what preflight checks."""
    return [
        list(
            tokenizer.apply_chat_template(
                conversation(system_prompt, r["prompt"], r["completion"], r["history"]),
                tokenize=True,
                return_dict=True,
            )["input_ids"]
        )
        for r in rows
    ]


def prompt_token_ids(tokenizer, system_prompt: str, prompt: str, history: str | list = "[]") -> list[int]:
    """Token ids of the prompt plus the generation header, exactly as TRL tokenizes the prompt part."""
    enc = tokenizer.apply_chat_template(
        prompt_messages(system_prompt, prompt, history),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )
    return list(enc["input_ids"])


def parse_json(text: str) -> tuple[Any, str | None]:
    """Parse a model output as JSON: (value, None) or (None, error). Surrounding whitespace is allowed,
    anything else (prose, code fences) is a validity failure, not something to repair."""
    try:
        return json.loads(text.strip()), None
    except (json.JSONDecodeError, ValueError) as e:
        return None, f"not JSON: {e.msg if isinstance(e, json.JSONDecodeError) else e}"


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    """Flatten JSON into {path: scalar}; list positions are kept in the path (``[0].flow``)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(leaves(v, f"{path}.{k}" if path else str(k)))
        return out or {path: {}}
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(leaves(v, f"{path}[{i}]"))
        return out or {path: []}
    return {path: value}


_POSITION = re.compile(r"\[\d+\]")


def field_name(path: str) -> str:
    """The field a leaf path belongs to, positions erased: ``[1].value`` -> ``[].value``."""
    return _POSITION.sub("[]", path)


@dataclass
class ExampleScore:
    json_valid: bool
    schema_valid: bool
    exact: bool
    error: str | None
    # field -> (leaves that match, leaves in expected or predicted)
    fields: dict[str, tuple[int, int]] = field(default_factory=dict)


def score_structured(prediction: str, target: str, validator) -> ExampleScore:
    """Score one output: JSON validity, schema validity, exact match of the parsed value, and per-field
    agreement of the leaves (a leaf counts when present in the expected or the predicted value)."""
    expected, _ = parse_json(target)
    got, error = parse_json(prediction)
    if error is not None:
        exp_fields: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
        for p in leaves(expected):
            m, n = exp_fields[field_name(p)]
            exp_fields[field_name(p)] = (m, n + 1)
        return ExampleScore(False, False, False, error, dict(exp_fields))
    schema_errors = sorted(validator.iter_errors(got), key=lambda e: list(e.path))
    schema_ok = not schema_errors
    if not schema_ok:
        error = f"schema: {schema_errors[0].message}"
    exp_leaves, got_leaves = leaves(expected), leaves(got)
    fields: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for p in exp_leaves.keys() | got_leaves.keys():
        m, n = fields[field_name(p)]
        hit = p in exp_leaves and p in got_leaves and exp_leaves[p] == got_leaves[p]
        fields[field_name(p)] = (m + hit, n + 1)
    return ExampleScore(True, schema_ok, got == expected, error, dict(fields))


def schema_validator(schema: dict[str, Any]):
    """A jsonschema validator for the schema's declared draft (2020-12 when it declares none)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def aggregate(scores: list[ExampleScore]) -> dict[str, float]:
    """Task metrics over a set of examples: fractions in [0, 1]; ``field_match/<field>`` per field."""
    n = len(scores)
    if n == 0:
        raise ValueError("no examples to score: the eval split is empty")
    metrics = {
        "json_validity": sum(s.json_valid for s in scores) / n,
        "schema_validity": sum(s.schema_valid for s in scores) / n,
        "exact_match": sum(s.exact for s in scores) / n,
    }
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in scores:
        for f, (m, c) in s.fields.items():
            totals[f][0] += m
            totals[f][1] += c
    matched = sum(m for m, _ in totals.values())
    counted = sum(c for _, c in totals.values())
    metrics["field_match"] = matched / counted if counted else 0.0
    for f in sorted(totals):
        m, c = totals[f]
        metrics[f"field_match/{f}"] = m / c if c else 0.0
    metrics["examples"] = float(n)
    return metrics
