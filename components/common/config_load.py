"""Loading a config file: read the YAML (unique keys, no aliases, UTF-8), apply ``--set`` overrides, make
paths absolute, refuse secret-looking values, and validate into ``Config`` with every broken rule listed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from components.common.config import Config
from components.common.config_rules import RULES, ConfigError

_PYDANTIC_RULES = {"missing": "CFG-001", "extra_forbidden": "CFG-002"}


def _is_local(locator: str) -> bool:
    return "://" not in locator and not locator.startswith("hf:")


def _resolve_locator(loc: str, base_dir: Path) -> tuple[str, str | None]:
    """A local locator with its path made absolute (format prefix kept), and the problem if it is missing."""
    head, sep, rest = loc.partition(":")
    prefix, path = (head + sep, rest) if sep and head in ("jsonl", "json", "csv", "parquet") else ("", loc)
    if not _is_local(path):
        return loc, None
    resolved = (base_dir / path).resolve()
    return prefix + str(resolved), None if resolved.exists() else f"{resolved} does not exist"


def _prepare(raw: dict[str, Any], base_dir: Path) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Resolve relative paths against the config's folder and read the task schema in."""
    problems: list[tuple[str, str, str]] = []
    data = raw.get("data")
    for key in ("train", "eval"):
        if isinstance(data, dict) and isinstance(data.get(key), str) and data[key].strip():
            data[key], problem = _resolve_locator(data[key].strip(), base_dir)
            if problem:
                problems.append(("DATA-002", f"data.{key}", problem))
    task = raw.get("task")
    if isinstance(task, dict) and isinstance(task.get("schema"), str) and "output_schema" not in task:
        path = (base_dir / task["schema"]).resolve()
        try:
            task["output_schema"] = json.loads(path.read_text(encoding="utf-8"))
            task["schema"] = str(path)
        except (OSError, json.JSONDecodeError) as e:
            problems.append(("TASK-002", "task.schema", f"{path}: {e}"))
    model = raw.get("model")
    if (
        isinstance(model, dict)
        and isinstance(model.get("base"), str)
        and model["base"].startswith((".", "/"))
    ):
        model["base"] = str((base_dir / model["base"]).resolve())
    return raw, problems


def _secrets(raw: Any, path: str = "") -> list[tuple[str, str, str]]:
    """CFG-007 for every string value that looks like a credential (the value masked in the message)."""
    from components.common.secrets import find_secret, mask

    if isinstance(raw, dict):
        return [
            v
            for k, val in raw.items()
            if path + k != "task.output_schema"
            for v in _secrets(val, f"{path}{k}.")
        ]
    if isinstance(raw, list):
        return [v for i, val in enumerate(raw) for v in _secrets(val, f"{path[:-1]}[{i}].")]
    what = find_secret(raw) if isinstance(raw, str) else None
    return [("CFG-007", path[:-1], f"holds a secret-looking value ({what}: {mask(raw)})")] if what else []


def parse_config(raw: Any, base_dir: Path | str = ".") -> Config:
    """Validate a config mapping; raise ``ConfigError`` naming every broken rule."""
    if not isinstance(raw, dict):
        raise ConfigError([("CFG-004", "(top)", f"expected a mapping, got {type(raw).__name__}")])
    raw, problems = _prepare(json.loads(json.dumps(raw)), Path(base_dir))
    problems += _secrets(raw)
    if problems:
        raise ConfigError(problems)
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        violations = []
        for err in e.errors():
            rule = err["type"] if err["type"] in RULES else _PYDANTIC_RULES.get(err["type"], "CFG-003")
            where = ".".join(str(p) for p in err["loc"]) or "(top)"
            violations.append((rule, where, err["msg"]))
        raise ConfigError(violations) from None


def apply_overrides(raw: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """``raw`` with each ``dotted.path=value`` override set (the value read as YAML); the result is
    validated like any config, so an unknown field or a bad value names its rule as usual."""
    import yaml

    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise ConfigError([("CFG-004", "(top)", f"expected a mapping, got {type(raw).__name__}")])
    raw = json.loads(json.dumps(raw))
    for item in overrides:
        path, sep, text = item.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise ConfigError([("CFG-005", item, "expected SECTION.FIELD=VALUE")])
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError([("CFG-005", path, f"the value {text!r} is not YAML: {e}")]) from None
        node = raw
        for depth, key in enumerate(keys[:-1]):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError([("CFG-005", path, f"{where} is a value, not a section")])
        node[keys[-1]] = value
    return raw


def _read_yaml(path: Path) -> Any:
    """The config file as data; refuses what YAML would silently accept: a key given twice in one mapping
    (the last would win), and aliases (a few lines of them expand to gigabytes: an "alias bomb")."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            [("CFG-004", str(path), f"not UTF-8 text (byte {e.start}): save it as UTF-8")]
        ) from None
    except OSError as e:
        raise ConfigError([("CFG-004", str(path), str(e))]) from None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                mark = event.start_mark
                raise ConfigError(
                    [("CFG-004", f"{path}:{mark.line + 1}", "YAML aliases (*name) are not read")]
                )
        return yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError([("CFG-004", str(path), str(e))]) from None


def _unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise ConfigError([("CFG-006", f"line {line}", f"{key!r} appears twice in one mapping")])
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read and validate a YAML config file, with ``overrides`` (``train.max_steps=300``) applied."""
    path = Path(path)
    raw = _read_yaml(path)
    return parse_config(apply_overrides(raw, overrides), path.resolve().parent)
