"""The audit stream and its one reason-code table.

Every stage appends events (stage, severity, reason code, count, message) to a JSONL ``events``
artifact that it received from the stage before: one stream per run, readable top to bottom. A row a
data stage rejects carries one of the same codes in the rejects artifact, so a count in the events, a
line in a rejects file and a row in ``dataset_summary.md`` all speak the same language.

Codes are stable: they are part of the interface (tests, dashboards and users' scripts match on
them). Add new codes; never rename or reuse one. ``docs/reason-codes.md`` is generated from ``REASONS``
(``python -m components.common.events``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Reason:
    stage: str  # the stage that emits it
    severity: str  # info | warning | error (a row reject is an "error" for that row)
    meaning: str
    fix: str


REASONS: dict[str, Reason] = {
    # ingest: a source row cannot become a canonical row
    "NOT_UTF8": Reason(
        "ingest", "error", "the row's bytes are not valid UTF-8", "re-encode the file as UTF-8"
    ),
    "NOT_JSON": Reason(
        "ingest", "error", "the line is not valid JSON", "fix the line, or export the data again"
    ),
    "TRUNCATED": Reason(
        "ingest", "error", "the last line ends mid-record (the file was cut short)", "copy the file again"
    ),
    "NOT_OBJECT": Reason(
        "ingest", "error", "the record is a JSON value, not an object", "write one object per line"
    ),
    "ROW_TOO_LARGE": Reason(
        "ingest",
        "error",
        "the row is larger than data.max_row_bytes",
        "drop the row or raise data.max_row_bytes",
    ),
    "MISSING_FIELD": Reason(
        "ingest",
        "error",
        "a field the shape needs is absent",
        "add the field, or fix data.fields / data.shape",
    ),
    "WRONG_TYPE": Reason(
        "ingest", "error", "a field has the wrong type", "write the field as the type shown"
    ),
    "EMPTY_FIELD": Reason("ingest", "error", "a prompt or completion is empty", "fill it in or drop the row"),
    "EMPTY_TURN": Reason(
        "ingest", "error", "a conversation turn has no content", "fill it in or drop the turn"
    ),
    "BAD_ROLE": Reason(
        "ingest",
        "error",
        "a turn has a role other than system/user/assistant (ShareGPT: system/human/gpt)",
        "map the role, or drop tool turns",
    ),
    "BAD_ROLE_ORDER": Reason(
        "ingest",
        "error",
        "turns must be: optional system first, then user and assistant alternating, ending with assistant",
        "reorder or merge the turns",
    ),
    "DUPLICATE_ID": Reason("ingest", "error", "the row id was already used", "give every row a unique id"),
    "TARGET_NOT_JSON": Reason(
        "ingest",
        "error",
        "the target of a structured task is not JSON",
        "fix the completion, or the task type",
    ),
    "TARGET_SCHEMA": Reason(
        "ingest",
        "error",
        "the target is not valid against the task's JSON Schema",
        "fix the completion or the schema (task.schema)",
    ),
    "LABEL_UNKNOWN": Reason(
        "ingest",
        "error",
        "the target of a classification task is not one of task.labels (after data.labels.normalize)",
        "fix the label, add it to task.labels, or normalise spelling with data.labels.normalize: [strip, lower]",
    ),
    # clean: a valid row that must not be trained on
    "PII_BLOCKED": Reason(
        "clean",
        "error",
        "the row contains PII and data.clean.pii is block",
        "remove the PII, or set pii: redact",
    ),
    "OVER_LENGTH": Reason(
        "clean",
        "error",
        "the rendered example is longer than train.max_length tokens (the real tokenizer and chat template)",
        "shorten the row or raise train.max_length",
    ),
    "DUPLICATE": Reason(
        "clean", "error", "the row repeats an earlier row exactly", "nothing: the first is kept"
    ),
    "NEAR_DUPLICATE": Reason(
        "clean",
        "error",
        "the row is in a near-duplicate cluster (rows joined by MinHash pairs at Jaccard >= "
        "data.clean.near_dup_threshold) whose earliest row is kept",
        "nothing: the first is kept; raise the threshold to keep more",
    ),
    "EVAL_LEAK": Reason(
        "clean",
        "error",
        "a training row duplicates (exactly or nearly) an evaluation row; the evaluation row is kept",
        "nothing: evaluation stays clean of training data",
    ),
    # preflight: the run is checked on CPU before a GPU is asked for (components/preflight/checks.py, plan.py)
    "PAD_IS_EOS": Reason(
        "preflight",
        "error",
        "the pad token is the eos token: eos is masked out with the padding and the model never learns to stop",
        "give the tokenizer its own pad token",
    ),
    "NO_PAD_TOKEN": Reason(
        "preflight", "error", "the tokenizer has no pad token", "add a pad token distinct from eos"
    ),
    "DOUBLE_BOS": Reason(
        "preflight",
        "error",
        "the training render holds more than one BOS token",
        "make the chat template emit {{ bos_token }} once, at the start",
    ),
    "BOS_MISSING": Reason(
        "preflight",
        "warning",
        "the tokenizer prepends BOS to text but the chat template never emits it",
        "start the template with {{ bos_token }} if the base model was pretrained with it",
    ),
    "DOUBLE_BOS_TEXT": Reason(
        "preflight",
        "warning",
        "tokenizing the rendered prompt as text adds a second BOS",
        "pass add_special_tokens=False wherever a rendered prompt is tokenized as text",
    ),
    "TEMPLATE_MISMATCH": Reason(
        "preflight",
        "error",
        "the evaluation prompt (add_generation_prompt) is not a prefix of the training render",
        "make the template render the generation prompt exactly as an assistant turn starts",
    ),
    "NO_TRAINABLE_TOKENS": Reason(
        "preflight",
        "error",
        "rows whose completion is cut away entirely by truncation to train.max_length",
        "raise train.max_length or drop those rows (data.clean.max_tokens)",
    ),
    "TRUNCATION_RATE_EXCEEDED": Reason(
        "preflight",
        "error",
        "more rows than preflight.truncation_threshold are longer than train.max_length",
        "raise train.max_length or drop long rows (data.clean.max_tokens)",
    ),
    "ROWS_TRUNCATED": Reason(
        "preflight",
        "warning",
        "some rows are longer than train.max_length (below the threshold)",
        "raise train.max_length or drop them",
    ),
    "EOS_NOT_TRAINED": Reason(
        "preflight",
        "warning",
        "untruncated completions hold no eos token",
        "set eos to the template's end-of-turn token, or add it to generation_config.eos_token_id",
    ),
    "DOES_NOT_FIT": Reason(
        "preflight",
        "error",
        "the estimated peak GPU memory exceeds the accelerator even at micro-batch 1",
        "use lora/qlora, a larger accelerator or a smaller train.max_length",
    ),
    "NO_MACHINE_TYPE": Reason(
        "preflight",
        "error",
        "no machine type carries that many accelerators of that type",
        "set vertex.accelerator_count to a supported count",
    ),
    "PRICE_UNKNOWN": Reason(
        "preflight",
        "warning",
        "no sourced price for the machine type",
        "add a sourced price to components/preflight/prices.py",
    ),
    # augment: teacher paraphrases of training rows (components/augment/core.py); a rejected candidate is
    # never written, and no original row is ever dropped
    "AUGMENT_LABEL_MISMATCH": Reason(
        "augment",
        "error",
        "the label of a paraphrase (by the oracle or the teacher) differs from the original row's",
        "nothing: the paraphrase changed the meaning; a clearer prompt template keeps more",
    ),
    "AUGMENT_INVALID": Reason(
        "augment",
        "error",
        "the label of a paraphrase fails the task's checks (not JSON, not valid against task.schema, not "
        "one of task.labels), the paraphrase is empty, or the oracle raised on it",
        "nothing for the row; many of these point at the oracle or at the teacher labeller's prompt",
    ),
    "AUGMENT_DUPLICATE": Reason(
        "augment",
        "error",
        "a paraphrase repeats (exactly or nearly, as clean measures it) an existing user message or an "
        "earlier paraphrase",
        "nothing: the first is kept; ask for more varied rewrites in the prompt template",
    ),
    "AUGMENT_EVAL_LEAK": Reason(
        "augment",
        "error",
        "a paraphrase repeats (exactly or nearly, as clean measures it) a user message of the eval set",
        "nothing: it is dropped, so no paraphrase of an eval row reaches training",
    ),
    "AUGMENT_PII": Reason(
        "augment",
        "error",
        "a paraphrase holds PII that its original does not (the teacher invented it)",
        "nothing: the paraphrase is dropped",
    ),
    "AUGMENT_MALFORMED": Reason(
        "augment",
        "warning",
        "teacher calls whose reply could not be read (no JSON list of paraphrases, no lines, no text)",
        "nothing for the rows; many point at the teacher or at a template without a format",
    ),
    "AUGMENT_TIMEOUT": Reason(
        "augment",
        "warning",
        "teacher calls that timed out on every retry; their rows keep no paraphrases",
        "rerun: answered calls are cached; or raise the teacher's timeout",
    ),
    "AUGMENT_REFUSED": Reason(
        "augment",
        "warning",
        "teacher calls the teacher refused (a safety filter or an explicit refusal)",
        "nothing: the rows are kept without paraphrases",
    ),
    "AUGMENT_TEACHER_ERROR": Reason(
        "augment",
        "warning",
        "teacher calls that failed with an HTTP or connection error on every retry",
        "check the endpoint, the model name and the credentials; rerun (answered calls are cached)",
    ),
    "AUGMENT_BUDGET_STOP": Reason(
        "augment",
        "warning",
        "teacher calls not made because their estimated cost would exceed the budget; the stage kept what "
        "it had",
        "raise the budget, or lower n; a rerun reuses the cached answers",
    ),
    "AUGMENT_PRICE_UNKNOWN": Reason(
        "augment",
        "warning",
        "no sourced price for the teacher model: the cost is reported as unknown",
        "add a sourced price to components/augment/cost.py PRICES",
    ),
    "AUGMENT_DONE": Reason(
        "augment", "info", "paraphrases accepted and rows added by teacher augmentation", "none"
    ),
    # deploy: actions on a deployment (components/deploy/actions.py), on its history and in its events
    "DEPLOYED": Reason("deploy", "info", "a version was deployed and its smoke check passed", "none"),
    "DEPLOYMENT_SMOKE_FAILED": Reason(
        "deploy",
        "error",
        "the smoke check failed (unanswered requests, a threshold rule, or serving parity): the canary "
        "was rolled back, the traffic split restored",
        "read the check's reasons and differing rows (deployment.json); fix the serving setup or the model",
    ),
    "DEPLOYMENT_FAILED": Reason(
        "deploy",
        "error",
        "the endpoint refused or failed the deploy call; the traffic split is as it was",
        "check the machine type, accelerator quota and the serving image; deploy again",
    ),
    "DEPLOYMENT_PROMOTE_BLOCKED": Reason(
        "deploy",
        "error",
        "promote refused: the canary's smoke check is not green (or none is recorded)",
        "deploy again after fixing what the smoke check names, or roll back",
    ),
    "DEPLOYMENT_PROMOTED": Reason("deploy", "info", "the canary now takes all the traffic", "none"),
    "DEPLOYMENT_ROLLED_BACK": Reason(
        "deploy", "warning", "the traffic split before the last deploy or promote was restored", "none"
    ),
    "DEPLOYMENT_DRIFT_DETECTED": Reason(
        "deploy",
        "error",
        "the gold set scores confidently worse on the live endpoint than at deploy time",
        "look at the differing rows; roll back, or retrain on fresh data",
    ),
    "DEPLOYMENT_DRIFT_CHECK_FAILED": Reason(
        "deploy",
        "error",
        "the drift check could not ask the endpoint every gold row (timeouts, HTTP errors)",
        "check that the endpoint is up; rerun",
    ),
    "DEPLOYMENT_NO_DRIFT": Reason("deploy", "info", "the gold set scores as it did at deploy time", "none"),
    # stage-level events (no row is rejected by these)
    "SHAPE_DETECTED": Reason("ingest", "info", "the data shape was detected from sample rows", "none"),
    "ROWS_READ": Reason("ingest", "info", "rows read from a locator: accepted + rejected", "none"),
    "CHAT_FIXED": Reason(
        "ingest", "info", "conversations repaired by data.chat.fix (a turn dropped at either end)", "none"
    ),
    "PII_REDACTED": Reason(
        "clean", "warning", "PII was replaced by a placeholder like <EMAIL>", "none; set pii: block to reject"
    ),
    "ROWS_KEPT": Reason("clean", "info", "rows that passed cleaning", "none"),
    "SPLIT_DONE": Reason("split", "info", "rows and groups on each side of the split", "none"),
    "MOVED_TO_TRAIN": Reason(
        "split",
        "warning",
        "eval groups moved to train so every label value appears in training",
        "none; more data per label avoids it",
    ),
    "UNSEEN_IN_TRAIN": Reason(
        "split",
        "warning",
        "a label value of the explicit eval set never appears in training",
        "add training rows with that value",
    ),
    "REJECT_RATE_EXCEEDED": Reason(
        "ingest/clean",
        "error",
        "more rows were rejected than data.max_reject_rate allows; the run stops",
        "fix the dominant reasons, or raise data.max_reject_rate",
    ),
    # registry: promotion and rollback of aliases (components/register/promotion.py)
    "PROMOTED": Reason(
        "registry", "info", "an alias was moved to a version whose recorded gate passed", "nothing to do"
    ),
    "ROLLED_BACK": Reason(
        "registry", "info", "an alias was moved back to an earlier version", "nothing to do"
    ),
    "ALIAS_UNCHANGED": Reason(
        "registry",
        "info",
        "the alias already pointed at the requested version; nothing changed",
        "nothing to do",
    ),
    "PROMOTION_REFUSED": Reason(
        "registry",
        "error",
        "the version's recorded gate did not pass (or none was recorded), so the alias was not moved",
        "fix the failing rules and register a new version; --no-require-green overrides, on purpose only",
    ),
}

ROW_REASONS = tuple(
    code for code, r in REASONS.items() if r.stage in ("ingest", "clean") and r.severity == "error"
)


def event(stage: str, code: str, count: int = 1, message: str = "", **details: Any) -> dict[str, Any]:
    """One audit event; ``code`` must be in ``REASONS`` (a typo is a bug, not a new code)."""
    if code not in REASONS:
        raise KeyError(f"unknown reason code {code!r}: add it to components/common/events.py REASONS")
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stage": stage,
        "severity": REASONS[code].severity,
        "code": code,
        "count": int(count),
        "message": message,
        **({"details": details} if details else {}),
    }


class DataError(ValueError):
    """The data cannot be used as given; the message names the rule, the counts and the fix."""


# Rows clean removes as copies of others: counted apart from the reject-rate limit.
DUPLICATE_CODES = ("DUPLICATE", "NEAR_DUPLICATE")


def check_reject_rate(
    stage: str, rows_in: int, rejected: dict[str, int], max_rate: float, samples: dict[str, list[str]]
) -> dict[str, Any] | None:
    """The REJECT_RATE_EXCEEDED event when rejects exceed ``max_rate`` of the rows read, else None.

    Duplicates that clean removes (DUPLICATE, NEAR_DUPLICATE) are counted apart: removing them is cleaning,
    not bad data, and almost every real dataset has some. The message names the dominant reasons with
    example rows and the fix for the top one."""
    counted = {code: n for code, n in rejected.items() if code not in DUPLICATE_CODES}
    duplicates = sum(n for code, n in rejected.items() if code in DUPLICATE_CODES)
    n = sum(counted.values())
    if rows_in == 0 or n / rows_in <= max_rate:
        return None
    top = sorted(counted.items(), key=lambda kv: -kv[1])[:3]
    reasons = ", ".join(
        f"{code} {count} ({REASONS[code].meaning}; e.g. {', '.join(samples.get(code, [])[:3])})"
        for code, count in top
    )
    return event(
        stage,
        "REJECT_RATE_EXCEEDED",
        n,
        f"{n} of {rows_in} rows rejected ({n / rows_in:.2%} > data.max_reject_rate {max_rate:.2%}); dominant "
        f"reasons: {reasons}. Fix: {REASONS[top[0][0]].fix}, or raise data.max_reject_rate. "
        + (
            f"({duplicates} duplicates removed by clean are not counted against the limit.) "
            if duplicates
            else ""
        )
        + "The rejects artifact lists every row.",
    )


def close_stage(
    events_path: str | Path,
    upstream: str | Path | None,
    new: list[dict[str, Any]],
    *,
    stage: str,
    rows_in: int,
    rejected: dict[str, int],
    max_reject_rate: float,
    samples: dict[str, list[str]],
) -> None:
    """Write the stage's events; then fail the stage if its rejects (cumulative) exceed the allowed rate.
    The events and rejects are written first: nothing already found is lost when the run stops."""
    failure = check_reject_rate(stage, rows_in, rejected, max_reject_rate, samples)
    write_events(events_path, upstream, new + ([failure] if failure else []))
    if failure:
        raise DataError(failure["message"])


def read_events(path: str | Path | None) -> list[dict[str, Any]]:
    if not path or not Path(path).is_file():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_events(path: str | Path, upstream: str | Path | None, new: list[dict[str, Any]]) -> int:
    """Write the upstream stream followed by this stage's events to ``path``; return the total count."""
    events = read_events(upstream) + list(new)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for e in events:
            fh.write(json.dumps(e, sort_keys=True) + "\n")
    return len(events)


def reasons_markdown() -> str:
    """The reason-code table as Markdown (docs/reason-codes.md)."""
    lines = [
        "# Reason codes",
        "",
        "Generated from `components/common/events.py` (`python -m components.common.events`). Codes are",
        "stable: new ones are added, none is renamed or reused.",
        "",
        "| code | stage | severity | meaning | fix |",
        "|---|---|---|---|---|",
    ]
    for code, r in REASONS.items():
        lines.append(f"| `{code}` | {r.stage} | {r.severity} | {r.meaning} | {r.fix} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reasons_markdown(), end="")
