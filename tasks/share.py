"""Share tasks: requests, committee votes and decisions, agreements, deliveries with a per-recipient
watermark, leak tracing and the blacklist, cross-border totals and subject access. The rules are
``seqlife.share``; this module reads and writes the catalog, store and key store around them, and
audits every step."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import tempfile
import uuid
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import yaml
from sqlalchemy import select

from infra.catalog import (
    AgreementRow,
    Consent,
    Deidentification,
    Delivery,
    Institution,
    PatientCodeIndex,
    ReviewVote,
    ShareRequest,
    Subject,
)
from infra.keystore import code_index_key, surrogate_key
from infra.resources import Resources
from seqlife import certify
from seqlife.classify.detectors import load_detectors
from seqlife.classify.labels import classify_file, load_classify_policy
from seqlife.collect import load_collect_policy, subject_surrogate
from seqlife.encrypt import c4gh
from seqlife.exceptions import PolicyViolation
from seqlife.policy import DATA_CATALOG
from seqlife.share import rules, watermark
from tasks.certify import is_certified
from tasks.classify import find_version
from tasks.encrypt import read_parquet

#: Our delivery tiers and the sharing form of the classify policy each needs (HDS Table 2).
TIER_FORMS = {"file": "file", "api": "api", "enclave": "enclave", "aggregate": "website"}
CLINICAL = "tables/clinical.parquet"
#: Key under which a stored request keeps what seqlife learned of it (grade, important data).
FACTS = "_seqlife_facts"
SUBJECT_COLUMN = "subject"
#: The enclave's extract, sealed under the agreement's key.
ENCLAVE_EXTRACT = "extract.parquet.c4gh"


def now() -> datetime:
    return datetime.now(timezone.utc)


def require_role(res: Resources, role: str, what: str) -> None:
    if res.settings.role != role:
        raise PolicyViolation(f"Only the {role} may {what}; the current role is "
                              f"'{res.settings.role}'.")


def load_pool(path: Path = DATA_CATALOG / "reviewers.yaml") -> list[rules.Reviewer]:
    """The expert pool (RARE §4.2), ids and institutions only."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rules.Reviewer(r["id"], r["institution"], frozenset(r.get("conflicts") or ()))
            for r in document["reviewers"]]


def _clinical_table(res: Resources, dataset: str, version: int | None) -> pd.DataFrame:
    with res.sessions() as session:
        row = find_version(session, dataset, version)
        clinical = next((f for f in row.files if f.path == CLINICAL), None)
    if clinical is None:
        raise rules.ShareError(f"{dataset} has no clinical table to share.")
    return read_parquet(res, clinical)


def extract(table: pd.DataFrame, variables: tuple[str, ...], subjects: set[str]) -> pd.DataFrame:
    """Minimum necessary: the requested variables of the eligible subjects only."""
    columns = [SUBJECT_COLUMN] + [v for v in variables if v != SUBJECT_COLUMN and v in table]
    return table.loc[table[SUBJECT_COLUMN].isin(subjects), columns].reset_index(drop=True)


def _extract_tiers(res: Resources, frame: pd.DataFrame) -> tuple[frozenset[str], int, bool]:
    """Classify the extract itself: its grade decides the delivery forms it may take."""
    with tempfile.TemporaryDirectory(dir=res.scratch()) as scratch:
        path = Path(scratch) / "extract.parquet"
        frame.to_parquet(path, index=False)
        _, labels = classify_file(path, load_detectors(), load_classify_policy())
    forms = set(labels.sharing_forms)
    tiers = {tier for tier, form in TIER_FORMS.items() if form in forms} | {"aggregate"}
    return frozenset(tiers), labels.grade, labels.important_data


def consent_map(res: Resources, project: str, surrogates: set[str]
                ) -> dict[str, tuple[frozenset[str], bool]]:
    """Project surrogate -> (uses the subject's consents cover, withdrawn), via the sealed code
    index; the linkage stays inside this function (nothing is logged or returned but flags)."""
    scopes_by_use = load_collect_policy()["scenario_scopes"]
    sealer = res.keys.sealer(code_index_key(project), create=False)  # never mint one here
    secret = res.keys.secret("subject-surrogate")
    out: dict[str, tuple[frozenset[str], bool]] = {}
    with res.sessions() as session:
        rows = session.scalars(select(PatientCodeIndex).where(
            PatientCodeIndex.project == project, PatientCodeIndex.surrogate.in_(surrogates)))
        for row in rows:
            key = sealer.decrypt(row.sealed_subject_key.encode()).decode()
            subject = session.scalar(select(Subject).where(
                Subject.surrogate == subject_surrogate(secret, key)))
            consents = session.scalars(select(Consent).where(
                Consent.subject_id == subject.id)).all() if subject else []
            given = {c.scope for c in consents}
            uses = frozenset(use for use, allowed in scopes_by_use.items() if given & set(allowed))
            out[row.surrogate] = (uses, any(c.withdrawn_on for c in consents) or not consents)
    return out


def _past_grants(session: Any) -> list[rules.PastGrant]:
    grants = []
    for row in session.scalars(select(ShareRequest).where(ShareRequest.status == "approved")):
        doc = row.document
        grants.append(rules.PastGrant(
            row.id, row.institution, doc["dataset"], frozenset(doc["variables"]),
            int(doc["records"]), (row.decided_at or row.submitted_at).date(),
            doc["destination_country"]))
    return grants


def submit(res: Resources, document: dict[str, Any], today: date | None = None) -> dict:
    """Check a request before review (every rule, all failures listed), keep only subjects whose
    consent covers the purpose, draw the reviewers; refusals are stored and audited."""
    policy = rules.load_share_policy()
    request_id = f"req-{uuid.uuid4().hex[:10]}"
    request = rules.parse_request(document, request_id)
    today = today or now().date()
    with res.sessions() as session:
        row = find_version(session, request.dataset, request.version)
        version, zone, version_id = row.version, row.zone, row.id
        past = _past_grants(session)
        blacklisted = {i.name for i in session.scalars(select(Institution).where(
            Institution.blacklisted_at.is_not(None)))}
    table = _clinical_table(res, request.dataset, version)
    project = request.dataset.rsplit("--", 1)[-1]
    consents = consent_map(res, project, set(table[SUBJECT_COLUMN])) \
        if SUBJECT_COLUMN in table else {}
    eligible, excluded = rules.eligible_subjects(consents, request.duo_codes, policy)
    frame = extract(table, request.variables, eligible) if SUBJECT_COLUMN in table else table
    tiers, grade, important = _extract_tiers(res, frame)
    facts = rules.DatasetFacts(request.dataset, version, is_certified(res, request.dataset, version),
                               zone, zone == "03_deidentified", important,
                               frozenset(table.columns), tiers)
    findings = rules.check_request(request, facts, past=past, blacklisted=blacklisted,
                                   today=today, policy=policy)
    passed = all(f.ok for f in findings)
    drawn = [r.id for r in rules.draw_reviewers(load_pool(), request, request_id.encode(), policy)] \
        if passed else []
    stored = {**document, "dataset": request.dataset, "version": version,
              "records": min(int(request.records), len(frame)),
              FACTS: {"grade": grade, "important_data": important}}
    with res.sessions.begin() as session:
        session.add(ShareRequest(
            id=request_id, institution=request.institution, dataset_version_id=version_id,
            document=stored, status="in_review" if passed else "refused",
            findings=[asdict(f) for f in findings], reviewers=drawn, subjects=sorted(eligible),
            excluded_subjects=len(excluded)))
    obj = f"request:{request_id}"
    if not passed:
        error = rules.RequestRefused(f"Request {request_id} from {request.institution}", findings)
        res.audit.append("share.refuse", obj, "refused", reason=error.message,
                         policy_hash=policy.content_hash)
        raise error
    res.audit.append("share.request", obj, "in_review",
                     reason=f"{request.institution}; {request.dataset} v{version}; tier "
                            f"{request.tier}; {len(eligible)} subjects eligible, {len(excluded)} "
                            f"excluded by consent; reviewers {', '.join(drawn)}",
                     policy_hash=policy.content_hash)
    return {"request": request_id, "status": "in_review", "reviewers": drawn,
            "eligible_subjects": len(eligible), "excluded_subjects": len(excluded),
            "grade": grade, "tiers": sorted(tiers)}


def vote(res: Resources, request_id: str, reviewer: str, approve: bool,
         scores: dict[str, int], comment: str = "") -> dict:
    """One drawn reviewer's vote and Table 8 scores (role committee)."""
    require_role(res, "committee", "vote on a data request")
    policy = rules.load_share_policy()
    with res.sessions.begin() as session:
        request = _request(session, request_id)
        if request.status != "in_review":
            raise rules.ReviewError(f"Request {request_id} is {request.status}, not in review.")
        if reviewer not in request.reviewers:
            raise rules.ReviewError(f"{reviewer} was not drawn for request {request_id}; only "
                                    "drawn reviewers vote (App. C art. 11).")
        if session.scalar(select(ReviewVote).where(ReviewVote.request_id == request_id,
                                                   ReviewVote.reviewer == reviewer)):
            raise rules.ReviewError(f"{reviewer} has already voted on request {request_id}.")
        rules.tally([reviewer], [rules.Vote(reviewer, approve, scores)], policy)  # checks scores
        session.add(ReviewVote(request_id=request_id, reviewer=reviewer, approve=approve,
                               scores=scores, comment=comment))
    res.audit.append("share.vote", f"request:{request_id}", "yes" if approve else "no",
                     reason=f"{reviewer}: " + ", ".join(f"{k}={v}" for k, v in scores.items()),
                     policy_hash=policy.content_hash)
    return {"request": request_id, "reviewer": reviewer, "approve": approve}


def _form(document: dict) -> dict:
    """The request form as the institution filled it in (without seqlife's own facts)."""
    return {k: v for k, v in document.items() if k != FACTS}


def _request(session: Any, request_id: str) -> ShareRequest:
    request = session.get(ShareRequest, request_id)
    if request is None:
        raise rules.ShareError(f"No data request {request_id}.")
    return request


def decide(res: Resources, request_id: str, *, months: int, protection_measures: list[str],
           emergency_plan: str, starts: date | None = None) -> dict:
    """Tally the votes; more than two thirds in favour makes a signed decision and a data use
    agreement with its clock, anything less a recorded rejection (App. C art. 11)."""
    require_role(res, "committee", "decide a data request")
    policy = rules.load_share_policy()
    with res.sessions() as session:
        request = _request(session, request_id)
        if request.status != "in_review":
            raise rules.ReviewError(f"Request {request_id} is {request.status}, not in review.")
        drawn = list(request.reviewers)
        votes = [rules.Vote(v.reviewer, v.approve, v.scores) for v in session.scalars(
            select(ReviewVote).where(ReviewVote.request_id == request_id))]
        parsed = rules.parse_request(_form(request.document), request_id)
    decision = rules.tally(drawn, votes, policy)
    body = {"request": request_id, "approved": decision.approved, "in_favour": decision.in_favour,
            "voters": decision.voters, "required": decision.required,
            "mean_scores": dict(decision.mean_scores), "message": decision.message,
            "votes": [{"reviewer": v.reviewer, "approve": v.approve, "scores": dict(v.scores)}
                      for v in votes],
            "decided_at": now().isoformat(timespec="seconds"), "policy_hash": policy.content_hash}
    signed = certify.sign(body, res.keys.signing_key())
    agreement = None
    if decision.approved:
        agreement = rules.new_agreement(parsed, f"dua-{uuid.uuid4().hex[:10]}",
                                        starts or now().date(), months, protection_measures,
                                        emergency_plan)
    with res.sessions.begin() as session:
        request = _request(session, request_id)
        request.status = "approved" if decision.approved else "rejected"
        request.decision, request.decided_at = signed, now()
        if agreement is not None:
            session.add(AgreementRow(
                id=agreement.id, request_id=request_id, institution=agreement.institution,
                starts=agreement.starts, ends=agreement.ends, extensions=0, status="active",
                document={"protection_measures": list(agreement.protection_measures),
                          "emergency_plan": agreement.emergency_plan,
                          "follow_up_due": rules.follow_up_due(agreement, policy).isoformat(),
                          "destruction_due": rules.destruction_due(agreement, policy)
                          .isoformat()}))
    res.audit.append("share.decide", f"request:{request_id}",
                     "approved" if decision.approved else "rejected", reason=decision.message,
                     policy_hash=policy.content_hash)
    return {"request": request_id, "approved": decision.approved, "message": decision.message,
            "agreement": agreement.id if agreement else None,
            "ends": agreement.ends.isoformat() if agreement else None}


def agreement_of(session: Any, agreement_id: str) -> tuple[AgreementRow, rules.Agreement]:
    row = session.get(AgreementRow, agreement_id)
    if row is None:
        raise rules.AgreementError(f"No data use agreement {agreement_id}.")
    return row, rules.Agreement(
        row.id, row.request_id, row.institution, row.starts, row.ends, row.extensions,
        tuple(row.document.get("protection_measures", ())), row.document.get("emergency_plan", ""))


def extend(res: Resources, agreement_id: str, new_end: date, written_request: str) -> dict:
    """An extension by written request; the third is refused (RARE §3.7)."""
    require_role(res, "committee", "extend a data use agreement")
    policy = rules.load_share_policy()
    with res.sessions.begin() as session:
        row, agreement = agreement_of(session, agreement_id)
        try:
            extended = rules.extend(agreement, new_end, written_request, policy)
        except rules.AgreementError as exc:
            res.audit.append("share.extend", f"agreement:{agreement_id}", "refused",
                             reason=exc.message, policy_hash=policy.content_hash)
            raise
        row.ends, row.extensions = extended.ends, extended.extensions
        row.document = {**row.document,
                        "destruction_due": rules.destruction_due(extended, policy).isoformat()}
    res.audit.append("share.extend", f"agreement:{agreement_id}", "ok",
                     reason=f"extension {extended.extensions} to {extended.ends}",
                     policy_hash=policy.content_hash)
    return {"agreement": agreement_id, "ends": extended.ends.isoformat(),
            "extensions": extended.extensions}


def _active(res: Resources, agreement_id: str, today: date | None) -> tuple[AgreementRow, dict]:
    """The agreement if it is in force and its institution is not blacklisted; the request too."""
    today = today or now().date()
    with res.sessions() as session:
        row, agreement = agreement_of(session, agreement_id)
        rules.require_active(agreement, today)
        if row.status != "active":
            raise rules.AgreementError(f"Agreement {agreement_id} is {row.status}.")
        banned = session.get(Institution, row.institution)
        if banned is not None and banned.blacklisted_at is not None:
            raise rules.AgreementError(f"{row.institution} is blacklisted (RARE §4.11); nothing "
                                       "more is delivered under its agreements.")
        request = _request(session, row.request_id)
        return row, {"document": dict(request.document), "subjects": list(request.subjects),
                     "request": request.id}


def watermarked_extract(res: Resources, agreement_id: str, today: date | None = None
                        ) -> tuple[pd.DataFrame, dict]:
    """The agreement's extract (approved variables x eligible subjects), marked for its recipient.
    Refuses an expired agreement, a blacklisted institution, or a cross-border total over the cap."""
    policy = rules.load_share_policy()
    row, context = _active(res, agreement_id, today)
    document = context["document"]
    table = _clinical_table(res, document["dataset"], document["version"])
    frame = extract(table, tuple(document["variables"]), set(context["subjects"]))
    destination = document["destination_country"]
    with res.sessions() as session:
        sent = sum(d.records for d in session.scalars(select(Delivery).where(
            Delivery.destination_country == destination)))
    finding = rules.cross_border_check(destination, len(frame), sent, deidentified=True,
                                       important_data=bool(document[FACTS]["important_data"]),
                                       approved=True, policy=policy)
    if not finding.ok:
        res.audit.append("share.refuse", f"agreement:{agreement_id}", "refused",
                         reason=finding.detail, policy_hash=policy.content_hash)
        raise rules.CrossBorderRefused(f"{finding.detail} ({finding.clause})")
    marked = mark(frame, res.keys.secret("watermark"), agreement_id)
    return marked, {"dataset": document["dataset"], "version": document["version"],
                    "destination": destination, "tier": document["tier"]}


def record_delivery(res: Resources, agreement_id: str, tier: str, meta: dict,
                    frame: pd.DataFrame, files: list[dict], location: str) -> str:
    """Table 5: what left (files with size and digest), how much, to whom, when."""
    delivery_id = f"dlv-{uuid.uuid4().hex[:10]}"
    with res.sessions.begin() as session:
        version = find_version(session, meta["dataset"], meta["version"])
        session.add(Delivery(
            id=delivery_id, agreement_id=agreement_id, tier=tier, dataset_version_id=version.id,
            files=files, records=len(frame), subjects=sorted(set(frame[SUBJECT_COLUMN])),
            mark_id=agreement_id, destination_country=meta["destination"], location=location))
    res.audit.append("share.deliver", f"agreement:{agreement_id}", "ok",
                     reason=f"{tier}: {len(frame)} records, {len(files)} file(s), to "
                            f"{meta['destination']}; delivery {delivery_id}",
                     after_digest=files[0]["sha256"] if files else None)
    return delivery_id


def deliver_file(res: Resources, agreement_id: str, recipient_public: bytes, out_dir: Path,
                 today: date | None = None) -> dict:
    """Controlled file share: the watermarked extract as Crypt4GH for the recipient's key."""
    frame, meta = watermarked_extract(res, agreement_id, today)
    if meta["tier"] != "file":
        raise rules.AgreementError(f"Agreement {agreement_id} grants the {meta['tier']} tier, "
                                   "not a file share.")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{agreement_id}-extract.parquet.c4gh"
    partial = partial_of(target)
    sealed = _seal_frame(frame, partial, recipient_public)
    files = [{"name": target.name, "sha256": sealed.sha256, "size": sealed.size,
              "cipher_size": sealed.cipher_size}]
    # recorded before it takes its final name: a crash never leaves a finished, unrecorded copy
    delivery = record_delivery(res, agreement_id, "file", meta, frame, files, str(target))
    os.replace(partial, target)
    return {"delivery": delivery, "out": str(target), "records": len(frame),
            "subjects": int(frame[SUBJECT_COLUMN].nunique())}


def _seal_frame(frame: pd.DataFrame, target: Path, recipient: bytes) -> c4gh.Sealed:
    """An extract written as Parquet and sealed as Crypt4GH for ``recipient``; the clear Parquet
    is built in memory and never touches a disk."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    buffer.seek(0)
    with open(target, "wb") as dst:
        return c4gh.encrypt_stream(buffer, dst, [recipient])


def partial_of(target: Path) -> Path:
    """Where a delivery file is written until it is recorded and complete."""
    return target.with_name(target.name + ".partial")


def trace(res: Resources, frame: pd.DataFrame) -> list[dict]:
    """Which agreement a leaked table came from, best first, with the confidence of each."""
    with res.sessions() as session:
        candidates = {d.mark_id: d.agreement.institution for d in session.scalars(select(Delivery))}
    if not candidates:
        return []
    return [{**m, "institution": candidates[m["agreement"]]}
            for m in detect(frame, res.keys.secret("watermark"), sorted(candidates))]


def _decimals(values: pd.Series) -> int:
    """The precision a measurement column is released at (1-4 decimals), kept by the mark."""
    finite = values.dropna().to_numpy(dtype=float)
    for places in range(1, 5):
        scaled = finite * 10 ** places
        if np.allclose(scaled, np.rint(scaled), rtol=0, atol=1e-6):
            return places
    return 4


def _groups(frame: pd.DataFrame) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = {}
    for column in watermark.marked_columns(frame, SUBJECT_COLUMN):
        groups.setdefault(_decimals(frame[column]), []).append(column)
    return groups


def mark(frame: pd.DataFrame, key: bytes, mark_id: str) -> pd.DataFrame:
    """The recipient's mark in every measurement column, each at its own released precision."""
    groups = _groups(frame)
    if not groups:
        raise watermark.WatermarkError("The extract has no measurement column to carry the "
                                       "recipient's watermark (RARE §4.11); add one or deliver "
                                       "through the enclave.")
    for places, columns in groups.items():
        frame = watermark.embed(frame, key=key, mark_id=mark_id, subject_column=SUBJECT_COLUMN,
                                columns=columns, decimals=places)
    return frame


def detect(frame: pd.DataFrame, key: bytes, candidates: list[str]) -> list[dict]:
    """Pool the evidence of every marked column (each at its precision) per candidate."""
    from scipy.stats import binom

    totals = {c: [0, 0] for c in candidates}
    for places, columns in _groups(frame).items():
        for match in watermark.detect(frame, key=key, candidates=candidates,
                                      subject_column=SUBJECT_COLUMN, columns=columns,
                                      decimals=places):
            totals[match.mark_id][0] += match.agreeing
            totals[match.mark_id][1] += match.compared
    scored = [{"agreement": c, "agreeing": a, "compared": n,
               "confidence": float(1.0 - binom.sf(a - 1, n, 0.5)) if n else 0.0}
              for c, (a, n) in totals.items()]
    return sorted(scored, key=lambda m: (-m["confidence"], -m["agreeing"], m["agreement"]))


def blacklist(res: Resources, institution: str, reason: str) -> dict:
    """A confirmed leak bars the institution from every further delivery (RARE §4.11)."""
    require_role(res, "committee", "blacklist an institution")
    with res.sessions.begin() as session:
        row = session.get(Institution, institution) or Institution(name=institution)
        row.blacklisted_at, row.blacklist_reason = now(), reason
        session.merge(row)
    res.audit.append("share.blacklist", f"institution:{institution}", "blacklisted",
                     reason=reason)
    return {"institution": institution, "blacklisted": True}


def subject_access(res: Resources, subject_key: str) -> list[dict]:
    """Every disclosure of one person's data: recipient, agreement, date, destruction status
    (HDS §7 g). Run by the controller; the subject is found through each project's surrogate
    secret, so disclosures stay listed after a project's code index was destroyed."""
    rows = []
    with res.sessions() as session:
        projects = set(session.scalars(select(Deidentification.project)))
        surrogates = {subject_surrogate(res.keys.secret(surrogate_key(p), create=False),
                                        subject_key): p
                      for p in projects if res.keys.has(surrogate_key(p))}
        for delivery in session.scalars(select(Delivery).order_by(Delivery.created_at)):
            if surrogates.keys() & set(delivery.subjects):
                agreement = delivery.agreement
                rows.append({"delivered_at": delivery.created_at.isoformat(timespec="seconds"),
                             "recipient": agreement.institution, "agreement": agreement.id,
                             "tier": delivery.tier, "destination": delivery.destination_country,
                             "agreement_ends": agreement.ends.isoformat(),
                             "destroyed_at": delivery.destroyed_at.isoformat(timespec="seconds")
                             if delivery.destroyed_at else None})
    res.audit.append("share.subject_access", "subject:(by key)", "ok",
                     reason=f"{len(rows)} disclosure(s) listed")
    return rows


def issue_token(res: Resources, agreement_id: str) -> dict:
    """A bearer token for the controlled API, bound to the agreement and expiring with it."""
    from infra.catalog import ApiToken

    row, _ = _active(res, agreement_id, None)
    token = secrets.token_urlsafe(32)
    expires = datetime.combine(row.ends + timedelta(days=1), datetime.min.time(), timezone.utc)
    with res.sessions.begin() as session:
        session.add(ApiToken(token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                             agreement_id=agreement_id, expires_at=expires))
    res.audit.append("share.token", f"agreement:{agreement_id}", "issued",
                     reason=f"API token expiring {expires.date()}")
    return {"agreement": agreement_id, "token": token, "expires_at": expires.isoformat()}


def as_json(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records", date_format="iso"))



# --- enclave (HDS Table 2; App. C art. 13-15) ------------------------------------------------


def agreement_key(agreement_id: str) -> str:
    """The data key that seals an agreement's archived enclave exports."""
    return f"agreement-{agreement_id}"


def enclave_dir(res: Resources, agreement_id: str) -> Path:
    return res.settings.home / "enclaves" / agreement_id


def open_enclave(res: Resources, agreement_id: str, today: date | None = None) -> dict:
    """A controlled working area: the marked extract is sealed inside it under the agreement's
    key and never exported; it is read in clear only inside :func:`enclave_session`, and
    results leave only through :func:`request_export` and the committee's approval."""
    frame, meta = watermarked_extract(res, agreement_id, today)
    if meta["tier"] != "enclave":
        raise rules.AgreementError(f"Agreement {agreement_id} grants the {meta['tier']} tier, "
                                   "not an enclave.")
    root = enclave_dir(res, agreement_id)
    (root / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
    (root / "exports").mkdir(exist_ok=True, mode=0o700)
    target = root / "data" / ENCLAVE_EXTRACT
    sealed = _seal_frame(frame, partial_of(target),
                         res.data_keys.public_key(agreement_key(agreement_id)))
    delivery = record_delivery(res, agreement_id, "enclave", meta, frame,
                               [{"name": target.name, "sha256": sealed.sha256,
                                 "size": sealed.size, "cipher_size": sealed.cipher_size}],
                               str(root))
    os.replace(partial_of(target), target)
    return {"delivery": delivery, "enclave": str(root), "records": len(frame)}


def _private_tmp() -> str:
    """Memory-backed when the host has it, so a session's clear text never reaches a disk."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()


def _session_prefix(agreement_id: str) -> str:
    return f"seqlife-enclave-{agreement_id}-"


def enclave_sessions_left(agreement_id: str) -> list[Path]:
    """Session folders of an agreement still present: a session killed before it could remove
    its clear extract. The agreement's destruction removes them."""
    return sorted(Path(_private_tmp()).glob(_session_prefix(agreement_id) + "*"))


@contextlib.contextmanager
def enclave_session(res: Resources, agreement_id: str, today: date | None = None
                    ) -> Iterator[Path]:
    """The enclave's extract in clear for one analysis session, in a private memory-backed
    folder that is removed when the session ends (HDS Table 2: used in place, never copied
    out). Refused once the agreement is no longer in force; opened and closed are audited."""
    _, context = _active(res, agreement_id, today)
    if context["document"]["tier"] != "enclave":
        raise rules.AgreementError(f"Agreement {agreement_id} is not an enclave agreement.")
    sealed = enclave_dir(res, agreement_id) / "data" / ENCLAVE_EXTRACT
    if not sealed.is_file():
        raise rules.ShareError(f"The enclave of {agreement_id} is not open: run `seqlife share "
                               "deliver` first.")
    secret = res.data_keys.secret_key(agreement_key(agreement_id))
    obj = f"agreement:{agreement_id}"
    with tempfile.TemporaryDirectory(prefix=_session_prefix(agreement_id),
                                     dir=_private_tmp()) as work:
        os.chmod(work, 0o700)
        with open(sealed, "rb") as src, open(Path(work) / "extract.parquet", "wb") as dst:
            plain = c4gh.decrypt_stream(src, dst, secret)
        res.audit.append("share.enclave_session", obj, "opened",
                         reason=f"analysis session on {plain.size} bytes",
                         after_digest=plain.sha256)
        try:
            yield Path(work)
        finally:
            res.audit.append("share.enclave_session", obj, "closed",
                             reason="session folder removed")


def request_export(res: Resources, agreement_id: str, name: str) -> dict:
    """Archive a result from the enclave's exports/ folder and hold it for approval."""
    from infra.catalog import EnclaveExport

    exports = (enclave_dir(res, agreement_id) / "exports").resolve()
    source = (exports / name).resolve()
    if exports not in source.parents or not source.is_file():
        raise rules.ShareError(f"'{name[:100]}' is not a file in the enclave's exports folder.")
    export_id = f"exp-{uuid.uuid4().hex[:10]}"
    sealed = io.BytesIO()
    with open(source, "rb") as src:  # archived encrypted: destroying the key destroys backups too
        plain = c4gh.encrypt_stream(src, sealed, [res.data_keys.public_key(
            agreement_key(agreement_id))])
    sealed.seek(0)
    stored = res.store.put(f"enclave/{agreement_id}/exports/{export_id}/{source.name}.c4gh",
                           sealed)
    source.unlink()  # the archived, sealed copy is the only one left in the enclave
    with res.sessions.begin() as session:
        session.add(EnclaveExport(id=export_id, agreement_id=agreement_id, name=source.name,
                                  sha256=plain.sha256, size=plain.size, archive_key=stored.key,
                                  archive_version_id=stored.version_id, status="pending"))
    res.audit.append("share.export_request", f"agreement:{agreement_id}", "pending",
                     reason=f"{export_id}: {source.name}, {plain.size} bytes",
                     after_digest=plain.sha256)
    return {"export": export_id, "status": "pending", "sha256": plain.sha256}


def decide_export(res: Resources, export_id: str, approve: bool, reason: str,
                  out_dir: Path | None = None) -> dict:
    """The committee releases or refuses a result export; both are archived and audited."""
    from infra.catalog import EnclaveExport

    require_role(res, "committee", "approve an enclave export")
    with res.sessions.begin() as session:
        export = session.get(EnclaveExport, export_id)
        if export is None or export.status != "pending":
            raise rules.ShareError(f"No pending enclave export {export_id}.")
        export.status = "approved" if approve else "refused"
        export.decided_by, export.decided_at = res.settings.actor, now()
        key, version_id, name = export.archive_key, export.archive_version_id, export.name
        agreement_id = export.agreement_id
    released = None
    if approve and out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        released = out_dir / name
        secret = res.data_keys.secret_key(agreement_key(agreement_id))
        with res.store.open(key, version_id) as src, open(released, "wb") as dst:
            c4gh.decrypt_stream(src, dst, secret)
    res.audit.append("share.export_decide", f"agreement:{agreement_id}",
                     "approved" if approve else "refused", reason=f"{export_id}: {reason}")
    return {"export": export_id, "status": "approved" if approve else "refused",
            "released": str(released) if released else None}


# --- public aggregates (SEQ §6.2.4) -----------------------------------------------------------


def publish_aggregate(res: Resources, dataset: str, by: list[str], version: int | None = None
                      ) -> dict:
    """A committee-approved summary table with small cells suppressed, under a dataset URI."""
    from seqlife.deidentify.report import cohort_summary, csv_safe

    require_role(res, "committee", "publish a public aggregate")
    policy = rules.load_share_policy()
    if not is_certified(res, dataset, version):
        raise rules.ShareError(f"{dataset} is not certified; only certified research data is "
                               "published (RARE §3.5).")
    table = _clinical_table(res, dataset, version)
    missing = [c for c in by if c not in table]
    if missing or not by:
        raise rules.ShareError(f"Cannot aggregate {dataset} by {missing or 'nothing'}: no such "
                               "column.")
    summary = cohort_summary(table, by, int(policy["small_cells"]))
    with res.sessions() as session:
        number = find_version(session, dataset, version).version
    aggregate_id = hashlib.sha256(f"{dataset}:{number}:{','.join(by)}".encode()).hexdigest()[:12]
    key = f"05_public/{dataset}/v{number}/aggregate-{aggregate_id}.csv"
    stored = res.store.put_bytes(key, csv_safe(summary).to_csv(index=False).encode())
    uri = f"seqlife:dataset/{dataset}/v{number}/aggregate/{aggregate_id}"
    res.audit.append("share.publish", uri, "published",
                     reason=f"counts by {', '.join(by)}; cells < {policy['small_cells']} "
                            "suppressed", after_digest=stored.sha256,
                     policy_hash=policy.content_hash)
    suppressed = int(summary["count"].isna().sum())
    return {"uri": uri, "key": key, "cells": len(summary), "suppressed": suppressed,
            "sha256": stored.sha256}


# --- follow-up (RARE §3.7) ---------------------------------------------------------------------


def file_output(res: Resources, agreement_id: str, path: Path) -> dict:
    """The requester files a research output (paper, report) under its agreement."""
    data = path.read_bytes()
    stored = res.store.put_bytes(f"share/outputs/{agreement_id}/{path.name}", data)
    with res.sessions.begin() as session:
        row, _ = agreement_of(session, agreement_id)
        outputs = list(row.document.get("outputs", []))
        outputs.append({"name": path.name, "sha256": stored.sha256,
                        "filed_at": now().isoformat(timespec="seconds")})
        row.document = {**row.document, "outputs": outputs}
    res.audit.append("share.output", f"agreement:{agreement_id}", "filed",
                     reason=f"output {path.name} filed", after_digest=stored.sha256)
    return {"agreement": agreement_id, "outputs": len(outputs)}


def follow_up(res: Resources, today: date | None = None) -> list[str]:
    """Agreements past their 6-month follow-up with no output filed: the committee may reopen
    the topic to other applicants (RARE §3.7). Each is audited once."""
    today = today or now().date()
    reopenable = []
    with res.sessions.begin() as session:
        for row in session.scalars(select(AgreementRow)):
            due = date.fromisoformat(row.document["follow_up_due"])
            if due <= today and not row.document.get("outputs") \
                    and not row.document.get("reopenable_since"):
                row.document = {**row.document, "reopenable_since": today.isoformat()}
                reopenable.append(row.id)
    for agreement_id in reopenable:
        res.audit.append("share.follow_up", f"agreement:{agreement_id}", "no_output",
                         reason="no output filed at the 6-month follow-up; the topic may be "
                                "reopened to others (RARE §3.7)")
    return reopenable
