"""The augment stage: options from the step's inputs, the teacher and labeller they name, and the table in
and out. The component (component.py) and ``slmforge data augment`` (pipelines/cli_data.py) both call
``run_stage``; the paraphrasing and checking itself is core.py's.

It runs after the split, on the training rows only: the eval rows are read for their user turns, which no
paraphrase may repeat (AUGMENT_EVAL_LEAK), and every added row keeps its original's group, which the split
put in train. ``check_no_leak`` verifies both on the table written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from components.augment.cache import TeacherCache
from components.augment.core import (
    DEFAULT_TEMPLATE,
    AugmentResult,
    DryRun,
    TeacherLabeler,
    augment,
    dry_run,
    load_oracle,
    turns_of,
)
from components.augment.cost import Budget
from components.augment.teachers import (
    GeminiTeacher,
    HFTeacher,
    OpenAICompatibleTeacher,
    Teacher,
    Transport,
)
from components.common.options import StepOptions
from components.common.scoring import TaskSpec
from components.common.tables import read_rows, write_rows


@dataclass
class AugmentOptions(StepOptions):
    """data.augment (components/common/config_data.py AugmentConfig) as the step receives it."""

    JSON_INPUTS = ("output_schema", "labels")

    enabled: bool = False
    n: int = 10
    teacher: str = "gemini"  # backend
    model: str = "gemini-2.5-flash"
    endpoint: str = ""
    key_env: str = ""
    project: str = ""
    location: str = "us-central1"
    temperature: float = 0.7
    max_output_tokens: int = 1024
    timeout_s: float = 60.0
    retries: int = 4
    oracle: str = ""
    prompt_template: str = ""
    max_usd: float = -1.0
    max_workers: int = 4
    cache: str = ""
    task_type: str = "structured"
    output_schema: dict | None = None
    labels: list[str] | None = None
    system_prompt: str = ""
    near_dup_threshold: float = 0.9

    @property
    def task(self) -> TaskSpec:
        return TaskSpec(self.task_type, self.output_schema, list(self.labels or []))

    @property
    def cache_path(self) -> Path:
        if self.cache.startswith("gs://"):
            raise ValueError(
                f"data.augment.cache={self.cache}: the reply cache is a local sqlite file; give a path "
                "(empty = $SLMFORGE_HOME/augment/cache.sqlite)"
            )
        from components.common.home import slmforge_home

        return Path(self.cache) if self.cache else slmforge_home() / "augment" / "cache.sqlite"


def make_teacher(opts: AugmentOptions, *, temperature: float | None = None) -> Teacher:
    """The teacher ``opts`` names; ``temperature`` overrides the paraphrasing one (a labeller uses 0)."""
    transport = Transport(timeout_s=opts.timeout_s, retries=opts.retries)
    temp = opts.temperature if temperature is None else temperature
    if opts.teacher == "openai":
        return OpenAICompatibleTeacher(
            opts.endpoint,
            opts.model,
            api_key_env=opts.key_env or None,
            temperature=temp,
            max_output_tokens=opts.max_output_tokens,
            transport=transport,
        )
    if opts.teacher == "gemini":
        if not opts.project:
            raise ValueError("a Gemini teacher needs vertex.project (the project that is billed for it)")
        return GeminiTeacher(
            opts.project,
            opts.location,
            opts.model,
            api_endpoint=opts.endpoint,
            temperature=temp,
            max_output_tokens=opts.max_output_tokens,
            transport=transport,
        )
    if opts.teacher == "hf":
        return HFTeacher(opts.model, max_output_tokens=opts.max_output_tokens)
    raise ValueError(f"data.augment.teacher.backend={opts.teacher!r}: use gemini, openai or hf")


def make_labeler(opts: AugmentOptions, teacher: Teacher | None = None):
    """The oracle ``module:function``, else a teacher re-labelling: ``teacher`` when given, else a client
    of the configured one at temperature 0 (the paraphrasing client keeps its temperature; a local HF
    teacher decodes greedily either way)."""
    if opts.oracle:
        return load_oracle(opts.oracle)
    labeller = teacher or make_teacher(opts, temperature=0.0)
    schema = opts.output_schema if opts.task_type == "structured" else None
    return TeacherLabeler(labeller, system_prompt=opts.system_prompt, schema=schema)


def user_turns(rows: list[dict]) -> list[str]:
    """Every user message of the rows: the prompt and the user turns of its history."""
    return [t["content"] for row in rows for t in turns_of(row) if t["role"] == "user"]


def label_key(opts: AugmentOptions):
    """What the report counts a label under: a structured target's commands (the values of its "command"
    or first string fields, e.g. ``start_flow+set_slot``), a class, or (generation) one bucket."""
    if opts.task_type == "classification":
        return str.strip
    if opts.task_type == "generation":
        return lambda text: "(text)"

    def commands(text: str) -> str:
        try:
            value = json.loads(text)
        except ValueError:
            return "(not JSON)"
        items = value if isinstance(value, list) else [value]
        names = [
            str(next((v for v in item.values() if isinstance(v, str)), "?"))
            if isinstance(item, dict)
            else "?"
            for item in items
        ]
        return "+".join(names) or "(empty)"

    return commands


def run_stage(
    train_path: str | Path,
    eval_path: str | Path,
    out_path: str | Path,
    opts: AugmentOptions,
    *,
    teacher: Teacher | None = None,
) -> AugmentResult | None:
    """Augment the training table into ``out_path`` (every original row, then the added ones); None, and
    the table copied as it is, when augmentation is off. ``teacher``: instead of the one ``opts`` names."""
    if not opts.enabled:
        shutil.copyfile(train_path, out_path)
        return None
    rows, eval_rows = read_rows(train_path), read_rows(eval_path)
    labeler = make_labeler(opts, teacher)
    teacher = teacher or make_teacher(opts)
    with TeacherCache(opts.cache_path) as cache:
        result = augment(
            rows,
            teacher=teacher,
            labeler=labeler,
            task=opts.task,
            n=opts.n,
            prompt_template=opts.prompt_template or DEFAULT_TEMPLATE,
            budget=Budget(None if opts.max_usd == -1 else opts.max_usd),
            cache=cache,
            near_dup_threshold=opts.near_dup_threshold,
            eval_prompts=user_turns(eval_rows),
            label_key=label_key(opts),
            max_workers=opts.max_workers,
        )
    check_no_leak(result.rows[len(rows) :], eval_rows)
    write_rows(result.rows, out_path)
    return result


def plan(train_path: str | Path, opts: AugmentOptions, *, teacher: Teacher | None = None) -> DryRun:
    """What ``run_stage`` would ask the teacher now: calls (cached ones left out) and an estimated cost."""
    labeler = None if opts.oracle else make_labeler(opts, teacher)
    teacher = teacher or make_teacher(opts)
    with TeacherCache(opts.cache_path) as cache:
        return dry_run(
            read_rows(train_path),
            teacher=teacher,
            task=opts.task,
            n=opts.n,
            prompt_template=opts.prompt_template or DEFAULT_TEMPLATE,
            labeler=labeler,
            cache=cache,
        )


def check_no_leak(added: list[dict], eval_rows: list[dict]) -> None:
    """No added row may share a group with the eval set or repeat an eval user turn word for word (the
    near-duplicate check ran in core; this is the invariant, checked on what is written)."""
    groups = {r["group"] for r in eval_rows}
    prompts = set(user_turns(eval_rows))
    for row in added:
        if row["group"] in groups or row["prompt"] in prompts:
            raise RuntimeError(
                f"augment: added row {row['id']} reaches the eval set (group {row['group']!r}); this is a "
                "bug in components/augment, not in the data"
            )


def extend_card(
    split_card: str | Path, folder: str | Path, result: AugmentResult | None, train_sha256: str
) -> dict:
    """The split's dataset card with the augmentation in it: manifest.json gains ``augment`` (the
    report, the table's hash) and dataset_summary.md the report's Markdown. Off: the card as it was."""
    from components.augment.core import report_markdown

    shutil.copytree(split_card, folder, dirs_exist_ok=True)
    folder = Path(folder)
    man = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    if result is None:
        return man
    man["augment"] = {**result.report(), "train_rows_after": len(result.rows), "sha256": train_sha256}
    (folder / "manifest.json").write_text(json.dumps(man, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    markdown = report_markdown(result)
    (folder / "augmentation.md").write_text(markdown, encoding="utf-8")
    summary = folder / "dataset_summary.md"
    summary.write_text(
        summary.read_text(encoding="utf-8") + "\n" + markdown.replace("# Augmentation", "## Augmentation", 1),
        encoding="utf-8",
    )
    return man
