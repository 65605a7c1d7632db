"""k-anonymity for tables larger than memory, with results identical to the in-memory path.

Class sizes only depend on how many rows share each combination of quasi-identifier values, so
the search never needs the rows themselves: DuckDB streams the Parquet file once and groups it by
the quasi-identifiers (and the sensitive column, for l-diversity) into a table of distinct
combinations with their counts -- small whatever the row count. The same lattice search
(:func:`seqlife.deidentify.kanon.anonymise` with ``weights``) then runs on that table, and the
chosen generalisation is applied to the file batch by batch with pyarrow, dropping the suppressed
classes, into the output Parquet file. Memory is bounded by the distinct combinations and one
batch, not by the table.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqlife.deidentify.errors import DeidentificationError
from seqlife.deidentify.hierarchy import Hierarchy
from seqlife.deidentify.kanon import KAnonResult, anonymise

COUNT = "__seqlife_rows"
BATCH_ROWS = 262_144


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def combination_counts(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """Distinct combinations of ``columns`` in a Parquet file with how many rows have each
    (a missing value is a value, as in the in-memory path)."""
    if not columns:
        raise DeidentificationError("Name at least one quasi-identifier to count classes by.")
    listed = ", ".join(_quoted(c) for c in columns)
    with duckdb.connect() as connection:
        connection.execute("SET preserve_insertion_order = false")
        return connection.execute(
            f"SELECT {listed}, COUNT(*) AS {COUNT} FROM read_parquet(?) GROUP BY {listed}",
            [str(path)]).df()


def k_of_parquet(path: Path, quasi_identifiers: Sequence[str]) -> int:
    """Minimum class size of a Parquet table, streamed (0 for an empty table)."""
    counts = combination_counts(path, quasi_identifiers)
    return int(counts[COUNT].min()) if len(counts) else 0


def anonymise_parquet(path: Path, out: Path, quasi_identifiers: list[str],
                      hierarchies: Mapping[str, Hierarchy], k: int = 5,
                      max_suppression: float = 0.05, sensitive: str | None = None,
                      l: int | None = None, batch_rows: int = BATCH_ROWS) -> KAnonResult:
    """:func:`~seqlife.deidentify.kanon.anonymise` for a Parquet file of any size.

    The released rows are written to ``out`` (same columns, quasi-identifiers generalised,
    suppressed classes removed, row order kept); the returned result's ``table`` holds the
    released classes with their row counts instead of the rows.
    """
    columns = list(quasi_identifiers) + ([sensitive] if sensitive else [])
    counts = combination_counts(path, columns)
    result = anonymise(counts, list(quasi_identifiers), dict(hierarchies), k, max_suppression,
                       sensitive, l, weights=COUNT)
    released = {tuple(row) for row in result.table[list(quasi_identifiers)]
                .itertuples(index=False, name=None)}
    mapping = _level_maps(counts, quasi_identifiers, hierarchies, result.levels)
    source = pq.ParquetFile(path)
    writer: pq.ParquetWriter | None = None
    try:
        for batch in source.iter_batches(batch_size=batch_rows):
            frame = batch.to_pandas()
            for q in quasi_identifiers:
                if result.levels[q]:
                    frame[q] = _apply(frame[q], mapping[q])
            keys = frame[list(quasi_identifiers)].itertuples(index=False, name=None)
            keep = np.fromiter((key in released for key in keys), dtype=bool, count=len(frame))
            table = pa.Table.from_pandas(frame.loc[keep], preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema)
            writer.write_table(table.cast(writer.schema, safe=False))
        if writer is None:
            pq.write_table(source.schema_arrow.empty_table(), out)
    finally:
        if writer is not None:
            writer.close()
    return replace(result, table=result.table.rename(columns={COUNT: "rows"}))


def _level_maps(counts: pd.DataFrame, qis: Sequence[str], hierarchies: Mapping[str, Hierarchy],
                levels: Mapping[str, int]) -> dict[str, dict]:
    """Per quasi-identifier: original value -> value at the chosen level (missing keyed as None)."""
    maps = {}
    for q in qis:
        distinct = pd.Series(pd.unique(counts[q]))
        level = levels[q]
        generalised = distinct if level == 0 else hierarchies[q].levels[level](distinct)
        maps[q] = {_key(v): g for v, g in zip(distinct, pd.Series(generalised).tolist())}
    return maps


def _key(value: object) -> object:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) or \
        value is pd.NA or value is pd.NaT else value


def _apply(column: pd.Series, mapping: dict) -> pd.Series:
    return pd.Series([mapping[_key(v)] for v in column.tolist()], index=column.index,
                     name=column.name)
