"""ICD-10 diagnosis hierarchy (GB/T 39725 §11.4.2.4): the shipped chapter/block table, the levels
code -> category -> block -> chapter -> ``*``, their nesting, and refusal of malformed tables."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlife.deidentify.hierarchy import SUPPRESSED, Hierarchy
from seqlife.deidentify.icd10 import Icd10Tree, category_of, icd10_hierarchy, load_icd10_blocks
from seqlife.deidentify.kanon import anonymise
from seqlife.exceptions import PolicyFileError
from seqlife.policy import DATA_CATALOG

BLOCKS_CSV = DATA_CATALOG / "reference" / "icd10_blocks.csv"
WHO_CHAPTERS = (
    "A00-B99", "C00-D48", "D50-D89", "E00-E90", "F00-F99", "G00-G99", "H00-H59", "H60-H95",
    "I00-I99", "J00-J99", "K00-K93", "L00-L99", "M00-M99", "N00-N99", "O00-O99", "P00-P96",
    "Q00-Q99", "R00-R99", "S00-T98", "U00-U85", "V01-Y98", "Z00-Z99",
)


@pytest.fixture(scope="module")
def tree() -> Icd10Tree:
    return load_icd10_blocks(BLOCKS_CSV)


@pytest.fixture(scope="module")
def diagnosis(tree: Icd10Tree) -> Hierarchy:
    return icd10_hierarchy(tree)


def levels_of(hierarchy: Hierarchy, values: list) -> list[list]:
    """Row r, column i: value r generalised to level i (missing as None, whatever the dtype)."""
    series = pd.Series(values, dtype=object)
    columns = [[None if pd.isna(v) else v for v in hierarchy.apply(series, i)]
               for i in range(hierarchy.height + 1)]
    return [list(row) for row in zip(*columns)]


def assert_nested(hierarchy: Hierarchy, values: list) -> None:
    """Equal at level i implies equal at level i+1, for every pair of values."""
    rows = levels_of(hierarchy, values)
    for i in range(hierarchy.height):
        parent: dict = {}
        for row in rows:
            assert parent.setdefault(row[i], row[i + 1]) == row[i + 1], (row, i)


# --- the shipped table ---------------------------------------------------------------------------


def test_table_has_every_who_chapter_and_the_blocks(tree: Icd10Tree) -> None:
    assert tuple(sorted(c.label for c in tree.chapters)) == tuple(sorted(WHO_CHAPTERS))
    assert len(tree.blocks) > 250
    labels = {b.label: b.title for b in tree.blocks}
    assert labels["E10-E14"] == "Diabetes mellitus"
    assert labels["I10-I15"] == "Hypertensive diseases"
    assert {"C30-C39", "C50-C50", "C97-C97", "D37-D48", "U00-U49", "U82-U85"} <= set(labels)


def test_blocks_nest_in_one_chapter_and_do_not_overlap(tree: Icd10Tree) -> None:
    for block in tree.blocks:
        holders = [c for c in tree.chapters if block.first in c and block.last in c]
        assert len(holders) == 1, block
    for ranges in (tree.chapters, tree.blocks):
        for a, b in pairwise(ranges):
            assert a.last < b.first, (a, b)


# --- levels --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("E11.9", ["E11.9", "E11", "E10-E14", "E00-E90", "*"]),
    ("C34.101", ["C34.101", "C34", "C30-C39", "C00-D48", "*"]),
    ("E11.900x001", ["E11.900x001", "E11", "E10-E14", "E00-E90", "*"]),
    ("I10", ["I10", "I10", "I10-I15", "I00-I99", "*"]),
    ("U07.1", ["U07.1", "U07", "U00-U49", "U00-U85", "*"]),
    ("e11.9", ["e11.9", "E11", "E10-E14", "E00-E90", "*"]),
    ("C50.9", ["C50.9", "C50", "C50-C50", "C00-D48", "*"]),
    ("U50", ["U50", "U50", "U00-U85", "U00-U85", "*"]),      # in a chapter, in no block
    ("D49.9", ["D49.9", "D49", "*", "*", "*"]),              # in no chapter (ICD-10-CM)
    ("肺癌", ["肺癌", "*", "*", "*", "*"]),
    ("", ["", "*", "*", "*", "*"]),
    ("E11-E14", ["E11-E14", "*", "*", "*", "*"]),
    (None, [None, None, None, None, "*"]),  # blank until the top, where everyone is *
])
def test_levels(diagnosis: Hierarchy, value: object, expected: list) -> None:
    assert levels_of(diagnosis, [value]) == [expected]


def test_hierarchy_shape(diagnosis: Hierarchy) -> None:
    assert diagnosis.name == "diagnosis"
    assert diagnosis.labels == ("code", "category", "block", "chapter", SUPPRESSED)
    assert icd10_hierarchy(load_icd10_blocks(BLOCKS_CSV), name="dx").name == "dx"


def test_missing_stays_missing_and_index_kept(diagnosis: Hierarchy) -> None:
    series = pd.Series(["E11.9", float("nan"), "I10"], index=[7, 8, 9], dtype=object)
    out = diagnosis.apply(series, 2)
    assert out.index.tolist() == [7, 8, 9]
    assert out.isna().tolist() == [False, True, False]
    assert out[[7, 9]].tolist() == ["E10-E14", "I10-I15"]


@pytest.mark.parametrize(("code", "category"), [
    ("E11.9", "E11"), (" c34.101 ", "C34"), ("G63.2*", "G63"), ("E11.4†", "E11"), ("B20", "B20"),
    ("E119", None), ("E11.", None), ("11.9", None), ("EE1.9", None), ("糖尿病", None), ("", None),
])
def test_category_of(code: str, category: str | None) -> None:
    assert category_of(code) == category


# --- nesting -------------------------------------------------------------------------------------


def test_nesting_on_reference_codes(diagnosis: Hierarchy) -> None:
    codes = pd.read_csv(DATA_CATALOG / "reference" / "icd10.csv", dtype=str)["code"].tolist()
    assert_nested(diagnosis, codes + ["肺癌", "", None, "E10-E14", SUPPRESSED])


icd_shaped = st.builds(
    lambda letter, digits, ext: f"{letter}{digits:02d}{ext}",
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
    st.integers(0, 99),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9A-Za-z]{1,8}", fullmatch=True)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(icd_shaped, st.text(max_size=6), st.none()), min_size=1, max_size=60))
def test_nesting_property(tree: Icd10Tree, values: list) -> None:
    assert_nested(icd10_hierarchy(tree), values)


def test_kanon_search_accepts_the_hierarchy(diagnosis: Hierarchy) -> None:
    """The lattice search checks nesting itself; rare codes climb until k = 5 holds."""
    codes = pd.read_csv(DATA_CATALOG / "reference" / "icd10.csv", dtype=str)["code"]
    rng = np.random.default_rng(7)
    weights = 1.0 / np.arange(1, len(codes) + 1)
    drawn = rng.choice(codes.to_numpy(), size=400, p=weights / weights.sum())
    df = pd.DataFrame({"diagnosis": list(drawn) + ["肺癌", None]})
    result = anonymise(df, ["diagnosis"], {"diagnosis": diagnosis}, k=5, max_suppression=0.05)
    assert result.k_achieved >= 5
    assert 1 <= result.levels["diagnosis"] < diagnosis.height


# --- malformed tables ----------------------------------------------------------------------------

GOOD = [
    "chapter,E00,E90,Endocrine",
    "block,E10,E14,Diabetes mellitus",
]


@pytest.mark.parametrize(("rows", "row", "words"), [
    (GOOD + ["block,E20,E1,Bad"], 4, "not a range"),
    (GOOD + ["block,E20,E15,Backwards"], 4, "not a range"),
    (GOOD + ["group,E20,E35,Other glands"], 4, "unknown level"),
    (GOOD + ["block,E80,F05,Straddles"], 4, "inside one chapter"),
    (GOOD + ["block,G10,G14,No chapter"], 4, "inside one chapter"),
    (GOOD + ["block,E12,E16,Overlap"], 4, "overlaps"),
    (["block,E12,E16,Overlap"] + GOOD, 2, "overlaps"),
    (GOOD + ["chapter,E50,F10,Overlap"], 4, "overlaps"),
    (GOOD + ["block,E20,E35,"], 4, "title"),
])
def test_malformed_tables_are_refused(tmp_path: Path, rows: list[str], row: int,
                                      words: str) -> None:
    path = tmp_path / "blocks.csv"
    path.write_text("\n".join(["level,first,last,title", *rows]) + "\n", encoding="utf-8")
    with pytest.raises(PolicyFileError) as caught:
        load_icd10_blocks(path)
    assert str(path) in str(caught.value)
    assert f"row {row}:" in str(caught.value)
    assert words in str(caught.value)


@pytest.mark.parametrize("text", ["code,title\nE11,Diabetes\n", "level,first,last,title\n"])
def test_wrong_columns_or_no_chapters_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "blocks.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyFileError, match="blocks.csv"):
        load_icd10_blocks(path)
