"""The quality gate with real Great Expectations 1.x: suites from policy, masked results, decision.

GB/T 39725 §10.1 f, §11.3.4.5 c, §11.3.4.7 e; SEQ §5 (sequencing QC and variant calls are master
data); §10.2 a (no direct identifier in a de-identified table, and no unexpected value ever
kept); §10.2 c 3, e (date shift, k-anonymity). Each failure case carries "secrets": the unexpected
values it plants. None of them may appear in the summary, the steward message, the masked result
JSON (validated with result_format COMPLETE, the richest form) or the rendered HTML report.

Tasks are called through ``.fn`` (no Prefect engine needed); tables are small and synthetic, built
here or taken from the session's seeded cohort (``cohort_template``).
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from seqlife.policy import Policy
from seqlife.quality import (
    MASK,
    QualityError,
    QualityGateFailed,
    declare_release,
    load_quality_policy,
    prepare_deidentified,
    qc_table,
    sequencing_qc_metrics,
    variant_table,
)
from tasks import quality as gate

PHONE = "13812345678"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_quality_policy()


@pytest.fixture(scope="module")
def complete_policy(policy: Policy) -> Policy:
    """The same thresholds with GX's COMPLETE result format (full unexpected and index lists)."""
    rules = dict(policy.rules)
    rules["result_format"] = dataclasses.replace(rules["result_format"], value="COMPLETE")
    return dataclasses.replace(policy, rules=rules)


# --- good tables -----------------------------------------------------------------------------


def clinical_table() -> pd.DataFrame:
    return pd.DataFrame({
        "subject": [f"SUBJ-{i:02d}" for i in range(6)],
        "sex": ["M", "F", "M", "F", "M", "F"],
        "age": [34, 51, 0, 120, 77, 45],
        "admission_date": ["2020-01-02", "2020-02-03", "2020-03-04", "2020-04-05",
                           "2020-05-06", "2020-06-07"],
        "discharge_date": ["2020-01-05", "2020-02-03", "2020-03-14", None,
                           "2020-05-16", "2020-06-27"],
        "lab_hemoglobin_g_l": [135.0, 121.5, 30.0, 250.0, None, 140.2],
        "lab_wbc_10e9_l": [6.1, 7.2, 0.1, 100.0, 5.5, 6.6],
        "lab_alt_u_l": [22.0, 31.0, 0.0, 5000.0, 18.0, 40.0],
    })


def deidentified_table() -> pd.DataFrame:
    """Two classes of five on (age, sex, postcode, area), declared as the quasi-identifiers the
    de-identification generalised; letter-only surrogates."""
    return declare_release(_deidentified_rows(), load_quality_policy(),
                           ["age", "sex", "postcode", "area"])


def _deidentified_rows() -> pd.DataFrame:
    surrogates = ["qwertyuiopasdfgh", "zxcvbnmlkjhgfdsa", "poiuytrewqlkjhgf", "mnbvcxzasdfghjkl",
                  "asdfghjklqwertyu", "lkjhgfdsapoiuytr", "hgfdsamnbvcxzqwe", "ytrewqasdfgmnbvc",
                  "bvcxzlkjhgpoiuyt", "rewqmnbvcxasdfgh"]
    return pd.DataFrame({
        "subject": surrogates,
        "age": ["30-34"] * 5 + ["60-64"] * 5,
        "sex": ["F"] * 5 + ["M"] * 5,
        "postcode": ["100000"] * 5 + ["310000"] * 5,
        "area": ["北京市"] * 5 + ["杭州市"] * 5,
        "admission_date": [f"2031-0{1 + i % 9}-1{i % 10}" for i in range(10)],
        "discharge_date": [f"2031-0{1 + i % 9}-2{i % 10}" for i in range(10)],
        "diagnosis_icd10": ["I10", "E11.9", "J45.9", "I10", "E11.9"] * 2,
        "lab_hemoglobin_g_l": [130.0 + i for i in range(10)],
    })


def variants_table() -> pd.DataFrame:
    return pd.DataFrame({"CHROM": ["chr1", "2", "chrX", "MT"], "POS": [10, 20, 30, 40],
                         "REF": ["A", "CT", "G", "N"], "ALT": ["T", "C", "A,*", "."],
                         "SAMPLE": [0, 0, 0, 0], "GT": ["0/1", "1|1", "0/2", "."]})


def qc_rows() -> pd.DataFrame:
    return qc_table({
        "S1.R1.fastq.gz": {"format": "fastq", "reads": 200, "bases": 30000, "q30_share": 0.86,
                           "gc_share": 0.5, "mapped_share": None, "sampled": False},
        "S1.bam": {"format": "bam", "reads": 200, "bases": 30000, "q30_share": 0.86,
                   "gc_share": 0.5, "mapped_share": 0.98, "sampled": False}})


GOOD: dict[str, Callable[[], pd.DataFrame]] = {
    "clinical": clinical_table, "deidentified": deidentified_table, "variants": variants_table,
    "sequencing_qc": qc_rows,
}


def test_good_tables_pass_every_suite_and_the_report_says_so(policy: Policy) -> None:
    """§10.1 f: tables that meet every threshold pass; the report lists what was checked."""
    frames = {f"{name}.parquet": (make(), name) for name, make in GOOD.items()}
    frames["deidentified.parquet"] = (prepare_deidentified(deidentified_table(), policy),
                                      "deidentified")
    decision, report = gate.quality_gate.fn(frames, policy)
    assert decision.passed, decision.message
    assert decision.message.startswith("Quality gate passed (GB/T 39725 §10.1 f")
    for name in GOOD:
        assert f"{name}.parquet — suite {name}" in report
    assert "Gate passed" in report and "expect_quasi_identifiers_to_be_k_anonymous" in report


def test_the_synthetic_cohort_passes_clinical_variant_and_qc_suites(
        policy: Policy, cohort_template: Path) -> None:
    """The seeded cohort is clean: subject IDs unique, codes and lab values plausible, calls and
    read quality within SEQ §5 thresholds."""
    samples = pd.read_csv(cohort_template / "samples.csv")
    metrics = {}
    for fastq, bam in zip(samples["fastq"], samples["bam"]):
        metrics[fastq] = sequencing_qc_metrics(cohort_template / fastq, "fastq")
        metrics[bam] = sequencing_qc_metrics(cohort_template / bam, "bam")
    frames = {
        "clinical.parquet": (pd.read_parquet(cohort_template / "clinical.parquet"), "clinical"),
        "sequencing_qc": (qc_table(metrics), "sequencing_qc"),
        **{vcf: (variant_table(cohort_template / vcf), "variants") for vcf in samples["vcf"]},
    }
    decision, _ = gate.quality_gate.fn(frames, policy)
    assert decision.passed, decision.message
    assert f"on {len(frames)} table(s)" in decision.message


# --- one failure per expectation family --------------------------------------------------------


def changed(make: Callable[[], pd.DataFrame], **cells: dict[int, object]
            ) -> Callable[[Policy], pd.DataFrame]:
    """A builder for ``make()`` with some cells replaced: column -> {row: value}."""
    def build(policy: Policy) -> pd.DataFrame:
        df = make()
        for column, rows in cells.items():
            if column not in df:
                df[column] = pd.Series([None] * len(df), dtype="object")
            df[column] = df[column].astype("object")
            for row, value in rows.items():
                df.at[row, column] = value
        if make is deidentified_table:
            return prepare_deidentified(df, policy)
        return df
    return build


def without_subject(policy: Policy) -> pd.DataFrame:
    return clinical_table().drop(columns=["subject"])


def lab_as_number(make: Callable[[Policy], pd.DataFrame]) -> Callable[[Policy], pd.DataFrame]:
    def build(policy: Policy) -> pd.DataFrame:
        df = make(policy)
        df["lab_hemoglobin_g_l"] = pd.to_numeric(df["lab_hemoglobin_g_l"])
        return df
    return build


def one_quasi_identifier(policy: Policy) -> pd.DataFrame:
    """Only sex is released: four M and one F — the F row is alone in its class."""
    table = pd.DataFrame({"subject": ["abcdefgh", "bcdefghi", "cdefghij", "defghijk", "efghijkl"],
                          "sex": ["M", "M", "M", "M", "F"]})
    return prepare_deidentified(declare_release(table, policy, ["sex"]), policy)


def nothing_declared(policy: Policy) -> pd.DataFrame:
    """A de-identified table that declares no quasi-identifiers: k cannot be checked, so the
    gate fails instead of passing over an empty set (fail closed)."""
    return prepare_deidentified(_deidentified_rows(), policy)


def one_person_many_rows(policy: Policy) -> pd.DataFrame:
    """Five rows in one class, but all of one patient: one person, not five (§10.2 e)."""
    df = deidentified_table()
    df.loc[0:4, "subject"] = df.at[0, "subject"]
    return prepare_deidentified(df, policy)


def per_row_shift(policy: Policy) -> pd.DataFrame:
    """Subject 0 has two rows; its second row's dates moved by another offset (§10.2 c 3)."""
    df = deidentified_table()
    df.at[1, "subject"] = df.at[0, "subject"]
    shifts = {"admission_date": pd.Series([40, 40] + [7] * 8, index=df.index),
              "discharge_date": pd.Series([40, 113] + [7] * 8, index=df.index)}
    return prepare_deidentified(df, policy, shifts)


def qc_changed(**values: object) -> Callable[[Policy], pd.DataFrame]:
    def build(policy: Policy) -> pd.DataFrame:
        df = qc_rows()
        for column, value in values.items():
            df.loc[1, column] = value
        return df
    return build


CASES = [
    # suite, table builder, expectation, column(s), planted secrets, policy rule
    pytest.param("clinical", changed(clinical_table, subject={0: "SUBJ-DUPLICATE-7781",
                                                               1: "SUBJ-DUPLICATE-7781"}),
                 "expect_column_values_to_be_unique", "subject", ["SUBJ-DUPLICATE-7781"],
                 "clinical_subject", id="duplicate subject"),
    pytest.param("clinical", changed(clinical_table, subject={2: None}),
                 "expect_column_values_to_not_be_null", "subject", [],
                 "clinical_subject", id="null subject"),
    pytest.param("clinical", without_subject, "expect_column_to_exist", "subject", [],
                 "clinical_subject", id="no subject column"),
    pytest.param("clinical", changed(clinical_table, sex={3: "XYZZY"}),
                 "expect_column_values_to_be_in_set", "sex", ["XYZZY"],
                 "clinical_value_sets", id="sex outside its codes"),
    pytest.param("clinical", changed(clinical_table, admission_date={1: "1977-03-14"},
                                     discharge_date={1: "1977-03-02"}),
                 "expect_column_pair_values_a_to_be_greater_than_b",
                 "discharge_date, admission_date", ["1977-03-14", "1977-03-02"],
                 "clinical_date_order", id="discharge before admission"),
    pytest.param("clinical", lab_as_number(changed(clinical_table,
                                                   lab_hemoglobin_g_l={4: 987.654})),
                 "expect_column_values_to_be_between", "lab_hemoglobin_g_l", ["987.654"],
                 "clinical_ranges", id="lab out of range"),
    pytest.param("clinical", changed(clinical_table, lab_alt_u_l={0: f"high, call {PHONE}"}),
                 "expect_column_values_to_be_between", "lab_alt_u_l", [PHONE, "high, call"],
                 "clinical_ranges", id="lab holding text raises inside GX"),
    pytest.param("clinical", changed(clinical_table, age={5: 121.3579}),
                 "expect_column_values_to_be_between", "age", ["121.3579"],
                 "clinical_ranges", id="age over 120"),
    pytest.param("variants", changed(variants_table, CHROM={1: "chrZZ9"}),
                 "expect_column_values_to_match_regex", "CHROM", ["chrZZ9"], "variant_chrom",
                 id="bad CHROM"),
    pytest.param("variants", changed(variants_table, REF={2: "ACGUQ"}),
                 "expect_column_values_to_match_regex", "REF", ["ACGUQ"], "variant_ref",
                 id="bad REF"),
    pytest.param("variants", changed(variants_table, ALT={0: "<DEL QQ>"}),
                 "expect_column_values_to_match_regex", "ALT", ["DEL QQ"], "variant_alt",
                 id="bad ALT"),
    pytest.param("variants", changed(variants_table, GT={3: "7^9"}),
                 "expect_column_values_to_match_regex", "GT", ["7^9"], "variant_gt", id="bad GT"),
    pytest.param("variants", changed(variants_table, POS={0: 0}),
                 "expect_column_values_to_be_between", "POS", [], "variant_min_pos",
                 id="POS below 1"),
    pytest.param("sequencing_qc", qc_changed(q30_share=0.4321),
                 "expect_column_values_to_be_between", "q30_share", ["0.4321"], "qc_min_q30_share",
                 id="Q30 share below threshold"),
    pytest.param("sequencing_qc", qc_changed(gc_share=0.8765),
                 "expect_column_values_to_be_between", "gc_share", ["0.8765"], "qc_gc_share",
                 id="GC share outside band"),
    pytest.param("sequencing_qc", qc_changed(mapped_share=0.1234),
                 "expect_column_values_to_be_between", "mapped_share", ["0.1234"],
                 "qc_min_mapped_share",
                 id="mapped share below threshold"),
    pytest.param("sequencing_qc", qc_changed(reads=0, bases=0, q30_share=None, gc_share=None,
                                             mapped_share=None),
                 "expect_column_values_to_be_between", "reads", [], "qc_min_reads",
                 id="empty sequencing file"),
    pytest.param("deidentified", changed(deidentified_table,
                                         note={4: f"家属陪同，联系电话{PHONE}。"}),
                 "expect_column_values_to_not_match_regex", "note", [PHONE, "家属陪同"],
                 "deidentified_no_identifiers", id="phone number left in a note"),
    pytest.param("deidentified", changed(deidentified_table, remark={7: "110101199003074514"}),
                 "expect_column_values_to_not_match_regex", "remark", ["110101199003074514"],
                 "deidentified_no_identifiers", id="resident ID left in a column"),
    pytest.param("deidentified", changed(deidentified_table,
                                         contact={2: "wang.secret@example.cn"}),
                 "expect_column_values_to_not_match_regex", "contact", ["wang.secret"],
                 "deidentified_no_identifiers", id="e-mail address left in a column"),
    pytest.param("deidentified", changed(deidentified_table, postcode={9: "999111"}),
                 "expect_quasi_identifiers_to_be_k_anonymous", "age, sex, postcode, area, subject",
                 ["999111"], "deidentified_quasi_identifiers", id="not 5-anonymous"),
    pytest.param("deidentified", one_quasi_identifier,
                 "expect_quasi_identifiers_to_be_k_anonymous", "sex, subject", [],
                 "deidentified_quasi_identifiers",
                 id="not 5-anonymous on a single quasi-identifier"),
    pytest.param("deidentified", one_person_many_rows,
                 "expect_quasi_identifiers_to_be_k_anonymous", "age, sex, postcode, area, subject",
                 [], "deidentified_quasi_identifiers", id="five rows of one patient are one person"),
    pytest.param("deidentified", nothing_declared, "expect_column_to_exist",
                 "(no quasi-identifiers declared)", [], "deidentified_quasi_identifiers",
                 id="no quasi-identifiers declared"),
    pytest.param("deidentified", per_row_shift, "expect_column_pair_values_to_be_equal",
                 "_shift_days__discharge_date, _subject_shift_days", ["113.0"],
                 "deidentified_date_shift", id="a date moved by another offset than its subject"),
]


def kept_texts(summary, masked: dict, error: QualityGateFailed) -> dict[str, str]:
    """Everything the gate hands back, as text (HTML also unescaped, once and twice, since the
    embedded GX page is escaped inside ``srcdoc``)."""
    report = error.report_html
    return {"summary": json.dumps(asdict(summary), ensure_ascii=False),
            "message": error.message,
            "decision": json.dumps(asdict(error.decision), ensure_ascii=False),
            "masked result": json.dumps(masked, ensure_ascii=False),
            "report": report, "report unescaped": html.unescape(report),
            "report unescaped twice": html.unescape(html.unescape(report))}


@pytest.mark.parametrize("suite, build, expectation, column, secrets, rule", CASES)
def test_when_a_table_breaks_a_rule_then_the_gate_names_it_and_keeps_no_value(
        policy: Policy, complete_policy: Policy, suite: str,
        build: Callable[[Policy], pd.DataFrame], expectation: str, column: str,
        secrets: list[str], rule: str) -> None:
    table = build(policy)
    for secret in secrets:  # the planted value really is in the table
        assert secret in table.to_csv(index=False), secret
    summary, masked = gate.validate_frame.fn(table, suite, gate.SUITE_BUILDERS[suite],
                                             complete_policy, table=f"{suite}.parquet")
    assert not summary.success
    assert any(f["expectation"] == expectation and f["column"] == column for f in summary.failed)
    assert MASK in json.dumps(masked, ensure_ascii=False) or not secrets

    with pytest.raises(QualityGateFailed) as caught:
        gate.quality_gate.fn({f"{suite}.parquet": (table, suite)}, policy)
    error = caught.value
    assert error.stage == "quality" and not error.decision.passed
    assert f"{suite}.parquet [{suite}]: {expectation} on {column} — " in error.message
    assert f"[rule {rule}; {policy.clause(rule)}]" in error.message
    assert "Gate failed" in error.report_html and expectation in error.report_html

    for where, text in kept_texts(summary, masked, error).items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into the {where}"


def test_raw_clinical_table_fails_the_deidentified_suite_without_leaking_an_identifier(
        policy: Policy, complete_policy: Policy, cohort_template: Path) -> None:
    """§10.2 a: the synthetic raw table is full of identifiers; the gate names every column that
    holds one, and not one identifier reaches anything it returns."""
    raw = pd.read_parquet(cohort_template / "clinical.parquet")
    summary, masked = gate.validate_frame.fn(raw, "deidentified",
                                             gate.SUITE_BUILDERS["deidentified"],
                                             complete_policy, table="raw/clinical.parquet")
    flagged = {(f["column"], f["check"]) for f in summary.failed}
    assert {("mrn", "contains no medical_record_no"), ("id_number", "contains no resident_id"),
            ("mobile", "contains no mobile"), ("email", "contains no email")} <= flagged
    with pytest.raises(QualityGateFailed) as caught:
        gate.quality_gate.fn({"raw/clinical.parquet": (raw, "deidentified")}, policy)
    texts = kept_texts(summary, masked, caught.value)
    for column in ("mrn", "name", "id_number", "mobile", "email", "street", "insurance_no"):
        for value in raw[column].dropna().astype(str):
            for where, text in texts.items():
                assert value not in text, f"a {column} value leaked into the {where}"


def test_when_a_suite_is_unknown_then_the_gate_refuses_before_validating(policy: Policy) -> None:
    with pytest.raises(QualityError, match="no quality suite 'imaging'"):
        gate.quality_gate.fn({"scan.parquet": (clinical_table(), "imaging")}, policy)


def test_full_suites_without_a_table_name_every_policy_rule(policy: Policy) -> None:
    """``columns=None`` builds the documentation form of each suite: every rule is used."""
    used = set()
    for builder in gate.SUITE_BUILDERS.values():
        suite = builder(policy)
        used |= {e.meta["rule"] for e in suite.expectations}
        assert all(e.meta["clause"] == policy.clause(e.meta["rule"]) for e in suite.expectations)
    # the sample sizes say
    # how much of a file the intake gate reads, not what a suite expects
    assert used == set(policy.rules) - {"suites", "unexpected_value_masking", "result_format",
                                        "qc_sample_reads", "variant_sample_records"}


def test_certification_evidence_runs_the_deidentified_suite_without_raising(policy: Policy) -> None:
    """DER §5 quality requirement: summaries as plain dicts, a masked report and the policy hash."""
    summaries, report, digest = gate.quality_frames_for_certification(deidentified_table())
    assert [s["suite"] for s in summaries] == ["deidentified"] and summaries[0]["success"]
    assert len(digest) == 64 and "Gate passed" in report
    bad = deidentified_table()
    bad["note"] = [f"call {PHONE}"] + [""] * 9
    summaries, report, _ = gate.quality_frames_for_certification(bad)
    assert not summaries[0]["success"]
    assert PHONE not in report and PHONE not in json.dumps(summaries)
    assert gate.quality_frames_for_certification(None)[0] == []
