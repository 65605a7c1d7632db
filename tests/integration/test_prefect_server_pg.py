"""Production scheduling: the deployments of prefect.yaml registered on a real `prefect server`
backed by this machine's PostgreSQL, and a scheduled flow (the daily backup) run by a process
worker from the work pool, as README's production section documents (GB/T 39725 §11.3.4.6 b 4,
App. F: regular backups)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("SEQLIFE_TEST_PG_DSN",
                          "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


@pytest.fixture
def prefect_server(tmp_path: Path):
    """`prefect server start` on a fresh PostgreSQL database; yields the API URL and env."""
    database = f"seqlife_prefect_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SEQLIFE_"))}
    env.update({
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL":
            f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
    })
    (tmp_path / "prefect-home").mkdir()
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    import httpx

    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail("prefect server did not start on PostgreSQL; see server.log")
        time.sleep(0.5)
    client_env = {**env, "PREFECT_API_URL": api}
    client_env.pop("PREFECT_API_DATABASE_CONNECTION_URL")
    yield api, client_env
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def prefect(env: dict[str, str], *args: str, timeout: int = 300) -> str:
    result = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=env, text=True,
                            capture_output=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_scheduled_deployments_run_on_a_prefect_server_backed_by_postgresql(
        prefect_server, tmp_path: Path) -> None:
    api, env = prefect_server
    home = tmp_path / "seqlife-home"
    env = {**env, "SEQLIFE_REPO_DIR": str(ROOT), "SEQLIFE_HOME": str(home),
           "PYTHONPATH": str(ROOT)}
    prefect(env, "work-pool", "create", "seqlife", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--all")
    listed = prefect(env, "deployment", "ls")
    for name in ("backup", "destroy_sweep", "retention_review", "restore_drill",
                 "emergency_drill", "rotate_keys"):
        assert name in listed
    schedules = prefect(env, "deployment", "inspect", "backup/backup")
    assert "0 2 * * *" in schedules and "Asia/Shanghai" in schedules

    run = prefect(env, "deployment", "run", "backup/backup")
    run_id = next(line.split()[-1] for line in run.splitlines() if "UUID" in line)
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "seqlife",
                               "--type", "process"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        import httpx

        deadline = time.monotonic() + 240
        state = ""
        while time.monotonic() < deadline:
            state = httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]["type"]
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(1)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
    assert state == "COMPLETED"
    catalogues = list((home / "backups" / "data").glob("*/catalogue.json"))
    assert len(catalogues) == 1
    assert json.loads(catalogues[0].read_text())["catalogue"]["catalog"] == "catalog.db"
