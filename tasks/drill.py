"""Drill and retention tasks: backups, the yearly restore and emergency drills, retention review.

The restore drill lays the latest backup out as a scratch seqlife home (catalog, key store, store),
opens it like production and checks everything a real recovery would need: the audit chain,
every stored file against its recorded SHA-256 (through decryption where it is kept encrypted),
every certificate's signature, and that destroyed data stays unreadable; it times the recovery
and writes an HTML + JSON report (GB/T 39725 §11.3.4.6 b 4). The emergency drill walks the
emergency plan on a simulated incident -- a stored object altered -- from detection to recovery
from backup, with the incident report SEQ §7.5.1 asks for.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, datetime, timezone
from pathlib import Path

from sqlalchemy import select

from infra.backup import open_backups, scratch_database
from infra.catalog import Certificate, DataFile, DatasetVersion, Destruction
from infra.resources import Resources, build_resources
from seqlife import certify
from seqlife import destroy as rules
from seqlife.audit import compare_trails
from seqlife.settings import Settings
from tasks.encrypt import stored_digest


def now() -> datetime:
    return datetime.now(timezone.utc)


def backup(res: Resources) -> dict:
    """Catalog and object store to the second location; the key store apart (signed catalogue)."""
    backups = open_backups(res.settings)
    catalogue = backups.take(res.settings.db_url, res.store, res.settings.keystore_dir,
                             sign=lambda body: {"catalogue": body, "signature": certify.sign(
                                 body, res.keys.signing_key())["signature"]})
    res.audit.append("drill.backup", f"backup:{catalogue['stamp']}", "ok",
                     reason=f"{catalogue['objects']} object versions, {catalogue['bytes']} bytes;"
                            f" catalog {catalogue['catalog']}; key store backed up apart")
    return {k: v for k, v in catalogue.items() if k != "object_digests"}


def destroyed_datasets(res: Resources) -> set[str]:
    """Datasets whose destruction was verified, as the live catalog knows them."""
    with res.sessions() as session:
        return set(session.scalars(select(Destruction.target).where(
            Destruction.kind == "dataset", Destruction.state == "verified")))


def _check_files(res: Resources, destroyed: set[str]) -> list[dict]:
    """Every live file reads back to its recorded digest; destroyed datasets' files do not read
    (``destroyed`` comes from the live catalog: a backup may predate the destruction)."""
    checks: list[dict] = []
    with res.sessions() as session:
        rows = [(f, v.dataset.name, v.version, v.destroyed_at is not None)
                for v in session.scalars(select(DatasetVersion)) for f in v.files]
    good = bad = unreadable = 0
    for data_file, dataset, version, gone in rows:
        digest = stored_digest(res, data_file, dataset)
        readable = digest is not None
        if gone or dataset in destroyed:
            unreadable += 0 if readable else 1
            if readable:
                checks.append({"check": f"destroyed data stays unreadable: {dataset} "
                                        f"v{version} {data_file.path}", "ok": False,
                               "detail": "read back after destruction"})
        elif digest == data_file.sha256:
            good += 1
        else:
            bad += 1
            checks.append({"check": f"{dataset} v{version} {data_file.path}", "ok": False,
                           "detail": "unreadable or digest differs"})
    checks.insert(0, {"check": "every live file reads back to its recorded SHA-256",
                      "ok": bad == 0, "detail": f"{good} files verified, {bad} failed"})
    checks.insert(1, {"check": "destroyed data stays unreadable after restore",
                      "ok": not any(c["check"].startswith("destroyed") for c in checks[1:]),
                      "detail": f"{unreadable} file(s) of destroyed datasets refused to open"})
    return checks


def _check_certificates(res: Resources, destroyed: set[str]) -> dict:
    """Every certificate of a dataset that was not destroyed still verifies."""
    from tasks.certify import verify_document

    with res.sessions() as session:
        documents = [c.document for c in session.scalars(select(Certificate))]
    live = [d for d in documents if d.get("certificate", {}).get("dataset") not in destroyed]
    failed = [d for d in live if verify_document(res, d)]
    return {"check": "every certificate's signature and data verify", "ok": not failed,
            "detail": f"{len(live)} certificate(s) checked, {len(failed)} failed"}


@contextmanager
def restored_copy(res: Resources, stamp: str) -> Iterator[Resources]:
    """A backup restored into a scratch home (and, for PostgreSQL, a scratch database), opened
    like production; everything is removed afterwards."""
    scratch = Path(tempfile.mkdtemp(dir=res.scratch(), prefix="restore-"))
    try:
        with ExitStack() as stack:
            database = None
            if not res.settings.db_url.startswith("sqlite"):
                database = stack.enter_context(scratch_database(res.settings.db_url))
                stack.callback(build_resources.cache_clear)  # forget the engine before the drop
            env = open_backups(res.settings).restore(stamp, scratch / "home", database)
            restored = build_resources(Settings.from_env(
                {**env, "SEQLIFE_ACTOR": res.settings.actor, "SEQLIFE_ROLE": "operator"}))
            try:
                yield restored
            finally:
                restored.engine.dispose()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def restore_drill(res: Resources, stamp: str | None = None) -> dict:
    """Restore the latest backup into scratch, verify it all, time it, report (HTML + JSON)."""
    backups = open_backups(res.settings)
    stamps = backups.stamps()
    if not stamps:
        raise rules.DestroyError("There is no backup to restore: run the backup flow first.")
    stamp = stamp or stamps[-1]
    started, clock = now(), time.perf_counter()
    with restored_copy(res, stamp) as restored:
        recovery = time.perf_counter() - clock
        chain = restored.audit.verify()
        checks = [{"check": "audit trail chain intact", "ok": chain.ok,
                   "detail": f"{chain.count} records, head {chain.head_hash[:16]}"}]
        comparison = compare_trails([(e.seq, e.hash) for e in res.audit.entries()],
                                    [(e.seq, e.hash) for e in restored.audit.entries()])
        checks.append({"check": "restored audit trail is a prefix of the live one (no gap, "
                                "no fork)", "ok": comparison.consistent,
                       "detail": comparison.detail})
        checks += _check_files(restored, destroyed_datasets(res))
        checks.append(_check_certificates(restored, destroyed_datasets(res)))
    report = {"title": f"Backup-restore drill of backup {stamp}", "kind": "restore",
              "backup": stamp, "started_at": started.isoformat(timespec="seconds"),
              "recovery_seconds": round(recovery, 3),
              "seconds": round(time.perf_counter() - clock, 3), "checks": checks,
              "passed": all(c["ok"] for c in checks),
              "clause": rules.load_destroy_policy().clause("restore_drill_months")}
    return _keep_report(res, report)


def _keep_report(res: Resources, report: dict) -> dict:
    base = f"drills/{report['kind']}-{report['started_at'].replace(':', '')}"
    stored = res.store.put_bytes(f"{base}.json", json.dumps(report, indent=1).encode())
    res.store.put_bytes(f"{base}.html", rules.drill_report_html(report).encode())
    res.audit.append(f"drill.{report['kind']}", f"drill:{base}",
                     "passed" if report["passed"] else "failed",
                     reason=f"{sum(c['ok'] for c in report['checks'])}/{len(report['checks'])} "
                            f"checks passed in {report['seconds']} s",
                     after_digest=stored.sha256)
    return {**report, "report_key": f"{base}.html"}


def emergency_drill(res: Resources) -> dict:
    """Simulated incident: one stored object is altered. Detect it by integrity scan, recover the
    object from the latest backup, scan again, and write the incident report (SEQ §7.5.1)."""
    backups = open_backups(res.settings)
    stamps = backups.stamps()
    if not stamps:
        raise rules.DestroyError("The emergency drill recovers from backup: run the backup "
                                 "flow first.")
    started, clock = now(), time.perf_counter()
    with restored_copy(res, stamps[-1]) as drill:
        with drill.sessions() as session:
            victim = session.scalars(select(DataFile).join(DatasetVersion).where(
                DatasetVersion.destroyed_at.is_(None))).first()
        if victim is None:
            raise rules.DestroyError("No stored file to run the drill on.")
        path = drill.store.root / "objects" / f"{victim.object_key}.versions" / \
            victim.object_version_id
        path.chmod(0o600)
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        detected_at = time.perf_counter()
        scan = _check_files(drill, set())
        detected = not scan[0]["ok"]
        shutil.copy2(backups.data_dir / stamps[-1] / "objects" / f"{victim.object_key}.versions"
                     / victim.object_version_id, path)
        rescan = _check_files(drill, set())
        recovered_in = time.perf_counter() - detected_at
    checks = [{"check": "the alteration is detected by the integrity scan", "ok": detected,
               "detail": scan[0]["detail"]},
              {"check": "the object is recovered from backup and verifies", "ok": rescan[0]["ok"],
               "detail": rescan[0]["detail"]}]
    report = {"title": "Emergency drill: a stored object altered", "kind": "emergency",
              "started_at": started.isoformat(timespec="seconds"),
              "seconds": round(time.perf_counter() - clock, 3), "checks": checks,
              "passed": all(c["ok"] for c in checks),
              "description": "Simulated incident on a restored copy: one byte of a stored "
                             "sequencing/table object was changed in storage.",
              "cause": "Simulated storage corruption or tampering (drill).",
              "impact": "One file of one dataset version could not be read intact; every later "
                        "stage reading it would stop with an integrity error.",
              "handling": "Integrity scan of every stored file against its recorded SHA-256; "
                          "the damaged object version was replaced from the latest backup.",
              "recovery": f"Recovered and re-verified in {recovered_in:.2f} s.",
              "clause": rules.load_destroy_policy().clause("emergency_drill_months")}
    return _keep_report(res, report)


def retention_review(res: Resources, today: date | None = None) -> dict:
    """Versions due for their review (every 5 years) and expired API tokens revoked."""
    from infra.catalog import ApiToken

    policy = rules.load_destroy_policy()
    today = today or now().date()
    with res.sessions() as session:
        rows = [(v.dataset.name, v.version, v.created_at.date(), None)
                for v in session.scalars(select(DatasetVersion).where(
                    DatasetVersion.destroyed_at.is_(None)))]
    due = rules.retention_due(rows, today, policy)
    with res.sessions.begin() as session:
        expired = session.scalars(select(ApiToken).where(ApiToken.revoked_at.is_(None))).all()
        revoked = 0
        for token in expired:
            ends = token.expires_at if token.expires_at.tzinfo else \
                token.expires_at.replace(tzinfo=timezone.utc)
            if ends.date() <= today:
                token.revoked_at, revoked = now(), revoked + 1
    for dataset, version, when in due:
        res.audit.append("retention.due", f"dataset:{dataset}@v{version}", "review",
                         reason=f"review due since {when}: keep, anonymise or destroy "
                                f"({policy.clause('retention_review_years')})",
                         policy_hash=policy.content_hash)
    res.audit.append("retention.review", "catalog", "ok",
                     reason=f"{len(due)} version(s) due for review; {revoked} expired API "
                            "token(s) revoked", policy_hash=policy.content_hash)
    return {"today": today.isoformat(), "due": [{"dataset": d, "version": v,
                                                  "due": w.isoformat()} for d, v, w in due],
            "tokens_revoked": revoked}

