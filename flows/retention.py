"""Flow ``retention_review``: which dataset versions are due for their 5-yearly review
(GB/T 39725 §11.3.4.6 a 4), and API access that outlived its agreement revoked (App. C art. 15)."""

from __future__ import annotations

from datetime import date

from prefect import flow

from infra.resources import build_resources
from seqlife.settings import Settings
from tasks import drill as t


@flow(name="retention_review", log_prints=False)
def retention_review_flow(today: str | None = None) -> dict:
    """Monthly: list versions due for review (audited one by one) and revoke expired tokens."""
    return t.retention_review(build_resources(Settings.from_env()),
                              date.fromisoformat(today) if today else None)
