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


WORKER_CONTAINER_FLAG = (
    "--worker-container"  # a custom job launcher's replica container (train/custom_job.py)
)


def override_images(pipeline_spec: dict, repo: str = DEFAULT_REPO, tag: str = __version__) -> dict:
    """Point every executor of a compiled pipeline spec (dict) at ``repo``/``tag``; returns the spec.

    Also the image of the replicas a custom job launcher starts, held in its ``--worker-container`` JSON.
    """
    import json

    defaults = {image_uri(k): image_uri(k, repo, tag) for k in KINDS}
    executors = pipeline_spec.get("deploymentSpec", {}).get("executors", {})
    for executor in executors.values():
        container = executor.get("container", {})
        if container.get("image") in defaults:
            container["image"] = defaults[container["image"]]
        args = container.get("args", [])
        for i, arg in enumerate(args[:-1]):
            if arg == WORKER_CONTAINER_FLAG:
                worker = json.loads(args[i + 1])
                worker["image_uri"] = defaults.get(worker["image_uri"], worker["image_uri"])
                args[i + 1] = json.dumps(worker, sort_keys=True)
    return pipeline_spec


# KFP's lightweight command starts the component under ``sh -ec '... python3 -m kfp.dsl.executor_main ...'``:
# sh stays the container's PID 1 and Python its child. A signal to the container (preemption, a stopped pod,
# `docker stop`) then reaches sh, which dies without passing it on, and the trainer never saves its
# checkpoint. ``exec`` makes Python replace sh, so Python is PID 1 and gets the SIGTERM itself.
_KFP_LAUNCH = "_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main"
_EXEC_LAUNCH = "export _KFP_RUNTIME=true\nexec python3 -m kfp.dsl.executor_main"


def exec_python(command: list[str]) -> list[str]:
    """KFP's lightweight-component ``command`` with the Python launch line run by ``exec`` (see above)."""
    script = command[2] if len(command) > 2 and command[:2] in (["sh", "-ec"], ["sh", "-c"]) else ""
    if script.count(_KFP_LAUNCH) != 1:
        raise RuntimeError(
            "the KFP lightweight command no longer has the launch line this project rewrites "
            f"({_KFP_LAUNCH!r}); update components/images.py exec_python for this kfp version"
        )
    return [*command[:2], script.replace(_KFP_LAUNCH, _EXEC_LAUNCH), *command[3:]]


def component(image: str):
    """``@dsl.component`` for a pipeline step on ``image``: no pip install at start (the images hold every
    package), and the Python process replaces the shell, so it receives the container's signals."""
    from kfp import dsl

    def build(func):
        op = dsl.component(func, base_image=image, install_kfp_package=False)
        container = op.component_spec.implementation.container
        container.command = exec_python(list(container.command))
        return op

    return build
