"""All environment wiring in one place: settings in, adapters out.

The embedded defaults and production differ only in the URLs held by ``Settings``; every stage
receives the same ``Resources`` either way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from infra.audit import AuditLog
from infra.catalog import make_engine, session_factory, upgrade
from infra.datakeys import DataKeys, kms_client, open_master
from infra.keystore import LocalKeyStore
from infra.objectstore import ObjectStore, open_store, s3_client
from seqlife import reference, residency
from seqlife.exceptions import ConfigurationError
from seqlife.settings import Settings


@dataclass(frozen=True)
class Resources:
    """The adapters a flow needs."""

    settings: Settings
    store: ObjectStore
    engine: Engine
    sessions: sessionmaker
    audit: AuditLog
    keys: LocalKeyStore
    data_keys: DataKeys

    def __reduce__(self) -> tuple:
        """Sent to a Dask worker (another process or machine), resources travel as their settings
        and are opened there: engines, sessions and clients never cross a process boundary."""
        return (build_resources, (self.settings,))

    def references(self, declared: tuple[tuple[Path, str], ...] = ()) -> Path:
        """The CRAM reference cache, filled from ``SEQLIFE_REFERENCE`` and from ``declared``
        (path, label) FASTA files of a delivery, and handed to htslib (no network lookup). A
        FASTA already cached (same size and modification time) is not read again."""
        cache = self.settings.home / "references"
        done = cache / ".filled"
        done.mkdir(parents=True, exist_ok=True)
        sources = [(path, path.name) for path in self.settings.references] + list(declared)
        for path, label in sources:
            if not path.is_file():
                raise ConfigurationError(f"{label}: the reference FASTA does not exist.")
            stat = path.stat()
            marker = done / hashlib.sha256(
                f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
            if not marker.exists():
                reference.populate(path, cache, label)
                marker.touch()
        reference.use_cache(cache)
        return cache

    def scratch(self) -> Path:
        """Scratch space under SEQLIFE_HOME for temporary copies; callers remove what they make."""
        path = self.settings.home / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path


def data_locations(settings: Settings) -> tuple[residency.Location, ...]:
    """Where ``settings`` keep data and keys, as the adapters will reach them: an S3 or KMS
    endpoint left unset is the one boto3 derives from ``AWS_DEFAULT_REGION``."""
    locations = [residency.Location("catalog", "SEQLIFE_DB_URL", settings.db_url)]
    if settings.store_url.startswith("s3:"):
        setting = "SEQLIFE_S3_ENDPOINT_URL" if settings.s3_endpoint_url else \
            "AWS_DEFAULT_REGION (SEQLIFE_S3_ENDPOINT_URL unset)"
        locations.append(residency.Location(
            "object store", setting, s3_client(settings.s3_endpoint_url).meta.endpoint_url))
    else:
        locations.append(residency.Location("object store", "SEQLIFE_STORE_URL",
                                            settings.store_url))
    if settings.kms_key_id:
        setting = "SEQLIFE_KMS_ENDPOINT_URL" if settings.kms_endpoint_url else \
            "AWS_DEFAULT_REGION (SEQLIFE_KMS_ENDPOINT_URL unset)"
        locations.append(residency.Location(
            "KMS", setting, kms_client(settings.kms_endpoint_url).meta.endpoint_url))
    for what, setting, path in (("key store", "SEQLIFE_KEYSTORE_DIR", settings.keystore_dir),
                                ("data backups", "SEQLIFE_BACKUP_DIR", settings.backup_dir),
                                ("key backups", "SEQLIFE_KEY_BACKUP_DIR", settings.key_backup_dir)):
        if path is not None:
            locations.append(residency.Location(what, setting, str(path)))
    return tuple(locations)


@lru_cache(maxsize=8)
def build_resources(settings: Settings) -> Resources:
    """Check that every location stays in the country (GB/T 39725 §7 q), then open (and
    migrate) the catalog, open the store and the key store named by ``settings``."""
    residency.check(data_locations(settings), residency.load_residency_policy())
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    return Resources(
        settings=settings,
        store=open_store(settings.store_url, settings.s3_endpoint_url),
        engine=engine,
        sessions=session_factory(engine),
        audit=AuditLog(engine, settings.actor, settings.role),
        keys=LocalKeyStore(settings.keystore_dir),
        data_keys=DataKeys(settings.keystore_dir, open_master(settings)),
    )
