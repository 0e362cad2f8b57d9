"""A stage's Options from its step inputs: the one path the component, the CLI and the benchmarks take.

A pipeline passes a stage its settings as KFP parameters: numbers and flags as they are, structures as
JSON text, lists of names as comma-separated text. ``StepOptions.from_inputs(**inputs)`` decodes them by
input name into the stage's Options dataclass; the CLI and the benchmarks build the same inputs from a
config (pipelines/parameters.py ``stage_options``), so an in-process stage runs with exactly the
options the pipeline step would.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar


def names(text: str) -> list[str]:
    """Comma-separated names ("q_proj, v_proj") as a list; "" = none."""
    return [name.strip() for name in text.split(",") if name.strip()]


class StepOptions:
    """Base of a stage's Options dataclass. Subclasses say which inputs arrive as text:

    * ``JSON_INPUTS``: JSON text ("" = None);
    * ``LIST_INPUTS``: comma-separated names (a tuple when the field is annotated as one);
    * ``RENAMED``: step input name -> field name, where they differ.
    """

    JSON_INPUTS: ClassVar[tuple[str, ...]] = ()
    LIST_INPUTS: ClassVar[tuple[str, ...]] = ()
    RENAMED: ClassVar[dict[str, str]] = {}

    @classmethod
    def input_names(cls) -> set[str]:
        """The step inputs ``from_inputs`` takes: the fields, under their input names."""
        by_field = {field: name for name, field in cls.RENAMED.items()}
        return {by_field.get(f.name, f.name) for f in dataclasses.fields(cls)}

    @classmethod
    def decode(cls, name: str, value: Any) -> Any:
        """One input's value as its field holds it."""
        if not isinstance(value, str):
            return value
        if name in cls.JSON_INPUTS:
            return json.loads(value) if value else None
        if name in cls.LIST_INPUTS:
            field = next(f for f in dataclasses.fields(cls) if f.name == cls.RENAMED.get(name, name))
            return tuple(names(value)) if str(field.type).startswith("tuple") else names(value)
        return value

    @classmethod
    def from_inputs(cls, **inputs: Any):
        """The options from the step's inputs by name, as the pipeline passes them."""
        unknown = set(inputs) - cls.input_names()
        if unknown:
            raise TypeError(f"{cls.__name__}.from_inputs: no input named {', '.join(sorted(unknown))}")
        return cls(**{cls.RENAMED.get(k, k): cls.decode(k, v) for k, v in inputs.items()})
