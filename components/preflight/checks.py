"""The tokenizer and data checks, with the real tokenizer, on a seeded sample of the training table
rendered exactly as training (TRL: the whole conversation through the chat template) and evaluation
(``task.prompt_token_ids``) render it: pad == eos, BOS count, train/eval template agreement, rows with no
trainable token after truncation, the share of rows truncated, eos in the trained tokens and the answer
budget. Each check returns findings (code, severity, message naming the fix); none raises.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from components.common.tables import count_rows, iter_row_batches

MAX_EXAMPLES = 5  # row ids quoted per finding


@dataclass
class Finding:
    code: str  # stable reason code, e.g. PAD_IS_EOS
    severity: str  # error | warning | info; strict mode fails on errors only
    message: str  # what is wrong, the numbers, and the fix
    count: int = 0  # rows (of the sample) or items concerned
    examples: list[str] = field(default_factory=list)  # row ids


@dataclass
class DataStats:
    rows: int  # rows in the training table
    sampled: int  # rows rendered for the checks
    mean_tokens: float  # rendered example (prompt + completion), before truncation
    p95_tokens: int
    max_tokens: int
    truncated: int  # sampled rows longer than max_length
    zero_trainable: int  # sampled rows with no completion token left after truncation
    lengths: list[int] = field(default_factory=list, repr=False)


# --------------------------------------------------------------------------------------------------
# Rendering, exactly as training and evaluation do it


@dataclass
class Rendered:
    row_id: str
    ids: list[int]  # prompt + completion through the chat template, as TRL tokenizes a training row
    prompt_ids: list[int]  # prompt + generation header, as evaluation tokenizes it
    prompt_len: int  # common prefix of the two: where TRL starts the completion (its loss mask)

    def trainable(self, max_length: int) -> int:
        """Completion tokens left after truncation to max_length (TRL keeps the start)."""
        return max(0, min(len(self.ids), max_length) - self.prompt_len)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def render_rows(tokenizer, rows: list[dict[str, str]], system_prompt: str) -> list[Rendered]:
    """Training render: ``apply_chat_template(conversation, tokenize=True)``, which is what TRL's
    SFTTrainer calls for a conversational prompt/completion row (no special tokens added on top).
    Evaluation render: ``task.prompt_token_ids`` (add_generation_prompt=True)."""
    from components.common.task import prompt_token_ids, training_token_ids

    out = []
    for r, ids in zip(rows, training_token_ids(tokenizer, system_prompt, rows), strict=True):
        prompt = prompt_token_ids(tokenizer, system_prompt, r["prompt"], r["history"])
        out.append(Rendered(r["id"], ids, prompt, common_prefix(ids, prompt)))
    return out


def sample_rows(path: str | Path, n: int, seed: int) -> tuple[list[dict[str, str]], int]:
    """(a seeded uniform sample of at most ``n`` rows in table order, rows in the table); n < 0 = all."""
    total = count_rows(path)
    wanted = None if n < 0 or n >= total else set(random.Random(seed).sample(range(total), n))
    rows, index = [], 0
    for batch in iter_row_batches(path):
        for row in batch:
            if wanted is None or index in wanted:
                rows.append(row)
            index += 1
    return rows, total


def load_tokenizer_for_checks(path: str):
    """The tokenizer as every stage loads it; one without a pad token is loaded anyway (the pad check
    reports it) so the other checks still run."""
    from components.common.models import load_tokenizer

    try:
        return load_tokenizer(path)
    except ValueError:
        from transformers import AutoTokenizer

        from components.common.models import NO_REMOTE_CODE

        tok = AutoTokenizer.from_pretrained(path, **NO_REMOTE_CODE)
        if tok.pad_token is not None:
            raise
        return tok


def data_stats(renders: list[Rendered], rows: int, max_length: int) -> DataStats:
    lengths = sorted(len(r.ids) for r in renders)
    n = len(lengths)
    return DataStats(
        rows=rows,
        sampled=n,
        mean_tokens=sum(lengths) / n if n else 0.0,
        p95_tokens=lengths[min(n - 1, int(0.95 * n))] if n else 0,
        max_tokens=lengths[-1] if n else 0,
        truncated=sum(x > max_length for x in lengths),
        zero_trainable=sum(r.trainable(max_length) == 0 for r in renders),
        lengths=lengths,
    )


# --------------------------------------------------------------------------------------------------
# Checks: each returns findings; none raises


def _ids(renders: list[Rendered]) -> list[str]:
    return [r.row_id for r in renders[:MAX_EXAMPLES]]


def check_pad_token(tokenizer) -> list[Finding]:
    """(a) pad == eos: padding is masked out of the labels, so the eos is too, and the loss never
    teaches the model to stop (or, depending on the collator, stops teaching it after the first)."""
    if tokenizer.pad_token_id is None:
        return [
            Finding(
                "NO_PAD_TOKEN",
                "error",
                "the tokenizer has no pad token. Fix: add a dedicated pad token (distinct from eos), e.g. "
                "tokenizer.add_special_tokens({'pad_token': '<|pad|>'}), and save it with the base model",
            )
        ]
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        return [
            Finding(
                "PAD_IS_EOS",
                "error",
                f"pad token {tokenizer.pad_token!r} is the eos token (id {tokenizer.eos_token_id}): eos is masked "
                "out of the labels with the padding, so the model never learns to stop. Fix: give the tokenizer "
                "a pad token of its own (an unused special token such as <|pad|> or <|finetune_right_pad_id|>)",
                1,
            )
        ]
    return []


def check_bos(tokenizer, renders: list[Rendered]) -> list[Finding]:
    """(b) BOS count in the training render, when the tokenizer has a BOS token: two or more = the chat
    template emits it more than once (error); none while the tokenizer itself prepends one = the model
    trains without the BOS it was pretrained with (warning). Also the text path, tokenizer(rendered
    text) with its default add_special_tokens=True, as a raw-text serving endpoint would tokenize the
    prompt: template BOS + tokenizer BOS = two (warning; training and evaluation do not take that path)."""
    bos = tokenizer.bos_token_id
    if bos is None or not renders:
        return []
    findings = []
    double = [r for r in renders if r.ids.count(bos) > 1]
    if double:
        findings.append(
            Finding(
                "DOUBLE_BOS",
                "error",
                f"{len(double)} of {len(renders)} sampled rows render with {double[0].ids.count(bos)} BOS tokens "
                f"({tokenizer.bos_token!r}) in training: the chat template emits it more than once. Fix: the "
                "template should emit {{ bos_token }} once, at the very start (not per message)",
                len(double),
                _ids(double),
            )
        )
    adds_bos = tokenizer("x")["input_ids"][:1] == [bos]
    missing = [r for r in renders if bos not in r.ids]
    if missing and adds_bos:
        findings.append(
            Finding(
                "BOS_MISSING",
                "warning",
                f"{len(missing)} of {len(renders)} sampled rows render without the BOS token "
                f"{tokenizer.bos_token!r} that the tokenizer prepends to plain text: the chat template does not "
                "emit it. Fix: start the template with {{ bos_token }} if the base model was pretrained with it",
                len(missing),
                _ids(missing),
            )
        )
    probe = renders[0]
    text = tokenizer.decode(probe.prompt_ids)
    text_bos = tokenizer(text)["input_ids"].count(bos)
    if text_bos > 1:
        findings.append(
            Finding(
                "DOUBLE_BOS_TEXT",
                "warning",
                f"tokenizing the rendered prompt as text with add_special_tokens=True gives {text_bos} BOS tokens "
                "(the template emits one, the tokenizer adds another). Training and evaluation are unaffected "
                "(they tokenize through apply_chat_template). Fix where a prompt is tokenized as text (e.g. a "
                "completions endpoint): pass add_special_tokens=False",
                1,
                [probe.row_id],
            )
        )
    return findings


def check_template_consistency(tokenizer, renders: list[Rendered]) -> list[Finding]:
    """(c) The evaluation prompt (add_generation_prompt=True) must be a prefix of the training render
    (prompt + completion): otherwise the model is trained on one context and evaluated/served on
    another, and TRL starts the loss where the two diverge."""
    bad = [r for r in renders if r.prompt_len < len(r.prompt_ids)]
    if not bad:
        return []
    r = bad[0]
    k = r.prompt_len
    return [
        Finding(
            "TEMPLATE_MISMATCH",
            "error",
            f"{len(bad)} of {len(renders)} sampled rows: the evaluation prompt is not a prefix of the training "
            f"render; they diverge at token {k}: eval {tokenizer.decode(r.prompt_ids[k : k + 8])!r} vs train "
            f"{tokenizer.decode(r.ids[k : k + 8])!r}. Fix: make the chat template render the generation "
            "prompt (add_generation_prompt=True) exactly as the start of an assistant turn",
            len(bad),
            _ids(bad),
        )
    ]


def check_trainable_tokens(renders: list[Rendered], max_length: int) -> list[Finding]:
    """(d) Rows whose completion is cut away entirely by truncation to max_length: zero trainable tokens,
    the row costs compute and teaches nothing."""
    empty = [r for r in renders if r.trainable(max_length) == 0]
    if not empty:
        return []
    worst = max(len(r.prompt_ids) for r in empty)
    return [
        Finding(
            "NO_TRAINABLE_TOKENS",
            "error",
            f"{len(empty)} of {len(renders)} sampled rows have no completion token left after truncation to "
            f"max_length {max_length} (longest prompt: {worst} tokens). Fix: raise train.max_length above "
            "the prompt length, shorten the prompts, or let clean drop them (data.clean.max_tokens)",
            len(empty),
            _ids(empty),
        )
    ]


def check_truncation(renders: list[Rendered], max_length: int, threshold: float) -> list[Finding]:
    """(e) Share of rows longer than max_length: their end, the completion's last tokens and the eos,
    is never trained on."""
    long = [r for r in renders if len(r.ids) > max_length]
    if not long or not renders:
        return []
    share = len(long) / len(renders)
    over = share > threshold
    longest = max(len(r.ids) for r in long)
    return [
        Finding(
            "TRUNCATION_RATE_EXCEEDED" if over else "ROWS_TRUNCATED",
            "error" if over else "warning",
            f"{len(long)} of {len(renders)} sampled rows ({share:.1%}) are longer than max_length {max_length} "
            f"tokens (longest {longest}){f' > the allowed {threshold:.1%}' if over else ''}; their ends are cut "
            "off, eos included. Fix: raise train.max_length, or let clean drop them (data.clean.max_tokens)",
            len(long),
            _ids(long),
        )
    ]


def check_eos_trained(tokenizer, renders: list[Rendered], max_length: int) -> list[Finding]:
    """The eos token must be among the trained completion tokens of an untruncated row, or the model
    never learns to end its answer (generation then stops only at max_new_tokens)."""
    eos = tokenizer.eos_token_id
    whole = [r for r in renders if len(r.ids) <= max_length]
    missing = [r for r in whole if eos not in r.ids[r.prompt_len :]]
    if eos is None or not missing:
        return []
    return [
        Finding(
            "EOS_NOT_TRAINED",
            "warning",
            f"{len(missing)} of {len(whole)} untruncated sampled rows have no eos token ({tokenizer.eos_token!r}) "
            "in their completion: the chat template ends an assistant turn with another token. Fix: set the "
            "tokenizer's eos to the template's end-of-turn token, or add that token to the model's "
            "generation_config.eos_token_id",
            len(missing),
            _ids(missing),
        )
    ]


# A target this close to evaluation's answer budget leaves no room for a longer answer to the same question.
ANSWER_BUDGET_MARGIN = 0.9


def check_answer_budget(renders: list[Rendered], max_new_tokens: int) -> list[Finding]:
    """Completions (end-of-turn tokens included) against evaluation's max_new_tokens: a longer one can
    never be answered whole (error: its answer is cut off and scores as unfinished, invalid JSON); one
    above 90% of the budget leaves a model no room (warning)."""
    if max_new_tokens <= 0 or not renders:
        return []
    lengths = {r.row_id: len(r.ids) - r.prompt_len for r in renders}
    longest = max(lengths.values())
    over = [r for r in renders if lengths[r.row_id] > max_new_tokens]
    near = [r for r in renders if lengths[r.row_id] > ANSWER_BUDGET_MARGIN * max_new_tokens]
    if not near:
        return []
    worst = over or near
    code, level = (
        ("TARGET_OVER_MAX_NEW_TOKENS", "error") if over else ("TARGET_NEAR_MAX_NEW_TOKENS", "warning")
    )
    what = "longer than" if over else f"above {ANSWER_BUDGET_MARGIN:.0%} of"
    return [
        Finding(
            code,
            level,
            f"{len(worst)} of {len(renders)} sampled completions are {what} eval.max_new_tokens {max_new_tokens} "
            f"(longest {longest} tokens): evaluation cuts such answers off, and an unfinished answer scores as "
            f"invalid. Fix: raise eval.max_new_tokens to at least {int(longest / ANSWER_BUDGET_MARGIN) + 1}",
            len(worst),
            _ids(worst),
        )
    ]
