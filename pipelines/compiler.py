"""Compile every pipeline of a target (pipelines.templates) to YAML (no ML stack imported);
``python compile.py [--target vertex|kfp]``."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

DEFAULT_OUT = {"vertex": "build/pipelines", "kfp": "build/pipelines/kfp"}


def compile_all(
    out_dir: str | Path | None = None,
    image_repo: str | None = None,
    image_tag: str | None = None,
    target: str = "vertex",
) -> list[Path]:
    """Compile each pipeline of ``target`` (vertex: Vertex AI Pipelines; kfp: a Kubeflow Pipelines backend
    on GKE, GPU steps scheduled by the Kubernetes platform spec) into ``out_dir`` (default DEFAULT_OUT);
    rewrite image URIs when a repo or tag is given. ``image_tag="git"`` tags with the source revision
    (``$SLMFORGE_GIT_SHA`` or the checkout's HEAD), as CI pushes images. The output depends on the code
    and these arguments only: the same inputs give the same bytes."""
    import yaml
    from kfp import compiler

    from components.images import DEFAULT_REPO, override_images
    from components.version import __version__
    from pipelines import TARGETS, templates

    if image_tag == "git":
        from components.common.provenance import git_sha

        image_tag = git_sha()
        if image_tag == "unknown":
            raise SystemExit("--image-tag git: no git checkout here and $SLMFORGE_GIT_SHA is not set")
    if target not in TARGETS:
        raise SystemExit(f"--target {target}: use one of {', '.join(TARGETS)}")
    out = Path(out_dir or DEFAULT_OUT[target])
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in sorted(templates(target).items()):
        target = out / f"{name}.yaml"
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "p.yaml"
            compiler.Compiler().compile(pipeline, str(raw))
            text = raw.read_text(encoding="utf-8")
        if image_repo or image_tag:
            docs = list(yaml.safe_load_all(text))
            override_images(docs[0], image_repo or DEFAULT_REPO, image_tag or __version__)
            text = yaml.safe_dump_all(docs, sort_keys=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compile every slmforge pipeline to build/pipelines/<name>.yaml (--target kfp: "
        "build/pipelines/kfp/<name>.yaml)."
    )
    parser.add_argument(
        "--target",
        default="vertex",
        choices=["vertex", "kfp"],
        help="vertex: Vertex AI Pipelines; kfp: a Kubeflow Pipelines backend on GKE (infra/gke.tf)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: build/pipelines[/kfp])")
    parser.add_argument("--image-repo", default=None, help="e.g. us-central1-docker.pkg.dev/PROJECT/slmforge")
    parser.add_argument(
        "--image-tag",
        default=None,
        help="image tag: TAG, or git for the source revision (default: the version)",
    )
    args = parser.parse_args(argv)
    for path in compile_all(args.out, args.image_repo, args.image_tag, args.target):
        print(path)
    return 0
