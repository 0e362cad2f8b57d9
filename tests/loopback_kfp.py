"""A loopback stand-in of the Kubeflow Pipelines v2 REST API (``/apis/v2beta1``) for tests: the real
``kfp.Client`` talks to it over http on 127.0.0.1, and every request is recorded as the client sent it.

Served: ``healthz``; pipelines (``upload`` and ``upload_version`` as multipart forms, list with a
``display_name`` filter, get, versions); experiments (create, get, list with a filter); runs (create, get,
list by experiment). A created run is PENDING; each read of it moves it one state along ``run_script``
(default PENDING, RUNNING, then SUCCEEDED), whose entries are a state name or ``(state, task details, error
message)``: what a test scripts for a run that fails or whose GPU step cannot be scheduled. Nothing is
executed: the stand-in checks what the client sends (the compiled pipeline spec, the parameters, the
experiment, the pipeline version) and answers as the KFP API server documents.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

import yaml

API = "/apis/v2beta1"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes = b""


@dataclass
class _Run:
    resource: dict
    script: list = field(default_factory=list)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _multipart_file(body: bytes, content_type: str) -> bytes:
    """The ``uploadfile`` part of a multipart/form-data body."""
    boundary = re.search(r"boundary=([^;]+)", content_type).group(1).strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        if b'name="uploadfile"' in head:
            return data.rsplit(b"\r\n", 1)[0]
    raise ValueError("no uploadfile part")


def _display_name_filter(query: dict) -> str | None:
    """The display_name an ``EQUALS`` filter asks for (the client's get-by-name), or None."""
    text = query.get("filter", "")
    if not text:
        return None
    for predicate in json.loads(text).get("predicates", []):
        if predicate.get("key") in ("display_name", "name"):
            return predicate.get("string_value") or predicate.get("stringValue")
    return None


class LoopbackKFP:
    def __init__(self, run_script: list | None = None):
        self.requests: list[Recorded] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}  # version id -> version (with its spec)
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, _Run] = {}
        self.run_script = run_script if run_script is not None else ["PENDING", "RUNNING", "SUCCEEDED"]
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, qs = self.path.partition("?")
                query = {k: v[0] for k, v in parse_qs(qs).items()}
                outer.requests.append(Recorded(method, unquote(path), query, dict(self.headers), body))
                try:
                    with outer._lock:
                        status, reply = outer._route(method, unquote(path), query, body, dict(self.headers))
                except Exception as e:  # a stand-in bug: say so to the client instead of hanging up
                    status, reply = 500, {"code": 13, "message": f"stand-in error: {type(e).__name__}: {e}"}
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> LoopbackKFP:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    # -- routes ----------------------------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict, body: bytes, headers: dict) -> tuple[int, dict]:
        if not path.startswith(API):
            return _not_found(path)
        rest = path[len(API) :]
        if method == "GET" and rest == "/healthz":
            return 200, {"multi_user": False}
        if method == "POST" and rest in ("/pipelines/upload", "/pipelines/upload_version"):
            # the pipeline spec, then (the kfp target) its Kubernetes platform spec
            spec, *platform = yaml.safe_load_all(_multipart_file(body, headers.get("Content-Type", "")))
            spec = {**spec, **({"platform_spec": platform[0]} if platform else {})}
            if rest == "/pipelines/upload":
                return self._upload(query.get("name") or spec["pipelineInfo"]["name"], spec)
            return self._upload_version(query.get("pipelineid", ""), query.get("name", ""), spec)
        if method == "GET" and rest == "/pipelines":
            return 200, _page("pipelines", self.pipelines.values(), _display_name_filter(query))
        m = re.fullmatch(r"/pipelines/([\w-]+)/versions", rest)
        if method == "GET" and m:
            found = [v for v in self.versions.values() if v["pipeline_id"] == m.group(1)]
            return 200, _page("pipeline_versions", found, _display_name_filter(query))
        m = re.fullmatch(r"/pipelines/([\w-]+)", rest)
        if method == "GET" and m:
            return (200, self.pipelines[m.group(1)]) if m.group(1) in self.pipelines else _not_found(path)
        if rest == "/experiments" and method == "POST":
            experiment = json.loads(body)
            eid = self._id("experiment")
            self.experiments[eid] = {**experiment, "experiment_id": eid, "created_at": _now()}
            return 200, self.experiments[eid]
        if rest == "/experiments" and method == "GET":
            return 200, _page("experiments", self.experiments.values(), _display_name_filter(query))
        m = re.fullmatch(r"/experiments/([\w-]+)", rest)
        if method == "GET" and m:
            return (200, self.experiments[m.group(1)]) if m.group(1) in self.experiments else _not_found(path)
        if rest == "/runs" and method == "POST":
            return self._create_run(json.loads(body))
        if rest == "/runs" and method == "GET":
            runs = [r.resource for r in self.runs.values()]
            if query.get("experiment_id"):
                runs = [r for r in runs if r.get("experiment_id") == query["experiment_id"]]
            return 200, {"runs": runs, "total_size": len(runs)} if runs else {}
        m = re.fullmatch(r"/runs/([\w-]+)", rest)
        if method == "GET" and m:
            run = self.runs.get(m.group(1))
            return (200, self._advance(run)) if run else _not_found(path)
        return _not_found(path)

    def _upload(self, name: str, spec: dict) -> tuple[int, dict]:
        if any(p["display_name"] == name for p in self.pipelines.values()):
            return 409, {"code": 6, "message": f"pipeline {name} already exists"}
        pid = self._id("pipeline")
        self.pipelines[pid] = {"pipeline_id": pid, "display_name": name, "created_at": _now()}
        self._upload_version(pid, name, spec)
        return 200, self.pipelines[pid]

    def _upload_version(self, pipeline_id: str, name: str, spec: dict) -> tuple[int, dict]:
        if pipeline_id not in self.pipelines:
            return 404, {"code": 5, "message": f"pipeline {pipeline_id} not found"}
        if any(v["pipeline_id"] == pipeline_id and v["display_name"] == name for v in self.versions.values()):
            return 409, {"code": 6, "message": f"pipeline version {name} already exists"}
        vid = self._id("version")
        self.versions[vid] = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": vid,
            "display_name": name,
            "created_at": _now(),
            "pipeline_spec": {k: v for k, v in spec.items() if k != "platform_spec"},
            "platform_spec": spec.get("platform_spec"),
        }
        return 200, {
            k: v for k, v in self.versions[vid].items() if k not in ("pipeline_spec", "platform_spec")
        }

    def _create_run(self, run: dict) -> tuple[int, dict]:
        ref = run.get("pipeline_version_reference") or {}
        version = self.versions.get(ref.get("pipeline_version_id", ""))
        if version is None or version["pipeline_id"] != ref.get("pipeline_id"):
            return 404, {"code": 5, "message": f"pipeline version {ref} not found"}
        if run.get("experiment_id") not in self.experiments:
            return 404, {"code": 5, "message": f"experiment {run.get('experiment_id')} not found"}
        declared = version["pipeline_spec"]["root"].get("inputDefinitions", {}).get("parameters", {})
        given = (run.get("runtime_config") or {}).get("parameters") or {}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            return 400, {"code": 3, "message": f"unknown pipeline parameters {unknown}"}
        rid = self._id("run")
        resource = {
            **run,
            "run_id": rid,
            "state": "PENDING",
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        }
        self.runs[rid] = _Run(resource, list(self.run_script))
        return 200, resource

    def _advance(self, run: _Run) -> dict:
        if run.script:
            step = run.script.pop(0)
            state, tasks, error = (step, None, None) if isinstance(step, str) else step
            run.resource["state"] = state
            if tasks is not None:
                run.resource["run_details"] = {"task_details": tasks}
            if error:
                run.resource["error"] = {"code": 9, "message": error}
            if state in ("SUCCEEDED", "FAILED", "CANCELED"):
                run.resource["finished_at"] = _now()
        return run.resource


def _page(key: str, items, display_name: str | None) -> dict:
    found = [i for i in items if display_name is None or i.get("display_name") == display_name]
    return {key: found, "total_size": len(found)} if found else {}


def _not_found(path: str) -> tuple[int, dict]:
    return 404, {"code": 5, "message": f"no route {path}"}
