"""Content detectors: what kind of identifier or measure a column holds, judged by its values.

A column is classified from a uniform sample of its values, so a table whose column names were
never seen (or were renamed to hide them) is still recognised; the column name is only a hint that
lowers the share of matching values needed and raises confidence. The detectors themselves are
data, ``data_catalog/policies/classify_detectors.yaml``, each next to the clause that makes its
content an identifier (GB/T 39725 §10.2 a–d, Table 6, App. G; RARE §3.2.4; §6.1 Table 1).

Findings carry counts only. No sampled value is logged, printed, put into an exception or kept in
a finding, because the values are personal identifiers.
"""

from __future__ import annotations

import bisect
import math
import numbers
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from seqlife.exceptions import PolicyFileError
from seqlife.ids import is_valid_old_resident_id, is_valid_resident_id
from seqlife.policy import POLICY_DIR, load_policy

STAGE = "classify_detectors"

#: Most specific first: when several detectors match the same values with equal confidence, the
#: earlier one is the better explanation (a resident ID is also a long digit string, a mobile
#: number is also a number, an address is also text).
SPECIFICITY: tuple[str, ...] = (
    "resident_id", "mobile", "email", "medical_record_no", "insurance_no", "icd10", "date",
    "postcode", "landline", "person_name", "address", "employer", "region", "sex",
    "diagnosis_text", "identifier_code", "age", "stay_days", "free_text", "numeric_measure",
)  # fmt: skip
DETECTOR_NAMES: frozenset[str] = frozenset(SPECIFICITY)

DEFAULT_SAMPLE_SIZE = 2000
#: Share of matching values that suffices when the column name hints at the detector.
DEFAULT_HINT_MIN_SHARE = 0.3
#: Confidence added by a name hint (capped at 1).
NAME_HINT_BONUS = 0.2
#: Rows per validity window when mapping sampled ranks to positions in a chunk with nulls; bounds
#: the extra memory of sampling to one window's index (512 KiB) whatever the column length.
_VALIDITY_WINDOW = 1 << 16

_KINDS = ("regex", "date", "person_name", "address", "vocabulary", "free_text", "numeric")
_COMMON_FIELDS = frozenset({"kind", "name_hints", "min_share", "hint_min_share", "weight"})
_KIND_FIELDS: dict[str, frozenset[str]] = {
    "regex": frozenset({"pattern", "patterns", "validator", "categories", "weight_when_all_match",
                        "hint_patterns", "min_distinct_share", "hint_only"}),
    "date": frozenset({"pattern", "patterns", "min_year", "max_year"}),
    "person_name": frozenset({"surnames", "double_surnames", "exclude_suffixes", "min_length",
                              "max_length"}),
    "address": frozenset({"pattern", "patterns"}),
    "vocabulary": frozenset({"values", "max_distinct", "hint_values"}),
    "free_text": frozenset({"min_length", "min_mean_length", "min_distinct_share", "separators"}),
    "numeric": frozenset({"pattern", "patterns", "code_max_distinct", "whole_numbers_need_hint"}),
}  # fmt: skip
_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
_CJK_ONLY = re.compile(f"[{_CJK}]+")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NAME_SEPARATORS = re.compile(f"[^0-9a-z{_CJK}]+")


@dataclass(frozen=True)
class Finding:
    """Evidence that a column holds one kind of content: counts and scores, never values."""

    detector: str  # e.g. "resident_id"
    matched: int  # sampled non-empty values that match
    sampled: int  # non-empty values looked at
    share: float  # matched / sampled
    confidence: float  # 0..1, from share, the detector's specificity and the name hint
    name_hint: bool  # the column name also suggests this detector


@dataclass(frozen=True, eq=False)
class Detector:
    """One compiled detector: a per-value test plus the thresholds and column-level gates."""

    name: str
    kind: str
    rank: int  # position in SPECIFICITY; lower is more specific
    clause: str
    min_share: float
    hint_min_share: float
    weight: float
    name_hints: tuple[str, ...]
    matches: Callable[[str], bool] = field(repr=False)
    #: The test used instead of ``matches`` when the column name hints at the detector (local
    #: record-number formats, sex coded 1/2): weaker evidence that only counts with the name.
    hint_matches: Callable[[str], bool] | None = field(default=None, repr=False)
    #: For date detectors: the calendar day a value denotes (None when it is not a date).
    parse: Callable[[str], date | None] | None = field(default=None, repr=False)
    weight_when_all_match: float | None = None
    max_distinct: int | None = None
    min_mean_length: float = 0.0
    min_distinct_share: float = 0.0
    #: numeric: whole numbers with at most this many distinct values are codes (sex 1/2, yes/no
    #: 0/1), not measures; they stay unrecognised for a steward to label
    code_max_distinct: int = 0
    #: numeric: whole-number columns (ages, years, days, bed or serial numbers) count as measures
    #: only when the column name says so
    whole_numbers_need_hint: bool = False


@dataclass(frozen=True, eq=False)
class DetectorSet:
    """All detectors, most specific first, compiled once, with their policy file's hash."""

    detectors: tuple[Detector, ...]
    policy_hash: str
    source: str

    def __getitem__(self, name: str) -> Detector:
        for detector in self.detectors:
            if detector.name == name:
                return detector
        raise KeyError(name)


# --- loading ---------------------------------------------------------------------------------


def load_detectors(policy_dir: Path = POLICY_DIR) -> DetectorSet:
    """Load and compile ``classify_detectors.yaml``; a mistake in it raises ``PolicyFileError``."""
    policy = load_policy(STAGE, DETECTOR_NAMES, policy_dir)
    detectors = tuple(
        _compile(name, policy.rules[name].value, policy.rules[name].clause, policy.source)
        for name in SPECIFICITY
    )
    return DetectorSet(detectors=detectors, policy_hash=policy.content_hash, source=policy.source)


def _compile(name: str, spec: Any, clause: str, source: str) -> Detector:
    """Check one detector record field by field and build its per-value test."""
    where = f"{source}: detector '{name}'"
    if not isinstance(spec, Mapping):
        raise PolicyFileError(f"{where}: 'value' must be a mapping with a 'kind'.")
    kind = spec.get("kind")
    if kind not in _KINDS:
        raise PolicyFileError(f"{where}: unknown kind {kind!r}; expected one of {list(_KINDS)}.")
    unknown = set(spec) - _COMMON_FIELDS - _KIND_FIELDS[kind]
    if unknown:
        raise PolicyFileError(f"{where}: unknown field(s) {sorted(unknown)} for kind '{kind}'.")
    if "min_share" not in spec:
        raise PolicyFileError(f"{where}: 'min_share' is required.")
    common = dict(
        name=name,
        kind=kind,
        rank=SPECIFICITY.index(name),
        clause=clause,
        min_share=_fraction(spec, "min_share", where),
        hint_min_share=_fraction(spec, "hint_min_share", where, DEFAULT_HINT_MIN_SHARE),
        weight=_fraction(spec, "weight", where, 1.0),
        name_hints=tuple(_normalise_hint(h) for h in _strings(spec, "name_hints", where, ())),
    )
    if kind == "regex":
        pattern = _alternation(_patterns(spec, where), where)
        check = _validator(spec, where)
        fullmatch = pattern.fullmatch
        matches = fullmatch if check is None else (lambda v: fullmatch(v) is not None and check(v))
        all_match = spec.get("weight_when_all_match")
        hint_matches = None
        if "hint_patterns" in spec:
            loose = _alternation(_strings(spec, "hint_patterns", where), where).fullmatch
            hint_matches = lambda v: matches(v) or loose(v) is not None  # noqa: E731
        if spec.get("hint_only", False):  # the values alone prove nothing: only with the name
            hint_matches, matches = matches, (lambda v: False)
        return Detector(**common, matches=matches, hint_matches=hint_matches,
                        weight_when_all_match=None if all_match is None
                        else _fraction(spec, "weight_when_all_match", where),
                        min_distinct_share=_fraction(spec, "min_distinct_share", where, 0.0))
    if kind == "date":
        parse = _date_parser(spec, where)
        return Detector(**common, matches=lambda v: parse(v) is not None, parse=parse)
    if kind == "person_name":
        return Detector(**common, matches=_name_test(spec, where))
    if kind == "address":
        searches = tuple(_regex(p, where).search for p in _patterns(spec, where))
        return Detector(**common, matches=lambda v: any(search(v) for search in searches))
    if kind == "vocabulary":
        vocabulary = frozenset(v.casefold() for v in _strings(spec, "values", where))
        hinted = vocabulary | frozenset(v.casefold() for v in _strings(spec, "hint_values", where, ()))
        max_distinct = _integer(spec, "max_distinct", where, len(vocabulary))
        return Detector(**common, matches=lambda v: v.casefold() in vocabulary,
                        hint_matches=(lambda v: v.casefold() in hinted) if hinted != vocabulary
                        else None, max_distinct=max_distinct)
    if kind == "free_text":
        min_length = _integer(spec, "min_length", where, 1)
        separators = _regex(_required(spec, "separators", where), where).search
        return Detector(**common,
                        matches=lambda v: len(v) >= min_length and separators(v) is not None,
                        min_mean_length=float(_integer(spec, "min_mean_length", where, 0)),
                        min_distinct_share=_fraction(spec, "min_distinct_share", where, 0.0))
    fullmatch = _alternation(_patterns(spec, where), where).fullmatch  # numeric
    return Detector(**common, matches=fullmatch,
                    code_max_distinct=_integer(spec, "code_max_distinct", where, 0),
                    whole_numbers_need_hint=bool(spec.get("whole_numbers_need_hint", False)))


def _required(spec: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in spec:
        raise PolicyFileError(f"{where}: field '{key}' is required.")
    return spec[key]


def _fraction(spec: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise PolicyFileError(f"{where}: '{key}' must be a number between 0 and 1.")
    return float(value)


def _integer(spec: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PolicyFileError(f"{where}: '{key}' must be a non-negative integer.")
    return value


def _strings(spec: Mapping[str, Any], key: str, where: str,
             default: Sequence[str] | None = None) -> tuple[str, ...]:
    value = spec.get(key, default)
    if value is None:
        raise PolicyFileError(f"{where}: field '{key}' is required.")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise PolicyFileError(f"{where}: '{key}' must be a list of non-empty strings.")
    return tuple(value)


def _patterns(spec: Mapping[str, Any], where: str) -> tuple[str, ...]:
    if ("pattern" in spec) == ("patterns" in spec):
        raise PolicyFileError(f"{where}: give exactly one of 'pattern' or 'patterns'.")
    if "pattern" in spec:
        if not isinstance(spec["pattern"], str) or not spec["pattern"]:
            raise PolicyFileError(f"{where}: 'pattern' must be a non-empty string.")
        return (spec["pattern"],)
    return _strings(spec, "patterns", where)


def _regex(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise PolicyFileError(f"{where}: pattern does not compile ({exc}).") from exc


def _alternation(patterns: Sequence[str], where: str) -> re.Pattern[str]:
    """One compiled pattern for several, so a value is tested once."""
    return _regex("|".join(f"(?:{p})" for p in patterns), where)


def _icd10_categories(spec: Mapping[str, Any], where: str) -> Callable[[str], bool]:
    """The 3-character category must fall in a chapter block such as 'A00-B99' (WHO ICD-10)."""
    blocks = _strings(spec, "categories", where)
    block = re.compile(r"([A-Z][0-9]{2})-([A-Z][0-9]{2})")
    every = [f"{letter}{n:02d}" for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for n in range(100)]
    allowed: set[str] = set()
    for text in blocks:
        found = block.fullmatch(text)
        if found is None or found.group(1) > found.group(2):
            raise PolicyFileError(f"{where}: category block {text!r} is not like 'A00-B99'.")
        allowed.update(c for c in every if found.group(1) <= c <= found.group(2))
    categories = frozenset(allowed)
    return lambda v: v[:3] in categories


_VALIDATORS: dict[str, Callable[[Mapping[str, Any], str], Callable[[str], bool]]] = {
    "resident_id_check_digit": lambda spec, where: (
        lambda v: is_valid_resident_id(v) or is_valid_old_resident_id(v)),
    "icd10_category": _icd10_categories,
}


def _validator(spec: Mapping[str, Any], where: str) -> Callable[[str], bool] | None:
    name = spec.get("validator")
    if name is None:
        if "categories" in spec:
            raise PolicyFileError(f"{where}: 'categories' needs validator 'icd10_category'.")
        return None
    if name not in _VALIDATORS:
        raise PolicyFileError(f"{where}: unknown validator {name!r}; known: {sorted(_VALIDATORS)}.")
    return _VALIDATORS[name](spec, where)


def _date_parser(spec: Mapping[str, Any], where: str) -> Callable[[str], date | None]:
    """Full match of a pattern with year/month/day groups, then a real calendar day in range."""
    fullmatches = []
    for text in _patterns(spec, where):
        pattern = _regex(text, where)
        if not {"year", "month", "day"} <= set(pattern.groupindex):
            raise PolicyFileError(f"{where}: date patterns need groups year, month and day.")
        fullmatches.append(pattern.fullmatch)
    low, high = _integer(spec, "min_year", where, 1), _integer(spec, "max_year", where, 9999)

    def parse(value: str) -> date | None:
        for fullmatch in fullmatches:
            found = fullmatch(value)
            if found is None:
                continue
            year = int(found["year"])
            if not low <= year <= high:
                return None
            try:
                return date(year, int(found["month"]), int(found["day"]))
            except ValueError:
                return None
        return None

    return parse


def _name_test(spec: Mapping[str, Any], where: str) -> Callable[[str], bool]:
    """2-4 CJK characters opening with a lexicon surname; not ending like a place or a thing."""
    singles = frozenset(_strings(spec, "surnames", where))
    doubles = frozenset(_strings(spec, "double_surnames", where, ()))
    if any(len(s) != 1 for s in singles) or any(len(s) != 2 for s in doubles):
        raise PolicyFileError(
            f"{where}: 'surnames' are single characters, 'double_surnames' pairs of characters.")
    excluded = frozenset(_strings(spec, "exclude_suffixes", where, ()))
    shortest = _integer(spec, "min_length", where, 2)
    longest = _integer(spec, "max_length", where, 4)
    cjk_only = _CJK_ONLY.fullmatch

    def is_name(value: str) -> bool:
        if not shortest <= len(value) <= longest or value[-1] in excluded or not cjk_only(value):
            return False
        if value[:2] in doubles and len(value) >= 3:
            return True
        return value[0] in singles

    return is_name


def _normalise_name(name: str) -> str:
    """'attendingDoctor', 'Attending-Doctor' -> '_attending_doctor_' (underscore-bounded tokens)."""
    return "_" + _NAME_SEPARATORS.sub("_", _CAMEL.sub(r"\1_\2", name).lower()).strip("_") + "_"


def _normalise_hint(hint: str) -> str:
    return _normalise_name(hint) if hint.isascii() else hint


def name_has_hint(name: str, hints: Iterable[str]) -> bool:
    """Whether a column name carries one of ``hints`` (whole ASCII tokens; CJK anywhere)."""
    normalised = _normalise_name(name)
    return any(_normalise_hint(hint) in normalised for hint in hints)


def column_dates(column: pa.ChunkedArray | pa.Array | Sequence[object], parse: Callable[[str], date | None],
                 positions: Sequence[int] | None = None) -> list[date | None]:
    """The calendar day of each value (at ``positions``, or every row): Arrow dates and
    timestamps as they are, text through ``parse`` (a date detector's); None when missing or not
    a date."""
    arrow = _as_arrow(column)
    if arrow is not None:
        if positions is not None:
            arrow = arrow.take(pa.array(list(positions), pa.int64()))
        values: Sequence[object] = arrow.to_pylist()
    else:
        values = list(column) if positions is None else [column[i] for i in positions]  # type: ignore[index]
    out: list[date | None] = []
    for value in values:
        if _is_null(value):
            out.append(None)
        elif isinstance(value, datetime):
            out.append(value.date())
        elif isinstance(value, date):
            out.append(value)
        else:
            out.append(parse(_text(value)))
    return out


def _has_hint(normalised_name: str, detector: Detector) -> bool:
    """ASCII hints match whole name tokens ('date' in birth_date, not in 'update'); CJK anywhere."""
    return any(hint in normalised_name for hint in detector.name_hints)


# --- sampling --------------------------------------------------------------------------------


def _is_null(value: object) -> bool:
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _as_arrow(column: object) -> pa.ChunkedArray | None:
    """Arrow input (or a pandas Series that converts cleanly) as one ChunkedArray, else None."""
    if isinstance(column, pa.ChunkedArray):
        return column
    if isinstance(column, pa.Array):
        return pa.chunked_array([column], type=column.type)
    if isinstance(column, (pd.Series, pd.Index)):
        try:
            return pa.chunked_array([pa.array(column, from_pandas=True)])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None
    return None


def _ranks(population: int, size: int, seed: int) -> list[int]:
    """Sorted uniform sample of ``size`` of ``population`` ranks without replacement, O(size)."""
    return sorted(random.Random(seed).sample(range(population), size))


def _valid_positions(column: pa.ChunkedArray, ranks: list[int]) -> pa.Array:
    """Positions of the ``ranks``-th non-null values (sorted), one validity window at a time."""
    positions: list[int] = []
    offset = base = 0  # offset: rows before the chunk; base: non-null values before it
    for chunk in column.chunks:
        valid = len(chunk) - chunk.null_count
        lo, hi = bisect.bisect_left(ranks, base), bisect.bisect_left(ranks, base + valid)
        if lo < hi and chunk.null_count == 0:
            positions.extend(offset + rank - base for rank in ranks[lo:hi])
        elif lo < hi:
            window_base = base
            for start in range(0, len(chunk), _VALIDITY_WINDOW):
                window = chunk.slice(start, _VALIDITY_WINDOW)
                in_window = len(window) - window.null_count
                window_hi = bisect.bisect_left(ranks, window_base + in_window, lo, hi)
                if lo < window_hi:
                    index = pc.indices_nonzero(window.is_valid())
                    local = pa.array([r - window_base for r in ranks[lo:window_hi]], pa.int64())
                    positions.extend(offset + start + p for p in index.take(local).to_pylist())
                lo, window_base = window_hi, window_base + in_window
                if lo >= hi:
                    break
        base += valid
        offset += len(chunk)
    return pa.array(positions, pa.int64())


def _sample_arrow(column: pa.ChunkedArray, size: int, seed: int) -> pa.ChunkedArray:
    present = len(column) - column.null_count
    if present <= size:
        return column.drop_null() if column.null_count else column
    ranks = _ranks(present, size, seed)
    if column.null_count == 0:
        return column.take(pa.array(ranks, pa.int64()))
    return column.take(_valid_positions(column, ranks))


def sample_values(
    column: pa.ChunkedArray | pa.Array | Sequence[object],
    size: int = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
) -> list[object]:
    """A deterministic uniform sample, without replacement, of the column's non-null values.

    The whole column (nulls dropped) comes back when it has at most ``size`` non-null values;
    otherwise ``size`` values in column order. The same column and seed always give the same
    sample. For Arrow input the sampled ranks are drawn lazily from ``range(non_null)`` and fetched
    with one ``take`` of sorted indices, so memory beyond the column is O(size) (plus one 64 Ki-row
    validity window when a chunk has nulls). Python sequences are indexed in place.

    Why 2,000 values are enough: a detector only has to tell a column where ~0 % of values match
    from one where >= 80 % do. The standard error of a sampled share is sqrt(p(1-p)/n), at most
    sqrt(0.25/2000) = 1.1 percentage points (at p = 0.5, less near 0 % or 100 %, and less again
    for columns not much longer than the sample). An 80 % threshold sits dozens of standard errors
    away from both ends, so a larger sample would cost time and not change a decision.
    """
    if size < 0:
        raise ValueError("sample size must be >= 0")
    arrow = _as_arrow(column)
    if arrow is not None:
        if size == 0 or len(arrow) == arrow.null_count:
            return []
        return [v for v in _sample_arrow(arrow, size, seed).to_pylist() if not _is_null(v)]
    values = column if isinstance(column, Sequence) and not isinstance(column, (str, bytes)) \
        else list(column)  # type: ignore[arg-type]
    present = [i for i, value in enumerate(values) if not _is_null(value)]
    if len(present) > size:
        present = [present[rank] for rank in _ranks(len(present), size, seed)]
    return [values[i] for i in present]


# --- detection -------------------------------------------------------------------------------


def _arrow_kind(data_type: pa.DataType) -> str:
    """'temporal', 'float', 'integer', 'text' or 'other' (booleans, times, nested: no detector)."""
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    if pa.types.is_date(data_type) or pa.types.is_timestamp(data_type):
        return "temporal"
    if pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return "float"
    if pa.types.is_integer(data_type):
        return "integer"
    if (pa.types.is_string(data_type) or pa.types.is_large_string(data_type)
            or pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type)
            or getattr(pa.types, "is_string_view", lambda t: False)(data_type)
            or getattr(pa.types, "is_binary_view", lambda t: False)(data_type)):
        return "text"
    return "other"


def _python_kind(values: Sequence[object]) -> str:
    """The same kinds for plain Python values (all values must agree, else 'text')."""
    if not values:
        return "other"
    if all(isinstance(v, (date, datetime)) for v in values):
        return "temporal"
    if any(isinstance(v, bool) for v in values):
        return "other" if all(isinstance(v, bool) for v in values) else "text"
    if all(isinstance(v, numbers.Integral) for v in values):
        return "integer"
    if all(isinstance(v, numbers.Real) for v in values):
        return "float"
    return "text"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    return str(value).strip()


def _finding(detector: Detector, matched: int, sampled: int, hinted: bool) -> Finding:
    share = matched / sampled if sampled else 0.0
    weight = detector.weight
    if detector.weight_when_all_match is not None and sampled and matched == sampled:
        weight = detector.weight_when_all_match
    confidence = min(1.0, weight * share + (NAME_HINT_BONUS if hinted else 0.0))
    return Finding(detector.name, matched, sampled, share, round(confidence, 6), hinted)


def _passes(detector: Detector, matched: int, sampled: int, hinted: bool) -> bool:
    if not sampled or not matched:
        return False
    threshold = min(detector.min_share, detector.hint_min_share) if hinted else detector.min_share
    return matched / sampled >= threshold


def _column_gate(detector: Detector, texts: Sequence[str]) -> bool:
    """Column-level conditions: few distinct sex codes; long, varied free text."""
    if detector.max_distinct is not None:
        if len({t.casefold() for t in texts}) > detector.max_distinct:
            return False
    if detector.min_mean_length or detector.min_distinct_share:
        if sum(map(len, texts)) / len(texts) < detector.min_mean_length:
            return False
        if len(set(texts)) / len(texts) < detector.min_distinct_share:
            return False
    return True


_WHOLE = re.compile(r"[+-]?[0-9]+")
_TRAILING_ZEROS = re.compile(r"([+-]?[0-9]+)\.0+")


def _whole(text: str) -> str:
    """'18261973069.0' -> '18261973069': a whole number written as a float is its digits."""
    found = _TRAILING_ZEROS.fullmatch(text)
    return found.group(1) if found else text


def _is_code(detector: Detector, texts: Sequence[str]) -> bool:
    """Whole numbers with few distinct values (1/2, 0/1/9) are category codes, not measures."""
    if not detector.code_max_distinct:
        return False
    distinct = set(texts)
    if len(distinct) > detector.code_max_distinct:
        return False
    try:
        return all(float(t).is_integer() for t in distinct)
    except ValueError:
        return False


def _sorted(findings: Iterable[Finding], detectors: DetectorSet) -> list[Finding]:
    rank = {d.name: d.rank for d in detectors.detectors}
    return sorted(findings, key=lambda f: (-f.confidence, rank.get(f.detector, len(rank))))


def detect_column(
    name: str,
    column: pa.ChunkedArray | pa.Array | Sequence[object],
    detectors: DetectorSet,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> list[Finding]:
    """Every detector the column's content satisfies, best first; [] when nothing fits.

    A detector fits when its share of matching non-empty sampled values reaches ``min_share``, or
    ``hint_min_share`` when the column name hints at it. Arrow date/timestamp columns are dates
    (share 1.0) and float/decimal columns are measures without looking further: a float is never
    a postcode or a phone number. Integer columns are tested as their decimal digits (an
    all-digit CSV column of resident IDs, mobiles or postcodes is read as int64) and count as
    measures only when no identifier fits. Findings are ordered by confidence, then specificity.
    """
    arrow = _as_arrow(column)
    values = sample_values(arrow if arrow is not None else column, sample_size)
    if arrow is not None:
        kind = _arrow_kind(arrow.type) if values else "other"
    else:
        kind = _python_kind(values)
    normalised = _normalise_name(name)
    hinted = {d.name: _has_hint(normalised, d) for d in detectors.detectors}

    if kind == "other":
        return []
    if kind == "temporal":
        date_detector = detectors["date"]
        return [_finding(date_detector, len(values), len(values), hinted["date"])]
    if kind == "float":
        measures = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
        numeric = detectors["numeric_measure"]
        if not measures:
            return []
        if not all(float(v).is_integer() for v in measures):
            return [_finding(numeric, len(measures), len(measures), hinted["numeric_measure"])]
        # Whole numbers stored as floats (a phone or ID column with blanks, exported through
        # pandas or Excel) are tested as the digits they are, like an integer column.
        values, kind = [int(v) for v in measures], "integer"

    texts = [_whole(text) for text in map(_text, values) if text]
    if not texts:
        return []
    findings: list[Finding] = []
    numeric_detectors: list[Detector] = []
    for detector in detectors.detectors:
        if detector.kind == "numeric":
            numeric_detectors.append(detector)
            continue
        matches = (detector.hint_matches if hinted[detector.name] and detector.hint_matches
                   else detector.matches)
        matched = sum(1 for text in texts if matches(text))
        if _passes(detector, matched, len(texts), hinted[detector.name]) and \
                _column_gate(detector, texts):
            findings.append(_finding(detector, matched, len(texts), hinted[detector.name]))
    whole = kind == "integer" or all(_WHOLE.fullmatch(t) for t in texts)
    if not findings:  # a measure is a number that no identifier detector explains
        for detector in (d for d in numeric_detectors if not _is_code(d, texts)
                         and not (whole and d.whole_numbers_need_hint and not hinted[d.name])):
            matched = len(texts) if kind == "integer" else \
                sum(1 for text in texts if detector.matches(text))
            if _passes(detector, matched, len(texts), hinted[detector.name]):
                findings.append(_finding(detector, matched, len(texts), hinted[detector.name]))
    return _sorted(findings, detectors)


def date_parser(detectors: DetectorSet | None = None) -> Callable[[str], date | None]:
    """The date detector as a parser: the formats classification recognises are the ones every
    stage reads (2018-01-01, 2018/1/1, 20180101, 2018年1月1日, with times)."""
    parse = (detectors or load_detectors())["date"].parse
    if parse is None:
        raise PolicyFileError("The date detector has no parser; check classify_detectors.yaml.")
    return parse


def best_finding(findings: list[Finding]) -> Finding | None:
    """The most confident finding (ties go to the more specific detector), or None."""
    if not findings:
        return None
    rank = {name: i for i, name in enumerate(SPECIFICITY)}
    return min(findings, key=lambda f: (-f.confidence, rank.get(f.detector, len(rank))))
