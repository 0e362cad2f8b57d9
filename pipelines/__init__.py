"""slmforge pipelines. ``REGISTRY`` maps a pipeline name to its function; compile.py compiles them all."""

from pipelines.finetune import finetune, finetune_multinode

REGISTRY = {"finetune": finetune, "finetune-multinode": finetune_multinode}

__all__ = ["REGISTRY", "finetune", "finetune_multinode"]
