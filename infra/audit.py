"""Audit trail storage: appends sealed records to ``audit_events`` in their own transaction.

An append commits on its own, so a refused step is recorded even when the step's own work is rolled
back. Sequence numbers come from the table under a lock (PostgreSQL) or a write transaction
(SQLite), so concurrent flows still produce one unbroken chain.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from typing import Iterator

from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from infra.catalog import AuditEvent
from seqlife.audit import GENESIS_HASH, AuditEntry, ChainReport, seal, verify_chain
from seqlife.exceptions import AuditError

_APPEND_ATTEMPTS = 8


class AuditLog:
    """Append and read the hash-chained audit trail of one catalog database."""

    def __init__(self, engine: Engine, actor: str, role: str) -> None:
        self.engine, self.actor, self.role = engine, actor, role

    def append(
        self,
        action: str,
        object: str,
        outcome: str,
        *,
        reason: str = "",
        before_digest: str | None = "",
        after_digest: str | None = "",
        policy_hash: str = "",
    ) -> AuditEntry:
        """Seal and store the next record (a missing digest is stored as empty, never NULL: a
        NOT NULL refusal would otherwise look like a sequence collision and be retried)."""
        for attempt in range(_APPEND_ATTEMPTS):
            try:
                return self._append_once(action, object, outcome, reason, before_digest or "",
                                         after_digest or "", policy_hash)
            except IntegrityError:  # a concurrent writer took the same sequence number
                if attempt == _APPEND_ATTEMPTS - 1:
                    raise AuditError("The audit trail is too busy to append; retry.") from None
            except OperationalError as exc:
                raise AuditError(
                    "The audit trail could not be written; the step was not carried out. Check "
                    "the catalog database and retry."
                ) from exc
        raise AssertionError("unreachable")

    def _append_once(self, action: str, object: str, outcome: str, reason: str,
                     before_digest: str, after_digest: str, policy_hash: str) -> AuditEntry:
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE"))
            last = connection.execute(
                select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
            ).first()
            entry = seal(
                seq=(last.seq + 1) if last else 1,
                prev_hash=last.hash if last else GENESIS_HASH,
                ts=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                actor=self.actor,
                role=self.role,
                action=action,
                object=object,
                outcome=outcome,
                reason=reason,
                before_digest=before_digest,
                after_digest=after_digest,
                policy_hash=policy_hash,
            )
            connection.execute(insert(AuditEvent).values(**asdict(entry)))
        return entry

    def entries(self) -> Iterator[AuditEntry]:
        """Every record in sequence order, streamed."""
        with self.engine.connect() as connection:
            result = connection.execution_options(yield_per=1000).execute(
                select(AuditEvent).order_by(AuditEvent.seq))
            for row in result.mappings():
                yield AuditEntry(**row)

    def verify(self) -> ChainReport:
        return verify_chain(self.entries())
