"""slmforge pipelines. ``REGISTRY`` maps a pipeline name to its function (compiled for Vertex AI Pipelines);
``templates(target)`` the same per target (vertex, kfp: a Kubeflow Pipelines backend on GKE), the kfp ones
built only when asked for. compile.py compiles them."""

from pipelines.evaluate import build_evaluate, evaluate
from pipelines.finetune import build_finetune, finetune, finetune_multinode
from pipelines.parameters import TARGETS

REGISTRY = {"finetune": finetune, "finetune-multinode": finetune_multinode, "evaluate": evaluate}


def templates(target: str) -> dict:
    """The pipeline functions compiled for ``target``, by name."""
    if target == "vertex":
        return REGISTRY
    if target == "kfp":
        return {"finetune": build_finetune(multi_node=False, target="kfp"), "evaluate": build_evaluate("kfp")}
    raise ValueError(f"target {target!r}: use one of {', '.join(TARGETS)}")


__all__ = ["REGISTRY", "TARGETS", "evaluate", "finetune", "finetune_multinode", "templates"]
