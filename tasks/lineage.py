"""Lineage tasks: record a flow run's stage in the DVC registry, and walk the lineage of a version."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from infra.catalog import Certificate
from infra.lineage import LineageRegistry
from infra.resources import Resources
from seqlife import lineage
from seqlife.lineage import Artifact, LineageStage
from tasks import is_transient
from tasks.classify import current_classification, find_version


def stage_of_run(stage: str, dataset: str, version: int, outputs: Mapping[str, tuple[str, Path]],
                 inputs: Sequence[Artifact], flow_run_id: str, policy_hash: str,
                 params: Mapping[str, Any] | None = None) -> tuple[LineageStage, dict[str, Path]]:
    """The lineage record of one flow run and the local file behind each output.

    Args:
        stage: the verb (collect, deidentify, ...).
        dataset: the dataset the run wrote; ``version`` its new version.
        outputs: path in the dataset -> (SHA-256, local file holding those bytes).
        inputs: the recorded artifacts the run read (none for raw intake).
        flow_run_id: the Prefect flow-run id; ``policy_hash`` the policy it ran under.
        params: plain, non-personal parameters of the run (project, scenario, k ...).
    """
    record = LineageStage(
        lineage.stage_name(stage, dataset, version), stage, tuple(inputs),
        tuple(Artifact(dataset, version, path, sha) for path, (sha, _) in sorted(outputs.items())),
        flow_run_id, policy_hash, dict(params or {}))
    return record, {path: local for path, (_, local) in outputs.items()}


def recorded_artifacts(res: Resources, dataset: str, version: int) -> list[Artifact]:
    """The artifacts of ``dataset`` v``version`` as the registry recorded them (a later stage's
    inputs). Raises ``ArtifactNotRecorded`` if no stage made that version."""
    graph = lineage.build_graph(LineageRegistry.open(res.settings).stages())
    names = graph.producers_of(dataset, version)
    if not names:
        raise lineage.ArtifactNotRecorded(dataset, version)
    return sorted((a for n in names for a in graph.by_name[n].outputs
                   if a.version_key == (dataset, version)), key=lambda a: a.path)


@task(name="record_stage", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=is_transient)
def record_stage(res: Resources, stage: LineageStage, files: dict[str, Path]) -> dict:
    """Record one flow run in the lineage registry and push its outputs to the object store.

    A version already recorded with the same outputs (a re-run after a crash between storing and
    recording, or an unchanged re-collection) is not recorded twice: its first record stands and
    is pushed again. Retried only when the push fails (``StorageUnavailable``).

    Args:
        res: the resources; only ``res.settings`` is used (home and store of the registry).
        stage: the run's inputs, outputs, flow-run id and policy hash.
        files: the bytes of each output, keyed by ``Artifact.path``.
    Returns:
        ``{"stage", "commit", "pushed", "new"}``.
    """
    registry = LineageRegistry.open(res.settings)
    existing = lineage.build_graph(registry.stages()).by_name.get(stage.name)
    new = existing is None or set(existing.outputs) != set(stage.outputs)
    recorded = registry.record(stage if new else existing, files)
    return {"stage": recorded.stage.name, "commit": recorded.commit, "pushed": recorded.pushed,
            "new": new}


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


def effective_grade(res: Resources, dataset: str, version: int | None) -> dict[str, Any]:
    """The grade a version must be handled at: its own if re-classified and certified, else the
    highest grade of everything it was derived from (GB/T 39725 §6.2; DER §5).

    Returns:
        ``{"dataset", "version", "grade", "own_grade", "certified", "inherited_from"}``.
    """
    graph = lineage.build_graph(LineageRegistry.open(res.settings).stages())
    with res.sessions() as session:
        target = find_version(session, dataset, version)
        key = (dataset, target.version)
        chain = lineage.chain_back(graph, *key)
        keys = {key} | {a.version_key for s in chain for a in (*s.inputs, *s.outputs)}
        labels: dict[tuple[str, int], dict[str, Any]] = {}
        for name, number in keys:
            row = find_version(session, name, number)
            certificate = session.scalar(select(Certificate).where(
                Certificate.dataset_version_id == row.id).order_by(Certificate.issued_at.desc()))
            if certificate is not None:  # certification re-classified it (DER §4-5)
                grade = certificate.document["certificate"]["dimensions"]["sensitivity_grade"]
                labels[(name, number)] = {"grade": grade, "certified": True}
                continue
            classification = current_classification(session, row)
            if classification is not None and classification.status == "approved":
                labels[(name, number)] = {"grade": classification.labels.get("grade"),
                                          "certified": False}
    grade = lineage.inherited_grade(graph, labels, dataset=dataset, version=target.version)
    own = labels.get(key, {})
    sources = [f"{n} v{v}" for (n, v), label in labels.items()
               if (n, v) != key and label.get("grade") == grade]
    return {"dataset": dataset, "version": target.version, "grade": grade,
            "own_grade": own.get("grade"), "certified": bool(own.get("certified")),
            "inherited_from": sorted(sources) if grade != own.get("grade") or not own else []}
