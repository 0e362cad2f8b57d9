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
METRICS: dict[str, tuple[str, ...]] = {
    "structured": ("json_validity", "schema_validity", "vocabulary_validity",
                   "exact_match", "field_match", "argument_fidelity"),
    "classification": ("label_validity", "accuracy", "macro_f1", "precision", "recall", "f1"),
    "generation": ("exact_match", "rouge_l", "chrf", "bleu"),
}  # fmt: skip


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
