"""Only stdlib, kfp and the project's light modules at module level on the compile path: component
bodies and pipelines import the ML stack inside functions, so compile.py stays fast and light."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = {
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "mlflow",
    "google",
    "bitsandbytes",
    "unsloth",
    "pandas",
    "pyarrow",
    "numpy",
    "jsonschema",
    "tokenizers",
    "accelerate",
}
# Project modules a component.py may import at module level: they themselves import nothing heavy.
# components.train.custom_job: stdlib at module level; it turns train_op into its custom-job twin at import.
LIGHT_PROJECT = {"components.images", "components.version", "components", "components.train.custom_job"}


def _module_level_imports(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def compile_path_files() -> list[Path]:
    return (
        sorted(REPO.glob("components/**/component.py"))
        + sorted(REPO.glob("pipelines/*.py"))
        + [REPO / "compile.py", REPO / "components" / "images.py", REPO / "components" / "__init__.py"]
    )


def test_no_heavy_import_at_module_level():
    bad = [
        f"{p.relative_to(REPO)}: {name}"
        for p in compile_path_files()
        for name in _module_level_imports(p)
        if name.split(".")[0] in HEAVY
    ]
    assert not bad, bad


def test_component_modules_import_only_kfp_and_light_project_code():
    for path in sorted(REPO.glob("components/**/component.py")):
        for name in _module_level_imports(path):
            top = name.split(".")[0]
            assert top in {"kfp", "typing"} or name in LIGHT_PROJECT, (
                f"{path.relative_to(REPO)} imports {name}"
            )


def test_core_modules_never_import_kfp():
    for path in sorted(REPO.glob("components/**/core.py")) + sorted(REPO.glob("components/common/*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            )
            assert not any(m.split(".")[0] == "kfp" for m in mods), f"{path.relative_to(REPO)} imports kfp"


def test_component_bodies_are_thin():
    """CRAFT: a component body turns artifacts into paths, calls core, writes metadata. Counted in
    statements, not formatted lines (one long call is one statement): at most 15, no loops but one."""
    for path in sorted(REPO.glob("components/**/component.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                statements = sum(isinstance(n, ast.stmt) for stmt in body for n in ast.walk(stmt))
                loops = sum(isinstance(n, (ast.For, ast.While)) for stmt in body for n in ast.walk(stmt))
                assert statements <= 15, f"{path.relative_to(REPO)}:{node.name} has {statements} statements"
                assert loops <= 1, f"{path.relative_to(REPO)}:{node.name} has {loops} loops"
