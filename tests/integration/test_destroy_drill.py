"""Destroy, retain and drill on both settings: an ended agreement's copies destroyed everywhere by
the sweep with a signed certificate, an interrupted destruction resumed, a restore drill that
cannot read destroyed data, the emergency drill and the retention review (GB/T 39725 §7 m,
§11.3.4.6 a 4 and b 4, §11.4.2.6, §11.7.4.3; RARE §4.4; SEQ §7.4.8, §7.5.1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from test_share_flow import approve_request, certified  # noqa: F401  (fixture)

from infra.backup import open_backups
from infra.catalog import ApiToken, Destruction
from infra.resources import Resources
from seqlife import certify
from seqlife.destroy import DestructionIncomplete

pytestmark = pytest.mark.usefixtures("prefect_backend")


def actions(resources: Resources) -> list[tuple[str, str]]:
    return [(e.action, e.outcome) for e in resources.audit.entries()]


def test_sweep_destroys_an_ended_agreement_everywhere_with_a_certificate(
        resources: Resources, certified: str) -> None:  # noqa: F811
    """§11.4.2.6, §11.7.4.3 a: 30 days after the end nothing of the agreement's copies is left:
    enclave area, archived exports (store versions and backups), the key sealing them (live and
    backed up), API tokens. The requester's missing proof raises an alert (RARE §4.4)."""
    from tasks import destroy, drill, share

    decided = approve_request(resources, certified, tier="enclave")
    agreement = decided["agreement"]
    opened = share.open_enclave(resources, agreement)
    (Path(opened["enclave"]) / "exports" / "result.csv").write_text("mean,1.0\n")
    # an analysis killed mid-session leaves its clear extract in the memory-backed folder
    session = subprocess.Popen([sys.executable, "-m", "seqlife.cli", "share", "enclave-run",
                                agreement, "--", "sleep", "120"], start_new_session=True,
                               env={**os.environ, "SEQLIFE_ROLE": "requester"})
    deadline = time.monotonic() + 120
    while not share.enclave_sessions_left(agreement) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = share.enclave_sessions_left(agreement)
    os.killpg(session.pid, signal.SIGKILL)
    session.wait()
    assert left and (left[0] / "extract.parquet").exists()
    share.request_export(resources, agreement, "result.csv")
    share.issue_token(resources, agreement)
    drill.backup(resources)
    backups = open_backups(resources.settings)
    key_file = resources.data_keys.key_file(share.agreement_key(agreement))
    assert backups.remnants(f"enclave/{agreement}/") and backups.key_remnants(key_file)

    ends = date.fromisoformat(decided["ends"])
    assert destroy.sweep(resources, ends)["destroyed"] == []  # still in its use period
    swept = destroy.sweep(resources, ends + timedelta(days=31))
    assert len(swept["destroyed"]) == 1 and swept["overdue_proofs"] == [agreement]

    assert resources.store.remnants(f"enclave/{agreement}/") == []
    assert backups.remnants(f"enclave/{agreement}/") == [] and backups.key_remnants(key_file) == []
    assert not Path(opened["enclave"]).exists()
    assert share.enclave_sessions_left(agreement) == [] and not left[0].exists()
    with resources.sessions() as session:
        assert all(t.revoked_at for t in session.scalars(select(ApiToken)))
        row = session.scalar(select(Destruction))
    assert row.state == "verified"
    assert certify.verify(row.certificate, resources.keys.signing_key().public_key(), None) == []
    for step in [("destroy.notify", "notified"), ("destroy.verified", "destroyed"),
                 ("destroy.overdue", "alert")]:
        assert step in actions(resources)
    again = destroy.sweep(resources, ends + timedelta(days=32))
    assert again["destroyed"] == []  # idempotent: already destroyed


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_dry_run_lists_and_an_interrupted_destruction_resumes(resources: Resources,
                                                              cohort: Path) -> None:
    """A crash half-way never reports success; the re-run finishes without repeating a step."""
    from flows.collect import collect_flow
    from flows.encrypt import encrypt_flow
    from tasks import destroy

    collect_flow(str(cohort), "cohort-d")
    encrypt_flow("cohort-d")
    planned = destroy.plan(resources, "dataset", "cohort-d")
    assert planned["store_keys"] and planned["dvc_remote_keys"] and planned["lineage_versions"]
    assert resources.store.remnants("01_raw/cohort-d/")  # the dry run removed nothing

    with pytest.raises(SystemExit, match="simulated crash"):
        destroy.destroy(resources, "dataset", "cohort-d", "retention: no longer needed",
                        crash_after="forget_lineage")
    with resources.sessions() as session:
        assert session.scalar(select(Destruction)).state == "running"
    assert ("destroy.verified", "destroyed") not in actions(resources)
    done = destroy.destroy(resources, "dataset", "cohort-d", "retention: no longer needed")
    steps = [s["step"] for s in done["steps"]]
    assert steps == ["purge_store_objects", "forget_lineage", "purge_dvc_remote",
                     "purge_backups", "shred_data_key", "mark_destroyed", "purge_code_index",
                     "shred_code_index_key"]
    assert done["code_index"] == [] and done["remnants"] == []  # never de-identified
    assert resources.store.remnants("01_raw/cohort-d/") == []
    assert all(resources.store.remnants(k) == [] for k in planned["dvc_remote_keys"])


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_incomplete_destruction_is_not_certified(resources: Resources, cohort: Path,
                                                 monkeypatch) -> None:
    """§11.7.4.3 a: the store refuses to delete the object versions; looking again finds them, so
    the destruction is refused as incomplete (typed, audited) and no certificate is issued. The
    next run does every step again instead of trusting the steps recorded as done."""
    from flows.collect import collect_flow
    from tasks import destroy

    collect_flow(str(cohort), "cohort-i")
    monkeypatch.setattr(type(resources.store), "purge", lambda self, key: 0)
    with pytest.raises(DestructionIncomplete, match="not complete.*store: 01_raw/cohort-i/"):
        destroy.destroy(resources, "dataset", "cohort-i", "test")
    assert ("destroy.incomplete", "refused") in actions(resources)
    assert ("destroy.verified", "destroyed") not in actions(resources)
    with resources.sessions() as session:
        failed = session.scalar(select(Destruction))
        assert failed.state == "incomplete" and failed.certificate is None
    assert resources.store.remnants("destruction/") == []

    monkeypatch.undo()
    done = destroy.destroy(resources, "dataset", "cohort-i", "test")
    assert done["destruction"] != failed.id and done["remnants"] == []
    assert done["signed"]["certificate"]["remnants"] == []
    assert resources.store.remnants("01_raw/cohort-i/") == []


def test_restore_drill_after_a_destruction_cannot_read_the_destroyed_data(
        resources: Resources, cohort: Path) -> None:
    """§11.3.4.6 b 4: the backup restored into scratch verifies every file, certificate and the
    audit chain; a dataset destroyed after the backup stays unreadable (crypto-shredded)."""
    from flows.collect import collect_flow
    from flows.encrypt import encrypt_flow
    from tasks import destroy, drill

    collect_flow(str(cohort), "cohort-keep")
    collect_flow(str(cohort), "cohort-gone")
    encrypt_flow("cohort-gone")
    drill.backup(resources)
    destroy.destroy(resources, "dataset", "cohort-gone", "consent withdrawn for the study")
    report = drill.restore_drill(resources)
    assert report["passed"], report["checks"]
    checks = {c["check"]: c for c in report["checks"]}
    assert "refused to open" in checks["destroyed data stays unreadable after restore"]["detail"]
    assert not checks["destroyed data stays unreadable after restore"]["detail"].startswith("0 ")
    assert report["recovery_seconds"] > 0
    page = resources.store.get_bytes(report["report_key"]).decode()
    assert "Backup-restore drill" in page and "passed" in page


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_emergency_drill_detects_the_incident_and_recovers(resources: Resources,
                                                           cohort: Path) -> None:
    """SEQ §7.4.8, §7.5.1: the report has description, cause, impact and handling."""
    from flows.collect import collect_flow
    from tasks import drill

    collect_flow(str(cohort), "cohort-e")
    drill.backup(resources)
    report = drill.emergency_drill(resources)
    assert report["passed"], report["checks"]
    assert all(report[k] for k in ("description", "cause", "impact", "handling", "recovery"))


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_retention_review_lists_versions_due_after_five_years(resources: Resources,
                                                              cohort: Path) -> None:
    """§11.3.4.6 a 4: every 5 years the data is reviewed."""
    from flows.collect import collect_flow
    from tasks import drill

    collect_flow(str(cohort), "cohort-r")
    assert drill.retention_review(resources)["due"] == []
    later = drill.retention_review(resources, date.today() + timedelta(days=5 * 366))
    assert [d["dataset"] for d in later["due"]] == ["cohort-r"]
    assert ("retention.due", "review") in actions(resources)


def test_only_verified_destructions_count(resources: Resources) -> None:
    """Nothing to destroy is an error a steward understands, not a silent success."""
    from seqlife.destroy import DestroyError
    from tasks import destroy

    with pytest.raises(DestroyError, match="No dataset"):
        destroy.destroy(resources, "dataset", "never-collected", "test")
    with pytest.raises(DestroyError, match="No data use agreement"):
        destroy.destroy(resources, "agreement", "dua-none", "test")


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_audit_trail_survives_a_restore_and_a_gap_is_detected(resources: Resources,
                                                              cohort: Path) -> None:
    """GB/T 39725 §11.3.4.9, App. F: the restored chain verifies and is a prefix of the live
    one; records removed from the live trail after the backup show up as a gap."""
    from sqlalchemy import text

    from flows.collect import collect_flow
    from tasks import drill

    collect_flow(str(cohort), "cohort-a")
    drill.backup(resources)
    report = drill.restore_drill(resources)
    assert report["passed"]
    with resources.engine.begin() as connection:  # an intruder bypasses the trigger
        connection.execute(text("DROP TRIGGER audit_events_no_delete"))
        connection.execute(text("DELETE FROM audit_events WHERE seq = 2"))
    report = drill.restore_drill(resources)
    checks = {c["check"]: c for c in report["checks"]}
    prefix = checks["restored audit trail is a prefix of the live one (no gap, no fork)"]
    assert not report["passed"] and not prefix["ok"] and "#2" in prefix["detail"]
