"""augment: grow the training rows with teacher paraphrases that a validator confirms.

For every user turn of every training row (a *step*: the turn, the turns before it, the assistant turn
after it, which is its label) the teacher writes ``n`` paraphrases. Each candidate is kept only if, in
this order:

1. it is not empty and not an exact copy of its original or of an earlier candidate of the same reply
   (AUGMENT_INVALID, AUGMENT_DUPLICATE), and holds no PII its original does not (AUGMENT_PII);
2. its label, by the labeller (a user oracle ``module:function``, or the teacher re-labelling), passes
   the task's checks (AUGMENT_INVALID) and equals the original's label (AUGMENT_LABEL_MISMATCH). The
   original's label is the row's own target, the one an added row is trained on;
3. it is neither an exact nor a near duplicate (clean's normalisation, MinHash index and Jaccard
   threshold) of a user turn of the eval set (AUGMENT_EVAL_LEAK), of a user turn of the rows given, of ``existing_prompts``, or of an earlier candidate
   (AUGMENT_DUPLICATE). User turns are compared, not whole rows: an added row shares its original's
   target by construction, and a long target would make every paraphrase a near duplicate.

Passing paraphrases become rows by ``recombine``: the k-th new conversation takes the k-th passing
paraphrase of every step, and a step with fewer starts again at its first (none: the original turn).
A one-turn row is a conversation of one step. Added rows keep their original's group, so the split
keeps a paraphrase on its original's side.

Nothing here drops an original row: a teacher that times out, refuses, answers nonsense or runs out of
budget leaves its rows as they were, counted by reason. Teacher calls go through ``_Run.ask``: cache,
then budget, then the teacher, ``max_workers`` steps at a time.
"""

from __future__ import annotations

import importlib
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from components.augment.cache import TeacherCache
from components.augment.cost import Budget, cost_usd, estimate_call_usd, price_of
from components.augment.teachers import Teacher, TeacherError, TeacherReply
from components.clean.dedupe import resolve_near_duplicates
from components.clean.minhash import NearDupIndex
from components.clean.pii import find_pii
from components.clean.shingles import exact_key, normalize
from components.common.events import event
from components.common.scoring import TaskSpec
from components.common.task import parse_json, prompt_messages, schema_validator

# {n}: paraphrases asked for; {message}: the user turn; {format}: how to answer (JSON or one per line,
# filled in from the teacher's abilities). Placeholders are replaced as text, so JSON braces are safe.
DEFAULT_TEMPLATE = (
    "Rewrite the user message below in {n} different ways. Keep its meaning and intent, and keep every "
    "value it names (names, places, dates, times, numbers) exactly; vary the wording and the sentence "
    "structure. {format}\n\nUser message:\n{message}"
)
JSON_FORMAT = 'Answer with JSON {"paraphrases": [...]}, a list of {n} strings.'
LINES_FORMAT = "Write one rewrite per line and nothing else: no numbering, no quotes, no comments."
PARAPHRASE_SCHEMA = {
    "type": "object",
    "properties": {"paraphrases": {"type": "array", "items": {"type": "string"}}},
    "required": ["paraphrases"],
    "additionalProperties": False,
}
CANDIDATE_CODES = (
    "AUGMENT_LABEL_MISMATCH",
    "AUGMENT_INVALID",
    "AUGMENT_DUPLICATE",
    "AUGMENT_PII",
    "AUGMENT_EVAL_LEAK",
)

Labeler = Callable[[dict], Any]  # a canonical row -> its label: text, or a JSON value for a structured task


@dataclass(frozen=True)
class TeacherLabeler:
    """Re-labelling by a teacher: it answers the row as the task asks (``system_prompt``, the row's
    history), held to ``schema`` where it can be; its answer is the label. Use a teacher at temperature 0."""

    teacher: Teacher
    system_prompt: str = ""
    schema: dict | None = None


def load_oracle(spec: str) -> Labeler:
    """The labeller ``module:function`` (importable from the current environment)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"oracle {spec!r}: write it as module:function, e.g. mypackage.labels:label_row")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"oracle {spec!r}: {module} has no function {name!r}")
    return fn


def label_check(task: TaskSpec) -> Callable[[str], tuple[Any, str | None]]:
    """The task's own checks on a label text: (comparable value, None) or (None, what is wrong)."""
    if task.type == "structured":
        validator = schema_validator(task.output_schema or {})

        def structured(text: str) -> tuple[Any, str | None]:
            value, error = parse_json(text)
            if error is None and (problem := next(validator.iter_errors(value), None)) is not None:
                error = f"schema: {problem.message}"
            return (None, error) if error else (value, None)

        return structured
    if task.type == "classification":
        parse = task.scorer().parse
        return lambda text: (label, None) if (label := parse(text)) else (None, "not one of task.labels")
    return lambda text: (text.strip(), None) if text.strip() else (None, "empty")


@dataclass(frozen=True)
class Step:
    row: int  # index of the row in the rows given
    turn: int  # index of the user turn in the row's turns (history + prompt + completion)
    history: str  # the turns before it, as written: a canonical history column (JSON)
    user: str
    answer: str  # the assistant turn after it: the step's label


def turns_of(row: dict) -> list[dict]:
    """The whole conversation of a canonical row: history, the user turn, the answer."""
    history = json.loads(row["history"] or "[]")
    return [
        *history,
        {"role": "user", "content": row["prompt"]},
        {"role": "assistant", "content": row["completion"]},
    ]


def steps_of(index: int, row: dict) -> list[Step]:
    turns = turns_of(row)
    return [
        Step(index, i, json.dumps(turns[:i], ensure_ascii=False), t["content"], turns[i + 1]["content"])
        for i, t in enumerate(turns[:-1])
        if t["role"] == "user" and turns[i + 1]["role"] == "assistant"
    ]


def recombine(row: dict, rephrases: dict[int, list[str]]) -> list[dict]:
    """New rows from the passing paraphrases of a row's user turns (turn index -> paraphrases): the k-th
    row takes the k-th paraphrase of every turn, a turn with fewer starts again at its first, a turn with
    none keeps its original; as many rows as the longest list."""
    turns = turns_of(row)
    out = []
    for k in range(max((len(v) for v in rephrases.values()), default=0)):
        new = [dict(t) for t in turns]
        for i, options in rephrases.items():
            if options:
                new[i]["content"] = options[k % len(options)]
        out.append(
            {
                **row,
                "id": f"{row['id']}~aug{k + 1}",
                "history": json.dumps(new[:-2], ensure_ascii=False),
                "prompt": new[-2]["content"],
                "completion": new[-1]["content"],
            }
        )
    return out


def rephrase_request(template: str, n: int, message: str, structured: bool) -> list[dict]:
    fmt = JSON_FORMAT if structured else LINES_FORMAT
    text = template.replace("{format}", fmt).replace("{n}", str(n)).replace("{message}", message)
    return [{"role": "user", "content": text}]


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\(?\d+[.):])\s*")


def parse_paraphrases(text: str, structured: bool) -> list[str] | None:
    """The paraphrases of a reply: {"paraphrases": [...]} (or a bare list) when structured, else one per
    line with bullets, numbering and surrounding quotes removed. None when the reply holds none."""
    if structured:
        value, error = parse_json(text)
        if isinstance(value, dict):
            value = value.get("paraphrases")
        if error or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None
        found = [v.strip() for v in value]
    else:
        found = [_BULLET.sub("", line).strip().strip("\"'\u201c\u201d").strip() for line in text.splitlines()]
        found = [f for f in found if f]
    return found or None


@dataclass
class _Ledger:
    """Teacher calls of one run, from any thread."""

    calls: int = 0  # made (billed)
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0  # made with a teacher whose price is unknown
    failed_calls: Counter = field(default_factory=Counter)  # reason code -> calls
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Run:
    teacher: Teacher
    labeler: Labeler | TeacherLabeler
    check: Callable[[str], tuple[Any, str | None]]
    n: int
    template: str
    budget: Budget
    cache: TeacherCache | None
    ledger: _Ledger = field(default_factory=_Ledger)

    def ask(
        self, teacher: Teacher, messages: list[dict], schema: dict | None, request: str, fixed: str
    ) -> TeacherReply | str:
        """The reply (cached, or from a call the budget allows), or the reason code of why there is none.
        Cache key: ``request`` (what varies per call), the teacher, ``fixed`` (the template around it)."""
        key = TeacherCache.key(request, teacher.id, fixed)
        hit = self.cache.get(key) if self.cache else None
        if hit is not None:
            with self.ledger.lock:
                self.ledger.cache_hits += 1
            return hit
        price = price_of(teacher.model)
        estimate = estimate_call_usd(price, messages, teacher.max_output_tokens)
        billed: float | None = None
        if not self.budget.reserve(estimate):
            reply: TeacherReply | str = "AUGMENT_BUDGET_STOP"
        else:
            try:
                reply = teacher.complete(messages, schema=schema)
            except TeacherError as e:
                reply = e.code
            if not isinstance(reply, str):
                billed = cost_usd(price, reply.input_tokens, reply.output_tokens)
            self.budget.settle(estimate, billed)
        with self.ledger.lock:
            if isinstance(reply, str):
                self.ledger.failed_calls[reply] += 1
                return reply
            self.ledger.calls += 1
            self.ledger.input_tokens += reply.input_tokens
            self.ledger.output_tokens += reply.output_tokens
            self.ledger.cost_usd += billed or 0.0
            self.ledger.unpriced_calls += price is None
        if self.cache:
            self.cache.put(key, reply)
        return reply

    def label(self, row: dict) -> tuple[Any, str | None]:
        """(label value, None) or (None, reason code) for a row whose prompt is a candidate."""
        if isinstance(self.labeler, TeacherLabeler):
            lab = self.labeler
            messages = prompt_messages(lab.system_prompt, row["prompt"], row["history"])
            request = json.dumps(messages, sort_keys=True)
            reply = self.ask(lab.teacher, messages, lab.schema, request, json.dumps(["label", lab.schema]))
            if isinstance(reply, str):
                return None, reply
            text = reply.text
        else:
            try:
                value = self.labeler(row)
            except Exception:  # an oracle that cannot read the paraphrase: it cannot confirm it either
                return None, "AUGMENT_INVALID"
            text = value if isinstance(value, str) else json.dumps(value)
        value, error = self.check(text)
        return (None, "AUGMENT_INVALID") if error else (value, None)

    def step(self, step: Step, row: dict) -> tuple[list[str], list[str | None]] | str:
        """(candidates, verdicts: None = passed so far, else a reason code) or the call's failure code."""
        structured = self.teacher.structured
        fixed = json.dumps([self.template, self.n, structured])
        request = rephrase_request(self.template, self.n, step.user, structured)
        reply = self.ask(self.teacher, request, PARAPHRASE_SCHEMA if structured else None, step.user, fixed)
        if isinstance(reply, str):
            return reply
        candidates = parse_paraphrases(reply.text, structured)
        if candidates is None:
            with self.ledger.lock:
                self.ledger.failed_calls["AUGMENT_MALFORMED"] += 1
            return "AUGMENT_MALFORMED"
        candidates = candidates[: self.n]
        original, _ = self.check(step.answer)
        own_pii = {step.user[f.start : f.end] for f in find_pii(step.user)}
        seen = {exact_key(step.user)}
        verdicts: list[str | None] = []
        for text in candidates:
            key = exact_key(text)
            if not text.strip():
                verdict = "AUGMENT_INVALID"
            elif key in seen:
                verdict = "AUGMENT_DUPLICATE"
            elif {text[f.start : f.end] for f in find_pii(text)} - own_pii:
                verdict = "AUGMENT_PII"
            else:
                candidate = {**row, "history": step.history, "prompt": text, "completion": ""}
                value, verdict = self.label(candidate)
                if verdict is None and value != original:
                    verdict = "AUGMENT_LABEL_MISMATCH"
            seen.add(key)
            verdicts.append(verdict)
        return candidates, verdicts


@dataclass
class AugmentResult:
    rows: list[dict]  # every row given, unchanged and in order, then the added rows
    added: int = 0  # rows added (recombined conversations)
    asked: int = 0  # paraphrases asked for: n per step sent to the teacher
    received: int = 0  # paraphrases the teacher's replies held (at most n each)
    accepted: int = 0  # paraphrases that passed every check
    rejected: Counter = field(default_factory=Counter)  # reason code -> paraphrases
    unverified: Counter = field(default_factory=Counter)  # labelling call's failure code -> paraphrases
    failed_calls: Counter = field(default_factory=Counter)  # reason code -> teacher calls
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)  # label key -> counts
    calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0  # None: a teacher's price is unknown
    events: list[dict[str, Any]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("rows", "events")}
        out["acceptance_rate"] = self.accepted / self.asked if self.asked else None
        return json.loads(json.dumps(out))


def augment(
    rows: list[dict],
    *,
    teacher: Teacher,
    labeler: Labeler | TeacherLabeler | str,
    task: TaskSpec,
    n: int = 10,
    prompt_template: str = DEFAULT_TEMPLATE,
    budget: Budget | None = None,
    cache: TeacherCache | None = None,
    near_dup_threshold: float = 0.9,
    existing_prompts: Iterable[str] = (),
    eval_prompts: Iterable[str] = (),
    label_key: Callable[[str], str] = str.strip,
    max_workers: int = 4,
) -> AugmentResult:
    """Augment the training ``rows`` (canonical: id, group, source, history, prompt, completion).

    ``labeler``: a function row -> label, its ``module:function`` path, or a ``TeacherLabeler``.
    ``near_dup_threshold``: Jaccard of character 5-grams, as data.clean.near_dup_threshold; -1 = exact
    duplicates only. ``existing_prompts``: user turns no paraphrase may repeat. ``eval_prompts``: the eval
    set's user turns: a paraphrase that repeats one, exactly or nearly, is AUGMENT_EVAL_LEAK (the leak
    check of clean, applied to added rows).
    ``label_key``: a label text -> the name the report counts it under (e.g. the command of a structured
    target). ``max_workers``: steps in flight at once (teacher calls run concurrently up to this)."""
    if n < 1:
        raise ValueError(f"augment n={n}: ask for at least 1 paraphrase per user turn")
    labeler = load_oracle(labeler) if isinstance(labeler, str) else labeler
    budget = budget or Budget()
    teachers = [teacher] + ([labeler.teacher] if isinstance(labeler, TeacherLabeler) else [])
    unpriced = sorted({t.model for t in teachers if price_of(t.model) is None})
    if budget.max_usd is not None and unpriced:
        raise ValueError(
            f"a budget of ${budget.max_usd} cannot be kept without a price for {', '.join(unpriced)}: add a "
            "sourced price to components/augment/cost.py PRICES, or run without a budget"
        )
    run = _Run(teacher, labeler, label_check(task), n, prompt_template, budget, cache)
    steps = [s for i, row in enumerate(rows) for s in steps_of(i, row) if run.check(s.answer)[1] is None]
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        outcomes = list(pool.map(lambda s: run.step(s, rows[s.row]), steps))

    result = AugmentResult(rows=list(rows))
    result.failed_calls = run.ledger.failed_calls
    labels = {s: label_key(s.answer) for s in steps}
    for s in steps:
        counts = result.per_label.setdefault(labels[s], {"steps": 0, "asked": 0, "accepted": 0})
        counts["steps"] += 1
    passed: list[tuple[Step, str]] = []
    for s, outcome in zip(steps, outcomes, strict=True):
        if outcome == "AUGMENT_BUDGET_STOP":
            continue  # never sent
        result.asked += n
        result.per_label[labels[s]]["asked"] += n
        if isinstance(outcome, str):
            continue
        candidates, verdicts = outcome
        result.received += len(candidates)
        for text, verdict in zip(candidates, verdicts, strict=True):
            if verdict is None:
                passed.append((s, text))
            elif verdict in CANDIDATE_CODES:
                result.rejected[verdict] += 1
            else:
                result.unverified[verdict] += 1
    clear = _not_duplicates(list(eval_prompts), [t for _, t in passed], near_dup_threshold, among=False)
    result.rejected["AUGMENT_EVAL_LEAK"] += len(passed) - sum(clear)
    passed = [p for p, ok in zip(passed, clear, strict=True) if ok]
    kept = _not_duplicates(
        [s.user for s in steps] + list(existing_prompts), [t for _, t in passed], near_dup_threshold
    )
    result.rejected["AUGMENT_DUPLICATE"] += len(passed) - sum(kept)
    by_row: dict[int, dict[int, list[str]]] = {}
    for (s, text), keep in zip(passed, kept, strict=True):
        if keep:
            by_row.setdefault(s.row, {}).setdefault(s.turn, []).append(text)
            result.per_label[labels[s]]["accepted"] += 1
    result.accepted = sum(kept)
    for i, rephrases in sorted(by_row.items()):
        result.rows += recombine(rows[i], rephrases)
    result.added = len(result.rows) - len(rows)
    before = Counter(label_key(r["completion"]) for r in rows)
    after = Counter(label_key(r["completion"]) for r in result.rows)
    for key in sorted(before | after):
        counts = result.per_label.setdefault(key, {"steps": 0, "asked": 0, "accepted": 0})
        counts["rows_before"], counts["rows_after"] = before[key], after[key]
    ledger = run.ledger
    result.calls, result.cache_hits = ledger.calls, ledger.cache_hits
    result.input_tokens, result.output_tokens = ledger.input_tokens, ledger.output_tokens
    result.cost_usd = None if ledger.unpriced_calls else round(ledger.cost_usd, 6)
    result.rejected = +result.rejected  # drop zero counts
    result.events = _events(result, unpriced)
    return result


def _not_duplicates(
    existing: list[str], candidates: list[str], threshold: float, among: bool = True
) -> list[bool]:
    """Per candidate: True unless it is an exact or near duplicate of an existing text or (``among``) of an
    earlier candidate (clean's normal form, MinHash index and exact-Jaccard check; the earliest text is
    kept). ``among=False`` compares candidates with the existing texts only (the eval-leak check: two
    paraphrases alike are duplicates of each other, not leaks)."""
    texts = [normalize(t) for t in existing + candidates]
    first: dict[int, int] = {}
    dup = [first.setdefault(exact_key(t), i) != i for i, t in enumerate(texts)]
    if not among:
        seen = {exact_key(t) for t in texts[: len(existing)]}
        dup[len(existing) :] = [exact_key(t) in seen for t in texts[len(existing) :]]
    if threshold > 0 and len(texts) > 1:
        index = NearDupIndex(threshold=threshold)
        index.add(texts)
        i, j, est = index.candidate_pairs()
        if not among:  # only pairs with an existing text in them
            cross = (i < len(existing)) | (j < len(existing))
            i, j, est = i[cross], j[cross], est[cross]
        found = resolve_near_duplicates(i, j, est, lambda wanted: {k: texts[k] for k in wanted}, threshold)
        for k in found.removed:
            dup[k] = True
    return [not d for d in dup[len(existing) :]]


def _events(result: AugmentResult, unpriced: list[str]) -> list[dict[str, Any]]:
    events = [
        event("augment", code, count, f"{count} paraphrases rejected")
        for code, count in sorted(result.rejected.items())
    ]
    events += [
        event(
            "augment", code, count, f"{count} teacher calls", paraphrases_unverified=result.unverified[code]
        )
        for code, count in sorted(result.failed_calls.items())
    ]
    if unpriced and result.calls:
        events.append(event("augment", "AUGMENT_PRICE_UNKNOWN", len(unpriced), ", ".join(unpriced)))
    cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.4f}"
    events.append(
        event(
            "augment",
            "AUGMENT_DONE",
            result.added,
            f"{result.accepted} of {result.asked} paraphrases accepted, {result.added} rows added to "
            f"{len(result.rows) - result.added}; {result.calls} teacher calls ({result.cache_hits} cached), "
            f"cost {cost}",
            asked=result.asked,
            accepted=result.accepted,
            cost_usd=result.cost_usd,
        )
    )
    return events


def _table(header: tuple[str, str], rows: list[tuple[str, int]]) -> list[str]:
    """A two-column Markdown table and a blank line; "none" under the header when there are no rows."""
    body = [f"| {name} | {count} |" for name, count in rows] or ["| none | 0 |"]
    return [f"| {header[0]} | {header[1]} |", "|---|---:|", *body, ""]


def report_markdown(result: AugmentResult) -> str:
    rate = f"{result.accepted / result.asked:.1%}" if result.asked else "n/a"
    cost = "unknown (no sourced price)" if result.cost_usd is None else f"${result.cost_usd:.4f}"
    lines = [
        "# Augmentation report",
        "",
        (
            f"Paraphrases asked: {result.asked}; received: {result.received}; "
            f"**accepted: {result.accepted}** ({rate}). Rows: {len(result.rows) - result.added} original "
            f"(all kept) + {result.added} added."
        ),
        "",
        (
            f"Teacher calls: {result.calls} made, {result.cache_hits} from the cache; tokens "
            f"{result.input_tokens} in / {result.output_tokens} out; cost {cost}."
        ),
        "",
        *_table(
            ("rejected because", "paraphrases"),
            [(f"`{code}`", count) for code, count in result.rejected.most_common()]
            + [(f"`{code}` (labelling call failed)", n) for code, n in result.unverified.most_common()],
        ),
        *_table(
            ("failed teacher calls", "calls"),
            [(f"`{code}`", count) for code, count in result.failed_calls.most_common()],
        ),
        "| label | turns | asked | accepted | acceptance | rows before | rows after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, c in sorted(result.per_label.items()):
        share = f"{c['accepted'] / c['asked']:.1%}" if c["asked"] else "n/a"
        name = key if len(key) <= 60 else key[:57] + "..."
        lines.append(
            f"| `{name}` | {c['steps']} | {c['asked']} | {c['accepted']} | {share} | "
            f"{c.get('rows_before', 0)} | {c.get('rows_after', 0)} |"
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DryRun:
    calls: int  # teacher calls a run would make now; labelling calls counted as n per step (at most)
    cached: int  # paraphrase requests already answered in the cache
    estimated_usd: float | None  # an upper estimate; None when a teacher's price is unknown


def dry_run(
    rows: list[dict],
    *,
    teacher: Teacher,
    task: TaskSpec,
    n: int = 10,
    prompt_template: str = DEFAULT_TEMPLATE,
    labeler: Labeler | TeacherLabeler | str | None = None,
    cache: TeacherCache | None = None,
) -> DryRun:
    """What ``augment`` would ask for, without asking: calls and an estimated cost (components/augment/
    cost.py: estimated input tokens, the output bound). Labelling calls are counted only for a
    TeacherLabeler, as if every paraphrase reached labelling, each estimated with its original's length."""
    check = label_check(task)
    steps = [s for i, row in enumerate(rows) for s in steps_of(i, row) if check(s.answer)[1] is None]
    fixed = json.dumps([prompt_template, n, teacher.structured])
    price = price_of(teacher.model)
    calls = cached = 0
    total: float | None = 0.0
    for s in steps:
        request = rephrase_request(prompt_template, n, s.user, teacher.structured)
        if cache is not None and cache.contains(TeacherCache.key(s.user, teacher.id, fixed)):
            cached += 1
        else:
            calls += 1
            total = _add(total, estimate_call_usd(price, request, teacher.max_output_tokens))
        if isinstance(labeler, TeacherLabeler):
            lab = labeler
            messages = prompt_messages(lab.system_prompt, s.user, s.history)
            each = estimate_call_usd(price_of(lab.teacher.model), messages, lab.teacher.max_output_tokens)
            calls += n
            total = _add(total, None if each is None else each * n)
    return DryRun(calls, cached, None if total is None else round(total, 6))


def _add(total: float | None, more: float | None) -> float | None:
    return None if total is None or more is None else total + more
