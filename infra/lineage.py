"""The lineage registry: a git repository plus DVC under ``$SEQLIFE_HOME/registry``.

Layout of the registry (every file but ``data/`` is committed to git, one commit per stage)::

    registry/
      lineage.json   the complete lineage, every stage ever recorded and which versions were
                     forgotten; ``stages()`` reads it. It never shrinks: a forgotten (destroyed)
                     version keeps its record and hashes, only its bytes go.
      dvc.yaml       rendered from lineage.json: one frozen stage per flow run, ``deps``/``outs``
                     for the artifacts that still exist, SHA-256s, flow-run id, policy hash and
                     parameters under ``meta``
      dvc.lock       rendered from lineage.json: MD5 + size of every dep and out (schema 2.0)
      data/<dataset>/v<version>/<path>   the bytes (git-ignored; DVC cache + remote hold them)

Why a sidecar: DVC takes a stage with neither deps nor outs for an always-changed callback, so a
raw version that was destroyed cannot stay in ``dvc.yaml`` -- but its lineage must stay on record.

The DVC remote is the object store: ``s3://bucket[/prefix]`` -> ``s3://bucket/<prefix>/dvc`` with
the endpoint from settings (credentials only from the ``AWS_*`` environment, never written to any
config); ``file://<root>`` -> the plain directory ``<root>/dvc-remote``, beside (not inside) the
versioned object layout of ``LocalObjectStore``.

DVC is driven through its Python API on absolute targets, so the process working directory is
never changed (Prefect runs tasks in threads; ``os.chdir`` would move them all). Every operation
holds an exclusive ``flock`` on ``$SEQLIFE_HOME/registry.lock``: recording is serialised across
threads and processes, and DVC's own repository lock is never contended.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse

import yaml

from seqlife.exceptions import IntegrityError, StorageError, StorageUnavailable
from seqlife.lineage import (
    DATA_DIR,
    Artifact,
    ArtifactNotRecorded,
    LineageError,
    LineageGraph,
    LineageStage,
    VersionKey,
    build_graph,
    check_new_stage,
    dump_lineage,
    load_lineage,
    render_dvc_lock,
    render_dvc_yaml,
    with_recorded_inputs,
)
from seqlife.settings import Settings

REMOTE_NAME = "store"
CHUNK = 1 << 20
_QUIET_LOGGERS = ("dvc", "dvc_data", "dvc_objects", "scmrepo")
_GIT_IDENTITY = {"user.name": "seqlife", "user.email": "seqlife@localhost"}


@dataclass(frozen=True)
class Recorded:
    """What ``record`` did: the stage as stored (MD5s filled in), its git commit, objects pushed."""

    stage: LineageStage
    commit: str
    pushed: int


@dataclass(frozen=True)
class Remote:
    """Where DVC pushes: its URL, the S3 endpoint, and its key prefix inside the object store."""

    url: str
    endpoint_url: str | None
    store_prefix: str

    def key_of(self, md5: str) -> str:
        """The object-store key (relative to the store root) DVC 3 keeps ``md5`` under."""
        return f"{self.store_prefix}/files/md5/{md5[:2]}/{md5[2:]}"


def remote_for(store_url: str, endpoint_url: str | None) -> Remote:
    """The DVC remote that goes with the object store at ``store_url``."""
    parsed = urlparse(store_url)
    if parsed.scheme == "s3":
        prefix = parsed.path.strip("/")
        return Remote(f"s3://{parsed.netloc}/" + (f"{prefix}/" if prefix else "") + "dvc",
                      endpoint_url, "dvc")
    if parsed.scheme == "file":
        return Remote(str(Path(parsed.path) / "dvc-remote"), None, "dvc-remote")
    raise StorageError(f"Unsupported store URL scheme '{parsed.scheme}' for the lineage remote.")


@contextmanager
def _quiet() -> Iterator[None]:
    """Keep DVC's info messages and progress bars out of seqlife's output."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _usable_aws_config_file(empty: Path) -> None:
    """Point ``AWS_CONFIG_FILE`` at an empty regular file when it names a special one.

    DVC gotcha: dvc-s3 checks ``os.path.exists(AWS_CONFIG_FILE)`` and then botocore's
    ``load_config`` demands a regular file, so the common "no config" setting
    ``AWS_CONFIG_FILE=/dev/null`` makes every S3 push fail with ``ConfigNotFound``. An empty
    regular file means the same thing to every AWS client, so the swap changes nothing else.
    """
    current = os.environ.get("AWS_CONFIG_FILE")
    if current and os.path.exists(current) and not os.path.isfile(current):
        if not empty.is_file():
            empty.write_text("", encoding="utf-8")
        os.environ["AWS_CONFIG_FILE"] = str(empty)


def _hash_file(path: Path) -> tuple[str, str, int]:
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), md5.hexdigest(), size


class LineageRegistry:
    """A DVC data registry recording every stage's inputs and outputs, pushed to the object store."""

    def __init__(self, root: Path, remote: Remote, actor: str = "seqlife") -> None:
        self.root = Path(root)
        self.remote = remote
        self.actor = actor
        self._lock_path = self.root.with_name(self.root.name + ".lock")

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings) -> "LineageRegistry":
        """The registry under ``settings.home``; created (git + ``dvc init``) on first use, and its
        remote (re)pointed at the store named by ``settings``."""
        os.environ.setdefault("DVC_NO_ANALYTICS", "1")
        registry = cls(settings.home / "registry",
                       remote_for(settings.store_url, settings.s3_endpoint_url), settings.actor)
        with registry._locked():
            registry._ensure()
        return registry

    def _ensure(self) -> None:
        from dvc.repo import Repo

        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / ".git").exists():
            self._git("init", "-q", "-b", "main")
        for key, value in _GIT_IDENTITY.items():
            self._git("config", key, value)
        if not (self.root / ".dvc").exists():
            with _quiet():
                Repo.init(str(self.root)).close()
        wanted = {"url": self.remote.url}
        if self.remote.endpoint_url:
            wanted["endpointurl"] = self.remote.endpoint_url
        with self._dvc() as repo:
            shared, local = repo.config.read("repo"), repo.config.read("local")
            if (shared.get("remote", {}).get(REMOTE_NAME) != wanted
                    or shared.get("core", {}).get("remote") != REMOTE_NAME
                    or shared.get("core", {}).get("analytics") is not False):
                with repo.config.edit("repo") as config:
                    config["remote"][REMOTE_NAME] = wanted
                    config["core"]["remote"] = REMOTE_NAME
                    config["core"]["analytics"] = False
                    config["core"]["autostage"] = False
                    # Link, never copy, workspace files to the cache: one copy of a BAM on disk.
                    config["cache"]["type"] = "reflink,hardlink,copy"
            site = str(self.root / ".dvc" / "tmp" / "site")  # not /var/tmp/dvc: stay in our home
            if local.get("core", {}).get("site_cache_dir") != site:
                with repo.config.edit("local") as config:
                    config["core"]["site_cache_dir"] = site
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            ignore.write_text(f"/{DATA_DIR}/\n", encoding="utf-8")
        if not (self.root / "lineage.json").exists():
            self._write([], {})
        if self._git("status", "--porcelain").strip():
            first = not self._git("rev-parse", "--verify", "-q", "HEAD", check=False).strip()
            self._git("add", "-A")
            self._commit(f"lineage: registry set up, DVC remote {self.remote.url}" if first else
                         f"lineage: DVC remote set to {self.remote.url}")

    # --- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            # Every git call in the registry runs under this lock, so a git lock file found now
            # (index, config, HEAD, a ref) was left by a process killed mid-write; it would block
            # every later record.
            git = self.root / ".git"
            for stale in (*git.glob("*.lock"), *git.glob("refs/**/*.lock")):
                stale.unlink(missing_ok=True)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _dvc(self) -> Iterator[Any]:
        from dvc.repo import Repo

        _usable_aws_config_file(self.root.with_name("registry.aws-config"))
        with _quiet():
            repo = Repo(str(self.root))
            try:
                yield repo
            finally:
                repo.close()

    def _git(self, *args: str, check: bool = True) -> str:
        env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
        result = subprocess.run(
            ["git", "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", *args],
            cwd=self.root, env=env, capture_output=True, text=True)
        if result.returncode != 0 and check:
            raise LineageError(f"git {args[0]} failed in the lineage registry {self.root}: "
                               f"{result.stderr.strip()[:500]}")
        return result.stdout

    def _commit(self, message: str) -> str:
        self._git("commit", "-q", "-m", f"{message}\n\nActor: {self.actor}")
        return self._git("rev-parse", "HEAD").strip()

    def _target(self, name: str) -> str:
        return f"{self.root / 'dvc.yaml'}:{name}"

    def _load(self) -> tuple[list[LineageStage], dict[VersionKey, dict[str, str]]]:
        path = self.root / "lineage.json"
        if not path.exists():
            return [], {}
        return load_lineage(json.loads(path.read_text(encoding="utf-8")))

    def _write(self, stages: list[LineageStage], forgotten: Mapping[VersionKey, Mapping[str, str]]
               ) -> None:
        files = {
            "lineage.json": json.dumps(dump_lineage(stages, forgotten), indent=1) + "\n",
            "dvc.yaml": yaml.safe_dump(render_dvc_yaml(stages, forgotten), sort_keys=False),
            "dvc.lock": yaml.safe_dump(render_dvc_lock(stages, forgotten), sort_keys=False),
        }
        for name, text in files.items():
            tmp = self.root / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.root / name)

    def _cache_path(self, repo: Any, md5: str) -> Path:
        return Path(repo.cache.local.oid_to_path(md5))

    # --- reading ---------------------------------------------------------------------------

    def stages(self) -> list[LineageStage]:
        """Every stage ever recorded, in record order, read from ``lineage.json``."""
        with self._locked():
            return self._load()[0]

    def graph(self) -> LineageGraph:
        return build_graph(self.stages())

    def forgotten(self) -> dict[VersionKey, dict[str, str]]:
        """Versions whose bytes were removed: (dataset, version) -> {at, reason}."""
        with self._locked():
            return self._load()[1]

    def commits(self) -> list[str]:
        """Subjects of the registry's git log, newest first."""
        return self._git("log", "--format=%s").splitlines()

    # --- recording -------------------------------------------------------------------------

    def record(self, stage: LineageStage, files: Mapping[str, Path]) -> Recorded:
        """Record ``stage``: bring its outputs in, let DVC cache them, commit, push to the store.

        Args:
            stage: the run; its inputs must be outputs of stages recorded before.
            files: the bytes of each output, keyed by ``Artifact.path`` (or by its workspace path
                ``data/<dataset>/v<version>/<path>`` when two outputs share a path).
        Returns:
            The stage as stored, the git commit that records it, how many objects were pushed.
        Raises:
            LineageError: the stage would break the graph, or DVC hashed the bytes differently.
            IntegrityError: a file does not match its artifact's SHA-256; nothing was recorded.
            StorageUnavailable: the push failed. The stage *is* recorded and committed; calling
                ``record`` again with the same stage only pushes (it is idempotent).
        """
        with self._locked():
            stages, forgotten = self._load()
            graph = build_graph(stages)
            existing = graph.by_name.get(stage.name)
            if existing is not None:
                if existing != stage:
                    raise LineageError(f"A different lineage stage named {stage.name} is already "
                                       "recorded; recorded stages are never rewritten.")
                return Recorded(existing, self._git("rev-parse", "HEAD").strip(),
                                self._push(existing, forgotten))
            check_new_stage(graph, stage, forgotten)
            sources = self._sources(stage, files)
            stage = with_recorded_inputs(graph, stage)
            created: list[Path] = []
            referenced = {a.md5 for s in stages for a in s.outputs}
            try:
                outputs = tuple(self._bring_in(artifact, sources[artifact], created)
                                for artifact in stage.outputs)
                stage = replace(stage, outputs=outputs)
                self._write(stages + [stage], forgotten)
                self._dvc_commit(stage)
                self._git("add", "-A")
                commit = self._commit(self._message(stage))
            except BaseException:
                self._roll_back(stage, created, {a.md5 for a in stage.outputs if a.md5} - referenced)
                raise
            return Recorded(stage, commit, self._push(stage, forgotten))

    def _sources(self, stage: LineageStage, files: Mapping[str, Path]) -> dict[Artifact, Path]:
        by_path: dict[str, list[Artifact]] = {}
        for artifact in stage.outputs:
            by_path.setdefault(artifact.path, []).append(artifact)
        sources: dict[Artifact, Path] = {}
        used: set[str] = set()
        for artifact in stage.outputs:
            for key in (artifact.workspace_path, artifact.path):
                if key in files and (key != artifact.path or len(by_path[key]) == 1):
                    sources[artifact] = Path(files[key])
                    used.add(key)
                    break
            else:
                raise LineageError(f"Stage {stage.name}: no file given for output "
                                   f"{artifact.dataset} v{artifact.version} {artifact.path}.")
        if set(files) - used:
            raise LineageError(f"Stage {stage.name}: files given for no declared output: "
                               + ", ".join(sorted(set(files) - used)[:5]) + ".")
        return sources

    def _bring_in(self, artifact: Artifact, source: Path, created: list[Path]) -> Artifact:
        """Copy one output into the workspace, checking its SHA-256 and computing DVC's MD5."""
        target = self.root / artifact.workspace_path
        target.parent.mkdir(parents=True, exist_ok=True)
        sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
        with open(source, "rb") as src, tempfile.NamedTemporaryFile(
                dir=target.parent, prefix=".incoming-", delete=False) as tmp:
            try:
                while chunk := src.read(CHUNK):
                    sha.update(chunk)
                    md5.update(chunk)
                    size += len(chunk)
                    tmp.write(chunk)
            except BaseException:
                os.unlink(tmp.name)
                raise
        if sha.hexdigest() != artifact.sha256:
            os.unlink(tmp.name)
            raise IntegrityError(
                f"{artifact.dataset} v{artifact.version} {artifact.path}: the file given does not "
                "match the SHA-256 recorded for it; nothing of this stage was recorded.",
                key=artifact.workspace_path)
        if target.exists():  # left over by an interrupted attempt; never a recorded output
            target.unlink()
        os.replace(tmp.name, target)
        created.append(target)
        return replace(artifact, md5=md5.hexdigest(), size=size)

    def _dvc_commit(self, stage: LineageStage) -> None:
        """``dvc commit`` without force: DVC re-hashes the workspace and refuses if our lock lies."""
        from dvc.exceptions import DvcException

        try:
            with self._dvc() as repo:
                repo.commit(self._target(stage.name))
        except DvcException as exc:
            raise LineageError(f"DVC refused to commit stage {stage.name}: {exc}. The MD5s it "
                               "computed differ from the ones recorded; nothing was recorded."
                               ) from exc

    def _message(self, stage: LineageStage) -> str:
        made = ", ".join(f"{d} v{v}" for d, v in stage.output_versions)
        lines = [f"lineage: {stage.stage} {stage.name}", "",
                 f"Outputs: {made} ({len(stage.outputs)} files)"]
        if stage.inputs:
            lines.append("Inputs: " + ", ".join(f"{d} v{v}" for d, v in stage.input_versions)
                         + f" ({len(stage.inputs)} files)")
        lines += [f"Flow-Run: {stage.flow_run_id or '-'}", f"Policy-Hash: {stage.policy_hash}"]
        return "\n".join(lines)

    def _roll_back(self, stage: LineageStage, created: list[Path], new_md5s: set[str]) -> None:
        """Undo a record that failed before its commit: our files, our cache objects, the index."""
        for path in created:
            path.unlink(missing_ok=True)
        self._prune_dirs([self.root / a.workspace_path for a in stage.outputs])
        tracked = set(self._git("ls-tree", "--name-only", "HEAD").split())
        self._git("reset", "-q")
        for name in ("lineage.json", "dvc.yaml", "dvc.lock"):
            if name in tracked:
                self._git("checkout", "HEAD", "--", name)
            else:
                (self.root / name).unlink(missing_ok=True)
        with self._dvc() as repo:
            for md5 in new_md5s:
                self._cache_path(repo, md5).unlink(missing_ok=True)

    def _prune_dirs(self, paths: list[Path]) -> None:
        data = self.root / DATA_DIR
        for path in paths:
            parent = path.parent
            while parent != data and data in parent.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def _push(self, stage: LineageStage, forgotten: Mapping[VersionKey, Any]) -> int:
        from dvc.exceptions import DvcException

        if all(a.version_key in forgotten for a in stage.outputs):
            return 0
        try:
            with self._dvc() as repo:
                return int(repo.push(targets=[self._target(stage.name)]) or 0)
        except DvcException as exc:
            raise StorageUnavailable(
                f"Stage {stage.name} is recorded but its data could not be pushed to "
                f"{self.remote.url} ({exc}); record it again to retry the push.") from exc

    # --- checking --------------------------------------------------------------------------

    def verify(self, dataset: str, version: int, *, deep: bool = False) -> list[str]:
        """Problems with ``dataset`` v``version`` in the registry; an empty list means sound.

        For every output file: the ``dvc.lock`` entry agrees with the lineage record, the
        workspace file exists and matches its SHA-256, the DVC cache holds it unaltered, and the
        remote holds it (with ``deep=True`` its remote bytes are read back and MD5-checked).
        """
        with self._locked():
            stages, forgotten = self._load()
            graph = build_graph(stages)
            names = graph.producers_of(dataset, version)
            if not names:
                return [f"{dataset} v{version} is not in the lineage registry."]
            if (dataset, version) in forgotten:
                return [f"{dataset} v{version} was forgotten on {forgotten[(dataset, version)]['at']};"
                        " its bytes are gone and only its lineage record remains."]
            artifacts = [a for n in names for a in graph.by_name[n].outputs
                         if a.version_key == (dataset, version)]
            lock = yaml.safe_load((self.root / "dvc.lock").read_text(encoding="utf-8")) or {}
            locked = {entry["path"]: entry.get("md5") for s in lock.get("stages", {}).values()
                      for entry in s.get("outs", [])}
            problems: list[str] = []
            with self._dvc() as repo:
                odb = repo.cloud.get_remote_odb(REMOTE_NAME)
                for artifact in artifacts:
                    problems += self._check(repo, odb, artifact, locked, deep)
            return problems

    def _check(self, repo: Any, odb: Any, artifact: Artifact, locked: Mapping[str, Any],
               deep: bool) -> list[str]:
        where = artifact.workspace_path
        problems = []
        if locked.get(where) != artifact.md5:
            problems.append(f"dvc.lock: {where} is not locked at the recorded MD5 {artifact.md5}.")
        workspace = self.root / where
        if not workspace.exists():
            problems.append(f"workspace: {where} is missing.")
        elif _hash_file(workspace)[0] != artifact.sha256:
            problems.append(f"workspace: {where} does not match its recorded SHA-256.")
        cached = self._cache_path(repo, artifact.md5)
        if not cached.exists():
            problems.append(f"cache: {where} (md5 {artifact.md5}) is missing from the DVC cache.")
        elif not (workspace.exists() and os.path.samefile(workspace, cached)) and \
                _hash_file(cached)[1] != artifact.md5:
            problems.append(f"cache: {where} (md5 {artifact.md5}) was altered in the DVC cache.")
        try:
            present = odb.exists(artifact.md5)
            if present and deep:
                digest = hashlib.md5()
                with odb.fs.open(odb.oid_to_path(artifact.md5), "rb") as handle:
                    while chunk := handle.read(CHUNK):
                        digest.update(chunk)
                if digest.hexdigest() != artifact.md5:
                    problems.append(f"remote: {where} (md5 {artifact.md5}) was altered in "
                                    f"{self.remote.url}.")
        except OSError as exc:
            raise StorageUnavailable(f"The lineage remote {self.remote.url} cannot be read "
                                     f"({exc.__class__.__name__}); retry later.") from exc
        if not present:
            problems.append(f"remote: {where} (md5 {artifact.md5}) is missing from "
                            f"{self.remote.url}.")
        return problems

    # --- forgetting ------------------------------------------------------------------------

    def remote_keys_of(self, dataset: str, version: int) -> list[str]:
        """The store keys of the DVC remote objects only ``dataset`` v``version`` uses (bytes no
        other live version shares), computed from the record so it holds before and after
        :meth:`forget`: a destruction that crashed in between still knows what to purge."""
        with self._locked():
            stages, forgotten = self._load()
        graph = build_graph(stages)
        own = {a.md5 for n in graph.producers_of(dataset, version) for a in graph.by_name[n].outputs
               if a.version_key == (dataset, version) and a.md5}
        gone = set(forgotten) | {(dataset, version)}
        alive = {a.md5 for s in stages for a in s.outputs if a.version_key not in gone}
        return sorted(self.remote.key_of(md5) for md5 in own - alive)

    def forget(self, dataset: str, version: int, reason: str = "") -> list[str]:
        """Remove the bytes of ``dataset`` v``version`` from workspace, DVC cache and remote.

        The lineage record stays (``lineage.json`` marks the version forgotten, with time and
        reason); ``dvc.yaml``/``dvc.lock`` stop tracking its files, and the change is committed.
        An object whose bytes another live version shares (same MD5) is kept.

        Versioned-bucket caveat: on an S3 bucket with versioning (seqlife requires it) deleting
        an object only adds a delete marker; its bytes stay as a noncurrent version, and git
        history still names the MD5. Purging those versions is the destroy stage's job: it
        receives the returned keys and passes each to ``S3ObjectStore.purge``.

        Returns:
            The object-store keys (relative to the store root) of the remote objects freed,
            whether or not a current version was still there.
        """
        with self._locked():
            stages, forgotten = self._load()
            graph = build_graph(stages)
            names = graph.producers_of(dataset, version)
            if not names:
                raise ArtifactNotRecorded(dataset, version)
            if (dataset, version) in forgotten:
                return []
            doomed = [a for n in names for a in graph.by_name[n].outputs
                      if a.version_key == (dataset, version)]
            after = {**forgotten, (dataset, version): {
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "reason": reason}}
            alive = {a.md5 for s in stages for a in s.outputs if a.version_key not in after}
            freed = sorted({a.md5 for a in doomed} - alive)
            with self._dvc() as repo:
                odb = repo.cloud.get_remote_odb(REMOTE_NAME)
                try:
                    for md5 in freed:
                        path = odb.oid_to_path(md5)
                        if odb.fs.exists(path):
                            odb.fs.remove(path)
                except OSError as exc:
                    raise StorageUnavailable(
                        f"The lineage remote {self.remote.url} refused a delete "
                        f"({exc.__class__.__name__}); nothing was forgotten yet, retry.") from exc
                for md5 in freed:
                    self._cache_path(repo, md5).unlink(missing_ok=True)
            removed = []
            for artifact in doomed:
                path = self.root / artifact.workspace_path
                path.unlink(missing_ok=True)
                removed.append(path)
            self._prune_dirs(removed)
            self._write(stages, after)
            self._git("add", "-A")
            self._commit(f"lineage: forget {dataset} v{version}\n\n"
                         f"Reason: {reason or '-'}\nFiles: {len(doomed)}, remote objects freed: "
                         f"{len(freed)} (noncurrent S3 versions are purged by destroy)")
            return [self.remote.key_of(md5) for md5 in freed]

