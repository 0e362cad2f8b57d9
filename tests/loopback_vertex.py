"""A loopback stand-in of the Vertex AI REST API for tests: the real google-cloud-aiplatform client talks to
it over http on 127.0.0.1, and every request is recorded as the client sent it.

Custom jobs (``projects.locations.customJobs`` create / get / cancel) are served; with ``run_replicas``
the stand-in does what Vertex does with a job's worker pools on this machine: it starts every replica's
container command as a local process with ``CLUSTER_SPEC`` set (workerpool0 = the chief, whose address is
a free local port), and the job is RUNNING until they exit, then SUCCEEDED (all exit 0) or FAILED (naming
the replica and status). The image is not pulled: the command runs in this Python environment.

The Model Registry (``projects.locations.models``: upload, get, list, versions, aliases, labels,
evaluations) is served by ``LoopbackModels`` (``vertex.models``), with versions kept in memory.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Recorded:
    method: str
    path: str
    body: dict
    query: dict = field(default_factory=dict)  # query parameters (first value of each)


@dataclass
class _Job:
    resource: dict
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    cancelled: bool = False


class LoopbackVertex:
    def __init__(
        self,
        *,
        run_replicas: bool = False,
        log_dir: Path | None = None,
        env: dict | None = None,
        state_after_create: str = "JOB_STATE_SUCCEEDED",
    ):
        """``state_after_create``: the state a job reports from its first get when replicas are not run."""
        self.run_replicas, self.log_dir, self.env = run_replicas, log_dir, env or {}
        self.state_after_create = state_after_create
        self.requests: list[Recorded] = []
        self.jobs: dict[str, _Job] = {}
        self.models = LoopbackModels()  # the Model Registry routes
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                path, _, qs = self.path.partition("?")
                query = {k: v[0] for k, v in parse_qs(qs).items()}
                outer.requests.append(Recorded(method, path, body, query))
                status, reply = outer._route(method, path, body, query)
                self._reply(status, reply)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PATCH(self):
                self._handle("PATCH")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> LoopbackVertex:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for job in self.jobs.values():
            for _, proc in job.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        self._server.shutdown()
        self._server.server_close()

    def add_job(self, name: str, state: str) -> None:
        """A job that exists before the test (e.g. started by a previous attempt)."""
        self.jobs[name] = _Job({"name": name, "state": state})

    # -- API ---------------------------------------------------------------------------------------------
    def _route(self, method: str, path: str, body: dict, query: dict | None = None) -> tuple[int, dict]:
        if self.models.handles(path):
            return self.models.route(method, path, body, query or {})
        create = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+)/customJobs", path)
        if method == "POST" and create:
            return 200, self._create(create.group(1), body)
        cancel = re.fullmatch(r"/v1/(.+/customJobs/\d+):cancel", path)
        if method == "POST" and cancel:
            job = self.jobs.get(cancel.group(1))
            if job is None:
                return 404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}
            job.cancelled = True
            for _, proc in job.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            return 200, {}
        get = re.fullmatch(r"/v1/(.+/customJobs/\d+)", path)
        if method == "GET" and get and get.group(1) in self.jobs:
            return 200, self._refresh(self.jobs[get.group(1)])
        return 404, {"error": {"code": 404, "message": f"no route {method} {path}", "status": "NOT_FOUND"}}

    def _create(self, parent: str, body: dict) -> dict:
        name = f"{parent}/customJobs/{next(self._ids)}"
        job = _Job({**body, "name": name, "state": "JOB_STATE_PENDING"})
        self.jobs[name] = job
        reply = dict(job.resource)
        if self.run_replicas:
            self._start_replicas(job)
        else:
            job.resource["state"] = self.state_after_create
            if self.state_after_create == "JOB_STATE_FAILED":
                job.resource["error"] = {"code": 8, "message": "The job ran out of quota: NVIDIA_A100_80GB."}
        return reply

    def _start_replicas(self, job: _Job) -> None:
        pools = job.resource["jobSpec"]["workerPoolSpecs"]
        chief_port = _free_port()
        cluster = {
            f"workerpool{i}": [
                f"127.0.0.1:{chief_port if i == 0 else 2222}" for _ in range(int(p.get("replicaCount", 1)))
            ]
            for i, p in enumerate(pools)
        }
        bin_dir = str(Path(sys.executable).parent)
        for i, pool in enumerate(pools):
            container = pool["containerSpec"]
            for index in range(int(pool.get("replicaCount", 1))):
                spec = {
                    "cluster": cluster,
                    "task": {"type": f"workerpool{i}", "index": index},
                    "job": job.resource["name"],
                }
                env = {**os.environ, **self.env, "CLUSTER_SPEC": json.dumps(spec),
                       "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}  # fmt: skip
                label = f"workerpool{i}-{index}"
                out = open(self.log_dir / f"{label}.log", "w") if self.log_dir else subprocess.DEVNULL
                cmd = [*container.get("command", []), *container.get("args", [])]
                job.procs.append(
                    (label, subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
                )
        job.resource["state"] = "JOB_STATE_RUNNING"

    def _refresh(self, job: _Job) -> dict:
        with self._lock:
            if job.procs and job.resource["state"] == "JOB_STATE_RUNNING":
                codes = [(label, proc.poll()) for label, proc in job.procs]
                if all(code is not None for _, code in codes):
                    failed = [(label, code) for label, code in codes if code != 0]
                    if job.cancelled:
                        job.resource["state"] = "JOB_STATE_CANCELLED"
                    elif failed:
                        job.resource["state"] = "JOB_STATE_FAILED"
                        detail = ", ".join(f"{label} exited {code}" for label, code in failed)
                        job.resource["error"] = {"code": 13, "message": f"The replica {detail}."}
                    else:
                        job.resource["state"] = "JOB_STATE_SUCCEEDED"
            elif job.cancelled and job.resource["state"] not in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED"):
                job.resource["state"] = "JOB_STATE_CANCELLED"
            return job.resource


# -- projects.locations.models (the Model Registry) -------------------------------------------------------
def _error(code: int, status: str, message: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "message": message, "status": status}}


@dataclass
class _Model:
    versions: dict[str, dict] = field(default_factory=dict)  # version ID -> the version's resource
    labels: dict[str, str] = field(default_factory=dict)  # model-level labels, merged into every version
    evaluations: list[dict] = field(default_factory=list)


class LoopbackModels:
    """The Model Registry part of the stand-in: ``models:upload`` (answers a done long-running operation,
    also served at ``.../operations/<id>``), get by version ID or alias (``models/<id>@<v>``), list and
    ``:listVersions`` with ``labels.<key>="<value>"`` / ``display_name="<name>"`` filters,
    ``:mergeVersionAliases`` (an alias added to one version leaves the version that had it, as Vertex
    documents; ``default`` cannot be removed, only moved), PATCH of labels and version description (a
    version with ``@<v>``, the model without), and ``evaluations:import``. Projects in ``denied`` answer
    403 PERMISSION_DENIED, as Vertex does for a missing project or a caller without the role."""

    _PATH = re.compile(r"/v1/(projects/([^/]+)/locations/[^/]+)/models(.*)")

    def __init__(self):
        self.store: dict[str, _Model] = {}  # model resource name -> model
        self.operations: dict[str, dict] = {}
        self.denied: set[str] = set()
        self._ids = itertools.count(7000)
        self._lock = threading.Lock()

    def handles(self, path: str) -> bool:
        return bool(self._PATH.fullmatch(unquote(path)))

    def route(self, method: str, path: str, body: dict, query: dict) -> tuple[int, dict]:
        parent, project, rest = self._PATH.fullmatch(unquote(path)).groups()
        if project in self.denied:
            return _error(403, "PERMISSION_DENIED", f"Permission denied on resource project {project}.")
        with self._lock:
            if method == "POST" and rest == ":upload":
                return self._upload(parent, body)
            if method == "GET" and rest == "":
                models = [self._resource(n, self._resolve(m, "")) for n, m in self.store.items()]
                return self._filtered(models, query.get("filter", ""))
            m = re.fullmatch(r"/([\w-]+)(?:@([\w-]+))?(:\w+|/evaluations:import|/operations/\d+)?", rest)
            if not m:
                return _error(404, "NOT_FOUND", f"no route {method} {path}")
            model_id, version, verb = m.groups()
            name = f"{parent}/models/{model_id}"
            if method == "GET" and verb and verb.startswith("/operations/"):
                op = self.operations.get(f"{name}{verb}")
                return (200, op) if op else _error(404, "NOT_FOUND", f"Operation {name}{verb} not found.")
            model = self.store.get(name)
            if model is None:
                return _error(404, "NOT_FOUND", f"Model {name} not found.")
            if method == "GET" and verb == ":listVersions":
                versions = [self._resource(name, v) for v in model.versions.values()]
                return self._filtered(versions, query.get("filter", ""))
            target = self._resolve(model, version or "")
            if target is None:
                return _error(404, "NOT_FOUND", f"Model {name}@{version} not found.")
            if method == "GET" and verb is None:
                return 200, self._resource(name, target)
            if method == "POST" and verb == ":mergeVersionAliases":
                return self._merge_aliases(name, model, target, body.get("versionAliases", []))
            if method == "PATCH" and verb is None:
                for field_name in (p for p in query.get("updateMask", "").split(",") if p):
                    key = re.sub(r"_(\w)", lambda c: c.group(1).upper(), field_name)
                    if version and key in ("labels", "versionDescription"):  # a version update
                        target[key] = body.get(key, {} if key == "labels" else "")
                    elif not version and key == "labels":  # a model update
                        model.labels = body.get("labels", {})
                    else:
                        return _error(400, "INVALID_ARGUMENT", f"update_mask path {field_name}")
                return 200, self._resource(name, target)
            if method == "POST" and verb == "/evaluations:import":
                evaluation = {
                    **body.get("modelEvaluation", {}),
                    "name": f"{name}/evaluations/{next(self._ids)}",
                    "modelVersion": target["versionId"],
                }
                model.evaluations.append(evaluation)
                return 200, evaluation
            return _error(404, "NOT_FOUND", f"no route {method} {path}")

    def _resolve(self, model: _Model, version: str) -> dict | None:
        """A version by ID or alias; "" = the default version."""
        if version.isdigit():
            return model.versions.get(version)
        alias = version or "default"
        return next((v for v in model.versions.values() if alias in v["versionAliases"]), None)

    def _resource(self, name: str, version: dict) -> dict:
        """A version as the API answers it: the model's name (no @), labels merged with the model's."""
        return {**version, "name": name, "labels": {**self.store[name].labels, **version.get("labels", {})}}

    def _move_alias(self, model: _Model, alias: str, to: dict) -> None:
        for other in model.versions.values():
            if other is not to and alias in other["versionAliases"]:
                other["versionAliases"].remove(alias)
        if alias not in to["versionAliases"]:
            to["versionAliases"].append(alias)

    def _upload(self, parent: str, body: dict) -> tuple[int, dict]:
        resource = dict(body.get("model", {}))
        parent_model = body.get("parentModel", "")
        if parent_model:
            name = parent_model
            model = self.store.get(name)
            if model is None:
                return _error(404, "NOT_FOUND", f"Parent model {name} not found.")
            version_id = str(max(int(v) for v in model.versions) + 1)
        else:
            name = f"{parent}/models/{body.get('modelId') or next(self._ids)}"
            if name in self.store:
                return _error(409, "ALREADY_EXISTS", f"Model {name} already exists.")
            model = self.store[name] = _Model()
            version_id = "1"
        aliases = list(resource.pop("versionAliases", []))
        if version_id == "1" and "default" not in aliases:
            aliases.append("default")  # the first version is always the default
        version = {**resource, "versionId": version_id, "versionAliases": [],
                   "createTime": "2026-11-21T00:00:00Z", "versionCreateTime": "2026-11-21T00:00:00Z"}  # fmt: skip
        model.versions[version_id] = version
        for alias in aliases:
            self._move_alias(model, alias, version)
        op_name = f"{name}/operations/{next(self._ids)}"
        self.operations[op_name] = {
            "name": op_name,
            "done": True,
            "response": {
                "@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse",
                "model": name,
                "modelVersionId": version_id,
            },
        }
        return 200, self.operations[op_name]

    def _merge_aliases(self, name: str, model: _Model, target: dict, aliases: list) -> tuple[int, dict]:
        for alias in aliases:
            if alias.startswith("-"):
                if alias[1:] == "default":
                    return _error(400, "INVALID_ARGUMENT", "The default alias cannot be removed.")
                if alias[1:] in target["versionAliases"]:
                    target["versionAliases"].remove(alias[1:])
            else:
                self._move_alias(model, alias, target)
        return 200, self._resource(name, target)

    @staticmethod
    def _filtered(models: list[dict], expression: str) -> tuple[int, dict]:
        """The filters the client sends here: clauses ``labels.<key>="<value>"`` (or unquoted) and
        ``display_name="<name>"`` joined by AND; anything else is refused, as a test should notice."""
        for clause in (c.strip() for c in expression.split(" AND ") if c.strip()):
            m = re.fullmatch(r'(labels\.[\w-]+|display_name)\s*=\s*"?([^"]*)"?', clause)
            if not m:
                return _error(400, "INVALID_ARGUMENT", f"unsupported filter {clause!r}")
            key, value = m.groups()
            if key == "display_name":
                models = [r for r in models if r.get("displayName") == value]
            else:
                models = [r for r in models if r.get("labels", {}).get(key[len("labels.") :]) == value]
        return 200, {"models": models}
