"""Compile every pipeline in pipelines.REGISTRY to YAML (no ML stack imported); ``python compile.py``."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def compile_all(
    out_dir: str | Path = "build/pipelines", image_repo: str | None = None, image_tag: str | None = None
) -> list[Path]:
    """Compile each registered pipeline; rewrite image URIs when a repo or tag is given. ``image_tag="git"``
    tags with the source revision (``$SLMFORGE_GIT_SHA`` or the checkout's HEAD), as CI pushes images.
    The output depends on the code and these arguments only: the same inputs give the same bytes."""
    import yaml
    from kfp import compiler

    from components.images import DEFAULT_REPO, override_images
    from components.version import __version__
    from pipelines import REGISTRY

    if image_tag == "git":
        from components.common.provenance import git_sha

        image_tag = git_sha()
        if image_tag == "unknown":
            raise SystemExit("--image-tag git: no git checkout here and $SLMFORGE_GIT_SHA is not set")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in sorted(REGISTRY.items()):
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
        description="Compile every slmforge pipeline to build/pipelines/<name>.yaml."
    )
    parser.add_argument("--out", default="build/pipelines", help="output folder")
    parser.add_argument("--image-repo", default=None, help="e.g. us-central1-docker.pkg.dev/PROJECT/slmforge")
    parser.add_argument(
        "--image-tag",
        default=None,
        help="image tag: TAG, or git for the source revision (default: the version)",
    )
    args = parser.parse_args(argv)
    for path in compile_all(args.out, args.image_repo, args.image_tag):
        print(path)
    return 0
