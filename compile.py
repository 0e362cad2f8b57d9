"""Compile every pipeline in pipelines.REGISTRY to build/pipelines/<name>.yaml (no ML stack imported).

python compile.py [--out build/pipelines] [--image-repo REGISTRY/REPO] [--image-tag TAG]
"""

import sys

from pipelines.compiler import main

if __name__ == "__main__":
    sys.exit(main())
