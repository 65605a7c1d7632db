"""Flows ``encrypt`` and ``rotate_keys``.

``encrypt``: collect and deidentify store every file sealed (Crypt4GH under the dataset's data
key, signed manifest) from the first byte, so for their versions this flow authenticates every
segment of every stored copy against the signed manifest and reports it. A version stored before
sealing at intake (an older catalog) is sealed here: each file becomes a Crypt4GH copy (read back
and authenticated before it counts), the manifest is signed, the copies are recorded in the
lineage registry and the plaintext object versions are purged — always: no option keeps
plaintext at rest (GB/T 39725 §10.1 h). Any failure before the purge leaves the plaintext as it
was; the refusal is audited.

``rotate_keys``: the yearly re-wrap of every data key under a new master key; payloads are not
touched (GB/T 39725 §8.3 Table 5).
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from prefect import flow, unmapped
from prefect.runtime import flow_run

from flows import on_cluster
from infra.datakeys import KmsMaster, LocalMaster, Master
from infra.resources import Resources, build_resources
from seqlife.exceptions import ConfigurationError, SeqlifeError
from seqlife.settings import Settings
from tasks import batches, lineage
from tasks import encrypt as t
from tasks.lineage import recorded_artifacts, stage_of_run


def run_encrypt(res: Resources, dataset: str, version: int | None, run_id: str = "") -> dict:
    policy = t.load_encrypt_policy()
    obj = f"dataset:{dataset}" + (f"@v{version}" if version else "")
    res.audit.append("encrypt.start", obj, "started", policy_hash=policy.content_hash)
    try:
        number, zone, files = t.version_files(res, dataset, version)
        obj = f"dataset:{dataset}@v{number}"
        todo = [f for f in files if not f["encrypted_key"]]
        verified = t.verify_sealed(res, dataset, [f for f in files if f["encrypted_key"]])
        public = res.data_keys.public_key(dataset)
        copies = [copy for batch in t.encrypt_files.map(
            unmapped(res), batches(todo), unmapped(zone), unmapped(dataset),
            unmapped(public)).result() for copy in batch]
        recorded = t.record_encrypted(res, dataset, number, copies, policy) if copies else {}
        if copies:
            inputs = {a.path: a for a in recorded_artifacts(res, dataset, number)}
            with tempfile.TemporaryDirectory(dir=res.scratch(), prefix="encrypt-") as scratch:
                stage, local = _lineage_stage(res, dataset, number, copies, inputs, run_id,
                                              policy.content_hash, Path(scratch))
                lineage.record_stage(res, stage, local)
        purged = t.purge_plaintext(res, dataset, number)
    except SeqlifeError as exc:
        res.audit.append("encrypt.refused", obj, "refused", reason=exc.message,
                         policy_hash=policy.content_hash)
        raise
    res.audit.append("encrypt.store", obj, "ok",
                     reason=f"{len(copies)} file(s) encrypted (Crypt4GH), {verified} sealed "
                            f"copies authenticated, {purged} plaintext object(s) purged; data "
                            f"key {recorded.get('fingerprint', '-')}",
                     after_digest=recorded.get("manifest_sha256"), policy_hash=policy.content_hash)
    return {"dataset": dataset, "version": number, "encrypted": len(copies),
            "already_encrypted": len(files) - len(todo), "verified": verified, "purged": purged,
            **recorded}


def _lineage_stage(res: Resources, dataset: str, version: int, copies: list[dict],
                   inputs: dict, run_id: str, policy_hash: str, scratch: Path) -> tuple:
    """The encrypt run as a lineage stage: plaintext artifacts in, Crypt4GH copies out. The copies
    are fetched to ``scratch`` for DVC (ciphertext only)."""
    outputs = {}
    for copy in copies:
        target = scratch / f"{len(outputs)}.c4gh"
        with res.store.open(copy["object_key"], copy["object_version_id"]) as src, \
                open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        outputs[f"{t.C4GH_DIR}/{copy['path']}.c4gh"] = (copy["cipher_sha256"], target)
    read = [inputs[c["path"]] for c in copies if c["path"] in inputs]
    return stage_of_run("encrypt", dataset, version, outputs, read, run_id, policy_hash,
                        {"format": "crypt4gh-v1"})


@flow(name="encrypt", log_prints=False)
def encrypt_flow(dataset: str, version: int | None = None) -> dict:
    """Prove a dataset version is kept encrypted only (Crypt4GH, signed integrity manifest),
    sealing any file an older catalog stored in plaintext.

    Args:
        dataset: catalog name of the dataset.
        version: its version (latest by default).
    """
    return run_encrypt(build_resources(Settings.from_env()), dataset, version,
                       str(flow_run.id or ""))


encrypt_flow = on_cluster(encrypt_flow)


def new_master(settings: Settings, kms_key_id: str | None = None,
               master_env: str | None = None) -> Master:
    """The master to rotate to: a KMS key, a key from the named environment variable, or (the
    embedded default) fresh random bytes that replace the key store's master file."""
    if kms_key_id:
        return KmsMaster(kms_key_id, settings.kms_endpoint_url)
    if master_env:
        value = os.environ.get(master_env)
        if not value:
            raise ConfigurationError(f"The environment variable {master_env} holds no new master "
                                     "key.")
        return LocalMaster(base64.b64decode(value))
    return LocalMaster(os.urandom(32))


def run_rotate(res: Resources, master: Master) -> dict:
    """Re-wrap every data key under ``master``; the local master file follows when it is local."""
    from infra.datakeys import MASTER_FILE, _write_private

    policy = t.load_encrypt_policy()
    old = res.data_keys.master.key_id
    try:
        count = res.data_keys.rotate(master)
        if isinstance(master, LocalMaster) and not os.environ.get("SEQLIFE_MASTER_KEY"):
            _write_private(res.settings.keystore_dir / MASTER_FILE, master.key)
    except SeqlifeError as exc:
        res.audit.append("keys.rotate", "keystore:data-keys", "refused", reason=exc.message,
                         policy_hash=policy.content_hash)
        raise
    res.audit.append("keys.rotate", "keystore:data-keys", "ok",
                     reason=f"{count} data key(s) re-wrapped from {old} to {master.key_id}",
                     policy_hash=policy.content_hash)
    return {"rewrapped": count, "from": old, "to": master.key_id}


@flow(name="rotate_keys", log_prints=False)
def rotate_keys_flow(kms_key_id: str | None = None, master_env: str | None = None) -> dict:
    """Yearly rotation: re-wrap every data key under a new master key (payloads untouched)."""
    settings = Settings.from_env()
    return run_rotate(build_resources(settings), new_master(settings, kms_key_id, master_env))
