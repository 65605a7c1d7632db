"""Recipient watermarks: a leaked table names its agreement, the mark costs at most one unit of the
last released decimal (RARE §4.11).

All tables here are synthetic and built in the test from a fixed seed.
"""

from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlife.exceptions import SeqlifeError
from seqlife.share.watermark import Match, WatermarkError, detect, embed, marked_columns

KEY = b"watermark-secret-of-the-share-stage"
TRUE = "AG-2024-0007"
OTHERS = [f"AG-2024-{i:04d}" for i in range(100, 120)]
CANDIDATES = [TRUE] + OTHERS
LAB = ["glucose", "ldl", "hb"]
FAST = settings(max_examples=40, deadline=None, database=None)


def lab_table(n: int, seed: int = 7) -> pd.DataFrame:
    """One row per subject: pseudonymous ID, quasi-identifiers, float lab values, a float code."""
    rng = np.random.default_rng(seed)
    ldl = np.round(rng.normal(120, 25, n), 1)
    ldl[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "subject": [f"S-{v:06x}" for v in rng.choice(16 ** 6, n, replace=False)],
        "age": rng.integers(18, 90, n),
        "sex": rng.choice(["F", "M"], n),
        "visit": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        "glucose": np.round(rng.normal(5.6, 1.2, n), 2),
        "ldl": ldl,
        "hb": np.round(rng.normal(135, 15, n), 1),
        "site_code": rng.choice([1.0, 2.0, 3.0, np.nan], n),
        "smoker": rng.random(n) < 0.3,
    })


def mark(df: pd.DataFrame, mark_id: str = TRUE) -> pd.DataFrame:
    return embed(df, key=KEY, mark_id=mark_id, subject_column="subject")


def trace(leak: pd.DataFrame, key: bytes = KEY) -> list[Match]:
    return detect(leak, key=key, candidates=CANDIDATES, subject_column="subject")


def from_csv(df: pd.DataFrame) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(df.to_csv(index=False)))


LEAKS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "shuffled rows": lambda df: df.sample(frac=1.0, random_state=3),
    "one marked column left": lambda df: df[["subject", "sex", "hb"]],
    "30-row partial extract": lambda df: df.sample(n=30, random_state=4),
    "30 rows, one column, via CSV": lambda df: from_csv(df.sample(n=30, random_state=5)[
        ["ldl", "subject"]]),
}


def test_marked_columns_are_float_measurements_only() -> None:
    """RARE §4.11: the mark goes into lab values, never into IDs, integers, booleans, dates or
    codes."""
    df = lab_table(50)
    assert marked_columns(df, "subject") == LAB
    assert marked_columns(df, "subject", exclude=["hb"]) == ["glucose", "ldl"]
    assert marked_columns(df.assign(glucose=df["glucose"].astype("category")), "subject") == [
        "ldl", "hb"]


@pytest.mark.parametrize("leak", LEAKS.values(), ids=LEAKS.keys())
def test_a_leak_names_the_true_recipient(leak: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    """RARE §4.11: shuffled, column-subsetted or partial copies of a 200-row delivery still carry
    the mark; every remaining marked cell agrees with the true agreement."""
    leaked = leak(mark(lab_table(200)))
    best = trace(leaked)[0]
    assert best.mark_id == TRUE
    assert best.agreeing == best.compared >= 20  # at least 30 rows with about 10 % ldl missing
    assert best.confidence > 0.999


def test_other_agreements_score_near_chance() -> None:
    """RARE §4.11: another recipient's mark agrees with a leaked cell only by chance (one half)."""
    matches = trace(mark(lab_table(200)).sample(frac=1.0, random_state=3))
    assert len(matches) == len(CANDIDATES)
    others = [m for m in matches if m.mark_id != TRUE]
    assert {m.mark_id for m in others} == set(OTHERS)
    assert all(m.confidence < 0.99 for m in others)
    assert all(0.4 < m.agreeing / m.compared < 0.6 for m in others)
    assert [m.confidence for m in matches] == sorted((m.confidence for m in matches), reverse=True)


def test_confidence_is_one_minus_the_exact_binomial_p_value() -> None:
    """RARE §4.11: confidence is 1 - P(at least `agreeing` of `compared` fair coin flips agree)."""
    stats = pytest.importorskip("scipy.stats")
    for m in trace(mark(lab_table(60)).head(20)):
        p = stats.binomtest(m.agreeing, m.compared, 0.5, alternative="greater").pvalue
        assert m.confidence == pytest.approx(1 - p, abs=1e-12)
        assert 0.0 <= m.confidence <= 1.0


def test_embedding_moves_each_value_by_at_most_one_last_decimal() -> None:
    """RARE §4.11: the mark is low-impact: |marked - original| <= 0.1 at decimals=1; missing values,
    rows, row order, other columns and dtypes are untouched."""
    df = lab_table(200)
    original = df.copy()
    marked = mark(df)
    pd.testing.assert_frame_equal(df, original)
    pd.testing.assert_index_equal(marked.index, df.index)
    assert list(marked.columns) == list(df.columns)
    assert (marked.dtypes == df.dtypes).all()
    others = [c for c in df.columns if c not in LAB]
    pd.testing.assert_frame_equal(marked[others], df[others])
    for column in LAB:
        assert (marked[column].isna() == df[column].isna()).all()
        assert np.nanmax(np.abs(marked[column] - df[column])) <= 0.1 + 1e-9
        tenths = marked[column].dropna() * 10
        assert np.allclose(tenths, np.round(tenths), rtol=0, atol=1e-6)
    assert (marked["hb"] != df["hb"]).sum() > 50  # already at 0.1: about half need the nudge


def test_rows_repeating_a_subject_count_once() -> None:
    """RARE §4.11: all visits of a subject carry the same bit, so they are one piece of evidence."""
    visits = pd.concat([lab_table(40)] * 5, ignore_index=True)
    best = detect(mark(visits), key=KEY, candidates=[TRUE], subject_column="subject")[0]
    assert best.compared == 40 * 2 + lab_table(40)["ldl"].notna().sum()
    assert best.agreeing == best.compared


def test_a_wrong_key_identifies_no_one() -> None:
    """RARE §4.11: without the share stage's key no recipient can be named (nor framed)."""
    matches = trace(mark(lab_table(200)), key=b"some-other-secret")
    assert all(m.confidence < 0.99 for m in matches)


def test_missing_subject_column_is_refused_without_data_values() -> None:
    """RARE §4.11: the mark is keyed on the subject; no subject column, no mark and no trace."""
    df = lab_table(20).drop(columns=["subject"])
    for call in (lambda: embed(df, key=KEY, mark_id=TRUE, subject_column="subject"),
                 lambda: detect(df, key=KEY, candidates=[TRUE], subject_column="subject")):
        with pytest.raises(WatermarkError, match="subject column 'subject'") as caught:
            call()
        assert isinstance(caught.value, SeqlifeError) and caught.value.stage == "share"
        assert not any(str(v) in str(caught.value) for v in df["hb"].head(5))


def test_a_table_without_a_measurement_column_is_refused() -> None:
    """RARE §4.11: a delivery with nothing to carry the mark cannot be traced, so it is refused."""
    df = lab_table(20).drop(columns=LAB)
    with pytest.raises(WatermarkError, match="No column of the table can carry the watermark"):
        embed(df, key=KEY, mark_id=TRUE, subject_column="subject")
    with pytest.raises(WatermarkError, match=r"\['age'\] cannot carry"):
        embed(lab_table(20), key=KEY, mark_id=TRUE, subject_column="subject", columns=["age"])
    with pytest.raises(WatermarkError, match="None of the watermarked columns"):
        detect(df, key=KEY, candidates=[TRUE], subject_column="subject", columns=LAB)


subject_ids = st.lists(st.text("0123456789abcdef", min_size=6, max_size=6), min_size=20,
                       max_size=60, unique=True).map(lambda ids: [f"S-{i}" for i in ids])
lab_values = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@FAST
@given(st.data())
def test_the_mark_survives_any_permutation(data: st.DataObject) -> None:
    """RARE §4.11: the mark of any float table is found after an arbitrary row permutation."""
    ids = data.draw(subject_ids)
    n = len(ids)
    df = pd.DataFrame({"subject": ids,
                       "a": data.draw(st.lists(lab_values, min_size=n, max_size=n)),
                       "b": data.draw(st.lists(lab_values, min_size=n, max_size=n))})
    marked = embed(df, key=KEY, mark_id=TRUE, subject_column="subject", columns=["a", "b"])
    assert (np.abs(marked[["a", "b"]] - df[["a", "b"]]) <= 0.1 + 1e-9).all().all()
    order = data.draw(st.permutations(range(n)))
    leaked = marked.iloc[order]
    matches = detect(leaked, key=KEY, candidates=[OTHERS[0], TRUE, OTHERS[1]],
                     subject_column="subject", columns=["a", "b"])
    best = matches[0]
    assert best.mark_id == TRUE
    assert best.agreeing == best.compared == 2 * n
    assert best.confidence > 0.999
    assert math.isclose(best.confidence, 1 - 0.5 ** (2 * n), rel_tol=1e-9)
