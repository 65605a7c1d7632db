"""The encrypt stage end to end on both settings (SQLite + local store; PostgreSQL + S3 over HTTP):
versions kept as Crypt4GH only, read back through decryption by later stages, signed manifests,
header-only sharing, rotation and crypto-shredding (GB/T 39725 §10.1 g-h, §11.3.4.5 a-b,
§11.3.4.6 a 1-3)."""

from __future__ import annotations

import base64
import csv
import io
import os
import shutil
from pathlib import Path

import pytest
from crypt4gh import lib as c4gh_lib
from sqlalchemy import select

from infra.backup import open_backups
from infra.catalog import DataFile, IntegrityManifest
from infra.datakeys import DataKeyMissing, LocalMaster, MasterKeyMismatch
from infra.resources import Resources
from seqlife.encrypt import c4gh
from seqlife.encrypt.manifest import ManifestInvalid, verified
from seqlife.exceptions import IntegrityError

pytestmark = pytest.mark.usefixtures("prefect_backend")


@pytest.fixture
def encrypted(resources: Resources, cohort: Path) -> str:
    from flows.collect import collect_flow
    from flows.encrypt import encrypt_flow

    collect_flow(str(cohort), "cohort-x")
    result = encrypt_flow("cohort-x")  # collect sealed everything: this authenticates it
    assert result["verified"] == result["already_encrypted"] > 0
    assert result["encrypted"] == result["purged"] == 0
    return "cohort-x"


def files_of(resources: Resources, dataset: str) -> list[DataFile]:
    from tasks.classify import find_version

    with resources.sessions() as session:
        return list(find_version(session, dataset, None).files)


def test_version_is_kept_as_crypt4gh_only_and_the_reference_library_reads_it(
        resources: Resources, encrypted: str) -> None:
    """§10.1 h, §11.3.4.6 a 1: no plaintext object version was ever stored; each copy is
    standard Crypt4GH that the GA4GH reference implementation decrypts to the recorded bytes."""
    import hashlib

    secret = resources.data_keys.secret_key(encrypted)
    files = files_of(resources, encrypted)
    stored = {v.key for v in resources.store.list_versions(f"01_raw/{encrypted}/")}
    assert stored == {f.encrypted_key for f in files} | {
        k for k in stored if "/_manifests/" in k or "/_quality/" in k or "/_maps/" in k}
    for data_file in files:
        assert data_file.plaintext_purged and data_file.encrypted_key.endswith(".c4gh")
        assert data_file.object_key == data_file.encrypted_key  # no plaintext object beside it
        blob = resources.store.get_bytes(data_file.encrypted_key, data_file.encrypted_version_id)
        assert not blob.startswith(b"@") and blob.startswith(c4gh.MAGIC)
        out = io.BytesIO()
        c4gh_lib.decrypt([(0, secret, None)], io.BytesIO(blob), out)
        assert hashlib.sha256(out.getvalue()).hexdigest() == data_file.sha256
    actions = [(e.action, e.outcome) for e in resources.audit.entries()]
    assert ("encrypt.store", "ok") in actions


def test_signed_manifest_covers_every_file_and_verifies_under_the_controller_key(
        resources: Resources, encrypted: str) -> None:
    with resources.sessions() as session:
        signed = session.scalar(select(IntegrityManifest.document))
    manifest = verified(signed, resources.keys.signing_key().public_key())
    assert set(manifest["files"]) == {f.path for f in files_of(resources, encrypted)}
    assert all(e["cipher_sha256"] and e["sha256"] for e in manifest["files"].values())
    text = str(signed)
    assert base64.b64encode(resources.data_keys.secret_key(encrypted)).decode() not in text


def test_later_stages_read_through_decryption(resources: Resources, encrypted: str) -> None:
    """classify -> deidentify run on a version kept encrypted only."""
    from flows.classify import classify_flow
    from flows.deidentify import deidentify_flow
    from seqlife.classify.labels import load_classify_policy
    from tasks.classify import approve

    classify_flow(encrypted)
    approve(resources, encrypted, None, [], load_classify_policy())
    result = deidentify_flow(encrypted, "p1")
    assert result["status"] == "pending_approval"


def test_encrypted_versions_stay_in_the_lineage(resources: Resources, encrypted: str) -> None:
    from infra.lineage import LineageRegistry

    stages = {s.stage: s for s in LineageRegistry.open(resources.settings).stages()}
    files = {f.path: f for f in files_of(resources, encrypted)}
    # the registry records (and DVC holds) the stored Crypt4GH bytes, never the plaintext
    assert {a.path: a.sha256 for a in stages["collect"].outputs} == {
        path: f.cipher_sha256 for path, f in files.items()}


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_a_changed_byte_in_storage_stops_the_read(resources: Resources, encrypted: str) -> None:
    """§11.3.4.6 a 3: one flipped ciphertext byte in the store stops the next stage."""
    from tasks.encrypt import open_data

    target = next(f for f in files_of(resources, encrypted) if f.format == "bam")
    stored = resources.store.root / "objects" / f"{target.encrypted_key}.versions" / \
        target.encrypted_version_id
    stored.chmod(0o600)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises((IntegrityError, c4gh.TamperedPayload)):
        with open_data(resources, target) as stream:
            stream.read()


def test_a_swapped_copy_is_refused_by_the_signed_manifest(resources: Resources,
                                                          encrypted: str) -> None:
    """A validly encrypted but different file put in place of another is caught on read."""
    from tasks.encrypt import open_data

    first, second = [f for f in files_of(resources, encrypted) if f.format == "vcf"][:2]
    with resources.sessions.begin() as session:
        row = session.get(DataFile, first.id)
        row.encrypted_key, row.encrypted_version_id = second.encrypted_key, \
            second.encrypted_version_id
    swapped = next(f for f in files_of(resources, encrypted) if f.id == first.id)
    with pytest.raises(ManifestInvalid, match="differ from the signed integrity manifest"):
        with open_data(resources, swapped) as stream:
            stream.read()


def test_sharing_reencrypts_only_the_header(resources: Resources, encrypted: str,
                                            tmp_path: Path) -> None:
    """§11.4.2.5: the recipient's file is a new header + the stored payload, byte for byte."""
    from tasks.encrypt import deliver

    recipient = c4gh.new_secret_key()
    target = max(files_of(resources, encrypted), key=lambda f: f.size)
    entry = {"path": target.path, "encrypted_key": target.encrypted_key,
             "encrypted_version_id": target.encrypted_version_id}
    out = tmp_path / "shared.c4gh"
    result = deliver(resources, entry, encrypted, c4gh.public_key_of(recipient), out)
    stored = resources.store.get_bytes(target.encrypted_key, target.encrypted_version_id)
    shared = out.read_bytes()
    assert shared[result["header_size"]:] == stored[target.header_size:]
    plain = io.BytesIO()
    c4gh_lib.decrypt([(0, recipient, None)], io.BytesIO(shared), plain)
    assert len(plain.getvalue()) == target.size


def test_rotation_rewraps_keys_without_touching_payloads(resources: Resources,
                                                         encrypted: str) -> None:
    """§8.3 Table 5: a new master key; the same ciphertext objects still open."""
    from flows.encrypt import run_rotate
    from tasks.encrypt import open_data

    before = {(f.encrypted_key, f.encrypted_version_id, f.cipher_sha256)
              for f in files_of(resources, encrypted)}
    old_master = resources.data_keys.master
    result = run_rotate(resources, LocalMaster(os.urandom(32)))
    assert result["rewrapped"] == 1 and result["from"] != result["to"]
    assert {(f.encrypted_key, f.encrypted_version_id, f.cipher_sha256)
            for f in files_of(resources, encrypted)} == before
    with open_data(resources, files_of(resources, encrypted)[0]) as stream:
        assert stream.read()
    from infra.datakeys import DataKeys

    stale = DataKeys(resources.settings.keystore_dir, old_master)
    with pytest.raises(MasterKeyMismatch, match="finish the key rotation"):
        stale.secret_key(encrypted)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_crypto_shredding_makes_every_copy_and_backup_unreadable(
        resources: Resources, encrypted: str, cohort: Path, tmp_path: Path) -> None:
    """§10.1 h; §11.7.4.3 a (issue 17): after `seqlife keys shred` no byte of the dataset can be
    read by any means. Every copy under the home — store versions, the lineage registry's
    workspace, DVC cache and remote, the backups taken before the shredding, a copy of the store
    taken aside — is Crypt4GH that no remaining key opens, the key is gone from every key-store
    backup, and nothing of the delivery is anywhere in clear."""
    from sweep import findings, home_places, raw_reads
    from tasks import drill
    from test_cli import seqlife

    from seqlife.deidentify.residual import Scanner
    from tasks.encrypt import open_data

    drill.backup(resources)
    home = resources.settings.home
    key_file = resources.data_keys.key_file(encrypted)
    assert open_backups(resources.settings).key_remnants(key_file)
    aside = tmp_path / "copy-of-store"
    shutil.copytree(resources.store.root, aside)
    shredded = seqlife(home, "keys", "shred", encrypted, "--reason", "use ended", "--json",
                       role="security_admin")
    assert shredded.returncode == 0, shredded.stderr[-2000:]
    assert '"key_backups_purged": 1' in shredded.stdout
    assert open_backups(resources.settings).key_remnants(key_file) == []
    with pytest.raises(DataKeyMissing, match="crypto-shredding"):
        with open_data(resources, files_of(resources, encrypted)[0]) as stream:
            stream.read()

    places = [p for root in (home, aside) for p in root.rglob("*")
              if p.is_file() and "keys" not in p.relative_to(root).parts]
    copies = [p for p in places if p.read_bytes()[:8] == b"crypt4gh"]
    where = {p.relative_to(home).parts[0] for p in copies if p.is_relative_to(home)}
    assert {"store", "registry", "backups"} <= where
    assert len(copies) >= 4 * len(files_of(resources, encrypted))
    keys_left = [resources.data_keys.secret_key(d) for d in resources.data_keys.datasets()]
    for copy in copies:
        for key in keys_left + [c4gh.new_secret_key()]:
            with pytest.raises(c4gh.WrongKey):
                c4gh.decrypt_stream(io.BytesIO(copy.read_bytes()), None, key)
    with open(cohort / "clinical.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    needles = {row[c] for row in rows for c in ("mrn", "name", "id_number", "mobile")}
    needles |= raw_reads(sorted((cohort / "seq").glob("*.fastq.gz")), per_file=20)
    assert findings([*home_places(home, skip=()), *home_places(aside, skip=())],
                    Scanner.of(needles)) == []
    assert not resources.data_keys.shred(encrypted)  # idempotent


def test_a_wrong_master_key_is_a_clear_error(resources: Resources, encrypted: str) -> None:
    from infra.datakeys import DataKeys

    wrong = DataKeys(resources.settings.keystore_dir, LocalMaster(os.urandom(32)))
    with pytest.raises(MasterKeyMismatch):
        wrong.secret_key(encrypted)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_keys_never_reach_the_store_the_audit_trail_or_dvc(resources: Resources,
                                                           encrypted: str) -> None:
    """§10.1 g: neither the data key nor the master key appears, raw, hex or base64, anywhere
    data, lineage or audit records are kept."""
    from infra.datakeys import MASTER_FILE
    from infra.lineage import LineageRegistry

    secrets = [resources.data_keys.secret_key(encrypted),
               (resources.settings.keystore_dir / MASTER_FILE).read_bytes()]
    needles = [n for s in secrets for n in (s, s.hex().encode(), base64.b64encode(s))]
    places = [resources.store.root, LineageRegistry.open(resources.settings).root]
    for place in places:
        for path in place.rglob("*"):
            if path.is_file():
                blob = path.read_bytes()
                assert not any(n in blob for n in needles), path
    audit = "".join(str(e.__dict__) for e in resources.audit.entries()).encode()
    assert not any(n in audit for n in needles)
    assert resources.settings.keystore_dir not in resources.store.root.parents
