"""Diagnosis codes as a generalisation hierarchy: ICD-10 code -> category -> block -> chapter -> ``*``.

GB/T 39725 §11.4.2.4: a diagnosis held by only a few patients identifies them, so the k-anonymity
search must be able to coarsen it step by step instead of suppressing it outright. The steps
follow the WHO ICD-10 structure, read from ``data_catalog/reference/icd10_blocks.csv``
(``level,first,last,title``; ``level`` is ``chapter`` or ``block``, ``first``/``last`` an
inclusive range of 3-character categories).

Codes of the Chinese clinical edition (``C34.101``, ``E11.900x001``) carry longer extensions
after the dot; only the category matters above level 0, so they need no table of their own.
A category in no block (the block table has gaps) goes to its chapter at the block level, and a
category in no chapter (``D49``, ``U99``) to ``*`` there, so the levels always nest.
"""

from __future__ import annotations

import bisect
import csv
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd

from seqlife.deidentify.hierarchy import SUPPRESS, SUPPRESSED, Hierarchy, by_value
from seqlife.exceptions import PolicyFileError

#: A 3-character category, then optionally ``.`` and an extension of any length, then
#: optionally a dagger (``†`` or ``+``) or asterisk mark of the dual classification.
_CODE = re.compile(r"([A-Za-z][0-9]{2})(?:\.[0-9A-Za-z]+)?[†+*]?", re.ASCII)
_CATEGORY = re.compile(r"[A-Z][0-9]{2}", re.ASCII)
_COLUMNS = ("level", "first", "last", "title")
LEVEL_LABELS = ("code", "category", "block", "chapter", SUPPRESSED)


@dataclass(frozen=True)
class Icd10Range:
    """An inclusive range of 3-character categories (a chapter or a block) and its title."""

    first: str
    last: str
    title: str

    @property
    def label(self) -> str:
        """``E10-E14``: the value a generalised diagnosis takes at this range's level."""
        return f"{self.first}-{self.last}"

    def __contains__(self, category: object) -> bool:
        return isinstance(category, str) and self.first <= category <= self.last


def _find(ranges: tuple[Icd10Range, ...], category: str) -> Icd10Range | None:
    """The range holding ``category`` among sorted, non-overlapping ``ranges``."""
    at = bisect.bisect_right(ranges, category, key=lambda r: r.first) - 1
    return ranges[at] if at >= 0 and category in ranges[at] else None


@dataclass(frozen=True)
class Icd10Tree:
    """Chapters and blocks, each sorted by first category and free of overlaps."""

    chapters: tuple[Icd10Range, ...]
    blocks: tuple[Icd10Range, ...]

    def chapter_of(self, category: str) -> Icd10Range | None:
        """The chapter holding a 3-character category, or None."""
        return _find(self.chapters, category)

    def block_of(self, category: str) -> Icd10Range | None:
        """The block holding a 3-character category, or None (blocks need not cover all)."""
        return _find(self.blocks, category)


def category_of(code: str) -> str | None:
    """``E11`` for ``e11.900x001``; None when the value does not look like an ICD-10 code."""
    match = _CODE.fullmatch(code.strip()) if isinstance(code, str) else None
    return match.group(1).upper() if match else None


def _non_overlapping(ranges: list[tuple[int, Icd10Range]], kind: str, source: Path) -> None:
    """Refuse the table if two sorted ranges of one kind share a category."""
    for (row_a, a), (row_b, b) in pairwise(ranges):
        if b.first <= a.last:
            raise PolicyFileError(
                f"{source}: row {row_b}: {kind} {b.label} overlaps {kind} {a.label} of row "
                f"{row_a}; ranges of one level must not share a category.")


def load_icd10_blocks(path: Path) -> Icd10Tree:
    """Read and check the chapter/block table (row numbers count the header as row 1).

    Refused with :class:`PolicyFileError`: missing columns, an unknown level, a range whose ends
    are not categories or run backwards, overlapping chapters or blocks, a block not inside
    exactly one chapter, or a table without chapters.
    """
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != _COLUMNS:
            raise PolicyFileError(f"{path}: needs exactly the columns {', '.join(_COLUMNS)}.")
        parsed: dict[str, list[tuple[int, Icd10Range]]] = {"chapter": [], "block": []}
        for row_number, row in enumerate(reader, start=2):
            level, first, last, title = (str(row[c] or "").strip() for c in _COLUMNS)
            if level not in parsed:
                raise PolicyFileError(
                    f"{path}: row {row_number}: unknown level '{level}' (chapter or block).")
            if not (_CATEGORY.fullmatch(first) and _CATEGORY.fullmatch(last)) or first > last:
                raise PolicyFileError(
                    f"{path}: row {row_number}: '{first}-{last}' is not a range of ICD-10 "
                    "categories (letter and two digits, first <= last).")
            if not title:
                raise PolicyFileError(f"{path}: row {row_number}: the title is empty.")
            parsed[level].append((row_number, Icd10Range(first, last, title)))
    chapters = sorted(parsed["chapter"], key=lambda item: item[1].first)
    blocks = sorted(parsed["block"], key=lambda item: item[1].first)
    if not chapters:
        raise PolicyFileError(f"{path}: has no chapter rows.")
    _non_overlapping(chapters, "chapter", path)
    _non_overlapping(blocks, "block", path)
    tree = Icd10Tree(tuple(r for _, r in chapters), tuple(r for _, r in blocks))
    for row_number, block in blocks:
        chapter = tree.chapter_of(block.first)
        if chapter is None or block.last not in chapter:
            raise PolicyFileError(
                f"{path}: row {row_number}: block {block.label} does not lie inside one chapter.")
    return tree


def _code(series: pd.Series) -> pd.Series:
    return series


def icd10_hierarchy(tree: Icd10Tree, name: str = "diagnosis") -> Hierarchy:
    """Code as given -> category -> block -> chapter -> ``*``.

    Values that are not ICD-10-shaped (free text, empty strings) become ``*`` from level 1 on;
    missing values stay missing. Each level is a function of the category alone, and a block
    lies inside one chapter, so two values equal at one level stay equal at the next.
    """

    def category(value: Any) -> str:
        return category_of(value) or SUPPRESSED

    def chapter(value: Any) -> str:
        found = category_of(value)
        range_ = tree.chapter_of(found) if found else None
        return range_.label if range_ else SUPPRESSED

    def block(value: Any) -> str:
        found = category_of(value)
        range_ = tree.block_of(found) if found else None
        return range_.label if range_ else chapter(value)

    levels = (_code,) + tuple(by_value(lambda values, f=f: [f(v) for v in values])
                              for f in (category, block, chapter)) + (SUPPRESS,)
    return Hierarchy(name, levels, LEVEL_LABELS)
