"""Constrained decoding for evaluation: every answer is JSON valid against the task's schema (structured
tasks) or exactly one of the labels (classification), so the scorer measures what the model chose, not
whether it happened to close its brackets.

Library: xgrammar, chosen after trying it and llguidance on the tiny travel model (CPU, HF ``generate``).
Both compile the travel schema in ~1-3 ms and batch their matchers. llguidance is one dependency-free
wheel with exact JSON strings, but refused the schema (``uniqueItems``) outside lenient mode and filled
masks ~2.5x slower here (~75 vs ~30 µs a token, fill + accept); xgrammar compiled it as is, with CPU and CUDA masking
kernels, but lets raw control characters into strings and ignores ``uniqueItems``: both handled below.

Use: ``factory = logits_processor_factory(tokenizer, json_schema=schema)`` compiles once; then
``factory(batch_size)`` returns ``[processor]`` with fresh per-row matchers for one ``generate`` call
(``components.evaluate.core.generate(..., logits_processor_factory=factory)`` does this per batch).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# JSON is generated compact and in the schema's key order, as ingest writes the training targets
# (components.common.task.canonical_json), so a constrained answer can match the target byte for byte.
from components.common.task import JSON_SEPARATORS

# Up to this many rows: one matcher call per row and xgrammar's CPU masking kernel; above: xgrammar's batch
# helper and masking in torch (each the faster side, measured on the travel schema).
SMALL_BATCH = 4


def logits_processor_factory(
    tokenizer, *, json_schema: dict | None = None, choices: list[str] | None = None
) -> Callable[[int], list]:
    """Compile the constraint for ``tokenizer`` once and return ``factory(batch_size) -> [LogitsProcessor]``.

    Exactly one of ``json_schema`` (the output must be JSON valid against it, compact, no whitespace) or
    ``choices`` (the output must be exactly one of these strings) is given. Each processor is for one
    ``model.generate`` call over ``batch_size`` rows (greedy, as the evaluator decodes; ``num_beams=1``,
    ``num_return_sequences=1``); it forces the tokenizer's ``eos_token_id`` once the grammar admits
    nothing more, so generation stops, and keeps forcing it on finished rows. If one label is a prefix of another (``refund`` /
    ``refund_request``), both EOS and the continuation stay allowed after the shorter one.
    """
    if (json_schema is None) == (choices is None):
        raise ValueError(
            "logits_processor_factory: pass exactly one of json_schema= (structured task: a JSON Schema "
            "dict) or choices= (classification: the list of label strings), "
            f"got {'both' if json_schema is not None else 'neither'}"
        )
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            "logits_processor_factory: the tokenizer has no eos_token_id; set tokenizer.eos_token "
            "(constrained decoding forces it when the answer is complete)"
        )

    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, stop_token_ids=[eos])
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    keep = None
    if json_schema is not None:
        if not isinstance(json_schema, dict):
            raise ValueError(
                f"logits_processor_factory: json_schema must be a JSON Schema dict, got {type(json_schema)}"
            )
        compiled = compiler.compile_json_schema(
            json.dumps(_unique_items_as_enum(json_schema)), any_whitespace=False, separators=JSON_SEPARATORS
        )
        keep = _bitmask_without(_control_char_tokens(info, eos), info.vocab_size)
    else:
        compiled = compiler.compile_grammar(_choices_ebnf(choices))
    return _Factory(compiled, info.vocab_size, eos, keep)


def _choices_ebnf(choices: Any) -> str:
    if isinstance(choices, str) or not isinstance(choices, list | tuple):
        raise ValueError(
            f"logits_processor_factory: choices must be a list of label strings, got {choices!r}"
        )
    labels = list(dict.fromkeys(choices))
    if not labels or not all(isinstance(c, str) and c for c in labels):
        raise ValueError(
            f"logits_processor_factory: choices must be a non-empty list of non-empty strings, got {choices!r}"
        )
    # A JSON string literal is a valid EBNF string literal (same escapes), so any label is safe.
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in labels)


# Annotations that may sit beside an ``enum`` without narrowing it.
_ANNOTATIONS = {"title", "description", "$comment", "examples", "default", "type"}
_UNIQUE_ARRAY_KEYS = {*_ANNOTATIONS, "uniqueItems", "items", "minItems", "maxItems"}
MAX_UNIQUE_ARRANGEMENTS = 4096


def _unique_items_as_enum(schema: dict) -> dict:
    """xgrammar ignores ``uniqueItems`` (it generated ``"flows":["book_table","book_table"]`` for the
    travel schema's ``clarify``). An array of distinct values drawn from a small ``enum`` is rewritten as
    the enum of its arrangements (the travel ``clarify.flows``: 510 arrays), which the grammar does
    enforce; other ``uniqueItems`` arrays, or more than MAX_UNIQUE_ARRANGEMENTS arrangements, are left as
    they are (not enforced). Local ``$ref``s (``#/$defs/...``) are followed; the input is not modified."""
    import itertools
    import math

    def resolve(node: Any) -> Any:
        seen = 0
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#"):
            target: Any = schema
            for part in node["$ref"][1:].split("/")[1:]:
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, dict) else None
            node, seen = target, seen + 1
            if seen > 32:
                return None
        return node

    def arrangements(node: dict) -> list | None:
        if node.get("uniqueItems") is not True or set(node) - _UNIQUE_ARRAY_KEYS:
            return None
        items = resolve(node.get("items"))
        if not isinstance(items, dict) or set(items) - {*_ANNOTATIONS, "enum", "const"}:
            return None
        values = [items["const"]] if "const" in items else items.get("enum")
        if not isinstance(values, list) or not values:
            return None
        lo, hi = int(node.get("minItems", 0)), min(int(node.get("maxItems", len(values))), len(values))
        count = sum(math.perm(len(values), k) for k in range(lo, hi + 1))
        if count > MAX_UNIQUE_ARRANGEMENTS:
            return None
        return [list(p) for k in range(lo, hi + 1) for p in itertools.permutations(values, k)]

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        values = arrangements(node)
        if values is not None:
            kept = {k: v for k, v in node.items() if k in _ANNOTATIONS - {"type", "default", "examples"}}
            return {**kept, "enum": values}
        return {k: walk(v) for k, v in node.items()}

    return walk(schema)  # rebuilds every dict and list on the way: the input is left as it was


def _control_char_tokens(info, eos: int):
    """Token ids whose text holds a control character (bytes 0x00-0x1f). Compact JSON never contains one
    raw (JSON strings must escape them), but xgrammar's string rule lets them in, and a weak model picks
    them: json.loads then rejects the answer. Special tokens (EOS) are kept."""
    import torch

    special = set(info.special_token_ids) | {eos}
    ids = [i for i, text in enumerate(info.decoded_vocab) if i not in special and any(b < 0x20 for b in text)]
    return torch.tensor(ids, dtype=torch.long)


def _fixed_signature(cls):
    """transformers' LogitsProcessorList calls ``inspect.signature(processor.__call__)`` on every step
    (~16 µs for a plain method); a precomputed ``__signature__`` cuts that to ~4 µs."""
    import inspect

    cls.__call__.__signature__ = inspect.signature(cls.__call__)
    return cls


class _Factory:
    """``factory(batch_size)``: fresh matcher state over the one compiled grammar."""

    def __init__(self, compiled, vocab_size: int, eos: int, keep) -> None:
        self.compiled, self.vocab_size, self.eos = compiled, vocab_size, eos
        self.keep = keep  # int32 bitmask row ANDed into every filled row (None: no extra ban)

    def __call__(self, batch_size: int) -> list:
        return [_GrammarLogitsProcessor(self, batch_size)]


@_fixed_signature
class _GrammarLogitsProcessor:
    """One ``generate`` call: one xgrammar matcher per row. Each step it feeds every live row's last
    token to its matcher, fills the live rows' allowed-token bitmask and masks the logits; a row whose
    matcher has accepted EOS gets EOS forced (transformers pads finished rows anyway)."""

    def __init__(self, factory: _Factory, batch_size: int) -> None:
        import torch
        import xgrammar as xgr

        self.factory = factory
        self.batch_size = batch_size
        self.matchers = [xgr.GrammarMatcher(factory.compiled) for _ in range(batch_size)]
        self.fill = xgr.BatchGrammarMatcher(max_threads=1).batch_fill_next_token_bitmask
        self.bitmask = xgr.allocate_token_bitmask(batch_size, factory.vocab_size)
        self.bits = torch.arange(32, dtype=torch.int32)
        self.ninf = torch.tensor(float("-inf"))
        self.live = list(range(batch_size))  # rows whose matcher has not accepted EOS yet
        self.done: list[int] = []
        self.length: int | None = None  # input_ids width at the previous call

    def __call__(self, input_ids, scores):
        rows, width = input_ids.shape
        if rows != self.batch_size:
            raise ValueError(
                f"constrained decoding: built for batch_size={self.batch_size}, got {rows} rows; call "
                "factory(batch_size) per generate call (num_beams=1, num_return_sequences=1)"
            )
        if self.length is not None:  # not the first step: accept the token each live row just got
            if width != self.length + 1:
                raise RuntimeError(
                    "constrained decoding: a processor serves one generate call; call factory(batch_size) "
                    "again for the next one"
                )
            self._accept(input_ids[:, -1].tolist())
        self.length = width

        if self.live:
            if rows <= SMALL_BATCH:  # the batch helper's own set-up costs more than it saves here
                for i in self.live:
                    self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
            elif len(self.live) == rows:
                self.fill(self.matchers, self.bitmask)
            else:
                self.fill([self.matchers[i] for i in self.live], self.bitmask, indices=self.live)
            if self.factory.keep is not None:
                self.bitmask &= self.factory.keep
            self._mask(scores)
        if self.done:
            scores[self.done] = float("-inf")
            scores[self.done, self.factory.eos] = 0.0
        return scores

    def _accept(self, last: list[int]) -> None:
        live, eos, matchers = [], self.factory.eos, self.matchers
        for i in self.live:
            if not matchers[i].accept_token(last[i]):
                raise RuntimeError(
                    f"constrained decoding: row {i} got token {last[i]}, which the grammar forbids: "
                    "another logits processor or warper changed the scores after this one; put the "
                    "constraint last"
                )
            # EOS is the only stop token and accepting it terminates the matcher.
            (self.done if last[i] == eos else live).append(i)
        self.live = live

    def _mask(self, scores) -> None:
        """-inf where the bitmask disallows (rows not live are overwritten with EOS after this)."""
        import torch
        import xgrammar as xgr

        vocab = min(self.factory.vocab_size, scores.shape[-1])
        if scores.device.type == "cpu" and len(scores) > SMALL_BATCH:
            # xgrammar's CPU kernel costs ~4 µs a row when most tokens are masked (JSON), so above a few
            # rows unpacking the bits in torch is faster: ~60 vs ~240 µs at 64 rows x 965 tokens.
            allowed = self.bitmask.unsqueeze(-1).bitwise_right_shift(self.bits).bitwise_and_(1)
            allowed = allowed.view(len(scores), -1)[:, :vocab].bool()
            view = scores[:, :vocab]
            torch.where(allowed, view, self.ninf, out=view)
        else:
            bitmask = self.bitmask if scores.device.type == "cpu" else self.bitmask.to(scores.device)
            xgr.apply_token_bitmask_inplace(scores, bitmask, vocab_size=vocab)
        if scores.shape[-1] > vocab:  # the model's vocabulary padded past the tokenizer's: never valid
            scores[:, vocab:] = float("-inf")


def _bitmask_without(token_ids, vocab_size: int):
    """An xgrammar-layout bitmask row (int32 words, bit j % 32 of word j // 32) allowing every token but
    ``token_ids``; None when there is nothing to remove. ANDed into every filled row."""
    import torch
    import xgrammar as xgr

    if not len(token_ids):
        return None
    row = torch.zeros(xgr.get_bitmask_shape(1, vocab_size)[1], dtype=torch.int64)
    row.index_add_(0, token_ids // 32, torch.ones_like(token_ids).bitwise_left_shift(token_ids % 32))
    row = row.bitwise_not() & 0xFFFFFFFF  # the unsigned 32-bit words; ids are distinct, so add == or
    return torch.where(row >= 2**31, row - 2**32, row).to(torch.int32)  # as int32 (two's complement)
