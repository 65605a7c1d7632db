"""De-identify a clinical table: delete direct identifiers, replace the linkage ID by a keyed
surrogate, turn birth dates into ages, shift every date of a patient by one secret offset, keep
areas and employers only where they cover enough people, then generalise the quasi-identifiers to
k >= 5 and test the result for re-identification (GB/T 39725 §10.2, Table 6, App. G; RARE §4.5).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from seqlife.collect import subject_surrogate
from seqlife.deidentify.errors import DeidentificationError
from seqlife.deidentify.hierarchy import Hierarchy
from seqlife.deidentify.kanon import KAnonResult, anonymise
from seqlife.deidentify.risk import RiskReport, assess, check
from seqlife.policy import DATA_CATALOG, Policy, load_policy

REQUIRED_RULES = frozenset({
    "delete_identifiers", "linkage_identifier", "birth_date", "date_shift", "min_population",
    "employer_columns", "quasi_identifiers", "k", "max_suppression", "l_diversity", "risk_limits",
    "small_cells", "vcf_keep_meta", "code_index_role", "approver_role"})
REFERENCE = DATA_CATALOG / "reference"


def load_deidentify_policy() -> Policy:
    return load_policy("deidentify", REQUIRED_RULES)


# --- secrets-derived transforms ---------------------------------------------------------------


def date_offset(secret: bytes, subject_key: str, max_days: int) -> int:
    """A patient's secret date shift in [-max_days, max_days], never 0, stable for the secret."""
    digest = hmac.new(secret, f"date-shift:{subject_key}".encode(), hashlib.sha256).digest()
    magnitude = int.from_bytes(digest[:4], "big") % max_days + 1
    return magnitude if digest[4] & 1 else -magnitude


def shift_date(value: date | None, days: int) -> date | None:
    """Table 6: 2018-01-01 + 100 days = 2018-04-11; the same offset keeps every interval."""
    return None if value is None or pd.isna(value) else value + timedelta(days=days)


def age_at(birth: date | None, reference: date | None) -> int | None:
    """Whole years between birth and the reference date (GB/T 39725 Table 6: birth date -> age)."""
    if birth is None or reference is None or pd.isna(birth) or pd.isna(reference):
        return None
    return reference.year - birth.year - ((reference.month, reference.day) < (birth.month, birth.day))


# --- population rules (§10.2 c 1) ------------------------------------------------------------


@dataclass(frozen=True)
class Populations:
    """People per county, city and postcode prefix; synthetic figures shipped in data_catalog."""

    county: Mapping[str, int]
    county_city: Mapping[str, str]
    city: Mapping[str, int]
    city_province: Mapping[str, str]
    postcode_prefix: Mapping[str, int] = field(repr=False)
    employer: Mapping[str, int] = field(repr=False)


def load_populations(reference: Path = REFERENCE) -> Populations:
    """Read regions.csv and employers.csv (replace them with census figures, same columns)."""
    county, county_city, city, city_province, prefix = {}, {}, {}, {}, {}
    with (reference / "regions.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            people = int(row["population"])
            county[row["county"]] = people
            county_city[row["county"]] = row["city"]
            city[row["city"]] = city.get(row["city"], 0) + people
            city_province[row["city"]] = row["province"]
            for digits in range(1, 7):
                key = row["postcode"][:digits]
                prefix[key] = prefix.get(key, 0) + people
    with (reference / "employers.csv").open(encoding="utf-8", newline="") as handle:
        employer = {row["employer"]: int(row["headcount"]) for row in csv.DictReader(handle)}
    return Populations(county, county_city, city, city_province, prefix, employer)


def generalise_postcode(code: str | None, populations: Populations, minimum: int) -> str | None:
    """Zero the low digits until the area covers `minimum` people (100080 -> 100000); '*' if never."""
    if code is None or pd.isna(code):
        return None
    text = str(code).zfill(6)
    for kept in range(6, 0, -1):
        if populations.postcode_prefix.get(text[:kept], 0) >= minimum:
            return text[:kept] + "0" * (6 - kept)
    return "*"


def generalise_area(county: str | None, populations: Populations, minimum: int) -> str | None:
    """County if it has `minimum` people, else its city, else its province, else '*'."""
    if county is None or pd.isna(county):
        return None
    if populations.county.get(county, 0) >= minimum:
        return county
    city = populations.county_city.get(county)
    if city is not None and populations.city.get(city, 0) >= minimum:
        return city
    return populations.city_province.get(city, "*") if city else "*"


def keep_employer(name: str | None, populations: Populations, minimum: int) -> str | None:
    """An employer is kept only if it covers `minimum` people (GB/T 39725 §10.2 c 1)."""
    if name is None or pd.isna(name) or populations.employer.get(name, 0) < minimum:
        return None
    return name


# --- the whole table -------------------------------------------------------------------------


@dataclass(frozen=True)
class TableTransform:
    """What happened to each column, for the report (names and counts only, never values)."""

    deleted: tuple[str, ...]
    surrogate_column: str
    shifted: tuple[str, ...]
    derived_age_from: str | None
    area_from: str | None
    generalised_by_population: Mapping[str, int]
    kept: tuple[str, ...]


def roles_from_fields(fields: Sequence[Mapping[str, object]], file: str) -> dict[str, str]:
    """Column -> detector, from the approved classification's field labels of one table."""
    return {str(f["field"]): str(f["detector"] or "") for f in fields if f["file"] == file}


def _finest_region(df: pd.DataFrame, roles: Mapping[str, str], populations: Populations) -> str | None:
    """The region column that holds counties (by content): the one most of whose values are
    counties in the population table."""
    shares = {column: df[column].isin(list(populations.county)).mean()
              for column, detector in roles.items() if detector == "region" and column in df}
    best = max(shares, key=shares.get, default=None)  # type: ignore[arg-type]
    return best if best is not None and shares[best] > 0.5 else None


def transform_table(df: pd.DataFrame, roles: Mapping[str, str], policy: Policy, *,
                    surrogate_secret: bytes, shift_secret: bytes, populations: Populations
                    ) -> tuple[pd.DataFrame, TableTransform, dict[str, str]]:
    """Apply every rule that needs no search; return the table, what was done, and the code index
    (surrogate -> real linkage ID) that the controller keeps."""
    linkage = policy["linkage_identifier"]
    subject_columns = [c for c, d in roles.items() if d == linkage["detector"] and c in df]
    if len(subject_columns) != 1:
        raise DeidentificationError(
            f"Expected exactly one linkage column ({linkage['detector']}) in the approved "
            f"classification, found {len(subject_columns)}; a steward must mark the subject "
            "identifier before de-identification (GB/T 39725 §10.2 f).")
    subject = subject_columns[0]
    keys = df[subject].astype("string")
    surrogates = keys.map(lambda key: subject_surrogate(surrogate_secret, key))
    code_index = dict(zip(surrogates, keys))
    if len(set(code_index)) != keys.nunique():
        raise DeidentificationError("Two subjects received the same surrogate; refusing to link.")
    out = pd.DataFrame(index=df.index)
    out[linkage["column"]] = surrogates

    birth_rule = policy["birth_date"]
    birth = next((c for c in df.columns if c in birth_rule["columns"]), None)
    reference = birth_rule["reference"] if birth_rule["reference"] in df else None
    if birth is not None and reference is not None:
        out["age"] = [age_at(b, r) for b, r in zip(df[birth], df[reference])]
    shift_rule = policy["date_shift"]
    scope = {"per_patient": keys, "per_project": pd.Series(["project"] * len(df), index=df.index)}
    offsets = scope[shift_rule["mode"]].map(
        lambda key: date_offset(shift_secret, key, int(shift_rule["max_days"])))
    minimum = int(policy["min_population"])
    deleted, shifted, population_changes, kept = [subject], [], {}, []
    area_from = _finest_region(df, roles, populations)
    for column in df.columns:
        detector = roles.get(column, "")
        if column == subject:
            continue
        if column == birth or detector in policy["delete_identifiers"]:
            deleted.append(column)
        elif detector == "date":
            out[column] = [shift_date(v, d) for v, d in zip(df[column], offsets)]
            shifted.append(column)
        elif detector == "postcode":
            out[column] = df[column].map(lambda v: generalise_postcode(v, populations, minimum))
            population_changes[column] = int((out[column].astype("string") !=
                                              df[column].astype("string")).sum())
        elif column == area_from:
            out["area"] = df[column].map(lambda v: generalise_area(v, populations, minimum))
            population_changes["area"] = int((out["area"] != df[column]).sum())
        elif detector == "region":
            deleted.append(column)  # province/city follow from area; kept once, in `area`
        elif column in policy["employer_columns"]:
            out[column] = df[column].map(lambda v: keep_employer(v, populations, minimum))
            population_changes[column] = int(out[column].isna().sum() - df[column].isna().sum())
            kept.append(column)
        else:
            out[column] = df[column]
            kept.append(column)
    transform = TableTransform(tuple(deleted), linkage["column"], tuple(shifted),
                               birth if "age" in out else None, area_from, population_changes,
                               tuple(kept))
    return out, transform, code_index


# --- k-anonymity and the re-identification test -----------------------------------------------


def quasi_identifier_hierarchies(populations: Populations, loaded: Mapping[str, Hierarchy]
                                 ) -> dict[str, Hierarchy]:
    """Hierarchies for the released quasi-identifiers: age bands, sex, postcode digits, and the
    area tree county -> city -> province -> * built from the population table."""
    to_city = {**populations.county_city, **{c: c for c in populations.city}}
    to_province = {**{k: populations.city_province.get(v, "*") for k, v in to_city.items()},
                   **{p: p for p in populations.city_province.values()}}
    area = Hierarchy("area", (
        lambda s: s,
        lambda s: s.map(lambda v: to_city.get(v, "*") if isinstance(v, str) else v),
        lambda s: s.map(lambda v: to_province.get(v, "*") if isinstance(v, str) else v),
        lambda s: s.map(lambda v: "*" if isinstance(v, str) else v),
    ))
    return {"age": loaded["age"], "sex": loaded["sex"], "postcode": loaded["postcode"], "area": area}


def apply_levels(df: pd.DataFrame, hierarchies: Mapping[str, Hierarchy],
                 levels: Mapping[str, int]) -> pd.DataFrame:
    """Generalise each quasi-identifier to its chosen level (for the linkage attack on raw data)."""
    out = df.copy()
    for column, level in levels.items():
        out[column] = hierarchies[column].levels[level](df[column])
    return out


@dataclass(frozen=True)
class TableResult:
    table: pd.DataFrame
    transform: TableTransform
    code_index: Mapping[str, str] = field(repr=False)
    kanon: KAnonResult = field(repr=False)
    risk: RiskReport = field(repr=False)


def deidentify_table(df: pd.DataFrame, roles: Mapping[str, str], policy: Policy, *,
                     surrogate_secret: bytes, shift_secret: bytes, populations: Populations,
                     hierarchies: Mapping[str, Hierarchy]) -> TableResult:
    """Every rule in order; raises if k >= 5 cannot be reached within the suppression budget or if
    the re-identification test fails. Nothing partial is returned."""
    transformed, transform, code_index = transform_table(
        df, roles, policy, surrogate_secret=surrogate_secret, shift_secret=shift_secret,
        populations=populations)
    qis = [q for q in policy["quasi_identifiers"] if q in transformed]
    diversity = policy["l_diversity"]
    use_l = int(diversity["l"]) > 1 and diversity["column"] in transformed
    result = anonymise(transformed, qis, {q: hierarchies[q] for q in qis}, k=int(policy["k"]),
                       max_suppression=float(policy["max_suppression"]),
                       sensitive=diversity["column"] if use_l else None,
                       l=int(diversity["l"]) if use_l else None)
    report = assess(result.table, qis, raw=transformed,
                    raw_generalise=lambda raw: apply_levels(raw, hierarchies, result.levels),
                    threshold_class=int(policy["k"]))
    check(report, policy["risk_limits"])
    return TableResult(result.table, transform, code_index, result, report)
