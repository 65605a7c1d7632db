"""Encrypt tasks: Crypt4GH copies of a version's files under the dataset's data key, the signed
integrity manifest, plaintext purge, and the one way every stage reads stored data."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from infra.catalog import DataFile, IntegrityManifest
from infra.objectstore import ObjectVersion
from infra.resources import Resources
from seqlife.collect import hash_file
from seqlife.encrypt import c4gh
from seqlife.encrypt import manifest as manifests
from seqlife.exceptions import IntegrityError, ObjectNotFound, SeqlifeError
from seqlife.policy import Policy, load_policy
from tasks import is_transient

C4GH_DIR = "_c4gh"
REQUIRED_RULES = frozenset({"format", "segment_size", "header_share_max_ms",
                            "rotation_cron", "signature_algorithm"})


def load_encrypt_policy() -> Policy:
    return load_policy("encrypt", REQUIRED_RULES)


def encrypted_key(zone: str, dataset: str, path: str) -> str:
    """Where the Crypt4GH copy of a file lives: beside the plaintext, under ``_c4gh/``."""
    return f"{zone}/{dataset}/{C4GH_DIR}/{path}.c4gh"


def _get(f: Any, name: str) -> Any:
    return f[name] if isinstance(f, dict) else getattr(f, name)


@contextmanager
def open_data(res: Resources, data_file: Any, dataset: str | None = None) -> Iterator[BinaryIO]:
    """The plaintext of a stored file, whichever form it is kept in.

    While the plaintext object exists, it is read directly (the store checks its SHA-256). Once
    it was purged, the Crypt4GH copy is decrypted with the dataset's data key as it streams, each
    segment authenticated, and the result checked against the signed integrity manifest; a
    shredded key raises ``DataKeyMissing``.
    """
    if not _get(data_file, "plaintext_purged"):
        with res.store.open(_get(data_file, "object_key"), _get(data_file, "object_version_id")) \
                as stream:
            yield stream
        return
    with res.sessions() as session:
        row = session.get(DataFile, _get(data_file, "id"))
        version = row.dataset_version
        name, path = version.dataset.name, row.path
        signed = session.scalar(select(IntegrityManifest.document).where(
            IntegrityManifest.dataset_version_id == version.id))
    if signed is None:
        raise manifests.ManifestInvalid(f"{name} v{version.version}: no signed integrity "
                                        "manifest; the encrypted copy cannot be trusted.")
    manifest = manifests.verified(signed, res.keys.signing_key().public_key())
    entry = manifest["files"].get(path) or {}
    secret = res.data_keys.secret_key(dataset or name)

    def mismatch(sha256: str, size: int) -> Exception:
        return manifests.ManifestInvalid(
            f"{name} v{version.version} {path}: the decrypted bytes differ from the signed "
            "integrity manifest; the encrypted copy was replaced.")

    with res.store.open(_get(data_file, "encrypted_key"),
                        _get(data_file, "encrypted_version_id")) as raw:
        reader = c4gh.PlaintextReader(raw, secret, (entry.get("sha256"), entry.get("size")),
                                      mismatch)
        del secret
        yield reader


def stored_digest(res: Resources, data_file: Any, dataset: str | None = None) -> str | None:
    """SHA-256 of a stored file recomputed from its bytes (not the catalog), or None when it
    cannot be read intact (altered, missing, or its key destroyed)."""
    digest = hashlib.sha256()
    try:
        with open_data(res, data_file, dataset) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except SeqlifeError:
        return None
    return digest.hexdigest()


def read_parquet(res: Resources, data_file: Any) -> pd.DataFrame:
    """A stored Parquet table, through :func:`open_data` (decrypted and checked if need be),
    streamed to scratch and read there."""
    with tempfile.TemporaryDirectory(dir=res.scratch()) as scratch:
        local = Path(scratch) / "table.parquet"
        with open_data(res, data_file) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return pd.read_parquet(local)


@dataclass(frozen=True)
class SealedFile:
    """A plaintext file sealed as Crypt4GH in scratch, ready to store: what the catalog, the
    integrity manifest and the lineage registry record of it. The plaintext never reaches the
    store; ``cipher`` is the local ciphertext (the bytes the store and DVC will hold)."""

    path: str
    sha256: str
    size: int
    cipher: Path
    cipher_sha256: str
    cipher_size: int
    header_size: int


def scratch_copy(scratch: Path, path: str) -> Path:
    """Where the sealed copy of the dataset file ``path`` waits in ``scratch`` to be stored."""
    return scratch / f"{hashlib.sha256(path.encode()).hexdigest()[:16]}.c4gh"


def seal(res: Resources, dataset: str, path: str, source: Path, scratch: Path,
         expected_sha256: str | None = None) -> SealedFile:
    """Encrypt ``source`` for ``dataset``'s data key into ``scratch`` (one streaming pass, the
    plaintext SHA-256 computed alongside; a second pass hashes the ciphertext)."""
    target = scratch_copy(scratch, path)
    with open(source, "rb") as src, open(target, "wb") as dst:
        sealed = c4gh.encrypt_stream(src, dst, [res.data_keys.public_key(dataset)])
    if expected_sha256 is not None and sealed.sha256 != expected_sha256:
        target.unlink()
        raise IntegrityError(f"{path}: the bytes read for encryption differ from the ones "
                             "validated; nothing was stored.")
    return SealedFile(path, sealed.sha256, sealed.size, target, hash_file(target)[0],
                      sealed.cipher_size, sealed.header_size)


def put_sealed(res: Resources, zone: str, dataset: str, sealed: SealedFile) -> ObjectVersion:
    """Store a sealed file at its Crypt4GH key; the store checks the ciphertext digest."""
    with open(sealed.cipher, "rb") as handle:
        return res.store.put(encrypted_key(zone, dataset, sealed.path), handle,
                             expected_sha256=sealed.cipher_sha256)


def sealed_columns(sealed: SealedFile, stored: ObjectVersion) -> dict[str, Any]:
    """The DataFile columns of a file stored sealed: no plaintext object exists, so the object
    and its Crypt4GH copy are one and reads always decrypt (``plaintext_purged``)."""
    return {"path": sealed.path, "size": sealed.size, "sha256": sealed.sha256,
            "object_key": stored.key, "object_version_id": stored.version_id,
            "encrypted_key": stored.key, "encrypted_version_id": stored.version_id,
            "cipher_sha256": sealed.cipher_sha256, "cipher_size": sealed.cipher_size,
            "header_size": sealed.header_size, "plaintext_purged": True}


def signed_manifest(res: Resources, zone: str, dataset: str, version: int,
                    entries: list[dict], policy_hash: str) -> tuple[dict, ObjectVersion, str]:
    """Build, sign and store the integrity manifest of a version's sealed files; returns the
    signed document, the stored object and the data-key fingerprint."""
    fingerprint = manifests.fingerprint(res.data_keys.public_key(dataset))
    body = manifests.build(
        dataset, version,
        {e["path"]: {k: e[k] for k in ("sha256", "size", "cipher_sha256", "cipher_size",
                                        "header_size", "object_key")} for e in entries},
        fingerprint, policy_hash, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    signed = manifests.sign(body, res.keys.signing_key())
    key = f"{zone}/{dataset}/{C4GH_DIR}/_manifests/v{version}.json"
    stored = res.store.put_bytes(key, json.dumps(signed, indent=1, sort_keys=True).encode())
    return signed, stored, fingerprint


@task(name="encrypt_file", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=is_transient)
def encrypt_file(res: Resources, data_file: dict, zone: str, dataset: str, public_key: bytes
                 ) -> dict:
    """Stream one stored file into a Crypt4GH copy for the dataset key, store it, then read the
    stored copy back and authenticate every segment before it counts as encrypted."""
    with tempfile.TemporaryDirectory(dir=res.scratch(), prefix="encrypt-") as scratch:
        target = Path(scratch) / "out.c4gh"
        with open_data(res, data_file) as src, open(target, "wb") as dst:
            sealed = c4gh.encrypt_stream(src, dst, [public_key])
        if (sealed.sha256, sealed.size) != (data_file["sha256"], data_file["size"]):
            raise IntegrityError(f"{data_file['path']}: the bytes read for encryption differ "
                                 "from the catalog's record; nothing was encrypted.")
        with open(target, "rb") as handle:
            stored = res.store.put(encrypted_key(zone, dataset, data_file["path"]), handle,
                                   expected_sha256=hash_file(target)[0])
    secret = res.data_keys.secret_key(dataset)
    with res.store.open(stored.key, stored.version_id) as raw:
        check = c4gh.decrypt_stream(raw, None, secret)
    if (check.sha256, check.size) != (sealed.sha256, sealed.size):
        res.store.delete_version(stored.key, stored.version_id)
        raise IntegrityError(f"{data_file['path']}: the stored encrypted copy does not decrypt "
                             "to the original; it was removed and nothing was recorded.")
    return {"id": data_file["id"], "path": data_file["path"], "sha256": sealed.sha256,
            "size": sealed.size, "cipher_sha256": stored.sha256, "cipher_size": stored.size,
            "header_size": sealed.header_size, "object_key": stored.key,
            "object_version_id": stored.version_id}


@task(name="encrypt_files", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=is_transient)
def encrypt_files(res: Resources, data_files: list[dict], zone: str, dataset: str,
                  public_key: bytes) -> list[dict]:
    """A batch of files encrypted in one task (see ``tasks.batches``). A retried batch stores
    fresh copies; only the ones recorded by ``record_encrypted`` count."""
    return [encrypt_file.fn(res, f, zone, dataset, public_key) for f in data_files]


def record_encrypted(res: Resources, dataset: str, version: int, copies: list[dict],
                     policy: Policy) -> dict:
    """Write the Crypt4GH locations on the file rows and sign and store the integrity manifest."""
    from tasks.classify import find_version

    with res.sessions() as session:
        row = find_version(session, dataset, version)
        zone, version_id = row.zone, row.id
    signed, stored, fingerprint = signed_manifest(res, zone, dataset, version, copies,
                                                  policy.content_hash)
    key = stored.key
    with res.sessions.begin() as session:
        for copy in copies:
            data_file = session.get(DataFile, copy["id"])
            data_file.encrypted_key = copy["object_key"]
            data_file.encrypted_version_id = copy["object_version_id"]
            data_file.cipher_sha256 = copy["cipher_sha256"]
            data_file.cipher_size = copy["cipher_size"]
            data_file.header_size = copy["header_size"]
        existing = session.scalar(select(IntegrityManifest).where(
            IntegrityManifest.dataset_version_id == version_id))
        if existing is not None:
            session.delete(existing)
            session.flush()
        session.add(IntegrityManifest(dataset_version_id=version_id, manifest_key=key,
                                      manifest_version_id=stored.version_id, document=signed,
                                      data_key_fingerprint=fingerprint))
    return {"manifest_key": key, "manifest_sha256": stored.sha256, "fingerprint": fingerprint}


def verify_sealed(res: Resources, dataset: str, files: list[dict]) -> int:
    """Authenticate every segment of every sealed file and check it against the signed manifest
    (through :func:`open_data`); returns how many were verified. Raises on the first failure."""
    for data_file in files:
        with open_data(res, data_file, dataset) as stream:
            while stream.read(1 << 20):
                pass
    return len(files)


def purge_plaintext(res: Resources, dataset: str, version: int) -> int:
    """Delete the plaintext object versions of an encrypted version; reads then decrypt.

    Only files whose Crypt4GH copy is recorded are purged. The catalog is marked first for each
    file, so a crash never leaves a file that is neither readable nor marked; a re-run deletes
    any plaintext a crash left behind a mark. Returns how many plaintext versions went.
    """
    from tasks.classify import find_version

    with res.sessions() as session:
        files = [(f.id, f.object_key, f.object_version_id, f.plaintext_purged)
                 for f in find_version(session, dataset, version).files
                 if f.encrypted_key and f.object_key != f.encrypted_key]  # sealed at intake
    purged = 0
    for file_id, key, version_id, marked in files:
        if not marked:
            with res.sessions.begin() as session:
                session.get(DataFile, file_id).plaintext_purged = True
        try:
            res.store.delete_version(key, version_id)
            purged += 1
        except ObjectNotFound:
            continue  # gone already: purged by an earlier run
    return purged


def version_files(res: Resources, dataset: str, version: int | None) -> tuple[int, str, list[dict]]:
    """The version number, zone and plain description of every file of a version."""
    from tasks.classify import find_version

    with res.sessions() as session:
        row = find_version(session, dataset, version)
        files = [{"id": f.id, "path": f.path, "sha256": f.sha256, "size": f.size,
                  "object_key": f.object_key, "object_version_id": f.object_version_id,
                  "plaintext_purged": f.plaintext_purged, "encrypted_key": f.encrypted_key,
                  "encrypted_version_id": f.encrypted_version_id}
                 for f in row.files]
        return row.version, row.zone, files


def deliver(res: Resources, data_file: dict, dataset: str, recipient: bytes, out: Path) -> dict:
    """A recipient's Crypt4GH file: a new header for ``recipient`` + the stored payload as is.

    The payload is copied byte for byte, never decrypted; only the header's session key is
    re-encrypted (milliseconds whatever the size).
    """
    secret = res.data_keys.secret_key(dataset)
    with res.store.open(data_file["encrypted_key"], data_file["encrypted_version_id"]) as raw, \
            open(out, "wb") as dst:
        packets, _ = c4gh.read_header(raw)
        header = c4gh.reencrypt_header(_serialize(packets), secret, [recipient])
        dst.write(header)
        shutil.copyfileobj(raw, dst, 1 << 20)
    return {"path": data_file["path"], "out": str(out), "header_size": len(header)}


def _serialize(packets: list[bytes]) -> bytes:
    from crypt4gh import header as c4gh_header

    return c4gh_header.serialize(packets)


def shred_data_key(res: Resources, key_name: str) -> tuple[bool, int]:
    """Crypto-shredding that reaches every copy of the key: the live wrapped key and each
    key-store backup holding it (a backup restored later must not bring the data back). Returns
    (live key destroyed, backups it was removed from)."""
    from infra.backup import open_backups

    shredded = res.data_keys.shred(key_name)
    return shredded, open_backups(res.settings).purge_key(res.data_keys.key_file(key_name))
