"""Quality gate, pure core: QC metrics, variant table, value-free summaries, masking, decision.

Quality must meet business needs (GB/T 39725 §10.1 f): data imported correctly and completely,
missing values, duplicates and uniqueness of subject IDs checked (§11.3.4.5 c), at each processing
stage (§11.3.4.7 e); sequencing QC is part of the master data (SEQ §5). The thresholds are data,
``data_catalog/policies/quality.yaml``; the Great Expectations suites that apply them live in
``expectations/`` and run in ``tasks/quality.py``. This module never imports GX: it computes the
tables GX validates and reduces GX's JSON result to what may be kept.

**No data value leaves the gate** (GB/T 39725 §10.2 a). :func:`summarise` builds a
:class:`Summary` from a whitelist (expectation type, column names, counts, the rule that built the
expectation), so nothing GX adds to a result can slip through; :func:`mask_result` keeps GX's
result shape for the report but replaces every value that is not a count by ``«masked»``; and
:func:`decide` writes its message from summaries only.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import math
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pysam

from seqlife.classify.detectors import DETECTOR_NAMES
from seqlife.classify.detectors import STAGE as DETECTOR_STAGE
from seqlife.collect import FastqBlocks
from seqlife.exceptions import PolicyFileError, SeqlifeError
from seqlife.policy import POLICY_DIR, Policy, load_policy

STAGE = "quality"

#: Every rule quality.yaml must hold (and no other).
REQUIRED_RULES: frozenset[str] = frozenset({
    "suites",
    "clinical_subject", "clinical_value_sets", "clinical_ranges", "clinical_date_order",
    "variant_chrom", "variant_min_pos", "variant_ref", "variant_alt", "variant_gt",
    "qc_min_reads", "qc_min_q30_share", "qc_gc_share", "qc_min_mapped_share", "qc_sample_reads",
    "variant_sample_records",
    "deidentified_no_identifiers", "deidentified_quasi_identifiers", "deidentified_date_shift",
    "unexpected_value_masking", "result_format",
})  # fmt: skip

#: The suites that exist (one module each in ``expectations/``).
KNOWN_SUITES = ("clinical", "variants", "sequencing_qc", "deidentified")

#: What replaces every unexpected value in a kept result (GB/T 39725 §10.2 a).
MASK = "«masked»"

#: Columns the quality stage computes before validation; never data of the source table.
#: Per shifted date column ``C``: ``_shift_days__C`` is that date's shift in days; every one must
#: equal ``_subject_shift_days``, the shift of the subject's first dated row.
SHIFT_DAYS_PREFIX = "_shift_days__"
SUBJECT_SHIFT_DAYS = "_subject_shift_days"

#: Columns of the variant table derived from a VCF, in order.
VARIANT_COLUMNS = ("CHROM", "POS", "REF", "ALT", "SAMPLE", "GT")
#: Columns of the sequencing QC table, in order.
QC_COLUMNS = ("file", "format", "reads", "bases", "q30_share", "gc_share", "mapped_share",
              "sampled")  # fmt: skip

# Phred+33 characters below Q30 (FASTQ) and raw Phred values below 30 (BAM), deleted with
# bytes.translate so that the length of what is left is the number of bases >= Q30.
_BELOW_Q30_FASTQ = bytes(range(33 + 30))
_BELOW_Q30_RAW = bytes(range(30))

# Keys of a GX expectation result that are counts or shares, never data values.
_COUNT_KEYS = frozenset({
    "element_count", "unexpected_count", "unexpected_percent", "missing_count",
    "missing_percent", "unexpected_percent_total", "unexpected_percent_nonmissing",
})  # fmt: skip
# Keys of GX expectation kwargs that name the columns an expectation looks at.
_COLUMN_KWARGS = ("column", "column_A", "column_B", "column_list")

#: Plain words for each expectation type, for the steward's message.
PLAIN_WORDS: Mapping[str, str] = {
    "expect_column_to_exist": "the column must be present",
    "expect_column_values_to_be_unique": "values must be unique",
    "expect_column_values_to_not_be_null": "every row must have a value",
    "expect_column_values_to_be_in_set": "values must be one of the declared codes",
    "expect_column_values_to_be_between": "values must lie in the allowed range",
    "expect_column_pair_values_a_to_be_greater_than_b":
        "the later date must not be before the earlier one",
    "expect_column_pair_values_to_be_equal": "the shifted stay must equal the original stay",
    "expect_column_values_to_match_regex": "values must have the declared format",
    "expect_column_values_to_not_match_regex": "no value may contain a direct identifier",
    "expect_quasi_identifiers_to_be_k_anonymous":
        "every combination of quasi-identifiers must be shared by at least k rows",
}  # fmt: skip


class QualityError(SeqlifeError):
    """The quality stage could not measure or validate what it was given."""

    stage = "quality"


class QualityGateFailed(QualityError):
    """Data did not meet the quality policy; the steward message lists every failed check.

    ``report_html`` is the masked report (safe to keep with the dataset version and to audit);
    ``decision`` holds the summaries' verdict. Neither carries a data value.
    """

    stage = "quality"

    def __init__(self, decision: Decision, report_html: str = "") -> None:
        super().__init__(decision.message, failed_suites=list(decision.failed_suites))
        self.decision = decision
        self.report_html = report_html


# --- policy ---------------------------------------------------------------------------------


def load_quality_policy(policy_dir: Path = POLICY_DIR) -> Policy:
    """Load ``quality.yaml`` and check every value's kind; a mistake raises ``PolicyFileError``."""
    policy = load_policy(STAGE, REQUIRED_RULES, policy_dir)
    check_quality_policy(policy, policy_dir)
    return policy


def check_quality_policy(policy: Policy, policy_dir: Path | None = None) -> None:
    """Refuse values the suites could not apply, naming the file and the rule."""
    where = policy.source

    def fail(rule: str, problem: str) -> PolicyFileError:
        return PolicyFileError(f"{where}: rule '{rule}' {problem}.")

    suites = policy["suites"]
    if not _is_str_list(suites) or set(suites) - set(KNOWN_SUITES):
        raise fail("suites", f"must list suites among {list(KNOWN_SUITES)}")
    subject = policy["clinical_subject"]
    if not isinstance(subject, Mapping) or not _is_str_list(subject.get("columns")) \
            or set(subject) - {"columns", "unique", "not_null"} \
            or not all(isinstance(subject.get(k, True), bool) for k in ("unique", "not_null")):
        raise fail("clinical_subject", "needs 'columns' (a list of names) and boolean "
                   "'unique'/'not_null'")
    value_sets = policy["clinical_value_sets"]
    if not isinstance(value_sets, Mapping) or not all(
            isinstance(v, list) and v for v in value_sets.values()):
        raise fail("clinical_value_sets", "must map each column to a non-empty list of codes")
    ranges = policy["clinical_ranges"]
    if not isinstance(ranges, Mapping):
        raise fail("clinical_ranges", "must map each column to {min, max}")
    for column, bounds in ranges.items():
        _bounds(bounds, fail("clinical_ranges", f"column '{column}' needs numeric min <= max"))
    order = policy["clinical_date_order"]
    if not isinstance(order, list) or not all(
            isinstance(p, Mapping) and set(p) == {"earlier", "later"} for p in order):
        raise fail("clinical_date_order", "must be a list of {earlier, later} column pairs")
    for rule in ("variant_chrom", "variant_ref", "variant_alt", "variant_gt"):
        try:
            re.compile(policy[rule])
        except (re.error, TypeError) as exc:
            raise fail(rule, f"is not a regular expression that compiles ({exc})") from exc
    for rule, least in (("variant_min_pos", 1), ("qc_min_reads", 0),
                        ("qc_sample_reads", 1), ("variant_sample_records", 1)):
        value = policy[rule]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise fail(rule, f"must be a whole number >= {least}")
    for rule in ("qc_min_q30_share", "qc_min_mapped_share"):
        if not _is_share(policy[rule]):
            raise fail(rule, "must be a share between 0 and 1")
    low, high = _bounds(policy["qc_gc_share"], fail("qc_gc_share", "needs shares min <= max"))
    if not (_is_share(low) and _is_share(high)):
        raise fail("qc_gc_share", "needs shares between 0 and 1")
    declared = policy["deidentified_quasi_identifiers"]
    if not isinstance(declared, Mapping) or set(declared) != {"attribute"} or \
            not isinstance(declared["attribute"], str) or not declared["attribute"]:
        raise fail("deidentified_quasi_identifiers", "needs exactly 'attribute' (a name)")
    shift = policy["deidentified_date_shift"]
    if not isinstance(shift, Mapping) or set(shift) != {"subject"}:
        raise fail("deidentified_date_shift", "needs exactly 'subject'")
    if policy["unexpected_value_masking"] is not True:
        raise fail("unexpected_value_masking", "cannot be switched off: unexpected values are "
                   f"never stored ({policy.clause('unexpected_value_masking')})")
    if policy["result_format"] not in ("SUMMARY", "COMPLETE"):
        raise fail("result_format", "must be SUMMARY or COMPLETE")
    identifier_patterns(policy, policy_dir)  # detectors exist, are regexes and compile


def _folder_of(policy: Policy) -> Path:
    """The folder a policy was loaded from (its sibling files belong to the same version)."""
    folder = Path(policy.source).parent
    return folder if folder.is_dir() else POLICY_DIR


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_share(value: object) -> bool:
    return _is_number(value) and 0 <= value <= 1  # type: ignore[operator]


def _bounds(value: object, error: PolicyFileError) -> tuple[float, float]:
    if not isinstance(value, Mapping) or set(value) != {"min", "max"} \
            or not (_is_number(value["min"]) and _is_number(value["max"])) \
            or value["min"] > value["max"]:
        raise error
    return value["min"], value["max"]


def identifier_patterns(policy: Policy, policy_dir: Path | None = None) -> dict[str, str]:
    """Search patterns for the direct identifiers no de-identified value may contain.

    The patterns are the classify stage's own detectors (``classify_detectors.yaml``), so what
    classification calls a mobile number is what the gate refuses. Detectors match whole values;
    here they are searched anywhere in a value (a number left inside a note counts), bounded by
    non-digits so a longer digit string is not mistaken for one. The detector file is read from
    ``policy_dir``, by default the folder the quality policy was loaded from.
    """
    detectors = load_policy(DETECTOR_STAGE, DETECTOR_NAMES, policy_dir or _folder_of(policy))
    names = policy["deidentified_no_identifiers"]
    if not _is_str_list(names):
        raise PolicyFileError(f"{policy.source}: rule 'deidentified_no_identifiers' must list "
                              "detector names.")
    patterns: dict[str, str] = {}
    for name in names:
        spec = detectors.rules[name].value if name in detectors.rules else None
        if not isinstance(spec, Mapping) or spec.get("kind") != "regex":
            raise PolicyFileError(
                f"{policy.source}: rule 'deidentified_no_identifiers' names '{name}', which is "
                f"not a regex detector of {detectors.source}.")
        alternatives = [spec["pattern"]] if "pattern" in spec else list(spec["patterns"])
        pattern = "(?<![0-9])(?:" + "|".join(f"(?:{p})" for p in alternatives) + ")(?![0-9])"
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PolicyFileError(f"{detectors.source}: detector '{name}' does not compile "
                                  f"({exc}).") from exc
        patterns[name] = pattern
    return patterns


# --- sequencing QC metrics (SEQ §5) ---------------------------------------------------------


def sequencing_qc_metrics(path: Path, fmt: str, max_reads: int | None = None) -> dict[str, Any]:
    """Reads, bases, share of bases >= Q30 and GC share of a FASTQ (plain or gzip) or BAM.

    Streams the file in constant memory. For BAM, reads are primary alignments (secondary and
    supplementary ones are skipped), ``mapped_share`` is mapped / primary reads, and ``bases``
    and ``q30_share`` count the base qualities of mapped reads only.

    Args:
        path: the file.
        fmt: ``"fastq"`` or ``"bam"``.
        max_reads: stop after this many reads (a sample of a large file); ``sampled`` says
            whether the limit was reached.

    Returns:
        ``{format, reads, bases, q30_share, gc_share, mapped_share, sampled}``; shares are None
        when there is nothing to divide by (no reads), ``mapped_share`` is None for FASTQ.

    Raises:
        QualityError: the file cannot be read as ``fmt``, or ``fmt`` is unknown.
    """
    if max_reads is not None and max_reads < 1:
        raise QualityError(f"max_reads must be at least 1 (got {max_reads}).")
    if fmt == "fastq":
        return _fastq_metrics(Path(path), max_reads)
    if fmt == "bam":
        return _bam_metrics(Path(path), max_reads)
    raise QualityError(f"Sequencing QC metrics are computed for FASTQ and BAM, not '{fmt}'.")


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _fastq_lines(blocks: FastqBlocks, label: str) -> Iterator[list[bytes]]:
    yield from blocks
    tail = blocks.tail()
    if len(tail) % 4:
        raise QualityError(f"{label}: FASTQ ends inside a record (truncated); QC cannot be "
                           "measured.")
    if tail:
        yield tail


def _fastq_metrics(path: Path, max_reads: int | None) -> dict[str, Any]:
    reads = bases = q30 = gc = acgt = 0
    sampled = False
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream: BinaryIO = (gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
                            if is_gzip else raw)
        try:
            for lines in _fastq_lines(FastqBlocks(stream), path.name):
                if max_reads is not None and reads + len(lines) // 4 >= max_reads:
                    lines, sampled = lines[: 4 * (max_reads - reads)], True
                if lines and not all(h[:1] == b"@" for h in lines[0::4]):
                    raise QualityError(f"{path.name}: not a FASTQ file (a record does not start "
                                       "with '@'); QC cannot be measured.")
                sequences = b"".join(lines[1::4]).replace(b"\r", b"").upper()
                qualities = b"".join(lines[3::4]).replace(b"\r", b"")
                reads += len(lines) // 4
                bases += len(qualities)
                q30 += len(qualities.translate(None, _BELOW_Q30_FASTQ))
                strong = sequences.count(b"G") + sequences.count(b"C")
                gc += strong
                acgt += strong + sequences.count(b"A") + sequences.count(b"T")
                if sampled:
                    break
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise QualityError(f"{path.name}: compressed FASTQ is truncated or corrupt; QC cannot "
                               "be measured.") from exc
    return {"format": "fastq", "reads": reads, "bases": bases, "q30_share": _share(q30, bases),
            "gc_share": _share(gc, acgt), "mapped_share": None, "sampled": sampled}


def _bam_metrics(path: Path, max_reads: int | None) -> dict[str, Any]:
    reads = mapped = bases = q30 = gc = acgt = 0
    sampled = False
    pysam.set_verbosity(0)
    try:
        with pysam.AlignmentFile(str(path), "rb", check_sq=False) as bam:
            for read in bam.fetch(until_eof=True):
                if read.is_secondary or read.is_supplementary:
                    continue
                reads += 1
                sequence = read.query_sequence
                if sequence:
                    sequence = sequence.upper()
                    strong = sequence.count("G") + sequence.count("C")
                    gc += strong
                    acgt += strong + sequence.count("A") + sequence.count("T")
                if not read.is_unmapped:
                    mapped += 1
                    qualities = read.query_qualities
                    if qualities is not None:
                        raw = bytes(qualities)
                        bases += len(raw)
                        q30 += len(raw.translate(None, _BELOW_Q30_RAW))
                if max_reads is not None and reads >= max_reads:
                    sampled = True
                    break
    except (OSError, ValueError) as exc:
        raise QualityError(f"{path.name}: not a readable BAM file; QC cannot be measured.") from exc
    return {"format": "bam", "reads": reads, "bases": bases, "q30_share": _share(q30, bases),
            "gc_share": _share(gc, acgt), "mapped_share": _share(mapped, reads),
            "sampled": sampled}


def qc_table(metrics: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per sequencing file (file label -> metrics), the table the QC suite validates."""
    rows = [{"file": label, **{c: m.get(c) for c in QC_COLUMNS if c != "file"}}
            for label, m in metrics.items()]
    table = pd.DataFrame(rows, columns=list(QC_COLUMNS))
    for column in ("q30_share", "gc_share", "mapped_share"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
    table["reads"] = table["reads"].astype("int64")
    table["bases"] = table["bases"].astype("int64")
    return table


# --- variant table derived from VCF (SEQ §5) ------------------------------------------------


def variant_table(vcf_path: Path, max_records: int | None = None) -> pd.DataFrame:
    """CHROM, POS, REF, ALT, SAMPLE, GT: one row per record and sample of a VCF (plain or BGZF).

    ``SAMPLE`` is the sample's position in the header (0, 1, ...), not its name: raw VCF sample
    names are record numbers, and the checks need none. ALT alleles are comma-joined ('.' when
    there are none); GT is written as in VCF ('0/1', '1|0', '.'). A sites-only VCF gives one row
    per record with SAMPLE and GT empty.

    Raises:
        QualityError: the file is not a readable VCF.
    """
    columns: dict[str, list[Any]] = {name: [] for name in VARIANT_COLUMNS}
    pysam.set_verbosity(0)
    try:
        with pysam.VariantFile(str(vcf_path)) as vcf:
            for count, record in enumerate(vcf):
                if max_records is not None and count >= max_records:
                    break
                alt = ",".join(record.alts) if record.alts else "."
                samples = list(record.samples.values()) or [None]
                for index, sample in enumerate(samples):
                    columns["CHROM"].append(record.chrom)
                    columns["POS"].append(record.pos)
                    columns["REF"].append(record.ref)
                    columns["ALT"].append(alt)
                    columns["SAMPLE"].append(None if sample is None else index)
                    columns["GT"].append(None if sample is None else _genotype(sample))
    except (OSError, ValueError) as exc:
        raise QualityError(f"{Path(vcf_path).name}: not a readable VCF file; the variant table "
                           "cannot be derived.") from exc
    table = pd.DataFrame(columns)
    table["POS"] = table["POS"].astype("int64")
    table["SAMPLE"] = table["SAMPLE"].astype("Int64")
    return table


def _genotype(sample: Any) -> str:
    alleles = sample.get("GT") if "GT" in sample else None
    if not alleles:
        return "."
    separator = "|" if sample.phased else "/"
    return separator.join("." if allele is None else str(allele) for allele in alleles)


# --- de-identified tables: declared quasi-identifiers and the shift of every date (§10.2) -----


def declare_release(df: pd.DataFrame, policy: Policy, quasi_identifiers: Sequence[str]) -> pd.DataFrame:
    """The release with its quasi-identifiers declared in its metadata (``DataFrame.attrs``, kept
    inside the Parquet file), so the gate, certification and sharing check k over the columns the
    de-identification derived from roles, not over names guessed later."""
    out = df.copy()
    out.attrs[policy["deidentified_quasi_identifiers"]["attribute"]] = list(quasi_identifiers)
    return out


def declared_k(df: pd.DataFrame, policy: Policy) -> int:
    """The k a stored release achieves over the quasi-identifiers it declares (0 when it
    declares none or lacks one: certification then refuses rather than trust a report)."""
    from seqlife.deidentify.kanon import k_of

    declared = list(df.attrs.get(policy["deidentified_quasi_identifiers"]["attribute"]) or [])
    if not declared or any(q not in df for q in declared):
        return 0
    subject = policy["deidentified_date_shift"]["subject"]
    return k_of(df, declared, subject if subject in df else None)


def prepare_deidentified(df: pd.DataFrame, policy: Policy,
                         shifts: Mapping[str, pd.Series] | None = None) -> pd.DataFrame:
    """A copy of a de-identified table ready for the de-identified suite.

    ``attrs['k']`` is the k of ``deidentify.yaml`` (the gate never takes k from the table).
    With ``shifts`` (date column -> days each row's date moved, aligned with ``df``'s index; made
    by de-identification from the original dates, which never reach the gate), adds
    ``_shift_days__<column>`` for each and ``_subject_shift_days`` (the subject's first shift),
    so the suite can require every date of a subject to move by one offset.
    """
    from seqlife.deidentify.tables import load_deidentify_policy

    out = df.copy()
    out.attrs = {**df.attrs, "k": int(load_deidentify_policy()["k"])}
    subject = policy["deidentified_date_shift"]["subject"]
    if not shifts or subject not in df:
        return out
    frame = pd.DataFrame({f"{SHIFT_DAYS_PREFIX}{c}": pd.to_numeric(v.reindex(df.index),
                                                                   errors="coerce")
                          for c, v in shifts.items()}, index=df.index).astype("float64")
    first_per_row = frame.bfill(axis=1).iloc[:, 0]
    by_subject = first_per_row.groupby(df[subject]).transform("first")
    for column in frame:
        out[column] = frame[column]
    out[SUBJECT_SHIFT_DAYS] = by_subject.astype("float64")
    return out


# --- result summaries and masking (§10.2 a) -------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What one validation found, without a single data value.

    ``failed`` holds one record per failed expectation: ``expectation`` (GX type), ``column``
    (column names it looked at), ``unexpected_count`` and ``unexpected_percent`` (None when the
    check raised instead), ``rule`` (the policy rule that built it), ``check`` (the policy
    threshold in words) and ``raised_exception``.
    """

    suite: str
    success: bool
    evaluated: int
    failed: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""


def _columns_of(kwargs: Mapping[str, Any]) -> str:
    names: list[str] = []
    for key in _COLUMN_KWARGS:
        value = kwargs.get(key)
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, (list, tuple)):
            names += [v for v in dict.fromkeys(value) if isinstance(v, str)]
    return ", ".join(names)


def _count(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _percent(value: object) -> float | None:
    return float(value) if _is_number(value) else None


def _raised(exception_info: object) -> bool:
    if not isinstance(exception_info, Mapping):
        return False
    if "raised_exception" in exception_info:
        return bool(exception_info["raised_exception"])
    return any(isinstance(info, Mapping) and bool(info.get("raised_exception"))
               for info in exception_info.values())


def describe_results(result_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One value-free record per expectation of a GX result, passed or not.

    Built from a whitelist: expectation type, column names from the expectation's kwargs, integer
    counts and percentages, and the ``rule``/``check`` the suite builder put in the expectation's
    meta. Unexpected lists, index lists, value counts, observed values, details and exception
    texts are never read, so no data value can reach a record.
    """
    records = []
    for item in result_json.get("results") or []:
        config = item.get("expectation_config") or {}
        meta = config.get("meta") or {}
        result = item.get("result") or {}
        raised = _raised(item.get("exception_info"))
        records.append({
            "expectation": str(config.get("type", "")),
            "column": _columns_of(config.get("kwargs") or {}),
            "success": bool(item.get("success")),
            "element_count": _count(result.get("element_count")),
            "unexpected_count": None if raised else _count(result.get("unexpected_count")),
            "unexpected_percent": None if raised else _percent(result.get("unexpected_percent")),
            "rule": str(meta.get("rule", "")),
            "check": str(meta.get("check", "")),
            "raised_exception": raised,
        })
    return records


#: The fields of a failed-expectation record in :class:`Summary`.
FAILED_FIELDS = ("expectation", "column", "unexpected_count", "unexpected_percent", "rule",
                 "check", "raised_exception")  # fmt: skip


def summarise(result_json: Mapping[str, Any], table: str = "") -> Summary:
    """Reduce GX's ``to_json_dict()`` result to counts per failed expectation.

    Uses :func:`describe_results`, a whitelist: nothing GX puts into a result beyond types,
    column names, counts and the builder's rule/check can reach the summary, whatever the
    ``result_format`` (``partial_unexpected_list``, ``unexpected_list``,
    ``partial_unexpected_index_list``, ``partial_unexpected_counts``, ``details``, observed values
    and exception texts are all dropped).
    """
    records = describe_results(result_json)
    failed = [{name: record[name] for name in FAILED_FIELDS}
              for record in records if not record["success"]]
    statistics = result_json.get("statistics") or {}
    evaluated = _count(statistics.get("evaluated_expectations"))
    return Summary(
        suite=str(result_json.get("suite_name", "")),
        success=bool(result_json.get("success")) and not failed,
        evaluated=len(records) if evaluated is None else evaluated,
        failed=failed,
        table=table,
    )


def _mask_value(value: Any, keep_keys: frozenset[str]) -> Any:
    """Same shape, every leaf replaced; dict keys kept only when they are known column names."""
    if isinstance(value, Mapping):
        masked: dict[str, Any] = {}
        for position, (key, item) in enumerate(value.items()):
            name = key if isinstance(key, str) and key in keep_keys else f"{MASK} {position + 1}"
            if name == "count" and _count(item) is not None:
                masked[name] = item
            else:
                masked[name] = _mask_value(item, keep_keys)
        return masked
    if isinstance(value, (list, tuple)):
        return [_mask_value(item, keep_keys) for item in value]
    return MASK


def _mask_exception(info: Any) -> Any:
    if not isinstance(info, Mapping):
        return info
    if "raised_exception" in info:
        masked = dict(info)
        for key in ("exception_message", "exception_traceback"):
            if masked.get(key) is not None:
                masked[key] = MASK
        return masked
    return {key: _mask_exception(item) for key, item in info.items()}


def mask_result(result_json: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a GX result with every unexpected value replaced by ``«masked»``.

    Counts and percentages stay; so do the expectation configurations (built from the policy and
    the table's column names) and the run metadata. Within each expectation's ``result``, every
    other entry (unexpected and partial lists, value counts, index lists and queries, observed
    values, details) keeps its shape but each value becomes ``«masked»``, and so do exception
    messages and tracebacks, which can quote a value. This is the form kept with the dataset
    version and rendered into the report (GB/T 39725 §10.2 a).
    """
    masked = copy.deepcopy(dict(result_json))
    for item in masked.get("results") or []:
        config = item.get("expectation_config") or {}
        kwargs = config.get("kwargs") or {}
        columns = frozenset(c.strip() for c in _columns_of(kwargs).split(",") if c.strip())
        keep = columns | {"value", "count"}
        result = item.get("result")
        if isinstance(result, Mapping):
            item["result"] = {
                key: (value if key in _COUNT_KEYS and (_count(value) is not None
                                                       or _percent(value) is not None
                                                       or value is None)
                      else _mask_value(value, keep))
                for key, value in result.items()
            }
        if "exception_info" in item:
            item["exception_info"] = _mask_exception(item["exception_info"])
    meta = masked.get("meta")
    if isinstance(meta, dict):
        meta["unexpected_values"] = MASK
    return masked


# --- the decision ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Pass or fail, with the message a steward reads and the clauses it rests on."""

    passed: bool
    message: str
    clauses: tuple[str, ...]
    failed_suites: tuple[str, ...] = ()


def _problem(where: str, failure: Mapping[str, Any], policy: Policy) -> tuple[str, str]:
    rule = failure.get("rule", "")
    clause = policy.clause(rule) if rule in policy.rules else policy.clause("suites")
    expectation = failure.get("expectation", "")
    words = PLAIN_WORDS.get(expectation, "the check failed")
    check = f" ({failure['check']})" if failure.get("check") else ""
    column = failure.get("column") or "the table"
    if failure.get("raised_exception"):
        outcome = ("could not be evaluated: the check raised an error (its text is masked in "
                   "the report)")
    elif failure.get("unexpected_count") is not None:
        percent = failure.get("unexpected_percent")
        share = f" ({percent:.1f} %)" if percent is not None else ""
        outcome = f"{failure['unexpected_count']} row(s){share} unexpected"
    else:
        outcome = "failed"
    label = f"rule {rule}; {clause}" if rule else clause
    return (f"{where}: {expectation} on {column} — {outcome}; {words}{check} [{label}]", clause)


def decide(summaries: Sequence[Summary], policy: Policy) -> Decision:
    """Pass only if every suite ran at least one expectation and none failed.

    The message lists each failed expectation with its columns, the count of unexpected rows and
    the clause of the rule behind it; it is built from summaries, so it holds no data value.
    """
    gate_clause = policy.clause("suites")
    masking_clause = policy.clause("unexpected_value_masking")
    problems: list[str] = []
    clauses: list[str] = [gate_clause]
    failed_suites: list[str] = []
    for summary in summaries:
        where = f"{summary.table} [{summary.suite}]" if summary.table else f"[{summary.suite}]"
        found = []
        if summary.evaluated == 0:
            found.append(f"{where}: nothing was checked — the table has none of the columns the "
                         f"'{summary.suite}' suite looks at [{gate_clause}]")
        for failure in summary.failed:
            text, clause = _problem(where, failure, policy)
            found.append(text)
            clauses.append(clause)
        if not summary.success and not summary.failed and summary.evaluated:
            found.append(f"{where}: the validation did not succeed [{gate_clause}]")
        if found:
            failed_suites.append(summary.table or summary.suite)
            problems += found
    if not summaries:
        problems.append(f"no table was validated; the gate cannot pass on nothing [{gate_clause}]")
    unique_clauses = tuple(dict.fromkeys(clauses))
    if problems:
        message = (
            f"Quality gate failed ({gate_clause}): {len(problems)} problem(s) in "
            f"{len(failed_suites) or 1} of {max(len(summaries), 1)} table(s).\n"
            + "\n".join(f"- {p}" for p in problems)
            + f"\nUnexpected values are not shown and are masked in the report kept with the "
            f"dataset version ({masking_clause}). Correct the data, or the de-identification, "
            "and run the quality gate again."
        )
        return Decision(False, message, unique_clauses, tuple(failed_suites))
    evaluated = sum(s.evaluated for s in summaries)
    tables = ", ".join(s.table or s.suite for s in summaries)
    message = (f"Quality gate passed ({gate_clause}): {evaluated} expectation(s) met on "
               f"{len(summaries)} table(s) ({tables}). No unexpected value was kept "
               f"({masking_clause}).")
    return Decision(True, message, unique_clauses, ())


def summaries_as_dicts(summaries: Iterable[Summary]) -> list[dict[str, Any]]:
    """Plain dicts (suite, success, evaluated, failed, table) for certificates and audit records."""
    return [{"suite": s.suite, "success": s.success, "evaluated": s.evaluated,
             "failed": [dict(f) for f in s.failed], "table": s.table} for s in summaries]


def gate_policy_hash(policy: Policy, policy_dir: Path | None = None) -> str:
    """One hash for the quality thresholds, the identifier detectors the gate searches with and
    the de-identification policy whose k the gate enforces."""
    from seqlife.deidentify.tables import load_deidentify_policy

    detectors = load_policy(DETECTOR_STAGE, DETECTOR_NAMES, policy_dir or _folder_of(policy))
    deidentify = load_deidentify_policy()
    return hashlib.sha256(f"{policy.content_hash}:{detectors.content_hash}:"
                          f"{deidentify.content_hash}".encode()).hexdigest()
