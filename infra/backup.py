"""Backups to a second location, kept as the destroy stage and the drills need them.

A data backup (``SEQLIFE_BACKUP_DIR/<stamp>/``) holds the catalog (a SQLite copy made with the
online backup API, or ``pg_dump -Fc``) and every object version of the store in the local store's
own layout, so a restore can open it as a store directly. The key store is backed up separately
(``SEQLIFE_KEY_BACKUP_DIR/<stamp>/``; GB/T 39725 §10.1 g): destroying a dataset deletes its data
key from the live key store *and* from every key backup, so an old data backup restored later
holds only ciphertext nobody can open (crypto-shredding). Each backup has a catalogue of what it
holds with SHA-256s, signed with the controller's key.

A backup is a point-in-time copy, so destruction edits it in place rather than re-taking it (a
re-taken catalog would no longer match the backup's objects): object versions are deleted
(:meth:`Backups.purge_prefix`), key files shredded (:meth:`Backups.purge_key`,
:meth:`Backups.purge_secret`) and a project's patient code index rows deleted from each catalog
copy (:meth:`Backups.purge_code_index`); each has its ``*_remnants`` twin for verification.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.engine import make_url

from infra.datakeys import DATA_KEY_DIR
from infra.keystore import overwrite_and_unlink
from infra.objectstore import ObjectStore, ObjectVersion
from seqlife.exceptions import SeqlifeError

CATALOGUE = "catalogue.json"
CODE_INDEX_TABLE = "patient_code_index"


class BackupError(SeqlifeError):
    """A backup could not be taken, found or restored."""

    stage = "drill"


@contextmanager
def _reader(store: ObjectStore, version: ObjectVersion) -> Iterator[BinaryIO]:
    """The stored bytes, checked against their digest when the store recorded one (objects that
    DVC pushed to the remote carry none; the backup records the digest it computes)."""
    if version.sha256:
        with store.open(version.key, version.version_id) as stream:
            yield stream
        return
    raw, _ = store._open_raw(version.key, version.version_id)
    try:
        yield raw
    finally:
        raw.close()


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def pg_cli_url(db_url: str) -> str:
    """The libpq URL of a SQLAlchemy PostgreSQL URL (for pg_dump / pg_restore)."""
    url = make_url(db_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def scratch_database(db_url: str) -> Iterator[str]:
    """An empty PostgreSQL database on the server of ``db_url``, dropped (connections forced)
    afterwards: where a dump is restored to be checked or edited."""
    import psycopg

    url = make_url(db_url)
    name = f"seqlife_scratch_{uuid.uuid4().hex[:10]}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise BackupError(f"{what} failed (exit {result.returncode}).")
    return result.stdout


def _sqlite_code_index(path: Path, project: str, purge: bool) -> int:
    """Rows of ``project`` in a SQLite catalog copy; with ``purge`` they are deleted first with
    secure_delete on and the file vacuumed, so no freed page keeps them. Opened read-write even
    to count: a read-only open of a WAL database leaves -wal/-shm files beside the backup."""
    connection = sqlite3.connect(path)
    try:
        where = f"FROM {CODE_INDEX_TABLE} WHERE project = ?"
        count = connection.execute(f"SELECT count(*) {where}", (project,)).fetchone()[0]
        if purge and count:
            connection.execute("PRAGMA secure_delete = ON")
            with connection:
                connection.execute(f"DELETE {where}", (project,))
            connection.execute("VACUUM")
        return count
    finally:
        connection.close()


def _dump_code_index(path: Path, project: str) -> int:
    """Rows of ``project`` in a ``pg_dump -Fc`` catalog, read from the dump's COPY data."""
    text = _run(["pg_restore", "--data-only", f"--table={CODE_INDEX_TABLE}", "-f", "-",
                 str(path)], "Reading the code index of a catalog dump")
    count, column = 0, None
    for line in text.splitlines():
        if line.startswith(f"COPY public.{CODE_INDEX_TABLE} ("):
            column = line.split("(", 1)[1].split(")", 1)[0].split(", ").index("project")
        elif line == "\\.":
            column = None
        elif column is not None and line.split("\t")[column] == project:
            count += 1
    return count


def _purge_dump(path: Path, project: str, db_url: str) -> None:
    """Restore a dump into a scratch database, delete the project's rows, dump it in place."""
    import psycopg

    with scratch_database(db_url) as scratch:
        _run(["pg_restore", "--no-owner", "-d", pg_cli_url(scratch), str(path)],
             "Restoring a catalog dump to purge it")
        with psycopg.connect(pg_cli_url(scratch), autocommit=True) as connection:
            connection.execute(f"DELETE FROM {CODE_INDEX_TABLE} WHERE project = %s", (project,))
        fresh = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            _run(["pg_dump", "-Fc", "--no-owner", "-f", str(fresh), pg_cli_url(scratch)],
                 "Dumping the purged catalog")
            os.replace(fresh, path)
        finally:
            fresh.unlink(missing_ok=True)


@dataclass(frozen=True)
class Backups:
    data_dir: Path
    key_dir: Path

    def stamps(self) -> list[str]:
        """Complete backups, oldest first (a backup counts once its catalogue is written)."""
        if not self.data_dir.exists():
            return []
        return sorted(p.name for p in self.data_dir.iterdir() if (p / CATALOGUE).exists())

    def take(self, db_url: str, store: ObjectStore, keystore_dir: Path,
             sign: Any | None = None) -> dict[str, Any]:
        """Copy catalog, every object version and (apart) the key store; return the catalogue."""
        stamp = _stamp()
        target = self.data_dir / stamp
        target.mkdir(parents=True, mode=0o700)
        catalog = self._dump_catalog(db_url, target)
        objects = []
        for version in store.list_versions(""):
            folder = target / "objects" / f"{version.key}.versions"
            folder.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with _reader(store, version) as src, open(folder / version.version_id, "wb") as dst:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    dst.write(chunk)
            meta = {"key": version.key, "version_id": version.version_id, "size": version.size,
                    "sha256": digest.hexdigest(), "created_at": version.created_at.isoformat()}
            (folder / f"{version.version_id}.json").write_text(json.dumps(meta))
            objects.append(meta)
        keys = self.key_dir / stamp
        shutil.copytree(keystore_dir, keys, dirs_exist_ok=False)
        os.chmod(self.key_dir, 0o700)
        catalogue = {"stamp": stamp, "catalog": catalog, "objects": len(objects),
                     "bytes": sum(o["size"] for o in objects),
                     "object_digests": {f"{o['key']}@{o['version_id']}": o["sha256"]
                                        for o in objects},
                     "keys": sorted(p.name for p in (keys / DATA_KEY_DIR).glob("*.json"))
                     if (keys / DATA_KEY_DIR).exists() else []}
        signed = sign(catalogue) if sign else {"catalogue": catalogue}
        (target / CATALOGUE).write_text(json.dumps(signed, indent=1))
        return catalogue

    def _dump_catalog(self, db_url: str, target: Path) -> str:
        if db_url.startswith("sqlite:///"):
            source = sqlite3.connect(db_url.removeprefix("sqlite:///"))
            copy = sqlite3.connect(target / "catalog.db")
            with copy:
                source.backup(copy)
            source.close()
            copy.close()
            return "catalog.db"
        result = subprocess.run(["pg_dump", "-Fc", "--no-owner", "-f", str(target / "catalog.dump"),
                                 pg_cli_url(db_url)], capture_output=True, text=True)
        if result.returncode:
            raise BackupError("pg_dump could not back up the catalog database "
                              f"(exit {result.returncode}).")
        return "catalog.dump"

    def restore(self, stamp: str, home: Path, db_url: str | None = None) -> dict[str, str]:
        """Lay a backup out as a working seqlife home: catalog, key store and store.

        Returns the environment (``SEQLIFE_*``) that opens it. A PostgreSQL dump is restored into
        ``db_url`` (an empty database the caller created); a SQLite copy into ``home``.
        """
        source = self.data_dir / stamp
        if not (source / CATALOGUE).exists():
            raise BackupError(f"No complete backup {stamp}.")
        home.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source / "objects", home / "store" / "objects")
        (home / "store" / "tmp").mkdir(exist_ok=True)
        keys = self.key_dir / stamp
        if keys.exists():
            shutil.copytree(keys, home / "keys")
        else:
            (home / "keys").mkdir(mode=0o700)
        env = {"SEQLIFE_HOME": str(home), "SEQLIFE_STORE_URL": (home / "store").as_uri(),
               "SEQLIFE_KEYSTORE_DIR": str(home / "keys")}
        if (source / "catalog.db").exists():
            shutil.copy2(source / "catalog.db", home / "catalog.db")
            env["SEQLIFE_DB_URL"] = f"sqlite:///{home / 'catalog.db'}"
            return env
        if db_url is None:
            raise BackupError("This backup holds a PostgreSQL dump; give an empty database to "
                              "restore it into.")
        result = subprocess.run(["pg_restore", "--no-owner", "-d", pg_cli_url(db_url),
                                 str(source / "catalog.dump")], capture_output=True, text=True)
        if result.returncode:
            raise BackupError(f"pg_restore failed (exit {result.returncode}).")
        env["SEQLIFE_DB_URL"] = db_url
        return env

    def purge_prefix(self, prefix: str) -> int:
        """Delete every backed-up object version under ``prefix`` from every data backup."""
        removed = 0
        for stamp in self.stamps():
            root = self.data_dir / stamp / "objects"
            for folder in sorted(root.rglob("*.versions")):
                key = folder.relative_to(root).as_posix()[: -len(".versions")]
                if key.startswith(prefix):
                    removed += len(list(folder.glob("*.json")))
                    shutil.rmtree(folder)
        return removed

    def remnants(self, prefix: str) -> list[str]:
        found = []
        for stamp in self.stamps():
            root = self.data_dir / stamp / "objects"
            found += [f"{stamp}:{f.relative_to(root).as_posix()}" for f in root.rglob("*.versions")
                      if f.relative_to(root).as_posix().startswith(prefix)]
        return found

    def _key_copies(self, relative: str) -> list[Path]:
        """The copies of one key-store file (path relative to the key store) in every backup."""
        return sorted(self.key_dir.glob(f"*/{relative}")) if self.key_dir.exists() else []

    def _shred_copies(self, relative: str) -> int:
        copies = self._key_copies(relative)
        for path in copies:
            overwrite_and_unlink(path)
        return len(copies)

    def purge_key(self, key_file: str) -> int:
        """Shred a wrapped data key in every key-store backup (crypto-shredding)."""
        return self._shred_copies(f"{DATA_KEY_DIR}/{key_file}")

    def key_remnants(self, key_file: str) -> list[str]:
        return [p.relative_to(self.key_dir).as_posix()
                for p in self._key_copies(f"{DATA_KEY_DIR}/{key_file}")]

    def purge_secret(self, secret_file: str) -> int:
        """Shred a key-store secret (``LocalKeyStore.file_name``) in every key-store backup."""
        return self._shred_copies(secret_file)

    def secret_remnants(self, secret_file: str) -> list[str]:
        return [p.relative_to(self.key_dir).as_posix() for p in self._key_copies(secret_file)]

    def purge_code_index(self, project: str, db_url: str) -> int:
        """Delete a project's patient code index rows from the catalog of every data backup.

        A SQLite copy is edited where it lies; a PostgreSQL dump is restored into a scratch
        database on the server of ``db_url``, purged and dumped again in its place. Returns the
        number of rows removed.
        """
        removed = 0
        for stamp in self.stamps():
            folder = self.data_dir / stamp
            if (folder / "catalog.db").exists():
                removed += _sqlite_code_index(folder / "catalog.db", project, purge=True)
            elif count := _dump_code_index(folder / "catalog.dump", project):
                _purge_dump(folder / "catalog.dump", project, db_url)
                removed += count
        return removed

    def code_index_remnants(self, project: str) -> list[str]:
        """``stamp: N row(s)`` for every backup whose catalog still holds the project's index."""
        found = []
        for stamp in self.stamps():
            folder = self.data_dir / stamp
            count = _sqlite_code_index(folder / "catalog.db", project, purge=False) \
                if (folder / "catalog.db").exists() else \
                _dump_code_index(folder / "catalog.dump", project)
            if count:
                found.append(f"{stamp}: {count} code index row(s)")
        return found


def open_backups(settings: Any) -> Backups:
    return Backups(Path(settings.backup_dir), Path(settings.key_backup_dir))

