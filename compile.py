"""Compile every pipeline to build/pipelines/<name>.yaml (no ML stack imported); ``--target kfp``: for a
Kubeflow Pipelines backend on GKE, to build/pipelines/kfp/<name>.yaml.

python compile.py [--target vertex|kfp] [--out DIR] [--image-repo REGISTRY/REPO] [--image-tag TAG]
"""

import sys

from pipelines.compiler import main

if __name__ == "__main__":
    sys.exit(main())
