"""Container images of the pipeline steps.

Components name the default URIs below (``slmforge/<kind>:<version>``, what ``make images`` tags
locally). ``python compile.py --image-repo REGISTRY/REPO --image-tag TAG`` rewrites them in the
compiled YAML, so the push location and tag (version or git SHA) are chosen at compile time without
reading the environment at import.
"""

from __future__ import annotations

from components.version import __version__

DEFAULT_REPO = "slmforge"
KINDS = ("cpu", "trainer")  # cpu: data, eval, gate, register steps; trainer: CUDA + bitsandbytes + unsloth


def image_uri(kind: str, repo: str = DEFAULT_REPO, tag: str = __version__) -> str:
    if kind not in KINDS:
        raise ValueError(f"image kind {kind!r}: use one of {KINDS}")
    return f"{repo.rstrip('/')}/{kind}:{tag}"


CPU_IMAGE = image_uri("cpu")
TRAINER_IMAGE = image_uri("trainer")


def override_images(pipeline_spec: dict, repo: str = DEFAULT_REPO, tag: str = __version__) -> dict:
    """Point every executor of a compiled pipeline spec (dict) at ``repo``/``tag``; returns the spec."""
    defaults = {image_uri(k): image_uri(k, repo, tag) for k in KINDS}
    executors = pipeline_spec.get("deploymentSpec", {}).get("executors", {})
    for executor in executors.values():
        container = executor.get("container", {})
        if container.get("image") in defaults:
            container["image"] = defaults[container["image"]]
    return pipeline_spec
