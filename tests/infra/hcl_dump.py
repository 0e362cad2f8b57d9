"""Print every *.tf under a folder as JSON, parsed with python-hcl2: {file name: document}.

Runs with the tools venv's Python (python-hcl2 is not in .venv). python-hcl2 keeps HCL's quotes around
strings and keys and adds ``__is_block__``/``__comments__`` markers; both are removed here so tests
compare plain values (``${var.x}`` interpolations stay as written).
"""

import json
import sys
from pathlib import Path

import hcl2

MARKERS = {"__is_block__", "__comments__", "__start_line__", "__end_line__"}


def unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def plain(value):
    if isinstance(value, dict):
        return {unquote(k): plain(v) for k, v in value.items() if k not in MARKERS}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return unquote(value)
    return value


def main(folder: str) -> int:
    docs = {}
    for path in sorted(Path(folder).glob("*.tf")):
        with path.open(encoding="utf-8") as fh:
            docs[path.name] = plain(hcl2.load(fh))
    json.dump(docs, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
