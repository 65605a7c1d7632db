"""Generalisation hierarchies as data: for each quasi-identifier, a chain of ever coarser levels.

Level 0 is the value itself and the last level is ``"*"`` (fully suppressed). Every level maps the
*raw* value (not the previous level's output), value by value: the search in
:mod:`seqlife.deidentify.kanon` applies a level to the distinct values of a column only, and the
lattice search relies on each level being a coarsening of the one below (two values equal at level
i stay equal at level i+1). The builders here guarantee both; a hand-made :class:`Hierarchy` must
keep them too.

Missing values stay missing at every level but the top: a missing value is a class of its own,
and is suppressed like any other class smaller than k; at the top (``*``) it joins everyone.

Builders follow GB/T 39725 Table 6 and §10.2 c: age bands ``<25, 25-29, …, 85-89, >89`` (``>89``
never subdivided), postcodes with low digits zeroed (100080 -> 100000), dates to year-month or
year, areas up the administrative tree county -> city -> province. The policy file
``data_catalog/policies/deidentify_hierarchies.yaml`` names a builder and its parameters for each
quasi-identifier; :func:`load_hierarchies` turns it into :class:`Hierarchy` objects.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from seqlife.deidentify.errors import DeidentificationError
from seqlife.exceptions import PolicyFileError
from seqlife.policy import DATA_CATALOG, POLICY_DIR, Policy, load_policy

Level = Callable[[pd.Series], pd.Series]

SUPPRESSED = "*"
#: GB/T 39725 Table 6 age bands: <25, 25-29, ..., 85-89, >89.
TABLE6_AGE_EDGES: tuple[int, ...] = tuple(range(25, 95, 5))
HIERARCHY_STAGE = "deidentify_hierarchies"
HIERARCHY_FILE = POLICY_DIR / f"{HIERARCHY_STAGE}.yaml"
REQUIRED_HIERARCHIES = frozenset({"age", "postcode", "date", "area", "sex", "interval", "icd10",
                                  "suppress"})


@dataclass(frozen=True)
class Hierarchy:
    """A quasi-identifier's generalisation levels, finest (identity) to coarsest (``"*"``)."""

    name: str
    levels: tuple[Level, ...]
    #: Optional human-readable name of each level, for reports ("5-year band", "year", ...).
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.levels) < 2:
            raise DeidentificationError(
                f"Hierarchy '{self.name}' needs at least two levels (the value and '*').")
        if self.labels and len(self.labels) != len(self.levels):
            raise DeidentificationError(
                f"Hierarchy '{self.name}' has {len(self.labels)} labels for "
                f"{len(self.levels)} levels.")

    @property
    def height(self) -> int:
        """Number of generalisation steps above the raw value (levels - 1)."""
        return len(self.levels) - 1

    def apply(self, series: pd.Series, level: int) -> pd.Series:
        """The column generalised to ``level`` (0 = unchanged)."""
        if not 0 <= level <= self.height:
            raise DeidentificationError(
                f"Hierarchy '{self.name}' has levels 0..{self.height}; level {level} asked.")
        return self.levels[level](series)


def _identity(series: pd.Series) -> pd.Series:
    return series


def by_value(mapper: Callable[[pd.Series], Sequence[Any] | pd.Series | np.ndarray]) -> Level:
    """Turn a function of the distinct non-missing values into a column level.

    ``mapper`` receives a Series of distinct non-missing values and returns one generalised value
    per element; the result is spread back over the column, and missing values stay missing. This
    keeps every builder O(distinct values) however long the column is.
    """

    def level(series: pd.Series) -> pd.Series:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        mapped = np.asarray(mapper(pd.Series(uniques)), dtype=object)
        if len(mapped) != len(uniques):
            raise DeidentificationError("A hierarchy level must return one value per input value.")
        out = np.empty(len(series), dtype=object)
        present = codes >= 0
        out[present] = mapped[codes[present]]
        out[~present] = None
        return pd.Series(out, index=series.index, name=series.name)

    return level


def SUPPRESS(series: pd.Series) -> pd.Series:  # noqa: N802 - a level, named like the others
    """The top level: every value, missing ones too, is ``*`` — nothing is known of anyone, so a
    blank and a suppressed value must not form two classes."""
    return pd.Series([SUPPRESSED] * len(series), index=series.index, name=series.name,
                     dtype=object)


# --- age (Table 6; §10.2 c 2) ---------------------------------------------------------------


def _band_labels(edges: Sequence[int]) -> Callable[[pd.Series], list[str]]:
    """``<e0``, ``e0-(e1-1)``, ..., ``>(eN-1)`` for whole-year ages."""
    edges = tuple(int(e) for e in edges)
    labels = [f"<{edges[0]}"] + [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])]
    labels.append(f">{edges[-1] - 1}")
    bounds = np.asarray(edges, dtype=float)

    def mapper(values: pd.Series) -> list[str]:
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        slot = np.searchsorted(bounds, np.floor(numeric), side="right")
        return [SUPPRESSED if np.isnan(v) else labels[s] for v, s in zip(numeric, slot)]

    return mapper


def age_bands(edges: Sequence[int] = TABLE6_AGE_EDGES, name: str = "age") -> Hierarchy:
    """Exact age -> bands on ``edges`` -> twice as wide -> four times as wide -> ``*``.

    With the Table 6 edges (25, 30, ..., 90): ``<25, 25-29, …, 85-89, >89``, then
    ``<30, 30-39, …, 80-89, >89``, then ``<30, 30-49, 50-69, 70-89, >89``. The wider levels keep
    every other edge counted from the top, so the top band ``>89`` is never subdivided and every
    band is a union of bands of the level below.
    """
    edges = tuple(sorted(int(e) for e in edges))
    if len(edges) < 2:
        raise DeidentificationError("age_bands needs at least two band edges.")
    ten, twenty = edges[::-1][::2][::-1], edges[::-1][::4][::-1]
    return Hierarchy(
        name,
        (by_value(_top_coded(edges[-1])), by_value(_band_labels(edges)),
         by_value(_band_labels(ten)), by_value(_band_labels(twenty)), SUPPRESS),
        (name, "band", "2 bands", "4 bands", SUPPRESSED),
    )


def _top_coded(top: int) -> Callable[[pd.Series], list[Any]]:
    """The exact value (as text, so one column holds both) below ``top``; ``>(top-1)`` from it
    on: even the finest level never shows an age over 89 (Table 6: the top band is never
    subdivided)."""
    label = f">{top - 1}"

    def mapper(values: pd.Series) -> list[Any]:
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return [SUPPRESSED if np.isnan(n) else label if n >= top
                else str(int(n)) if float(n).is_integer() else str(n) for n in numeric]

    return mapper


# --- postcode (§10.2 c 1; Table 6) ----------------------------------------------------------


def _normalise_digits(value: Any, width: int) -> str | None:
    """A postcode as exactly ``width`` digits, or None when it is not one."""
    if isinstance(value, (int, np.integer)):
        text = str(int(value)).zfill(width)
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value)).zfill(width)
    else:
        text = str(value).strip()
    return text if len(text) == width and text.isdigit() else None


def _zero_low_digits(zeroed: int, width: int) -> Callable[[pd.Series], list[str]]:
    def mapper(values: pd.Series) -> list[str]:
        out = []
        for value in values:
            text = _normalise_digits(value, width)
            out.append(SUPPRESSED if text is None else text[: width - zeroed] + "0" * zeroed)
        return out

    return mapper


def digits_zeroed(width: int = 6) -> Hierarchy:
    """Level i zeroes the last i digits (100080 -> 100000 at level 2); level ``width`` is ``*``.

    A value that is not ``width`` digits (including an already suppressed ``*``) becomes ``*`` at
    every level above 0.
    """
    if width < 1:
        raise DeidentificationError("digits_zeroed needs a width of at least 1.")
    levels = [_identity] + [by_value(_zero_low_digits(i, width)) for i in range(1, width)]
    labels = ["postcode"] + [f"{width - i} digits" for i in range(1, width)]
    return Hierarchy("postcode", tuple(levels) + (SUPPRESS,), tuple(labels) + (SUPPRESSED,))


# --- dates (§10.2 c 3; Table 6) ---------------------------------------------------------------


def _date_format(fmt: str) -> Callable[[pd.Series], list[str]]:
    def mapper(values: pd.Series) -> list[str]:
        parsed = pd.to_datetime(values, errors="coerce")
        text = parsed.dt.strftime(fmt)
        return [SUPPRESSED if pd.isna(t) else t for t in text]

    return mapper


def date_levels() -> Hierarchy:
    """Day -> year-month (``2018-04``) -> year (``2018``) -> ``*`` (Table 6: year or year-month)."""
    return Hierarchy(
        "date",
        (_identity, by_value(_date_format("%Y-%m")), by_value(_date_format("%Y")), SUPPRESS),
        ("day", "year-month", "year", SUPPRESSED),
    )


# --- categorical trees (§10.2 c 1) ------------------------------------------------------------


def categorical_tree(mapping_levels: Sequence[Mapping[Any, Any]], name: str = "category",
                     labels: Sequence[str] = ()) -> Hierarchy:
    """Levels from explicit mappings: ``mapping_levels[i]`` maps a raw value to its level-(i+1)
    value (e.g. county -> city, then county -> province); ``*`` is added on top.

    The mappings must nest: two values that share a parent at one level share it at every level
    above, or the lattice search would lose its monotonicity; this is checked here. A value
    missing from a mapping becomes ``*`` from that level on.
    """
    mappings = [dict(m) for m in mapping_levels]
    for lower, upper in zip(mappings, mappings[1:]):
        parent_of: dict[Any, Any] = {}
        for value, parent in lower.items():
            coarser = upper.get(value, SUPPRESSED)
            if parent_of.setdefault(parent, coarser) != coarser:
                raise DeidentificationError(
                    f"Hierarchy '{name}': the levels do not nest (one parent has two different "
                    "parents one level up); fix the reference table.")
    levels: list[Level] = [_identity]
    for mapping in mappings:
        levels.append(by_value(lambda values, m=mapping: [m.get(v, SUPPRESSED) for v in values]))
    levels.append(SUPPRESS)
    level_labels = tuple(labels) if labels else ()
    return Hierarchy(name, tuple(levels), level_labels)


def region_hierarchy(regions_csv: Path | str, column: str = "county") -> Hierarchy:
    """County -> city -> province -> ``*`` from a ``province,city,county,...`` reference table.

    Values that are already a city or a province name are accepted too (they stay put until
    their own level). A county name that occurs under two cities is generalised to the province
    they share at the city level, or to ``*`` if they do not share one.
    """
    with Path(regions_csv).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"province", "city", "county"} <= set(rows[0]):
        raise PolicyFileError(f"{regions_csv}: needs the columns province, city, county.")
    city_province = {r["city"]: r["province"] for r in rows}
    county_cities: dict[str, set[str]] = {}
    for r in rows:
        county_cities.setdefault(r["county"], set()).add(r["city"])
    to_city: dict[str, str] = {p: p for p in city_province.values()}
    to_city.update({c: c for c in city_province})
    to_province: dict[str, str] = {p: p for p in city_province.values()}
    to_province.update(city_province)
    for county, cities in county_cities.items():
        provinces = {city_province[c] for c in cities}
        province = provinces.pop() if len(provinces) == 1 else SUPPRESSED
        to_city[county] = next(iter(cities)) if len(cities) == 1 else province
        to_province[county] = province
    return categorical_tree([to_city, to_province], name=column,
                            labels=(column, "city", "province", SUPPRESSED))


def suppress_only(name: str = "value") -> Hierarchy:
    """The value, or ``*``: for attributes with nothing in between (sex)."""
    return Hierarchy(name, (_identity, SUPPRESS), (name, SUPPRESSED))


# --- the policy file ----------------------------------------------------------------------------


def _validate_spec(name: str, spec: Any, source: str, data_catalog: Path) -> None:
    """Check one rule's value before any hierarchy is built (file and rule named on error)."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise PolicyFileError(
            f"{source}: rule '{name}' value needs a 'type' (one of {sorted(BUILDERS)}).")
    kind = spec["type"]
    allowed = BUILDERS.get(kind)
    if allowed is None:
        raise PolicyFileError(
            f"{source}: rule '{name}' has unknown hierarchy type '{kind}' "
            f"(known: {sorted(BUILDERS)}).")
    unknown = set(spec) - allowed - {"type"}
    if unknown:
        raise PolicyFileError(
            f"{source}: rule '{name}' has unknown parameter(s) {sorted(unknown)} for type "
            f"'{kind}' (allowed: {sorted(allowed)}).")
    if kind in ("age_bands", "bands") and "edges" in spec:
        edges = spec["edges"]
        if (not isinstance(edges, list) or len(edges) < 2
                or not all(isinstance(e, int) for e in edges)):
            raise PolicyFileError(f"{source}: rule '{name}' edges must be a list of whole years.")
    if kind == "digits_zeroed" and not isinstance(spec.get("width", 6), int):
        raise PolicyFileError(f"{source}: rule '{name}' width must be a whole number.")
    if kind in ("region_tree", "icd10_tree"):
        reference = data_catalog / str(spec.get("reference", "reference/regions.csv"))
        if not reference.is_file():
            raise PolicyFileError(
                f"{source}: rule '{name}' names the reference table {reference}, which does "
                "not exist.")


def _build(name: str, spec: Mapping[str, Any], data_catalog: Path) -> Hierarchy:
    kind = spec["type"]
    if kind in ("age_bands", "bands"):
        hierarchy = age_bands(spec.get("edges", TABLE6_AGE_EDGES), name)
    elif kind == "digits_zeroed":
        hierarchy = digits_zeroed(int(spec.get("width", 6)))
    elif kind == "date_levels":
        hierarchy = date_levels()
    elif kind == "region_tree":
        reference = data_catalog / str(spec.get("reference", "reference/regions.csv"))
        hierarchy = region_hierarchy(reference, column=str(spec.get("column", name)))
    elif kind == "icd10_tree":
        from seqlife.deidentify.icd10 import icd10_hierarchy, load_icd10_blocks

        hierarchy = icd10_hierarchy(load_icd10_blocks(data_catalog / str(spec["reference"])), name)
    else:  # suppress_only
        hierarchy = suppress_only(name)
    return Hierarchy(name, hierarchy.levels, hierarchy.labels)


#: Hierarchy types a policy file may name, with the parameters each accepts.
BUILDERS: dict[str, set[str]] = {
    "age_bands": {"edges"},
    "bands": {"edges"},
    "icd10_tree": {"reference"},
    "digits_zeroed": {"width"},
    "date_levels": set(),
    "region_tree": {"reference", "column"},
    "suppress_only": set(),
}


def hierarchies_from_policy(policy: Policy, data_catalog: Path = DATA_CATALOG
                            ) -> dict[str, Hierarchy]:
    """One :class:`Hierarchy` per rule of a loaded hierarchy policy, keyed by rule name."""
    for name, rule in policy.rules.items():
        _validate_spec(name, rule.value, policy.source, data_catalog)
    return {name: _build(name, rule.value, data_catalog) for name, rule in policy.rules.items()}


def load_hierarchies(path: Path | str = HIERARCHY_FILE,
                     required: frozenset[str] = REQUIRED_HIERARCHIES) -> dict[str, Hierarchy]:
    """Read ``deidentify_hierarchies.yaml`` (version/stage/rules) into hierarchies by column name.

    The file's stage must equal its stem; reference tables named in it are resolved against the
    ``data_catalog`` folder that holds the policy folder.
    """
    path = Path(path)
    policy = load_policy(path.stem, required, path.parent)
    return hierarchies_from_policy(policy, path.parent.parent)
