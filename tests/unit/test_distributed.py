"""Where a training process sits: Vertex's CLUSTER_SPEC read into nodes, ranks and the rendezvous point."""

from __future__ import annotations

import json

import pytest

from components.train.distributed import Topology, TopologyError, topology, torchrun_command


def _spec(pool: str, index: int = 0, workers: int = 2) -> dict:
    cluster = {"workerpool0": ["chief-host:2222"], "workerpool1": [f"w{i}:2222" for i in range(workers)]}
    return {"CLUSTER_SPEC": json.dumps({"cluster": cluster, "task": {"type": pool, "index": index}})}


def test_one_machine_runs_one_process_per_gpu():
    assert topology(0, env={}, gpus=0) == Topology(nproc_per_node=1)  # CPU: one process
    assert topology(0, env={}, gpus=8).world_size == 8
    assert topology(2, env={}, gpus=8).nproc_per_node == 2  # an explicit count wins
    assert not topology(0, env={}, gpus=1).distributed


@pytest.mark.parametrize(
    "pool, index, rank", [("workerpool0", 0, 0), ("workerpool1", 0, 1), ("workerpool1", 1, 2)]
)
def test_cluster_spec_places_the_node(pool, index, rank):
    topo = topology(0, env=_spec(pool, index), gpus=4)
    assert (topo.nnodes, topo.node_rank, topo.nproc_per_node) == (3, rank, 4)
    assert (topo.master_addr, topo.master_port) == ("chief-host", 2222)  # the chief is the rendezvous
    assert topo.world_size == 12 and topo.chief == (rank == 0)
    cmd = torchrun_command(topo, "/spec.json")
    assert (
        f"--node-rank={rank}" in cmd
        and "--nnodes=3" in cmd
        and cmd[-2:] == ["components.train.distributed", "/spec.json"]
    )


@pytest.mark.parametrize(
    "env, message",
    [
        (_spec("workerpool2"), r"runs in workerpool0 \(chief\) and workerpool1"),
        (
            {
                "CLUSTER_SPEC": json.dumps(
                    {"cluster": {"workerpool1": ["w:1"]}, "task": {"type": "workerpool1"}}
                )
            },
            "workerpool0 has 0 replicas",
        ),
        ({"CLUSTER_SPEC": "{not json"}, "not a Vertex cluster spec"),
        (
            {
                "CLUSTER_SPEC": json.dumps(
                    {"cluster": {"workerpool0": ["nohostport"]}, "task": {"type": "workerpool0"}}
                )
            },
            "expected host:port",
        ),
    ],
)
def test_a_broken_cluster_spec_is_refused_with_the_reason(env, message):
    with pytest.raises(TopologyError, match=message):
        topology(1, env=env)


def test_negative_process_count_is_refused():
    with pytest.raises(TopologyError, match="processes_per_node=-1"):
        topology(-1, env={})
