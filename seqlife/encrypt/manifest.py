"""Signed integrity manifests of encrypted dataset versions (GB/T 39725 §11.3.4.6 a 3).

A manifest lists, for every file of a version, the SHA-256 and size of its plaintext and of its
Crypt4GH ciphertext, and is signed (Ed25519) with the controller's key. Every read checks the
signature, then the bytes against the manifest: a tampered byte, a swapped file or an edited
manifest stops the read with :class:`ManifestInvalid` naming what differs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from seqlife.encrypt.c4gh import EncryptionError

MANIFEST_SCHEMA = 1


class ManifestInvalid(EncryptionError):
    """The integrity manifest's signature fails, or the data differs from it."""


def _canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def build(dataset: str, version: int, files: Mapping[str, Mapping[str, Any]],
          key_fingerprint: str, policy_hash: str, created_at: str) -> dict[str, Any]:
    """The unsigned manifest. ``files``: path -> {sha256, size, cipher_sha256, cipher_size,
    object_key}; ``key_fingerprint`` names the data key (never the key itself)."""
    return {"schema": MANIFEST_SCHEMA, "dataset": dataset, "version": version,
            "format": "crypt4gh-v1", "data_key_fingerprint": key_fingerprint,
            "policy_hash": policy_hash, "created_at": created_at,
            "files": {path: dict(entry) for path, entry in sorted(files.items())}}


def sign(manifest: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    public = key.public_key().public_bytes_raw()
    return {"manifest": dict(manifest), "signature": {
        "algorithm": "Ed25519", "public_key": public.hex(),
        "value": base64.b64encode(key.sign(_canonical(manifest))).decode()}}


def verified(signed: Mapping[str, Any], trusted: Ed25519PublicKey) -> dict[str, Any]:
    """The manifest if its signature is the controller's and intact, else ``ManifestInvalid``."""
    try:
        manifest, signature = signed["manifest"], signed["signature"]
        value = base64.b64decode(signature["value"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestInvalid("The integrity manifest is not a signed seqlife manifest.") from exc
    if signature.get("public_key") != trusted.public_bytes_raw().hex():
        raise ManifestInvalid("The integrity manifest was signed with a key that is not the "
                              "controller's signing key.")
    try:
        trusted.verify(value, _canonical(manifest))
    except InvalidSignature as exc:
        raise ManifestInvalid(f"The integrity manifest of {manifest.get('dataset')} "
                              f"v{manifest.get('version')} was edited after it was signed.") from exc
    return dict(manifest)


def check_entry(manifest: Mapping[str, Any], path: str, *, sha256: str, size: int,
                cipher: bool = False) -> None:
    """Refuse bytes that differ from the manifest's entry for ``path`` (plaintext or cipher)."""
    entry = manifest.get("files", {}).get(path)
    where = f"{manifest.get('dataset')} v{manifest.get('version')} {path}"
    if entry is None:
        raise ManifestInvalid(f"{where} is not in the version's integrity manifest.")
    want = (entry["cipher_sha256"], entry["cipher_size"]) if cipher else \
        (entry["sha256"], entry["size"])
    if (sha256, size) != tuple(want):
        raise ManifestInvalid(f"{where}: the {'encrypted' if cipher else 'decrypted'} bytes "
                              "differ from the signed integrity manifest; the file was altered "
                              "or replaced. Nothing was delivered.")


def fingerprint(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]
