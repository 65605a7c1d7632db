"""Lineage: which seqlife flow run made which dataset version from which files.

Results must be traceable back to the raw data (GB/T 39725 §11.3.4.6 b 2), shared data must be
traceable (§11.3.4.8 c; SEQ §5). A ``LineageStage`` is one flow run seen as a DVC stage: the
artifacts it read (``inputs``), the artifacts it wrote (``outputs``), the Prefect flow-run id and
the content hash of the policy it ran under. This module holds the pure part:

* the in-memory graph (``build_graph``) and its walks: ``chain_back`` (derived -> raw) and
  ``chain_forward`` (raw -> everything derived), and ``inherited_grade``;
* the rendering of DVC's own files, ``render_dvc_yaml`` / ``render_dvc_lock``, and of the
  ``lineage.json`` sidecar (``dump_lineage`` / ``load_lineage``).

Hashes. An ``Artifact`` is identified by (dataset, version, path) and sealed by its SHA-256, the
digest every other seqlife record uses. DVC addresses content by MD5, so an artifact also carries
``md5`` and ``size`` (not part of its identity): the registry adapter computes both in the same
pass that checks the SHA-256 while copying the bytes in. ``dvc.lock`` is then rendered complete
(``hash: md5``, ``md5``, ``size`` for every dep and out), and ``dvc commit`` without ``--force``
refuses if DVC's own hashing of the workspace disagrees -- DVC checks our lock, we do not trust it
blindly. The SHA-256 of each output and the flow-run id, policy hash and parameters of each stage
are written into ``dvc.yaml`` under ``meta`` (DVC keeps ``meta`` and ignores it otherwise).

Stages are frozen in ``dvc.yaml`` (``frozen: true``): they are records of flow runs made outside
DVC, so ``dvc repro`` never re-runs them; their ``cmd`` only says which seqlife flow made them.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from seqlife.exceptions import SeqlifeError

#: Where an artifact lives in the registry workspace.
DATA_DIR = "data"
#: Version of the ``lineage.json`` layout.
LINEAGE_SCHEMA = 1
#: Directions ``chain`` accepts.
DIRECTIONS = ("back", "forward")

# DVC refuses stage names holding any punctuation but '_' and '-'.
_STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$")
_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_VERB = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")

ArtifactKey = tuple[str, int, str]
VersionKey = tuple[str, int]


class LineageError(SeqlifeError):
    """The lineage registry refused a record or cannot answer a question about it."""

    stage = "lineage"


class ArtifactNotRecorded(LineageError):
    """A stage names an input (or a question names a version) that no recorded stage produced."""

    def __init__(self, dataset: str, version: int, path: str | None = None) -> None:
        what = f"{dataset} v{version}" + (f" file {path}" if path else "")
        super().__init__(
            f"{what} is not in the lineage registry: no recorded stage produced it. Record the "
            "stage that made it first, so the chain back to the raw data stays unbroken "
            "(GB/T 39725 §11.3.4.6 b 2).",
            dataset=dataset, version=version, path=path)


# --- records ----------------------------------------------------------------------------------


def _check_path(path: str) -> str:
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or "\x00" in path
            or any(p in ("", ".", "..") for p in parts)):
        raise LineageError(f"Refused artifact path '{path[:120]}': it must be relative, with no "
                           "empty, '.' or '..' segment.")
    return path


@dataclass(frozen=True)
class Artifact:
    """One file of one dataset version, sealed by its SHA-256.

    ``md5`` and ``size`` are what DVC needs; they are filled in by the registry from the bytes and
    take no part in equality.
    """

    dataset: str
    version: int
    path: str
    sha256: str
    md5: str = field(default="", compare=False)
    size: int = field(default=-1, compare=False)

    def __post_init__(self) -> None:
        if not _DATASET.match(self.dataset):
            raise LineageError(f"Refused dataset name '{self.dataset[:120]}' in lineage: use "
                               "letters, digits, '.', '_' and '-' only.")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise LineageError(f"{self.dataset}: a dataset version is a whole number >= 1, "
                               f"got {self.version!r}.")
        _check_path(self.path)
        if not _HEX64.match(self.sha256):
            raise LineageError(f"{self.dataset} v{self.version} {self.path}: the SHA-256 must be "
                               "64 lower-case hex digits.")
        if self.md5 and not _HEX32.match(self.md5):
            raise LineageError(f"{self.dataset} v{self.version} {self.path}: bad MD5.")

    @property
    def key(self) -> ArtifactKey:
        return (self.dataset, self.version, self.path)

    @property
    def version_key(self) -> VersionKey:
        return (self.dataset, self.version)

    @property
    def workspace_path(self) -> str:
        """Its path in the registry workspace: ``data/<dataset>/v<version>/<path>``."""
        return f"{DATA_DIR}/{self.dataset}/v{self.version}/{self.path}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dataset": self.dataset, "version": self.version,
                               "path": self.path, "sha256": self.sha256}
        if self.md5:
            out["md5"] = self.md5
        if self.size >= 0:
            out["size"] = self.size
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Artifact":
        return cls(str(data["dataset"]), int(data["version"]), str(data["path"]),
                   str(data["sha256"]), str(data.get("md5", "")), int(data.get("size", -1)))


@dataclass(frozen=True)
class LineageStage:
    """One flow run as a lineage stage: what it read, what it wrote, under which run and policy.

    ``params`` are committed to the registry in clear: never put a personal identifier in them.
    """

    name: str
    stage: str
    inputs: tuple[Artifact, ...]
    outputs: tuple[Artifact, ...]
    flow_run_id: str
    policy_hash: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not _STAGE_NAME.match(self.name):
            raise LineageError(f"Refused stage name '{self.name[:120]}': DVC accepts letters, "
                               "digits, '_' and '-' only (see stage_name()).")
        if not _VERB.match(self.stage):
            raise LineageError(f"Refused stage verb '{self.stage[:40]}' (e.g. collect, deidentify).")
        if not self.outputs:
            raise LineageError(f"Stage {self.name} has no outputs; lineage records what was made.")
        for group, items in (("outputs", self.outputs), ("inputs", self.inputs)):
            keys = [a.key for a in items]
            if len(set(keys)) != len(keys):
                raise LineageError(f"Stage {self.name} lists one of its {group} twice.")
        if {a.key for a in self.inputs} & {a.key for a in self.outputs}:
            raise LineageError(f"Stage {self.name} reads a file it writes; lineage must not loop.")
        try:
            json.dumps(self.params, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise LineageError(f"Stage {self.name}: params must be plain JSON values.") from exc

    @property
    def output_versions(self) -> list[VersionKey]:
        return sorted({a.version_key for a in self.outputs})

    @property
    def input_versions(self) -> list[VersionKey]:
        return sorted({a.version_key for a in self.inputs})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "stage": self.stage,
                "inputs": [a.to_dict() for a in self.inputs],
                "outputs": [a.to_dict() for a in self.outputs],
                "flow_run_id": self.flow_run_id, "policy_hash": self.policy_hash,
                "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LineageStage":
        return cls(str(data["name"]), str(data["stage"]),
                   tuple(Artifact.from_dict(a) for a in data.get("inputs", ())),
                   tuple(Artifact.from_dict(a) for a in data["outputs"]),
                   str(data.get("flow_run_id", "")), str(data.get("policy_hash", "")),
                   dict(data.get("params", {})))


def stage_name(stage: str, dataset: str, version: int) -> str:
    """A DVC-safe stage name for the run of ``stage`` that made ``dataset`` v``version``."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{stage}-{dataset}-v{version}")
    return name[:200]


# --- the graph ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineageGraph:
    """Stages in topological order (producers before consumers) and the artifact edges."""

    stages: tuple[LineageStage, ...]
    by_name: Mapping[str, LineageStage]
    producer: Mapping[ArtifactKey, str]
    consumers: Mapping[ArtifactKey, tuple[str, ...]]
    index: Mapping[str, int]

    def order(self, name: str) -> int:
        return self.index[name]

    def producers_of(self, dataset: str, version: int, path: str | None = None) -> list[str]:
        names = {n for (d, v, p), n in self.producer.items()
                 if d == dataset and v == version and (path is None or p == path)}
        return sorted(names, key=self.order)

    def versions(self) -> list[VersionKey]:
        return sorted({(d, v) for d, v, _ in self.producer})


def build_graph(stages: Iterable[LineageStage]) -> LineageGraph:
    """The lineage graph of ``stages``; refuses duplicate names, two producers of a file, loops."""
    stages = list(stages)
    by_name: dict[str, LineageStage] = {}
    producer: dict[ArtifactKey, str] = {}
    for stage in stages:
        if stage.name in by_name:
            raise LineageError(f"Two lineage stages are named {stage.name}.")
        by_name[stage.name] = stage
        for artifact in stage.outputs:
            if artifact.key in producer:
                raise LineageError(
                    f"{artifact.dataset} v{artifact.version} {artifact.path} is written by both "
                    f"{producer[artifact.key]} and {stage.name}; a version is never overwritten.")
            producer[artifact.key] = stage.name
    consumers: dict[ArtifactKey, list[str]] = {}
    upstream: dict[str, set[str]] = {s.name: set() for s in stages}
    for stage in stages:
        for artifact in stage.inputs:
            consumers.setdefault(artifact.key, []).append(stage.name)
            if artifact.key in producer:
                upstream[stage.name].add(producer[artifact.key])
    position = {s.name: i for i, s in enumerate(stages)}
    ordered: list[LineageStage] = []
    done: set[str] = set()
    pending = list(stages)
    while pending:  # Kahn's algorithm, ties broken by record order
        ready = [s for s in pending if upstream[s.name] <= done]
        if not ready:
            raise LineageError("The lineage graph has a loop among stages "
                               + ", ".join(sorted(s.name for s in pending)) + ".")
        first = min(ready, key=lambda s: position[s.name])
        ordered.append(first)
        done.add(first.name)
        pending.remove(first)
    return LineageGraph(tuple(ordered), by_name, producer,
                        {k: tuple(v) for k, v in consumers.items()},
                        {s.name: i for i, s in enumerate(ordered)})


def check_new_stage(graph: LineageGraph, stage: LineageStage,
                    forgotten: Iterable[VersionKey] = ()) -> None:
    """Refuse a stage that would break the graph: a taken name, an overwrite, an unknown input."""
    if stage.name in graph.by_name:
        raise LineageError(f"A lineage stage named {stage.name} is already recorded; stages are "
                           "never rewritten.")
    for artifact in stage.outputs:
        if artifact.key in graph.producer:
            raise LineageError(
                f"{artifact.dataset} v{artifact.version} {artifact.path} was already written by "
                f"{graph.producer[artifact.key]}; a new result needs a new version.")
    gone = set(forgotten)
    for artifact in stage.inputs:
        if artifact.key not in graph.producer:
            raise ArtifactNotRecorded(artifact.dataset, artifact.version, artifact.path)
        if artifact.version_key in gone:
            raise LineageError(f"{artifact.dataset} v{artifact.version} was destroyed; nothing "
                               "may be derived from it any more.")
        recorded = _artifact(graph, artifact.key)
        if recorded.sha256 != artifact.sha256:
            raise LineageError(
                f"{artifact.dataset} v{artifact.version} {artifact.path}: the input's SHA-256 "
                "differs from the one recorded when it was made; the stage read other bytes.")


def _artifact(graph: LineageGraph, key: ArtifactKey) -> Artifact:
    stage = graph.by_name[graph.producer[key]]
    return next(a for a in stage.outputs if a.key == key)


def with_recorded_inputs(graph: LineageGraph, stage: LineageStage) -> LineageStage:
    """``stage`` with each input's md5/size taken from the artifact as it was recorded."""
    inputs = tuple(_artifact(graph, a.key) if a.key in graph.producer else a for a in stage.inputs)
    return LineageStage(stage.name, stage.stage, inputs, stage.outputs, stage.flow_run_id,
                        stage.policy_hash, dict(stage.params))


def _start(graph: LineageGraph, dataset: str, version: int, path: str | None) -> list[str]:
    names = graph.producers_of(dataset, version, path)
    if not names:
        raise ArtifactNotRecorded(dataset, version, path)
    return names


def chain_back(graph: LineageGraph, dataset: str, version: int,
               path: str | None = None) -> list[LineageStage]:
    """Every stage ``dataset`` v``version`` (or one of its files) descends from, derived -> raw.

    The first stages are those that wrote the version itself; the last ones wrote raw data.
    Inputs no recorded stage produced (data from outside seqlife) end the walk.
    """
    seen: set[str] = set()
    queue = deque(_start(graph, dataset, version, path))
    while queue:
        name = queue.popleft()
        if name in seen:
            continue
        seen.add(name)
        for artifact in graph.by_name[name].inputs:
            if artifact.key in graph.producer:
                queue.append(graph.producer[artifact.key])
    return sorted((graph.by_name[n] for n in seen), key=lambda s: graph.order(s.name),
                  reverse=True)


def chain_forward(graph: LineageGraph, dataset: str, version: int,
                  path: str | None = None) -> list[LineageStage]:
    """The stage(s) that wrote ``dataset`` v``version`` and everything derived from it, raw -> derived.

    With ``path``, only what was derived from that one file.
    """
    start = _start(graph, dataset, version, path)
    seen: set[str] = set(start)
    queue: deque[str] = deque()
    for key, names in graph.consumers.items():
        if key[0] == dataset and key[1] == version and (path is None or key[2] == path):
            queue.extend(names)
    while queue:
        name = queue.popleft()
        if name in seen:
            continue
        seen.add(name)
        for artifact in graph.by_name[name].outputs:
            queue.extend(graph.consumers.get(artifact.key, ()))
    return sorted((graph.by_name[n] for n in seen), key=lambda s: graph.order(s.name))


def chain(graph: LineageGraph, dataset: str, version: int, direction: str = "back",
          path: str | None = None) -> list[LineageStage]:
    """``chain_back`` or ``chain_forward`` by name."""
    if direction == "back":
        return chain_back(graph, dataset, version, path)
    if direction == "forward":
        return chain_forward(graph, dataset, version, path)
    raise LineageError(f"Unknown lineage direction '{direction}'; use one of: "
                       + ", ".join(DIRECTIONS) + ".")


def inherited_grade(graph: LineageGraph, labels_by_version: Mapping[VersionKey, Mapping[str, Any]],
                    *, dataset: str, version: int) -> int:
    """The sensitivity grade ``dataset`` v``version`` must be handled at.

    A version that was re-classified *and* certified (labels ``{"grade": g, "certified": True}``)
    stands at its own grade. Any other derived version inherits the highest grade of what it was
    made from (and keeps its own if that is higher): data derived from grade-4 data stays grade 4
    until it is re-classified and certified (GB/T 39725 §6.2; DER §5). A raw version (no recorded
    inputs) stands at its own classified grade; an unclassified raw version is an error.
    """
    memo: dict[VersionKey, int] = {}

    def grade_of(key: VersionKey, trail: tuple[VersionKey, ...]) -> int:
        if key in memo:
            return memo[key]
        if key in trail:
            raise LineageError(f"{key[0]} v{key[1]} derives from itself.")
        labels = labels_by_version.get(key)
        own = int(labels["grade"]) if labels and labels.get("grade") is not None else None
        if own is not None and labels.get("certified"):
            memo[key] = own
            return own
        names = graph.producers_of(*key)
        if not names and own is None:
            raise ArtifactNotRecorded(*key)
        parents = {a.version_key for n in names for a in graph.by_name[n].inputs} - {key}
        if not parents:
            if own is None:
                raise LineageError(f"{key[0]} v{key[1]} is raw data with no grade: classify it "
                                   "before deriving anything from it (GB/T 39725 App. F).")
            memo[key] = own
            return own
        grades = [grade_of(p, trail + (key,)) for p in sorted(parents)]
        memo[key] = max(grades + ([own] if own is not None else []))
        return memo[key]

    return grade_of((dataset, version), ())


# --- DVC files and the sidecar ------------------------------------------------------------------


def render_cmd(stage: LineageStage) -> str:
    """The seqlife command that made the stage, for ``cmd`` (frozen: DVC never runs it)."""
    args = " ".join(f"--{k} {shlex.quote(str(v))}" for k, v in sorted(stage.params.items())
                    if not isinstance(v, (dict, list)))
    return f"seqlife run {stage.stage}" + (f" {args}" if args else "")


def _kept(artifacts: Iterable[Artifact], gone: set[VersionKey]) -> list[Artifact]:
    return sorted((a for a in artifacts if a.version_key not in gone),
                  key=lambda a: a.workspace_path)


def _describe(stage: LineageStage) -> str:
    made = ", ".join(f"{d} v{v}" for d, v in stage.output_versions)
    source = ", ".join(f"{d} v{v}" for d, v in stage.input_versions)
    return f"seqlife {stage.stage}: {made}" + (f" from {source}" if source else "")


def render_dvc_yaml(stages: Sequence[LineageStage],
                    forgotten: Iterable[VersionKey] = ()) -> dict[str, Any]:
    """DVC's ``dvc.yaml``: one frozen stage per lineage stage, seqlife's record under ``meta``.

    Artifacts of ``forgotten`` versions are no longer tracked by DVC (their bytes are gone) and
    are left out of ``deps``/``outs``; a stage left with neither is left out altogether. The
    whole record, forgotten parts included, stays in ``lineage.json``.
    """
    gone = set(forgotten)
    out: dict[str, Any] = {}
    for stage in stages:
        deps, outs = _kept(stage.inputs, gone), _kept(stage.outputs, gone)
        if not deps and not outs:
            continue  # DVC would take a stage with neither for an always-changed callback
        entry: dict[str, Any] = {"cmd": render_cmd(stage), "desc": _describe(stage),
                                 "frozen": True}
        if deps:
            entry["deps"] = [a.workspace_path for a in deps]
        if outs:
            entry["outs"] = [{a.workspace_path: {"meta": {"sha256": a.sha256}}} for a in outs]
        entry["meta"] = {"seqlife": {
            "stage": stage.stage, "flow_run_id": stage.flow_run_id,
            "policy_hash": stage.policy_hash, "params": dict(stage.params),
            "inputs": {a.workspace_path: a.sha256 for a in sorted(
                stage.inputs, key=lambda a: a.workspace_path)},
        }}
        out[stage.name] = entry
    return {"stages": out}


def _lock_entry(artifact: Artifact) -> dict[str, Any]:
    if not artifact.md5 or artifact.size < 0:
        raise LineageError(f"{artifact.workspace_path}: no MD5/size recorded; DVC needs both in "
                           "dvc.lock. The registry computes them from the bytes when recording.")
    return {"path": artifact.workspace_path, "hash": "md5", "md5": artifact.md5,
            "size": artifact.size}


def render_dvc_lock(stages: Sequence[LineageStage],
                    forgotten: Iterable[VersionKey] = ()) -> dict[str, Any]:
    """DVC's ``dvc.lock`` (schema 2.0) with the MD5 and size of every dep and out.

    Entries follow DVC's own layout (sorted by path; ``deps`` left out when empty), so a
    ``dvc commit`` of an unchanged stage rewrites the file identically.
    """
    gone = set(forgotten)
    out: dict[str, Any] = {}
    for stage in stages:
        deps, outs = _kept(stage.inputs, gone), _kept(stage.outputs, gone)
        if not deps and not outs:
            continue
        entry: dict[str, Any] = {"cmd": render_cmd(stage)}
        if deps:
            entry["deps"] = [_lock_entry(a) for a in deps]
        if outs:
            entry["outs"] = [_lock_entry(a) for a in outs]
        out[stage.name] = entry
    return {"schema": "2.0", "stages": out}


def dump_lineage(stages: Sequence[LineageStage],
                 forgotten: Mapping[VersionKey, Mapping[str, str]] | None = None) -> dict[str, Any]:
    """The ``lineage.json`` sidecar: every stage ever recorded, and which versions were forgotten."""
    return {
        "schema": LINEAGE_SCHEMA,
        "stages": [s.to_dict() for s in stages],
        "forgotten": [{"dataset": d, "version": v, **dict(info)}
                      for (d, v), info in sorted((forgotten or {}).items())],
    }


def load_lineage(doc: Mapping[str, Any]
                 ) -> tuple[list[LineageStage], dict[VersionKey, dict[str, str]]]:
    """Read ``lineage.json`` back; refuses a layout this code does not know."""
    if doc.get("schema") != LINEAGE_SCHEMA:
        raise LineageError(f"lineage.json has schema {doc.get('schema')!r}; this seqlife reads "
                           f"schema {LINEAGE_SCHEMA}.")
    stages = [LineageStage.from_dict(s) for s in doc.get("stages", [])]
    forgotten = {(str(f["dataset"]), int(f["version"])):
                 {k: str(v) for k, v in f.items() if k not in ("dataset", "version")}
                 for f in doc.get("forgotten", [])}
    return stages, forgotten
