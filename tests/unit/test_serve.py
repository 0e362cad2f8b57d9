"""``slmforge serve`` (components/deploy/serve.py) on the real tiny://travel model over real HTTP: its
answers are offline evaluation's answers for the same rows (free and constrained), bad requests are refused
with the field named, and the CLI starts, answers and stops on a signal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("xgrammar")

REPO = Path(__file__).resolve().parents[2]

BUDGET = 48  # tokens: the server's default answer budget here
JSON_BUDGET = 256  # constrained answers: the random model mostly closes its JSON well before this
ROWS = slice(0, 400, 100)  # 4 travel rows of different intents


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body=None, *, raw: bytes | None = None, timeout: float = 60) -> tuple[int, dict]:
    """(status, JSON reply) of a GET (no body) or POST."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(tiny_model):
    from components.deploy.serve import ChatServer

    with ChatServer(tiny_model, max_new_tokens=BUDGET, model_id="travel-tiny") as srv:
        yield srv


@pytest.fixture(scope="module")
def conversations(travel_config, travel_rows) -> list[list[dict]]:
    """Evaluation's messages for a few travel rows, plus one with an earlier exchange (history)."""
    from components.common.task import prompt_messages

    system = travel_config.task.system_prompt
    convs = [prompt_messages(system, r["prompt"]) for r in travel_rows[ROWS]]
    history = json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "[]"}])
    return [*convs, prompt_messages(system, "Book a flight to Rome", history)]


def offline(server, conversations, factory=None, budget: int = BUDGET) -> list[str]:
    """What evaluate() answers: prompt_token_ids, then generate() over one left-padded batch of them."""
    from components.evaluate.core import generate

    tok = server.tokenizer
    ids = [server.prompt_ids(c) for c in conversations]
    return generate(server.model, tok, ids, budget, len(ids), factory)[0]


def test_prompt_ids_are_evaluations(server, travel_config, travel_rows):
    from components.common.task import prompt_messages, prompt_token_ids

    system = travel_config.task.system_prompt
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "[]"}]
    for row in travel_rows[ROWS]:
        for hist in ([], history):
            expected = prompt_token_ids(server.tokenizer, system, row["prompt"], json.dumps(hist))
            assert server.prompt_ids(prompt_messages(system, row["prompt"], hist)) == expected


def test_free_answers_match_offline(server, conversations):
    served = []
    for messages in conversations:
        status, reply = call(f"{server.url}/v1/chat/completions", {"messages": messages, "temperature": 0})
        assert status == 200, reply
        assert reply["object"] == "chat.completion" and reply["model"] == "travel-tiny"
        served.append(reply["choices"][0]["message"]["content"])
    assert served == offline(server, conversations)


def test_constrained_answers_match_offline_and_validate(server, conversations, travel_schema):
    from components.common.task import schema_validator
    from components.evaluate.constrained import logits_processor_factory

    forms = [
        {"response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": travel_schema}}},
        {"guided_json": travel_schema},
        {"structured_outputs": {"json": json.dumps(travel_schema)}},
    ]
    factory = logits_processor_factory(server.tokenizer, json_schema=travel_schema)
    expected = offline(server, conversations, factory, JSON_BUDGET)
    validator = schema_validator(travel_schema)
    finished = 0
    for i, messages in enumerate(conversations):
        body = {"messages": messages, "max_tokens": JSON_BUDGET, **forms[i % 3]}
        status, reply = call(f"{server.url}/v1/chat/completions", body)
        assert status == 200, reply
        choice = reply["choices"][0]
        assert choice["message"]["content"] == expected[i]
        if choice["finish_reason"] == "stop":
            validator.validate(json.loads(choice["message"]["content"]))
            finished += 1
        else:  # a cut-off answer is what offline evaluation also got: an unfinished document
            assert reply["usage"]["completion_tokens"] == JSON_BUDGET
    assert finished, "no constrained answer finished within the budget: nothing was validated"


def test_choices(server, conversations):
    labels = ["book_flight", "book_hotel", "cancel"]
    for body in ({"guided_choice": labels}, {"structured_outputs": {"choice": labels}}):
        status, reply = call(f"{server.url}/v1/chat/completions", {"messages": conversations[0], **body})
        assert status == 200, reply
        assert reply["choices"][0]["message"]["content"] in labels
        assert reply["choices"][0]["finish_reason"] == "stop"


def test_usage_and_length(server, conversations):
    status, reply = call(f"{server.url}/v1/chat/completions", {"messages": conversations[0], "max_tokens": 2})
    assert status == 200, reply
    prompt = len(server.prompt_ids(conversations[0]))
    assert reply["usage"] == {"prompt_tokens": prompt, "completion_tokens": 2, "total_tokens": prompt + 2}
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["id"].startswith("chatcmpl-") and isinstance(reply["created"], int)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"temperature": 0.7}, "temperature"),
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stream": True}, "stream"),
        ({"guided_json": {"type": "nonsense"}}, "guided_json"),
        ({"guided_json": "{not json"}, "guided_json"),
        ({"guided_choice": []}, "guided_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format.json_schema"),
        ({"response_format": {"type": "json_object"}}, "response_format.type"),
        ({"guided_json": {"type": "object"}, "guided_choice": ["a"]}, "guided_choice"),
        ({"structured_outputs": {"regex": "a+"}}, "structured_outputs.regex"),
    ],
)
def test_bad_requests(server, body, field):
    if "messages" not in body and field not in ("messages",):
        body = {"messages": [{"role": "user", "content": "hi"}], **body}
    status, reply = call(f"{server.url}/v1/chat/completions", body)
    assert status == 400, reply
    assert reply["error"]["type"] == "invalid_request_error"
    assert reply["error"]["param"] == field
    assert field.split(".")[0].split("[")[0] in reply["error"]["message"]


def test_not_json_unknown_route_and_failure(server, monkeypatch):
    status, reply = call(f"{server.url}/v1/chat/completions", raw=b"{nope")
    assert status == 400 and "not JSON" in reply["error"]["message"]
    status, reply = call(f"{server.url}/v1/completions", {"prompt": "x"})
    assert status == 404 and reply["error"]["type"] == "not_found"

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("components.evaluate.core.generate", boom)
    status, reply = call(
        f"{server.url}/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}
    )
    assert status == 500 and "out of memory" in reply["error"]["message"]
    monkeypatch.undo()
    assert call(f"{server.url}/health")[0] == 200  # still serving


def test_health_and_models(server):
    assert call(f"{server.url}/health") == (200, {"status": "ok", "model": "travel-tiny"})
    status, reply = call(f"{server.url}/v1/models")
    assert status == 200 and reply["object"] == "list"
    assert [m["id"] for m in reply["data"]] == ["travel-tiny"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_serves_and_stops(tiny_model, stop):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "pipelines.cli", "serve", str(tiny_model), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            try:
                if call(f"{url}/health", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the server did not start in 60 s"
            time.sleep(0.2)
        body = {"messages": [{"role": "user", "content": "Book a hotel"}], "max_tokens": 4}
        status, reply = call(f"{url}/v1/chat/completions", body)
        assert status == 200 and reply["usage"]["completion_tokens"] <= 4
        assert reply["model"] == str(tiny_model)
        proc.send_signal(stop)
        out = proc.communicate(timeout=20)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert f"{url}" in out and "curl" in out and "stopped" in out


def test_starting_twice_still_stops(tiny_model):
    """A started server started again (``with ChatServer(...).start()``) runs one serving loop, and
    ``close()`` returns: two serve_forever loops on one socket would leave one running and close() waiting
    on it forever."""
    import threading

    from components.deploy.serve import ChatServer

    before = set(threading.enumerate())  # the module's own server may be serving too
    srv = ChatServer(tiny_model, max_new_tokens=4, model_id="travel-tiny")
    assert srv.start().start() is srv
    assert call(f"{srv.url}/health")[0] == 200
    loops = [t for t in set(threading.enumerate()) - before if t.name == "slmforge-serve"]
    closing = threading.Thread(target=srv.close, daemon=True)
    closing.start()
    closing.join(timeout=30)
    assert not closing.is_alive(), "close() did not return within 30 s"
    assert len(loops) == 1 and not loops[0].is_alive()
