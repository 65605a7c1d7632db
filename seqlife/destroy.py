"""Destroy, retain and drill: the decisions and documents, as plain functions.

* :func:`sweep` decides, for a given day, which agreements' copies must be destroyed (the use
  period is over; GB/T 39725 §11.4.2.6 allows at most 30 days) and whose requester's destruction
  proof is overdue (RARE §4.4).
* :func:`retention_due` says which dataset versions are due for their 5-yearly review
  (§11.3.4.6 a 4).
* A destruction is a list of named steps, each done once and recorded (:func:`next_steps`), so a
  crash mid-way resumes where it stopped; :func:`certificate` is issued only when the
  verification found nothing left, and carries what it found (§11.7.4.3 a).
* :func:`code_index_fates` says whether destroying a dataset also destroys the patient code index
  of its projects -- what links its subjects to their record numbers (§10.2 f–h): yes with the
  last live dataset of the project, otherwise it is kept and the certificate says for which.
* :func:`drill_report_html` renders a restore or emergency drill report (§11.3.4.6 b 4; SEQ
  §7.4.8, §7.5.1: description, cause and impact, handling).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Mapping, Sequence

from seqlife.exceptions import PolicyFileError, SeqlifeError
from seqlife.policy import Policy, load_policy

STAGE = "destroy"
REQUIRED_RULES = frozenset({
    "destruction_days_after_end", "requester_proof_required", "secure_delete",
    "retention_review_years", "access_log_months", "subject_access_log_years",
    "restore_drill_months", "emergency_drill_months", "schedules", "patient_code_index",
})
#: The roles a dataset can have in a project's de-identification (its source or its output).
LINK_ROLES = frozenset({"source", "output"})

#: The steps of destroying an agreement's copies, in order (each idempotent).
AGREEMENT_STEPS = ("revoke_tokens", "delete_enclave", "delete_delivered_files",
                   "purge_store_copies", "purge_backups", "shred_agreement_key")
#: The steps of destroying a dataset version (retention outcome or operator's order).
DATASET_STEPS = ("purge_store_objects", "forget_lineage", "purge_dvc_remote", "purge_backups",
                 "shred_data_key", "mark_destroyed", "purge_code_index", "shred_code_index_key")


class DestroyError(SeqlifeError):
    """A destruction could not be carried out or could not be verified."""

    stage = "destroy"


class DestructionIncomplete(DestroyError):
    """Verification found something left; the destruction is not reported done, and the next run
    does every (idempotent) step again: a step recorded done evidently missed something."""

    def __init__(self, target: str, remnants: Sequence[str]) -> None:
        listed = "; ".join(remnants[:10]) + (" …" if len(remnants) > 10 else "")
        super().__init__(f"Destruction of {target} is not complete: {len(remnants)} remnant(s) "
                         f"found on checking again ({listed}). Run it again: every step is done "
                         "and checked again.", remnants=list(remnants))


def load_destroy_policy() -> Policy:
    return load_policy(STAGE, REQUIRED_RULES)


@dataclass(frozen=True)
class AgreementClock:
    """What the sweep needs to know of an agreement."""

    id: str
    institution: str
    ends: date
    destroyed: bool
    proof_registered: bool


@dataclass(frozen=True)
class SweepPlan:
    destroy: tuple[str, ...]        # agreements whose controller-side copies go now
    overdue_proofs: tuple[str, ...]  # agreements whose requester proof is late
    notify: tuple[str, ...]         # agreements that ended and whose requester is told


@dataclass(frozen=True)
class ProjectLink:
    """A dataset that a project's de-identification read (``source``) or wrote (``output``)."""

    project: str
    dataset: str
    role: str
    live: bool  # some version of it is not destroyed


@dataclass(frozen=True)
class CodeIndexFate:
    """What destroying a dataset does to the code index of one project it belongs to."""

    project: str
    kept_for: tuple[str, ...]  # live datasets of the project that still need the index

    @property
    def destroyed(self) -> bool:
        return not self.kept_for

    def as_record(self) -> dict[str, Any]:
        """The certificate's entry: destroyed, or kept and for which datasets."""
        why = (f"kept: still needed by {len(self.kept_for)} live dataset(s) of the project "
               f"({', '.join(self.kept_for)}); it goes with the last of them" if self.kept_for
               else "destroyed: no other live dataset of the project needs it")
        return {"project": self.project, "destroyed": self.destroyed,
                "kept_for": list(self.kept_for), "why": why}


def code_index_fates(target: str, links: Sequence[ProjectLink], policy: Policy
                     ) -> list[CodeIndexFate]:
    """For each project ``target`` belongs to: is its patient code index destroyed with it?

    The index (surrogate -> record number) and its key exist only to re-identify the subjects of
    the project's datasets (GB/T 39725 §10.2 g–h); once no dataset of the project that the policy
    lists (raw ``source``, de-identified ``output``) is live, nothing may still link them
    (§11.7.4.3 a). ``target`` itself never keeps the index it is being destroyed with.
    """
    keeping = set(policy["patient_code_index"]["kept_while_live"])
    if not keeping or keeping - LINK_ROLES:
        raise PolicyFileError(f"{policy.source}: patient_code_index.kept_while_live must list "
                              f"some of {sorted(LINK_ROLES)}.")
    projects = sorted({link.project for link in links if link.dataset == target})
    return [CodeIndexFate(project, tuple(sorted({
        link.dataset for link in links if link.project == project and link.dataset != target
        and link.live and link.role in keeping}))) for project in projects]


def destruction_deadline(ends: date, policy: Policy) -> date:
    return ends + timedelta(days=int(policy["destruction_days_after_end"]))


def sweep(agreements: Sequence[AgreementClock], today: date, policy: Policy) -> SweepPlan:
    """Agreements whose use period is over are destroyed on the first sweep after the end (well
    within the 30 days); a requester proof still missing after the deadline is overdue."""
    ended = [a for a in agreements if a.ends < today]
    destroy = tuple(a.id for a in ended if not a.destroyed)
    overdue = tuple(a.id for a in ended if policy["requester_proof_required"]
                    and not a.proof_registered and today > destruction_deadline(a.ends, policy))
    return SweepPlan(destroy, overdue, destroy)


def next_steps(all_steps: Sequence[str], done: Sequence[Mapping[str, Any]]) -> list[str]:
    """The steps still to do, in order; a step recorded as done is never repeated."""
    finished = {d["step"] for d in done if d.get("done")}
    return [s for s in all_steps if s not in finished]


def certificate(destruction_id: str, kind: str, target: str, reason: str,
                steps: Sequence[Mapping[str, Any]], checked: Sequence[str],
                remnants: Sequence[str], code_index: Sequence[Mapping[str, Any]],
                issued_at: str, policy: Policy) -> dict[str, Any]:
    """The unsigned destruction certificate: what went, where verification looked and what it
    found, what became of the projects' code indexes (``CodeIndexFate.as_record``), under which
    rules.

    Raises:
        DestructionIncomplete: verification found something left; nothing may certify it
            destroyed (§11.7.4.3 a).
    """
    if remnants:
        raise DestructionIncomplete(f"{kind}:{target}", remnants)
    return {"id": destruction_id, "kind": kind, "target": target, "reason": reason,
            "steps": [dict(s) for s in steps], "verified": list(checked),
            "remnants": list(remnants), "code_index": [dict(c) for c in code_index],
            "issued_at": issued_at, "policy_hash": policy.content_hash,
            "clauses": [policy.clause("secure_delete"),
                        policy.clause("destruction_days_after_end")]
            + ([policy.clause("patient_code_index")] if code_index else [])}


def retention_due(created: Sequence[tuple[str, int, date, date | None]], today: date,
                  policy: Policy) -> list[tuple[str, int, date]]:
    """Versions whose review is due: (dataset, version, created, last review) -> due date passed."""
    years = int(policy["retention_review_years"])
    due = []
    for dataset, version, made, reviewed in created:
        since = reviewed or made
        try:
            when = since.replace(year=since.year + years)
        except ValueError:  # 29 February
            when = since.replace(year=since.year + years, day=28)
        if when <= today:
            due.append((dataset, version, when))
    return due


def drill_report_html(report: Mapping[str, Any]) -> str:
    """A drill report a reader checks at a glance (no personal data is ever in it)."""
    rows = "".join(
        f"<tr><td>{html.escape(str(c['check']))}</td>"
        f"<td class='{'ok' if c['ok'] else 'no'}'>{'passed' if c['ok'] else 'FAILED'}</td>"
        f"<td>{html.escape(str(c.get('detail', '')))}</td></tr>"
        for c in report.get("checks", []))
    sections = "".join(
        f"<h2>{html.escape(title)}</h2><p>{html.escape(str(report[key]))}</p>"
        for key, title in (("description", "Description"), ("cause", "Cause"),
                           ("impact", "Impact"), ("handling", "Handling"),
                           ("recovery", "Recovery")) if report.get(key))
    verdict = "passed" if report.get("passed") else "FAILED"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(report['title'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}
.ok{{color:#060}}.no{{color:#a00}}</style></head><body>
<h1>{html.escape(report['title'])}</h1>
<p>Run at {html.escape(str(report.get('started_at', '')))}; duration
{float(report.get('seconds', 0)):.2f} s; result <strong>{verdict}</strong>
({html.escape(str(report.get('clause', '')))}).</p>
{sections}
<table><tr><th>check</th><th>result</th><th>detail</th></tr>{rows}</table>
</body></html>"""
