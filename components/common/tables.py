"""The canonical row table every data stage reads and writes (parquet): one schema, one place."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

# Canonical columns:
#   id          stable row id (from the data, or "<source>:<row number>")
#   group       group id (paraphrase family / conversation); a group never straddles the split
#   source      "train" or "eval": which data locator the row came from (eval = an explicit eval set)
#   history     JSON list of {role, content} turns before the last user turn ("[]" for one-turn rows);
#               a system turn here replaces task.system_prompt for this row
#   prompt      the last user turn
#   completion  the target: the assistant's answer to the prompt
COLUMNS = ("id", "group", "source", "history", "prompt", "completion")
REQUIRED = ("id", "group", "prompt", "completion")
DEFAULTS = {"source": "train", "history": "[]"}
BATCH_ROWS = 8192  # rows per parquet row group written / batch read: bounded memory on any input size


def _schema():
    import pyarrow as pa

    return pa.schema([(c, pa.string()) for c in COLUMNS])


def _complete(row: dict) -> dict:
    return {c: row[c] if c in row else DEFAULTS[c] for c in COLUMNS}


class RowWriter:
    """Append canonical rows to a parquet file in row groups of ``BATCH_ROWS`` (streaming).

    Rows are buffered column by column: building arrow arrays from lists of strings is several times
    faster than ``Table.from_pylist`` on dicts, and ingest writes a row per source row."""

    def __init__(self, path: str | Path):
        import pyarrow.parquet as pq

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(str(path), _schema())
        self._columns: list[list[str]] = [[] for _ in COLUMNS]
        self.rows = 0

    def write(self, row: dict) -> None:
        for values, c in zip(self._columns, COLUMNS, strict=True):
            values.append(row[c] if c in row else DEFAULTS[c])
        if len(self._columns[0]) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._columns[0]:
            arrays = [pa.array(values, type=pa.string()) for values in self._columns]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=_schema()))
            self.rows += len(self._columns[0])
            self._columns = [[] for _ in COLUMNS]

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_rows(rows, path: str | Path) -> int:
    with RowWriter(path) as w:
        for r in rows:
            w.write(r)
    return w.rows


def _check(path, names) -> None:
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ValueError(f"{path}: not a canonical slmforge table (missing columns {missing})")


def iter_row_batches(path: str | Path, batch_size: int = BATCH_ROWS) -> Iterator[list[dict[str, str]]]:
    """Canonical rows in batches, streaming: memory stays bounded by one batch."""
    import pyarrow.parquet as pq

    # no pre-buffering or reader threads: on 1M rows they held ~90 MB more for no measurable speed-up
    pf = pq.ParquetFile(str(path), pre_buffer=False)
    _check(path, pf.schema_arrow.names)
    for batch in pf.iter_batches(batch_size=batch_size, use_threads=False):
        yield [_complete(r) for r in batch.to_pylist()]


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """All canonical rows of a (train or eval) table."""
    return [r for batch in iter_row_batches(path) for r in batch]


def count_rows(path: str | Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(str(path)).metadata.num_rows
