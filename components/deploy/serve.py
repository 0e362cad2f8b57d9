"""serve: an OpenAI-compatible chat-completions server for a model folder on this machine.

``slmforge serve MODEL`` (pipelines/cli_serve.py) runs it for developers and for the smoke and drift
checks. Its answers are offline evaluation's answers (serving parity): the prompt is the chat template
with the generation header, as ``components.common.task.prompt_token_ids`` builds it; decoding is
``components.evaluate.core.generate`` (greedy); a structured-output request is held to the schema or
choices by the same ``logits_processor_factory`` constrained evaluation uses. So a row sent here gets
the answer the evaluation report shows for it.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions``. Structured output is asked
for the OpenAI way (``response_format: {"type": "json_schema", "json_schema": {"schema": ...}}``) or
vLLM's (``guided_json`` / ``guided_choice``, or ``structured_outputs: {"json": ...}`` /
``{"choice": [...]}``), so a client written against vLLM works unchanged. Only greedy decoding is served
(temperature 0 or absent, n = 1): sampling would give answers evaluation never scored.

Standard library HTTP (``ThreadingHTTPServer``): requests are read concurrently, generation runs one at a
time (one model, one lock).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")
MAX_BODY = 16 * 1024 * 1024  # bytes; a chat request is far smaller
CONSTRAINT_CACHE = 16  # compiled constraints kept (a client usually sends one schema over and over)


class RequestError(ValueError):
    """A request the server refuses (HTTP 400): ``param`` names the field at fault."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


def _text_content(content: Any, where: str) -> str:
    """A message's content as text: a string, or OpenAI content parts that are all ``{"type": "text"}``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise RequestError(
        f"{where}.content must be a string (or a list of {{'type': 'text', 'text': ...}} parts); "
        f"got {type(content).__name__}. Fix: send the message text as a string",
        where + ".content",
    )


def parse_messages(body: dict) -> list[dict[str, str]]:
    """The request's ``messages`` as plain ``{"role", "content"}`` turns, what the chat template takes."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            "messages is missing or empty. Fix: send a list of {'role': 'system'|'user'|'assistant', "
            "'content': '...'} turns ending with the user's turn",
            "messages",
        )
    turns = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f"{where} must be an object with role and content", where)
        if m.get("role") not in ROLES:
            raise RequestError(
                f"{where}.role={m.get('role')!r} is not served. Fix: use one of {', '.join(ROLES)}",
                where + ".role",
            )
        turns.append({"role": m["role"], "content": _text_content(m.get("content"), where)})
    return turns


def parse_constraint(body: dict) -> tuple[str, str, dict | list] | None:
    """The structured output a request asks for, as (field, "json_schema", schema) or (field, "choices",
    labels), ``field`` being where the request put it; None for free text. Every form is read (OpenAI
    ``response_format``, vLLM ``guided_json`` / ``guided_choice`` / ``structured_outputs``); asking for
    two at once is refused."""
    found: list[tuple[str, str, Any]] = []  # (field, kind, value)
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or "schema" not in spec:
                raise RequestError(
                    "response_format.json_schema.schema is missing. Fix: send "
                    "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}",
                    "response_format.json_schema",
                )
            found.append(("response_format.json_schema.schema", "json_schema", spec["schema"]))
        elif kind != "text":
            raise RequestError(
                f"response_format.type={kind!r} is not served. Fix: use 'json_schema' with the task's schema "
                "(the constraint evaluation applies) or 'text'",
                "response_format.type",
            )
    for field in ("guided_regex", "guided_grammar"):
        if body.get(field) is not None:
            raise RequestError(
                f"{field} is not served. Fix: use guided_json (a JSON Schema) or guided_choice (labels), "
                "the constraints evaluation applies",
                field,
            )
    if body.get("guided_json") is not None:
        found.append(("guided_json", "json_schema", body["guided_json"]))
    if body.get("guided_choice") is not None:
        found.append(("guided_choice", "choices", body["guided_choice"]))
    so = body.get("structured_outputs")
    if so is not None:
        if not isinstance(so, dict):
            raise RequestError(
                "structured_outputs must be an object: {'json': schema} or {'choice': [...]}",
                "structured_outputs",
            )
        given = {k: v for k, v in so.items() if v is not None}
        other = sorted(set(given) - {"json", "choice"})
        if other:
            raise RequestError(
                f"structured_outputs.{other[0]} is not served. Fix: use structured_outputs.json (a JSON "
                "Schema) or structured_outputs.choice (labels)",
                f"structured_outputs.{other[0]}",
            )
        if "json" in given:
            found.append(("structured_outputs.json", "json_schema", given["json"]))
        if "choice" in given:
            found.append(("structured_outputs.choice", "choices", given["choice"]))
    if not found:
        return None
    if len(found) > 1:
        raise RequestError(
            f"{' and '.join(f for f, _, _ in found)} both constrain the output. Fix: send one of them",
            found[1][0],
        )
    field, kind, value = found[0]
    if kind == "json_schema":
        if isinstance(value, str):  # vLLM also takes the schema as JSON text
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise RequestError(
                    f"{field} is not JSON: {e.msg}. Fix: send a JSON Schema object", field
                ) from None
        if not isinstance(value, dict):
            raise RequestError(f"{field} must be a JSON Schema object, got {type(value).__name__}", field)
        import jsonschema

        from components.common.task import schema_validator

        try:
            schema_validator(value)
        except jsonschema.SchemaError as e:
            raise RequestError(
                f"{field} is not a valid JSON Schema: {e.message}. Fix: send the task's schema", field
            ) from None
    elif not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        raise RequestError(f"{field} must be a non-empty list of non-empty strings, got {value!r}", field)
    return field, kind, value


def _int_field(body: dict, field: str, default: int | None, low: int) -> int | None:
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RequestError(f"{field}={value!r}: give an integer >= {low}", field)
    return value


def parse_decoding(body: dict, default_max_tokens: int) -> int:
    """Check that the request asks for what is served (greedy, one answer, no streaming); its token budget."""
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature != 0
    ):
        raise RequestError(
            f"temperature={temperature!r}: only greedy decoding is served (temperature 0 or absent), so "
            "answers match offline evaluation. Fix: drop temperature or send 0",
            "temperature",
        )
    if _int_field(body, "n", 1, 1) != 1:
        raise RequestError(f"n={body['n']!r}: one answer per request is served. Fix: drop n or send 1", "n")
    if body.get("stream"):
        raise RequestError("stream=true is not served. Fix: drop stream or send false", "stream")
    if body.get("stop"):
        raise RequestError(
            "stop sequences are not served (evaluation ends answers at end of sequence only). Fix: drop stop",
            "stop",
        )
    if body.get("max_tokens") is not None:
        return _int_field(body, "max_tokens", default_max_tokens, 1)
    return _int_field(body, "max_completion_tokens", default_max_tokens, 1)


class _Counter:
    """A logits processor that changes nothing and counts the decoding steps: the completion's tokens."""

    def __init__(self) -> None:
        self.steps = 0

    def __call__(self, input_ids, scores):
        self.steps += 1
        return scores


class ChatServer:
    """One model folder served over HTTP; see the module docstring.

    ``model_dir``: anything ``load_for_inference`` takes (an exported model, a Model artifact folder with
    an adapter, a checkpoint folder, tiny://). ``port`` 0 picks a free port (``.url`` says which).
    ``max_new_tokens``: the budget of a request that sends no ``max_tokens``. ``model_id``: the name
    ``/v1/models`` lists and replies carry (default: the folder's name)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_new_tokens: int = 256,
        model_id: str | None = None,
    ) -> None:
        import torch

        from components.common.models import load_for_inference

        # Loaded as evaluate() loads it, so the numbers (and so the greedy answers) are the same.
        if not torch.cuda.is_available():
            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        self.model, self.tokenizer = load_for_inference(
            str(model_dir), dtype=torch.bfloat16 if gpu_bf16 else None
        )
        if torch.cuda.is_available() and not getattr(self.model, "is_quantized", False):
            self.model.to("cuda")
        self.model_id = model_id or Path(str(model_dir).rstrip("/")).name or str(model_dir)
        self.max_new_tokens = max_new_tokens
        self.created = int(time.time())
        self._lock = threading.Lock()
        self._factories: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._thread: threading.Thread | None = None
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ChatServer:
        """Serve on a background thread; returns self. Starting a started server does nothing: a second
        ``serve_forever`` on the same socket would outlive ``close()``."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="slmforge-serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until ``close()`` from another thread or KeyboardInterrupt."""
        self.httpd.serve_forever()

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the conversation plus the generation header: ``prompt_token_ids``'s call."""
        from jinja2.exceptions import TemplateError

        try:
            enc = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
        except TemplateError as e:
            raise RequestError(f"the model's chat template refused the messages: {e}", "messages") from None
        return list(enc["input_ids"])

    def _factory(self, field: str, kind: str, value: dict | list):
        """The compiled constraint for ``value`` (cached: compiling costs more than a short answer)."""
        from components.evaluate.constrained import logits_processor_factory

        # Not sort_keys: the schema's property order is the order the constrained JSON is written in.
        key = (kind, json.dumps(value, ensure_ascii=False))
        if key in self._factories:
            self._factories.move_to_end(key)
            return self._factories[key]
        try:
            factory = logits_processor_factory(self.tokenizer, **{kind: value})
        except Exception as e:  # the grammar compiler refuses a schema it cannot express
            raise RequestError(f"{field} could not be compiled into a constraint: {e}", field) from None
        self._factories[key] = factory
        while len(self._factories) > CONSTRAINT_CACHE:
            self._factories.popitem(last=False)
        return factory

    def complete(self, body: Any) -> dict[str, Any]:
        """Answer one chat-completions request body (a parsed JSON object): the OpenAI chat.completion
        reply. Raises RequestError for a request that is not served."""
        from components.evaluate.core import generate

        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object (an OpenAI chat-completions request)", None)
        messages = parse_messages(body)
        max_tokens = parse_decoding(body, self.max_new_tokens)
        constraint = parse_constraint(body)
        factory = self._factory(*constraint) if constraint else None
        ids = self.prompt_ids(messages)
        counter = _Counter()

        def processors(batch_size: int) -> list:
            # The counter goes after the constraint and leaves the scores as they are.
            return [*(factory(batch_size) if factory else []), counter]

        with self._lock:
            texts, cut = generate(self.model, self.tokenizer, [ids], max_tokens, 1, processors)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": texts[0]},
                    "logprobs": None,
                    "finish_reason": "length" if cut[0] else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": counter.steps,
                "total_tokens": len(ids) + counter.steps,
            },
        }

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "slmforge"}
            ],
        }


def _error(message: str, kind: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "slmforge-serve"

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self) -> None:
            routes = "GET /health, GET /v1/models, POST /v1/chat/completions"
            self._send(
                404, _error(f"{self.command} {self.path}: no such route (served: {routes})", "not_found")
            )

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/health":
                self._send(200, {"status": "ok", "model": server.model_id})
            elif path == "/v1/models":
                self._send(200, server.models())
            elif path == "/v1/chat/completions":
                self._send(405, _error("use POST for /v1/chat/completions", "invalid_request_error"))
            else:
                self._not_found()

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0].rstrip("/") != "/v1/chat/completions":
                self._not_found()
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY:
                self.close_connection = True  # the body (if any) is not read: the connection cannot be reused
                self._send(
                    400,
                    _error(
                        "the request needs a JSON body with a Content-Length (at most 16 MiB)",
                        "invalid_request_error",
                    ),
                )
                return
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                self._send(
                    400,
                    _error(f"the body is not JSON: {e}. Fix: send a JSON object", "invalid_request_error"),
                )
                return
            try:
                self._send(200, server.complete(body))
            except RequestError as e:
                self._send(e.status, _error(str(e), "invalid_request_error", e.param))
            except Exception as e:  # the model failed on this request; the server keeps serving
                self._send(500, _error(f"generation failed: {type(e).__name__}: {e}", "server_error"))

        def log_message(self, format: str, *args) -> None:
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.address_string()} {format % args}\n")

    return Handler
