"""The canonical row table every data stage reads and writes (parquet): one schema, one place."""

from __future__ import annotations

from pathlib import Path

# Canonical columns: a stable id, a group id (paraphrase family; rows of one group stay on one side of
# the split), the user prompt text and the target completion text.
COLUMNS = ("id", "group", "prompt", "completion")


def write_rows(rows: list[dict[str, str]], path: str | Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.string()) for c in COLUMNS])
    table = pa.Table.from_pylist([{c: r[c] for c in COLUMNS} for r in rows], schema=schema)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path))
    return table.num_rows


def read_rows(path: str | Path) -> list[dict[str, str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(str(path))
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not a canonical slmforge table (missing columns {missing})")
    return table.select(list(COLUMNS)).to_pylist()
