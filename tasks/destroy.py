"""Destroy tasks: an agreement's copies or a whole dataset, step by step, checked again by
looking, then certified; the daily sweep; requesters' destruction proofs.

Each step is idempotent and recorded as done in the ``destructions`` row before the next starts,
so a destruction interrupted half-way resumes where it stopped; it is reported done only after
the verification finds nothing left (GB/T 39725 §11.4.2.6, §11.7.4.3 a; RARE §4.4).

Destroying a dataset also destroys what links its subjects once nothing else needs it: the patient
code index of each project it belongs to (rows in the live catalog and in every catalog backup)
and the key sealing it (live key store and every key backup), when no other live dataset of the
project is left (``seqlife.destroy.code_index_fates``; GB/T 39725 §10.2 f–h). Backups are
point-in-time copies, so the rows are deleted inside each backup's catalog, as object versions are
deleted inside each backup, rather than by re-taking the backup (see ``infra.backup``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from infra.backup import open_backups
from infra.catalog import (
    AgreementRow,
    ApiToken,
    Dataset,
    DatasetVersion,
    Deidentification,
    Delivery,
    Destruction,
    DestructionProof,
    PatientCodeIndex,
)
from infra.datakeys import DataKeyMissing
from infra.keystore import code_index_key, linking_secrets
from infra.lineage import LineageRegistry
from infra.resources import Resources
from seqlife import certify
from seqlife import destroy as rules
from seqlife.exceptions import ObjectNotFound
from tasks.encrypt import shred_data_key
from tasks.share import agreement_key, enclave_sessions_left, follow_up, partial_of

CERTIFICATES = "destruction"


def now() -> datetime:
    return datetime.now(timezone.utc)


def _plan_agreement(res: Resources, agreement_id: str) -> dict[str, Any]:
    with res.sessions() as session:
        row = session.get(AgreementRow, agreement_id)
        if row is None:
            raise rules.DestroyError(f"No data use agreement {agreement_id}.")
        deliveries = session.scalars(select(Delivery).where(
            Delivery.agreement_id == agreement_id)).all()
        local = [str(path) for d in deliveries if d.tier == "file"
                 for path in (Path(d.location), partial_of(Path(d.location))) if path.exists()]
        tokens = session.scalars(select(ApiToken).where(
            ApiToken.agreement_id == agreement_id, ApiToken.revoked_at.is_(None))).all()
    enclave = res.settings.home / "enclaves" / agreement_id
    prefix = f"enclave/{agreement_id}/"
    return {"target": f"agreement:{agreement_id}", "tokens": len(tokens),
            "enclave": str(enclave) if enclave.exists() else None, "delivered_files": local,
            "store_keys": res.store.remnants(prefix), "backup_objects": open_backups(
                res.settings).remnants(prefix), "data_key": agreement_key(agreement_id)}


def _project_links(session: Session, dataset: str) -> list[rules.ProjectLink]:
    """Every dataset that the de-identification runs of ``dataset``'s projects read or wrote."""
    runs = {role: select(Deidentification.project, Dataset.name)
            .join(DatasetVersion, DatasetVersion.id == column)
            .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
            for role, column in (("source", Deidentification.source_version_id),
                                 ("output", Deidentification.output_version_id))}
    projects = {p for query in runs.values()
                for p in session.scalars(query.where(Dataset.name == dataset))}
    pairs = {(role, project, name) for role, query in runs.items()
             for project, name in session.execute(
                 query.where(Deidentification.project.in_(projects)))}
    live = set(session.scalars(select(Dataset.name).join(DatasetVersion).where(
        Dataset.name.in_({name for _, _, name in pairs}), DatasetVersion.destroyed_at.is_(None))))
    return [rules.ProjectLink(project, name, role, name in live)
            for role, project, name in sorted(pairs)]


def _plan_dataset(res: Resources, dataset: str) -> dict[str, Any]:
    with res.sessions() as session:
        record = session.scalar(select(Dataset).where(Dataset.name == dataset))
        if record is None:
            raise rules.DestroyError(f"No dataset {dataset} in the catalog.")
        versions = [(v.version, v.zone) for v in record.versions]
        links = _project_links(session, dataset)
    fates = rules.code_index_fates(dataset, links, rules.load_destroy_policy())
    registry = LineageRegistry.open(res.settings)
    recorded = {key for s in registry.stages() for key in s.output_versions}
    prefixes = sorted({f"{zone}/{dataset}/" for _, zone in versions})
    dvc = sorted({k for v, _ in versions if (dataset, v) in recorded
                  for k in registry.remote_keys_of(dataset, v)})
    return {"target": f"dataset:{dataset}", "versions": [v for v, _ in versions],
            "prefixes": prefixes, "store_keys": [k for p in prefixes
                                                 for k in res.store.remnants(p)],
            "dvc_remote_keys": dvc, "lineage_versions": [v for v, _ in versions
                                                         if (dataset, v) in recorded],
            "backup_objects": [o for p in prefixes for o in open_backups(res.settings)
                               .remnants(p)], "data_key": dataset,
            "code_index": [f.as_record() for f in fates]}


def plan(res: Resources, kind: str, target: str) -> dict[str, Any]:
    """What a destruction would remove (the dry run)."""
    return _plan_agreement(res, target) if kind == "agreement" else _plan_dataset(res, target)


def _record(res: Resources, kind: str, target: str, reason: str) -> tuple[str, list[dict]]:
    """The running destruction of ``target``, or a new one."""
    with res.sessions.begin() as session:
        running = session.scalar(select(Destruction).where(
            Destruction.kind == kind, Destruction.target == target,
            Destruction.state == "running"))
        if running is not None:
            return running.id, list(running.steps)
        destruction_id = f"dst-{uuid.uuid4().hex[:10]}"
        session.add(Destruction(id=destruction_id, kind=kind, target=target, state="running",
                                steps=[], reason=reason))
        return destruction_id, []


def _done(res: Resources, destruction_id: str, step: str, detail: str) -> dict:
    entry = {"step": step, "done": True, "at": now().isoformat(timespec="seconds"),
             "detail": detail}
    with res.sessions.begin() as session:
        row = session.get(Destruction, destruction_id)
        row.steps = [*row.steps, entry]
    return entry


def _shred(res: Resources, key_name: str) -> str:
    shredded, from_backups = shred_data_key(res, key_name)
    return (f"data key {'destroyed' if shredded else 'already gone'}; removed from "
            f"{from_backups} key-store backup(s)")


def _agreement_steps(res: Resources, agreement_id: str, p: dict) -> dict[str, Callable[[], str]]:
    def revoke() -> str:
        with res.sessions.begin() as session:
            tokens = session.scalars(select(ApiToken).where(
                ApiToken.agreement_id == agreement_id, ApiToken.revoked_at.is_(None))).all()
            for token in tokens:
                token.revoked_at = now()
        return f"{len(tokens)} API token(s) revoked"

    def enclave() -> str:
        path = res.settings.home / "enclaves" / agreement_id
        shutil.rmtree(path, ignore_errors=True)
        stale = enclave_sessions_left(agreement_id)  # a session killed before its cleanup
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)
        return ("enclave working area removed" if p["enclave"] else "no enclave") + (
            f"; {len(stale)} interrupted analysis session folder(s) removed" if stale else "")

    def delivered() -> str:
        removed = 0
        with res.sessions.begin() as session:
            for delivery in session.scalars(select(Delivery).where(
                    Delivery.agreement_id == agreement_id)):
                if delivery.tier == "file":
                    for path in (Path(delivery.location), partial_of(Path(delivery.location))):
                        if path.exists():
                            path.unlink()
                            removed += 1
                delivery.destroyed_at = delivery.destroyed_at or now()
        return f"{removed} delivered file(s) under the controller's reach deleted"

    def store() -> str:
        keys = res.store.remnants(f"enclave/{agreement_id}/")
        return f"{sum(res.store.purge(k) for k in keys)} object version(s) and markers purged"

    def backups() -> str:
        count = open_backups(res.settings).purge_prefix(f"enclave/{agreement_id}/")
        return f"{count} object version(s) removed from backups"

    return {"revoke_tokens": revoke, "delete_enclave": enclave,
            "delete_delivered_files": delivered, "purge_store_copies": store,
            "purge_backups": backups,
            "shred_agreement_key": lambda: _shred(res, agreement_key(agreement_id))}


def _doomed_indexes(p: dict) -> list[str]:
    """The projects whose code index goes with this destruction (none for an agreement)."""
    return [c["project"] for c in p.get("code_index", []) if c["destroyed"]]


def _kept_note(p: dict) -> str:
    kept = [c["project"] for c in p["code_index"] if not c["destroyed"]]
    return f"; kept for live datasets: project(s) {', '.join(kept)}" if kept else ""


def _dataset_steps(res: Resources, dataset: str, p: dict, reason: str, destruction_id: str
                   ) -> dict[str, Callable[[], str]]:
    def store() -> str:
        keys = [k for prefix in p["prefixes"] for k in res.store.remnants(prefix)]
        return f"{sum(res.store.purge(k) for k in keys)} object version(s) and markers purged"

    def lineage() -> str:
        registry = LineageRegistry.open(res.settings)
        for version in p["lineage_versions"]:
            registry.forget(dataset, version, reason)
        return (f"{len(p['lineage_versions'])} version(s) forgotten: workspace and DVC cache "
                "emptied, lineage record kept")

    def dvc_remote() -> str:
        return (f"{sum(res.store.purge(k) for k in p['dvc_remote_keys'])} DVC remote object "
                "version(s) and markers purged")

    def backups() -> str:
        count = sum(open_backups(res.settings).purge_prefix(prefix) for prefix in
                    p["prefixes"] + p["dvc_remote_keys"])
        return f"{count} object version(s) removed from backups"

    def mark() -> str:
        with res.sessions.begin() as session:
            record = session.scalar(select(Dataset).where(Dataset.name == dataset))
            for version in record.versions:
                version.destroyed_at = version.destroyed_at or now()
        return "versions marked destroyed in the catalog (metadata and hashes kept)"

    def code_index() -> str:
        projects = _doomed_indexes(p)
        with res.sessions.begin() as session:
            rows = session.execute(delete(PatientCodeIndex).where(
                PatientCodeIndex.project.in_(projects))).rowcount
            for run in session.scalars(select(Deidentification).where(
                    Deidentification.project.in_(projects),
                    Deidentification.code_index_destroyed_at.is_(None))):
                run.code_index_destroyed_at, run.code_index_destruction = now(), destruction_id
        backed_up = sum(open_backups(res.settings).purge_code_index(project, res.settings.db_url)
                        for project in projects)
        return (f"patient code index of {len(projects)} project(s): {rows} row(s) deleted from "
                f"the catalog, {backed_up} from catalog backups{_kept_note(p)}")

    def code_index_keys() -> str:
        names = [name for project in _doomed_indexes(p) for name in linking_secrets(project)]
        shredded = sum(res.keys.shred(name) for name in names)
        backed_up = sum(open_backups(res.settings).purge_secret(res.keys.file_name(name))
                        for name in names)
        return (f"{shredded} linking secret(s) destroyed (code-index key, date-shift secret; the "
                f"surrogate secret stays for subject-access requests, HDS §7 g); removed from "
                f"{backed_up} key-store backup(s){_kept_note(p)}")

    return {"purge_store_objects": store, "forget_lineage": lineage,
            "purge_dvc_remote": dvc_remote, "purge_backups": backups,
            "shred_data_key": lambda: _shred(res, dataset), "mark_destroyed": mark,
            "purge_code_index": code_index, "shred_code_index_key": code_index_keys}


def _verify(res: Resources, kind: str, target: str, p: dict) -> tuple[list[str], list[str]]:
    """Look again everywhere: (what was checked, what is left)."""
    backups = open_backups(res.settings)
    checked, left = [], []
    if kind == "agreement":
        prefix = f"enclave/{target}/"
        left += [f"store: {k}" for k in res.store.remnants(prefix)]
        left += [f"backup: {k}" for k in backups.remnants(prefix)]
        left += [f"delivered file: {Path(f).name}" for f in p["delivered_files"]
                 if Path(f).exists()]
        if (res.settings.home / "enclaves" / target).exists():
            left.append("enclave working area")
        left += ["an analysis session's clear extract" for _ in enclave_sessions_left(target)]
        with res.sessions() as session:
            if session.scalars(select(ApiToken).where(ApiToken.agreement_id == target,
                                                      ApiToken.revoked_at.is_(None))).first():
                left.append("an API token is still valid")
        key = agreement_key(target)
        checked += ["store versions and delete markers", "backups", "enclave area",
                    "interrupted enclave sessions", "delivered files", "API tokens"]
    else:
        for prefix in p["prefixes"]:
            left += [f"store: {k}" for k in res.store.remnants(prefix)]
            left += [f"backup: {k}" for k in backups.remnants(prefix)]
        for key_name in p["dvc_remote_keys"]:
            left += [f"DVC remote: {k}" for k in res.store.remnants(key_name)]
        registry = LineageRegistry.open(res.settings)
        forgotten = registry.forgotten()
        left += [f"lineage bytes of v{v}" for v in p["lineage_versions"]
                 if (target, v) not in forgotten]
        key = target
        checked += ["store versions and delete markers", "DVC workspace, cache and remote",
                    "backups"]
    left += [f"key backup: {k}" for k in backups.key_remnants(res.data_keys.key_file(key))]
    try:
        res.data_keys.secret_key(key)
        left.append("the data key still opens")
    except DataKeyMissing:
        pass
    checked.append("a decrypt attempt with the data key (must fail)")
    projects = _doomed_indexes(p)
    if projects:
        left += _code_index_remnants(res, projects)
        checked += ["patient code index rows (live catalog and every catalog backup)",
                    "code-index keys (live key store and every key backup)"]
    return checked, left


def _code_index_remnants(res: Resources, projects: list[str]) -> list[str]:
    """What still links the subjects of ``projects``: code index rows and their sealing key."""
    backups = open_backups(res.settings)
    left = []
    with res.sessions() as session:
        counts = dict(session.execute(
            select(PatientCodeIndex.project, func.count()).where(
                PatientCodeIndex.project.in_(projects)).group_by(PatientCodeIndex.project)).all())
    for project in projects:
        if counts.get(project):
            left.append(f"catalog: {counts[project]} code index row(s) of project {project}")
        left += [f"catalog backup {b} of project {project}"
                 for b in backups.code_index_remnants(project)]
        for name in linking_secrets(project):
            if res.keys.has(name):
                left.append(f"key store: secret {name}")
            left += [f"key backup: {k}"
                     for k in backups.secret_remnants(res.keys.file_name(name))]
    return left


def destroy(res: Resources, kind: str, target: str, reason: str,
            crash_after: str | None = None) -> dict:
    """Destroy ``target`` (an agreement's copies, or a whole dataset); resumable; certified.

    Args:
        kind: ``agreement`` or ``dataset``.
        target: the agreement id or dataset name.
        reason: why (recorded in the audit trail and the certificate).
        crash_after: tests only: stop abruptly after this step, as a killed process would.
    """
    policy = rules.load_destroy_policy()
    p = plan(res, kind, target)
    destruction_id, done = _record(res, kind, target, reason)
    obj = p["target"]
    res.audit.append("destroy.start", obj, "started", reason=f"{destruction_id}: {reason}",
                     policy_hash=policy.content_hash)
    all_steps = rules.AGREEMENT_STEPS if kind == "agreement" else rules.DATASET_STEPS
    actions = _agreement_steps(res, target, p) if kind == "agreement" else \
        _dataset_steps(res, target, p, reason, destruction_id)
    for step in rules.next_steps(all_steps, done):
        detail = actions[step]()
        done.append(_done(res, destruction_id, step, detail))
        if crash_after == step:
            raise SystemExit(f"simulated crash after {step}")
    checked, left = _verify(res, kind, target, p)
    try:
        body = rules.certificate(destruction_id, kind, target, reason, done, checked, left,
                                 p.get("code_index", []), now().isoformat(timespec="seconds"),
                                 policy)
    except rules.DestructionIncomplete as error:
        with res.sessions.begin() as session:  # the next run starts afresh: every step again
            session.get(Destruction, destruction_id).state = "incomplete"
        res.audit.append("destroy.incomplete", obj, "refused", reason=error.message,
                         policy_hash=policy.content_hash)
        raise
    signed = certify.sign(body, res.keys.signing_key())
    stored = res.store.put_bytes(f"{CERTIFICATES}/{destruction_id}.json",
                                 json.dumps(signed, indent=1, sort_keys=True).encode())
    with res.sessions.begin() as session:
        row = session.get(Destruction, destruction_id)
        row.state, row.completed_at, row.certificate = "verified", now(), signed
        if kind == "agreement":
            session.get(AgreementRow, target).status = "destroyed"
    res.audit.append("destroy.verified", obj, "destroyed",
                     reason=f"{destruction_id}: {len(done)} steps, checked: {', '.join(checked)}",
                     after_digest=stored.sha256, policy_hash=policy.content_hash)
    return {"destruction": destruction_id, "target": obj, "steps": done, "checked": checked,
            "remnants": body["remnants"], "code_index": body["code_index"],
            "certificate_key": stored.key, "signed": signed}


def sweep(res: Resources, today: date | None = None) -> dict:
    """The daily run: notify ended agreements, destroy their copies, flag overdue proofs."""
    policy = rules.load_destroy_policy()
    today = today or now().date()
    with res.sessions() as session:
        proofs = set(session.scalars(select(DestructionProof.agreement_id)))
        clocks = [rules.AgreementClock(a.id, a.institution, a.ends, a.status == "destroyed",
                                       a.id in proofs)
                  for a in session.scalars(select(AgreementRow))]
    decided = rules.sweep(clocks, today, policy)
    institution = {c.id: c.institution for c in clocks}
    for agreement in decided.notify:
        res.audit.append("destroy.notify", f"agreement:{agreement}", "notified",
                         reason=f"use period over; {institution[agreement]} must destroy its "
                                f"copies and file a proof by "
                                f"{rules.destruction_deadline(_ends(clocks, agreement), policy)}",
                         policy_hash=policy.content_hash)
    destroyed = [destroy(res, "agreement", a, "use period ended (daily sweep)")["destruction"]
                 for a in decided.destroy]
    for agreement in decided.overdue_proofs:
        res.audit.append("destroy.overdue", f"agreement:{agreement}", "alert",
                         reason=f"{institution[agreement]} has not filed its destruction proof "
                                "(RARE §4.4); counted against its record",
                         policy_hash=policy.content_hash)
    return {"today": today.isoformat(), "destroyed": destroyed,
            "overdue_proofs": list(decided.overdue_proofs),
            "follow_up_without_output": follow_up(res, today)}


def _ends(clocks: list[rules.AgreementClock], agreement: str) -> date:
    return next(c.ends for c in clocks if c.id == agreement)


def register_proof(res: Resources, agreement_id: str, path: Path) -> dict:
    """File the requester's written destruction proof (archived, hashed, audited)."""
    data = path.read_bytes()
    stored = res.store.put_bytes(f"{CERTIFICATES}/proofs/{agreement_id}/{path.name}", data)
    with res.sessions.begin() as session:
        if session.get(AgreementRow, agreement_id) is None:
            raise rules.DestroyError(f"No data use agreement {agreement_id}.")
        session.add(DestructionProof(agreement_id=agreement_id, sha256=stored.sha256,
                                     archive_key=stored.key, verified_by=res.settings.actor,
                                     verified_at=now()))
    res.audit.append("destroy.proof", f"agreement:{agreement_id}", "registered",
                     reason=f"requester's proof {path.name}, verified by the controller",
                     after_digest=hashlib.sha256(data).hexdigest())
    return {"agreement": agreement_id, "sha256": stored.sha256, "archive_key": stored.key}


def certificate_of(res: Resources, destruction_id: str) -> dict:
    with res.sessions() as session:
        row = session.get(Destruction, destruction_id)
        if row is None or row.certificate is None:
            raise ObjectNotFound(f"No verified destruction {destruction_id}.")
        return row.certificate
