"""slmforge pipelines. ``REGISTRY`` maps a pipeline name to its function (compiled for Vertex AI Pipelines);
``REGISTRIES`` the same per target (vertex, kfp: a Kubeflow Pipelines backend on GKE). compile.py compiles
them."""

from pipelines.evaluate import build_evaluate, evaluate
from pipelines.finetune import build_finetune, finetune, finetune_multinode

REGISTRY = {"finetune": finetune, "finetune-multinode": finetune_multinode, "evaluate": evaluate}
REGISTRIES = {
    "vertex": REGISTRY,
    "kfp": {"finetune": build_finetune(multi_node=False, target="kfp"), "evaluate": build_evaluate("kfp")},
}

__all__ = ["REGISTRIES", "REGISTRY", "evaluate", "finetune", "finetune_multinode"]
