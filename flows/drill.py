"""Flows ``backup``, ``restore_drill`` and ``emergency_drill`` (GB/T 39725 §11.3.4.6 b 4, App. F;
SEQ §7.4.8, §7.5.1): daily backups to a second location (key store apart), and the yearly drills,
each writing an HTML + JSON report kept in the store and audited."""

from __future__ import annotations

from prefect import flow

from infra.resources import build_resources
from seqlife.settings import Settings
from tasks import drill as t


@flow(name="backup", log_prints=False)
def backup_flow() -> dict:
    """Catalog and object store to SEQLIFE_BACKUP_DIR, key store to SEQLIFE_KEY_BACKUP_DIR."""
    return t.backup(build_resources(Settings.from_env()))


@flow(name="restore_drill", log_prints=False)
def restore_drill_flow(stamp: str | None = None) -> dict:
    """Restore a backup (the latest by default) into scratch and verify everything."""
    return t.restore_drill(build_resources(Settings.from_env()), stamp)


@flow(name="emergency_drill", log_prints=False)
def emergency_drill_flow() -> dict:
    """Walk the emergency plan on a simulated incident and write the incident report."""
    return t.emergency_drill(build_resources(Settings.from_env()))
