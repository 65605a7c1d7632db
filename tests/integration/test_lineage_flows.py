"""Lineage and the quality gate inside the real flows, on both settings (SQLite + local store;
PostgreSQL + S3 over HTTP, where the DVC remote is the S3 bucket).

Every flow run is a DVC stage with its inputs, outputs, hashes, flow-run id and policy hash
(GB/T 39725 §11.3.4.6 b 2; §11.3.4.8 c; SEQ §5); labels travel with the data until the derived
version is re-classified and certified (GB/T 39725 §6.2; DER §5); the intake gate stops bad data
before anything is stored and keeps only a masked report (§10.1 f; §10.2 a).
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import as_role
from sqlalchemy import select

from infra.catalog import DatasetVersion
from infra.lineage import LineageRegistry
from infra.resources import Resources
from seqlife.quality import QualityGateFailed

pytestmark = pytest.mark.usefixtures("prefect_backend")


@pytest.fixture
def derived(resources: Resources, cohort: Path) -> str:
    """collect -> classify -> steward approval -> deidentify."""
    from flows.classify import classify_flow
    from flows.collect import collect_flow
    from flows.deidentify import deidentify_flow
    from seqlife.classify.labels import load_classify_policy
    from tasks.classify import approve

    collect_flow(str(cohort), "cohort-l")
    classify_flow("cohort-l")
    approve(resources, "cohort-l", None, [], load_classify_policy())
    return deidentify_flow("cohort-l", "p1")["dataset"]


def catalog_files(resources: Resources, dataset: str) -> dict[str, str]:
    """What the store holds of each file: its Crypt4GH bytes, which the lineage seals (the
    registry never holds plaintext)."""
    from tasks.classify import find_version

    with resources.sessions() as session:
        return {f.path: f.cipher_sha256 for f in find_version(session, dataset, None).files}


def test_each_flow_run_is_a_recorded_stage_that_walks_back_to_the_raw_files(
        resources: Resources, derived: str) -> None:
    """§11.3.4.6 b 2: from the derived version back to every raw file read, hashes and runs."""
    from tasks.lineage import lineage_of

    back = lineage_of.fn(resources, derived, 1, "back")
    assert [s.stage for s in back] == ["deidentify", "collect"]
    deidentify, collect = back
    assert {a.path: a.sha256 for a in deidentify.outputs} == catalog_files(resources, derived)
    raw = catalog_files(resources, "cohort-l")
    assert {a.path: a.sha256 for a in collect.outputs} == raw
    read = {a.path: a.sha256 for a in deidentify.inputs}
    assert read and all(raw[path] == sha for path, sha in read.items())
    assert "tables/consents.parquet" not in read  # only what the run actually read
    with resources.sessions() as session:
        runs = {v.dataset.name: v.flow_run_id for v in session.scalars(select(DatasetVersion))}
    assert deidentify.flow_run_id == runs[derived] and collect.flow_run_id == runs["cohort-l"]
    assert len(deidentify.policy_hash) == 64 and deidentify.params["project"] == "p1"

    forward = lineage_of.fn(resources, "cohort-l", 1, "forward")
    assert [s.stage for s in forward] == ["collect", "deidentify"]


def test_dvc_files_record_every_stage_and_the_remote_holds_every_byte(
        resources: Resources, derived: str, backend: str) -> None:
    """DVC's own dvc.yaml / dvc.lock carry the stages; `dvc` agrees with them; the remote (the
    object store, S3 over HTTP in production) holds each output."""
    registry = LineageRegistry.open(resources.settings)
    dvc_yaml = yaml.safe_load((registry.root / "dvc.yaml").read_text())
    lock = yaml.safe_load((registry.root / "dvc.lock").read_text())
    names = {"collect-cohort-l-v1", "deidentify-cohort-l--p1-v1"}
    assert names <= set(dvc_yaml["stages"]) and names <= set(lock["stages"])
    meta = dvc_yaml["stages"]["deidentify-cohort-l--p1-v1"]["meta"]["seqlife"]
    assert meta["flow_run_id"] and len(meta["policy_hash"]) == 64
    assert registry.verify(derived, 1, deep=True) == []
    assert registry.verify("cohort-l", 1) == []
    if backend == "production":
        pushed = resources.store.list_versions("")
        assert any("dvc" in v.key for v in pushed)


def test_recollecting_adds_no_stage_and_a_crash_before_recording_is_mended(
        resources: Resources, cohort: Path) -> None:
    """Idempotent: the same delivery again leaves one stage; a version stored but not recorded
    (the process died in between) is recorded by the re-run."""
    from flows.collect import collect_flow

    collect_flow(str(cohort), "cohort-r")
    registry = LineageRegistry.open(resources.settings)
    commits = registry.commits()
    collect_flow(str(cohort), "cohort-r")
    assert registry.commits() == commits

    # the process dies after the version is stored, before its stage is committed
    subprocess.run(["git", "-C", str(registry.root), "reset", "-q", "--hard", "HEAD~1"],
                   check=True)
    assert registry.stages() == []
    again = collect_flow(str(cohort), "cohort-r")
    assert not again["created"]
    assert [s.name for s in registry.stages()] == ["collect-cohort-r-v1"]
    assert registry.verify("cohort-r", 1) == []


def test_derived_data_inherits_the_source_grade_until_certified(
        resources: Resources, derived: str) -> None:
    """GB/T 39725 §6.2; DER §5: a derived version is handled at its source's grade until it is
    re-classified and certified."""
    from flows.certify import run_certify
    from seqlife.deidentify.tables import load_deidentify_policy
    from tasks.classify import current_classification, find_version
    from tasks.deidentify import approve
    from tasks.lineage import effective_grade

    with resources.sessions() as session:
        raw_grade = current_classification(
            session, find_version(session, "cohort-l", None)).labels["grade"]
    before = effective_grade(resources, derived, None)
    assert before["grade"] == raw_grade and not before["certified"]
    assert before["inherited_from"] == ["cohort-l v1"]

    approve(as_role(resources, "committee"), "cohort-l", "p1", None, load_deidentify_policy())
    issued = run_certify(resources, derived, None, "scientific_research")
    after = effective_grade(resources, derived, None)
    assert after["certified"] and after["inherited_from"] == []
    assert after["grade"] == issued["signed"]["certificate"]["dimensions"]["sensitivity_grade"]
    steps = issued["signed"]["certificate"]["lineage"]
    assert [s["stage"] for s in steps] == ["deidentify", "collect"]
    assert steps[0]["outputs"] == catalog_files(resources, derived)


def test_a_raw_version_without_lineage_cannot_be_derived_from(
        resources: Resources, cohort: Path) -> None:
    """No lineage, no derivation: a version whose stage is missing from the registry is refused
    with the reason, so the chain back to raw cannot silently break."""
    from flows.classify import classify_flow
    from flows.collect import collect_flow
    from flows.deidentify import deidentify_flow
    from seqlife.classify.labels import load_classify_policy
    from seqlife.lineage import ArtifactNotRecorded
    from tasks.classify import approve

    collect_flow(str(cohort), "cohort-n")
    classify_flow("cohort-n")
    approve(resources, "cohort-n", None, [], load_classify_policy())
    registry_root = LineageRegistry.open(resources.settings).root
    subprocess.run(["git", "-C", str(registry_root), "reset", "-q", "--hard", "HEAD~1"],
                   check=True)
    with pytest.raises(ArtifactNotRecorded, match="not in the lineage registry"):
        deidentify_flow("cohort-n", "p1")
    actions = [(e.action, e.outcome) for e in resources.audit.entries()]
    assert ("deidentify.refused", "refused") in actions


def test_intake_gate_stops_bad_clinical_data_before_anything_is_stored(
        resources: Resources, cohort: Path) -> None:
    """§10.1 f, §11.3.4.7 e: an impossible lab value and a discharge before admission stop the
    collect flow; the audit names the failed checks; the masked report is kept; no value leaks."""
    from flows.collect import collect_flow

    path = cohort / "clinical.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["lab_hemoglobin_g_l"] = "987.6"
    rows[1]["admission_date"], rows[1]["discharge_date"] = "2021-05-09", "2021-04-01"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    with pytest.raises(QualityGateFailed) as refused:
        collect_flow(str(cohort), "cohort-q")
    message = refused.value.message
    assert "lab_hemoglobin_g_l" in message and "discharge_date" in message
    assert "987.6" not in message and rows[0]["mrn"] not in message

    with resources.sessions() as session:
        assert session.scalars(select(DatasetVersion)).all() == []
    entries = list(resources.audit.entries())
    fail = next(e for e in entries if e.action == "quality.fail")
    assert fail.outcome == "refused" and "987.6" not in fail.reason
    assert ("collect.refused", "refused") in [(e.action, e.outcome) for e in entries]
    reports = [v for v in resources.store.list_versions("01_raw/cohort-q/_quality/")
               if v.key.endswith(".html")]
    assert len(reports) == 1
    page = resources.store.get_bytes(reports[0].key).decode()
    assert "Gate failed" in page and "987.6" not in page and rows[0]["mrn"] not in page
    assert [s.name for s in LineageRegistry.open(resources.settings).stages()] == []
