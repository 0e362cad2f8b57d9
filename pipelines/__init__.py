"""slmforge pipelines. ``REGISTRY`` maps a pipeline name to its function; compile.py compiles them all."""

from pipelines.evaluate import evaluate
from pipelines.finetune import finetune, finetune_multinode

REGISTRY = {"finetune": finetune, "finetune-multinode": finetune_multinode, "evaluate": evaluate}

__all__ = ["REGISTRY", "evaluate", "finetune", "finetune_multinode"]
