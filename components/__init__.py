"""slmforge components: one KFP component per pipeline stage; the logic lives in each stage's core.py.

The components are re-exported lazily (PEP 562), so ``import components.<stage>.core`` never pulls
kfp in: core code runs and is tested without it.
"""

from components.version import __version__

_COMPONENTS = {
    "ingest_op": "components.ingest.component",
    "clean_op": "components.clean.component",
    "split_op": "components.split.component",
    "augment_op": "components.augment.component",
    "preflight_op": "components.preflight.component",
    "train_op": "components.train.component",
    "train_custom_job_op": "components.train.component",
    "evaluate_op": "components.evaluate.component",
    "evaluate_base_op": "components.evaluate.component",
    "evaluate_champion_op": "components.evaluate.component",
    "retrieval_baseline_op": "components.evaluate.component",
    "fetch_model_op": "components.evaluate.component",
    "gate_op": "components.gate.component",
    "export_op": "components.export.component",
    "register_op": "components.register.component",
    "deploy_op": "components.deploy.component",
}

__all__ = ["__version__", *_COMPONENTS]


def __getattr__(name: str):
    if name in _COMPONENTS:
        import importlib

        return getattr(importlib.import_module(_COMPONENTS[name]), name)
    raise AttributeError(f"module 'components' has no attribute {name!r}")
