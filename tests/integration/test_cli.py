"""The `seqlife` command as an operator uses it: a fresh home, real subprocesses, --json output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from infra.catalog import make_engine


def seqlife(home: Path, *args: str, role: str | None = None, **settings: str
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEQLIFE_", "PREFECT_"))}
    env["SEQLIFE_HOME"] = str(home)
    env.update({f"SEQLIFE_{name.upper()}": value for name, value in settings.items()})
    if role:
        env["SEQLIFE_ROLE"] = role
    return subprocess.run([sys.executable, "-m", "seqlife.cli", *args], env=env, text=True,
                          capture_output=True, timeout=600)


def test_help_documents_every_environment_variable(tmp_path: Path) -> None:
    out = seqlife(tmp_path, "--help").stdout
    for name in ("SEQLIFE_HOME", "SEQLIFE_DB_URL", "SEQLIFE_STORE_URL", "SEQLIFE_S3_ENDPOINT_URL",
                 "SEQLIFE_KEYSTORE_DIR", "SEQLIFE_TLS_CERT", "SEQLIFE_TLS_KEY",
                 "SEQLIFE_TRUSTED_PROXIES", "SEQLIFE_PLAIN_HTTP"):
        assert name in out


def test_usage_error_exits_2(tmp_path: Path) -> None:
    assert seqlife(tmp_path, "collect").returncode == 2


def test_demo_runs_the_lifecycle_from_an_empty_home(tmp_path: Path) -> None:
    """The README's first command: no server started by hand, embedded defaults only."""
    home = tmp_path / "fresh"
    result = seqlife(home, "demo", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(result.stdout)
    assert payload["audit_ok"] is True
    assert payload["collect"]["created"] is True and payload["collect"]["files"] > 0
    assert payload["steps"]["collect damaged copy"].startswith("refused as expected")
    assert (home / "catalog.db").exists() and (home / "store" / "objects").is_dir()
    assert (home / "keys").is_dir() and not (home / "store" / "keys").exists()
    listing = json.loads(seqlife(home, "datasets", "--json").stdout)
    versions = {(v["dataset"], v["version"], v["zone"]) for v in listing["versions"]}
    assert versions == {("demo-cohort", 1, "01_raw"),
                        ("demo-cohort--demo-project", 1, "03_deidentified")}
    assert payload["steps"]["deidentify + approve"].count("approved by committee") == 1
    assert "0 unmet" in payload["steps"]["certify"] and "verifies" in payload["steps"]["certify"]
    encrypted = re.search(r"(\d+) files sealed as Crypt4GH at intake .* "
                          r"(\d+)/(\d+) files read back", payload["steps"]["encrypt"])
    assert encrypted and len(set(encrypted.groups())) == 1, payload["steps"]["encrypt"]
    assert "Approved: 4 of 5" in payload["steps"]["share: request + review"]
    assert "traced to Fudan University" in payload["steps"]["share: trace a leak"]
    assert "nothing left" in payload["steps"]["destroy (sweep)"]
    assert payload["steps"]["restore drill"].startswith("passed")
    assert_no_identifier_or_key_leaks(home, result.stdout + result.stderr)


def test_demo_on_postgres_and_s3_leaves_nothing_in_clear(tmp_path: Path, pg_url: str,
                                                         s3_endpoint: str,
                                                         s3_store_url: str) -> None:
    """Issue 17 on the production settings: after the whole demo every object version in the
    bucket, every row of the PostgreSQL catalog (as pg_dump writes it) and every file under the
    home but the intake folder is free of identifiers and raw reads."""
    import boto3
    from sweep import bucket_places, findings

    from seqlife.deidentify.residual import Scanner

    home = tmp_path / "prod"
    settings = {"db_url": pg_url, "store_url": s3_store_url, "s3_endpoint_url": s3_endpoint}
    result = seqlife(home, "demo", "--json", **settings)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["audit_ok"] is True
    assert_no_identifier_or_key_leaks(home, result.stdout + result.stderr, **settings)

    needles = _demo_needles(home)
    dump = subprocess.run(["pg_dump", "--data-only", pg_url.replace("+psycopg", "")],
                          capture_output=True, check=True).stdout
    bucket = s3_store_url.removeprefix("s3://")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    places = [("pg_dump of the catalog", dump), *bucket_places(client, bucket)]
    assert len(places) > 50 and b"audit_events" in dump
    assert findings(places, Scanner.of(needles)) == []


def assert_no_identifier_or_key_leaks(home: Path, output: str, **settings: str) -> None:
    """GB/T 39725 §10.1 c, g, §10.2 a; SEQ §5 (issue 17): after the whole demo, no identifier of
    any subject (record number, name, resident ID, phone, e-mail, insurance number, street, the
    lab's sample ID) and no raw read is in clear anywhere under the home but the intake folder —
    catalog, store (every object version), lineage registry (workspace, git objects, DVC cache
    and remote), backups, scratch, key store, Prefect database — nor in what the run printed; no
    key material outside the key store."""
    import base64

    from sweep import findings, home_places

    from seqlife.deidentify.residual import Scanner

    needles = _demo_needles(home, with_samples=False)
    # the person at the terminal is told the lab's file name of a refused file; nothing else
    assert findings([("printed output", output.encode())], Scanner.of(needles)) == []
    needles = _demo_needles(home)
    scanner = Scanner.of(needles)
    places = list(home_places(home, skip=("demo",)))
    assert findings(places, scanner) == []
    assert findings([("canary", f"x{sorted(needles)[0]}y".encode())],
                    scanner)  # the sweep sees what it looks for

    keys = [p.read_bytes() for p in (home / "keys").glob("*.key")]
    secrets = [k for key in keys for k in (key, key.hex().encode(), base64.b64encode(key))]
    exposed = [where for where, blob in places
               if "keys" not in where.split("/") and any(s in blob for s in secrets)]
    assert exposed == []

    _lineage_traces_back(home, **settings)


def _demo_needles(home: Path, with_samples: bool = True) -> set[str]:
    """What the demo's delivery identifies its subjects by, and raw reads of its FASTQ files."""
    import csv

    from sweep import raw_reads

    cohort = home / "demo" / "cohort"
    with open(cohort / "clinical.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(cohort / "samples.csv", encoding="utf-8") as handle:
        samples = list(csv.DictReader(handle))
    needles = {row[c] for row in rows for c in ("mrn", "name", "id_number", "mobile", "email",
                                                  "insurance_no", "street")}
    reads = raw_reads(sorted((cohort / "seq").glob("*.fastq.gz")), per_file=50)
    assert len(needles) > 100 and len(reads) > 100
    return needles | reads | ({row["sample_id"] for row in samples} if with_samples else set())


def _lineage_traces_back(home: Path, **settings: str) -> None:
    # GB/T 39725 §11.3.4.6 b 2: the certified release traces back to the raw files, with hashes
    traced = seqlife(home, "lineage", "demo-cohort--demo-project@1", "--verify", "--json",
                     **settings)
    assert traced.returncode == 0, traced.stderr[-2000:]
    lineage = json.loads(traced.stdout)
    assert [s["verb"] for s in lineage["back"]] == ["deidentify", "collect"]
    assert [s["verb"] for s in lineage["forward"]] == ["deidentify"]
    assert lineage["problems"] == [] and lineage["grade"]["certified"] is True
    raw = {a["path"]: a["sha256"] for a in lineage["back"][1]["outputs"]}
    assert all(raw[a["path"]] == a["sha256"] for a in lineage["back"][0]["inputs"])
    wrong = seqlife(home, "lineage", "demo-cohort@x", **settings)
    assert wrong.returncode != 0 and "DATASET@N" in wrong.stderr
    readable = seqlife(home, "lineage", "demo-cohort", "--direction", "forward", **settings)
    assert readable.returncode == 0 and "raw -> derived" in readable.stdout


def test_audit_verify_names_the_first_broken_record(tmp_path: Path) -> None:
    home = tmp_path / "home"
    from infra.audit import AuditLog
    from infra.catalog import upgrade

    home.mkdir()
    engine = make_engine(f"sqlite:///{home / 'catalog.db'}")
    upgrade(engine)
    log = AuditLog(engine, "alice", "steward")
    for n in range(4):
        log.append("collect.register", f"dataset:d{n}", "ok")
    assert seqlife(home, "audit", "verify", "--json").returncode == 0
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER audit_events_no_update"))
        connection.execute(text("UPDATE audit_events SET object = 'dataset:other' WHERE seq = 3"))
    engine.dispose()
    result = seqlife(home, "audit", "verify", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["first_bad_seq"] == 3 and "changed" in report["problem"]


def test_synth_json_summary(tmp_path: Path) -> None:
    result = seqlife(tmp_path, "synth", str(tmp_path / "c"), "--subjects", "5", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["subjects"] == 5


def test_encrypt_and_decrypt_files_with_keygen_format_keys(tmp_path: Path) -> None:
    """`seqlife keys generate`, `encrypt --recipient`, `decrypt --key`; a wrong key or a cut file
    exits 1 with a typed message and leaves no partial output (GB/T 39725 §10.1 h)."""
    home = tmp_path / "home"
    for who in ("alice", "bob"):
        made = seqlife(home, "keys", "generate", "--sk", str(tmp_path / f"{who}.sec"), "--pk",
                       str(tmp_path / f"{who}.pub"), "--nocrypt", "--json")
        assert made.returncode == 0, made.stderr
    plain = tmp_path / "reads.bin"
    plain.write_bytes(os.urandom(300_000))
    sealed = seqlife(home, "encrypt", str(plain), "--out", str(tmp_path / "reads.c4gh"),
                     "--recipient", str(tmp_path / "alice.pub"), "--json")
    assert sealed.returncode == 0, sealed.stderr
    assert json.loads(sealed.stdout)["size"] == 300_000
    opened = seqlife(home, "decrypt", str(tmp_path / "reads.c4gh"), "--out",
                     str(tmp_path / "back.bin"), "--key", str(tmp_path / "alice.sec"))
    assert opened.returncode == 0, opened.stderr
    assert (tmp_path / "back.bin").read_bytes() == plain.read_bytes()

    wrong = seqlife(home, "decrypt", str(tmp_path / "reads.c4gh"), "--out",
                    str(tmp_path / "wrong.bin"), "--key", str(tmp_path / "bob.sec"), "--json")
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["error"] == "WrongKey"
    assert not (tmp_path / "wrong.bin").exists()
    cut = tmp_path / "cut.c4gh"
    cut.write_bytes((tmp_path / "reads.c4gh").read_bytes()[:-100])
    truncated = seqlife(home, "decrypt", str(cut), "--out", str(tmp_path / "cut.bin"), "--key",
                        str(tmp_path / "alice.sec"), "--json")
    assert truncated.returncode == 1 and json.loads(truncated.stdout)["error"] == "Truncated"
    assert not (tmp_path / "cut.bin").exists()


def test_a_command_outside_the_role_is_refused_and_audited(tmp_path: Path) -> None:
    """GB/T 39725 §9.2, §11.1.2.4: the security administrator cannot read the audit trail and
    the auditor cannot destroy keys; each refusal is recorded."""
    home = tmp_path / "home"
    assert seqlife(home, "datasets", "--json").returncode == 0  # creates the catalog
    refused = seqlife(home, "keys", "shred", "cohort", "--reason", "x", "--json", role="auditor")
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"] == "PolicyViolation"
    assert seqlife(home, "audit", "log", "--json", role="security_admin").returncode == 1
    log = json.loads(seqlife(home, "audit", "log", "--json", role="auditor").stdout)
    denied = [e for e in log["entries"] if e["action"] == "access.denied"]
    assert [e["object"] for e in denied] == ["command:keys.shred", "command:audit.log"]
