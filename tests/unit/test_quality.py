"""Quality gate, pure core: QC metrics, the variant table, value-free summaries, masking, decision.

GB/T 39725 §10.1 f, §11.3.4.5 c, §11.3.4.7 e; SEQ §5 (sequencing QC is master data); §10.2 a
(unexpected values are never stored). No Great Expectations here: the GX results below are
written out in the shape ``ExpectationSuiteValidationResult.to_json_dict()`` has in GX 1.24.
Sequencing files come from ``seqlife.synth.generate_cohort`` (seed 7) or are written in the test.
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pysam
import pytest
import yaml

from seqlife import quality
from seqlife.exceptions import PolicyFileError, SeqlifeError
from seqlife.policy import POLICY_DIR
from seqlife.quality import (
    MASK,
    REQUIRED_RULES,
    Decision,
    QualityError,
    QualityGateFailed,
    Summary,
    decide,
    describe_results,
    load_quality_policy,
    mask_result,
    prepare_deidentified,
    qc_table,
    sequencing_qc_metrics,
    summarise,
    variant_table,
)
from seqlife.synth import READ_LENGTH, generate_cohort

SECRET = "13812345678"          # a mobile number: the value that must never be kept
SECRET_ID = "110101199003074514"  # a resident ID


@pytest.fixture(scope="module")
def policy():
    return load_quality_policy()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quality") / "cohort"
    generate_cohort(out, subjects=3)
    return out


# --- policy (CONVENTIONS 5) --------------------------------------------------------------------


def test_policy_loads_with_every_rule_and_a_clause(policy) -> None:
    assert set(policy.rules) == REQUIRED_RULES
    assert all(rule.clause for rule in policy.rules.values())
    assert policy["unexpected_value_masking"] is True
    assert policy.clause("unexpected_value_masking") == "GB/T 39725 §10.2 a"


def test_gate_k_is_the_deidentify_policy_k(policy, monkeypatch) -> None:
    """GB/T 39725 §10.2 e: the gate enforces the k the de-identification policy sets (one
    source): changing it there changes what the gate demands."""
    from seqlife.deidentify import tables

    table = pd.DataFrame({"subject": ["a", "b"]})
    assert prepare_deidentified(table, policy).attrs["k"] == tables.load_deidentify_policy()["k"]
    real = tables.load_deidentify_policy()
    mutated = type(real)(real.stage, real.version, {**real.rules, "k": type(real.rules["k"])(
        9, real.clause("k"))}, real.content_hash, real.source)
    monkeypatch.setattr(tables, "load_deidentify_policy", lambda: mutated)
    assert prepare_deidentified(table, policy).attrs["k"] == 9


def _policy_dir_with(tmp_path: Path, rule: str, value: object) -> Path:
    for name in ("quality.yaml", "classify_detectors.yaml"):
        shutil.copy(POLICY_DIR / name, tmp_path / name)
    path = tmp_path / "quality.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["rules"][rule]["value"] = value
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("rule, value, message", [
    ("unexpected_value_masking", False, "cannot be switched off"),
    ("variant_chrom", "^(chr", "regular expression that compiles"),
    ("qc_min_q30_share", 1.5, "share between 0 and 1"),
    ("qc_gc_share", {"min": 0.7, "max": 0.3}, "min <= max"),
    ("clinical_ranges", {"age": {"min": 120, "max": 0}}, "column 'age'"),
    ("deidentified_no_identifiers", ["mobile", "no_such_detector"], "no_such_detector"),
    ("deidentified_no_identifiers", ["person_name"], "not a regex detector"),
    ("suites", ["clinical", "imaging"], "must list suites"),
    ("result_format", "BOOLEAN_ONLY", "SUMMARY or COMPLETE"),
    ("deidentified_quasi_identifiers", ["age", "sex"], "needs exactly 'attribute'"),
])
def test_when_a_policy_value_is_unusable_then_loading_names_file_and_rule(
        tmp_path: Path, rule: str, value: object, message: str) -> None:
    with pytest.raises(PolicyFileError, match=message) as caught:
        load_quality_policy(_policy_dir_with(tmp_path, rule, value))
    assert "quality.yaml" in str(caught.value) and rule in str(caught.value)


def test_identifier_patterns_search_inside_values_with_digit_boundaries(policy) -> None:
    """GB/T 39725 §10.2 a: a number left inside a note is found; a longer digit run is not one."""
    import re

    patterns = {name: re.compile(p) for name, p in quality.identifier_patterns(policy).items()}
    assert set(patterns) == {"resident_id", "mobile", "email", "medical_record_no"}
    assert patterns["mobile"].search(f"家属陪同，联系电话{SECRET}。")
    assert not patterns["mobile"].search("9" + SECRET)
    assert patterns["resident_id"].search(f"ID {SECRET_ID}")
    assert patterns["email"].search("write to wang.li@example.cn please")
    assert patterns["medical_record_no"].search("MR00012345")
    assert not any(p.search("aBcDeFgHiJkLmNoPqRsTuVwX") for p in patterns.values())  # a surrogate


# --- sequencing QC metrics (SEQ §5) --------------------------------------------------------------


def test_fastq_metrics_count_reads_bases_q30_and_gc_exactly(tmp_path: Path) -> None:
    """Phred+33: 'I' is Q40, '!' is Q0. GC over A/C/G/T only (N is not counted)."""
    path = tmp_path / "tiny.fastq"
    path.write_bytes(b"@r1\nGGCC\n+\nIIII\n@r2\nATNA\n+\n!!!!\n")
    metrics = sequencing_qc_metrics(path, "fastq")
    assert metrics == {"format": "fastq", "reads": 2, "bases": 8, "q30_share": 0.5,
                       "gc_share": 4 / 7, "mapped_share": None, "sampled": False}


def test_fastq_metrics_read_gzip_and_stop_at_max_reads(tmp_path: Path) -> None:
    path = tmp_path / "tiny.fastq.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"".join(b"@r%d\nACGT\n+\nIIII\n" % i for i in range(10)))
    assert sequencing_qc_metrics(path, "fastq")["reads"] == 10
    sampled = sequencing_qc_metrics(path, "fastq", max_reads=3)
    assert (sampled["reads"], sampled["bases"], sampled["sampled"]) == (3, 12, True)


def test_synthetic_fastq_and_bam_of_a_subject_give_the_same_quality(cohort: Path) -> None:
    """The synthetic BAM holds the FASTQ's reads (reverse strand reverse-complemented), so Q30
    and GC agree; every read is mapped."""
    samples = pd.read_csv(cohort / "samples.csv")
    for fastq, bam in zip(samples["fastq"], samples["bam"]):
        from_fastq = sequencing_qc_metrics(cohort / fastq, "fastq")
        from_bam = sequencing_qc_metrics(cohort / bam, "bam")
        assert from_fastq["reads"] == from_bam["reads"] == 200
        assert from_fastq["bases"] == 200 * READ_LENGTH
        assert from_fastq["q30_share"] == pytest.approx(from_bam["q30_share"])
        assert from_fastq["gc_share"] == pytest.approx(from_bam["gc_share"])
        assert 0.75 <= from_fastq["q30_share"] <= 1 and 0.4 < from_fastq["gc_share"] < 0.6
        assert from_bam["mapped_share"] == 1.0


def test_bam_metrics_count_mapped_share_and_q30_of_mapped_reads_only(tmp_path: Path) -> None:
    header = pysam.AlignmentHeader.from_dict({"HD": {"VN": "1.6"},
                                              "SQ": [{"SN": "chr1", "LN": 1000}]})
    path = tmp_path / "tiny.bam"
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        for name, flag, qualities in (("m", 0, [40] * 4 + [10] * 4), ("u", 4, [40] * 8),
                                      ("s", 256, [40] * 8)):
            read = pysam.AlignedSegment(header)
            read.query_name, read.flag = name, flag
            read.query_sequence = "GGCCATAT"
            read.query_qualities = pysam.qualitystring_to_array(
                "".join(chr(q + 33) for q in qualities))
            if flag != 4:
                read.reference_id, read.reference_start = 0, 10
                read.cigartuples, read.mapping_quality = [(0, 8)], 60
            bam.write(read)
    metrics = sequencing_qc_metrics(path, "bam")
    assert (metrics["reads"], metrics["mapped_share"]) == (2, 0.5)  # the secondary is skipped
    assert (metrics["bases"], metrics["q30_share"]) == (8, 0.5)     # the unmapped read's Q40s not
    assert metrics["gc_share"] == 0.5


@pytest.mark.parametrize("content, fmt, message", [
    (b"@r1\nACGT\n+\nIIII\n@r2\nAC", "fastq", "truncated"),
    (b">r1\nACGT\n+\nIIII\n", "fastq", "not a FASTQ"),
    (b"not a bam", "bam", "not a readable BAM"),
    (b"@r1\nACGT\n+\nIIII\n", "cram", "FASTQ and BAM"),
])
def test_when_a_file_cannot_be_measured_then_quality_error(tmp_path: Path, content: bytes,
                                                          fmt: str, message: str) -> None:
    path = tmp_path / "broken"
    path.write_bytes(content)
    with pytest.raises(QualityError, match=message) as caught:
        sequencing_qc_metrics(path, fmt)
    assert caught.value.stage == "quality"


def test_qc_table_has_one_typed_row_per_file(cohort: Path) -> None:
    metrics = {"a.fastq.gz": sequencing_qc_metrics(next(cohort.glob("seq/*.fastq.gz")), "fastq"),
               "a.bam": sequencing_qc_metrics(next(cohort.glob("seq/*.bam")), "bam")}
    table = qc_table(metrics)
    assert list(table.columns) == list(quality.QC_COLUMNS)
    assert list(table["file"]) == ["a.fastq.gz", "a.bam"]
    assert table["reads"].dtype == "int64" and table["q30_share"].dtype == "float64"
    assert pd.isna(table.loc[0, "mapped_share"]) and table.loc[1, "mapped_share"] == 1.0


# --- the variant table derived from VCF (SEQ §5) -------------------------------------------------


def test_variant_table_of_a_synthetic_vcf_has_one_row_per_record_and_no_sample_name(
        cohort: Path) -> None:
    samples = pd.read_csv(cohort / "samples.csv")
    table = variant_table(cohort / samples["vcf"][0])
    assert list(table.columns) == list(quality.VARIANT_COLUMNS)
    assert len(table) == 60 and set(table["SAMPLE"]) == {0}
    assert table["POS"].min() >= 1 and set(table["GT"]) <= {"0/1", "1/1", "0/0"}
    assert not table.isin([samples["mrn"][0]]).any().any()   # the record number stays out
    assert len(variant_table(cohort / samples["vcf"][0], max_records=5)) == 5


def test_variant_table_writes_phased_missing_haploid_and_multiallelic_calls(tmp_path: Path) -> None:
    path = tmp_path / "calls.vcf"
    path.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=1000>\n"
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2\n"
        "chr1\t10\t.\tA\tT,G\t.\tPASS\t.\tGT\t0|1\t./.\n"
        "chr1\t20\t.\tC\t.\t.\tPASS\t.\tGT\t0/0\t0\n")
    table = variant_table(path)
    assert table[["POS", "REF", "ALT", "SAMPLE", "GT"]].astype(str).values.tolist() == [
        ["10", "A", "T,G", "0", "0|1"], ["10", "A", "T,G", "1", "./."],
        ["20", "C", ".", "0", "0/0"], ["20", "C", ".", "1", "0"]]


def test_variant_table_of_a_sites_only_vcf_leaves_sample_and_gt_empty(tmp_path: Path) -> None:
    path = tmp_path / "sites.vcf"
    path.write_text("##fileformat=VCFv4.2\n##contig=<ID=chr2,length=1000>\n"
                    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                    "chr2\t5\t.\tG\tA\t.\tPASS\t.\n")
    table = variant_table(path)
    assert len(table) == 1 and pd.isna(table.loc[0, "SAMPLE"]) and pd.isna(table.loc[0, "GT"])


def test_when_a_vcf_is_unreadable_then_quality_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.vcf"
    path.write_text("this is not a VCF\n")
    with pytest.raises(QualityError, match="not a readable VCF"):
        variant_table(path)


# --- date-shift consistency (§10.2 c 3) ----------------------------------------------------------


def test_prepare_deidentified_adds_each_dates_shift_and_the_subjects_shift(policy) -> None:
    """GB/T 39725 §10.2 c 3: every date of a subject moves by the subject's one offset; the gate
    gets each date's shift (never the original dates) and the subject's first shift."""
    table = pd.DataFrame({"subject": ["aa", "aa", "bb"], "d1": [1, 2, 3]}, index=[10, 11, 12])
    shifts = {"d1": pd.Series([5, 5, -3], index=[10, 11, 12]),
              "d2": pd.Series([None, 7, -3], index=[10, 11, 12], dtype="Int64")}
    prepared = prepare_deidentified(table, policy, shifts)
    assert prepared["_shift_days__d1"].tolist() == [5.0, 5.0, -3.0]
    assert prepared["_shift_days__d2"].tolist()[1:] == [7.0, -3.0]
    assert prepared["_subject_shift_days"].tolist() == [5.0, 5.0, -3.0]
    assert "_subject_shift_days" not in table  # the input is not changed
    assert "_subject_shift_days" not in prepare_deidentified(table, policy)


# --- summaries and masking (§10.2 a) -------------------------------------------------------------


def _gx_result() -> dict:
    """A failed GX 1.24 suite result in COMPLETE format carrying SECRET/SECRET_ID everywhere a
    value can appear (lists, counts, index lists, details, observed value, exception texts)."""
    config = {"type": "expect_column_values_to_not_match_regex",
              "kwargs": {"batch_id": "seqlife-deidentified", "column": "note", "regex": "1[3-9]"},
              "meta": {"rule": "deidentified_no_identifiers", "check": "contains no mobile"},
              "id": "0f0e", "severity": "critical"}
    failing = {
        "success": False, "expectation_config": config,
        "result": {"element_count": 4, "unexpected_count": 2, "unexpected_percent": 50.0,
                   "partial_unexpected_list": [f"tel {SECRET}", SECRET_ID],
                   "missing_count": 0, "missing_percent": 0.0,
                   "unexpected_percent_total": 50.0, "unexpected_percent_nonmissing": 50.0,
                   "partial_unexpected_counts": [{"value": f"tel {SECRET}", "count": 1},
                                                 {"value": SECRET_ID, "count": 1}],
                   "partial_unexpected_index_list": [{"note": SECRET, "index": 3}],
                   "unexpected_list": [f"tel {SECRET}", SECRET_ID],
                   "unexpected_index_list": [0, 3],
                   "unexpected_index_query": f"df.filter(note=='{SECRET}')",
                   "observed_value": SECRET,
                   "details": {"value_counts": [{"value": SECRET, "count": 1}],
                               SECRET: {"nested": [SECRET_ID]}}},
        "meta": {}, "exception_info": {"raised_exception": False, "exception_traceback": None,
                                       "exception_message": None}}
    raising = {
        "success": False,
        "expectation_config": {"type": "expect_column_values_to_be_between",
                               "kwargs": {"column": "lab_alt_u_l", "min_value": 0,
                                          "max_value": 5000},
                               "meta": {"rule": "clinical_ranges", "check": "between 0 and 5000"}},
        "result": {},
        "meta": {},
        "exception_info": {"MetricConfigurationID(metric_name='column_values.between')": {
            "exception_traceback": f"Traceback ... ValueError: could not convert '{SECRET}'",
            "exception_message": f"could not convert string to float: '{SECRET}'",
            "raised_exception": True}}}
    passing = {"success": True,
               "expectation_config": {"type": "expect_column_values_to_be_unique",
                                      "kwargs": {"column": "subject"}, "meta": {}},
               "result": {"element_count": 4, "unexpected_count": 0, "unexpected_percent": 0.0,
                          "partial_unexpected_list": []},
               "meta": {}, "exception_info": {"raised_exception": False,
                                              "exception_traceback": None,
                                              "exception_message": None}}
    return {"success": False, "results": [failing, raising, passing],
            "suite_name": "deidentified", "suite_parameters": {},
            "statistics": {"evaluated_expectations": 3, "successful_expectations": 1,
                           "unsuccessful_expectations": 2, "success_percent": 33.3},
            "meta": {"great_expectations_version": "1.24.1",
                     "batch_parameters": {"dataframe": "<DATAFRAME>"}}, "id": None}


def test_summarise_keeps_counts_and_drops_every_value() -> None:
    summary = summarise(_gx_result(), table="tables/clinical.parquet")
    text = json.dumps(asdict(summary), ensure_ascii=False)
    assert SECRET not in text and SECRET_ID not in text
    assert (summary.suite, summary.success, summary.evaluated) == ("deidentified", False, 3)
    assert summary.failed == [
        {"expectation": "expect_column_values_to_not_match_regex", "column": "note",
         "unexpected_count": 2, "unexpected_percent": 50.0,
         "rule": "deidentified_no_identifiers", "check": "contains no mobile",
         "raised_exception": False},
        {"expectation": "expect_column_values_to_be_between", "column": "lab_alt_u_l",
         "unexpected_count": None, "unexpected_percent": None, "rule": "clinical_ranges",
         "check": "between 0 and 5000", "raised_exception": True}]
    dropped = ("partial_unexpected_list", "unexpected_list", "partial_unexpected_index_list",
               "partial_unexpected_counts", "details", "observed_value")
    assert not any(key in text for key in dropped)


def test_mask_result_masks_every_value_and_keeps_counts_and_shape() -> None:
    original = _gx_result()
    masked = mask_result(original)
    text = json.dumps(masked, ensure_ascii=False)
    assert SECRET not in text and SECRET_ID not in text
    assert SECRET in json.dumps(original)  # the input is not changed
    result = masked["results"][0]["result"]
    assert result["unexpected_list"] == [MASK, MASK]
    assert result["partial_unexpected_list"] == [MASK, MASK]
    assert result["partial_unexpected_counts"] == [{"value": MASK, "count": 1}] * 2
    assert result["partial_unexpected_index_list"] == [{"note": MASK, f"{MASK} 2": MASK}]
    assert result["unexpected_index_list"] == [MASK, MASK]
    assert result["observed_value"] == MASK and result["unexpected_index_query"] == MASK
    assert (result["element_count"], result["unexpected_count"], result["unexpected_percent"]) \
        == (4, 2, 50.0)
    config = masked["results"][0]["expectation_config"]
    assert config == original["results"][0]["expectation_config"]
    info = masked["results"][1]["exception_info"]
    assert list(info.values())[0] == {"exception_traceback": MASK, "exception_message": MASK,
                                      "raised_exception": True}
    assert masked["meta"]["unexpected_values"] == MASK
    assert summarise(masked) == summarise(original)  # counts survive masking


def test_describe_results_lists_passed_expectations_too() -> None:
    records = describe_results(mask_result(_gx_result()))
    assert [(r["expectation"], r["success"]) for r in records] == [
        ("expect_column_values_to_not_match_regex", False),
        ("expect_column_values_to_be_between", False),
        ("expect_column_values_to_be_unique", True)]
    assert records[2]["element_count"] == 4


# --- the decision --------------------------------------------------------------------------------


def test_decide_passes_when_every_suite_checked_something_and_nothing_failed(policy) -> None:
    decision = decide([Summary("clinical", True, 7, [], "clinical.parquet"),
                       Summary("variants", True, 9, [], "S1.vcf.gz")], policy)
    assert decision == Decision(True, decision.message, (policy.clause("suites"),), ())
    assert decision.message.startswith("Quality gate passed (GB/T 39725 §10.1 f")
    assert "16 expectation(s)" in decision.message and "clinical.parquet" in decision.message


def test_decide_lists_each_failed_expectation_with_column_count_and_clause(policy) -> None:
    """§11.3.4.5 c: a duplicate subject fails the gate; the steward sees what, where, how many."""
    failed = summarise(_gx_result(), table="tables/clinical.parquet")
    duplicate = Summary("clinical", False, 7, [{
        "expectation": "expect_column_values_to_be_unique", "column": "subject",
        "unexpected_count": 2, "unexpected_percent": 40.0, "rule": "clinical_subject",
        "check": "one row per subject", "raised_exception": False}], "clinical.parquet")
    decision = decide([duplicate, failed], policy)
    assert not decision.passed
    assert decision.failed_suites == ("clinical.parquet", "tables/clinical.parquet")
    lines = decision.message.splitlines()
    assert lines[0].startswith("Quality gate failed (GB/T 39725 §10.1 f")
    assert "3 problem(s)" in lines[0]
    assert lines[1] == (
        "- clinical.parquet [clinical]: expect_column_values_to_be_unique on subject — 2 row(s) "
        "(40.0 %) unexpected; values must be unique (one row per subject) "
        "[rule clinical_subject; GB/T 39725 §11.3.4.5 c]")
    assert "on note — 2 row(s) (50.0 %) unexpected" in lines[2] and "§10.2 a" in lines[2]
    assert "on lab_alt_u_l — could not be evaluated" in lines[3]
    assert "masked in the report" in lines[-1]
    assert "GB/T 39725 §11.3.4.5 c" in decision.clauses and "GB/T 39725 §10.2 a" in decision.clauses
    assert SECRET not in decision.message


def test_decide_fails_a_suite_that_checked_nothing_and_a_run_with_no_table(policy) -> None:
    decision = decide([Summary("clinical", True, 0, [], "empty.csv")], policy)
    assert not decision.passed and "nothing was checked" in decision.message
    assert not decide([], policy).passed


def test_quality_gate_failed_carries_the_steward_message_and_report(policy) -> None:
    decision = decide([Summary("clinical", True, 0, [], "empty.csv")], policy)
    error = QualityGateFailed(decision, "<html></html>")
    assert isinstance(error, SeqlifeError) and error.stage == "quality"
    assert str(error) == decision.message and error.report_html == "<html></html>"
    assert error.attrs == {"failed_suites": ["empty.csv"]}
