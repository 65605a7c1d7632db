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
from infra.datakeys import DataKeys, open_master
from infra.keystore import LocalKeyStore
from infra.objectstore import ObjectStore, open_store
from seqlife import reference
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


@lru_cache(maxsize=8)
def build_resources(settings: Settings) -> Resources:
    """Open (and migrate) the catalog, open the store and the key store named by ``settings``."""
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
