"""Local key store: named secrets in files with 0600 permissions, apart from the data.

Keys are kept outside the object store (GB/T 39725 §10.1 g) and are never logged or written into
the store, the catalog or the audit trail. The surrogate secret lives here so that the patient
code link (real ID -> surrogate) can only be recomputed by whoever holds this directory.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from seqlife.exceptions import ConfigurationError, SeqlifeError

SECRET_BYTES = 32


def code_index_key(project: str) -> str:
    """The name of the secret sealing a project's patient code index (GB/T 39725 §10.2 g)."""
    return f"code-index-{project}"


def surrogate_key(project: str) -> str:
    """The name of the secret a project's subject surrogates are keyed with (§10.2 f)."""
    return f"surrogate-{project}"


def date_shift_key(project: str) -> str:
    """The name of the secret a project's per-subject date offsets are drawn from."""
    return f"date-shift-{project}"


def linking_secrets(project: str) -> tuple[str, ...]:
    """The secrets destroyed with the last of a project's datasets (GB/T 39725 §10.2 h;
    §11.7.4.3 a): the code-index key (codes back to subjects) and the date-shift secret (shifted
    dates back to true ones). The surrogate secret is kept: it only turns a subject key someone
    already holds into its code — how a subject's request finds the disclosures made under the
    project (HDS §7 g), which outlive the data — and cannot name the subject behind a code."""
    return code_index_key(project), date_shift_key(project)


class SecretMissing(SeqlifeError):
    """A secret asked for without creating it is not in the key store (never made, or destroyed):
    a new random one would open nothing that the old one sealed."""

    stage = "keys"


class LocalKeyStore:
    """Secrets as files under one private directory (0700), one file per name (0600)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, name: str) -> Path:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigurationError(f"Key name '{name}' may hold only letters, digits, '-' and '_'.")
        return self.directory / f"{name}.key"

    def file_name(self, name: str) -> str:
        """The secret's file name (key-store backups hold it under the same name)."""
        return self._path(name).name

    def has(self, name: str) -> bool:
        return self._path(name).exists()

    def secret(self, name: str, create: bool = True) -> bytes:
        """The named secret, created on first use with a cryptographically random value unless
        ``create`` is false (then a missing secret raises :class:`SecretMissing`)."""
        path = self._path(name)
        if not path.exists():
            if not create:
                raise SecretMissing(f"The key store holds no secret '{name}': it was never made "
                                    "here or it was destroyed.")
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.directory, 0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return self.secret(name)  # another process created it first
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(SECRET_BYTES))
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigurationError(
                f"Key file '{path.name}' is readable by other users (mode {mode:o}); "
                "restrict it to 0600 before seqlife will use it."
            )
        value = path.read_bytes()
        if len(value) != SECRET_BYTES:
            raise ConfigurationError(f"Key file '{path.name}' is damaged (wrong length).")
        return value

    def sealer(self, name: str, create: bool = True) -> Fernet:
        """Authenticated encryption (Fernet: AES-128-CBC + HMAC-SHA256) under the named secret."""
        return Fernet(base64.urlsafe_b64encode(self.secret(name, create)))

    def shred(self, name: str) -> bool:
        """Destroy the named secret: overwritten with random bytes, flushed, unlinked, so what it
        sealed can never be opened again. Returns False if it was already gone."""
        path = self._path(name)
        if not path.exists():
            return False
        overwrite_and_unlink(path)
        return True

    def signing_key(self, name: str = "controller-signing") -> Ed25519PrivateKey:
        """The controller's Ed25519 signing key (its 32-byte seed is the named secret)."""
        return Ed25519PrivateKey.from_private_bytes(self.secret(name))


def overwrite_and_unlink(path: Path) -> None:
    """Overwrite a key file with random bytes, flush it to disk, then unlink it."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.write(secrets.token_bytes(size))
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()
