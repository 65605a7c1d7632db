"""The same flows on a real Dask cluster (``distributed.LocalCluster``, 2 worker processes)
through ``prefect-dask``: per-file tasks run in other processes, resources travel as settings,
and the results are identical to Prefect's default runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from distributed import LocalCluster
from prefect_dask import DaskTaskRunner
from sqlalchemy import select

from infra.catalog import DataFile
from infra.resources import Resources

pytestmark = pytest.mark.usefixtures("prefect_backend")


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as local:
        yield local.scheduler_address


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_collect_deidentify_encrypt_fan_out_on_dask_with_identical_results(
        resources: Resources, cohort: Path, cluster: str) -> None:
    from flows.classify import classify_flow
    from flows.collect import collect_flow
    from flows.deidentify import deidentify_flow
    from flows.encrypt import encrypt_flow
    from seqlife.classify.labels import load_classify_policy
    from tasks.classify import approve

    dask = DaskTaskRunner(address=cluster)
    local = collect_flow(str(cohort), "cohort-local")
    remote = collect_flow.with_options(task_runner=dask)(str(cohort), "cohort-dask")
    assert remote["created"] and remote["files"] == local["files"]
    with resources.sessions() as session:
        digests = {}
        for name in ("cohort-local", "cohort-dask"):
            digests[name] = {f.path: f.sha256 for f in session.scalars(
                select(DataFile).join(DataFile.dataset_version).where(
                    DataFile.dataset_version.has(dataset_id=_dataset_id(session, name))))}
    assert digests["cohort-local"] == digests["cohort-dask"]

    classify_flow("cohort-dask")
    approve(resources, "cohort-dask", None, [], load_classify_policy())
    derived = deidentify_flow.with_options(task_runner=dask)("cohort-dask", "p1")
    assert derived["status"] == "pending_approval" and derived["report"]["files"]
    encrypted = encrypt_flow.with_options(task_runner=dask)("cohort-dask")
    # collect sealed every file: the fanned-out flow authenticates each sealed copy
    assert encrypted["verified"] == remote["files"] and encrypted["purged"] == 0


def _dataset_id(session, name: str) -> int:
    from infra.catalog import Dataset

    return session.scalar(select(Dataset.id).where(Dataset.name == name))


def test_resources_travel_as_settings(resources: Resources) -> None:
    """What a Dask worker receives is the settings; it opens its own engine and clients."""
    import pickle

    copy = pickle.loads(pickle.dumps(resources))
    assert copy.settings == resources.settings
    assert copy.store.url == resources.store.url
