"""Catalog migrations and the append-only, hash-chained audit trail on SQLite and PostgreSQL.

SEQ §7.3.2.2 (tamper-evident key control points); GB/T 39725 §11.3.4.7 b, §11.3.4.9 b, e.
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from infra.audit import AuditLog
from infra.catalog import make_engine, upgrade
from seqlife.exceptions import AuditError


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}" if request.param == "sqlite" else \
        request.getfixturevalue("pg_url")
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def audit(engine) -> AuditLog:
    log = AuditLog(engine, actor="alice", role="steward")
    for n in range(5):
        log.append("collect.register", f"dataset:d{n}", "ok", reason=f"step {n}")
    return log


def _bypass_triggers(engine, statement: str, params: dict | None = None) -> None:
    """What an attacker with database rights does: switch the guard off, then edit."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            connection.execute(text(statement), params or {})
            connection.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
        else:
            connection.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
            connection.execute(text("DROP TRIGGER IF EXISTS audit_events_no_delete"))
            connection.execute(text(statement), params or {})


def test_migrations_create_every_table_and_are_idempotent(engine) -> None:
    upgrade(engine)  # second run changes nothing
    tables = set(inspect(engine).get_table_names())
    assert {"datasets", "dataset_versions", "files", "subjects", "consents",
            "audit_events"} <= tables


def test_intact_chain_verifies(audit: AuditLog) -> None:
    report = audit.verify()
    assert report.ok and report.count == 5
    assert report.head_hash == list(audit.entries())[-1].hash


@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET reason = 'edited' WHERE seq = 2",
    "DELETE FROM audit_events WHERE seq = 2",
])
def test_database_refuses_update_and_delete(engine, audit: AuditLog, statement: str) -> None:
    """SEQ §7.3.2.2: records are protected from modification at the database itself."""
    with pytest.raises(DBAPIError, match="append-only"):
        with engine.begin() as connection:
            connection.execute(text(statement))
    assert audit.verify().ok


@pytest.mark.postgres
def test_postgres_refuses_truncate(pg_url: str) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    AuditLog(engine, "alice", "steward").append("x", "dataset:a", "ok")
    with pytest.raises(DBAPIError, match="append-only"):
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE audit_events"))
    engine.dispose()


def test_changed_record_is_named(engine, audit: AuditLog) -> None:
    _bypass_triggers(engine, "UPDATE audit_events SET outcome = 'refused' WHERE seq = 3")
    report = audit.verify()
    assert not report.ok and report.first_bad_seq == 3
    assert "changed" in report.problem


def test_deleted_record_is_named(engine, audit: AuditLog) -> None:
    _bypass_triggers(engine, "DELETE FROM audit_events WHERE seq = 2")
    report = audit.verify()
    assert not report.ok and report.first_bad_seq == 2
    assert "missing" in report.problem


def test_reordered_records_are_caught(engine, audit: AuditLog) -> None:
    """Swapping the content of two records (keeping seq numbers) breaks the chain at the first."""
    _bypass_triggers(engine, """
        UPDATE audit_events SET seq = CASE seq WHEN 2 THEN 1002 WHEN 4 THEN 1004 ELSE seq END
        WHERE seq IN (2, 4)""")
    _bypass_triggers(engine, "UPDATE audit_events SET seq = 4 WHERE seq = 1002")
    _bypass_triggers(engine, "UPDATE audit_events SET seq = 2 WHERE seq = 1004")
    report = audit.verify()
    assert not report.ok and report.first_bad_seq == 2


def test_appends_continue_the_chain_after_reopen(engine, audit: AuditLog) -> None:
    again = AuditLog(engine, actor="bob", role="operator")
    entry = again.append("audit.verify", "audit", "ok")
    assert entry.seq == 6
    assert audit.verify().ok and audit.verify().count == 6


def test_identifier_in_an_audit_record_is_refused(audit: AuditLog) -> None:
    """No personal identifier appears in clear in an audit record (GB/T 39725 §10.2 a)."""
    with pytest.raises(AuditError, match="personal identifier"):
        audit.append("collect.refused", "dataset:d", "refused", reason="subject 13812345678 lacks consent")
    assert audit.verify().count == 5
