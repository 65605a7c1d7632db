"""The lineage registry on real git + real DVC, against the local store and SeaweedFS S3 over HTTP:
results traceable back to raw data (GB/T 39725 §11.3.4.6 b 2), shared data traceable (§11.3.4.8 c)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from infra.lineage import LineageRegistry
from infra.objectstore import open_store
from seqlife.exceptions import IntegrityError
from seqlife.lineage import (
    Artifact,
    LineageStage,
    build_graph,
    chain_back,
    chain_forward,
    render_dvc_lock,
    stage_name,
)
from seqlife.settings import Settings

POLICY = "c0ffee" * 10 + "c0de"
CONSENTS = b"subject,scope,signed_on\nS-1,research,2026-01-02\n"
RAW = {
    "tables/clinical.csv": b"mrn,age,diagnosis\nMRN0001,43,C50.9\n",
    "tables/consents.csv": CONSENTS,
    "seq/S1.vcf": b"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n",
}
DERIVED = {
    "tables/clinical.csv": b"surrogate,age,diagnosis\nXQZ,40-49,C50\n",
    "tables/consents.csv": CONSENTS,  # byte-identical to a raw file: one DVC object, two owners
    "seq/XQZ.vcf": b"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tXQZ\n",
}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def write(directory: Path, files: dict[str, bytes]) -> tuple[dict[str, Path], dict[str, str]]:
    paths, hashes = {}, {}
    for relative, data in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[relative], hashes[relative] = path, hashlib.sha256(data).hexdigest()
    return paths, hashes


def record_collect_and_deidentify(registry: LineageRegistry, tmp: Path
                                  ) -> tuple[LineageStage, LineageStage]:
    raw_files, raw_sha = write(tmp / "raw", RAW)
    collect = LineageStage(
        stage_name("collect", "cohort", 1), "collect", (),
        tuple(Artifact("cohort", 1, p, raw_sha[p]) for p in RAW), "flow-run-collect", POLICY,
        {"dataset": "cohort", "scenario": "research"})
    registry.record(collect, raw_files)
    derived_files, derived_sha = write(tmp / "derived", DERIVED)
    deidentify = LineageStage(
        stage_name("deidentify", "cohort--p1", 1), "deidentify",
        tuple(Artifact("cohort", 1, p, raw_sha[p]) for p in RAW),
        tuple(Artifact("cohort--p1", 1, p, derived_sha[p]) for p in DERIVED),
        "flow-run-deidentify", POLICY, {"dataset": "cohort", "project": "p1"})
    registry.record(deidentify, derived_files)
    return collect, deidentify


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def settings(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch
             ) -> Settings:
    """Settings for the embedded local store, or for a fresh versioned SeaweedFS bucket."""
    if request.param == "s3":
        endpoint, url = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_store_url")
        monkeypatch.setenv("SEQLIFE_STORE_URL", url)
        monkeypatch.setenv("SEQLIFE_S3_ENDPOINT_URL", endpoint)
        open_store(url, endpoint)  # creates the bucket with versioning on
    return Settings.from_env()


def remote_keys(settings: Settings) -> set[str]:
    """Current (not noncurrent) object keys under the DVC prefix of the store."""
    store = open_store(settings.store_url, settings.s3_endpoint_url)
    if settings.store_url.startswith("file://"):
        root = Path(store.root) / "dvc-remote"  # type: ignore[attr-defined]
        return {f"dvc-remote/{p.relative_to(root).as_posix()}" for p in root.rglob("*")
                if p.is_file()}
    pages = store.client.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
        Bucket=store.bucket, Prefix="dvc/")  # type: ignore[attr-defined]
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def test_local_registry_records_stages_and_walks_back_to_raw_files(home: Path, tmp_path: Path
                                                                   ) -> None:
    settings = Settings.from_env()
    registry = LineageRegistry.open(settings)
    collect, deidentify = record_collect_and_deidentify(registry, tmp_path)

    assert registry.stages() == [collect, deidentify]
    graph = build_graph(registry.stages())
    back = chain_back(graph, "cohort--p1", 1)
    assert [s.name for s in back] == [deidentify.name, collect.name]
    assert {a.path: a.sha256 for a in back[-1].outputs} == \
        {p: hashlib.sha256(d).hexdigest() for p, d in RAW.items()}
    assert (back[0].flow_run_id, back[0].policy_hash) == ("flow-run-deidentify", POLICY)
    forward = chain_forward(graph, "cohort", 1, "tables/clinical.csv")
    assert ("cohort--p1", 1) in forward[-1].output_versions

    # The DVC remote is a plain directory beside the versioned object layout.
    wanted = {registry.remote.key_of(md5(d)) for d in [*RAW.values(), *DERIVED.values()]}
    assert remote_keys(settings) == wanted and len(wanted) == 5
    assert all(k.startswith("dvc-remote/files/md5/") for k in wanted)

    # One commit per stage after the set-up commit; metadata in the commit message.
    assert registry.commits() == [f"lineage: deidentify {deidentify.name}",
                                  f"lineage: collect {collect.name}",
                                  f"lineage: registry set up, DVC remote {registry.remote.url}"]
    body = subprocess.run(["git", "log", "-1", "--format=%B"], cwd=registry.root, text=True,
                          capture_output=True, check=True).stdout
    assert "Flow-Run: flow-run-deidentify" in body and f"Policy-Hash: {POLICY}" in body

    # DVC accepts the files: clean status, the DAG has the edge, its lock is ours.
    from dvc.repo import Repo

    with Repo(str(registry.root)) as repo:
        assert repo.status() == {}
        assert len(repo.index.graph.edges) == 1
    dag = subprocess.run([str(Path(sys.executable).parent / "dvc"), "dag", "--dot"],
                         cwd=registry.root, text=True, capture_output=True, check=True).stdout
    assert f'"{collect.name}" -> "{deidentify.name}"' in dag
    assert yaml.safe_load((registry.root / "dvc.lock").read_text()) == \
        render_dvc_lock(registry.stages())
    dvc_yaml = yaml.safe_load((registry.root / "dvc.yaml").read_text())
    assert dvc_yaml["stages"][collect.name]["meta"]["seqlife"]["flow_run_id"] == "flow-run-collect"
    assert registry.verify("cohort", 1, deep=True) == []
    assert registry.verify("cohort--p1", 1) == []

    # Opening again and recording the same stage again change nothing (retry-safe).
    again = LineageRegistry.open(settings)
    assert again.record(collect, {}).pushed == 0
    assert again.record(deidentify, dict(write(tmp_path / "again", DERIVED)[0])).pushed == 0
    assert len(again.commits()) == 3

    from tasks.lineage import lineage_of

    res = SimpleNamespace(settings=settings)
    assert [s.name for s in lineage_of.fn(res, "cohort", 1, "forward")] == \
        [collect.name, deidentify.name]


def test_record_refuses_file_with_other_bytes_and_changes_nothing(home: Path, tmp_path: Path
                                                                  ) -> None:
    registry = LineageRegistry.open(Settings.from_env())
    files, hashes = write(tmp_path, {"t.csv": b"a,b\n"})
    files["t.csv"].write_bytes(b"a,b\nchanged after hashing\n")
    stage = LineageStage("collect-x-v1", "collect", (), (Artifact("x", 1, "t.csv", hashes["t.csv"]),),
                         "run", POLICY, {})
    with pytest.raises(IntegrityError, match="does not match the SHA-256"):
        registry.record(stage, files)
    assert registry.stages() == [] and len(registry.commits()) == 1
    assert not (registry.root / "data" / "x").exists()
    assert subprocess.run(["git", "status", "--porcelain"], cwd=registry.root, text=True,
                          capture_output=True, check=True).stdout == ""


@pytest.mark.s3
def test_s3_registry_pushes_objects_under_the_dvc_prefix(home: Path, tmp_path: Path,
                                                         s3_endpoint: str, s3_store_url: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQLIFE_STORE_URL", s3_store_url)
    monkeypatch.setenv("SEQLIFE_S3_ENDPOINT_URL", s3_endpoint)
    open_store(s3_store_url, s3_endpoint)
    settings = Settings.from_env()
    registry = LineageRegistry.open(settings)
    collect, deidentify = record_collect_and_deidentify(registry, tmp_path)

    assert registry.remote.url == f"{s3_store_url}/dvc"
    assert remote_keys(settings) == {
        f"dvc/files/md5/{m[:2]}/{m[2:]}" for m in {md5(d) for d in [*RAW.values(), *DERIVED.values()]}}
    config = (registry.root / ".dvc" / "config").read_text()
    assert f"endpointurl = {s3_endpoint}" in config
    for path in (registry.root / ".dvc").glob("config*"):
        assert "seqlife-test-secret" not in path.read_text()  # credentials only from AWS_*
    assert registry.verify("cohort--p1", 1, deep=True) == []
    back = chain_back(build_graph(registry.stages()), "cohort--p1", 1)
    assert back[-1] == collect


def test_verify_reports_object_deleted_from_remote(settings: Settings, tmp_path: Path) -> None:
    registry = LineageRegistry.open(settings)
    record_collect_and_deidentify(registry, tmp_path)
    key = registry.remote.key_of(md5(DERIVED["seq/XQZ.vcf"]))
    store = open_store(settings.store_url, settings.s3_endpoint_url)
    if settings.store_url.startswith("file://"):
        (Path(store.root) / key).unlink()  # type: ignore[attr-defined]
    else:
        store.client.delete_object(Bucket=store.bucket, Key=key)  # type: ignore[attr-defined]

    problems = registry.verify("cohort--p1", 1)
    assert problems == [f"remote: data/cohort--p1/v1/seq/XQZ.vcf (md5 {md5(DERIVED['seq/XQZ.vcf'])})"
                        f" is missing from {registry.remote.url}."]
    assert registry.verify("cohort", 1) == []


def test_verify_reports_workspace_file_altered(home: Path, tmp_path: Path) -> None:
    registry = LineageRegistry.open(Settings.from_env())
    record_collect_and_deidentify(registry, tmp_path)
    target = registry.root / "data/cohort/v1/tables/clinical.csv"
    target.chmod(0o644)
    target.write_bytes(b"mrn,age\nMRN0001,44\n")  # a hardlink: the cache copy is hit as well
    problems = registry.verify("cohort", 1)
    assert "workspace: data/cohort/v1/tables/clinical.csv does not match its recorded SHA-256." \
        in problems


def test_forget_removes_bytes_from_workspace_cache_and_remote_but_keeps_lineage(
        settings: Settings, tmp_path: Path) -> None:
    registry = LineageRegistry.open(settings)
    collect, deidentify = record_collect_and_deidentify(registry, tmp_path)
    shared = registry.remote.key_of(md5(CONSENTS))

    freed = registry.forget("cohort", 1, reason="retention period ended")

    assert sorted(freed) == sorted(registry.remote.key_of(md5(RAW[p]))
                                   for p in ("tables/clinical.csv", "seq/S1.vcf"))
    assert not (registry.root / "data" / "cohort").exists()
    cache = registry.root / ".dvc" / "cache" / "files" / "md5"
    cached = {f"{p.parent.name}{p.name}" for p in cache.rglob("*") if p.is_file()}
    assert cached == {md5(d) for d in DERIVED.values()}  # consents kept: the derived copy uses it
    keys = remote_keys(settings)
    assert not set(freed) & keys and shared in keys
    assert registry.verify("cohort--p1", 1) == []
    assert registry.verify("cohort", 1)[0].startswith("cohort v1 was forgotten on ")
    assert registry.forget("cohort", 1) == []  # idempotent

    # The lineage stays: the derived version still traces back to the raw hashes.
    assert registry.stages() == [collect, deidentify]
    assert chain_back(build_graph(registry.stages()), "cohort--p1", 1)[-1] == collect
    assert registry.forgotten()[("cohort", 1)]["reason"] == "retention period ended"
    assert registry.commits()[0] == "lineage: forget cohort v1"
    from dvc.repo import Repo

    with Repo(str(registry.root)) as repo:
        assert repo.status() == {}

    if settings.store_url.startswith("s3://"):
        # Versioned bucket: the delete left noncurrent versions; destroy purges them by key.
        store = open_store(settings.store_url, settings.s3_endpoint_url)
        assert {v.key for v in store.list_versions("dvc/")} >= set(freed)
        assert all(store.purge(key) >= 1 for key in freed)
        assert not {v.key for v in store.list_versions("dvc/")} & set(freed)


@pytest.mark.parametrize("lock", ["index.lock", "config.lock", "refs/heads/main.lock"])
def test_a_git_lock_left_by_a_killed_process_does_not_block_the_registry(
        home: Path, tmp_path: Path, lock: str) -> None:
    """A process killed mid-commit (or mid config write) leaves a git lock file; the next run
    under the registry's own lock clears it and records (GB/T 39725 §11.3.4.5 d: resumes after a
    crash; the fault test once killed destroy while git held config.lock)."""
    registry = LineageRegistry.open(Settings.from_env())
    collect, _ = record_collect_and_deidentify(registry, tmp_path)
    (registry.root / ".git" / lock).parent.mkdir(parents=True, exist_ok=True)
    (registry.root / ".git" / lock).write_text("")
    registry.forget(collect.outputs[0].dataset, collect.outputs[0].version, "test")
    assert (collect.outputs[0].dataset, collect.outputs[0].version) in registry.forgotten()
