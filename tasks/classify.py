"""Classify tasks: read a stored dataset version, propose labels, record approval, gate later stages."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from infra.catalog import Classification, ClassificationField, Dataset, DatasetVersion
from infra.resources import Resources
from seqlife.classify import labels as rules
from seqlife.classify.detectors import DetectorSet
from seqlife.classify.headers import read_header
from seqlife.exceptions import ClassificationError, PolicyViolation, SeqlifeError
from seqlife.policy import Policy
from tasks import is_transient
from tasks.encrypt import open_data

SEQUENCING_FORMATS = ("fastq", "bam", "cram", "vcf", "bcf")


def policy_hash(policy: Policy, detectors: DetectorSet) -> str:
    """One hash for the classification rules and the detectors that feed them."""
    return hashlib.sha256(f"{policy.content_hash}:{detectors.policy_hash}".encode()).hexdigest()


def find_version(session, dataset: str, version: int | None) -> DatasetVersion:
    record = session.scalar(select(Dataset).where(Dataset.name == dataset))
    if record is None or not record.versions:
        raise ClassificationError(f"No dataset '{dataset}' in the catalog; collect it first.")
    if version is None:
        return record.versions[-1]
    for candidate in record.versions:
        if candidate.version == version:
            return candidate
    raise ClassificationError(f"Dataset '{dataset}' has no version {version}.")


def current_classification(session, version: DatasetVersion) -> Classification | None:
    return session.scalar(
        select(Classification)
        .where(Classification.dataset_version_id == version.id,
               Classification.status != "superseded")
        .order_by(Classification.id.desc()).limit(1))


@task(name="label_version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=is_transient)
def label_version(res: Resources, dataset: str, version: int | None, policy: Policy,
                  detectors: DetectorSet) -> tuple[int, list[rules.FieldLabel], rules.DatasetLabels]:
    """Label every table column by content and every sequencing header field of one version."""
    special = rules.load_special_diseases()
    fields: list[rules.FieldLabel] = []
    special_rows, groups = 0, ()
    with res.sessions() as session:
        dataset_version = find_version(session, dataset, version)
        files = list(dataset_version.files)
        kind = dataset_version.dataset.kind
        version_id = dataset_version.id
    for data_file in files:
        if data_file.format == "parquet":
            with tempfile.TemporaryDirectory(dir=res.scratch()) as scratch:
                local = Path(scratch) / "table.parquet"
                with open_data(res, data_file) as src, open(local, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)  # verifies the SHA-256 at the end
                labels, rows, found = rules.label_table(
                    data_file.path, rules.ParquetColumns(local), detectors, policy, special)
            fields += labels
            if rows:
                special_rows, groups = special_rows + rows, tuple(sorted({*groups, *found}))
        elif data_file.format in SEQUENCING_FORMATS:
            with open_data(res, data_file) as stream:
                header = read_header(stream, data_file.format, data_file.path)
            fields += rules.label_header(data_file.path, header, detectors, policy)
    genomic_subjects = len({f.subject_id for f in files
                            if f.format in SEQUENCING_FORMATS and f.subject_id is not None})
    summary = rules.summarise(fields, data_kind=kind, genomic_subjects=genomic_subjects,
                              special_rows=special_rows, special_groups=groups, policy=policy)
    return version_id, fields, summary


@task(name="store_proposal", cache_policy=NO_CACHE)
def store_proposal(res: Resources, version_id: int, fields: list[rules.FieldLabel],
                   summary: rules.DatasetLabels, rules_hash: str) -> int:
    """Record a proposal; earlier open proposals for the same version are superseded."""
    with res.sessions.begin() as session:
        version = session.get(DatasetVersion, version_id)
        previous = current_classification(session, version)
        if previous is not None:
            previous.status = "superseded"
        proposal = Classification(
            dataset_version_id=version_id, status="proposed",
            content_digest=version.manifest_sha256, policy_hash=rules_hash,
            labels=asdict(summary), proposed_by=res.settings.actor)
        session.add(proposal)
        session.flush()
        for label in fields:
            session.add(ClassificationField(classification_id=proposal.id, **asdict(label)))
        return proposal.id


def labels_digest(summary: dict, fields: list[dict]) -> str:
    return hashlib.sha256(json.dumps({"labels": summary, "fields": fields}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def approve(res: Resources, dataset: str, version: int | None, overrides: list[rules.Override],
            policy: Policy) -> dict:
    """A steward approves the current proposal, optionally overriding fields (each with a reason).
    A sequencing header field the handling table does not know needs such an override.

    Approval writes the labels beside the data as a sidecar object, so anything reading the
    store sees them, and is audited together with every override.
    """
    if res.settings.role != "steward":
        raise PolicyViolation(
            f"Only a data steward approves a classification (GB/T 39725 App. F; §9.2); the "
            f"current role is '{res.settings.role}'. Set SEQLIFE_ROLE=steward.")
    with res.sessions.begin() as session:
        dataset_version = find_version(session, dataset, version)
        proposal = current_classification(session, dataset_version)
        if proposal is None:
            raise ClassificationError(f"{dataset} v{dataset_version.version} has no proposal to "
                                      f"approve; run `seqlife classify {dataset}` first.")
        fields = [rules.FieldLabel(**{k: getattr(f, k) for k in rules.FieldLabel.__dataclass_fields__})
                  for f in proposal.fields]
        fields = rules.apply_overrides(fields, overrides, policy)
        rules.require_header_decisions(
            fields, {f.path for f in dataset_version.files if f.format in SEQUENCING_FORMATS},
            dataset, dataset_version.version, policy)
        stored = proposal.labels
        summary = rules.summarise(
            fields, data_kind=stored["data_kind"],
            genomic_subjects=stored["genomic_subjects"],
            special_rows=stored["special_disease_rows"], special_groups=stored["special_groups"],
            policy=policy)
        by_key = {(f.file, f.field): f for f in proposal.fields}
        for label in fields:
            row = by_key[(label.file, label.field)]
            row.grade, row.identifier, row.override_reason, row.detector = (
                label.grade, label.identifier, label.override_reason, label.detector)
        proposal.labels = asdict(summary)
        proposal.status = "approved"
        proposal.approved_by = res.settings.actor
        proposal.approved_at = datetime.now(timezone.utc)
        sidecar = {
            "dataset": dataset, "version": dataset_version.version,
            "content_digest": proposal.content_digest, "policy_hash": proposal.policy_hash,
            "approved_by": proposal.approved_by, "approved_at": proposal.approved_at.isoformat(),
            "labels": proposal.labels, "fields": [asdict(f) for f in fields],
        }
        key = f"{dataset_version.zone}/{dataset}/_labels/v{dataset_version.version}.json"
        res.store.put_bytes(key, json.dumps(sidecar, indent=2, sort_keys=True).encode())
        proposal.labels_key = key
        result = {"dataset": dataset, "version": dataset_version.version, "labels": proposal.labels,
                  "labels_key": key, "policy_hash": proposal.policy_hash,
                  "digest": labels_digest(proposal.labels, sidecar["fields"])}
    for override in overrides:
        res.audit.append("classify.override", f"dataset:{dataset}@v{result['version']}/"
                         f"{override.file}:{override.field}", "ok", reason=override.reason,
                         policy_hash=result["policy_hash"])
    res.audit.append("classify.approve", f"dataset:{dataset}@v{result['version']}", "approved",
                     reason=f"grade {result['labels']['grade']}, tier {result['labels']['tier']}",
                     after_digest=result["digest"], policy_hash=result["policy_hash"])
    return result


@task(name="require_approved_classification", cache_policy=NO_CACHE)
def require_approved_classification(res: Resources, dataset: str, version: int | None,
                                    stage: str) -> dict:
    """Gate for every later stage: the version must carry an approved, current classification."""
    with res.sessions() as session:
        dataset_version = find_version(session, dataset, version)
        proposal = current_classification(session, dataset_version)
        obj = f"dataset:{dataset}@v{dataset_version.version}"
        try:
            rules.check_classification(
                proposal.status if proposal else None,
                proposal.content_digest if proposal else None,
                dataset_version.manifest_sha256, f"{dataset} v{dataset_version.version}")
        except SeqlifeError as exc:
            res.audit.append(f"{stage}.gate", obj, "refused", reason=exc.message)
            raise
        return dict(proposal.labels)
