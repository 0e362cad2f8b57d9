"""Teachers: the stronger models augment asks for paraphrases and labels, behind one small interface.

``Teacher.complete(messages, schema=...)`` sends chat messages ({role, content}) and returns the reply's
text with the tokens it was billed for. With a ``schema`` (JSON Schema) a backend that can constrain its
output (``structured = True``) is held to it; the others get the schema's wording in the prompt only.

* ``OpenAICompatibleTeacher``: any ``/v1/chat/completions`` endpoint (OpenAI, a vLLM server, ...); the key,
  if any, is read from the environment variable ``api_key_env`` when a call is made, never from config.
* ``GeminiTeacher``: Gemini on Vertex AI through the REST ``generateContent`` method; credentials from
  ``google.auth.default()`` (gcloud login, a service account, Workload Identity). A loopback ``http://``
  ``api_endpoint`` (tests) gets none, the convention of pipelines/vertex.py.
* ``HFTeacher``: a local transformers causal LM, greedy, at most ``max_output_tokens`` new tokens.

Timeouts and retries live in one place, ``Transport``, which both HTTP teachers use; concurrency lives in
the caller (components/augment/core.py), not here. A failed call raises ``TeacherError`` whose ``code``
is the augment reason code it is counted under (components/common/events.py).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class TeacherReply:
    text: str
    input_tokens: int  # as the backend billed them (0 where it does not say)
    output_tokens: int


class TeacherError(RuntimeError):
    """A call that gave no usable reply; ``code``: AUGMENT_TIMEOUT, AUGMENT_REFUSED, AUGMENT_MALFORMED or
    AUGMENT_TEACHER_ERROR."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Teacher(Protocol):
    id: str  # identifies the teacher in the cache key: backend, endpoint or project, model
    model: str  # the price table's key (components/augment/cost.py)
    structured: bool  # whether complete(schema=...) constrains the output
    max_output_tokens: int  # the most tokens one reply may hold (what a budget reserves per call)

    def complete(self, messages: list[dict], *, schema: dict | None = None) -> TeacherReply: ...


@dataclass
class Transport:
    """POST JSON with a timeout, retrying 408/429/5xx, timeouts and dropped connections with exponential
    backoff (``backoff_s`` x 2^attempt, +-25% jitter, or the server's Retry-After when longer)."""

    timeout_s: float = 60.0
    retries: int = 4  # extra attempts after the first
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def post(self, url: str, body: dict, headers: dict[str, str]) -> dict:
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            wait = min(self.backoff_s * 2**attempt, self.max_backoff_s) * random.uniform(0.75, 1.25)
            request = urllib.request.Request(
                url, data=data, method="POST", headers={"Content-Type": "application/json", **headers}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
                try:
                    return json.loads(raw)
                except ValueError as e:
                    raise TeacherError("AUGMENT_MALFORMED", f"{url}: the reply is not JSON ({e})") from e
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                if e.code not in RETRYABLE_STATUS or last:
                    raise TeacherError("AUGMENT_TEACHER_ERROR", f"{url}: HTTP {e.code}: {detail}") from e
                after = e.headers.get("Retry-After", "")
                if after.isdigit():
                    wait = max(wait, min(float(after), self.max_backoff_s))
            except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                if last:
                    timed_out = isinstance(e, TimeoutError) or isinstance(reason, TimeoutError)
                    code = "AUGMENT_TIMEOUT" if timed_out else "AUGMENT_TEACHER_ERROR"
                    raise TeacherError(code, f"{url}: {reason} (after {attempt + 1} attempts)") from e
            self.sleep(wait)
        raise AssertionError("unreachable")


@dataclass
class OpenAICompatibleTeacher:
    base_url: str  # e.g. https://api.openai.com or http://vllm:8000 (without /v1)
    model: str
    api_key_env: str | None = None  # name of the environment variable holding the key; None = no key
    temperature: float = 0.7
    max_output_tokens: int = 1024
    structured: bool = True  # response_format json_schema (OpenAI, vLLM); False for endpoints without it
    transport: Transport = field(default_factory=Transport)

    @property
    def id(self) -> str:
        return f"openai:{self.base_url.rstrip('/')}:{self.model}"

    def complete(self, messages: list[dict], *, schema: dict | None = None) -> TeacherReply:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_output_tokens,
        }
        if schema is not None and self.structured:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        headers = {}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if not key:
                raise TeacherError("AUGMENT_TEACHER_ERROR", f"${self.api_key_env} is empty or unset")
            headers["Authorization"] = f"Bearer {key}"
        reply = self.transport.post(f"{self.base_url.rstrip('/')}/v1/chat/completions", body, headers)
        try:
            choice = reply["choices"][0]
            message = choice["message"]
            if message.get("refusal") or choice.get("finish_reason") == "content_filter":
                raise TeacherError("AUGMENT_REFUSED", str(message.get("refusal") or "content_filter"))
            usage = reply.get("usage") or {}
            return TeacherReply(
                message["content"] or "", usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
            )
        except (KeyError, IndexError, TypeError) as e:
            raise TeacherError("AUGMENT_MALFORMED", f"no choices[0].message.content in {reply!r:.300}") from e


# Gemini finish reasons that mean "blocked", not "done" (google.cloud.aiplatform.v1 Candidate.FinishReason)
_GEMINI_BLOCKED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"})


@dataclass
class GeminiTeacher:
    project: str
    location: str  # e.g. us-central1, or global
    model: str  # e.g. gemini-2.5-flash
    api_endpoint: str = ""  # "" = Google's endpoint for the location; http://127.0.0.1:PORT in tests
    temperature: float = 0.7
    max_output_tokens: int = 1024
    credentials: Any = None  # None = google.auth.default(), fetched at the first call
    structured: bool = True
    transport: Transport = field(default_factory=Transport)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def id(self) -> str:
        return f"gemini:{self.project}/{self.location}:{self.model}"

    @property
    def url(self) -> str:
        region = "" if self.location == "global" else f"{self.location}-"
        endpoint = self.api_endpoint or f"https://{region}aiplatform.googleapis.com"
        return (
            f"{endpoint.rstrip('/')}/v1/projects/{self.project}/locations/{self.location}"
            f"/publishers/google/models/{self.model}:generateContent"
        )

    def _auth_headers(self) -> dict[str, str]:
        if self.credentials is None and self.api_endpoint.startswith("http://"):
            return {}  # a loopback stand-in: plain HTTP carries no credentials
        import google.auth
        import google.auth.transport.requests

        with self._lock:  # one token refresh at a time, shared by the caller's threads
            if self.credentials is None:
                self.credentials, _ = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"]
                )
            if not self.credentials.valid:
                self.credentials.refresh(google.auth.transport.requests.Request())
            headers: dict[str, str] = {}
            self.credentials.apply(headers)
            return headers

    def complete(self, messages: list[dict], *, schema: dict | None = None) -> TeacherReply:
        system = [m["content"] for m in messages if m["role"] == "system"]
        body: dict[str, Any] = {
            "contents": [
                {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
                for m in messages
                if m["role"] != "system"
            ],
            "generationConfig": {"temperature": self.temperature, "maxOutputTokens": self.max_output_tokens},
        }
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        if schema is not None and self.structured:
            body["generationConfig"]["responseMimeType"] = "application/json"
            body["generationConfig"]["responseSchema"] = openapi_schema(schema)
        reply = self.transport.post(self.url, body, self._auth_headers())
        blocked = (reply.get("promptFeedback") or {}).get("blockReason")
        candidates = reply.get("candidates") or []
        if blocked or (candidates and candidates[0].get("finishReason") in _GEMINI_BLOCKED):
            raise TeacherError("AUGMENT_REFUSED", f"blocked: {blocked or candidates[0]['finishReason']}")
        try:
            text = "".join(p.get("text", "") for p in candidates[0]["content"]["parts"])
        except (KeyError, IndexError, TypeError) as e:
            raise TeacherError(
                "AUGMENT_MALFORMED", f"no candidates[0].content.parts in {reply!r:.300}"
            ) from e
        usage = reply.get("usageMetadata") or {}
        return TeacherReply(text, usage.get("promptTokenCount", 0), usage.get("candidatesTokenCount", 0))


def openapi_schema(schema: Any) -> Any:
    """A JSON Schema as Gemini's ``responseSchema`` (an OpenAPI 3.0 subset) takes it: without the keys
    that subset rejects ($schema, $id, additionalProperties). $ref, oneOf and const are not translated:
    the API refuses such a schema and the call counts as AUGMENT_TEACHER_ERROR."""
    if isinstance(schema, dict):
        drop = {"$schema", "$id", "additionalProperties"}
        return {k: openapi_schema(v) for k, v in schema.items() if k not in drop}
    if isinstance(schema, list):
        return [openapi_schema(v) for v in schema]
    return schema


class HFTeacher:
    """A local Hugging Face causal LM (a model locator, as model.base takes it): greedy decoding of at most
    ``max_output_tokens`` new tokens, one call at a time (a lock: generate is not made for threads).
    ``schema`` is not enforced (``structured = False``): the caller asks for one answer per line instead.
    It costs no dollars per token; its price is unknown to the price table, and said to be."""

    structured = False

    def __init__(self, model_path: str, max_output_tokens: int = 256):
        self.model_path, self.model, self.max_output_tokens = model_path, model_path, max_output_tokens
        self.id = f"hf:{model_path}"
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def complete(self, messages: list[dict], *, schema: dict | None = None) -> TeacherReply:
        import torch

        from components.common.models import load_for_inference

        with self._lock:
            if self._loaded is None:
                self._loaded = load_for_inference(self.model_path)
            model, tokenizer = self._loaded
            enc = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=self.max_output_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                )
        new = out[0, enc["input_ids"].shape[1] :]
        return TeacherReply(
            tokenizer.decode(new, skip_special_tokens=True), enc["input_ids"].shape[1], int(new.shape[0])
        )
