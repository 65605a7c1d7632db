"""Classification rules, each citing its clause: grades, tiers, genomic content, special diseases,
sequencing header fields, steward overrides and the gate that later stages pass through."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from seqlife.classify import labels as rules
from seqlife.classify.detectors import load_detectors
from seqlife.classify.headers import HEADER_PREFIX_BYTES
from seqlife.exceptions import (
    ClassificationError,
    ClassificationMissing,
    ClassificationNotApproved,
    ClassificationStale,
)

POLICY = rules.load_classify_policy()
DETECTORS = load_detectors()
SPECIAL = rules.load_special_diseases()


def field(grade: int, identifier: str = "none", category: str = "health_status") -> rules.FieldLabel:
    return rules.FieldLabel("t.parquet", f"c{grade}{identifier}", identifier, category, grade)


def summary(fields, **kw) -> rules.DatasetLabels:
    args = dict(data_kind="raw", genomic_subjects=0, special_rows=0, special_groups=(), policy=POLICY)
    args.update(kw)
    return rules.summarise(fields, **args)


@pytest.mark.parametrize("grade, tier", [(1, "PUF"), (2, "no_identifier"), (3, "LDS"), (4, "RIF"),
                                         (5, "RIF")])
def test_tier_follows_grade(grade: int, tier: str) -> None:
    """RARE §3.5; GB/T 39725 §11.3.4.3, §11.4.2.1: PUF = 1, no-identifier = 2, LDS = 3, RIF = 4."""
    assert summary([field(grade)]).tier == tier


def test_dataset_grade_is_the_highest_field_grade() -> None:
    """GB/T 39725 §6.2: a dataset is as sensitive as its most sensitive content."""
    assert summary([field(2), field(3, "quasi"), field(2)]).grade == 3


def test_direct_identifier_makes_the_dataset_identifiable_rif() -> None:
    """RARE §3.2.4: names, ID numbers, phones, record numbers identify a person."""
    labels = summary([field(2), field(4, "direct", "personal_attributes")])
    assert labels.identifiable and labels.tier == "RIF"
    assert labels.categories == ("personal_attributes", "health_status")


def test_special_disease_rows_make_the_dataset_grade_5() -> None:
    """GB/T 39725 §11.1.2.3: HIV, syphilis, psychiatric and the other special diseases are grade 5."""
    count, groups = rules.special_disease_rows(["I10", "B20", "F20.9", None, "E11.9"], SPECIAL)
    assert count == 2 and set(groups) == {"infectious", "psychiatric"}
    labels = summary([field(3, "sensitive")], special_rows=count, special_groups=groups)
    assert labels.grade == 5 and labels.sharing_forms == ()


def test_grade_5_allows_no_sharing_and_grade_1_may_be_published() -> None:
    """GB/T 39725 §6.5 Table 2, §8.1 Table 3: grade 1 public website; grade 5 treating staff only."""
    assert "website" in summary([field(1)]).sharing_forms
    assert summary([field(4, "direct")]).sharing_forms == ("enclave",)


def test_raw_data_is_never_shareable() -> None:
    """RARE §3.5: raw hospital data and registry data are never shared directly."""
    assert not summary([field(2)], data_kind="raw").shareable
    assert not summary([field(2)], data_kind="registry").shareable
    assert summary([field(2)], data_kind="research").shareable


def test_important_data_flag_for_genomic_data_of_many_people() -> None:
    """SEQ §7.3.1.2; GB/T 43697: genome data of >= 500 people is important data."""
    assert not summary([field(4, "genomic")], genomic_subjects=499).important_data
    assert summary([field(4, "genomic")], genomic_subjects=500).important_data


def test_confidentiality_is_restricted_unless_set_by_state_rules() -> None:
    """SEQ §7.3.1.1: the controller sets public/restricted; secret/confidential come from the state."""
    assert summary([field(1)]).confidentiality == "public"
    assert summary([field(4, "direct")]).confidentiality == "restricted"


def test_unrecognised_column_is_graded_conservatively_for_review() -> None:
    label = rules.label_from_finding("t.parquet", "x", None, POLICY)
    assert label.identifier == "unknown" and label.grade == 3 and "review" in label.note


def test_sequencing_content_is_never_below_grade_4_and_headers_are_findings(cohort_template: Path) -> None:
    """GB/T 39725 §8.1 Table 3; RARE §3.2.4: genes identify; GB/T 39725 §10.2 a, d: BAM @RG SM,
    @PG CL and @CO are listed with what de-identification does with them."""
    bam = next((cohort_template / "seq").glob("*.bam"))
    with open(bam, "rb") as handle:
        header = rules.read_header(handle, "bam", bam.name)
    found = {f.field: f for f in rules.label_header(bam.name, header, DETECTORS, POLICY)}
    assert found["sequence data"].identifier == "genomic" and found["sequence data"].grade >= 4
    assert found["RG.SM"].detector == "medical_record_no"  # the SM tag carries the record number
    assert found["RG.SM"].note.startswith("replaced by surrogate") and found["RG.SM"].grade == 4
    assert found["PG.CL"].note == found["CO"].note == "removed"
    assert summary(list(found.values())).grade >= 4


def test_vcf_sample_names_and_site_specific_header_lines_are_findings(cohort_template: Path) -> None:
    """GB/T 39725 §10.2 a, d: the sample column is replaced, site-specific ## lines removed,
    the technical ones kept; values never reach the header's repr."""
    vcf = next((cohort_template / "seq").glob("*.vcf.gz"))
    with open(vcf, "rb") as handle:
        header = rules.read_header(handle, "vcf", vcf.name)
    found = {f.field: f for f in rules.label_header(vcf.name, header, DETECTORS, POLICY)}
    assert found["samples"].detector == "medical_record_no"
    assert found["meta.patient_name"].note.startswith("removed")
    assert found["meta.contig"].note == "kept: technical"
    assert all(v not in repr(header) for values in header.fields.values() for v in values)


def test_header_is_read_from_the_start_of_the_stream_only(cohort_template: Path) -> None:
    """A huge BAM costs only its header: the reader stops after the header prefix."""
    bam = next((cohort_template / "seq").glob("*.bam"))

    class Counting(io.BytesIO):
        consumed = 0

        def read(self, size: int = -1) -> bytes:
            data = super().read(size)
            Counting.consumed += len(data)
            return data

    stream = Counting(bam.read_bytes() * 3)
    rules.read_header(stream, "bam", bam.name)
    assert Counting.consumed <= HEADER_PREFIX_BYTES


def test_table_with_special_disease_codes(tmp_path: Path) -> None:
    columns = {"dx": pa.chunked_array([["I10", "B20", "E11.9", "A53.9"] * 50])}
    fields, count, groups = rules.label_table("t.parquet", columns, DETECTORS, POLICY, SPECIAL)
    assert fields[0].detector == "icd10" and fields[0].grade == 5 and count == 100
    assert "§11.1.2.3" in fields[0].note


def test_classify_file_on_disk_csv_parquet_and_fastq(cohort_template: Path, tmp_path: Path) -> None:
    fields, labels = rules.classify_file(cohort_template / "clinical.csv", DETECTORS, POLICY)
    by_name = {f.field: f for f in fields}
    assert by_name["id_number"].detector == "resident_id" and labels.grade == 5
    fq = next((cohort_template / "seq").glob("*.fastq.gz"))
    renamed = tmp_path / "reads.dat"
    shutil.copy(fq, renamed)
    fields, labels = rules.classify_file(renamed, DETECTORS, POLICY)
    assert labels.grade >= 4 and labels.identifiable


def test_steward_override_changes_the_field_and_needs_a_reason() -> None:
    fields = [field(4, "free_text")]
    changed = rules.apply_overrides(
        fields, [rules.Override("t.parquet", fields[0].field, 3, "quasi", "notes were scrubbed")],
        POLICY)
    assert changed[0].grade == 3 and changed[0].identifier == "quasi"
    assert changed[0].override_reason == "notes were scrubbed"
    with pytest.raises(ClassificationError, match="needs a reason"):
        rules.apply_overrides(fields, [rules.Override("t.parquet", fields[0].field, 3, None, " ")],
                              POLICY)
    with pytest.raises(ClassificationError, match="No field"):
        rules.apply_overrides(fields, [rules.Override("t.parquet", "nope", 3, None, "x")], POLICY)
    with pytest.raises(ClassificationError, match="between 1 and 5"):
        rules.apply_overrides(fields, [rules.Override("t.parquet", fields[0].field, 7, None, "x")],
                              POLICY)


@pytest.mark.parametrize("status, digest, error", [
    (None, None, ClassificationMissing),
    ("proposed", "d", ClassificationNotApproved),
    ("approved", "old", ClassificationStale),
])
def test_gate_refuses_missing_unapproved_or_stale_classification(status, digest, error) -> None:
    """GB/T 39725 App. F: classification results are approved before data moves on."""
    with pytest.raises(error) as caught:
        rules.check_classification(status, digest, "d", "cohort v1")
    assert "cohort v1" in caught.value.message


def test_gate_passes_an_approved_current_classification() -> None:
    rules.check_classification("approved", "d", "d", "cohort v1")
