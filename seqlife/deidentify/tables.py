"""De-identify a clinical table: delete direct identifiers, replace the linkage ID by a keyed
surrogate, turn birth dates into ages, shift every date of a patient by one secret offset, keep
areas and employers only where they cover enough people, then generalise the quasi-identifiers
(diagnosis and the intervals date shifting keeps included) to k >= 5 and test the result against
a stated attacker (GB/T 39725 §10.2, Table 6, App. G, §11.4.2.4; RARE §4.5).

What a column is comes from its role in the approved classification (the detector that recognised
its content, or the steward's label), never from its name. A column whose role this stage has no
rule for stops the stage, with every such column named and what the steward must decide: a check
that did not understand its input never passes.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from seqlife.collect import subject_surrogate
from seqlife.deidentify.errors import DeidentificationError, UndecidedColumns
from seqlife.deidentify.hierarchy import SUPPRESSED, Hierarchy
from seqlife.deidentify.kanon import KAnonResult, anonymise
from seqlife.deidentify.risk import RiskReport, assess, check
from seqlife.policy import DATA_CATALOG, Policy, load_policy

REQUIRED_RULES = frozenset({
    "delete_identifiers", "linkage_identifier", "birth_date", "date_shift", "intervals",
    "min_population", "area", "postcode", "employer", "diagnosis", "quasi_identifiers", "k",
    "max_suppression", "l_diversity", "attacker", "risk_limits", "small_cells", "vcf_keep_meta",
    "code_index_role", "approver_role"})
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


# --- roles -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnRole:
    """What the approved classification says a column is: the detector (role) and identifier type."""

    detector: str
    identifier: str


def roles_from_fields(fields: Sequence[Mapping[str, object]], file: str) -> dict[str, ColumnRole]:
    """Column -> role, from the approved classification's field labels of one table."""
    return {str(f["field"]): ColumnRole(str(f["detector"] or ""), str(f["identifier"]))
            for f in fields if f["file"] == file}


def roles_from_labels(labels: Sequence[object]) -> dict[str, ColumnRole]:
    """Column -> role from fresh :class:`~seqlife.classify.labels.FieldLabel` objects (file mode)."""
    return {str(label.field): ColumnRole(str(label.detector or ""), str(label.identifier))  # type: ignore[attr-defined]
            for label in labels}


@dataclass(frozen=True)
class ColumnPlan:
    """What happens to every column, decided from roles before any value is touched."""

    subject: str
    birth: str | None
    dates: tuple[str, ...]          # event dates, shifted
    anchor: str | None              # the earliest event date (by median), once dates are parsed
    postcodes: tuple[str, ...]
    area_from: str | None
    regions_dropped: tuple[str, ...]
    employers: tuple[str, ...]
    sexes: tuple[str, ...]
    diagnoses: tuple[str, ...]
    other_quasi: tuple[tuple[str, str], ...]  # (column, role): ages, stays given as columns
    deleted: tuple[str, ...]
    kept: tuple[str, ...]


def plan_columns(df: pd.DataFrame, roles: Mapping[str, ColumnRole], policy: Policy,
                 populations: Populations) -> ColumnPlan:
    """Decide every column from its role, or stop naming each column a steward must decide.

    Raises:
        UndecidedColumns: a column has no role, a quasi-identifier role has no rule, the linkage
            identifier is missing or ambiguous, or the table about people has no quasi-identifier.
    """
    undecided: dict[str, str] = {}
    delete_roles = set(policy["delete_identifiers"])
    quasi_roles = set(policy["quasi_identifiers"]["roles"])
    linkage = policy["linkage_identifier"]["role"]
    birth_role, date_role = policy["birth_date"]["role"], policy["date_shift"]["role"]
    buckets: dict[str, list[str]] = {}
    for column in df.columns:
        role = roles.get(str(column))
        if role is None:
            undecided[column] = ("not in the approved classification (classify this version "
                                 "again)")
            continue
        detector, identifier = role.detector, role.identifier
        if detector == linkage:
            bucket = "subject"
        elif detector in delete_roles or identifier in ("direct", "free_text"):
            bucket = "deleted"
        elif detector == birth_role:
            bucket = "birth"
        elif detector == date_role:
            bucket = "dates"
        elif detector in quasi_roles:
            bucket = detector
        elif identifier == "unknown":
            undecided[column] = ("no detector recognised its content; label it a direct "
                                 "identifier (deleted), not identifying (kept) or give its role")
            continue
        elif identifier == "quasi":
            undecided[column] = (f"labelled a quasi-identifier, but its role '{detector or '-'}' "
                                 "has no generalisation rule in deidentify.yaml; give it a role "
                                 "that has one, or label it a direct identifier")
            continue
        else:  # measures, sensitive values the steward kept, columns labelled not identifying
            bucket = "kept"
        buckets.setdefault(bucket, []).append(column)
    subjects = buckets.get("subject", [])
    if len(subjects) != 1:
        undecided["(linkage identifier)"] = (
            f"exactly one column with the role {linkage} must identify the patient, found "
            f"{len(subjects)}; a steward marks the subject identifier (GB/T 39725 §10.2 f)")
    births = buckets.get("birth", [])
    if len(births) > 1:
        for column in births:
            undecided[column] = "one of several birth dates; keep one, label the others"
    if births and not buckets.get("dates"):
        undecided[births[0]] = ("a birth date with no event date to compute the age at; add the "
                                "admission date or delete the birth date (label it direct)")
    if undecided:
        raise UndecidedColumns(undecided)
    regions = buckets.get("region", [])
    area_from = _finest_region(df, regions, populations)
    dates = tuple(buckets.get("dates", []))
    special = {"region", "postcode", "employer", "sex", *policy["diagnosis"]["roles"]}
    other_quasi = tuple((c, role) for role in quasi_roles - special
                        for c in buckets.get(role, []))
    _refuse_name_collisions(df, policy, subjects[0], births, dates, area_from)
    plan = ColumnPlan(
        subject=subjects[0], birth=births[0] if births else None, dates=dates,
        anchor=None, postcodes=tuple(buckets.get("postcode", [])),
        area_from=area_from, regions_dropped=tuple(r for r in regions if r != area_from),
        employers=tuple(buckets.get("employer", [])), sexes=tuple(buckets.get("sex", [])),
        diagnoses=tuple(c for r in policy["diagnosis"]["roles"] for c in buckets.get(r, [])),
        other_quasi=other_quasi, deleted=tuple(buckets.get("deleted", [])),
        kept=tuple(buckets.get("kept", [])))
    if not (plan.birth or len(plan.dates) > 1 or plan.postcodes or plan.area_from
            or plan.employers or plan.sexes or plan.diagnoses or plan.other_quasi):
        raise UndecidedColumns({"(quasi-identifiers)": (
            "the table is about people but no column is a quasi-identifier (sex, age, area, "
            "postcode, employer, diagnosis, intervals); a re-identification test over nothing "
            "proves nothing: check the classification of this table")})
    return plan


def _refuse_name_collisions(df: pd.DataFrame, policy: Policy, subject: str, births: Sequence[str],
                            dates: Sequence[str], area_from: str | None) -> None:
    """A delivered column may not carry a name the release gives a derived column (the
    surrogate, the age, the area, an interval): it would overwrite it, or be overwritten."""
    made = {policy["linkage_identifier"]["column"]: subject}
    if births and dates:
        made[policy["birth_date"]["column"]] = births[0]
    if area_from is not None:
        made[policy["area"]["column"]] = area_from
    made.update({f"{d}{policy['intervals']['suffix']}": d for d in dates})
    clashes = {name: (f"its name is the one the release gives a derived column (made from "
                      f"'{source}'); rename it or label it so it is deleted")
               for name, source in made.items() if name in df.columns and name != source}
    if clashes:
        raise UndecidedColumns(clashes)


def _finest_region(df: pd.DataFrame, regions: Sequence[str], populations: Populations
                   ) -> str | None:
    """The region column that holds counties (by content): most of its values are counties."""
    shares = {column: df[column].isin(list(populations.county)).mean() for column in regions}
    best = max(shares, key=shares.get, default=None)  # type: ignore[arg-type]
    return best if best is not None and shares[best] > 0.5 else None


def _anchor(df: pd.DataFrame, dates: Sequence[str]) -> str | None:
    """The event date that comes first (by median): admission, usually."""
    medians = {}
    for column in dates:
        days = sorted(v.toordinal() for v in df[column] if isinstance(v, date))
        if days:
            medians[column] = days[len(days) // 2]
    return min(medians, key=medians.get, default=None)  # type: ignore[arg-type]


DateParser = Callable[[str], "date | None"]


def as_dates(series: pd.Series, parse: DateParser, column: str) -> pd.Series:
    """A column of calendar days (None when empty) from dates, timestamps or date text.

    Raises:
        DeidentificationError: a non-empty value is not a date (count named, never the value).
    """
    out, bad = [], 0
    for value in series:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            out.append(None)
        elif isinstance(value, (datetime, pd.Timestamp)):
            out.append(value.date())
        elif isinstance(value, date):
            out.append(value)
        else:
            text = str(value).strip()
            day = parse(text) if text else None
            bad += bool(text) and day is None
            out.append(day)
    if bad:
        raise DeidentificationError(
            f"Column '{column}' is labelled a date but {bad} value(s) are not dates in a "
            "recognised format; correct the source or the label. Nothing was released.")
    return pd.Series(out, index=series.index, dtype=object)


# --- the whole table -------------------------------------------------------------------------


@dataclass(frozen=True)
class TableTransform:
    """What happened to each column, for the report (names and counts only, never values)."""

    deleted: tuple[str, ...]
    surrogate_column: str
    shifted: tuple[str, ...]
    derived_age_from: str | None
    anchor_date: str | None
    intervals: Mapping[str, str]           # interval column -> the event date it measures
    area_from: str | None
    generalised_by_population: Mapping[str, int]
    quasi_identifiers: Mapping[str, str]   # released column -> hierarchy name
    kept: tuple[str, ...]


def transform_table(df: pd.DataFrame, roles: Mapping[str, ColumnRole], policy: Policy, *,
                    surrogate_secret: bytes, shift_secret: bytes, populations: Populations,
                    parse_date: DateParser) -> tuple[pd.DataFrame, pd.DataFrame, TableTransform,
                                                     dict[str, str]]:
    """Apply every rule that needs no search.

    Returns the transformed table, the same table with the dates *not* shifted (what the attacker
    of the linkage test knows; never released), what was done, and the code index (surrogate ->
    real linkage ID) that the controller keeps sealed.
    """
    plan = plan_columns(df, roles, policy, populations)
    df = df.copy()
    for column in (plan.birth, *plan.dates):
        if column is not None:
            df[column] = as_dates(df[column], parse_date, column)
    plan = replace(plan, anchor=_anchor(df, plan.dates))  # the anchor needs parsed dates
    subject_column = policy["linkage_identifier"]["column"]
    keys = df[plan.subject].astype("string")
    surrogates = keys.map(lambda key: subject_surrogate(surrogate_secret, key))
    code_index = dict(zip(surrogates, keys))
    if len(set(code_index)) != keys.nunique():
        raise DeidentificationError("Two subjects received the same surrogate; refusing to link.")
    out = pd.DataFrame(index=df.index)
    out[subject_column] = surrogates
    hierarchy_of = policy["quasi_identifiers"]["hierarchies"]
    derived = set(policy["quasi_identifiers"]["derived"])
    qis: dict[str, str] = {}
    age_column = policy["birth_date"]["column"]
    if plan.birth is not None and plan.anchor is not None:
        out[age_column] = pd.array([age_at(b, r) for b, r in zip(df[plan.birth], df[plan.anchor])],
                                   dtype="Int64")
        if "age" in derived:
            qis[age_column] = hierarchy_of["age"]
    shift_rule = policy["date_shift"]
    scope = {"per_patient": keys, "per_project": pd.Series(["project"] * len(df), index=df.index)}
    offsets = scope[shift_rule["mode"]].map(
        lambda key: date_offset(shift_secret, key, int(shift_rule["max_days"])))
    unshifted = out.copy()
    for column in plan.dates:
        out[column] = [shift_date(v, d) for v, d in zip(df[column], offsets)]
        unshifted[column] = df[column]
    if plan.anchor is not None and "anchor_date" in derived:
        qis[plan.anchor] = hierarchy_of["anchor_date"]
    intervals: dict[str, str] = {}
    for column in plan.dates:
        if column == plan.anchor:
            continue
        name = f"{column}{policy['intervals']['suffix']}"
        days = [None if a is None or b is None else (b - a).days
                for a, b in zip(df[plan.anchor], df[column])]
        out[name] = unshifted[name] = pd.array(days, dtype="Int64")
        intervals[name] = column
        if "intervals" in derived:
            qis[name] = hierarchy_of["intervals"]
    minimum = int(policy["min_population"])
    changed: dict[str, int] = {}
    for column in plan.postcodes:
        out[column] = df[column].map(lambda v: generalise_postcode(v, populations, minimum))
        changed[column] = int((out[column].astype("string") != df[column].astype("string")).sum())
        qis[column] = hierarchy_of["postcode"]
    if plan.area_from is not None:
        area = policy["area"]["column"]
        out[area] = df[plan.area_from].map(lambda v: generalise_area(v, populations, minimum))
        changed[area] = int((out[area] != df[plan.area_from]).sum())
        qis[area] = hierarchy_of["region"]
    for column in plan.employers:
        out[column] = df[column].map(lambda v: keep_employer(v, populations, minimum))
        changed[column] = int(out[column].isna().sum() - df[column].isna().sum())
        qis[column] = hierarchy_of["employer"]
    for column in plan.sexes:
        out[column] = df[column]
        qis[column] = hierarchy_of["sex"]
    for column in plan.diagnoses:
        out[column] = df[column]
        qis[column] = hierarchy_of[roles[column].detector]
    for column, role in plan.other_quasi:
        out[column] = df[column]
        qis[column] = hierarchy_of[role]
    for column in plan.kept:
        out[column] = df[column]
    for column in out.columns:
        if column not in unshifted:
            unshifted[column] = out[column]
    deleted = (plan.subject, *plan.deleted, *((plan.birth,) if plan.birth else ()),
               *plan.regions_dropped, *((plan.area_from,) if plan.area_from else ()))
    transform = TableTransform(
        deleted=tuple(deleted), surrogate_column=subject_column, shifted=plan.dates,
        derived_age_from=plan.birth if age_column in out else None, anchor_date=plan.anchor,
        intervals=intervals, area_from=plan.area_from, generalised_by_population=changed,
        quasi_identifiers=qis, kept=plan.kept)
    return out, unshifted[out.columns], transform, code_index


# --- k-anonymity and the re-identification test -----------------------------------------------


def apply_levels(df: pd.DataFrame, hierarchies: Mapping[str, Hierarchy],
                 levels: Mapping[str, int]) -> pd.DataFrame:
    """Generalise each quasi-identifier to its chosen level (for the linkage attack on raw data)."""
    out = df.copy()
    for column, level in levels.items():
        out[column] = hierarchies[column].levels[level](df[column])
    return out


@dataclass(frozen=True)
class AttackerModel:
    """Who the re-identification test assumes: what they know, and how each maps to the release."""

    knows: tuple[str, ...]
    matched: Mapping[str, tuple[str, ...]]   # attribute -> released columns it is matched on
    absent: tuple[str, ...]                  # attributes the release does not carry
    month_of: str | None                     # the anchor date, matched at month level


def attacker_model(policy: Policy, transform: TableTransform, roles: Mapping[str, ColumnRole],
                   columns: Sequence[str]) -> AttackerModel:
    """Map the policy's attacker knowledge onto the released columns."""
    qis = transform.quasi_identifiers
    by_role: dict[str, list[str]] = {}
    for column in qis:
        role = roles.get(column)
        if role is not None:  # derived columns (age, area, intervals) have no delivered role
            by_role.setdefault(role.detector, []).append(column)
    area = policy["area"]["column"]
    sources = {
        "sex": by_role.get("sex", []),
        "age": [c for c in (policy["birth_date"]["column"],) if c in qis] + by_role.get("age", []),
        "area": [c for c in qis if c == area or (roles.get(c) and roles[c].detector == "postcode")],
        "diagnosis": [c for r in policy["diagnosis"]["roles"] for c in by_role.get(r, [])],
        "admission_month": [transform.anchor_date] if transform.anchor_date in columns else [],
        "length_of_stay": [c for c in transform.intervals if c in columns]
        + by_role.get("stay_days", []),
        "employer": by_role.get("employer", []),
    }
    knows = tuple(policy["attacker"]["knows"])
    unknown = [a for a in knows if a not in sources]
    if unknown:
        raise DeidentificationError(
            f"The attacker model names attribute(s) {unknown} this stage cannot map to columns "
            f"(known: {sorted(sources)}); fix attacker.knows in deidentify.yaml.")
    matched = {a: tuple(sources[a]) for a in knows if sources[a]}
    return AttackerModel(knows, matched, tuple(a for a in knows if not sources[a]),
                         transform.anchor_date if "admission_month" in matched else None)


@dataclass(frozen=True)
class TableResult:
    table: pd.DataFrame
    transform: TableTransform
    code_index: Mapping[str, str] = field(repr=False)
    kanon: KAnonResult = field(repr=False)
    risk: RiskReport = field(repr=False)
    attacker: AttackerModel = field(repr=False)
    withheld: tuple[str, ...] = ()   # event dates withheld because their interval was banded
    shifts: Mapping[str, pd.Series] = field(default_factory=dict, repr=False)


def deidentify_table(df: pd.DataFrame, roles: Mapping[str, ColumnRole], policy: Policy, *,
                     surrogate_secret: bytes, shift_secret: bytes, populations: Populations,
                     hierarchies: Mapping[str, Hierarchy], parse_date: DateParser) -> TableResult:
    """Every rule in order; raises if a column is undecided, if k cannot be reached within the
    suppression budget, or if the re-identification test fails. Nothing partial is returned."""
    transformed, unshifted, transform, code_index = transform_table(
        df, roles, policy, surrogate_secret=surrogate_secret, shift_secret=shift_secret,
        populations=populations, parse_date=parse_date)
    qi_hierarchy = dict(transform.quasi_identifiers)
    qis = list(qi_hierarchy)
    diversity = policy["l_diversity"]
    sensitive = [c for c in transformed if roles.get(c) and roles[c].detector == diversity["role"]]
    use_l = int(diversity["l"]) > 1 and bool(sensitive)
    if use_l and sensitive[0] in qi_hierarchy:
        raise DeidentificationError(
            f"l-diversity is asked on '{sensitive[0]}', which is also a quasi-identifier; remove "
            "its role from quasi_identifiers.roles or set l to 1 (deidentify.yaml).")
    chosen = {q: _named(hierarchies, h, q) for q, h in qi_hierarchy.items()}
    person = transform.surrogate_column  # k counts people: a patient's rows are one person
    result = anonymise(transformed, qis, chosen, k=int(policy["k"]),
                       max_suppression=float(policy["max_suppression"]),
                       sensitive=sensitive[0] if use_l else None,
                       l=int(diversity["l"]) if use_l else None, subject=person)
    anchor = transform.anchor_date
    anchor_level = result.levels.get(anchor, 0) if anchor else 0
    withheld = tuple(d for q, d in transform.intervals.items()
                     if anchor_level > 0 or result.levels.get(q, 0) > 0)
    released = result.table.drop(columns=list(withheld))
    _check_small_cells(released, [q for q in qis if roles.get(q) and
                                  roles[q].detector in policy["diagnosis"]["roles"]],
                       int(policy["small_cells"]))
    attacker = attacker_model(policy, transform, roles, list(released.columns))
    attack = list(dict.fromkeys(c for cols in attacker.matched.values() for c in cols))
    # The attacker knows the admission month: the anchor is matched at month level (level 1 of
    # its hierarchy) or at the coarser level the search released it at; the raw side carries
    # the true dates, the release the shifted ones.
    levels = {q: lv for q, lv in result.levels.items() if q in attack}
    if attacker.month_of is not None:
        levels[attacker.month_of] = max(1, anchor_level)
    seen = [*attack, person]
    attacked = apply_levels(transformed.loc[released.index], chosen, levels)[seen]
    report = assess(released, qis, raw=apply_levels(unshifted, chosen, levels)[seen],
                    threshold_class=int(policy["k"]), attack_columns=attack, attacked=attacked,
                    subject=person)
    check(report, policy["risk_limits"])
    shifts = {}
    for column in transform.shifted:
        if column in released and result.levels.get(column, 0) == 0:
            before = unshifted.loc[released.index, column]
            shifts[column] = pd.Series([None if a is None or b is None else (b - a).days
                                        for a, b in zip(before, released[column])],
                                       index=released.index, dtype="Int64")
    return TableResult(released, transform, code_index, result, report, attacker, withheld,
                       shifts)


def _named(hierarchies: Mapping[str, Hierarchy], name: str, column: str) -> Hierarchy:
    if name not in hierarchies:
        raise DeidentificationError(
            f"No generalisation hierarchy '{name}' for quasi-identifier '{column}'; add it to "
            "deidentify_hierarchies.yaml.")
    return Hierarchy(column, hierarchies[name].levels, hierarchies[name].labels)


def _check_small_cells(released: pd.DataFrame, diagnoses: Sequence[str], minimum: int) -> None:
    """GB/T 39725 §11.4.2.4: no diagnosis value of a row-level release held by fewer people."""
    for column in diagnoses:
        counts = released[column][released[column] != SUPPRESSED].value_counts(dropna=True)
        small = int((counts < minimum).sum())
        if small:
            raise DeidentificationError(
                f"{small} value(s) of diagnosis column '{column}' are held by fewer than "
                f"{minimum} people in the release (GB/T 39725 §11.4.2.4); generalise further.")


def released_quasi_identifiers(result: TableResult) -> list[str]:
    """The quasi-identifier columns the release carries (what the quality gate checks k over)."""
    return [q for q in result.transform.quasi_identifiers if q in result.table]

