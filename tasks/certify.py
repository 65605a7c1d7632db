"""Certify tasks: gather the evidence for a derived version, sign, store, and verify certificates."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from infra.catalog import (
    Certificate,
    Consent,
    DatasetVersion,
    Deidentification,
)
from infra.lineage import LineageRegistry
from infra.resources import Resources
from seqlife import certify as rules
from seqlife import lineage
from seqlife.classify.detectors import load_detectors
from seqlife.classify.labels import load_classify_policy
from seqlife.deidentify.tables import load_deidentify_policy
from seqlife.exceptions import SeqlifeError
from seqlife.policy import Policy
from seqlife.quality import declared_k, load_quality_policy
from tasks.classify import current_classification, find_version, label_version
from tasks.encrypt import read_parquet, stored_digest


def stored_digests(res: Resources, dataset: str, version: int | None) -> dict[str, str]:
    """SHA-256 of every file of a version, recomputed from the stored bytes (not the catalog)."""
    with res.sessions() as session:
        files = list(find_version(session, dataset, version).files)
    return {f.path: stored_digest(res, f) or "altered" for f in files}


def recorded_lineage(res: Resources, session: Any, dataset: str, version: int
                     ) -> list[dict[str, Any]]:
    """The chain back to raw as the lineage registry recorded it, one step per stage, with the
    zone and manifest digest the catalog holds for each output version. Empty if nothing is
    recorded: certification then names the unmet requirement instead of failing."""
    graph = lineage.build_graph(LineageRegistry.open(res.settings).stages())
    try:
        stages = lineage.chain_back(graph, dataset, version)
    except lineage.ArtifactNotRecorded:
        return []
    steps = []
    for stage in stages:
        for name, number in stage.output_versions:
            row = find_version(session, name, number)
            steps.append({
                "stage": stage.stage, "dataset": name, "version": number, "zone": row.zone,
                "digest": row.manifest_sha256, "flow_run_id": stage.flow_run_id,
                "policy_hash": stage.policy_hash, "inputs": len(stage.inputs),
                "outputs": {a.path: a.sha256 for a in stage.outputs
                            if a.version_key == (name, number)}})
    return steps


@task(name="gather_evidence", cache_policy=NO_CACHE)
def gather_evidence(res: Resources, dataset: str, version: int | None, scenario: str
                    ) -> tuple[rules.Evidence, str]:
    """Evidence for DER §5 from the catalog and store; runs the quality gate on the derived table.

    Returns the evidence and the masked quality report (HTML) to keep with the version.
    """
    from tasks.quality import quality_frames_for_certification

    with res.sessions() as session:
        output = find_version(session, dataset, version)
        run = session.scalar(select(Deidentification).where(
            Deidentification.output_version_id == output.id))
        files = {f.path: f.sha256 for f in output.files}
        stored = {f.path: f.cipher_sha256 if f.object_key == f.encrypted_key else f.sha256
                  for f in output.files}
        content_digest = output.manifest_sha256
        clinical = next((f for f in output.files if f.path == "tables/clinical.parquet"), None)
        lineage = recorded_lineage(res, session, dataset, output.version)
        consented, classified, approved, report, source_hashes = False, False, False, {}, {}
        if run is not None:
            source = session.get(DatasetVersion, run.source_version_id)
            subjects = {f.subject_id for f in source.files if f.subject_id is not None}
            covered = set(session.scalars(select(Consent.subject_id).where(
                Consent.subject_id.in_(subjects), Consent.withdrawn_on.is_(None))))
            consented = bool(subjects) and subjects <= covered
            classification = current_classification(session, source)
            classified = classification is not None and classification.status == "approved"
            approved, report = run.status == "approved", run.report
            source_hashes = {"deidentify": run.policy_hash,
                             "classify": classification.policy_hash if classification else ""}
        output_version = output.version
        table = read_parquet(res, clinical) if clinical is not None else None
    quality, docs, quality_hash = quality_frames_for_certification(table)
    _, _, labels = label_version.fn(res, dataset, output_version, load_classify_policy(),
                                    load_detectors())
    kanon, risk = report.get("kanon", {}), report.get("risk", {})
    evidence = rules.Evidence(
        dataset=dataset, version=output_version, content_digest=content_digest,
        files=files, lineage=lineage, subjects_all_consented=consented,
        method_recorded=bool(kanon.get("levels") is not None and report.get("source")),
        quality=quality, classification_approved=classified, deidentification_approved=approved,
        k_required=int(load_deidentify_policy()["k"]),
        k_achieved=declared_k(table, load_quality_policy()) if table is not None else 0,
        risk_passed=bool(risk.get("passed")), grade=labels.grade,
        generation_technique="deidentification", application_scenario=scenario,
        policy_hashes={**source_hashes, "quality": quality_hash}, stored=stored)
    return evidence, docs


def issue(res: Resources, evidence: rules.Evidence, requirements: list[rules.Requirement],
          policy: Policy, quality_docs: str) -> dict[str, Any]:
    """Sign and store the certificate (JSON + HTML) and the masked quality report beside the data."""
    now = datetime.now(timezone.utc)
    body = rules.build_certificate(evidence, requirements, policy, res.settings.actor,
                                   now.isoformat(timespec="seconds"), str(uuid.uuid4()))
    signed = rules.sign(body, res.keys.signing_key())
    with res.sessions() as session:
        output = find_version(session, evidence.dataset, evidence.version)
        base = f"{output.zone}/{evidence.dataset}"
        version_id = output.id
    key = f"{base}/_certificates/v{evidence.version}.json"
    res.store.put_bytes(key, json.dumps(signed, indent=2, sort_keys=True).encode())
    res.store.put_bytes(f"{base}/_certificates/v{evidence.version}.html", rules.render_html(signed))
    res.store.put_bytes(f"{base}/_certificates/v{evidence.version}-quality.html",
                        quality_docs.encode())
    with res.sessions.begin() as session:
        session.add(Certificate(id=body["id"], dataset_version_id=version_id, document=signed,
                                certificate_key=key, issued_by=res.settings.actor, issued_at=now))
    return {"certificate": body["id"], "dataset": evidence.dataset, "version": evidence.version,
            "certificate_key": key, "signed": signed}


def verify_document(res: Resources, signed: dict[str, Any]) -> list[str]:
    """Check a certificate against the controller's key and the data as it is stored now."""
    body = signed.get("certificate", {})
    try:
        current = stored_digests(res, body["dataset"], int(body["version"]))
    except (KeyError, TypeError, ValueError, SeqlifeError):
        current = {}
    return rules.verify(signed, res.keys.signing_key().public_key(), current)


def is_certified(res: Resources, dataset: str, version: int | None) -> bool:
    """Sharing accepts only certified derived data: a certificate that still verifies."""
    with res.sessions() as session:
        output = find_version(session, dataset, version)
        certificate = session.scalar(select(Certificate).where(
            Certificate.dataset_version_id == output.id).order_by(Certificate.issued_at.desc()))
        document = certificate.document if certificate else None
    return document is not None and not verify_document(res, document)

