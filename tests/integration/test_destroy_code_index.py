"""Destroying a dataset destroys what links its subjects: once no live dataset of a project is
left, its patient code index (surrogate -> record number) goes from the live catalog and from
every catalog backup, and the key sealing it from the live key store and from every key backup;
re-identification then fails with a typed error. While a dataset of the project is live the index
is kept and the certificate says for which. A certificate carries what verification found and is
never issued over a remnant (GB/T 39725 §10.2 f–h, §11.7.4.3 a; §11.4.2.6)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import as_role
from sqlalchemy import func, select
from test_deidentify_flow import approved  # noqa: F401  (fixture)

from infra.backup import Backups, open_backups
from infra.catalog import Destruction, PatientCodeIndex
from infra.keystore import code_index_key, date_shift_key, surrogate_key
from infra.resources import Resources
from seqlife import certify
from seqlife.deidentify.errors import CodeIndexDestroyed
from seqlife.deidentify.tables import load_deidentify_policy
from seqlife.destroy import DestructionIncomplete

pytestmark = pytest.mark.usefixtures("prefect_backend")

PROJECT = "p1"


def lifecycle(resources: Resources, raw: str) -> str:
    """collect -> classify -> approve (fixture) -> deidentify for PROJECT -> committee approval."""
    from flows.deidentify import deidentify_flow
    from tasks.deidentify import approve

    derived = deidentify_flow(raw, PROJECT)["dataset"]
    approve(as_role(resources, "committee"), raw, PROJECT, None, load_deidentify_policy())
    return derived


def reidentify(resources: Resources, surrogate: str) -> str:
    from tasks.deidentify import read_code_index

    return read_code_index(as_role(resources, "reidentification_officer"), PROJECT, surrogate,
                           "adverse event follow-up", load_deidentify_policy())


def code_index(resources: Resources) -> list[PatientCodeIndex]:
    with resources.sessions() as session:
        return list(session.scalars(select(PatientCodeIndex).where(
            PatientCodeIndex.project == PROJECT)))


def catalog_copies(resources: Resources) -> list[bytes]:
    """The content of every catalog backup as an attacker holding the backup disk reads it: the
    SQLite file's raw bytes, or the plain text a PostgreSQL dump restores to."""
    root = Path(resources.settings.backup_dir)
    copies = [path.read_bytes() for path in root.glob("*/catalog.db")]
    copies += [subprocess.run(["pg_restore", "-f", "-", str(path)], check=True,
                              capture_output=True).stdout for path in root.glob("*/catalog.dump")]
    assert copies, "no catalog backup was taken"
    return copies


def files_holding(resources: Resources, secret: bytes) -> list[Path]:
    """Every file of the live key store, the key backups and the data backups holding ``secret``
    (the code-index key's 32 bytes), whatever its name."""
    settings = resources.settings
    return [path for root in (settings.keystore_dir, settings.key_backup_dir, settings.backup_dir)
            for path in Path(root).rglob("*") if path.is_file() and secret in path.read_bytes()]


def test_destroying_every_dataset_of_a_project_destroys_its_code_index(
        resources: Resources, approved: str) -> None:  # noqa: F811
    """GB/T 39725 §10.2 f–h, §11.7.4.3 a: after `destroy dataset` of the raw and of the derived
    dataset nothing links the project's subjects: no code index row in the live catalog or in a
    catalog backup, no copy of its key in the live key store or any backup, and `deidentify
    reidentify` fails with a typed error. The certificate's empty remnants are what looking
    again found; the first destruction kept the index for the derived dataset and said so."""
    from tasks import destroy, drill

    derived = lifecycle(resources, approved)
    rows = code_index(resources)
    surrogate, sealed = rows[0].surrogate, [r.sealed_subject_key.encode() for r in rows]
    assert reidentify(resources, surrogate)
    key = (Path(resources.settings.keystore_dir)
           / resources.keys.file_name(code_index_key(PROJECT))).read_bytes()
    drill.backup(resources)
    assert all(any(value in copy for copy in catalog_copies(resources)) for value in sealed)
    assert len(files_holding(resources, key)) == 2  # live key store + key backup

    first = destroy.destroy(resources, "dataset", approved, "retention: study closed")
    assert [(c["project"], c["destroyed"], c["kept_for"]) for c in first["code_index"]] == \
        [(PROJECT, False, [derived])]
    assert reidentify(resources, surrogate)  # the derived dataset still needs it

    second = destroy.destroy(resources, "dataset", derived, "retention: study closed")
    signed = destroy.certificate_of(resources, second["destruction"])
    assert certify.verify(signed, resources.keys.signing_key().public_key(), None) == []
    certificate = signed["certificate"]
    assert certificate["remnants"] == []
    assert [(c["project"], c["destroyed"]) for c in certificate["code_index"]] == \
        [(PROJECT, True)]
    assert {"patient code index rows (live catalog and every catalog backup)",
            "code-index keys (live key store and every key backup)"} <= set(
        certificate["verified"])
    assert [s["step"] for s in certificate["steps"]][-2:] == ["purge_code_index",
                                                              "shred_code_index_key"]

    with pytest.raises(CodeIndexDestroyed, match=second["destruction"]):
        reidentify(resources, surrogate)
    assert code_index(resources) == []
    assert not any(value in copy for copy in catalog_copies(resources) for value in sealed)
    assert files_holding(resources, key) == []
    assert not resources.keys.has(code_index_key(PROJECT))
    backups = open_backups(resources.settings)
    assert backups.code_index_remnants(PROJECT) == []
    assert backups.secret_remnants(resources.keys.file_name(code_index_key(PROJECT))) == []
    # the date-shift secret would turn shifted dates back into true ones: gone too; the
    # surrogate secret stays so a subject's request still finds the disclosures (HDS §7 g)
    shift = date_shift_key(PROJECT)
    assert not resources.keys.has(shift)
    assert backups.secret_remnants(resources.keys.file_name(shift)) == []
    assert resources.keys.has(surrogate_key(PROJECT))
    reads = [e.outcome for e in resources.audit.entries()
             if e.action == "deidentify.code_index_read"]
    assert reads[-1] == "refused" and resources.audit.verify().ok


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_a_live_dataset_of_the_project_keeps_its_code_index(
        resources: Resources, approved: str) -> None:  # noqa: F811
    """GB/T 39725 §10.2 h: the raw dataset stays live, so destroying the derived one keeps the
    code index (the controller may still re-identify) and the certificate names why."""
    from tasks import destroy, drill

    derived = lifecycle(resources, approved)
    drill.backup(resources)
    surrogate = code_index(resources)[0].surrogate
    done = destroy.destroy(resources, "dataset", derived, "requester's project cancelled")
    certificate = destroy.certificate_of(resources, done["destruction"])["certificate"]
    [kept] = certificate["code_index"]
    assert kept["project"] == PROJECT and kept["destroyed"] is False
    assert kept["kept_for"] == [approved] and approved in kept["why"]
    assert certificate["remnants"] == []
    assert reidentify(resources, surrogate)
    assert resources.keys.has(code_index_key(PROJECT))
    assert open_backups(resources.settings).code_index_remnants(PROJECT)
    assert open_backups(resources.settings).secret_remnants(
        resources.keys.file_name(code_index_key(PROJECT)))


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_a_remnant_found_on_checking_refuses_the_certificate(
        resources: Resources, approved: str, monkeypatch) -> None:  # noqa: F811
    """GB/T 39725 §11.7.4.3 a: a key backup that is not shredded is found by the verification;
    the destruction fails with a typed, audited error, no certificate says destroyed, and the
    next run does every step again and is certified."""
    from tasks import destroy, drill

    derived = lifecycle(resources, approved)
    drill.backup(resources)
    destroy.destroy(resources, "dataset", approved, "retention: study closed")
    monkeypatch.setattr(Backups, "purge_secret", lambda self, secret_file: 0)
    with pytest.raises(DestructionIncomplete, match="key backup: .*code-index-p1.key"):
        destroy.destroy(resources, "dataset", derived, "retention: study closed")
    with resources.sessions() as session:
        failed = session.scalar(select(Destruction).where(Destruction.target == derived))
        assert failed.state == "incomplete" and failed.certificate is None
    assert not resources.store.remnants(f"destruction/{failed.id}")
    outcomes = [(e.action, e.outcome, e.object) for e in resources.audit.entries()]
    assert ("destroy.incomplete", "refused", f"dataset:{derived}") in outcomes
    assert ("destroy.verified", "destroyed", f"dataset:{derived}") not in outcomes

    monkeypatch.undo()
    done = destroy.destroy(resources, "dataset", derived, "retention: study closed")
    assert done["destruction"] != failed.id and done["remnants"] == []
    assert "shred_code_index_key" in [s["step"] for s in done["steps"]]
    with resources.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Destruction).where(
            Destruction.target == derived, Destruction.state == "verified")) == 1
