"""slmforge pipelines. ``REGISTRY`` maps a pipeline name to its function; compile.py compiles them all."""

from pipelines.finetune import finetune

REGISTRY = {"finetune": finetune}

__all__ = ["REGISTRY", "finetune"]
