"""k-anonymity for tables larger than memory, with results identical to the in-memory path.

Class sizes only depend on how many rows share each combination of quasi-identifier values, so
the search never needs the rows themselves: DuckDB streams the Parquet file once and groups it by
the quasi-identifiers (and the sensitive column, for l-diversity) into a table of distinct
combinations with their counts. The same lattice search
(:func:`seqlife.deidentify.kanon.anonymise` with ``weights``) then runs on that table, and DuckDB
applies the chosen generalisation to the file (a join with each value's generalisation, a semi
join with the released classes, the original row order), writing the output Parquet file.
Memory is bounded by the distinct combinations, not by the rows: a win when quasi-identifiers
repeat (ages, sexes, postcodes, months), none when nearly every row is a distinct combination.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from seqlife.deidentify.errors import DeidentificationError
from seqlife.deidentify.hierarchy import Hierarchy
from seqlife.deidentify.kanon import KAnonResult, anonymise

COUNT = "__seqlife_rows"
#: DuckDB's working memory; beyond it, it spills to its temporary directory.
MEMORY_LIMIT = "512MB"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def combination_counts(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """Distinct combinations of ``columns`` in a Parquet file with how many rows have each
    (a missing value is a value, as in the in-memory path)."""
    if not columns:
        raise DeidentificationError("Name at least one quasi-identifier to count classes by.")
    listed = ", ".join(_quoted(c) for c in columns)
    with duckdb.connect() as connection:
        connection.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
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
                      l: int | None = None) -> KAnonResult:
    """:func:`~seqlife.deidentify.kanon.anonymise` for a Parquet file of any size.

    The released rows are written to ``out`` (same columns, quasi-identifiers generalised,
    suppressed classes removed, row order kept); the returned result's ``table`` holds the
    released classes with their row counts instead of the rows.
    """
    columns = list(quasi_identifiers) + ([sensitive] if sensitive else [])
    counts = combination_counts(path, columns)
    result = anonymise(counts, list(quasi_identifiers), dict(hierarchies), k, max_suppression,
                       sensitive, l, weights=COUNT)
    _write_released(path, out, list(quasi_identifiers), result,
                    _level_maps(counts, quasi_identifiers, hierarchies, result.levels))
    return replace(result, table=result.table.rename(columns={COUNT: "rows"}))


def _level_maps(counts: pd.DataFrame, qis: Sequence[str], hierarchies: Mapping[str, Hierarchy],
                levels: Mapping[str, int]) -> dict[str, pd.DataFrame]:
    """Per generalised quasi-identifier: a table of original value -> value at the chosen level
    (one row per distinct value; missing stays missing)."""
    maps = {}
    for q in qis:
        if not levels[q]:
            continue
        distinct = pd.Series(pd.unique(counts[q]))
        generalised = pd.Series(hierarchies[q].levels[levels[q]](distinct)).reset_index(drop=True)
        maps[q] = pd.DataFrame({"orig": distinct,
                                "gen": [None if pd.isna(g) else str(g) for g in generalised]})
    return maps


def _write_released(path: Path, out: Path, qis: list[str], result: KAnonResult,
                    maps: Mapping[str, pd.DataFrame]) -> None:
    """Stream the file through DuckDB: generalise by joining each value to its mapping, keep the
    released classes, keep the row order, write Parquet. Memory stays bounded by DuckDB's
    buffers (it spills), not by the table."""
    kept = result.table[qis].drop_duplicates().reset_index(drop=True)
    for q in maps:
        kept[q] = [None if pd.isna(v) else str(v) for v in kept[q]]
    columns = pq.ParquetFile(path).schema_arrow.names
    with duckdb.connect() as connection:
        connection.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        connection.register("kept", kept)
        joins, chosen = [], []
        for index, q in enumerate(qis):
            if q in maps:
                connection.register(f"map{index}", maps[q])
                joins.append(f"LEFT JOIN map{index} ON src.{_quoted(q)} IS NOT DISTINCT FROM "
                             f"map{index}.orig")
        for column in columns:
            if column in maps:
                chosen.append(f"map{qis.index(column)}.gen AS {_quoted(column)}")
            else:
                chosen.append(f"src.{_quoted(column)}")
        matched = " AND ".join(
            f"kept.{_quoted(q)} IS NOT DISTINCT FROM "
            + (f"map{i}.gen" if q in maps else f"src.{_quoted(q)}") for i, q in enumerate(qis))
        query = (f"SELECT {', '.join(chosen)} FROM (SELECT *, row_number() OVER () AS __ord "
                 f"FROM read_parquet('{_literal(path)}')) src {' '.join(joins)} "
                 f"SEMI JOIN kept ON {matched} ORDER BY src.__ord")
        connection.execute(f"COPY ({query}) TO '{_literal(out)}' (FORMAT parquet)")


def _literal(path: Path) -> str:
    return str(path).replace("'", "''")
