"""One definition of the task for every stage: how a row becomes chat messages, how an output is parsed
and how it is scored. Training, evaluation and (later) serving all call these functions, so the
prompt a model is trained on is byte for byte the prompt it is evaluated on.

Task types (``TASK_TYPES``) and the metrics each reports (``METRICS``) are declared here; scoring by type
lives in components/common/scoring.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

TASK_TYPES = ("structured", "classification", "generation")
# Metric names each task type reports; "name/<part>" variants (field_match/<field>, f1/<label>) share the
# name before the slash. The validity family says whether an output is usable at all; the match family
# how close a usable output is to the expected one.
# Every generated evaluation also reports ``cut_off`` beside these: the share of answers max_new_tokens ended
# before the model did (scored as they are: an unfinished JSON document is invalid). It is not a headline
# metric: lower is better, and gates and export parity read headline metrics as higher-is-better.
METRICS: dict[str, tuple[str, ...]] = {
    "structured": (
        "json_validity",
        "schema_validity",
        "vocabulary_validity",
        "exact_match",
        "field_match",
        "argument_fidelity",
    ),
    "classification": ("label_validity", "accuracy", "macro_f1", "precision", "recall", "f1"),
    "generation": ("exact_match", "rouge_l", "chrf", "bleu"),
}
# Reported only per part (precision/<label>, ...), never as one number.
PER_PART_ONLY = ("precision", "recall", "f1")


def headline_metrics(task_type: str) -> tuple[str, ...]:
    """The metrics ``task_type`` reports as one number each (what a run can be judged by during training)."""
    return tuple(m for m in METRICS.get(task_type, ()) if m not in PER_PART_ONLY)


def validation_metrics(task_type: str) -> tuple[str, ...]:
    """What a validation pass during training logs and ``train.select_metric`` can judge: eval_loss, and
    eval_<metric> for each headline metric of ``task_type`` ("" = no task metrics measured)."""
    return ("eval_loss", *(f"eval_{m}" for m in headline_metrics(task_type)))


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


def schema_validator(schema: dict[str, Any]):
    """A jsonschema validator for the schema's declared draft (2020-12 when it declares none)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


# The JSON text a structured target is trained on and constrained decoding produces: compact separators,
# UTF-8 kept as is, object keys in the order the schema declares them (xgrammar emits properties in that
# order; a target in another order would teach the model an order the constraint then forbids).
JSON_SEPARATORS = (",", ":")


def canonical_json(value: Any, schema: dict[str, Any]) -> str:
    """``value`` as JSON text with every object's keys in ``schema``'s declared ``properties`` order
    (keys the schema does not declare follow, in their own order); compact, non-ASCII kept."""
    return JsonCanonicalizer(schema)(value)


class JsonCanonicalizer:
    """``canonical_json`` for many values of one schema: $refs and oneOf/anyOf branches are resolved once;
    a branch is validated only when several branches could hold an object's keys in different orders."""

    def __init__(self, schema: dict[str, Any]):
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self.validator = schema_validator(schema)
        self.schema = schema
        base = schema.get("$id", "")
        resource = Resource.from_contents(schema, default_specification=DRAFT202012)
        self._resolver = Registry().with_resource(base, resource).resolver(base_uri=base)
        self._branches: dict[int, list[dict]] = {}
        self._validators: dict[int, Any] = {}

    def __call__(self, value: Any) -> str:
        ordered = self._ordered(value, self.schema)
        text = json.dumps(ordered, ensure_ascii=False, separators=JSON_SEPARATORS)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (valid JSON escape, not UTF-8): keep it escaped
            text = json.dumps(ordered, separators=JSON_SEPARATORS)
        return text

    def _deref(self, node: Any) -> dict:
        for _ in range(32):  # a chain of $refs, bounded (a cycle of bare $refs describes nothing)
            if not isinstance(node, dict) or "$ref" not in node:
                break
            node = self._resolver.lookup(node["$ref"]).contents
        return node if isinstance(node, dict) else {}

    def branches(self, node: dict) -> list[dict]:
        """The leaf subschemas a node stands for: itself, or its oneOf/anyOf branches, $refs followed."""
        key = id(node)
        if key not in self._branches:
            node = self._deref(node)
            subs = [b for k in ("oneOf", "anyOf") for sub in node.get(k, []) for b in self.branches(sub)]
            self._branches[key] = subs or [node]
        return self._branches[key]

    def _pick(self, value: Any, node: dict) -> dict:
        options = self.branches(node)
        if len(options) == 1:
            return options[0]
        if isinstance(value, dict):
            holding = [b for b in options if set(value) <= set(b.get("properties", {}))]
            if len(holding) == 1:  # only one branch declares all of the object's keys: no need to validate
                return holding[0]
            options = holding or options
        for b in options:
            check = self._validators.setdefault(id(b), self.validator.evolve(schema=b))
            if check.is_valid(value):
                return b
        return options[0]

    def _ordered(self, value: Any, node: Any) -> Any:
        node = self._pick(value, node) if isinstance(node, dict) else {}
        if isinstance(value, dict):
            props = node.get("properties", {})
            keys = [k for k in props if k in value] + [k for k in value if k not in props]
            return {k: self._ordered(value[k], props.get(k, {})) for k in keys}
        if isinstance(value, list):
            prefix, items = node.get("prefixItems", []), node.get("items", {})
            return [
                self._ordered(v, prefix[i] if i < len(prefix) else items if isinstance(items, dict) else {})
                for i, v in enumerate(value)
            ]
        return value
