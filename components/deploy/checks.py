"""The checks a deployment is held to: the smoke check (a pinned gold set through the endpoint, scored
like offline evaluation, with serving parity row by row) and the drift check (the same gold set again,
compared with what it scored at deploy time by the gate's paired bootstrap).

An endpoint is anything with ``ask(body) -> Answer``: an OpenAI chat-completions request in, the answer
and which deployed model served it out. ``LocalEndpoint`` talks to `slmforge serve` (or any OpenAI-
compatible server); the Vertex endpoint lives in vertex_endpoint.py. Requests carry the same prompt
template (the task's system prompt, the row's history) and, for constrained decoding, the same constraint
as offline evaluation: ``response_format`` with the task's JSON Schema, or vLLM's ``structured_outputs``
choice list for a classification task.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from components.common.scoring import TaskSpec, score
from components.common.task import prompt_messages
from components.gate.bootstrap import paired_bootstrap
from components.gate.core import apply_rules, rule_kind


class EndpointError(RuntimeError):
    """A request the endpoint did not answer (timeout, connection, HTTP error, a reply without an answer)."""


@dataclass(frozen=True)
class Answer:
    text: str
    served_by: str  # the deployed model that answered ("" when the server does not say)
    finish_reason: str = ""


class Endpoint(Protocol):
    def ask(self, body: dict) -> Answer: ...


def answer_of(reply: dict, served_by: str = "") -> Answer:
    """The first choice of an OpenAI chat.completion reply."""
    try:
        choice = reply["choices"][0]
        return Answer(choice["message"]["content"] or "", served_by, choice.get("finish_reason") or "")
    except (KeyError, IndexError, TypeError) as e:
        raise EndpointError(
            f"the reply holds no choices[0].message.content: {json.dumps(reply)[:200]}"
        ) from e


@dataclass
class LocalEndpoint:
    """An OpenAI-compatible server by URL (`slmforge serve`, a vLLM server)."""

    url: str
    timeout_s: float = 60.0

    def ask(self, body: dict) -> Answer:
        request = urllib.request.Request(
            f"{self.url.rstrip('/')}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return answer_of(json.loads(response.read()), self.url)
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            raise EndpointError(f"{self.url}: HTTP {e.code}: {detail}") from e
        except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
            raise EndpointError(f"{self.url}: {getattr(e, 'reason', e)} (timeout {self.timeout_s} s)") from e
        except ValueError as e:
            raise EndpointError(f"{self.url}: the reply is not JSON ({e})") from e


def request_body(
    row: dict, *, system_prompt: str, task: TaskSpec, decoding: str, max_new_tokens: int, model: str = ""
) -> dict:
    """The chat-completions request for a gold row: the offline prompt, greedy, and the offline constraint
    when evaluation decodes constrained (``both``'s primary decoding is the constrained one)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": prompt_messages(system_prompt, row["prompt"], row.get("history") or "[]"),
        "max_tokens": max_new_tokens,
        "temperature": 0,
    }
    constraint = task.constraint() if decoding != "free" else {}
    if "json_schema" in constraint:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": constraint["json_schema"]},
        }
    elif "choices" in constraint:
        body["structured_outputs"] = {"choice": list(constraint["choices"])}
    return body


def gold_set(predictions_path: str | Path, rows: int, seed: int = 0) -> list[dict]:
    """A seeded sample of ``rows`` rows of an evaluation's predictions table (id, history, prompt,
    expected, predicted), in the table's order: the prompts, their targets and the offline answers."""
    import pyarrow.parquet as pq

    table = pq.read_table(str(predictions_path), columns=["id", "history", "prompt", "expected", "predicted"])
    every = table.to_pylist()
    if not every:
        raise ValueError(f"{predictions_path}: no rows to take a gold set from")
    keep = sorted(random.Random(seed).sample(range(len(every)), min(rows, len(every))))
    return [every[i] for i in keep]


@dataclass
class CheckResult:
    passed: bool
    metrics: dict[str, float]
    per_example: dict[str, list[float]]
    rows: int  # gold rows answered by the deployment under test
    parity_differs: float = 0.0  # share of those whose served answer differs from the offline one
    differing: list[dict] = field(default_factory=list)  # id, prompt, offline, served
    errors: list[str] = field(default_factory=list)  # requests that got no answer
    reasons: list[str] = field(default_factory=list)  # one sentence per verdict

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "per_example"}
        return json.loads(json.dumps(out))


def ask_gold(
    endpoint: Endpoint, gold: list[dict], bodies: list[dict], *, served_by: str = "", max_rounds: int = 1
) -> tuple[dict[int, Answer], list[str]]:
    """Each gold row's answer from the deployed model ``served_by`` ("" = whichever serves): rows another
    deployed model answered are asked again, up to ``max_rounds`` passes (a canary gets a share of the
    traffic). Returns (row index -> answer, request errors)."""
    answers: dict[int, Answer] = {}
    errors: list[str] = []
    pending = list(range(len(gold)))
    for _ in range(max_rounds):
        retry = []
        for i in pending:
            try:
                answer = endpoint.ask(bodies[i])
            except EndpointError as e:
                errors.append(f"row {gold[i]['id']}: {e}")
                continue
            if served_by and answer.served_by != served_by:
                retry.append(i)
            else:
                answers[i] = answer
        pending = retry
        if not pending:
            break
    return answers, errors


def smoke_check(
    endpoint: Endpoint,
    gold: list[dict],
    *,
    task: TaskSpec,
    system_prompt: str,
    decoding: str,
    max_new_tokens: int,
    rules: list[dict],
    parity_tolerance: float,
    served_by: str = "",
    max_rounds: int = 1,
    model: str = "",
) -> CheckResult:
    """Send the gold set; score the answers with the task's scorer; pass only when every request was
    answered, every threshold rule of the gate holds on the served answers (rules against baselines need
    the offline run and are left to the gate), and at most ``parity_tolerance`` of the rows differ from the
    offline predictions."""
    bodies = [
        request_body(
            r,
            system_prompt=system_prompt,
            task=task,
            decoding=decoding,
            max_new_tokens=max_new_tokens,
            model=model,
        )
        for r in gold
    ]
    answers, errors = ask_gold(endpoint, gold, bodies, served_by=served_by, max_rounds=max_rounds)
    reasons = []
    if errors:
        reasons.append(f"FAIL {len(errors)} of {len(gold)} requests got no answer (first: {errors[0]})")
    missing = len(gold) - len(answers) - len(errors)
    if missing:
        reasons.append(
            f"FAIL {missing} gold rows were never answered by deployed model {served_by} in "
            f"{max_rounds} passes"
        )
    if not answers:
        reasons.append("FAIL no gold row was answered")
        return CheckResult(False, {}, {}, 0, 1.0, [], errors, reasons)
    order = sorted(answers)
    served = [answers[i].text for i in order]
    scored = score(task, served, [gold[i]["expected"] for i in order])
    bounds = [r for r in rules if rule_kind(r) != "relative"]
    rules_ok, verdicts = apply_rules(scored.metrics, bounds)
    reasons += [v.sentence for v in verdicts]
    differing = [
        {"id": gold[i]["id"], "prompt": gold[i]["prompt"], "offline": gold[i]["predicted"], "served": a.text}
        for i, a in ((i, answers[i]) for i in order)
        if a.text.strip() != str(gold[i]["predicted"]).strip()
    ]
    share = len(differing) / len(order)
    parity_ok = share <= parity_tolerance
    reasons.append(
        f"{'PASS' if parity_ok else 'FAIL'} serving parity: {len(differing)} of {len(order)} answers differ "
        f"from the offline predictions ({share:.1%}; tolerance {parity_tolerance:.1%})"
    )
    passed = not errors and not missing and rules_ok and parity_ok
    return CheckResult(
        passed, dict(scored.metrics), scored.per_example, len(order), share, differing, errors, reasons
    )


def drift_verdicts(
    now: dict[str, list[float]],
    then: dict[str, list[float]],
    metrics: list[str],
    *,
    margin: float,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[bool, list[dict[str, Any]]]:
    """Per metric, the paired bootstrap of (now - at deploy) over the gold rows, as the gate computes it;
    drift when the whole interval lies below ``-margin``. Returns (drifted, one verdict per metric)."""
    verdicts = []
    for name in metrics:
        if name not in now or name not in then or len(now[name]) != len(then[name]):
            continue
        diff, low, high = paired_bootstrap(now[name], then[name], resamples, seed, confidence)
        drifted = high < -margin
        verdicts.append(
            {
                "metric": name,
                "diff": diff,
                "ci": [low, high],
                "drifted": drifted,
                "sentence": f"{'DRIFT' if drifted else 'OK'} {name}: {diff:+.4f} since deploy "
                f"(CI {low:+.4f}..{high:+.4f}, margin {margin})",
            }
        )
    return any(v["drifted"] for v in verdicts), verdicts
