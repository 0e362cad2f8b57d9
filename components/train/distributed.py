"""Multi-GPU and multi-node training: the train component starts torchrun inside itself.

One process per GPU on each node (``processes_per_node``; 0 = one per visible CUDA device), and on a Vertex
AI custom job with worker pools one node per replica (components/train/custom_job.py). The node layout
comes from ``CLUSTER_SPEC``, the variable Vertex sets on every replica of a custom job::

    {"cluster": {"workerpool0": ["host-0:2222"], "workerpool1": ["host-1:2222", ...]},
     "task": {"type": "workerpool1", "index": 0}, ...}

Training nodes are workerpool0 (one replica: the chief, node 0) followed by the replicas of workerpool1;
the chief's address is the rendezvous point. Every node runs the same component; only node 0 writes the
step's outputs (model, metrics, loss curve), the others train and exit.

torchrun (``torch.distributed.run``) runs ``python -m components.train.distributed SPEC`` once per
process; each builds the same Trainer, which sees ``LOCAL_RANK``/``RANK``/``WORLD_SIZE`` and trains data
parallel (DDP; NCCL on GPUs, gloo on CPU). The global rank 0 process saves checkpoints and the model and
writes the result file the component reads back. SIGTERM (preemption) is passed to torchrun, which passes it
to every process: each finishes its step, rank 0 saves a checkpoint, and the component exits 143 so the
retried task resumes (components/train/core.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAINING_POOLS = ("workerpool0", "workerpool1")  # chief, workers (workerpool2/3: servers, evaluators)
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class TrainJob:
    """What one training run needs, on any node: ``core.train``'s arguments (``opts``: a TrainOptions)."""

    train_path: str
    base_model: str
    system_prompt: str
    opts: Any
    out_dir: str
    experiment: str = ""
    tracking_uri: str = ""
    artifact_dir: str = ""
    validation_path: str = ""  # the split's validation slice ("" = none): validation loss while training

    def train(self):
        """``core.train`` in this process; raises Preempted (exit 143) on SIGTERM."""
        from components.train.core import train

        return train(
            self.train_path,
            self.base_model,
            self.system_prompt,
            self.opts,
            self.out_dir,
            experiment=self.experiment,
            tracking_uri=self.tracking_uri,
            artifact_dir=self.artifact_dir,
            validation_path=self.validation_path,
        )

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "opts": dataclasses.asdict(self.opts)}

    @classmethod
    def from_json(cls, data: dict) -> TrainJob:
        from components.train.core import TrainOptions

        return cls(**{**data, "opts": TrainOptions(**data["opts"])})


class TopologyError(ValueError):
    """CLUSTER_SPEC (or the process count) cannot describe a training cluster."""


@dataclass(frozen=True)
class Topology:
    nnodes: int = 1
    node_rank: int = 0
    nproc_per_node: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def chief(self) -> bool:
        return self.node_rank == 0


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise TopologyError(f"CLUSTER_SPEC address {address!r}: expected host:port")
    return host, int(port)


def topology(
    processes_per_node: int = 0, env: Mapping[str, str] | None = None, gpus: int | None = None
) -> Topology:
    """This node's place in the training cluster.

    ``processes_per_node``: 0 = one per CUDA device (at least one). ``gpus``: CUDA device count (None =
    ask torch). Raises ``TopologyError`` for a CLUSTER_SPEC that names no chief or puts this task in a pool
    that does not train.
    """
    env = os.environ if env is None else env
    if processes_per_node < 0:
        raise TopologyError(
            f"processes_per_node={processes_per_node}: use 0 (one per GPU) or a positive count"
        )
    if processes_per_node == 0:
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count()
        processes_per_node = max(1, gpus)
    spec = env.get("CLUSTER_SPEC", "")
    if not spec:
        return Topology(nproc_per_node=processes_per_node)
    try:
        parsed = json.loads(spec)
        cluster, task = parsed["cluster"], parsed["task"]
        pool, index = task["type"], int(task.get("index", 0))
    except (ValueError, KeyError, TypeError) as err:
        raise TopologyError(f"CLUSTER_SPEC is not a Vertex cluster spec ({err}): {spec[:200]}") from err
    if pool not in TRAINING_POOLS:
        raise TopologyError(
            f"CLUSTER_SPEC task type {pool!r}: the train component runs in workerpool0 (chief) and workerpool1 "
            "(workers) only; remove the other worker pools from the custom job"
        )
    chiefs = cluster.get("workerpool0") or []
    if len(chiefs) != 1:
        raise TopologyError(
            f"CLUSTER_SPEC workerpool0 has {len(chiefs)} replicas: the chief pool needs exactly 1"
        )
    workers = cluster.get("workerpool1") or []
    host, port = _host_port(chiefs[0])
    node_rank = 0 if pool == "workerpool0" else 1 + index
    return Topology(1 + len(workers), node_rank, processes_per_node, host, port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(topo: Topology, spec_path: str | Path) -> list[str]:
    """The torchrun command line that runs this module once per process of ``topo``'s node."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={topo.nnodes}",
        f"--node-rank={topo.node_rank}",
        f"--nproc-per-node={topo.nproc_per_node}",
        f"--master-addr={topo.master_addr}",
        f"--master-port={topo.master_port}",
        "-m",
        "components.train.distributed",
        str(spec_path),
    ]


def run(topo: Topology, job: TrainJob, workdir: str | Path):
    """Train with torchrun on this node; returns the TrainResult on node 0, None on the other nodes.

    Raises ``Preempted`` (exit status 143) when SIGTERM stopped training, ``RuntimeError`` naming the
    exit status when a process failed (its traceback is in the log above).
    """
    from components.train.core import Preempted, TrainResult
    from components.train.tracking import TrackingSummary

    if topo.nnodes == 1 and topo.master_port == DEFAULT_PORT:
        topo = dataclasses.replace(topo, master_port=free_port())  # a lone node: any free local port
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = workdir / "train_spec.json", workdir / "train_result.json"
    result_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps({"job": job.to_json(), "result_path": str(result_path)}))
    cmd = torchrun_command(topo, spec_path)
    print(f"node {topo.node_rank}/{topo.nnodes}: {' '.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd)
    terminated = []

    def forward(signum, frame):
        terminated.append(signum)
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        status = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if terminated or status in (143, -signal.SIGTERM):
        from components.train.checkpoints import checkpoint_step, latest_complete

        saved = latest_complete(job.opts.checkpoint_dir) if job.opts.checkpoint_dir else None
        raise Preempted(checkpoint_step(saved) if saved else 0, saved)
    if status != 0:
        raise RuntimeError(
            f"torchrun exited with status {status} on node {topo.node_rank}; see the log above"
        )
    if not topo.chief:
        return None
    data = json.loads(result_path.read_text())
    tracking = data.pop("tracking")
    return TrainResult(**data, tracking=TrackingSummary(**tracking) if tracking else None)


def train_on_node(nodes: int, processes_per_node: int, job: TrainJob):
    """Train as this node's part of the cluster and return the TrainResult (node 0).

    ``nodes``: the machines the run was configured for; it must match the cluster this step is in.

    One process: ``core.train`` here. Several (``processes_per_node``, GPUs, or CLUSTER_SPEC nodes):
    torchrun, its files in ``job.opts.checkpoint_dir``/node-N. On any node but 0 this raises ``SystemExit(0)``
    once training is done: node 0 writes the outputs, and a KFP executor leaving this way writes none.
    """
    topo = topology(processes_per_node)
    if topo.nnodes != nodes:
        raise TopologyError(
            f"train.nodes={nodes} but this step runs on {topo.nnodes} node(s): "
            + (
                "submit the finetune-multinode template, which starts a custom job with worker pools"
                if nodes > 1
                else "CLUSTER_SPEC describes more nodes than train.nodes; set train.nodes to match"
            )
        )
    if not topo.distributed:
        return job.train()
    workdir = Path(job.opts.checkpoint_dir or job.out_dir + ".torchrun") / f"node-{topo.node_rank}"
    result = run(topo, job, workdir)
    if result is None:
        print(f"node {topo.node_rank}: training done; node 0 writes the outputs", flush=True)
        raise SystemExit(0)
    return result


def main(spec_path: str) -> int:
    """One torchrun process: train, and on global rank 0 write the result file."""
    spec = json.loads(Path(spec_path).read_text())
    result = TrainJob.from_json(spec["job"]).train()
    if int(os.environ.get("RANK", "0")) == 0:
        Path(spec["result_path"]).write_text(json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
