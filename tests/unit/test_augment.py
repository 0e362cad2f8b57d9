"""Teacher augmentation (components/augment): each HTTP teacher against a loopback stand-in of its API
(an OpenAI-compatible /v1/chat/completions route, Vertex AI's generateContent), the local teacher with the
tiny model, and the stage's validators, budget, cache, recombination and events."""

from __future__ import annotations

import json
import re

import pytest
from loopback_vertex import LoopbackJSON

from components.augment.cache import TeacherCache
from components.augment.core import (
    PARAPHRASE_SCHEMA,
    TeacherLabeler,
    augment,
    dry_run,
    load_oracle,
    parse_paraphrases,
    recombine,
    rephrase_request,
    report_markdown,
)
from components.augment.cost import Budget, cost_usd, estimate_call_usd, price_of
from components.augment.teachers import (
    GeminiTeacher,
    HFTeacher,
    OpenAICompatibleTeacher,
    TeacherError,
    Transport,
)
from components.common.events import REASONS
from components.common.scoring import TaskSpec

LABELS = ["book_hotel", "book_flight", "cancel"]
TASK = TaskSpec("classification", None, LABELS)
LABEL_SYSTEM = "Name the intent of the travel request."
ORACLE = """
def label(row):
    text = row["prompt"].lower()
    if "hotel" in text:
        return "book_hotel"
    if "flight" in text or "fly" in text:
        return "book_flight"
    if "cancel" in text:
        return "cancel"
    return "unknown"
"""


def keyword_label(text: str) -> str:
    namespace: dict = {}
    exec(ORACLE, namespace)
    return namespace["label"]({"prompt": text})


def paraphrases_of(message: str) -> list[str]:
    """The stand-in teacher's rewrites: two good ones, then one of each way a candidate fails."""
    swapped = message.replace("hotel", "@").replace("flight", "hotel").replace("@", "flight")
    return [
        f"please {message}",  # accepted
        f"could you {message}, thanks",  # accepted
        message,  # AUGMENT_DUPLICATE (exact copy of the original)
        f"{message}; write to bob@example.com",  # AUGMENT_PII (an e-mail the original does not hold)
        "hmm",  # AUGMENT_INVALID (the oracle names no label)
        swapped,  # AUGMENT_LABEL_MISMATCH (hotel <-> flight)
        f"{message}.",  # AUGMENT_DUPLICATE (near: Jaccard of 5-grams >= 0.9)
    ]


def row(i: int, prompt: str, completion: str, history: list | None = None) -> dict:
    return {
        "id": f"r{i}",
        "group": f"g{i}",
        "source": "train",
        "history": json.dumps(history or []),
        "prompt": prompt,
        "completion": completion,
    }


ROWS = [
    row(1, "book a hotel in Paris for two nights", "book_hotel"),
    row(2, "I need a flight to Rome next Monday", "book_flight"),
    row(3, "find a hotel near the Lisbon airport", "book_hotel"),
]


# -- loopback stand-ins (tests/loopback_vertex.py LoopbackJSON) ------------------------------------------
Loopback = LoopbackJSON


def _user_message(messages: list[dict]) -> str:
    return messages[-1]["content"].split("User message:\n", 1)[-1]


USAGE = {"prompt_tokens": 100, "completion_tokens": 1000}


def openai_answer(path: str, body: dict) -> tuple[int, dict]:
    """An OpenAI-compatible chat route: labels for label requests, rewrites (JSON when response_format
    asks for it, else numbered lines) for rephrase requests."""
    if path != "/v1/chat/completions":
        return 404, {"error": {"message": f"no route {path}"}}
    messages = body["messages"]
    if messages[0]["role"] == "system" and messages[0]["content"] == LABEL_SYSTEM:
        content = keyword_label(messages[-1]["content"])
    else:
        found = paraphrases_of(_user_message(messages))
        structured = "response_format" in body
        content = (
            json.dumps({"paraphrases": found})
            if structured
            else "\n".join(f"{i + 1}. {p}" for i, p in enumerate(found))
        )
    message = {"role": "assistant", "content": content, "refusal": None}
    return 200, {"choices": [{"message": message, "finish_reason": "stop"}], "usage": USAGE}


def gemini_answer(path: str, body: dict) -> tuple[int, dict]:
    """Vertex AI's generateContent: rewrites as JSON (responseSchema) or lines."""
    if not path.endswith(":generateContent"):
        return 404, {"error": {"code": 404, "status": "NOT_FOUND"}}
    found = paraphrases_of(_user_message([{"content": body["contents"][-1]["parts"][0]["text"]}]))
    structured = "responseSchema" in body["generationConfig"]
    text = json.dumps({"paraphrases": found}) if structured else "\n".join(found)
    return 200, {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 80, "candidatesTokenCount": 120, "totalTokenCount": 200},
    }


@pytest.fixture()
def chat_api():
    server = Loopback(openai_answer)
    yield server
    server.close()


@pytest.fixture()
def gemini_api():
    server = Loopback(gemini_answer)
    yield server
    server.close()


@pytest.fixture()
def oracle(tmp_path, monkeypatch):
    (tmp_path / "augment_oracle.py").write_text(ORACLE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "augment_oracle:label"


def fast(**kw) -> Transport:
    return Transport(**{"timeout_s": 5.0, "retries": 2, "backoff_s": 0.001, **kw})


def chat_teacher(server: Loopback, **kw) -> OpenAICompatibleTeacher:
    model = kw.pop("model", "gpt-4o-mini")
    return OpenAICompatibleTeacher(server.url, model, transport=kw.pop("transport", fast()), **kw)


# -- teachers ---------------------------------------------------------------------------------------------
def test_openai_request_carries_the_schema_and_the_key(chat_api, monkeypatch):
    monkeypatch.setenv("TEACHER_KEY", "sk-test")
    teacher = chat_teacher(chat_api, api_key_env="TEACHER_KEY", max_output_tokens=300, temperature=0.5)
    messages = rephrase_request(
        "Rewrite {n} times. {format}\nUser message:\n{message}", 7, "book a hotel", True
    )
    reply = teacher.complete(messages, schema=PARAPHRASE_SCHEMA)
    path, body, headers = chat_api.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "gpt-4o-mini" and body["max_tokens"] == 300 and body["temperature"] == 0.5
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": PARAPHRASE_SCHEMA, "strict": True},
    }
    assert (reply.input_tokens, reply.output_tokens) == (100, 1000)
    assert json.loads(reply.text)["paraphrases"][0] == "please book a hotel"
    # without a schema (or for an endpoint without structured output) there is no response_format
    chat_teacher(chat_api, structured=False).complete(messages, schema=PARAPHRASE_SCHEMA)
    assert "response_format" not in chat_api.requests[1][1]
    monkeypatch.delenv("TEACHER_KEY")
    with pytest.raises(TeacherError, match=r"\$TEACHER_KEY is empty") as e:
        teacher.complete(messages)
    assert e.value.code == "AUGMENT_TEACHER_ERROR" and len(chat_api.requests) == 2


def test_retries_429_and_5xx_with_growing_backoff(chat_api):
    waits: list[float] = []
    teacher = chat_teacher(chat_api, transport=fast(retries=3, backoff_s=0.01, sleep=waits.append))
    chat_api.faults.extend([429, 500, 503])
    assert teacher.complete([{"role": "user", "content": "hi"}]).output_tokens == 1000
    assert len(chat_api.requests) == 4 and len(waits) == 3
    assert waits[0] < waits[1] < waits[2] and all(0.0075 <= w <= 0.05 for w in waits)
    chat_api.faults.extend([500, 500, 500, 500])  # more failures than retries: an error, no reply
    with pytest.raises(TeacherError, match="HTTP 500") as e:
        teacher.complete([{"role": "user", "content": "hi"}])
    assert e.value.code == "AUGMENT_TEACHER_ERROR" and len(chat_api.requests) == 8
    chat_api.faults.append(400)  # a client error is not retried
    with pytest.raises(TeacherError, match="HTTP 400"):
        teacher.complete([{"role": "user", "content": "hi"}])
    assert len(chat_api.requests) == 9


def test_timeouts_are_retried_then_reported(chat_api):
    teacher = chat_teacher(chat_api, transport=fast(timeout_s=0.2, retries=1))
    chat_api.faults.extend([0.6])  # the first attempt times out, the retry is answered
    assert teacher.complete([{"role": "user", "content": "hi"}]).text
    chat_api.faults.extend([0.6, 0.6])
    with pytest.raises(TeacherError, match="after 2 attempts") as e:
        teacher.complete([{"role": "user", "content": "hi"}])
    assert e.value.code == "AUGMENT_TIMEOUT" and len(chat_api.requests) == 4


def test_refusals_and_malformed_replies_have_their_codes(chat_api):
    teacher = chat_teacher(chat_api)
    refusal = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    chat_api.faults.extend([{"choices": [{"message": refusal, "finish_reason": "stop"}]}, {"id": "x"}])
    for code in ("AUGMENT_REFUSED", "AUGMENT_MALFORMED"):
        with pytest.raises(TeacherError) as e:
            teacher.complete([{"role": "user", "content": "hi"}])
        assert e.value.code == code


def test_gemini_generate_content_request(gemini_api):
    from google.oauth2.credentials import Credentials

    teacher = GeminiTeacher(
        "proj", "us-central1", "gemini-2.5-flash", api_endpoint=gemini_api.url, transport=fast()
    )
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "ok"},
        *rephrase_request("{format}\nUser message:\n{message}", 3, "book a hotel", True),
    ]
    reply = teacher.complete(messages, schema=PARAPHRASE_SCHEMA)
    path, body, headers = gemini_api.requests[0]
    assert (
        path
        == "/v1/projects/proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    )
    assert "Authorization" not in headers  # a loopback http endpoint gets no credentials
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["maxOutputTokens"] == 1024
    # Gemini's responseSchema is an OpenAPI subset: additionalProperties is left out
    assert config["responseSchema"] == {
        k: v for k, v in PARAPHRASE_SCHEMA.items() if k != "additionalProperties"
    }
    assert (reply.input_tokens, reply.output_tokens) == (80, 120)
    assert json.loads(reply.text)["paraphrases"][1] == "could you book a hotel, thanks"
    # explicit credentials are applied to every call; the default endpoint follows the location
    authed = GeminiTeacher(
        "proj", "us-central1", "m", api_endpoint=gemini_api.url, credentials=Credentials(token="tok")
    )
    authed.complete(messages)
    assert gemini_api.requests[1][2]["Authorization"] == "Bearer tok"
    assert "responseSchema" not in gemini_api.requests[1][1]["generationConfig"]
    assert GeminiTeacher("p", "europe-west4", "m").url.startswith(
        "https://europe-west4-aiplatform.googleapis.com/v1/"
    )
    assert GeminiTeacher("p", "global", "m").url.startswith(
        "https://aiplatform.googleapis.com/v1/projects/p/"
    )


def test_gemini_blocked_answers_are_refusals(gemini_api):
    teacher = GeminiTeacher(
        "p", "us-central1", "gemini-2.5-flash", api_endpoint=gemini_api.url, transport=fast()
    )
    gemini_api.faults.extend(
        [
            {"promptFeedback": {"blockReason": "SAFETY"}},
            {"candidates": [{"finishReason": "SAFETY"}]},
            {"x": 1},
        ]
    )
    codes = []
    for _ in range(3):
        with pytest.raises(TeacherError) as e:
            teacher.complete([{"role": "user", "content": "hi"}])
        codes.append(e.value.code)
    assert codes == ["AUGMENT_REFUSED", "AUGMENT_REFUSED", "AUGMENT_MALFORMED"]


def test_hf_teacher_runs_the_tiny_model_greedily(tiny_model):
    teacher = HFTeacher(str(tiny_model), max_output_tokens=6)
    messages = [{"role": "user", "content": "book a hotel in Paris"}]
    first, second = teacher.complete(messages), teacher.complete(messages)
    assert first == second  # greedy: the same answer twice
    assert 0 < first.output_tokens <= 6 and first.input_tokens > 5
    assert teacher.structured is False and price_of(teacher.model) is None


# -- parsing, cost, cache ---------------------------------------------------------------------------------
def test_parse_paraphrases():
    assert parse_paraphrases('{"paraphrases": [" a ", "b"]}', True) == ["a", "b"]
    assert parse_paraphrases('["a"]', True) == ["a"]
    for bad in ("not json", '{"paraphrases": "a"}', '{"paraphrases": [1]}', '{"paraphrases": []}'):
        assert parse_paraphrases(bad, True) is None
    assert parse_paraphrases('1. "one"\n- two\n\n(3) three\n* four', False) == ["one", "two", "three", "four"]
    assert parse_paraphrases("\n  \n", False) is None


def test_prices_are_sourced_and_unknown_is_not_zero():
    price = price_of("Gemini-2.5-Flash")
    assert price is not None and price.source.startswith("https://")
    assert cost_usd(price, 1_000_000, 1_000_000) == pytest.approx(
        price.input_usd_per_m + price.output_usd_per_m
    )
    assert price_of("my-vllm-model") is None and cost_usd(None, 10, 10) is None
    messages = [{"role": "user", "content": "x" * 300}]
    assert estimate_call_usd(price, messages, 100) == pytest.approx((104 * 0.30 + 100 * 2.50) / 1e6)


def test_budget_reserves_before_and_stops_for_good():
    budget = Budget(max_usd=1.0)
    assert budget.reserve(0.6) and not budget.reserve(0.5) and budget.stopped
    budget.settle(0.6, 0.1)
    assert not budget.reserve(0.1)  # stopped: the stage ends with what it has
    assert budget.spent_usd == pytest.approx(0.1) and budget.reserved_usd == pytest.approx(0.0)
    assert Budget().reserve(None)  # no cap: anything goes
    with pytest.raises(ValueError, match="known price"):
        Budget(1.0).reserve(None)


def test_cache_round_trip(tmp_path):
    from components.augment.teachers import TeacherReply

    path = tmp_path / "c" / "cache.sqlite"
    key = TeacherCache.key("row text", "openai:x:m", "template")
    with TeacherCache(path) as cache:
        assert cache.get(key) is None and not cache.contains(key)
        cache.put(key, TeacherReply("answer", 3, 4))
    with TeacherCache(path) as cache:
        assert cache.contains(key) and cache.get(key) == TeacherReply("answer", 3, 4)
        assert cache.get(TeacherCache.key("row text", "openai:x:m", "another template")) is None
        assert (cache.hits, cache.misses) == (1, 1)


# -- the stage --------------------------------------------------------------------------------------------
def test_validators_and_reason_codes(chat_api, oracle):
    result = augment(ROWS, teacher=chat_teacher(chat_api), labeler=oracle, task=TASK, n=7)
    assert result.rows[: len(ROWS)] == ROWS  # every original, unchanged, first
    assert result.asked == 21 and result.received == 21 and result.accepted == 6 and result.added == 6
    assert result.rejected == {
        "AUGMENT_DUPLICATE": 6,
        "AUGMENT_PII": 3,
        "AUGMENT_INVALID": 3,
        "AUGMENT_LABEL_MISMATCH": 3,
    }
    added = result.rows[len(ROWS) :]
    assert [r["id"] for r in added] == ["r1~aug1", "r1~aug2", "r2~aug1", "r2~aug2", "r3~aug1", "r3~aug2"]
    assert added[0]["prompt"] == "please book a hotel in Paris for two nights"
    assert all(
        r["group"] == f"g{r['id'][1]}" and r["completion"] == keyword_label(r["prompt"]) for r in added
    )
    codes = {e["code"]: e["count"] for e in result.events}
    assert codes["AUGMENT_PII"] == 3 and codes["AUGMENT_DONE"] == 6
    assert all(e["stage"] == "augment" and e["code"] in REASONS for e in result.events)
    assert result.calls == 3 and result.cost_usd == pytest.approx(
        3 * cost_usd(price_of("gpt-4o-mini"), 100, 1000)
    )
    report = result.report()
    assert report["acceptance_rate"] == pytest.approx(6 / 21)
    assert report["per_label"]["book_hotel"] == {
        "steps": 2,
        "asked": 14,
        "accepted": 4,
        "rows_before": 2,
        "rows_after": 6,
    }
    text = report_markdown(result)
    assert "`AUGMENT_LABEL_MISMATCH` | 3" in text and "| `book_flight` | 1 | 7 | 2 | 28.6% | 1 | 3 |" in text


def test_eval_prompts_and_the_teacher_as_labeller(chat_api):
    """The teacher re-labels (no oracle); paraphrases of the eval set's prompts are duplicates too."""
    labeler = TeacherLabeler(chat_teacher(chat_api, temperature=0.0), system_prompt=LABEL_SYSTEM)
    result = augment(
        ROWS[:1],
        teacher=chat_teacher(chat_api),
        labeler=labeler,
        task=TASK,
        n=7,
        existing_prompts=["please book a hotel in Paris for two nights"],
    )
    assert result.accepted == 1 and result.rejected["AUGMENT_DUPLICATE"] == 3
    assert result.rows[1]["prompt"] == "could you book a hotel in Paris for two nights, thanks"
    # one rephrase call, then one label call per candidate that reached labelling
    labels = [b for _, b, _ in chat_api.requests if b["messages"][0]["content"] == LABEL_SYSTEM]
    assert len(chat_api.requests) == 1 + len(labels) and len(labels) == 5
    assert labels[0]["temperature"] == 0.0 and "response_format" not in labels[0]


def test_cache_makes_a_rerun_call_nothing(chat_api, tmp_path):
    labeler = TeacherLabeler(chat_teacher(chat_api, temperature=0.0), system_prompt=LABEL_SYSTEM)
    kwargs = {"teacher": chat_teacher(chat_api), "labeler": labeler, "task": TASK, "n": 7}
    with TeacherCache(tmp_path / "cache.sqlite") as cache:
        first = augment(ROWS, cache=cache, **kwargs)
    made = len(chat_api.requests)
    # 3 rephrase + 15 label requests; the three "hmm" label requests are one request: from the second on
    # it may be answered by the cache already (the rows run concurrently, so whether it is varies)
    assert made == first.calls and first.calls + first.cache_hits == 3 + 3 * 5
    with TeacherCache(tmp_path / "cache.sqlite") as cache:  # a dry run sees what is answered
        plan = dry_run(ROWS, teacher=kwargs["teacher"], task=TASK, n=7, labeler=labeler, cache=cache)
    assert (plan.calls, plan.cached) == (3 * 7, 3)  # labelling calls are counted at most, uncached
    with TeacherCache(tmp_path / "cache.sqlite") as cache:
        second = augment(ROWS, cache=cache, **kwargs)
    assert len(chat_api.requests) == made  # zero HTTP calls the second time
    assert second.rows == first.rows and second.cache_hits == 3 + 3 * 5 and second.calls == 0
    assert second.cost_usd == 0.0


def test_budget_stops_cleanly_and_keeps_what_it_has(chat_api, oracle):
    teacher = chat_teacher(chat_api, max_output_tokens=1000)
    per_call = cost_usd(price_of("gpt-4o-mini"), 100, 1000)  # what the stand-in bills a call
    budget = Budget(max_usd=2.5 * per_call)
    result = augment(ROWS, teacher=teacher, labeler=oracle, task=TASK, n=7, budget=budget, max_workers=1)
    assert len(chat_api.requests) == 2 and result.failed_calls == {"AUGMENT_BUDGET_STOP": 1}
    assert budget.stopped and budget.spent_usd <= budget.max_usd
    assert result.rows[:3] == ROWS and {r["id"] for r in result.rows[3:]} == {
        "r1~aug1",
        "r1~aug2",
        "r2~aug1",
        "r2~aug2",
    }
    assert result.asked == 14  # the third row was never asked
    assert any(e["code"] == "AUGMENT_BUDGET_STOP" and e["count"] == 1 for e in result.events)
    with pytest.raises(ValueError, match="price for local"):
        augment(
            ROWS, teacher=chat_teacher(chat_api, model="local"), labeler=oracle, task=TASK, budget=Budget(1.0)
        )


def test_failed_calls_never_drop_a_row(chat_api, oracle):
    """A timeout, a refusal and an unreadable reply: each counted by reason, every original kept."""
    teacher = chat_teacher(chat_api, transport=fast(timeout_s=0.2, retries=0))
    refusal = {"role": "assistant", "content": None, "refusal": "no"}
    not_json = {"role": "assistant", "content": "Sure! Here are some rewrites", "refusal": None}
    chat_api.faults.extend(
        [0.6, {"choices": [{"message": refusal}]}, {"choices": [{"message": not_json}], "usage": USAGE}]
    )
    result = augment(ROWS, teacher=teacher, labeler=oracle, task=TASK, n=7, max_workers=1)
    assert result.rows == ROWS and result.added == 0
    assert result.failed_calls == {"AUGMENT_TIMEOUT": 1, "AUGMENT_REFUSED": 1, "AUGMENT_MALFORMED": 1}
    assert {e["code"] for e in result.events} == {
        "AUGMENT_TIMEOUT",
        "AUGMENT_REFUSED",
        "AUGMENT_MALFORMED",
        "AUGMENT_DONE",
    }


def test_gemini_teacher_end_to_end(gemini_api, oracle):
    teacher = GeminiTeacher(
        "p", "us-central1", "gemini-2.5-flash", api_endpoint=gemini_api.url, transport=fast()
    )
    result = augment(ROWS, teacher=teacher, labeler=oracle, task=TASK, n=7)
    assert result.accepted == 6 and result.rows[:3] == ROWS
    assert result.cost_usd == pytest.approx(3 * cost_usd(price_of("gemini-2.5-flash"), 80, 120))


def test_recombination_takes_the_kth_rephrase_and_cycles():
    conversation = row(
        9,
        "and a hotel there",
        "book_hotel",
        [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "fly me to Rome"},
            {"role": "assistant", "content": "book_flight"},
        ],
    )
    out = recombine(conversation, {1: ["a1", "a2", "a3"], 3: ["b1"]})
    assert [r["id"] for r in out] == ["r9~aug1", "r9~aug2", "r9~aug3"]
    assert [(json.loads(r["history"])[1]["content"], r["prompt"]) for r in out] == [
        ("a1", "b1"),
        ("a2", "b1"),
        ("a3", "b1"),
    ]
    assert all(json.loads(r["history"])[0] == {"role": "system", "content": "sys"} for r in out)
    assert recombine(conversation, {1: ["a1"], 3: []})[0]["prompt"] == "and a hotel there"  # none: original
    assert recombine(conversation, {}) == []


def test_conversations_are_augmented_step_by_step(chat_api, oracle):
    history = [
        {"role": "user", "content": "I need a flight to Rome"},
        {"role": "assistant", "content": "book_flight"},
    ]
    rows = [row(1, "also a hotel near the Colosseum", "book_hotel", history)]
    result = augment(rows, teacher=chat_teacher(chat_api), labeler=oracle, task=TASK, n=7)
    assert len(chat_api.requests) == 2 and result.accepted == 4 and result.added == 2
    first, second = result.rows[1:]
    assert json.loads(first["history"])[0]["content"] == "please I need a flight to Rome"
    assert first["prompt"] == "please also a hotel near the Colosseum"
    assert json.loads(second["history"])[0]["content"] == "could you I need a flight to Rome, thanks"
    assert json.loads(second["history"])[1] == {"role": "assistant", "content": "book_flight"}


def test_dry_run_counts_calls_and_estimates_cost(chat_api):
    teacher = chat_teacher(chat_api, max_output_tokens=500)
    plan = dry_run(ROWS, teacher=teacher, task=TASK, n=7)
    expected = sum(
        estimate_call_usd(price_of("gpt-4o-mini"), rephrase_request(_template(), 7, r["prompt"], True), 500)
        for r in ROWS
    )
    assert (plan.calls, plan.cached) == (3, 0) and plan.estimated_usd == pytest.approx(expected, abs=1e-6)
    labeler = TeacherLabeler(chat_teacher(chat_api, model="unpriced"), LABEL_SYSTEM)
    plan = dry_run(ROWS, teacher=teacher, task=TASK, n=7, labeler=labeler)
    assert plan.calls == 3 + 21 and plan.estimated_usd is None  # a price is unknown: so is the cost
    assert not chat_api.requests  # nothing was asked


def _template() -> str:
    from components.augment.core import DEFAULT_TEMPLATE

    return DEFAULT_TEMPLATE


def test_oracle_by_import_path(oracle):
    assert load_oracle(oracle)({"prompt": "a hotel"}) == "book_hotel"
    with pytest.raises(ValueError, match="module:function"):
        load_oracle("augment_oracle")
    with pytest.raises(ValueError, match="no function 'nope'"):
        load_oracle("augment_oracle:nope")


def test_structured_task_compares_parsed_json(chat_api, tmp_path, monkeypatch):
    """A structured task: the oracle's JSON is checked against the schema and compared as a value."""
    schema = {"type": "object", "properties": {"intent": {"enum": LABELS}}, "required": ["intent"]}
    (tmp_path / "json_oracle.py").write_text(
        ORACLE + "\ndef as_json(row):\n    return {'intent': label(row)}\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = [row(1, "book a hotel in Paris for two nights", '{"intent": "book_hotel"}')]
    result = augment(
        rows,
        teacher=chat_teacher(chat_api),
        labeler="json_oracle:as_json",
        task=TaskSpec("structured", schema),
        n=7,
    )
    # "hmm" gets {"intent": "unknown"}: invalid against the schema
    assert result.accepted == 2 and result.rejected["AUGMENT_INVALID"] == 1
    assert result.rejected["AUGMENT_LABEL_MISMATCH"] == 1


def test_local_teacher_through_the_stage(tiny_model, oracle):
    """The tiny model is random-init: whatever it writes, the stage accounts for it and keeps the rows."""
    result = augment(
        ROWS[:2], teacher=HFTeacher(str(tiny_model), max_output_tokens=12), labeler=oracle, task=TASK, n=3
    )
    assert result.rows[:2] == ROWS[:2] and result.calls == 2 and result.asked == 6
    assert result.cost_usd is None and any(e["code"] == "AUGMENT_PRICE_UNKNOWN" for e in result.events)
    assert (
        result.accepted + sum(result.rejected.values()) + sum(result.unverified.values()) == result.received
    )


# -- the stage: config, options, tables, card, CLI --------------------------------------------------------
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "travel" / "config.yaml"


def test_data_augment_config_routes_every_field_to_the_step():
    """data.augment is declared once: the pipeline parameters carry it and the step's options decode it
    back, with the Gemini location falling back to vertex.region."""
    from components.augment.stage import AugmentOptions
    from components.common.config_load import load_config
    from pipelines.parameters import pipeline_parameters, stage_options

    cfg = load_config(
        DEMO,
        [
            "data.augment.enabled=true",
            "data.augment.n=3",
            "data.augment.teacher.backend=openai",
            "data.augment.teacher.endpoint=http://127.0.0.1:9",
            "data.augment.teacher.key_env=TEACHER_KEY",
            "data.augment.max_usd=0.5",
            "vertex.region=europe-west4",
        ],
    )
    params = pipeline_parameters(cfg)
    assert params["augment"] is True and params["augment_n"] == 3 and params["augment_max_usd"] == 0.5
    assert params["augment_location"] == "europe-west4"
    opts = stage_options(AugmentOptions, "augment", cfg)
    assert (opts.enabled, opts.n, opts.teacher, opts.key_env) == (True, 3, "openai", "TEACHER_KEY")
    assert opts.task.type == "structured" and opts.output_schema == cfg.task.output_schema
    assert opts.near_dup_threshold == cfg.data.clean.near_dup_threshold
    assert opts.system_prompt == cfg.task.system_prompt


@pytest.mark.parametrize(
    ("override", "rule"),
    [
        ("data.augment.n=0", "AUG-001"),
        ("data.augment.max_usd=-2", "AUG-001"),
        ("data.augment.teacher.key_env='my key'", "AUG-002"),
        ("data.augment.oracle=labels.py", "AUG-003"),
        ("data.augment.prompt_template='Rewrite it {n} times'", "AUG-004"),
        ("data.augment.enabled=true", "AUG-005"),  # with the openai backend below and no endpoint
    ],
)
def test_bad_augment_settings_name_their_rule(override, rule):
    from components.common.config_load import load_config
    from components.common.config_rules import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(DEMO, [override, "data.augment.teacher.backend=openai"])
    assert f"[{rule}]" in str(e.value), str(e.value)


def _tables(tmp_path, eval_prompts):
    from components.common.tables import write_rows

    train, evals = tmp_path / "train.parquet", tmp_path / "eval.parquet"
    write_rows(ROWS, train)
    write_rows(
        [
            {**row(10 + i, p, keyword_label(p)), "source": "eval", "group": f"e{i}"}
            for i, p in enumerate(eval_prompts)
        ],
        evals,
    )
    return train, evals


def _options(server: Loopback, tmp_path, **kw):
    from components.augment.stage import AugmentOptions

    return AugmentOptions(
        enabled=True,
        n=7,
        teacher="openai",
        model="gpt-4o-mini",
        endpoint=server.url,
        retries=1,
        task_type="classification",
        labels=LABELS,
        cache=str(tmp_path / "cache.sqlite"),
        **kw,
    )


def test_stage_writes_originals_then_added_rows_and_never_a_paraphrase_of_an_eval_row(
    chat_api, oracle, tmp_path
):
    from components.augment.stage import extend_card, run_stage
    from components.common.tables import read_rows

    # the teacher's first rewrite of row 1 is word for word an eval prompt: it must not reach training
    train, evals = _tables(tmp_path, ["please book a hotel in Paris for two nights", "cancel my trip"])
    out = tmp_path / "augmented.parquet"
    result = run_stage(train, evals, out, _options(chat_api, tmp_path, oracle=oracle))
    written = read_rows(out)
    assert written[: len(ROWS)] == [{**r} for r in read_rows(train)]  # every original, first, unchanged
    added = written[len(ROWS) :]
    assert len(added) == result.added > 0
    assert result.rejected["AUGMENT_EVAL_LEAK"] == 1
    assert "please book a hotel in Paris for two nights" not in {r["prompt"] for r in added}
    assert {r["group"] for r in added} <= {r["group"] for r in ROWS}
    assert result.accepted + sum(result.rejected.values()) == result.received == 7 * len(ROWS)
    assert any(e["code"] == "AUGMENT_EVAL_LEAK" for e in result.events)

    # the dataset card gains the report; the manifest records the augmented table's hash
    split_card = tmp_path / "card"
    split_card.mkdir()
    (split_card / "manifest.json").write_text(json.dumps({"rows": {"train": 3}}))
    (split_card / "dataset_summary.md").write_text("# Dataset summary\n")
    man = extend_card(split_card, tmp_path / "card2", result, "abc")
    assert man["augment"]["accepted"] == result.accepted and man["augment"]["sha256"] == "abc"
    assert man["augment"]["train_rows_after"] == len(written)
    summary = (tmp_path / "card2" / "dataset_summary.md").read_text()
    assert "## Augmentation report" in summary and "AUGMENT_EVAL_LEAK" in summary


def test_stage_off_passes_the_rows_through(tmp_path):
    from components.augment.stage import AugmentOptions, run_stage

    train, evals = _tables(tmp_path, ["cancel my trip"])
    out = tmp_path / "out.parquet"
    assert run_stage(train, evals, out, AugmentOptions(enabled=False)) is None
    assert out.read_bytes() == train.read_bytes()


def test_stage_relabels_with_the_teacher_when_no_oracle_is_given(chat_api, tmp_path):
    """Without an oracle the teacher re-labels each paraphrase at temperature 0 with the task's system
    prompt; the label must still equal the original's."""
    from components.augment.stage import run_stage

    train, evals = _tables(tmp_path, ["cancel my trip"])
    opts = _options(chat_api, tmp_path, system_prompt=LABEL_SYSTEM)
    result = run_stage(train, evals, tmp_path / "out.parquet", opts)
    label_calls = [b for _, b, _ in chat_api.requests if b["messages"][0]["content"] == LABEL_SYSTEM]
    assert label_calls and all(b["temperature"] == 0.0 for b in label_calls)
    assert result.accepted > 0 and result.rejected["AUGMENT_LABEL_MISMATCH"] > 0


def test_cli_data_augment_dry_run_then_run(chat_api, tmp_path, monkeypatch):
    """`slmforge data augment CONFIG`: the dry run prints calls and an estimate and calls nothing; the run
    writes the tables, the report and the events; a second run is answered from the cache."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    rows = [json.loads(x) for x in (REPO / "examples/travel/data/travel.jsonl").read_text().splitlines()]
    data = tmp_path / "travel.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[:80]))
    monkeypatch.setenv("SLMFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.syspath_prepend(str(REPO))
    args = [
        "data",
        "augment",
        str(DEMO),
        "--set",
        f"data.train={data}",
        "--set",
        "data.augment.n=4",
        "--set",
        "data.augment.teacher.backend=openai",
        "--set",
        "data.augment.teacher.model=gpt-4o-mini",
        "--set",
        f"data.augment.teacher.endpoint={chat_api.url}",
        "--set",
        "data.augment.oracle=examples.travel.travel:label_row",
    ]
    runner = CliRunner()
    dry = runner.invoke(app, [*args, "--dry-run"], env={"COLUMNS": "200"})
    assert dry.exit_code == 0, dry.output
    assert "teacher calls (0 answered in the cache" in dry.output and "estimated cost at most $" in dry.output
    assert chat_api.requests == []
    out = tmp_path / "out"
    done = runner.invoke(app, [*args, "--out", str(out)], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert {"train.parquet", "eval.parquet", "augmentation.md", "events.jsonl"} <= {
        p.name for p in out.iterdir()
    }
    calls = len(chat_api.requests)
    assert calls == int(re.search(r"(\d+) teacher calls \(", dry.output).group(1))
    report = (out / "augmentation.md").read_text()
    assert "Paraphrases asked:" in report and "cost $" in report
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "out2")], env={"COLUMNS": "200"})
    assert again.exit_code == 0 and len(chat_api.requests) == calls  # all from the cache
    assert f"{calls} from the cache" in again.output
