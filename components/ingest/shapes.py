"""Data shapes: recognising how rows are laid out, and mapping each row onto the canonical columns.

Shapes (``data.shape``):
    prompt_completion  {"prompt": str, "completion": str} — or any two columns named by ``data.fields``
    alpaca             {"instruction": str, "input": str (optional), "output": str}
    messages           {"messages": [{"role": system|user|assistant, "content": str}, ...]} (OpenAI)
    sharegpt           {"conversations": [{"from": system|human|gpt, "value": str}, ...]}
    text               {"text": str} — recognised, but not trainable here: a task model learns a
                       prompt -> completion mapping and plain text has no such split

A conversation trains on its last assistant turn; the turns before the last user turn are its
``history`` (context, rendered with the same chat template, no loss on them).

``inspect_rows`` ranks hypotheses about a sample with a confidence and the reason for it.
``resolve_shape`` picks one only at ``AUTO_PICK`` confidence or more (or when forced).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SHAPES = ("prompt_completion", "alpaca", "messages", "sharegpt", "text")
TRAINABLE = ("prompt_completion", "alpaca", "messages", "sharegpt")
AUTO_PICK = 0.8

SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
CHAT_ROLES = ("system", "user", "assistant")

# Column names people use for the two sides of a task; a hypothesis built from them is only a guess.
PROMPT_NAMES = ("question", "query", "input", "instruction", "utterance", "request", "source", "user", "text")
COMPLETION_NAMES = ("answer", "response", "output", "target", "label", "reply", "command", "commands", "json")


class ShapeError(ValueError):
    pass


@dataclass
class Hypothesis:
    shape: str
    confidence: float  # share of sample rows that fit, scaled by how specific the evidence is
    rationale: str
    fields: dict[str, str] = field(default_factory=dict)  # prompt/completion columns (prompt_completion)


def _fraction(rows: list[dict], test) -> float:
    return sum(1 for r in rows if test(r)) / len(rows) if rows else 0.0


def _is_turns(value: Any, role_key: str, content_key: str, roles) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(t, dict) and t.get(role_key) in roles and isinstance(t.get(content_key), str)
            for t in value
        )
    )


def _str(r: dict, key: str) -> bool:
    return isinstance(r.get(key), str)


def inspect_rows(rows: list[dict[str, Any]]) -> list[Hypothesis]:
    """Ranked hypotheses (best first) about the shape of ``rows``."""
    n = len(rows)
    if n == 0:
        return []
    out: list[Hypothesis] = []

    def add(shape: str, frac: float, weight: float, why: str, fields: dict | None = None) -> None:
        if frac > 0:
            out.append(
                Hypothesis(
                    shape, round(frac * weight, 3), f"{why} in {round(frac * n)}/{n} rows", fields or {}
                )
            )

    add(
        "messages",
        _fraction(rows, lambda r: _is_turns(r.get("messages"), "role", "content", CHAT_ROLES)),
        0.99,
        "a 'messages' list of {role, content} turns with system/user/assistant roles",
    )
    add(
        "sharegpt",
        _fraction(rows, lambda r: _is_turns(r.get("conversations"), "from", "value", SHAREGPT_ROLES)),
        0.99,
        "a 'conversations' list of {from, value} turns with human/gpt roles",
    )
    add(
        "alpaca",
        _fraction(rows, lambda r: _str(r, "instruction") and _str(r, "output")),
        0.97,
        "'instruction' and 'output' strings" + (" (and 'input')" if any("input" in r for r in rows) else ""),
    )
    add(
        "prompt_completion",
        _fraction(rows, lambda r: _str(r, "prompt") and _str(r, "completion")),
        0.98,
        "'prompt' and 'completion' strings",
        {"prompt": "prompt", "completion": "completion"},
    )
    only_text = _fraction(
        rows, lambda r: _str(r, "text") and not ({"prompt", "instruction", "messages"} & r.keys())
    )
    add("text", only_text, 0.95, "a 'text' string and no prompt/answer columns (not trainable as a task)")

    # A field map for arbitrary column names: string columns present in every row, matched by name.
    known = {
        "prompt",
        "completion",
        "instruction",
        "output",
        "messages",
        "conversations",
        "text",
        "id",
        "group",
    }
    columns = [c for c in rows[0] if all(_str(r, c) for r in rows) and c not in known]
    prompt_col = next((c for name in PROMPT_NAMES for c in columns if c.lower() == name), None)
    completion_col = next(
        (c for name in COMPLETION_NAMES for c in columns if c.lower() == name and c != prompt_col), None
    )
    if prompt_col and completion_col:
        add(
            "prompt_completion",
            1.0,
            0.7,
            f"columns named like a prompt ({prompt_col!r}) and an answer ({completion_col!r}) — a guess from names",
            {"prompt": prompt_col, "completion": completion_col},
        )
    elif len(columns) >= 2 and not any(h.confidence >= AUTO_PICK for h in out):
        # no telling names: the shorter-on-average column is more often the prompt — a weak guess
        by_len = sorted(columns, key=lambda c: sum(len(r[c]) for r in rows))
        add(
            "prompt_completion",
            1.0,
            0.4,
            f"string columns {columns}; guessed prompt={by_len[0]!r}, completion={by_len[-1]!r} by length only",
            {"prompt": by_len[0], "completion": by_len[-1]},
        )
    out.sort(key=lambda h: -h.confidence)
    return out


def resolve_shape(hypotheses: list[Hypothesis], *, force: bool = False) -> Hypothesis:
    """The hypothesis to use: the best at >= AUTO_PICK confidence, or the best at all when forced."""
    if not hypotheses:
        raise ShapeError("no rows to inspect: the locator holds no readable rows")
    best = hypotheses[0]
    if best.confidence < AUTO_PICK and not force:
        ranked = "; ".join(f"{h.shape} {h.confidence:.2f} ({h.rationale})" for h in hypotheses[:4])
        raise ShapeError(
            f"no shape reaches confidence {AUTO_PICK} ({ranked}). Fix: set data.shape, or map columns with "
            "data.fields {prompt: COLUMN, completion: COLUMN} (slmforge data inspect shows the candidates)"
        )
    if best.shape not in TRAINABLE:
        raise ShapeError(
            f"the data looks like shape {best.shape!r} ({best.rationale}); a task model needs a prompt and a "
            "target. Fix: convert it to prompt/completion or chat messages"
        )
    return best


# ---- mapping: one source row -> canonical fields, or a reject -------------------------------------


class Reject(Exception):  # a control-flow signal carrying a reason code
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _text(row: dict, column: str) -> str:
    if column not in row or row[column] is None:
        raise Reject("MISSING_FIELD", f"no {column!r} field")
    value = row[column]
    if not isinstance(value, str):
        raise Reject("WRONG_TYPE", f"{column!r} is {type(value).__name__}, expected a string")
    if not value.strip():
        raise Reject("EMPTY_FIELD", f"{column!r} is empty")
    return value


# Fixes for real chat exports, opted into with data.chat.fix (each counted in the ingest report):
# a conversation that opens with the assistant's greeting, or ends on a user turn nobody answered.
CHAT_FIXES = ("drop_leading_assistant", "drop_trailing_user")


def _turns(
    row: dict,
    key: str,
    role_key: str,
    content_key: str,
    roles: dict[str, str],
    fixes: tuple[str, ...] = (),
    applied: list[str] | None = None,
) -> list[dict[str, str]]:
    if key not in row or row[key] is None:
        raise Reject("MISSING_FIELD", f"no {key!r} field")
    value = row[key]
    if not isinstance(value, list):
        raise Reject("WRONG_TYPE", f"{key!r} is {type(value).__name__}, expected a list of turns")
    turns = []
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            raise Reject("WRONG_TYPE", f"{key}[{i}] is {type(t).__name__}, expected an object")
        for k in (role_key, content_key):
            if k not in t:
                raise Reject("MISSING_FIELD", f"{key}[{i}] has no {k!r}")
        if t[role_key] not in roles:
            raise Reject("BAD_ROLE", f"{key}[{i}].{role_key} = {t[role_key]!r}; allowed: {', '.join(roles)}")
        if not isinstance(t[content_key], str):
            raise Reject(
                "WRONG_TYPE",
                f"{key}[{i}].{content_key} is {type(t[content_key]).__name__}, expected a string",
            )
        if not t[content_key].strip():
            raise Reject("EMPTY_TURN", f"{key}[{i}] ({t[role_key]}) is empty")
        turns.append({"role": roles[t[role_key]], "content": t[content_key]})
    start = 1 if turns and turns[0]["role"] == "system" else 0
    if "drop_leading_assistant" in fixes and len(turns) > start and turns[start]["role"] == "assistant":
        del turns[start]
        if applied is not None:
            applied.append("drop_leading_assistant")
    if "drop_trailing_user" in fixes and len(turns) > start + 1 and turns[-1]["role"] == "user":
        del turns[-1]
        if applied is not None:
            applied.append("drop_trailing_user")
    body = [t["role"] for t in turns[start:]]
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    if not body or len(body) % 2 or body != expected[: len(body)]:
        raise Reject(
            "BAD_ROLE_ORDER",
            f"roles {[t['role'] for t in turns]}: need [system], user, assistant, ..., ending with assistant"
            + (
                ""
                if fixes
                else " (data.chat.fix: [drop_leading_assistant, drop_trailing_user] repairs the ends)"
            ),
        )
    return turns


def _canonical_history(row: dict) -> str:
    """The ``history`` column of an slmforge canonical table (``data map --commit`` output), validated."""
    history = row.get("history")
    if history is None or history == "[]":
        return "[]"
    try:
        turns = json.loads(history) if isinstance(history, str) else None
    except ValueError:
        turns = None
    ok = isinstance(turns, list) and all(
        isinstance(t, dict) and t.get("role") in CHAT_ROLES and isinstance(t.get("content"), str)
        for t in turns
    )
    if not ok:
        raise Reject("WRONG_TYPE", "'history' is not a JSON list of {role, content} turns")
    return json.dumps(turns, ensure_ascii=False)


def map_row(
    row: dict[str, Any],
    shape: str,
    fields: dict[str, str],
    fixes: tuple[str, ...] = (),
    applied: list[str] | None = None,
) -> tuple[str, str, str]:
    """(history JSON, prompt, completion) of one source row; raises ``Reject`` with a reason code.
    ``fixes``: CHAT_FIXES to apply to a conversation; each one applied is appended to ``applied``."""
    if shape == "prompt_completion":
        prompt = _text(row, fields.get("prompt", "prompt"))
        completion = _text(row, fields.get("completion", "completion"))
        return _canonical_history(row), prompt, completion
    if shape == "alpaca":
        instruction, output = _text(row, "instruction"), _text(row, "output")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise Reject("WRONG_TYPE", f"'input' is {type(extra).__name__}, expected a string")
        prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        return "[]", prompt, output
    if shape in ("messages", "sharegpt"):
        key, rk, ck, roles = (
            ("messages", "role", "content", {r: r for r in CHAT_ROLES})
            if shape == "messages"
            else ("conversations", "from", "value", SHAREGPT_ROLES)
        )
        turns = _turns(row, key, rk, ck, roles, fixes, applied)
        history = json.dumps(turns[:-2], ensure_ascii=False) if len(turns) > 2 else "[]"
        return history, turns[-2]["content"], turns[-1]["content"]
    raise ShapeError(f"shape {shape!r} cannot be mapped; use one of {', '.join(TRAINABLE)}")
