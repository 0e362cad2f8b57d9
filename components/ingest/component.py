"""KFP component of the ingest stage (logic in core.py)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def ingest_op(
    locator: str,
    prompt_field: str,
    completion_field: str,
    group_field: str,
    id_field: str,
    config_hash: str,
    dataset: Output[Dataset],
):
    """Read a JSONL data locator and map its rows onto the canonical table (parquet).

    Args:
        locator: JSONL file, a local path or gs://bucket/object.
        prompt_field: source field holding the user prompt text.
        completion_field: source field holding the target output text.
        group_field: source field with a group id (paraphrase family); empty = none.
        id_field: source field with a stable row id; empty = the line number.
        config_hash: sha256 of the validated config, recorded as provenance.
        dataset: the canonical table: id, group, prompt, completion.
    """
    from components.common.provenance import stamp
    from components.ingest.core import FieldMap, ingest

    fields = FieldMap(prompt_field, completion_field, group_field, id_field)
    result = ingest(locator, fields, dataset.path)
    dataset.metadata.update({"rows": result.accepted, "rows_in": result.rows_in, "source": locator})
    stamp(dataset.metadata, dataset.path, config_hash=config_hash, upstream={})
