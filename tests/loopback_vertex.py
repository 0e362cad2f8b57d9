"""A loopback stand-in of the Vertex AI REST API for tests: the real google-cloud-aiplatform client talks to
it over http on 127.0.0.1, and every request is recorded as the client sent it.

Custom jobs (``projects.locations.customJobs`` create / get / cancel) are served; with ``run_replicas``
the stand-in does what Vertex does with a job's worker pools on this machine: it starts every replica's
container command as a local process with ``CLUSTER_SPEC`` set (workerpool0 = the chief, whose address is
a free local port), and the job is RUNNING until they exit, then SUCCEEDED (all exit 0) or FAILED (naming
the replica and status). The image is not pulled: the command runs in this Python environment.

The Model Registry (``projects.locations.models``: upload, get, list, versions, aliases, labels,
evaluations) is served by ``LoopbackModels`` (``vertex.models``), with versions kept in memory.

Pipeline jobs (``projects.locations.pipelineJobs`` create / get / cancel) and the part of the Metadata API
that Vertex AI Experiments use (metadata store, contexts, executions, artifacts) are served by
``LoopbackPipelines`` (``vertex.pipelines``).

Endpoints (``projects.locations.endpoints``: create, get, list, PATCH of the traffic split,
``:deployModel`` / ``:undeployModel`` with traffic splits, delete, ``:predict`` / ``:rawPredict``
forwarded to a local server per deployed model) are served by ``LoopbackEndpoints``
(``vertex.endpoints``).

``LoopbackJSON`` serves any JSON-over-HTTP route a test writes (Gemini's ``generateContent``, an
OpenAI-compatible ``/v1/chat/completions``) with injectable faults: the teachers of components/augment.
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
import time
import urllib.error
import urllib.request
from collections import deque
from contextlib import contextmanager
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
    headers: dict = field(default_factory=dict)  # request headers


@dataclass
class RawReply:
    """A reply that is not a JSON API answer: bytes as they are, with their content type and headers
    (``:rawPredict`` answers what the model server answered, plus Vertex's ``X-Vertex-AI-*`` headers)."""

    data: bytes
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)


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
        self.pipelines = LoopbackPipelines()  # pipeline jobs, experiments (metadata)
        self.endpoints = LoopbackEndpoints(self.models)  # endpoints, deployments, predictions
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: dict | RawReply) -> None:
                raw = body if isinstance(body, RawReply) else RawReply(json.dumps(body).encode())
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", raw.content_type)
                    self.send_header("Content-Length", str(len(raw.data)))
                    for key, value in raw.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(raw.data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                    pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:  # a raw prediction body need not be JSON
                    body = {}
                path, _, qs = self.path.partition("?")
                query = {k: v[0] for k, v in parse_qs(qs).items()}
                headers = dict(self.headers)
                outer.requests.append(Recorded(method, path, body, query, headers))
                if outer.endpoints.handles(path):
                    status, reply = outer.endpoints.route(method, path, body, query, raw=raw, headers=headers)
                else:
                    status, reply = outer._route(method, path, body, query)
                self._reply(status, reply)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PATCH(self):
                self._handle("PATCH")

            def do_DELETE(self):
                self._handle("DELETE")

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

    @contextmanager
    def sdk(self, project: str, location: str):
        """The real google-cloud-aiplatform SDK pointed at this stand-in (anonymous credentials, REST) for
        the ``with`` block; its process-wide settings go back to their defaults afterwards."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import aiplatform
        from google.cloud.aiplatform import initializer

        aiplatform.init(
            project=project,
            location=location,
            credentials=AnonymousCredentials(),
            api_transport="rest",
            api_endpoint=self.endpoint,
        )
        try:
            yield self
        finally:
            initializer.global_config.__init__()

    def add_job(self, name: str, state: str) -> None:
        """A job that exists before the test (e.g. started by a previous attempt)."""
        self.jobs[name] = _Job({"name": name, "state": state})

    # -- API ---------------------------------------------------------------------------------------------
    def _route(self, method: str, path: str, body: dict, query: dict | None = None) -> tuple[int, dict]:
        if self.endpoints.handles(path):
            return self.endpoints.route(method, path, body, query or {})
        if self.models.handles(path):
            return self.models.route(method, path, body, query or {})
        if self.pipelines.handles(path):
            return self.pipelines.route(method, path, body, query or {})
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
                env = {
                    **os.environ,
                    **self.env,
                    "CLUSTER_SPEC": json.dumps(spec),
                    "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                }
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

    def seed(self, parent: str, model_id: str, versions: int, container_spec: dict) -> None:
        """``versions`` versions of ``model_id`` uploaded before the test, each served by ``container_spec``."""
        for version in range(1, versions + 1):
            upload = {"model": {"displayName": model_id, "containerSpec": container_spec}}
            if version == 1:
                upload["modelId"] = model_id
            else:
                upload["parentModel"] = f"{parent}/models/{model_id}"
            status, reply = self.route("POST", f"/v1/{parent}/models:upload", upload, {})
            assert status == 200, reply

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
        if resource.get("containerSpec"):  # output only: a custom container is deployed on dedicated machines
            resource["supportedDeploymentResourcesTypes"] = ["DEDICATED_RESOURCES"]
        version = {
            **resource,
            "versionId": version_id,
            "versionAliases": [],
            "createTime": "2026-11-21T00:00:00Z",
            "versionCreateTime": "2026-11-21T00:00:00Z",
        }
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
        return _filtered("models", models, expression)


def _filtered(collection: str, items: list[dict], expression: str) -> tuple[int, dict]:
    """The filters the client sends for models and endpoints: clauses ``labels.<key>="<value>"`` (or
    unquoted) and ``display_name="<name>"`` joined by AND; anything else is refused, as a test should
    notice."""
    for clause in (c.strip() for c in expression.split(" AND ") if c.strip()):
        m = re.fullmatch(r'(labels\.[\w-]+|display_name)\s*=\s*"?([^"]*)"?', clause)
        if not m:
            return _error(400, "INVALID_ARGUMENT", f"unsupported filter {clause!r}")
        key, value = m.groups()
        if key == "display_name":
            items = [r for r in items if r.get("displayName") == value]
        else:
            items = [r for r in items if r.get("labels", {}).get(key[len("labels.") :]) == value]
    return 200, {collection: items}


# -- projects.locations.pipelineJobs and the metadata store (Vertex AI Experiments) ----------------------
PIPELINE_RUN_STATES = ("PIPELINE_STATE_PENDING", "PIPELINE_STATE_RUNNING", "PIPELINE_STATE_SUCCEEDED")


class LoopbackPipelines:
    """Pipeline jobs and the metadata a run leaves for Vertex AI Experiments.

    ``pipelineJobs`` create (``?pipelineJobId=`` names the job) answers the job in ``states[0]``; the n-th
    get of a job answers ``states[n]`` (the last one from then on) with ``jobDetail.pipelineRunContext``,
    the run's ``system.PipelineRun`` context, as Vertex reports once a run starts; a FAILED state carries
    ``error``. After ``:cancel`` a get answers CANCELLED.

    Metadata (``metadataStores/default``): get of the store; contexts get / create (``?contextId=``) /
    list / ``:addContextChildren``; executions and artifacts list. Lists take the filters the SDK sends:
    ``schema_title="..."`` (alone or ORed in parentheses), ``in_context("...")`` and
    ``parent_contexts:"..."``, joined by AND; anything else is refused. ``add_run_metadata`` records what
    a pipeline run writes as it runs: its ``system.Run`` execution (parameters as ``input:<name>``) and
    ``system.Metrics`` artifacts."""

    _PATH = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+)/(pipelineJobs|metadataStores)(.*)")

    def __init__(self, states: tuple[str, ...] = PIPELINE_RUN_STATES, error: str = "The DAG failed."):
        self.states, self.error = states, error
        self.jobs: dict[str, dict] = {}  # job name -> resource
        self.reads: dict[str, int] = {}  # job name -> gets so far
        self.contexts: dict[str, dict] = {}  # context name -> resource
        self.children: dict[str, list[str]] = {}  # context name -> child context names
        self.executions: dict[str, dict] = {}  # name -> resource (+ "_contexts")
        self.artifacts: dict[str, dict] = {}  # name -> resource (+ "_contexts")
        self._ids = itertools.count(5000)
        self._lock = threading.Lock()

    def handles(self, path: str) -> bool:
        return bool(self._PATH.fullmatch(unquote(path)))

    def route(self, method: str, path: str, body: dict, query: dict) -> tuple[int, dict]:
        parent, kind, rest = self._PATH.fullmatch(unquote(path)).groups()
        with self._lock:
            if kind == "pipelineJobs":
                return self._jobs(method, parent, rest, body, query)
            return self._metadata(method, f"{parent}/metadataStores", rest, body, query)

    # pipeline jobs
    def _jobs(self, method: str, parent: str, rest: str, body: dict, query: dict) -> tuple[int, dict]:
        if method == "POST" and rest == "":
            job_id = query.get("pipelineJobId") or f"pipeline-{next(self._ids)}"
            name = f"{parent}/pipelineJobs/{job_id}"
            self.jobs[name] = {
                **body,
                "name": name,
                "state": self.states[0],
                "createTime": "2026-11-21T00:00:00Z",
            }
            self.reads[name] = 0
            return 200, self.jobs[name]
        m = re.fullmatch(r"/([\w-]+)(:cancel)?", rest)
        name = f"{parent}/pipelineJobs/{m.group(1)}" if m else ""
        if name not in self.jobs:
            return _error(404, "NOT_FOUND", f"PipelineJob {name or rest} not found.")
        job = self.jobs[name]
        if method == "POST" and m.group(2):
            job["_cancelled"] = True
            return 200, {}
        if method != "GET" or m.group(2):
            return _error(404, "NOT_FOUND", f"no route {method} {rest}")
        self.reads[name] += 1
        job["state"] = self.states[min(self.reads[name], len(self.states) - 1)]
        if job.get("_cancelled"):
            job["state"] = "PIPELINE_STATE_CANCELLED"
        if job["state"] == "PIPELINE_STATE_FAILED":
            job["error"] = {"code": 9, "message": self.error}
        job["jobDetail"] = {"pipelineRunContext": self._run_context(name)}
        return 200, {k: v for k, v in job.items() if not k.startswith("_")}

    def _run_context(self, job_name: str) -> dict:
        parent, _, job_id = job_name.partition("/pipelineJobs/")
        name = f"{parent}/metadataStores/default/contexts/{job_id}"
        context = {"name": name, "displayName": job_id, "schemaTitle": "system.PipelineRun", "metadata": {}}
        return self.contexts.setdefault(name, context)

    def add_run_metadata(
        self, job_name: str, params: dict, metrics: list[dict], state: str = "COMPLETE"
    ) -> None:
        """What Vertex records while the job runs: its parameters and its Metrics artifacts."""
        context = self._run_context(job_name)["name"]
        store = context.split("/contexts/")[0]
        run = f"{store}/executions/{next(self._ids)}"
        self.executions[run] = {
            "name": run,
            "displayName": context.rsplit("/", 1)[1],
            "schemaTitle": "system.Run",
            "state": state,
            "metadata": {f"input:{k}": v for k, v in params.items()},
            "_contexts": [context],
        }
        for values in metrics:
            name = f"{store}/artifacts/{next(self._ids)}"
            self.artifacts[name] = {
                "name": name,
                "schemaTitle": "system.Metrics",
                "metadata": dict(values),
                "state": "LIVE",
                "_contexts": [context],
            }

    # metadata store
    def _metadata(self, method: str, stores: str, rest: str, body: dict, query: dict) -> tuple[int, dict]:
        m = re.fullmatch(r"/default(?:/(contexts|executions|artifacts)(?:/([\w-]+))?(:\w+)?)?", rest)
        if not m:
            return _error(404, "NOT_FOUND", f"no route {method} {rest}")
        collection, item, verb = m.groups()
        store = f"{stores}/default"
        if collection is None and method == "GET":
            return 200, {"name": store}
        if method == "GET" and item is None:  # a list
            return self._list(collection, query.get("filter", ""))
        if collection != "contexts":
            return _error(404, "NOT_FOUND", f"no route {method} {rest}")
        name = f"{store}/contexts/{item or query.get('contextId') or next(self._ids)}"
        if method == "POST" and item is None:
            if name in self.contexts:
                return _error(409, "ALREADY_EXISTS", f"Context {name} already exists.")
            self.contexts[name] = {**body, "name": name}
            return 200, self.contexts[name]
        if name not in self.contexts:
            return _error(404, "NOT_FOUND", f"Context {name} not found.")
        if method == "GET" and verb is None:
            return 200, self.contexts[name]
        if method == "POST" and verb == ":addContextChildren":
            children = self.children.setdefault(name, [])
            children += [c for c in body.get("childContexts", []) if c not in children]
            return 200, {}
        return _error(404, "NOT_FOUND", f"no route {method} {rest}")

    def _list(self, collection: str, expression: str) -> tuple[int, dict]:
        items = {"contexts": self.contexts, "executions": self.executions, "artifacts": self.artifacts}[
            collection
        ]
        found = list(items.values())
        for clause in (c.strip() for c in expression.split(" AND ") if c.strip()):
            if titles := re.findall(r'schema_title="([^"]+)"', clause):
                found = [r for r in found if r.get("schemaTitle") in titles]
            elif m := re.fullmatch(r'in_context\("([^"]+)"\)', clause):
                found = [r for r in found if m.group(1) in r.get("_contexts", [])]
            elif m := re.fullmatch(r'parent_contexts:"([^"]+)"', clause):
                found = [r for r in found if r["name"] in self.children.get(m.group(1), [])]
            else:
                return _error(400, "INVALID_ARGUMENT", f"unsupported filter {clause!r}")
        return 200, {collection: [{k: v for k, v in r.items() if not k.startswith("_")} for r in found]}


# -- projects.locations.endpoints (online prediction) ---------------------------------------------------
@dataclass
class Fault:
    """One injected fault (``LoopbackEndpoints.fail_next``): wait ``delay_s``, then answer HTTP ``status``
    (None: answer normally, i.e. only slow). ``applied``: do the work first, then answer the error (a
    server that finished what the client gave up on). ``in_operation``: answer a long-running operation
    that is done with this error instead of an HTTP error (Vertex's way for a deployment that fails)."""

    status: int | None = 500
    delay_s: float = 0.0
    applied: bool = False
    in_operation: bool = False
    message: str = ""


_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_RPC_CODES = {
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
}


class LoopbackEndpoints:
    """Endpoints: create (``?endpointId=`` or a numeric ID; a done long-running operation answering the
    Endpoint), get, list (``display_name="..."`` / ``labels.<k>="..."`` filters), PATCH (``updateMask``:
    ``traffic_split``, ``display_name``, ``description``, ``labels``), DELETE (refused while models are
    deployed, as Vertex does), ``:deployModel`` and ``:undeployModel`` (done operations; the body's
    ``trafficSplit`` replaces the endpoint's, "0" naming the model being deployed), operations get.

    Validation as Vertex does it: a split sums to 100 (or is empty) and names only deployed models (and
    "0" on deploy); a deployed model must exist in the Model Registry stand-in (``models``, by name or
    ``name@version``); an undeployed model must be left with no traffic.

    Predictions: ``:rawPredict`` and ``:predict`` are forwarded to the URL a test registers per deployed
    model with ``serve(key, url)`` (key: a deployed model ID, a model resource name, or ``name@version``),
    at the route the deployed model's container declares (``containerSpec.predictRoute`` of the model
    version; ``/v1/chat/completions`` when it declares none), or the ``route`` given to ``serve``. The
    deployed model is chosen by the traffic split with smooth weighted round robin (deterministic: with a
    90/10 split every 10th request goes to the 10 % model, the same sequence on every run); the SDK
    cannot ask for one deployed model, and Vertex's public endpoints cannot either. As Vertex does,
    ``:rawPredict`` answers the server's bytes with ``X-Vertex-AI-Endpoint-Id`` and
    ``X-Vertex-AI-Deployed-Model-Id`` headers; ``:predict`` answers ``predictions`` with
    ``deployedModelId``, ``model`` and ``modelVersionId``.

    Faults: ``fail_next(kind, status, delay_s=..., applied=..., in_operation=...)`` queues a fault for the
    next request of that kind: ``create``, ``get``, ``list``, ``patch``, ``delete``, ``deployModel``,
    ``undeployModel``, ``predict``, ``rawPredict``; ``slow_next(kind, seconds)`` delays the next answer."""

    _PATH = re.compile(r"/v1/(projects/([^/]+)/locations/([^/]+))/endpoints(.*)")

    def __init__(self, models: LoopbackModels | None = None):
        self.models = models
        self.store: dict[str, dict] = {}  # endpoint resource name -> resource
        self.operations: dict[str, dict] = {}
        self.backends: dict[str, tuple[str, str | None]] = {}  # key -> (URL, route or None)
        self.faults: dict[str, deque[Fault]] = {}
        self.served: list[tuple[str, str]] = []  # (endpoint, deployed model ID) per forwarded prediction
        self._wrr: dict[str, dict[str, int]] = {}  # endpoint -> smooth round-robin state
        self._ids = itertools.count(4000)
        self._lock = threading.Lock()

    # -- the test's side -------------------------------------------------------------------------------
    def serve(self, key: str, url: str, route: str | None = None) -> None:
        """Forward predictions of a deployed model to ``url`` (key: deployed model ID, model resource
        name, or ``name@version``); ``route``: the path to post to (default: the container's)."""
        self.backends[key] = (url.rstrip("/"), route)

    def fail_next(
        self,
        kind: str,
        status: int | None = 500,
        *,
        delay_s: float = 0.0,
        applied: bool = False,
        in_operation: bool = False,
        message: str = "",
    ) -> None:
        self.faults.setdefault(kind, deque()).append(Fault(status, delay_s, applied, in_operation, message))

    def slow_next(self, kind: str, seconds: float) -> None:
        self.fail_next(kind, None, delay_s=seconds)

    def split(self, endpoint: str) -> dict[str, int]:
        return dict(self.store[endpoint].get("trafficSplit", {}))

    # -- routing ---------------------------------------------------------------------------------------
    def handles(self, path: str) -> bool:
        return bool(self._PATH.fullmatch(unquote(path)))

    def route(
        self, method: str, path: str, body: dict, query: dict, *, raw: bytes | None = None, headers=None
    ) -> tuple[int, dict | RawReply]:
        parent, _, _, rest = self._PATH.fullmatch(unquote(path)).groups()
        if method == "GET" and rest == "":
            return self._faulted("list", lambda: self._list(query.get("filter", "")))
        if method == "POST" and rest == "":
            return self._faulted("create", lambda: self._create(parent, body, query))
        m = re.fullmatch(r"/([\w-]+)(:\w+|/operations/[\w-]+)?", rest)
        if not m:
            return _error(404, "NOT_FOUND", f"no route {method} {path}")
        name, verb = f"{parent}/endpoints/{m.group(1)}", m.group(2)
        if method == "GET" and verb and verb.startswith("/operations/"):
            op = self.operations.get(f"{name}{verb}")
            return (200, op) if op else _error(404, "NOT_FOUND", f"Operation {name}{verb} not found.")
        if name not in self.store:
            return _error(404, "NOT_FOUND", f"Endpoint {name} not found.")
        if method == "GET" and verb is None:
            return self._faulted("get", lambda: (200, self._public(name)))
        if method == "PATCH" and verb is None:
            return self._faulted("patch", lambda: self._patch(name, body, query.get("updateMask", "")))
        if method == "DELETE" and verb is None:
            return self._faulted("delete", lambda: self._delete(name))
        if method == "POST" and verb == ":deployModel":
            return self._faulted("deployModel", lambda: self._deploy(name, body), operation=True)
        if method == "POST" and verb == ":undeployModel":
            return self._faulted("undeployModel", lambda: self._undeploy(name, body), operation=True)
        if method == "POST" and verb in (":rawPredict", ":predict"):
            data = raw if raw is not None else json.dumps(body).encode()
            content_type = (headers or {}).get("Content-Type", "application/json")
            return self._faulted(verb[1:], lambda: self._predict(name, verb[1:], data, content_type))
        return _error(404, "NOT_FOUND", f"no route {method} {path}")

    def _faulted(self, kind: str, answer, operation: bool = False) -> tuple[int, dict | RawReply]:
        with self._lock:
            queue = self.faults.get(kind)
            fault = queue.popleft() if queue else None
        if fault is None:
            return self._locked(answer, kind)
        if fault.delay_s:
            time.sleep(fault.delay_s)
        if fault.status is None:
            return self._locked(answer, kind)
        if fault.applied:
            self._locked(answer, kind)
        status_name = _STATUS_NAMES.get(fault.status, "UNKNOWN")
        message = fault.message or f"injected fault: {kind} answered {fault.status}"
        if operation and fault.in_operation:
            op_name = f"projects/-/locations/-/operations/{next(self._ids)}"
            code = _RPC_CODES.get(status_name, 2)
            self.operations[op_name] = {
                "name": op_name,
                "done": True,
                "error": {"code": code, "message": message},
            }
            return 200, self.operations[op_name]
        return _error(fault.status, status_name, message)

    def _locked(self, answer, kind: str):
        if kind in ("predict", "rawPredict"):  # forwarding may be slow: not under the lock
            return answer()
        with self._lock:
            return answer()

    # -- resources -------------------------------------------------------------------------------------
    def _public(self, name: str) -> dict:
        return json.loads(json.dumps(self.store[name]))

    def _operation(self, name: str, type_name: str, response: dict) -> tuple[int, dict]:
        op_name = f"{name}/operations/{next(self._ids)}"
        self.operations[op_name] = {
            "name": op_name,
            "done": True,
            "response": {"@type": f"type.googleapis.com/google.cloud.aiplatform.v1.{type_name}", **response},
        }
        return 200, self.operations[op_name]

    def _list(self, expression: str) -> tuple[int, dict]:
        return _filtered("endpoints", [self._public(n) for n in self.store], expression)

    def _create(self, parent: str, body: dict, query: dict) -> tuple[int, dict]:
        endpoint_id = query.get("endpointId") or query.get("endpoint_id") or str(next(self._ids))
        name = f"{parent}/endpoints/{endpoint_id}"
        if name in self.store:
            return _error(409, "ALREADY_EXISTS", f"Endpoint {name} already exists.")
        resource = {k: v for k, v in body.items() if k not in ("name", "deployedModels", "trafficSplit")}
        self.store[name] = {
            **resource,
            "name": name,
            "deployedModels": [],
            "trafficSplit": {},
            "createTime": "2026-11-21T00:00:00Z",
            "etag": "0",
        }
        return self._operation(name, "Endpoint", self._public(name))

    def _check_split(self, name: str, split: dict, allowed: set[str]) -> tuple[int, dict] | None:
        unknown = sorted(set(split) - allowed)
        if unknown:
            return _error(
                400, "INVALID_ARGUMENT", f"traffic split of {name} names no deployed model {unknown}"
            )
        if split and sum(int(v) for v in split.values()) != 100:
            return _error(400, "INVALID_ARGUMENT", f"traffic split {split} of {name} does not add up to 100")
        if any(int(v) < 0 for v in split.values()):
            return _error(400, "INVALID_ARGUMENT", f"traffic split {split} of {name} has a negative share")
        return None

    def _set_split(self, name: str, split: dict) -> None:
        self.store[name]["trafficSplit"] = {k: int(v) for k, v in split.items()}
        self.store[name]["etag"] = str(int(self.store[name]["etag"]) + 1)
        self._wrr.pop(name, None)

    def _patch(self, name: str, body: dict, mask: str) -> tuple[int, dict]:
        endpoint = self.store[name]
        for field_name in (p.strip() for p in mask.split(",") if p.strip()):
            key = re.sub(r"_(\w)", lambda c: c.group(1).upper(), field_name)
            if key == "trafficSplit":
                split = body.get("trafficSplit", {})
                deployed = {d["id"] for d in endpoint["deployedModels"]}
                if error := self._check_split(name, split, deployed):
                    return error
                if deployed and not split:
                    return _error(
                        400, "INVALID_ARGUMENT", f"{name} has deployed models: its split must add up to 100"
                    )
                self._set_split(name, split)
            elif key in ("displayName", "description", "labels"):
                endpoint[key] = body.get(key, {} if key == "labels" else "")
            else:
                return _error(400, "INVALID_ARGUMENT", f"update_mask path {field_name}")
        return 200, self._public(name)

    def _delete(self, name: str) -> tuple[int, dict]:
        if self.store[name]["deployedModels"]:
            return _error(
                400, "FAILED_PRECONDITION", f"Endpoint {name} has deployed models; undeploy them first."
            )
        del self.store[name]
        op_name = f"{name}/operations/{next(self._ids)}"
        self.operations[op_name] = {
            "name": op_name,
            "done": True,
            "response": {"@type": "type.googleapis.com/google.protobuf.Empty"},
        }
        return 200, self.operations[op_name]

    def _model_version(self, model: str) -> str | None:
        """The version ID a deployed model's ``model`` names, or None when the registry has no such one."""
        if self.models is None:
            return "1"
        base, _, version = model.partition("@")
        found = self.models.store.get(base)
        target = self.models._resolve(found, version) if found else None
        return target["versionId"] if target else None

    def _deploy(self, name: str, body: dict) -> tuple[int, dict]:
        endpoint = self.store[name]
        spec = dict(body.get("deployedModel", {}))
        model = spec.get("model", "")
        version = self._model_version(model)
        if version is None:
            return _error(404, "NOT_FOUND", f"Model {model} not found.")
        if not (spec.get("dedicatedResources") or spec.get("automaticResources")):
            return _error(
                400, "INVALID_ARGUMENT", "a deployed model needs dedicated_resources (machine_spec)"
            )
        split = body.get("trafficSplit") or {}
        deployed = {d["id"] for d in endpoint["deployedModels"]}
        if error := self._check_split(name, split, deployed | {"0"}):
            return error
        deployed_id = str(next(self._ids))
        deployed_model = {
            **spec,
            "id": deployed_id,
            "modelVersionId": version,
            "createTime": "2026-11-21T00:00:00Z",
        }
        endpoint["deployedModels"].append(deployed_model)
        if split:
            self._set_split(name, {(deployed_id if k == "0" else k): v for k, v in split.items()})
        return self._operation(name, "DeployModelResponse", {"deployedModel": deployed_model})

    def _undeploy(self, name: str, body: dict) -> tuple[int, dict]:
        endpoint = self.store[name]
        deployed_id = body.get("deployedModelId", "")
        if deployed_id not in {d["id"] for d in endpoint["deployedModels"]}:
            return _error(404, "NOT_FOUND", f"Deployed model {deployed_id} not found on {name}.")
        rest = {d["id"] for d in endpoint["deployedModels"]} - {deployed_id}
        split = body.get("trafficSplit") or None
        if split is None:
            split = {k: v for k, v in endpoint["trafficSplit"].items() if k != deployed_id}
            if endpoint["trafficSplit"].get(deployed_id, 0) and rest:
                return _error(
                    400,
                    "FAILED_PRECONDITION",
                    f"Deployed model {deployed_id} of {name} still has traffic: give the traffic split "
                    "of the models that stay",
                )
        elif int(split.get(deployed_id, 0)):
            return _error(400, "INVALID_ARGUMENT", f"the model undeployed ({deployed_id}) must get 0 traffic")
        split = {k: v for k, v in split.items() if k != deployed_id}
        if error := self._check_split(name, split, rest):
            return error
        if rest and not split:
            return _error(
                400, "INVALID_ARGUMENT", f"{name} keeps deployed models: its split must add up to 100"
            )
        endpoint["deployedModels"] = [d for d in endpoint["deployedModels"] if d["id"] != deployed_id]
        self._set_split(name, split)
        return self._operation(name, "UndeployModelResponse", {})

    # -- predictions -----------------------------------------------------------------------------------
    def _pick(self, name: str) -> dict | None:
        """The deployed model the next prediction goes to: smooth weighted round robin over the split."""
        with self._lock:
            endpoint = self.store[name]
            weights = {k: int(v) for k, v in endpoint["trafficSplit"].items() if int(v) > 0}
            if not weights:
                return None
            state = self._wrr.setdefault(name, {k: 0 for k in weights})
            for key, weight in weights.items():
                state[key] = state.get(key, 0) + weight
            chosen = max(sorted(weights), key=lambda k: state[k])
            state[chosen] -= sum(weights.values())
            return next(d for d in endpoint["deployedModels"] if d["id"] == chosen)

    def _backend(self, deployed: dict) -> tuple[str, str] | None:
        model = deployed.get("model", "")
        base = model.partition("@")[0]
        version = f"{base}@{deployed.get('modelVersionId', '')}"
        for key in (deployed["id"], model, version, base):
            if key in self.backends:
                url, route = self.backends[key]
                return url, route or self._container_route(deployed)
        return None

    def _container_route(self, deployed: dict) -> str:
        if self.models is not None:
            found = self.models.store.get(deployed.get("model", "").partition("@")[0])
            version = found.versions.get(deployed.get("modelVersionId", "")) if found else None
            route = ((version or {}).get("containerSpec") or {}).get("predictRoute")
            if route:
                return route
        return "/v1/chat/completions"

    def _predict(self, name: str, kind: str, data: bytes, content_type: str) -> tuple[int, dict | RawReply]:
        deployed = self._pick(name)
        if deployed is None:
            return _error(400, "FAILED_PRECONDITION", f"Endpoint {name} has no deployed model with traffic.")
        backend = self._backend(deployed)
        if backend is None:
            return _error(503, "UNAVAILABLE", f"deployed model {deployed['id']} of {name} has no server")
        url, route = backend
        self.served.append((name, deployed["id"]))
        request = urllib.request.Request(
            url + route, data=data, headers={"Content-Type": content_type}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                status, reply, reply_type = (
                    response.status,
                    response.read(),
                    response.headers.get_content_type(),
                )
        except urllib.error.HTTPError as e:
            status, reply, reply_type = e.code, e.read(), e.headers.get_content_type()
        except OSError as e:
            return _error(503, "UNAVAILABLE", f"deployed model {deployed['id']} did not answer: {e}")
        headers = {
            "X-Vertex-AI-Endpoint-Id": name.rsplit("/", 1)[1],
            "X-Vertex-AI-Deployed-Model-Id": deployed["id"],
        }
        if kind == "rawPredict":
            return status, RawReply(reply, reply_type, headers)
        if status != 200:
            return _error(status, _STATUS_NAMES.get(status, "UNKNOWN"), reply.decode(errors="replace"))
        answer = json.loads(reply)
        return 200, {
            "predictions": answer.get("predictions", []),
            "deployedModelId": deployed["id"],
            "model": deployed.get("model", "").partition("@")[0],
            "modelVersionId": deployed.get("modelVersionId", ""),
        }


# -- teachers' APIs (components/augment/teachers.py): any JSON-over-HTTP route ---------------------------
class LoopbackJSON:
    """A JSON-over-HTTP stand-in on 127.0.0.1: ``answer(path, body)`` gives (status, reply); ``faults``
    is consumed one per request first: an int answers that HTTP status, a float sleeps that many seconds
    (a timeout for a client with a shorter one), a dict is sent as the reply as it is."""

    def __init__(self, answer):
        self.answer, self.faults = answer, deque()
        self.requests: list[tuple[str, dict, dict]] = []  # (path, body, headers)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                outer.requests.append((self.path, body, dict(self.headers)))
                fault = outer.faults.popleft() if outer.faults else None
                if isinstance(fault, float):
                    time.sleep(fault)
                status, reply = (fault, {"error": "fault"}) if isinstance(fault, int) else (200, fault)
                if fault is None or isinstance(fault, float):
                    status, reply = outer.answer(self.path, body)
                data = json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", _free_port()), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
