"""The collect flow end to end, through Prefect, on both settings: SQLite + local store, and
PostgreSQL + S3 (SeaweedFS over HTTP). Refusals store nothing, are audited, and leave earlier
versions intact (GB/T 39725 §7 a, §11.3.4.4, §11.3.4.6 b 3; SEQ §7.3.2.2)."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
from conftest import stored_path
from sqlalchemy import func, select

from infra.catalog import Consent, DataFile, Dataset, DatasetVersion, Subject
from seqlife.exceptions import ConsentMissing, ConsentScopeError, MalformedFile
from tasks.encrypt import stored_digest

pytestmark = pytest.mark.usefixtures("prefect_backend")


def collect(cohort: Path, dataset: str = "cohort-a") -> dict:
    from flows.collect import collect_flow

    return collect_flow(str(cohort), dataset)


def rewrite_csv(path: Path, change) -> None:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    fields = list(rows[0])
    rows = change(rows)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def audit_actions(resources) -> list[tuple[str, str]]:
    return [(e.action, e.outcome) for e in resources.audit.entries()]


def test_collect_registers_every_file_with_checksums_and_subjects(resources, cohort: Path) -> None:
    result = collect(cohort)
    assert result["created"] and result["version"] == 1
    with resources.sessions() as session:
        version = session.scalar(select(DatasetVersion))
        files = version.files
        sequencing = [f for f in files if f.role in ("fastq", "bam", "vcf")]
        assert {f.format for f in sequencing} == {"fastq", "bam", "vcf"}
        assert {f.path for f in files if f.role in ("clinical", "consents", "samples")} == {
            "tables/clinical.parquet", "tables/consents.parquet", "tables/samples.parquet"}
        assert all(f.subject_id is not None for f in sequencing)
        surrogates = session.scalars(select(Subject.surrogate)).all()
        assert all(s.startswith("S-") for s in surrogates)
        assert session.scalar(select(func.count(Consent.id))) >= result["subjects"]
        for f in files:  # what the catalog says is exactly what the store holds: ciphertext
            stored = resources.store.head(f.object_key, f.object_version_id)
            assert stored.sha256 == f.cipher_sha256 and stored.size == f.cipher_size
            assert resources.store.get_bytes(f.object_key, f.object_version_id)[:8] == b"crypt4gh"
            assert stored_digest(resources, f) == f.sha256  # and it decrypts to what was sent
        manifest = resources.store.get_bytes(version.manifest_key)
    assert b"MR" not in manifest  # subjects appear in the manifest by surrogate only
    assert resources.audit.verify().ok
    assert ("collect.register", "ok") in audit_actions(resources)


def test_recollecting_the_same_content_creates_no_version(resources, cohort: Path) -> None:
    first = collect(cohort)
    objects_before = len(resources.store.list_versions(""))
    again = collect(cohort)
    assert again["version"] == first["version"] and not again["created"]
    assert len(resources.store.list_versions("")) == objects_before
    assert ("collect.unchanged", "ok") in audit_actions(resources)


def test_changed_content_adds_a_version_and_keeps_the_old_one(resources, cohort: Path) -> None:
    """GB/T 39725 §11.3.4.6 b 3: the earlier version stays readable after a new one."""
    first = collect(cohort)
    fastq = sorted((cohort / "seq").glob("*.fastq.gz"))[-1]
    fastq.write_bytes(gzip.compress(gzip.decompress(fastq.read_bytes()) + b"@extra\nACGT\n+\nIIII\n"))
    second = collect(cohort)
    assert second["version"] == first["version"] + 1 and second["created"]
    with resources.sessions() as session:
        versions = session.scalars(select(DatasetVersion).order_by(DatasetVersion.version)).all()
        old = {f.path: f for f in versions[0].files}
        new = {f.path: f for f in versions[1].files}
    changed = stored_path(resources, cohort, fastq.relative_to(cohort).as_posix())
    assert old[changed].sha256 != new[changed].sha256
    assert resources.store.head(old[changed].object_key, old[changed].object_version_id)
    unchanged = next(p for p in old if p != changed and p.startswith("seq/"))
    assert old[unchanged].object_version_id == new[unchanged].object_version_id  # not re-stored


def test_truncated_file_stops_collect_stores_nothing_and_is_audited(resources, cohort: Path) -> None:
    collect(cohort)  # version 1 exists
    objects_before = {(v.key, v.version_id) for v in resources.store.list_versions("")}
    bam = sorted((cohort / "seq").glob("*.bam"))[0]
    bam.write_bytes(bam.read_bytes()[:-40])
    fastq = sorted((cohort / "seq").glob("*.fastq.gz"))[0]  # a changed file that would be stored
    fastq.write_bytes(gzip.compress(gzip.decompress(fastq.read_bytes()) * 2))
    with pytest.raises(MalformedFile, match="truncated"):
        collect(cohort)
    assert {(v.key, v.version_id) for v in resources.store.list_versions("")} == objects_before
    with resources.sessions() as session:
        assert session.scalar(select(func.count(DatasetVersion.id))) == 1
    refused = [e for e in resources.audit.entries() if e.outcome == "refused"]
    assert refused and "not a valid BAM file" in refused[-1].reason
    assert resources.audit.verify().ok


def test_subject_without_consent_stops_collect(resources, cohort: Path) -> None:
    """GB/T 39725 §7 a: no data without the subject's consent."""
    rewrite_csv(cohort / "consents.csv", lambda rows: rows[1:])
    with pytest.raises(ConsentMissing, match="no informed-consent record"):
        collect(cohort)
    with resources.sessions() as session:
        assert session.scalar(select(func.count(Dataset.id))) == 0
    assert resources.store.list_versions("") == []
    assert audit_actions(resources)[-1] == ("collect.refused", "refused")


def test_consent_not_covering_research_stops_collect(resources, cohort: Path) -> None:
    """GB/T 39725 §7 a–b: use beyond the consented scope needs new consent."""
    def clinical_only(rows):
        rows[0]["scope"], rows[0]["withdrawn_on"] = "clinical", ""
        return rows

    rewrite_csv(cohort / "consents.csv", clinical_only)
    with pytest.raises(ConsentScopeError):
        collect(cohort)
    assert resources.store.list_versions("") == []


def test_withdrawn_subjects_are_left_out_and_audited(resources, cohort: Path) -> None:
    """RARE §4.9: a withdrawn subject's data is not collected; the withdrawal stays on record."""
    result = collect(cohort)
    assert result["excluded_subjects"]
    excluded = set(result["excluded_subjects"])
    with resources.sessions() as session:
        linked = set(session.scalars(select(Subject.surrogate).join(
            DataFile, DataFile.subject_id == Subject.id)).all())
        withdrawn = session.scalars(select(Consent).where(Consent.withdrawn_on.is_not(None))).all()
    assert not excluded & linked
    assert withdrawn
    excluded_events = [e.object for e in resources.audit.entries() if e.action == "collect.exclude"]
    assert {o.removeprefix("subject:") for o in excluded_events} == excluded
