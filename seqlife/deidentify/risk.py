"""Re-identification test on a de-identified table (GB/T 39725 §11.4.2.4; RARE §4.5).

Risk metrics follow the usual attacker models (El Emam; ARX's risk analysis), computed on the
equivalence classes of the quasi-identifiers (rows sharing every quasi-identifier value, a missing
value counting as a value):

* **prosecutor** — the attacker knows the target is in the release: a record in a class of size f
  is re-identified with probability 1/f. ``prosecutor_max`` is the worst record,
  ``prosecutor_avg`` the mean over records (= classes / n).
* **journalist** — the attacker does not know whether the target is in the release and matches
  against a population register: a class of f released records that matches F people of the
  population is at risk 1/F. ``population`` is that register, its quasi-identifiers generalised
  like the release; when it is absent the release is its own population (F = f), which makes
  ``journalist_max`` equal ``prosecutor_max`` (the conservative choice).
* **marketer** — the expected share of records an attacker re-identifies by matching everyone:
  (1/n) Σ f/F over classes, i.e. classes / n without a population table.
* **linkage** — the attack on the raw table: every raw record's attributes the attacker knows
  (``attack_columns``, the quasi-identifiers by default) are generalised exactly as the release
  was (``raw_generalise``) and matched against the release. A raw record matching m released
  records, its own among them, is re-identified with probability 1/m: ``linkage_reidentified`` is
  the expected share of raw records the attacker re-identifies correctly (the raw and released
  tables share their row index, which is how the test knows which released row is whose);
  ``linkage_unique`` is the share of raw records that match exactly one released record, right or
  wrong.

No metric ever carries a data value; the report holds shares and probabilities only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from seqlife.deidentify.errors import DeidentificationError, ReidentificationRiskTooHigh
from seqlife.deidentify.kanon import people_per_class


@dataclass(frozen=True)
class RiskReport:
    """Re-identification risk of one release; all values are shares or probabilities in [0, 1]."""

    prosecutor_max: float
    prosecutor_avg: float
    records_at_risk: float       # share of records in classes smaller than threshold_class
    uniqueness: float            # share of records alone in their class
    journalist_max: float        # max 1/F, F = matching people in the population (or the sample)
    marketer: float              # expected share re-identified = (1/n) sum f/F (classes / n)
    linkage_reidentified: float  # expected share of raw records correctly re-identified
    linkage_unique: float        # share of raw records matching exactly one released record
    thresholds: dict             # parameters the report was computed with

    def metrics(self) -> dict[str, float]:
        """Every metric by name (what :func:`check` compares with its limits)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "thresholds"}


def _joint_keys(frames: Sequence[pd.DataFrame], qis: Sequence[str]) -> list[np.ndarray]:
    """One int64 per row, equal across ``frames`` exactly when every quasi-identifier is equal."""
    lengths = [len(f) for f in frames]
    total = sum(lengths)
    key = np.zeros(total, dtype=np.int64)
    card = 1
    for q in qis:
        missing = [i for i, f in enumerate(frames) if q not in f.columns]
        if missing:
            raise DeidentificationError(
                f"Quasi-identifier column '{q}' is missing from a table given to the "
                "re-identification test.")
        parts = [f[q].reset_index(drop=True) for f in frames]
        if len({str(p.dtype) for p in parts}) > 1:  # e.g. str vs object: compare as objects
            parts = [pd.Series(p.to_numpy(dtype=object)) for p in parts]
        column = pd.concat(parts, ignore_index=True)
        codes, uniques = pd.factorize(column, use_na_sentinel=False)
        c = max(len(uniques), 1)
        if card * c >= 1 << 62:
            dense, u = pd.factorize(key)
            key, card = dense.astype(np.int64), max(len(u), 1)
        key = key * c + codes
        card *= c
    return np.split(key, np.cumsum(lengths)[:-1])


def assess(deidentified: pd.DataFrame, quasi_identifiers: list[str],
           raw: pd.DataFrame | None = None,
           raw_generalise: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
           population: pd.DataFrame | None = None, threshold_class: int = 5,
           attack_columns: Sequence[str] | None = None,
           attacked: pd.DataFrame | None = None, subject: str | None = None) -> RiskReport:
    """Compute the re-identification metrics of a release.

    Args:
        deidentified: the released table.
        quasi_identifiers: the columns an attacker may know.
        raw: the table before de-identification, for the linkage attack (NaN when absent).
        raw_generalise: generalises ``raw``'s quasi-identifiers as the release was (identity if
            None: the raw values are matched as they are).
        population: a register of the population, quasi-identifiers generalised like the release,
            for the journalist and marketer risks (the release itself when absent).
        threshold_class: classes smaller than this count as at risk (k of the policy).
        attack_columns: what the attacker matches on in the linkage attack (the
            quasi-identifiers when None).
        attacked: the release as the attacker matches it (same rows as ``deidentified``; dates
            at the precision the attacker knows them); ``deidentified`` when None.
        subject: column identifying each row's person (in the release and in ``raw``): classes
            are then counted in people, so five rows of one patient are one person, not five.
    """
    qis = list(quasi_identifiers)
    frames = [deidentified]
    if population is not None:
        frames.append(population)
    keys = _joint_keys(frames, qis)
    released = keys[0]
    n = len(released)
    thresholds = {"threshold_class": threshold_class,
                  "population": "given" if population is not None else "sample"}
    linkage = unique = math.nan
    if raw is not None:
        raw_view = raw_generalise(raw) if raw_generalise is not None else raw
        linkage, unique = linkage_attack(deidentified if attacked is None else attacked, raw_view,
                                         list(attack_columns) if attack_columns is not None
                                         else qis, subject)
    if n == 0:
        return RiskReport(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, linkage, unique, thresholds)

    class_keys, inverse, sizes = np.unique(released, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if subject is not None:
        sizes = people_per_class(inverse, deidentified[subject], len(class_keys))
    per_record = sizes[inverse]
    population_sizes = sizes
    if population is not None and len(keys[-1]):
        pop_keys, pop_sizes = np.unique(keys[-1], return_counts=True)
        where = np.minimum(np.searchsorted(pop_keys, class_keys), len(pop_keys) - 1)
        matched = np.where(pop_keys[where] == class_keys, pop_sizes[where], 0)
        # A class cannot be smaller in the population than in the release drawn from it.
        population_sizes = np.maximum(matched, sizes)
    return RiskReport(
        prosecutor_max=float(1.0 / per_record.min()),
        prosecutor_avg=float(np.mean(1.0 / per_record)),
        records_at_risk=float(np.mean(per_record < threshold_class)),
        uniqueness=float(np.mean(per_record == 1)),
        journalist_max=float(1.0 / population_sizes.min()),
        marketer=float(np.mean((sizes / population_sizes)[inverse] / per_record)),
        linkage_reidentified=linkage,
        linkage_unique=unique,
        thresholds=thresholds,
    )


def linkage_attack(released: pd.DataFrame, raw: pd.DataFrame, columns: list[str],
                   subject: str | None = None) -> tuple[float, float]:
    """(expected share of raw records correctly re-identified, share matching exactly one).

    ``raw`` is the raw table with the attacker's attributes generalised as released. Without
    ``subject``, its index says which released row (same index label) each raw record became;
    with it, a raw record is re-identified when its person is among the people of the released
    rows it matches, with probability 1 / (people matched).
    """
    if len(raw) == 0:
        return 0.0, 0.0
    released_keys, raw_keys = _joint_keys([released, raw], columns)
    class_keys, inverse, sizes = np.unique(released_keys, return_inverse=True, return_counts=True)
    if len(class_keys) == 0:
        return 0.0, 0.0
    inverse = inverse.reshape(-1)
    where = np.minimum(np.searchsorted(class_keys, raw_keys), len(class_keys) - 1)
    found = class_keys[where] == raw_keys
    if subject is None:
        matches = np.where(found, sizes[where], 0)
        position = released.index.get_indexer(raw.index)  # -1: suppressed, not released
        is_own = (position >= 0) & (released_keys[np.maximum(position, 0)] == raw_keys)
    else:
        people_codes, uniques = pd.factorize(
            pd.concat([released[subject], raw[subject]], ignore_index=True),
            use_na_sentinel=False)
        width = max(len(uniques), 1)
        people = people_per_class(inverse, pd.Series(people_codes[:len(released)]),
                                  len(class_keys))
        matches = np.where(found, people[where], 0)
        released_pairs = np.unique(inverse.astype(np.int64) * width + people_codes[:len(released)])
        raw_pairs = where.astype(np.int64) * width + people_codes[len(released):]
        is_own = found & np.isin(raw_pairs, released_pairs)
    expected = np.where(is_own & (matches > 0), 1.0 / np.maximum(matches, 1), 0.0)
    return float(expected.mean()), float(np.mean(matches == 1))


def check(report: RiskReport, limits: Mapping[str, float]) -> None:
    """Raise :class:`ReidentificationRiskTooHigh` for the first metric (in ``limits`` order) that
    exceeds its limit; a value equal to its limit passes.

    Raises:
        ReidentificationRiskTooHigh: a metric is over its limit (GB/T 39725 §11.4.2.4).
        DeidentificationError: a limit names an unknown metric, or one that was not measured.
    """
    metrics = report.metrics()
    for name, limit in limits.items():
        if name not in metrics:
            raise DeidentificationError(
                f"Risk limit '{name}' names no metric of the re-identification test (known: "
                f"{sorted(metrics)}); fix risk_limits in the policy.")
        value = metrics[name]
        if math.isnan(value):
            raise DeidentificationError(
                f"Risk limit '{name}' is set but the metric was not measured (the linkage test "
                "needs the raw table); run the test with it.")
        if value > float(limit):
            raise ReidentificationRiskTooHigh(name, value, float(limit))
