"""Classify: from detector findings to labels — identifier type, category, sensitivity grade,
research tier, confidentiality, identifiability, data kind, important-data flag, and the controls
the grade selects (GB/T 39725 §6.1–6.2, §8.1 Table 3, §11.1.2.3; RARE §3.2.4, §3.5; SEQ §7.3.1).

Plain functions on plain data; the rules themselves live in ``data_catalog/policies/classify.yaml``.
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Sequence

from seqlife.classify.detectors import (
    DetectorSet,
    Finding,
    best_finding,
    column_dates,
    detect_column,
    name_has_hint,
)
from seqlife.classify.headers import MALFORMED, SAM_KEYED_LINES, Header, read_header
from seqlife.exceptions import (
    ClassificationError,
    ClassificationMissing,
    ClassificationNotApproved,
    ClassificationStale,
    HeaderFieldsUndecided,
    PolicyFileError,
)
from seqlife.policy import DATA_CATALOG, Policy, load_policy

REQUIRED_RULES = frozenset({
    "categories", "detector_labels", "unclassified", "genomic_content",
    "sequencing_header_handling", "sequencing_header_fields", "read_name_layouts",
    "special_disease_grade", "tier_by_grade", "confidentiality_by_grade", "important_data",
    "controls_by_grade", "sample_size", "birth_date", "header_looks_like_data"})
ICD10_REFERENCE = DATA_CATALOG / "reference" / "icd10.csv"


def load_classify_policy() -> Policy:
    """The classification rules, with the sequencing handling table checked at load time."""
    policy = load_policy("classify", REQUIRED_RULES)
    check_sequencing_rules(policy)
    return policy


@dataclass(frozen=True)
class FieldLabel:
    """The label of one column or header field, with the evidence behind it (counts, never values)."""

    file: str
    field: str
    identifier: str
    category: str
    grade: int
    detector: str | None = None
    confidence: float = 0.0
    share: float = 0.0
    sampled: int = 0
    name_hint: bool = False
    note: str = ""
    override_reason: str = ""


@dataclass(frozen=True)
class DatasetLabels:
    """What the dataset as a whole is, and what that allows."""

    grade: int
    tier: str
    confidentiality: str
    categories: tuple[str, ...]
    identifiable: bool
    data_kind: str
    shareable: bool
    important_data: bool
    genomic_subjects: int
    special_disease_rows: int
    special_groups: tuple[str, ...]
    sharing_forms: tuple[str, ...]
    deidentify_policy: str
    review_years: int


# --- columns ---------------------------------------------------------------------------------


def label_from_finding(file: str, column: str, finding: Finding | None, policy: Policy) -> FieldLabel:
    """Map the best detector finding of a column to its label; unknown columns stay for review."""
    if finding is None:
        rule = policy["unclassified"]
        return FieldLabel(file, column, rule["identifier"], rule["category"], int(rule["grade"]),
                          note="no detector recognised the content; review")
    rule = policy["detector_labels"][finding.detector]
    return FieldLabel(file, column, rule["identifier"], rule["category"], int(rule["grade"]),
                      finding.detector, round(finding.confidence, 3), round(finding.share, 3),
                      finding.sampled, finding.name_hint)


def load_special_diseases(path: Path = ICD10_REFERENCE) -> dict[str, str]:
    """ICD-10 code -> special-disease group (GB/T 39725 §11.1.2.3), from the reference table."""
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["code"]: row["special_group"] for row in csv.DictReader(handle)
                if row["special_group"]}


def special_disease_rows(codes: Iterable[object], special: Mapping[str, str]) -> tuple[int, tuple[str, ...]]:
    """How many rows carry a special-disease code, and which groups (a code or its 3-char parent)."""
    count, groups = 0, set()
    for code in codes:
        if code is None:
            continue
        text = str(code).strip().upper()
        group = special.get(text) or special.get(text[:3])
        if group:
            count += 1
            groups.add(group)
    return count, tuple(sorted(groups))


def check_header(file: str, names: Sequence[str], detectors: DetectorSet, policy: Policy) -> None:
    """Refuse a table whose column names look like a patient's values (exported without its
    header row): they would become labels, report lines and release column names."""
    tests = [detectors[name].matches for name in policy["header_looks_like_data"]]
    positions = [i + 1 for i, name in enumerate(names)
                 if any(test(str(name).strip()) for test in tests)]
    if positions:
        raise ClassificationError(
            f"{file}: the column names at position(s) {positions} look like a patient's values "
            "(an ID, a phone, a record number, a date): the table seems to have been exported "
            "without its header row. Export it with column names; nothing was classified "
            f"({policy.clause('header_looks_like_data')}).")


def label_table(file: str, columns: Mapping[str, Any], detectors: DetectorSet, policy: Policy,
                special: Mapping[str, str]) -> tuple[list[FieldLabel], int, tuple[str, ...]]:
    """Label every column by content; grade the ICD-10 column 5 where rows touch special diseases."""
    check_header(file, list(columns), detectors, policy)
    labels, special_count, groups = [], 0, ()
    for name, column in columns.items():
        finding = best_finding(detect_column(name, column, detectors,
                                             sample_size=int(policy["sample_size"])))
        label = label_from_finding(file, name, finding, policy)
        if label.detector == "icd10":
            values = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
            special_count, groups = special_disease_rows(values, special)
            if special_count:
                label = replace(label, grade=int(policy["special_disease_grade"]),
                                note=f"{special_count} row(s) touch special diseases "
                                     f"({', '.join(groups)}); GB/T 39725 §11.1.2.3")
        labels.append(label)
    return refine_birth_dates(columns, labels, detectors, policy), special_count, groups


def refine_birth_dates(columns: Mapping[str, Any], labels: Sequence[FieldLabel],
                       detectors: DetectorSet, policy: Policy) -> list[FieldLabel]:
    """Tell the birth date apart from event dates (GB/T 39725 Table 6: it becomes an age, not a
    shifted date): by its name, or by content — it lies years before the row's other dates."""
    rule = policy["birth_date"]
    out = list(labels)
    dated = [i for i, label in enumerate(out) if label.detector == "date"]
    if not dated:
        return out
    hinted = [i for i in dated if name_has_hint(out[i].field, rule["name_hints"])]
    rows = len(columns[out[dated[0]].field])
    positions = sorted(random.Random(0).sample(range(rows), min(rows, int(rule["sample_rows"]))))
    parse = detectors["date"].parse
    if parse is None:
        raise ClassificationError("The date detector has no parser; check classify_detectors.yaml.")
    values = {i: column_dates(columns[out[i].field], parse, positions) for i in dated}
    candidates = hinted or _birth_like(values, rule)
    if not candidates:
        return out

    def median_day(i: int) -> int:
        days = sorted(d.toordinal() for d in values[i] if d is not None)
        return days[len(days) // 2] if days else 0

    chosen = min(candidates, key=median_day)
    label = policy["detector_labels"]["birth_date"]
    evidence = "column name" if hinted else "content: years before the row's other dates"
    out[chosen] = replace(out[chosen], detector="birth_date", identifier=label["identifier"],
                          category=label["category"], grade=int(label["grade"]),
                          note=f"birth date by {evidence}; becomes an age (Table 6)")
    return out


def _birth_like(values: Mapping[int, list[date | None]], rule: Mapping[str, Any]) -> list[int]:
    """Date columns whose values sit 0-120 years before the other dates of the same row."""
    if len(values) == 1:
        (only,) = values.values()
        years = sorted(d.year for d in only if d is not None)
        if not years:
            return []
        spread = years[min(len(years) - 1, int(len(years) * 0.95))] - years[int(len(years) * 0.05)]
        return list(values) if spread >= int(rule["single_column_min_year_spread"]) else []
    limit = int(rule["max_age_years"]) * 365.25
    found = []
    for i, column in values.items():
        gaps = []
        for row, day in enumerate(column):
            others = [v[row] for j, v in values.items() if j != i and v[row] is not None]
            if day is not None and others:
                gaps.append((max(others) - day).days)
        if not gaps:
            continue
        inside = sum(1 for g in gaps if 0 <= g <= limit) / len(gaps)
        median = sorted(gaps)[len(gaps) // 2]
        if inside >= float(rule["min_share"]) and \
                median >= float(rule["min_median_years_before"]) * 365.25:
            found.append(i)
    return found


class ParquetColumns(Mapping[str, Any]):
    """The columns of a Parquet file, read one at a time when asked for, so classifying a wide
    table holds one column in memory, not the whole table."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self._file = pq.ParquetFile(path)
        self._names = self._file.schema_arrow.names

    def __getitem__(self, name: str) -> Any:
        return self._file.read(columns=[name]).column(0)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


# --- sequencing file headers -----------------------------------------------------------------


def check_sequencing_rules(policy: Policy) -> None:
    """Refuse a handling table that names a handling with no label, a handling label outside the
    identifier types and grades, or a read-name layout that is not a regular expression: each
    would otherwise surface as a wrong label, or a crash, in the middle of a classification."""
    handling = policy["sequencing_header_handling"]
    source = policy.source
    if "unknown" not in handling:
        raise PolicyFileError(f"{source}: sequencing_header_handling needs an 'unknown' entry.")
    for name, rule in handling.items():
        if not isinstance(rule, Mapping) or \
                rule.get("identifier") not in (*IDENTIFIER_TYPES, "unknown") or \
                rule.get("grade") not in range(1, 6) or not rule.get("note") or \
                rule.get("category") not in policy["categories"]:
            raise PolicyFileError(f"{source}: sequencing_header_handling '{name}' needs an "
                                  f"identifier ({', '.join(IDENTIFIER_TYPES)}, unknown), a "
                                  "category, a grade 1-5 and a note.")
    for file_format, table in policy["sequencing_header_fields"].items():
        if not isinstance(table, Mapping):
            raise PolicyFileError(f"{source}: sequencing_header_fields {file_format} must map "
                                  "field names to handlings.")
        for name, value in table.items():
            if value not in handling:
                raise PolicyFileError(f"{source}: sequencing_header_fields {file_format} "
                                      f"'{name}': '{value}' is not in sequencing_header_handling.")
    for name, pattern in policy["read_name_layouts"].items():
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise PolicyFileError(f"{source}: read_name_layouts '{name}' is not a regular "
                                  "expression.") from exc


def header_handling(name: str, table: Mapping[str, str]) -> str | None:
    """The handling of a header field: its own entry, else its prefix's ``prefix.*`` entry,
    else None (unknown)."""
    if name in table:
        return table[name]
    prefix, dot, _ = name.partition(".")
    return table.get(f"{prefix}.*") if dot else None


def read_name_layout(name: str, policy: Policy) -> str | None:
    """The first layout of ``read_name_layouts`` that matches the whole read name, or None."""
    for layout, pattern in policy["read_name_layouts"].items():
        if re.fullmatch(pattern, name):
            return str(layout)
    return None


def _unknown_what(name: str) -> str:
    """What an unknown field is, in a steward's words (built from the field name only)."""
    prefix, dot, _ = name.partition(".")
    if name == "read_name":
        return "read-name layout"
    if dot and prefix in SAM_KEYED_LINES:
        return f"@{prefix} key"
    if name == MALFORMED or name.endswith(f".{MALFORMED}"):
        return "malformed header line or item"
    if not dot:
        return "header line type"
    return "header field"


def label_header(file: str, header: Header, detectors: DetectorSet, policy: Policy) -> list[FieldLabel]:
    """Genomic content is never below grade 4, and every header field is listed with what
    de-identification does with it (``sequencing_header_fields``); a field the table does not
    cover, or read names no layout matches, are unknown until a steward decides."""
    rule = policy["genomic_content"]
    labels = [FieldLabel(file, "sequence data", rule["identifier"], rule["category"],
                         int(rule["grade"]), confidence=1.0, note="genomic content (RARE §3.2.4)")]
    table = policy["sequencing_header_fields"].get(header.format)
    if table is None:
        raise ClassificationError(
            f"{file}: classify.yaml sequencing_header_fields has no table for "
            f"{header.format.upper()} headers, so their fields cannot be listed; nothing was "
            "classified.")
    handlings = policy["sequencing_header_handling"]
    for name, values in sorted(header.fields.items()):
        handling, what, notes = header_handling(name, table), _unknown_what(name), []
        if name == "read_name":
            layouts = Counter(read_name_layout(value, policy) for value in values)
            unmatched = layouts.pop(None, 0)
            if layouts:
                notes.append("read names: " + ", ".join(
                    f"{layout} ({n} of {len(values)})" for layout, n in sorted(layouts.items())))
            if unmatched:
                handling = None
                what = f"read-name layout ({unmatched} of {len(values)} names match no layout)"
        label = handlings[handling if handling is not None else "unknown"]
        # Values are searched for identifiers as evidence for the steward, except in fields the
        # table calls technical (contig lengths would look like codes).
        finding = best_finding(detect_column(name, list(values), detectors)) \
            if label["identifier"] != "none" else None
        if finding is not None and \
                policy["detector_labels"][finding.detector]["identifier"] != "direct":
            finding = None
        if finding is not None:
            notes.append(f"{finding.share:.0%} of the values look like {finding.detector}")
        note = label["note"] if handling is not None else f"unknown {what}: {label['note']}"
        labels.append(FieldLabel(
            file, name, label["identifier"], label["category"], int(label["grade"]),
            finding.detector if finding else None,
            round(finding.confidence, 3) if finding else 0.0,
            round(finding.share, 3) if finding else 0.0, len(values), False,
            note="; ".join([note, *notes])))
    return labels


# --- the dataset -----------------------------------------------------------------------------


def summarise(fields: Sequence[FieldLabel], *, data_kind: str, genomic_subjects: int,
              special_rows: int, special_groups: Sequence[str], policy: Policy) -> DatasetLabels:
    """Dataset labels follow from its fields: the highest grade wins, genes and names identify."""
    grade = max((f.grade for f in fields), default=1)
    if special_rows:
        grade = max(grade, int(policy["special_disease_grade"]))
    controls = policy["controls_by_grade"][grade]
    identifiable = any(f.identifier in ("direct", "genomic") for f in fields)
    return DatasetLabels(
        grade=grade,
        tier=policy["tier_by_grade"][grade],
        confidentiality=policy["confidentiality_by_grade"][grade],
        categories=tuple(c for c in policy["categories"] if any(f.category == c for f in fields)),
        identifiable=identifiable,
        data_kind=data_kind,
        shareable=data_kind == "research",
        important_data=genomic_subjects >= int(policy["important_data"]["genomic_subjects_at_least"]),
        genomic_subjects=genomic_subjects,
        special_disease_rows=special_rows,
        special_groups=tuple(special_groups),
        sharing_forms=tuple(controls["sharing_forms"]),
        deidentify_policy=str(controls["deidentify"]),
        review_years=int(controls["review_years"]),
    )


@dataclass(frozen=True)
class Override:
    """A steward's correction of one field's label, with the reason (audited)."""

    file: str
    field: str
    grade: int | None
    identifier: str | None
    reason: str
    role: str | None = None  # a detector name: what the column holds, for the later stages


#: Identifier types a steward may give a field (GB/T 39725 §10.2 a–d; App. G).
IDENTIFIER_TYPES = ("direct", "quasi", "sensitive", "free_text", "none")


def apply_overrides(fields: Sequence[FieldLabel], overrides: Sequence[Override],
                    policy: Policy) -> list[FieldLabel]:
    """Apply steward overrides; an override naming no existing field is refused."""
    index = {(f.file, f.field): i for i, f in enumerate(fields)}
    out = list(fields)
    for override in overrides:
        if not override.reason.strip():
            raise ClassificationError(f"Override of {override.file}:{override.field} needs a reason.")
        if override.grade is not None and not 1 <= override.grade <= 5:
            raise ClassificationError("A sensitivity grade is between 1 and 5 (GB/T 39725 §6.2).")
        position = index.get((override.file, override.field))
        if position is None:
            raise ClassificationError(f"No field {override.file}:{override.field} in this proposal.")
        if override.role is not None and override.role not in policy["detector_labels"]:
            raise ClassificationError(
                f"Override of {override.file}:{override.field}: '{override.role}' is not a role "
                f"(known: {', '.join(sorted(policy['detector_labels']))}).")
        if override.identifier is not None and override.identifier not in IDENTIFIER_TYPES:
            raise ClassificationError(
                f"Override of {override.file}:{override.field}: identifier type "
                f"'{override.identifier}' is not one of {', '.join(IDENTIFIER_TYPES)}.")
        current = out[position]
        out[position] = replace(
            current, grade=override.grade if override.grade is not None else current.grade,
            identifier=override.identifier or current.identifier, override_reason=override.reason,
            detector=override.role or current.detector)
    return out


def require_header_decisions(fields: Sequence[FieldLabel], header_files: Collection[str],
                             dataset: str, version: int, policy: Policy) -> None:
    """Fail closed: a sequencing header field the handling table does not know (or read names no
    layout matches) is never approved silently; each needs a steward's override with a reason.
    Table columns are not checked here: their undecided roles stop de-identification."""
    unknown = policy["sequencing_header_handling"]["unknown"]["identifier"]
    undecided = [f"{f.file}:{f.field}" for f in fields
                 if f.file in header_files and f.identifier == unknown and not f.override_reason]
    if undecided:
        raise HeaderFieldsUndecided(
            f"{dataset} v{version}: {len(undecided)} sequencing header field(s) are unknown to "
            f"the handling table and have no steward decision: {', '.join(undecided)}. Nothing "
            "was approved. Decide each one: `seqlife classify approve "
            f"{dataset} --version {version} --override FILE:FIELD=GRADE[:IDENTIFIER] --reason "
            f"TEXT`, e.g. --override {undecided[0]}=4:free_text (identifier types: "
            f"{', '.join(IDENTIFIER_TYPES)}); or, if de-identification handles the field, add it "
            f"to sequencing_header_fields in classify.yaml "
            f"({policy.clause('sequencing_header_fields')}).", fields=tuple(undecided))


def check_classification(status: str | None, classified_digest: str | None, content_digest: str,
                         dataset: str) -> None:
    """May the next stage use this dataset version? Only with an approved, current classification."""
    if status is None:
        raise ClassificationMissing(dataset)
    if status != "approved":
        raise ClassificationNotApproved(dataset)
    if classified_digest != content_digest:
        raise ClassificationStale(dataset)


def classify_file(path: Path, detectors: DetectorSet, policy: Policy) -> tuple[list[FieldLabel], DatasetLabels]:
    """Classify one file on disk (CSV, Parquet, FASTQ, BAM, CRAM, VCF, BCF) by its content alone."""
    from seqlife.collect import sniff_format
    from seqlife.tableio import read_table_file
    from seqlife.exceptions import UnknownFormat

    with open(path, "rb") as handle:
        magic = handle.read(4)
    label = path.name
    special_rows, groups, subjects = 0, (), 0
    if magic == b"PAR1":
        columns: Mapping[str, Any] = ParquetColumns(path)
    else:
        try:
            file_format = sniff_format(path, label)
        except UnknownFormat:
            file_format = "csv"
        if file_format == "csv":  # any table export: CSV/TSV in UTF-8 or GB18030, .xlsx
            table = read_table_file(path, label)
            columns = {name: table.column(name) for name in table.column_names}
        else:
            with open(path, "rb") as handle:
                header = read_header(handle, file_format, label)
            fields = label_header(label, header, detectors, policy)
            subjects = len(header.fields.get("samples", ())) or 1
            return fields, summarise(fields, data_kind="raw", genomic_subjects=subjects,
                                     special_rows=0, special_groups=(), policy=policy)
    fields, special_rows, groups = label_table(label, columns, detectors, policy,
                                              load_special_diseases())
    return fields, summarise(fields, data_kind="raw", genomic_subjects=0,
                             special_rows=special_rows, special_groups=groups, policy=policy)
