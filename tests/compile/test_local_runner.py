"""Local runs drop retry policies (kfp.local honours them with their backoff); the compiled YAML keeps them."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("name", ["finetune", "evaluate"])
def test_local_copy_has_no_retries_and_the_original_keeps_them(name):
    from pipelines import REGISTRY
    from pipelines.local import without_retries

    def retrying(component) -> int:
        spec = component.pipeline_spec
        dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]
        return sum(t.HasField("retry_policy") for d in dags for t in d.tasks.values())

    original = REGISTRY[name]
    before = retrying(original)
    assert before > 3
    assert retrying(without_retries(original)) == 0
    assert retrying(original) == before
