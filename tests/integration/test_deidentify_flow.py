"""deidentify end to end: a classified, approved raw version becomes a research version with k >= 5,
scrubbed sequencing headers and a report free of personal data, pending committee approval; the
patient code index opens only for the designated role (GB/T 39725 §10.2, §11.4.2.4; RARE §4.5)."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import pandas as pd
import pysam
import pytest
from conftest import as_role, plaintext_files
from sqlalchemy import select

from infra.catalog import DataFile, Deidentification
from infra.resources import Resources
from seqlife.deidentify.kanon import k_of
from seqlife.exceptions import ClassificationMissing, PolicyViolation

pytestmark = pytest.mark.usefixtures("prefect_backend")


def identifiers(cohort: Path) -> set[str]:
    with (cohort / "clinical.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {row[c] for row in rows for c in ("mrn", "name", "id_number", "mobile", "email")}


@pytest.fixture
def approved(resources: Resources, cohort: Path) -> str:
    from flows.classify import classify_flow
    from flows.collect import collect_flow
    from seqlife.classify.labels import load_classify_policy
    from tasks.classify import approve

    collect_flow(str(cohort), "cohort-d")
    classify_flow("cohort-d")
    approve(resources, "cohort-d", None, [], load_classify_policy())
    return "cohort-d"


def test_unclassified_dataset_is_refused_and_audited(resources: Resources, cohort: Path) -> None:
    from flows.collect import collect_flow
    from flows.deidentify import deidentify_flow

    collect_flow(str(cohort), "cohort-u")
    with pytest.raises(ClassificationMissing):
        deidentify_flow("cohort-u", "p1")
    assert [e.action for e in resources.audit.entries()][-2:] == ["deidentify.gate",
                                                                  "deidentify.refused"]


def test_release_is_k_anonymous_scrubbed_and_pending_approval(resources: Resources, approved: str,
                                                              cohort: Path) -> None:
    from flows.deidentify import deidentify_flow

    result = deidentify_flow(approved, "p1")
    assert result["status"] == "pending_approval" and result["dataset"] == "cohort-d--p1"
    secret_values = identifiers(cohort)
    with resources.sessions() as session:
        files = {f.path: f for f in session.scalars(select(DataFile).join(DataFile.dataset_version)
                                                     .where(DataFile.object_key.like("03_%")))}
        run = session.scalar(select(Deidentification))
        assert run.status == "pending_approval"
    plain = plaintext_files(resources, "cohort-d--p1")  # stored sealed: read through decryption
    assert all(f.object_key.endswith(".c4gh") for f in files.values())
    with tempfile.TemporaryDirectory() as scratch:
        table_path = Path(scratch) / "c.parquet"
        table_path.write_bytes(plain["tables/clinical.parquet"])
        table = pd.read_parquet(table_path)
        vcf_entry = next(p for p in files if p.endswith(".vcf.gz"))
        vcf_path = Path(scratch) / "x.vcf.gz"
        vcf_path.write_bytes(plain[vcf_entry])
        with pysam.VariantFile(str(vcf_path)) as vcf:
            samples = list(vcf.header.samples)
            header_text = str(vcf.header)
    qis = [q for q in ("age", "sex", "postcode", "area") if q in table]
    assert k_of(table, qis) >= 5  # GB/T 39725 §10.2 e
    assert not {"name", "id_number", "mobile", "email", "mrn"} & set(table.columns)
    assert all(s.startswith("S-") for s in samples)
    assert not any(v in header_text for v in secret_values)
    report_json = resources.store.get_bytes(result["report_key"].replace(".html", ".json"))
    report_html = resources.store.get_bytes(result["report_key"])
    for blob in (report_json, report_html, table.to_csv().encode()):
        assert not any(v.encode() in blob for v in secret_values)
    assert json.loads(report_json)["risk"]["passed"] is True


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_no_output_byte_names_a_subject(resources: Resources, approved: str, cohort: Path) -> None:
    """GB/T 39725 §10.2 a, d: every de-identified output, decompressed byte by byte (BAM, VCF,
    FASTQ, tables), holds none of the raw record numbers, lab sample IDs, names, resident IDs,
    phones or e-mail addresses of the source."""
    import gzip

    from flows.deidentify import deidentify_flow

    deidentify_flow(approved, "p1")
    with (cohort / "samples.csv").open(encoding="utf-8", newline="") as handle:
        sample_ids = {row["sample_id"] for row in csv.DictReader(handle)}
    secret_values = {v.encode() for v in identifiers(cohort) | sample_ids if v}
    plain = plaintext_files(resources, "cohort-d--p1")  # every output, decrypted
    keys = list(plain)
    assert any(k.endswith(".bam") for k in keys) and any(k.endswith(".fastq.gz") for k in keys)
    for key in keys:
        blob = plain[key]
        if blob[:2] == b"\x1f\x8b":
            blob = gzip.decompress(blob)
        elif blob[:4] == b"PAR1":
            with tempfile.TemporaryDirectory() as scratch:
                path = Path(scratch) / "t.parquet"
                path.write_bytes(blob)
                blob = pd.read_parquet(path).to_csv().encode()
        leaked = [v for v in secret_values if v in blob]
        assert not leaked, f"{key} holds {len(leaked)} identifier(s) of the source"


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_a_lab_delivery_with_paired_reads_and_index_files_leaves_no_identifier(
        resources: Resources, cohort: Path) -> None:
    """SEQ §5, GB/T 39725 §10.2 a, d: paired R1/R2 listed for one sample, .bai and .tbi index
    files beside their data, BAMs whose read groups, RG tags and read names carry the lab's
    sample ID: collected, de-identified into two FASTQ outputs, and no output byte names anyone."""
    import gzip

    from flows.classify import classify_flow
    from flows.collect import collect_flow
    from flows.deidentify import deidentify_flow
    from seqlife.classify.labels import load_classify_policy
    from tasks.classify import approve

    with (cohort / "samples.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with (cohort / "consents.csv").open(encoding="utf-8", newline="") as handle:
        withdrawn = {r["mrn"] for r in csv.DictReader(handle) if r["withdrawn_on"]}
    first = next(row for row in rows if row["mrn"] not in withdrawn)
    records = gzip.decompress((cohort / first["fastq"]).read_bytes()).split(b"\n")
    r1, r2 = first["fastq"].replace(".fastq.gz", "_R1.fastq.gz"), \
        first["fastq"].replace(".fastq.gz", "_R2.fastq.gz")
    (cohort / r1).write_bytes(gzip.compress(b"\n".join(records)))
    (cohort / r2).write_bytes(gzip.compress(b"\n".join(records)))
    (cohort / first["fastq"]).unlink()
    first["fastq"] = f"{r1};{r2}"
    with (cohort / "samples.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        pysam.index(str(cohort / row["bam"]))
    collect_flow(str(cohort), "lab")
    classify_flow("lab")
    approve(resources, "lab", None, [], load_classify_policy())
    result = deidentify_flow("lab", "p2")
    fastqs = [p for p in result["files"] if ".fastq" in p]
    pair = [p for p in fastqs if p.endswith("_R2.fastq.gz")]
    assert len(pair) == 1 and pair[0].replace("_R2.", "_R1.") in fastqs
    secret_values = {v.encode() for v in identifiers(cohort) | {r["sample_id"] for r in rows}}
    plain = {k: v for k, v in plaintext_files(resources, "lab--p2").items() if k.startswith("seq/")}
    keys = list(plain)
    assert [k for k in keys if k.endswith(".bam.bai")], "every sorted BAM output gets its index"
    for key in keys:
        blob = plain[key]
        blob = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        assert not [v for v in secret_values if v in blob], key


def test_committee_approves_and_requester_cannot(resources: Resources, approved: str) -> None:
    from flows.deidentify import deidentify_flow
    from seqlife.deidentify.tables import load_deidentify_policy
    from tasks.deidentify import approve

    deidentify_flow(approved, "p1")
    policy = load_deidentify_policy()
    with pytest.raises(PolicyViolation, match="requesters never take part"):
        approve(as_role(resources, "requester"), approved, "p1", None, policy)
    assert approve(as_role(resources, "committee"), approved, "p1", None, policy)["status"] == "approved"


def test_code_index_opens_only_for_the_designated_role(resources: Resources, approved: str,
                                                       cohort: Path) -> None:
    """GB/T 39725 §10.2 g–h: re-identification by designated staff only, every read audited."""
    from flows.deidentify import deidentify_flow
    from seqlife.deidentify.tables import load_deidentify_policy
    from tasks.deidentify import read_code_index

    deidentify_flow(approved, "p1")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "c.parquet"
        path.write_bytes(plaintext_files(resources, "cohort-d--p1")["tables/clinical.parquet"])
        surrogate = pd.read_parquet(path)["subject"].iloc[0]
    policy = load_deidentify_policy()
    with pytest.raises(PolicyViolation, match="Only the reidentification_officer"):
        read_code_index(resources, "p1", surrogate, "audit check", policy)
    officer = as_role(resources, "reidentification_officer")
    real = read_code_index(officer, "p1", surrogate, "adverse event follow-up", policy)
    assert real in identifiers(cohort)
    reads = [(e.outcome, e.reason) for e in resources.audit.entries()
             if e.action == "deidentify.code_index_read"]
    assert reads[-1] == ("ok", "adverse event follow-up") and reads[0][0] == "refused"
    assert resources.audit.verify().ok
