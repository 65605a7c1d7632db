"""k-anonymity on tables larger than memory gives exactly the in-memory result (GB/T 39725
§10.2 e): same levels, suppression, k, information loss and released rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_deidentify_kanon import PREFIXES, QIS, hierarchies, synthetic

from seqlife.deidentify.errors import KAnonymityNotReached
from seqlife.deidentify.kanon import anonymise, k_of
from seqlife.deidentify.streaming import anonymise_parquet, k_of_parquet


def _as_text(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(str).reset_index(drop=True)


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(n=st.integers(30, 400), seed=st.integers(0, 2**32 - 1), prefixes=st.integers(1, 4),
       max_suppression=st.sampled_from([0.0, 0.05, 0.1]), k=st.sampled_from([2, 5]))
def test_streamed_search_equals_the_in_memory_search(tmp_path_factory, n, seed, prefixes,
                                                     max_suppression, k) -> None:
    """GB/T 39725 §10.2 e: identical decisions and released rows, in the original order."""
    folder: Path = tmp_path_factory.mktemp("stream")
    df = synthetic(n, seed, PREFIXES[:prefixes])
    source, out = folder / "in.parquet", folder / "out.parquet"
    df.to_parquet(source, index=False)
    try:
        expected = anonymise(df, QIS, hierarchies(), k=k, max_suppression=max_suppression)
    except KAnonymityNotReached:
        with pytest.raises(KAnonymityNotReached):
            anonymise_parquet(source, out, QIS, hierarchies(), k, max_suppression)
        return
    got = anonymise_parquet(source, out, QIS, hierarchies(), k, max_suppression)
    assert (got.levels, got.suppressed, got.k_achieved, got.classes) == \
        (expected.levels, expected.suppressed, expected.k_achieved, expected.classes)
    assert got.info_loss == pytest.approx(expected.info_loss)
    released = pd.read_parquet(out)
    assert len(released) == len(expected.table) and int(got.table["rows"].sum()) == len(released)
    pd.testing.assert_frame_equal(_as_text(released[QIS + ["row"]]),
                                  _as_text(expected.table[QIS + ["row"]]))
    assert k_of_parquet(out, QIS) == k_of(expected.table, QIS) == expected.k_achieved


def test_k_of_a_parquet_file_counts_missing_values_as_a_value(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": ["x", "x", None, None, None], "b": [1, 1, 2, 2, 2]})
    df.to_parquet(tmp_path / "t.parquet", index=False)
    assert k_of_parquet(tmp_path / "t.parquet", ["a", "b"]) == k_of(df, ["a", "b"]) == 2
