"""Flows ``destroy`` and ``destroy_sweep``.

``destroy``: an operator's order to destroy an agreement's copies or a whole dataset (dry run
lists what would go). ``destroy_sweep``: the daily run that notifies requesters whose use period
ended, destroys the controller's copies of their agreements (at most 30 days after the end;
GB/T 39725 §11.4.2.6) and raises an alert for every requester destruction proof overdue
(RARE §4.4). Every destruction resumes after a crash and is reported only once verified.
"""

from __future__ import annotations

from datetime import date

from prefect import flow

from infra.resources import build_resources
from seqlife.settings import Settings
from tasks import destroy as t


@flow(name="destroy", log_prints=False)
def destroy_flow(kind: str, target: str, reason: str, dry_run: bool = False) -> dict:
    """Destroy an agreement's copies (``kind="agreement"``) or a dataset (``kind="dataset"``).

    Args:
        kind: ``agreement`` or ``dataset``.
        target: the agreement id or the dataset name.
        reason: why, for the audit trail and the destruction certificate.
        dry_run: only list what would be destroyed.
    """
    res = build_resources(Settings.from_env())
    if dry_run:
        return {"dry_run": True, **t.plan(res, kind, target)}
    return t.destroy(res, kind, target, reason)


@flow(name="destroy_sweep", log_prints=False)
def destroy_sweep_flow(today: str | None = None) -> dict:
    """The daily destruction sweep (``today`` as YYYY-MM-DD for a replay; default today)."""
    return t.sweep(build_resources(Settings.from_env()),
                   date.fromisoformat(today) if today else None)
