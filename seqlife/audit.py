"""Tamper-evident audit trail: the pure hash chain (SEQ §7.3.2.2; GB/T 39725 §11.3.4.7 b, §11.3.4.9).

Each record carries the hash of the one before it, so changing, deleting or reordering any record
breaks the chain from that point on. Storage lives in ``infra/audit.py``; this module only seals
and verifies, and refuses to seal a record that carries a personal identifier in clear.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Sequence

from seqlife.exceptions import AuditError

GENESIS_HASH = "0" * 64

# Patterns of direct identifiers that must never be written in clear (GB/T 39725 §10.2 a, d).
# Resident ID, mainland mobile number, e-mail address, medical-record / insurance numbers.
_IDENTIFIER_PATTERNS = (
    re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)"),
    re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)"),
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    re.compile(r"\b(?:MR|YB)\d{8,12}\b"),
)


@dataclass(frozen=True)
class AuditEntry:
    """One audit record; ``hash`` seals every other field together with ``prev_hash``."""

    seq: int
    ts: str
    actor: str
    role: str
    action: str
    object: str
    reason: str
    outcome: str
    before_digest: str
    after_digest: str
    policy_hash: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainReport:
    """What ``verify_chain`` found: the head hash when intact, the first bad record otherwise."""

    ok: bool
    count: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str = ""


_SEALED_FIELDS = tuple(f.name for f in fields(AuditEntry) if f.name != "hash")


def compute_hash(values: dict[str, object]) -> str:
    """SHA-256 over the canonical JSON of every field except the hash itself."""
    body = {name: values[name] for name in _SEALED_FIELDS}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def contains_identifier(text: str) -> bool:
    """True if text looks like it carries a direct personal identifier."""
    return any(pattern.search(text) for pattern in _IDENTIFIER_PATTERNS)


def seal(
    *,
    seq: int,
    prev_hash: str,
    ts: str,
    actor: str,
    role: str,
    action: str,
    object: str,
    outcome: str,
    reason: str = "",
    before_digest: str = "",
    after_digest: str = "",
    policy_hash: str = "",
) -> AuditEntry:
    """Build the next record of the chain, refusing any field that carries an identifier."""
    values: dict[str, object] = dict(
        seq=seq,
        ts=ts,
        actor=actor,
        role=role,
        action=action,
        object=object,
        reason=reason,
        outcome=outcome,
        before_digest=before_digest,
        after_digest=after_digest,
        policy_hash=policy_hash,
        prev_hash=prev_hash,
    )
    for name in ("actor", "action", "object", "reason", "outcome"):
        if contains_identifier(str(values[name])):
            raise AuditError(
                f"Refused to write an audit record whose '{name}' field looks like it carries a "
                "personal identifier; audit records must reference subjects by surrogate only."
            )
    return AuditEntry(**values, hash=compute_hash(values))  # type: ignore[arg-type]


def verify_chain(entries: Iterable[AuditEntry]) -> ChainReport:
    """Recompute the chain and name the first record that was changed, removed or moved."""
    expected_prev, expected_seq, count = GENESIS_HASH, 1, 0
    for entry in entries:
        if entry.seq != expected_seq:
            return ChainReport(False, count, expected_prev, expected_seq,
                               f"record #{expected_seq} is missing (found #{entry.seq} next)")
        if entry.prev_hash != expected_prev:
            return ChainReport(False, count, expected_prev, entry.seq,
                               "it does not follow the record before it (deleted or reordered)")
        if compute_hash(asdict(entry)) != entry.hash:
            return ChainReport(False, count, expected_prev, entry.seq,
                               "its content was changed after it was written")
        expected_prev, expected_seq, count = entry.hash, expected_seq + 1, count + 1
    return ChainReport(True, count, expected_prev)



@dataclass(frozen=True)
class TrailComparison:
    """How a restored (or copied) audit trail relates to the live one."""

    consistent: bool
    problem: str          # "" | "fork" | "gap"
    at_seq: int | None    # the first record where they part
    detail: str


def compare_trails(live: Sequence[tuple[int, str]], restored: Sequence[tuple[int, str]]
                   ) -> TrailComparison:
    """A restored trail must be a prefix of the live one (records made after the backup are
    fine). A record that differs is a fork; a record the backup holds and the live trail lacks is
    a gap in the live trail (records were removed after the backup; App. F, §11.3.4.9).

    Both arguments are (seq, hash) pairs in sequence order.
    """
    live_by_seq = dict(live)
    for seq, digest in restored:
        if seq not in live_by_seq:
            return TrailComparison(False, "gap", seq, f"record #{seq} is in the backup but no "
                                   "longer in the live trail: records were removed")
        if live_by_seq[seq] != digest:
            return TrailComparison(False, "fork", seq, f"record #{seq} differs between the "
                                   "backup and the live trail: the histories forked")
    return TrailComparison(True, "", None, f"the backup's {len(restored)} record(s) are the first "
                           f"{len(restored)} of the live trail's {len(live)}")
