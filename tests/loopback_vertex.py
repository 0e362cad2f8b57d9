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
from collections import deque
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
        self.pipelines = LoopbackPipelines()  # pipeline jobs, experiments (metadata)
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
