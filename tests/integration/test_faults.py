"""Faults: the process is killed (SIGKILL) in the middle of collect (which seals) and destroy. Each
re-run finishes the job; no partial object is ever registered as complete, no destruction is
reported before it is true, and the audit trail stays verifiable (GB/T 39725 §11.3.4.5 d,
§11.3.4.6 a 3; App. F)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest
from test_share_flow import certified  # noqa: F401  (fixture)

from seqlife.synth import generate_cohort


def cli(home: Path, *args: str, role: str = "steward") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEQLIFE_", "PREFECT_"))}
    env.update({"SEQLIFE_HOME": str(home), "SEQLIFE_ROLE": role})
    return subprocess.Popen([sys.executable, "-m", "seqlife.cli", "--json", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(home: Path, *args: str, role: str = "steward") -> dict:
    proc = cli(home, *args, role=role)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, (out + err)[-2000:]
    return json.loads(out)


def kill_when(home: Path, condition: Callable[[], bool], *args: str,
              role: str = "steward") -> bool:
    """Run a command and SIGKILL its whole process group as soon as ``condition`` holds.
    Returns whether it was killed (False: it finished first)."""
    proc = cli(home, *args, role=role)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.communicate()
    return False


def objects(home: Path, prefix: str) -> list[Path]:
    root = home / "store" / "objects" / prefix
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".json")] \
        if root.exists() else []


def catalog_rows(home: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(home / "catalog.db") as connection:
        return connection.execute(sql).fetchall()


def assert_registered_objects_are_complete(home: Path) -> None:
    """Every file the catalog registers is in the store, whole, with its recorded digest."""
    rows = catalog_rows(home, "SELECT object_key, object_version_id, sha256, plaintext_purged, "
                              "encrypted_key, encrypted_version_id, cipher_sha256 FROM files")
    for key, version, sha, purged, c_key, c_version, c_sha in rows:
        if purged:
            key, version, sha = c_key, c_version, c_sha
        data = (home / "store" / "objects" / f"{key}.versions" / version).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha


def test_killed_collect_encrypt_and_destroy_resume_and_never_lie(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cohort = tmp_path / "cohort"
    generate_cohort(cohort, subjects=12, seed=5, reads_per_subject=2000, variants_per_subject=200)

    # collect: killed once the first object is stored, before the version is registered
    killed = kill_when(home, lambda: len(objects(home, "01_raw")) >= 3, "collect", str(cohort),
                       "--dataset", "cohort-k")
    assert killed
    if (home / "catalog.db").exists():
        registered = catalog_rows(home, "SELECT COUNT(*) FROM dataset_versions")[0][0]
        assert registered == 0  # nothing half-stored is registered
    first = finish(home, "collect", str(cohort), "--dataset", "cohort-k")
    assert first["created"] and first["version"] == 1
    assert_registered_objects_are_complete(home)

    # collect of a changed delivery: killed while it seals the new version's files (sealing is
    # part of intake, so this is where an interrupted encryption can happen)
    fastq = sorted((cohort / "seq").glob("*.fastq.gz"))[0]
    fastq.write_bytes(gzip.compress(gzip.decompress(fastq.read_bytes()) * 2))
    before = len(objects(home, "01_raw"))
    killed = kill_when(home, lambda: len(objects(home, "01_raw")) > before, "collect",
                       str(cohort), "--dataset", "cohort-k")
    assert killed
    assert catalog_rows(home, "SELECT MAX(version) FROM dataset_versions") == [(1,)]
    assert_registered_objects_are_complete(home)
    second = finish(home, "collect", str(cohort), "--dataset", "cohort-k")
    assert second["created"] and second["version"] == 2
    verified = finish(home, "encrypt", "cohort-k")  # authenticates every sealed file
    assert verified["verified"] == verified["already_encrypted"] > 0
    purged = catalog_rows(home, "SELECT COUNT(*), SUM(plaintext_purged) FROM files")[0]
    assert purged[0] == purged[1]
    assert_registered_objects_are_complete(home)

    # destroy: killed after its first recorded step; not reported done until the re-run
    def a_step_done() -> bool:
        try:
            rows = catalog_rows(home, "SELECT steps FROM destructions")
        except sqlite3.OperationalError:
            return False
        return bool(rows) and len(json.loads(rows[0][0])) >= 1

    kill_when(home, a_step_done, "destroy", "dataset", "cohort-k", "--reason", "drill")
    states = catalog_rows(home, "SELECT state FROM destructions")
    assert states in ([("running",)], [("verified",)])
    verified = [r for r in catalog_rows(home, "SELECT action FROM audit_events")
                if r[0] == "destroy.verified"]
    assert (states == [("verified",)]) == bool(verified)  # success only when it is true
    done = finish(home, "destroy", "dataset", "cohort-k", "--reason", "drill")
    assert [s["step"] for s in done["steps"]].count("purge_store_objects") == 1
    assert objects(home, "01_raw/cohort-k") == []
    audit = finish(home, "audit", "verify")
    assert audit["ok"]


def test_object_store_outage_mid_upload_registers_nothing_and_recovers(
        tmp_path: Path, monkeypatch, prefect_backend) -> None:
    """The S3 server dies while collect uploads: the flow stops with a storage error after its
    transient retries, nothing is registered, the audit trail records it; once the store is back
    the same delivery is collected whole."""
    import threading

    import boto3
    from conftest import free_port_block, start_seaweed, stop_seaweed

    from infra.resources import build_resources
    from seqlife.exceptions import StorageError
    from seqlife.settings import Settings
    from tasks.encrypt import stored_digest

    data, base = tmp_path / "weed", free_port_block()
    process, endpoint = start_seaweed(data, base)
    monkeypatch.setenv("SEQLIFE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEQLIFE_STORE_URL", "s3://outage")
    monkeypatch.setenv("SEQLIFE_S3_ENDPOINT_URL", endpoint)
    for name in ("SEQLIFE_DB_URL", "SEQLIFE_KEYSTORE_DIR"):
        monkeypatch.delenv(name, raising=False)
    cohort = tmp_path / "cohort"
    generate_cohort(cohort, subjects=12, seed=9, reads_per_subject=2000, variants_per_subject=200)
    build_resources.cache_clear()
    res = build_resources(Settings.from_env())
    s3 = boto3.client("s3", endpoint_url=endpoint)

    def kill_after_first_upload() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            listed = s3.list_objects_v2(Bucket="outage", Prefix="01_raw/").get("KeyCount", 0)
            if listed >= 2:
                stop_seaweed(process)
                return
            time.sleep(0.01)

    from flows.collect import collect_flow

    killer = threading.Thread(target=kill_after_first_upload, daemon=True)
    killer.start()
    try:
        with pytest.raises(StorageError):
            collect_flow(str(cohort), "cohort-o")
    finally:
        killer.join(timeout=30)
    with res.sessions() as session:
        from infra.catalog import DatasetVersion

        assert session.query(DatasetVersion).count() == 0
    assert ("collect.refused", "refused") in [(e.action, e.outcome) for e in res.audit.entries()]

    process, _ = start_seaweed(data, base)  # the store comes back with what it had
    try:
        result = collect_flow(str(cohort), "cohort-o")
        assert result["created"] and result["version"] == 1
        with res.sessions() as session:
            from infra.catalog import DataFile

            files = session.query(DataFile).all()
        for data_file in files:  # the store holds each sealed copy whole, and it decrypts
            with res.store.open(data_file.object_key, data_file.object_version_id) as stream:
                assert hashlib.sha256(stream.read()).hexdigest() == data_file.cipher_sha256
            assert stored_digest(res, data_file, "cohort-o") == data_file.sha256
        assert res.audit.verify().ok
    finally:
        stop_seaweed(process)
        res.engine.dispose()
        build_resources.cache_clear()


PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


@pytest.fixture
def own_postgres(tmp_path: Path):
    """A PostgreSQL server of this test's own (initdb in a scratch folder, a free port), so it
    can be restarted without disturbing the shared one."""
    import pwd
    import shutil

    from conftest import free_port

    if PG_BIN is None:
        pytest.fail("PostgreSQL server binaries are not installed (.ci/services installs them).")
    # not under tmp_path: the postgres user must reach it, and pytest's folders are root-only
    folder = Path(tempfile.gettempdir()) / f"pg-{os.getpid()}-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if user:
        os.chown(folder, user.pw_uid, user.pw_gid)
    port = free_port()

    def run(*command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if user else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    run(str(PG_BIN / "initdb"), "-D", str(folder / "data"), "--auth=trust", "-U", "postgres")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"

    def start() -> None:
        run(str(PG_BIN / "pg_ctl"), "-D", str(folder / "data"), "-o", options, "-w", "start",
            "-l", str(folder / "log"))

    def restart() -> None:
        run(str(PG_BIN / "pg_ctl"), "-D", str(folder / "data"), "-o", options, "-m", "fast",
            "-w", "restart", "-l", str(folder / "log"))

    start()
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", restart
    finally:
        run(str(PG_BIN / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_postgresql_restart_mid_flow_loses_nothing(tmp_path: Path, monkeypatch, own_postgres,
                                                   prefect_backend) -> None:
    """The catalog database restarts while collect runs: the run either completes or stops with
    a typed error and registers nothing; the re-run completes, and the audit chain verifies."""
    import threading

    from flows.collect import collect_flow
    from infra.resources import build_resources
    from seqlife.exceptions import SeqlifeError
    from seqlife.settings import Settings

    db_url, restart = own_postgres
    monkeypatch.setenv("SEQLIFE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEQLIFE_DB_URL", db_url)
    for name in ("SEQLIFE_STORE_URL", "SEQLIFE_S3_ENDPOINT_URL", "SEQLIFE_KEYSTORE_DIR"):
        monkeypatch.delenv(name, raising=False)
    cohort = tmp_path / "cohort"
    generate_cohort(cohort, subjects=12, seed=4, reads_per_subject=2000, variants_per_subject=200)
    build_resources.cache_clear()
    res = build_resources(Settings.from_env())
    store_root = tmp_path / "home" / "store" / "objects" / "01_raw"

    def restart_when_storing() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if store_root.exists() and any(store_root.rglob("*.json")):
                restart()
                return
            time.sleep(0.005)

    restarter = threading.Thread(target=restart_when_storing, daemon=True)
    restarter.start()
    try:
        try:
            first = collect_flow(str(cohort), "cohort-pg")
        except SeqlifeError:
            first = None
        restarter.join(timeout=120)
        with res.sessions() as session:
            from infra.catalog import DatasetVersion

            versions = session.query(DatasetVersion).count()
        assert versions == (1 if first else 0)  # all or nothing
        again = collect_flow(str(cohort), "cohort-pg")
        assert again["version"] == 1
        assert res.audit.verify().ok
    finally:
        res.engine.dispose()
        build_resources.cache_clear()


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_killed_share_delivery_leaves_no_unrecorded_copy(
        resources, certified, tmp_path: Path, prefect_backend) -> None:  # noqa: F811
    """SIGKILL while the recipient's file is written: no finished copy exists without its
    delivery record; the re-run delivers; the destruction removes every copy, partial or not."""
    from crypt4gh.keys import c4gh as c4gh_keys
    from sqlalchemy import select
    from test_share_flow import approve_request

    from infra.catalog import Delivery
    from tasks import destroy

    agreement = approve_request(resources, certified)["agreement"]
    c4gh_keys.generate(str(tmp_path / "r.sec"), str(tmp_path / "r.pub"), passphrase=None,
                       comment=b"recipient")
    home, out = resources.settings.home, tmp_path / "out"
    args = ("share", "deliver", agreement, "--recipient", str(tmp_path / "r.pub"), "--out",
            str(out))
    kill_when(home, lambda: out.exists() and any(out.iterdir()), *args, role="operator")
    final = out / f"{agreement}-extract.parquet.c4gh"
    with resources.sessions() as session:
        recorded = session.scalars(select(Delivery)).all()
    assert recorded or not final.exists()  # a finished file always has its record
    done = finish(home, *args, role="operator")
    assert Path(done["out"]) == final and final.exists()
    destroy.destroy(resources, "agreement", agreement, "test")
    assert not any(out.iterdir())
