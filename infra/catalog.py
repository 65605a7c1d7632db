"""Catalog database: SQLAlchemy 2 models and Alembic migrations, the same on SQLite and PostgreSQL.

It records what exists (datasets, versions, files, subjects by surrogate, consents) and the audit
trail. No personal identifier is stored here: subjects appear only under their keyed surrogate.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Dataset(Base):
    """A named dataset; ``kind`` follows RARE §3.5 (raw / registry / research)."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    owner: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    versions: Mapped[list["DatasetVersion"]] = relationship(
        back_populates="dataset", order_by="DatasetVersion.version")


class DatasetVersion(Base):
    """One immutable version of a dataset in one zone, sealed by its manifest digest."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    version: Mapped[int] = mapped_column(Integer)
    zone: Mapped[str] = mapped_column(String(40))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    manifest_key: Mapped[str] = mapped_column(String(500))
    file_count: Mapped[int] = mapped_column(Integer)
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    flow_run_id: Mapped[str] = mapped_column(String(64), default="")
    policy_hash: Mapped[str] = mapped_column(String(64))
    destroyed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    dataset: Mapped[Dataset] = relationship(back_populates="versions")
    files: Mapped[list["DataFile"]] = relationship(back_populates="dataset_version",
                                                   order_by="DataFile.path")


class Subject(Base):
    """A data subject, known to the catalog only by a keyed surrogate (GB/T 39725 §10.2 f)."""

    __tablename__ = "subjects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    surrogate: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DataFile(Base):
    """A stored file of a dataset version: where it is, what it is, whose it is."""

    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("dataset_version_id", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    path: Mapped[str] = mapped_column(String(500))
    role: Mapped[str] = mapped_column(String(40))
    format: Mapped[str] = mapped_column(String(20))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(BigInteger)
    object_key: Mapped[str] = mapped_column(String(500))
    object_version_id: Mapped[str] = mapped_column(String(100))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subjects.id"), nullable=True)
    sample_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # the Crypt4GH copy (encrypt stage); once the plaintext is purged, reads go through it
    encrypted_key: Mapped[str | None] = mapped_column(String(500), nullable=True)
    encrypted_version_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    cipher_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cipher_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    header_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    plaintext_purged: Mapped[bool] = mapped_column(Boolean, default=False)
    dataset_version: Mapped[DatasetVersion] = relationship(back_populates="files")
    subject: Mapped[Subject | None] = relationship()


class Consent(Base):
    """An informed-consent record of a subject (GB/T 39725 §7 a; RARE §4.9)."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("subject_id", "scope", "signed_on"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    scope: Mapped[str] = mapped_column(String(20))
    signed_on: Mapped[date] = mapped_column(Date)
    withdrawn_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    subject: Mapped[Subject] = relationship()


class AuditEvent(Base):
    """Append-only, hash-chained audit record (see seqlife.audit); triggers refuse changes."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(60))
    action: Mapped[str] = mapped_column(String(100))
    object: Mapped[str] = mapped_column(String(500))
    reason: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(40))
    before_digest: Mapped[str] = mapped_column(String(64))
    after_digest: Mapped[str] = mapped_column(String(64))
    policy_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Classification(Base):
    """A classification proposal for one dataset version; a steward approves it (GB/T 39725 App. F)."""

    __tablename__ = "classifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    status: Mapped[str] = mapped_column(String(20))  # proposed | approved | superseded
    content_digest: Mapped[str] = mapped_column(String(64))
    policy_hash: Mapped[str] = mapped_column(String(64))
    labels: Mapped[dict] = mapped_column(JSON)
    proposed_by: Mapped[str] = mapped_column(String(200))
    proposed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    approved_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    labels_key: Mapped[str | None] = mapped_column(String(500), nullable=True)
    dataset_version: Mapped[DatasetVersion] = relationship()
    fields: Mapped[list["ClassificationField"]] = relationship(
        back_populates="classification", order_by="ClassificationField.id")


class ClassificationField(Base):
    """The label of one column or header field, with its evidence (counts only, never values)."""

    __tablename__ = "classification_fields"
    __table_args__ = (UniqueConstraint("classification_id", "file", "field"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    classification_id: Mapped[int] = mapped_column(ForeignKey("classifications.id"))
    file: Mapped[str] = mapped_column(String(500))
    field: Mapped[str] = mapped_column(String(200))
    identifier: Mapped[str] = mapped_column(String(20))
    category: Mapped[str] = mapped_column(String(40))
    grade: Mapped[int] = mapped_column(Integer)
    detector: Mapped[str | None] = mapped_column(String(40), nullable=True)
    confidence: Mapped[float] = mapped_column(Float)
    share: Mapped[float] = mapped_column(Float)
    sampled: Mapped[int] = mapped_column(Integer)
    name_hint: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text)
    override_reason: Mapped[str] = mapped_column(Text)
    classification: Mapped[Classification] = relationship(back_populates="fields")


class Deidentification(Base):
    """A de-identified output awaiting (or holding) committee approval (GB/T 39725 §10.2)."""

    __tablename__ = "deidentifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    output_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    project: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(30))  # pending_approval | approved
    report: Mapped[dict] = mapped_column(JSON)
    policy_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    approved_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # set when the project's code index was destroyed with its last live dataset (destroy stage)
    code_index_destroyed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                                     nullable=True)
    code_index_destruction: Mapped[str | None] = mapped_column(String(40), nullable=True)
    output_version: Mapped[DatasetVersion] = relationship(foreign_keys=[output_version_id])


class PatientCodeIndex(Base):
    """Surrogate -> real linkage ID, sealed with a key-store key; read only by the designated role
    and every read audited (GB/T 39725 §10.2 f–h)."""

    __tablename__ = "patient_code_index"
    __table_args__ = (UniqueConstraint("project", "surrogate"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(100))
    surrogate: Mapped[str] = mapped_column(String(64))
    sealed_subject_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Certificate(Base):
    """A signed certificate of a derived dataset version (DER §5)."""

    __tablename__ = "certificates"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    document: Mapped[dict] = mapped_column(JSON)
    certificate_key: Mapped[str] = mapped_column(String(500))
    issued_by: Mapped[str] = mapped_column(String(200))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def make_engine(db_url: str) -> Engine:
    """An engine with SQLite made safe for concurrent flows (WAL, busy timeout, foreign keys)."""
    if db_url.startswith("sqlite:///"):
        Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(db_url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        _typed_outages(engine)
        return engine
    engine = create_engine(db_url, pool_pre_ping=True)
    _typed_outages(engine)
    return engine


def _typed_outages(engine: Engine) -> None:
    """A database that is down, restarting or locked becomes ``CatalogUnavailable`` (transient):
    tasks retry it, and a steward reads one sentence instead of a driver traceback."""
    from sqlalchemy.exc import OperationalError

    from seqlife.exceptions import CatalogUnavailable

    @event.listens_for(engine, "handle_error")
    def _outage(context) -> None:  # type: ignore[no-untyped-def]
        if isinstance(context.sqlalchemy_exception, OperationalError) or context.is_disconnect:
            raise CatalogUnavailable(
                "The catalog database could not be reached or is restarting "
                f"({type(context.original_exception).__name__}); the step was not carried out. "
                "It is retried where that is safe; otherwise run it again.") \
                from context.original_exception


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


class IntegrityManifest(Base):
    """The signed SHA-256 manifest of an encrypted version (GB/T 39725 §11.3.4.6 a 3)."""

    __tablename__ = "integrity_manifests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"), unique=True)
    manifest_key: Mapped[str] = mapped_column(String(500))
    manifest_version_id: Mapped[str] = mapped_column(String(100))
    document: Mapped[dict] = mapped_column(JSON)
    data_key_fingerprint: Mapped[str] = mapped_column(String(16))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- share (SEQ §6; GB/T 39725 §11.4.2; RARE §3.5-§4.11) ----------------------------------------


class Institution(Base):
    """A requesting institution; a confirmed leak blacklists it (RARE §4.11)."""

    __tablename__ = "institutions"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    blacklisted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    blacklist_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class ShareRequest(Base):
    """An institution's request for a certified derived version, through review to decision."""

    __tablename__ = "share_requests"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    institution: Mapped[str] = mapped_column(String(200), index=True)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    document: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))  # refused | in_review | approved | rejected
    findings: Mapped[list] = mapped_column(JSON)
    reviewers: Mapped[list] = mapped_column(JSON)
    subjects: Mapped[list] = mapped_column(JSON)  # eligible subject surrogates (project-scoped)
    excluded_subjects: Mapped[int] = mapped_column(Integer)
    decision: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    dataset_version: Mapped[DatasetVersion] = relationship()


class ReviewVote(Base):
    __tablename__ = "review_votes"
    __table_args__ = (UniqueConstraint("request_id", "reviewer"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("share_requests.id"))
    reviewer: Mapped[str] = mapped_column(String(200))
    approve: Mapped[bool] = mapped_column(Boolean)
    scores: Mapped[dict] = mapped_column(JSON)
    comment: Mapped[str] = mapped_column(Text, default="")
    cast_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AgreementRow(Base):
    """A data use agreement with its clock (HDS §11.4.2.5; RARE §3.7, §4.3)."""

    __tablename__ = "agreements"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("share_requests.id"), unique=True)
    institution: Mapped[str] = mapped_column(String(200))
    starts: Mapped[date] = mapped_column(Date)
    ends: Mapped[date] = mapped_column(Date)
    extensions: Mapped[int] = mapped_column(Integer, default=0)
    document: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    request: Mapped[ShareRequest] = relationship()


class Delivery(Base):
    """What left, to whom, when and how (HDS §8.3 Table 5: size, content, time)."""

    __tablename__ = "deliveries"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agreement_id: Mapped[str] = mapped_column(ForeignKey("agreements.id"), index=True)
    tier: Mapped[str] = mapped_column(String(20))
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    files: Mapped[list] = mapped_column(JSON)
    records: Mapped[int] = mapped_column(Integer)
    subjects: Mapped[list] = mapped_column(JSON)
    mark_id: Mapped[str] = mapped_column(String(40))
    destination_country: Mapped[str] = mapped_column(String(8))
    location: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    agreement: Mapped[AgreementRow] = relationship()


class ApiToken(Base):
    """A bearer token bound to an agreement, stored as its SHA-256 only, expiring with it."""

    __tablename__ = "api_tokens"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    agreement_id: Mapped[str] = mapped_column(ForeignKey("agreements.id"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiCall(Base):
    """Every call to the sharing API: caller, time, endpoint, volume, result (Table 5)."""

    __tablename__ = "api_calls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agreement_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    caller: Mapped[str] = mapped_column(String(100))
    endpoint: Mapped[str] = mapped_column(String(200))
    status: Mapped[int] = mapped_column(Integer)
    records: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class EnclaveExport(Base):
    """A result leaving the enclave: archived, and released only once the steward approves."""

    __tablename__ = "enclave_exports"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agreement_id: Mapped[str] = mapped_column(ForeignKey("agreements.id"))
    name: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    archive_key: Mapped[str] = mapped_column(String(500))
    archive_version_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))  # pending | approved | refused
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# --- destroy (GB/T 39725 §11.4.2.6, §11.7.4.3; RARE §4.4) ----------------------------------------


class Destruction(Base):
    """One destruction, step by step, so a crash mid-way resumes and success waits for proof."""

    __tablename__ = "destructions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # agreement | dataset
    target: Mapped[str] = mapped_column(String(300), index=True)
    state: Mapped[str] = mapped_column(String(20))  # running | verified | incomplete
    steps: Mapped[list] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    certificate: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class DestructionProof(Base):
    """A requester's written proof that its copies were destroyed, and the controller's check."""

    __tablename__ = "destruction_proofs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agreement_id: Mapped[str] = mapped_column(ForeignKey("agreements.id"))
    sha256: Mapped[str] = mapped_column(String(64))
    archive_key: Mapped[str] = mapped_column(String(500))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    verified_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

