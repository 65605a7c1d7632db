"""The synthetic cohort: consistent identifiers, valid sequencing files, byte-identical reruns."""

from __future__ import annotations

import csv
import hashlib
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pysam
import pytest

from seqlife.ids import birth_date_from_resident_id, is_valid_resident_id, sex_from_resident_id
from seqlife.synth import CLINICAL_COLUMNS, READ_LENGTH, CohortSummary, generate_cohort

REFERENCE = Path(__file__).resolve().parents[2] / "data_catalog" / "reference"


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(cohort: Path) -> dict[str, str]:
    """Digests of the files that must be byte-identical for the same seed."""
    paths = [cohort / "clinical.csv", cohort / "consents.csv"]
    paths += sorted((cohort / "seq").glob("*.fastq.gz")) + sorted((cohort / "seq").glob("*.vcf.gz"))
    return {path.relative_to(cohort).as_posix(): sha256(path) for path in paths}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> CohortSummary:
    return generate_cohort(tmp_path_factory.mktemp("cohort"), subjects=20)


@pytest.fixture(scope="module")
def clinical(cohort) -> list[dict[str, str]]:
    return read_rows(cohort.out_dir / "clinical.csv")


@pytest.fixture(scope="module")
def samples(cohort) -> list[dict[str, str]]:
    return read_rows(cohort.out_dir / "samples.csv")


def test_summary_lists_every_file_written(cohort):
    written = {p.relative_to(cohort.out_dir).as_posix() for p in cohort.out_dir.rglob("*")
               if p.is_file()}  # fmt: skip
    assert set(cohort.files) == written
    assert len(cohort.files) == 4 + 4 * 20
    assert cohort.total_bytes == sum((cohort.out_dir / f).stat().st_size for f in cohort.files)


def test_clinical_columns_are_in_the_agreed_order(cohort, clinical):
    with (cohort.out_dir / "clinical.csv").open(encoding="utf-8") as handle:
        assert tuple(handle.readline().rstrip("\n").split(",")) == CLINICAL_COLUMNS
    assert len(clinical) == 20
    assert len({row["mrn"] for row in clinical}) == 20


def test_resident_ids_are_valid_and_match_birth_date_and_sex(clinical):
    regions = {row["admin_code"]: row for row in read_rows(REFERENCE / "regions.csv")}
    for row in clinical:
        assert is_valid_resident_id(row["id_number"])
        assert birth_date_from_resident_id(row["id_number"]).isoformat() == row["birth_date"]
        assert sex_from_resident_id(row["id_number"]) == row["sex"]
        region = regions[row["id_number"][:6]]
        assert (region["county"], region["postcode"]) == (row["county"], row["postcode"])


def test_identifiers_and_dates_are_plausible(clinical):
    for row in clinical:
        assert row["mrn"].startswith("MR") and len(row["mrn"]) == 10 and row["mrn"][2:].isdigit()
        assert len(row["mobile"]) == 11 and row["mobile"][:2] in {"13", "15", "17", "18", "19"}
        assert 2 <= len(row["name"]) <= 3
        admitted = date.fromisoformat(row["admission_date"])
        discharged = date.fromisoformat(row["discharge_date"])
        assert 1 <= (discharged - admitted).days <= 60
        assert date.fromisoformat(row["sequencing_date"]) >= admitted
    ages = [(date.fromisoformat(r["admission_date"]) - date.fromisoformat(r["birth_date"])).days
            / 365.25 for r in clinical]  # fmt: skip
    assert max(ages) > 89
    assert any(row["mobile"] in row["note"] for row in clinical)


def test_special_disease_codes_are_present(clinical):
    """GB/T 39725 §11.1.2.3: grade-5 special diseases must appear even in a small cohort."""
    groups = {row["code"]: row["special_group"] for row in read_rows(REFERENCE / "icd10.csv")}
    codes = {row["diagnosis_icd10"] for row in clinical}
    assert codes <= groups.keys()
    assert codes & {"B20", "A53.9"}
    assert any(groups[code] == "psychiatric" for code in codes)


def test_at_least_one_consent_is_withdrawn_after_signing(cohort):
    consents = read_rows(cohort.out_dir / "consents.csv")
    withdrawn = [row for row in consents if row["withdrawn_on"]]
    assert withdrawn
    assert all(row["withdrawn_on"] > row["signed_on"] for row in withdrawn)
    assert {row["scope"] for row in consents} <= {"research", "broad"}


def test_parquet_and_csv_hold_the_same_rows(cohort):
    from_csv = pd.read_csv(cohort.out_dir / "clinical.csv", dtype=str, keep_default_na=False)
    table = pq.read_table(cohort.out_dir / "clinical.parquet")
    assert table.schema.field("birth_date").type == "date32[day]"
    assert table.schema.field("lab_alt_u_l").type == "double"
    assert table.schema.field("mrn").type == "string"
    assert from_csv.equals(table.to_pandas().astype(str))


def test_fastq_parses_with_equal_sequence_and_quality_lengths(cohort, samples):
    for sample in samples:
        with pysam.FastxFile(str(cohort.out_dir / sample["fastq"])) as fastq:
            records = list(fastq)
        assert len(records) == 200
        assert all(r.name.startswith(sample["sample_id"] + ":") for r in records)
        assert all(len(r.sequence) == len(r.quality) == READ_LENGTH for r in records)
        assert all(set(r.sequence) <= set("ACGTN") for r in records)


def test_bam_header_carries_the_mrn_and_patient_name(cohort, clinical, samples):
    names = {row["mrn"]: row["name"] for row in clinical}
    for sample in samples:
        with pysam.AlignmentFile(str(cohort.out_dir / sample["bam"])) as bam:
            header = bam.header.to_dict()
            reads = list(bam)
        assert header["RG"][0]["SM"] == sample["mrn"]
        assert names[sample["mrn"]] in header["PG"][0]["CL"]
        assert len(reads) == 200 and all(not read.is_unmapped for read in reads)
        positions = [(read.reference_id, read.reference_start) for read in reads]
        assert positions == sorted(positions)


def test_vcf_sample_is_the_mrn(cohort, samples):
    for sample in samples:
        path = cohort.out_dir / sample["vcf"]
        assert (path.parent / (path.name + ".tbi")).exists()
        with pysam.VariantFile(str(path)) as vcf:
            assert list(vcf.header.samples) == [sample["mrn"]]
            records = list(vcf)
        assert len(records) == 60
        assert all(rec.ref != rec.alts[0] for rec in records)


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(cohort, tmp_path):
    again = generate_cohort(tmp_path / "again", subjects=20)
    other = generate_cohort(tmp_path / "other", subjects=20, seed=8)
    assert fingerprint(again.out_dir) == fingerprint(cohort.out_dir)
    assert sha256(other.out_dir / "clinical.csv") != sha256(cohort.out_dir / "clinical.csv")
    assert not set(fingerprint(other.out_dir).values()) & set(fingerprint(cohort.out_dir).values())


def test_fastq_bytes_grows_only_the_first_fastq(tmp_path):
    seen: list[int] = []
    summary = generate_cohort(
        tmp_path, subjects=3, fastq_bytes=3_000_000,
        progress=lambda what, amount: seen.append(amount) if what == "fastq" else None,
    )  # fmt: skip
    samples = read_rows(tmp_path / "samples.csv")
    first, second = (tmp_path / samples[0]["fastq"]), (tmp_path / samples[1]["fastq"])
    assert first.stat().st_size >= 3_000_000
    assert second.stat().st_size < 100_000
    assert seen and seen == sorted(seen)
    with pysam.FastxFile(str(first)) as fastq:
        records = [(r.name, len(r.sequence), len(r.quality)) for r in fastq]
    assert all(seq == qual == READ_LENGTH for _, seq, qual in records)
    assert len({name for name, _, _ in records}) == len(records) > 200
    assert summary.total_bytes > 3_000_000
