"""Promotion and rollback: move an alias (``champion``) to a version, only when its recorded gate passed.

These are what the GitHub Actions promote workflow calls (``slmforge promote`` / ``slmforge rollback``).
Both are idempotent (an alias already there is left alone and said so), refuse a version whose recorded
gate verdict is not green unless told otherwise, and leave an audit trail in two places: a record on the
registered model (``Registry.add_audit``: who, what, when, from and to) plus tags on the version, and an
event in the events stream (components/common/events.py codes PROMOTED, ROLLED_BACK, ALIAS_UNCHANGED,
PROMOTION_REFUSED).
"""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from components.common.events import event, write_events
from components.register.backends import TAG_GATE_FAILED, TAG_RUN, ModelVersion, Registry, RegistryError


class PromotionRefused(RegistryError):
    """The version's recorded gate is not green; the message lists its failing rules."""


@dataclass
class AliasChange:
    action: str  # promote | rollback
    name: str
    alias: str
    from_version: str | None  # where the alias pointed before; None = nowhere
    to_version: str
    changed: bool
    actor: str
    time: str

    def sentence(self) -> str:
        if not self.changed:
            return f"{self.name}@{self.alias} already points at version {self.to_version}: nothing changed"
        before = f"version {self.from_version}" if self.from_version else "no version"
        return (
            f"{self.name}@{self.alias}: {before} -> version {self.to_version} ({self.action} by {self.actor})"
        )


def actor() -> str:
    """Who is acting: the GitHub actor in Actions, else the local user."""
    return os.environ.get("GITHUB_ACTOR") or getpass.getuser()


def resolve_version(registry: Registry, name: str, *, version: str = "", run: str = "") -> ModelVersion:
    """The version named by number, or the one a pipeline run registered (``pipeline_run`` tag)."""
    if bool(version) == bool(run):
        raise RegistryError("name exactly one of --version and --run")
    if version:
        found = registry.get(name, version)
        if found is None:
            raise RegistryError(f"{name} has no version {version} in the {registry.backend} registry")
        return found
    matches = [v for v in registry.versions(name) if v.tags.get(TAG_RUN) == run]
    if not matches:
        raise RegistryError(
            f"no version of {name} was registered by run {run!r}: its gate may have failed (nothing is "
            "registered then); check the run's gate report"
        )
    return matches[-1]


def _failing_rules(version: ModelVersion) -> list[str]:
    try:
        return list(json.loads(version.tags.get(TAG_GATE_FAILED, "[]")))
    except json.JSONDecodeError:
        return [version.tags[TAG_GATE_FAILED]]


def move_alias(
    registry: Registry,
    target: ModelVersion,
    *,
    alias: str,
    action: str,
    require_green: bool = True,
    events_path: str | Path | None = None,
    who: str = "",
) -> AliasChange:
    """Point ``alias`` of ``target.name`` at ``target``; refuse a version whose gate is not green."""
    who = who or actor()
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    current = registry.by_alias(target.name, alias)
    change = AliasChange(
        action,
        target.name,
        alias,
        current.version if current else None,
        target.version,
        changed=current is None or current.version != target.version,
        actor=who,
        time=when,
    )
    details = {
        "model": target.name,
        "alias": alias,
        "from": change.from_version,
        "to": target.version,
        "actor": who,
    }
    if require_green and not target.gate_passed:
        failing = _failing_rules(target)
        why = "; ".join(failing) if failing else "no gate verdict is recorded on this version"
        message = (
            f"refused to move {target.name}@{alias} to version {target.version}: gate not passed ({why})"
        )
        if events_path:
            write_events(
                events_path, events_path, [event("registry", "PROMOTION_REFUSED", 1, message, **details)]
            )
        raise PromotionRefused(message)
    if change.changed:
        registry.set_alias(target.name, alias, target.version)
        registry.set_tags(
            target.name, target.version, {f"{alias}.{action}_at": when, f"{alias}.{action}_by": who}
        )
        registry.add_audit(
            target.name, {"action": action, **details, "time": when, "gate_passed": target.gate_passed}
        )
    code = ("PROMOTED" if action == "promote" else "ROLLED_BACK") if change.changed else "ALIAS_UNCHANGED"
    if events_path:
        write_events(events_path, events_path, [event("registry", code, 1, change.sentence(), **details)])
    return change


def promote(
    registry: Registry,
    name: str,
    *,
    version: str = "",
    run: str = "",
    alias: str = "champion",
    require_green: bool = True,
    events_path: str | Path | None = None,
    who: str = "",
) -> AliasChange:
    target = resolve_version(registry, name, version=version, run=run)
    return move_alias(
        registry,
        target,
        alias=alias,
        action="promote",
        require_green=require_green,
        events_path=events_path,
        who=who,
    )


def rollback(
    registry: Registry,
    name: str,
    *,
    to: str,
    alias: str = "champion",
    require_green: bool = True,
    events_path: str | Path | None = None,
    who: str = "",
) -> AliasChange:
    target = resolve_version(registry, name, version=to)
    return move_alias(
        registry,
        target,
        alias=alias,
        action="rollback",
        require_green=require_green,
        events_path=events_path,
        who=who,
    )


LINEAGE_CHAIN = (
    ("data", "data (sources)"),
    ("split_train", "split: train"),
    ("split_eval", "split: eval"),
    ("adapter", "trained model (adapter)"),
    ("merged", "exported (merged)"),
    ("eval_adapter", "evaluation of the adapter"),
    ("eval_exported", "evaluation of the export"),
)


def lineage(version: ModelVersion) -> list[dict[str, str]]:
    """The chain data -> split -> adapter -> merged -> eval -> registry version, from the version's tags."""
    rows = [
        {
            "step": label,
            "sha256": version.tags.get(f"lineage.{key}", ""),
            "uri": version.tags.get(f"lineage.{key}.uri", ""),
        }
        for key, label in LINEAGE_CHAIN
        if f"lineage.{key}" in version.tags
    ]
    aliases = f" (aliases: {', '.join(version.aliases)})" if version.aliases else ""
    rows.append(
        {
            "step": "registry version",
            "sha256": version.tags.get("weights_sha256", ""),
            "uri": version.uri + aliases,
        }
    )
    return rows
