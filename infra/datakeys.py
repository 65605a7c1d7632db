"""Envelope encryption of per-dataset data keys: a master key (local or AWS KMS) wraps each key.

Every dataset has its own X25519 data key; its files are Crypt4GH-encrypted to the key's public
half. The secret half is stored only wrapped by the master key, in the key store directory, never
in the object store, the catalog, the audit trail or DVC (GB/T 39725 §10.1 g). Two masters:

* :class:`LocalMaster` -- AES-256-GCM under 32 bytes from ``SEQLIFE_MASTER_KEY`` (base64) or, in
  the embedded default, from a 0600 file made in the key store on first use;
* :class:`KmsMaster` -- AWS KMS ``Encrypt``/``Decrypt``/``ReEncrypt`` through boto3, with the
  dataset name as encryption context, so a wrapped key cannot be unwrapped for another dataset.

Rotation re-wraps every data key under a new master without touching a payload. Shredding
deletes a dataset's wrapped key: every copy of its files (versions, caches, backups) becomes
unreadable ciphertext (crypto-shredding), and a tombstone keeps the date for the record.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.keystore import overwrite_and_unlink
from seqlife.encrypt.c4gh import EncryptionError, new_secret_key, public_key_of
from seqlife.exceptions import ConfigurationError, Transient
from seqlife.settings import Settings

MASTER_FILE = "master.key"
DATA_KEY_DIR = "data-keys"


class KeyUnavailable(EncryptionError, Transient):
    """The key service could not be reached; retrying may help."""


class DataKeyMissing(EncryptionError):
    """A dataset has no data key: it was never encrypted here, or its key was shredded."""


class MasterKeyMismatch(EncryptionError):
    """A data key was wrapped by another master key than the ones offered."""


class Master(Protocol):
    """A key-encryption key: wraps and unwraps data keys, bound to their dataset."""

    key_id: str

    def wrap(self, plaintext: bytes, dataset: str) -> bytes: ...

    def unwrap(self, blob: bytes, dataset: str) -> bytes: ...


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class LocalMaster:
    """AES-256-GCM master key held outside the object store; the dataset name is the AAD."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ConfigurationError("The master key must be 32 bytes (base64 of 32 random "
                                     "bytes in SEQLIFE_MASTER_KEY).")

    def __repr__(self) -> str:  # never print the key
        return f"LocalMaster({self.key_id})"

    @property
    def key_id(self) -> str:
        return "local:" + hashlib.sha256(b"seqlife-master:" + self.key).hexdigest()[:16]

    def wrap(self, plaintext: bytes, dataset: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(self.key).encrypt(nonce, plaintext, dataset.encode())

    def unwrap(self, blob: bytes, dataset: str) -> bytes:
        try:
            return AESGCM(self.key).decrypt(blob[:12], blob[12:], dataset.encode())
        except InvalidTag as exc:
            raise MasterKeyMismatch(f"The data key of {dataset} does not open with master key "
                                    f"{self.key_id}: wrong master key, or the wrapped key file "
                                    "was altered.") from exc

    @classmethod
    def from_env_or_file(cls, keystore_dir: Path, env: dict[str, str] | None = None
                         ) -> "LocalMaster":
        """``SEQLIFE_MASTER_KEY`` if set, else the key store's own master file (made once)."""
        value = (os.environ if env is None else env).get("SEQLIFE_MASTER_KEY")
        if value:
            try:
                return cls(base64.b64decode(value, validate=True))
            except ValueError as exc:
                raise ConfigurationError("SEQLIFE_MASTER_KEY is not valid base64.") from exc
        path = Path(keystore_dir) / MASTER_FILE
        if not path.exists():
            _write_private(path, secrets.token_bytes(32))
        if path.stat().st_mode & 0o077:
            raise ConfigurationError(f"The master key file {path.name} is readable by other "
                                     "users; restrict it to 0600.")
        return cls(path.read_bytes())


def kms_client(endpoint_url: str | None) -> Any:
    """The boto3 KMS client of the master; making one opens no connection, so the residency
    check reads its resolved ``meta.endpoint_url`` before a key is wrapped."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "kms", endpoint_url=endpoint_url,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                      read_timeout=20))


class KmsMaster:
    """An AWS KMS key (symmetric) as the master; boto3 over HTTP(S) to the KMS endpoint."""

    def __init__(self, key_id: str, endpoint_url: str | None = None,
                 client: Any | None = None) -> None:
        self.key_id = key_id
        self._client = client or kms_client(endpoint_url)

    def __repr__(self) -> str:
        return f"KmsMaster({self.key_id})"

    def _call(self, name: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        try:
            return getattr(self._client, name)(**kwargs)
        except (EndpointConnectionError, BotoCoreError) as exc:
            raise KeyUnavailable(f"The key service (KMS) could not be reached for {name} "
                                 f"({type(exc).__name__}).") from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise MasterKeyMismatch("KMS refused to unwrap the data key: it was wrapped "
                                        "under another key or for another dataset.") from exc
            raise EncryptionError(f"KMS refused {name}: {code}.") from exc

    def wrap(self, plaintext: bytes, dataset: str) -> bytes:
        return self._call("encrypt", KeyId=self.key_id, Plaintext=plaintext,
                          EncryptionContext={"dataset": dataset})["CiphertextBlob"]

    def unwrap(self, blob: bytes, dataset: str) -> bytes:
        return self._call("decrypt", CiphertextBlob=blob, KeyId=self.key_id,
                          EncryptionContext={"dataset": dataset})["Plaintext"]


def open_master(settings: Settings) -> Master:
    """The master named by the settings: KMS when ``SEQLIFE_KMS_KEY_ID`` is set, else local."""
    if settings.kms_key_id:
        return KmsMaster(settings.kms_key_id, settings.kms_endpoint_url)
    return LocalMaster.from_env_or_file(settings.keystore_dir)


class DataKeys:
    """Per-dataset X25519 data keys, stored wrapped (one JSON file per dataset, 0600)."""

    def __init__(self, keystore_dir: Path, master: Master) -> None:
        self.directory = Path(keystore_dir) / DATA_KEY_DIR
        self.master = master

    def _path(self, dataset: str, suffix: str = ".json") -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset)
        if not safe or safe.startswith("."):
            raise ConfigurationError(f"Cannot name a data key after '{dataset[:60]}'.")
        return self.directory / f"{safe}{suffix}"

    def key_file(self, dataset: str) -> str:
        """The wrapped key's file name (backups hold it under the same name)."""
        return self._path(dataset).name

    def _record(self, dataset: str) -> dict[str, Any]:
        path = self._path(dataset)
        if not path.exists():
            tomb = self._path(dataset, ".shredded")
            if tomb.exists():
                when = json.loads(tomb.read_text())["shredded_at"]
                raise DataKeyMissing(f"The data key of {dataset} was destroyed on {when} "
                                     "(crypto-shredding): its encrypted copies can no longer "
                                     "be read by anyone.")
            raise DataKeyMissing(f"{dataset} has no data key: nothing of it was encrypted here.")
        return json.loads(path.read_text())

    def public_key(self, dataset: str, create: bool = True) -> bytes:
        """The dataset's public key (files are encrypted to it); made on first use."""
        if create and not self._path(dataset).exists() \
                and not self._path(dataset, ".shredded").exists():
            self._create(dataset)
        return base64.b64decode(self._record(dataset)["public_key"])

    def _create(self, dataset: str) -> None:
        secret = new_secret_key()
        record = {"dataset": dataset, "kek": self.master.key_id,
                  "wrapped": base64.b64encode(self.master.wrap(secret, dataset)).decode(),
                  "public_key": base64.b64encode(public_key_of(secret)).decode(),
                  "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        path = self._path(dataset)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # made concurrently by another process
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record))
            handle.flush()
            os.fsync(handle.fileno())

    def secret_key(self, dataset: str) -> bytes:
        """The dataset's secret key, unwrapped in memory only for the call that needs it."""
        record = self._record(dataset)
        if record["kek"] != self.master.key_id:
            raise MasterKeyMismatch(f"The data key of {dataset} is wrapped by master "
                                    f"{record['kek']}, not by the current master "
                                    f"{self.master.key_id}; finish the key rotation first.")
        return self.master.unwrap(base64.b64decode(record["wrapped"]), dataset)

    def datasets(self) -> list[str]:
        return sorted(json.loads(p.read_text())["dataset"] for p in self.directory.glob("*.json"))

    def describe(self) -> list[dict[str, str]]:
        """Dataset, master id, creation time and public-key fingerprint: nothing secret."""
        rows = []
        for path in sorted(self.directory.glob("*.json")):
            record = json.loads(path.read_text())
            rows.append({"dataset": record["dataset"], "kek": record["kek"],
                         "created_at": record["created_at"],
                         "rotated_at": record.get("rotated_at", ""),
                         "public_key_sha256": hashlib.sha256(
                             base64.b64decode(record["public_key"])).hexdigest()[:16]})
        rows += [{"dataset": json.loads(p.read_text())["dataset"], "kek": "",
                  "created_at": "", "rotated_at": "",
                  "shredded_at": json.loads(p.read_text())["shredded_at"],
                  "public_key_sha256": ""} for p in sorted(self.directory.glob("*.shredded"))]
        return rows

    def rotate(self, new_master: Master) -> int:
        """Re-wrap every data key under ``new_master``; payloads are not touched.

        Each file is rewritten atomically, so an interruption leaves every key readable under
        one of the two masters; re-running finishes the job (keys already under the new master
        are skipped). Returns how many keys were re-wrapped.
        """
        count = 0
        for path in sorted(self.directory.glob("*.json")):
            record = json.loads(path.read_text())
            if record["kek"] == new_master.key_id:
                continue
            if record["kek"] != self.master.key_id:
                raise MasterKeyMismatch(f"The data key of {record['dataset']} is wrapped by "
                                        f"{record['kek']}, which is neither the old nor the new "
                                        "master key.")
            secret = self.master.unwrap(base64.b64decode(record["wrapped"]), record["dataset"])
            record.update(kek=new_master.key_id,
                          wrapped=base64.b64encode(new_master.wrap(secret, record["dataset"]))
                          .decode(),
                          rotated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            _write_private(path, json.dumps(record).encode())
            count += 1
        self.master = new_master
        return count

    def shred(self, dataset: str) -> bool:
        """Destroy the dataset's data key (crypto-shredding). Returns False if already gone.

        The wrapped key file is overwritten with random bytes, flushed, then unlinked; a tombstone
        (dataset and date, nothing secret) records the shredding.
        """
        path = self._path(dataset)
        if not path.exists():
            return False
        overwrite_and_unlink(path)
        _write_private(self._path(dataset, ".shredded"), json.dumps(
            {"dataset": dataset,
             "shredded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode())
        return True
