"""A loopback stand-in of the Vertex AI REST API for tests: the real google-cloud-aiplatform client talks to
it over http on 127.0.0.1, and every request is recorded as the client sent it.

Custom jobs (``projects.locations.customJobs`` create / get / cancel) are served; with ``run_replicas``
the stand-in does what Vertex does with a job's worker pools on this machine: it starts every replica's
container command as a local process with ``CLUSTER_SPEC`` set (workerpool0 = the chief, whose address is
a free local port), and the job is RUNNING until they exit, then SUCCEEDED (all exit 0) or FAILED (naming
the replica and status). The image is not pulled: the command runs in this Python environment.
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
                path = self.path.split("?", 1)[0]
                outer.requests.append(Recorded(method, path, body))
                status, reply = outer._route(method, path, body)
                self._reply(status, reply)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

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
    def _route(self, method: str, path: str, body: dict) -> tuple[int, dict]:
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
