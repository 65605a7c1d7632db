"""Prefect flows, one per stage. Per-file tasks (validate, scrub, encrypt, hash) are mapped, so the
same flows fan out on a Dask cluster when ``SEQLIFE_DASK_ADDRESS`` names its scheduler."""

from __future__ import annotations

import os

from prefect import Flow


def on_cluster(flow: Flow) -> Flow:
    """``flow`` with a Dask task runner when SEQLIFE_DASK_ADDRESS is set (read at import, as a
    deployment's worker or the CLI starts), else unchanged (Prefect's default runner)."""
    address = os.environ.get("SEQLIFE_DASK_ADDRESS")
    if not address:
        return flow
    from prefect_dask import DaskTaskRunner

    return flow.with_options(task_runner=DaskTaskRunner(address=address))
