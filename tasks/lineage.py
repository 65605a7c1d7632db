"""Lineage tasks: record a flow run's stage in the DVC registry, and walk the lineage of a version."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from infra.lineage import LineageRegistry
from infra.resources import Resources
from seqlife import lineage
from seqlife.lineage import LineageStage
from tasks import is_transient


@task(name="record_stage", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=is_transient)
def record_stage(res: Resources, stage: LineageStage, files: dict[str, Path]) -> dict:
    """Record one flow run in the lineage registry and push its outputs to the object store.

    Retried only when the push fails (``StorageUnavailable``): the stage is committed by then and
    recording it again just pushes.

    Args:
        res: the resources; only ``res.settings`` is used (home and store of the registry).
        stage: the run's inputs, outputs, flow-run id and policy hash.
        files: the bytes of each output, keyed by ``Artifact.path``.
    Returns:
        ``{"stage", "commit", "pushed"}``: the stage name, the registry commit, objects pushed.
    """
    recorded = LineageRegistry.open(res.settings).record(stage, files)
    return {"stage": recorded.stage.name, "commit": recorded.commit, "pushed": recorded.pushed}


@task(name="lineage_of", cache_policy=NO_CACHE)
def lineage_of(res: Resources, dataset: str, version: int, direction: str = "back"
               ) -> list[LineageStage]:
    """The stages ``dataset`` v``version`` comes from (``back``) or that came from it (``forward``).

    Args:
        res: the resources; only ``res.settings`` is used.
        dataset: catalog name of the dataset.
        version: its version.
        direction: ``back`` (derived -> raw) or ``forward`` (raw -> everything derived).
    Returns:
        The stages in walk order, each with its artifacts and their SHA-256s.
    """
    graph = lineage.build_graph(LineageRegistry.open(res.settings).stages())
    return lineage.chain(graph, dataset, version, direction)
