"""Collect tasks: read the delivery, validate files, store objects and register the version."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import func, select

from infra.catalog import Consent, DataFile, Dataset, DatasetVersion, IntegrityManifest, Subject
from infra.objectstore import ObjectVersion
from infra.resources import Resources
from seqlife import collect
from seqlife.classify.detectors import date_parser, load_detectors
from seqlife.classify.labels import label_table, load_classify_policy
from seqlife.encrypt import c4gh
from seqlife.exceptions import CollectError, ColumnMapNeeded, SeqlifeError, StorageError
from seqlife.tableio import read_table_file
from seqlife.policy import Policy
from tasks import encrypt, is_transient

TABLE_NAMES = ("clinical", "consents", "samples")


@dataclass(frozen=True)
class Delivery:
    """The delivery's tables, read against their schemas, and the sequencing files it holds."""

    source: Path
    tables: dict[str, pa.Table]
    delivered: set[str]
    column_map: collect.ColumnMap  # how the clinical table's columns became ours
    references: tuple[str, ...] = ()  # reference FASTA files the sample sheet declares (CRAM)


TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".parquet")


@task(name="read_delivery", cache_policy=NO_CACHE)
def read_delivery(source: str, policy: Policy, maps_dir: str, column_map: str | None = None,
                  accept_map: bool = False) -> Delivery:
    """Read the clinical, consent and sample tables (CSV/TSV in UTF-8 or GB18030, .xlsx or
    Parquet). The clinical table may carry the hospital's own column names: they are mapped onto
    ours by a steward's map (``column_map``), or by the map proposed from their content when the
    steward accepts it (``accept_map``); otherwise the proposal is written to ``maps_dir`` and
    intake stops with what is left to decide."""
    root = Path(source)
    if not root.is_dir():
        raise CollectError(f"Delivery directory '{source}' does not exist.")
    parse_date = date_parser()
    encodings = policy["table_encodings"]
    paths = {}
    for name in TABLE_NAMES:
        path = next((root / f"{name}{ext}" for ext in TABLE_SUFFIXES
                     if (root / f"{name}{ext}").is_file()), None)
        if path is None:
            raise CollectError(f"The delivery has no {name} table ({name} with one of "
                               f"{', '.join(TABLE_SUFFIXES)}).")
        paths[name] = path
    tables = {name: collect.read_table(paths[name], collect.load_schema(
        policy["tables"][name]["schema"]), paths[name].name, parse_date, encodings)
        for name in ("consents", "samples")}
    tables["clinical"], chosen = _read_clinical(paths["clinical"], policy, parse_date, maps_dir,
                                                column_map, accept_map)
    collect.refuse_links(root)
    delivered = {p.relative_to(root).as_posix() for p in root.rglob("*")
                 if p.is_file() and p.parent != root}
    listed = {path for row in tables["samples"].to_pylist() for role in collect.SHEET_FORMATS
              for path in collect.listed_files(row[role])}
    for path in sorted(delivered):
        target = collect.index_target(path, policy["index_suffixes"], listed)
        if target is not None and target in delivered:
            collect.check_index(root / target, root / path, path)
    references = tuple(collect.references_listed(tables["samples"]))
    for path in references:
        if path not in delivered:
            raise CollectError(f"{path}: declared as a reference in the sample sheet but not "
                               "delivered.", path=path)
    return Delivery(root, tables, delivered, chosen, references)


def _read_clinical(path: Path, policy: Policy, parse_date: collect.DateParser, maps_dir: str,
                   given: str | None, accept: bool) -> tuple[pa.Table, collect.ColumnMap]:
    schema = collect.load_schema(policy["tables"]["clinical"]["schema"])
    raw = read_table_file(path, path.name, tuple(policy["table_encodings"]))
    names = raw.column_names
    if given is None and set(names) == set(schema.types):
        chosen = collect.ColumnMap.identity(schema.name, names)
        return collect.conform(raw, chosen, schema, path.name, parse_date), chosen
    columns = {name: raw.column(name) for name in names}
    fields, _, _ = label_table(path.name, columns, load_detectors(), load_classify_policy(), {})
    labels = {f.field: (f.detector or "", f.identifier) for f in fields}
    if given is not None:
        chosen = collect.load_column_map(Path(given))
    else:
        proposal = collect.propose_column_map(
            names, labels, schema, collect.proposal_order(columns, labels, parse_date))
        if proposal.undecided or proposal.missing or not accept:
            target = Path(maps_dir) / f"{schema.name}-{proposal.column_map.digest[:12]}.yaml"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(proposal.column_map.render())
            raise ColumnMapNeeded(path.name, str(target), dict(proposal.undecided),
                                  proposal.missing)
        chosen = proposal.column_map
    collect.check_column_map(chosen, names, schema, labels, path.name)
    return collect.conform(raw, chosen, schema, path.name, parse_date), chosen


@task(name="plan_collection", cache_policy=NO_CACHE)
def plan_collection(delivery: Delivery, scenario: str, policy: Policy) -> collect.CollectionPlan:
    t = delivery.tables
    return collect.plan_collection(t["samples"], t["consents"], t["clinical"], scenario, policy,
                                   delivery.delivered)


@task(name="check_sequencing_file", cache_policy=NO_CACHE)
def check_sequencing_file(source: str, planned: collect.PlannedFile, policy: Policy,
                          others: frozenset[str] = frozenset(), references: str | None = None,
                          seal: tuple[bytes, str] | None = None
                          ) -> tuple[collect.FileCheck, encrypt.SealedFile | None]:
    """Validate one delivered file. With ``seal`` (the dataset's public key, a scratch folder) a
    FASTQ is also sealed as Crypt4GH in the same read — validated, hashed and encrypted byte by
    byte once; other formats are sealed when stored."""
    path = Path(source) / planned.path

    def check_with(sink: Callable[[bytes], None] | None) -> collect.FileCheck:
        return collect.check_sequencing_file(
            path, planned.path, policy["sequencing_formats"],
            max_ratio=float(policy["max_decompression_ratio"]),
            max_bytes=int(policy["max_decompressed_gib"]) << 30, column=planned.role,
            references=Path(references) if references else None, sink=sink)

    sealed = None
    if seal is not None and collect.sniff_format(path, planned.path) == "fastq":
        public_key, scratch = seal
        target = encrypt.scratch_copy(Path(scratch), planned.path)
        with open(target, "wb") as out:
            writer = c4gh.SealingWriter(out, [public_key])
            check = check_with(writer.write)
            done = writer.close()
        sealed = encrypt.SealedFile(planned.path, check.sha256, done.size, target,
                                    writer.cipher_digest.hexdigest(), done.cipher_size,
                                    done.header_size)
    else:
        check = check_with(None)
    collect.check_inner_sample(check, planned, others)
    return check, sealed


@task(name="check_sequencing_files", cache_policy=NO_CACHE)
def check_sequencing_files(source: str, planned: list[collect.PlannedFile], policy: Policy,
                           codes: dict[str, str], references: str | None = None,
                           seal: tuple[bytes, str] | None = None
                           ) -> list[tuple[collect.FileCheck, encrypt.SealedFile | None]]:
    """A batch of files checked in one task (see ``tasks.batches``); ``codes``: every sample ID
    and subject of the delivery (none may name another sample's reads) with its code, which
    replaces it in what a refusal leaves in the run history; ``references``: the CRAM reference
    cache; ``seal``: see :func:`check_sequencing_file`."""
    try:
        return [check_sequencing_file.fn(source, one, policy, frozenset(codes), references, seal)
                for one in planned]
    except SeqlifeError as exc:
        exc.record_as(collect.coded_path(exc.message, codes))
        raise


@task(name="stage_tables", cache_policy=NO_CACHE)
def stage_tables(delivery: Delivery, plan: collect.CollectionPlan, workdir: str
                 ) -> list[tuple[collect.FileCheck, Path]]:
    """Normalise the tables to Parquet; withdrawn subjects' rows are left out (RARE §4.9)."""
    keep = {
        "clinical": collect.keep_subjects(delivery.tables["clinical"], plan.included_subjects),
        "samples": collect.keep_subjects(delivery.tables["samples"], plan.included_subjects),
        "consents": delivery.tables["consents"],  # kept whole: a withdrawal must stay provable
    }
    staged = []
    for name, table in keep.items():
        path = Path(workdir) / f"{name}.parquet"
        collect.write_parquet(table, path)
        sha256, size = collect.hash_file(path)
        staged.append((collect.FileCheck(path.name, "parquet", size, sha256, table.num_rows), path))
    return staged


@dataclass(frozen=True)
class Registered:
    dataset: str
    version: int
    created: bool
    manifest_sha256: str
    files: int
    total_bytes: int
    subjects: int
    excluded_subjects: tuple[str, ...]  # surrogates only
    #: path in the dataset -> (SHA-256 of the stored Crypt4GH bytes, a local copy of them): what
    #: the lineage registry records, so its workspace, cache and remote hold ciphertext only
    sealed: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)


def dataset_path(check: collect.FileCheck, planned: collect.PlannedFile | None,
                 codes: dict[str, str]) -> str:
    """Where a delivered file lives in the dataset: sequencing files under their delivered path
    with sample IDs and record numbers coded, tables under ``tables/``."""
    return collect.coded_path(check.path, codes) if planned else f"tables/{check.path}"


def sample_codes(res: Resources, plan: collect.CollectionPlan) -> dict[str, str]:
    """Every sample ID of the plan -> its code, every subject key -> its surrogate: what stored
    names, catalog rows and recorded messages carry instead of them."""
    secret = res.keys.secret("subject-surrogate")
    samples = {sid for f in plan.files for sid in (f.sample_id, *(m[0] for m in f.members))
               if sid}
    return {**{key: collect.subject_surrogate(secret, key)
               for key in plan.included_subjects | plan.excluded_subjects},
            **{sid: collect.sample_code(secret, sid) for sid in samples}}


@task(name="store_and_register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=is_transient)
def store_and_register(res: Resources, dataset: str, owner: str, plan: collect.CollectionPlan,
                       sources: list[tuple[collect.FileCheck, Path, collect.PlannedFile | None]],
                       policy: Policy, flow_run_id: str, workdir: str,
                       presealed: dict[str, encrypt.SealedFile] | None = None) -> Registered:
    """Seal every file as Crypt4GH under the dataset's data key and store only the ciphertext,
    sign the integrity manifest, then register the version in one catalog transaction
    (GB/T 39725 §10.1 c, §11.3.4.4 b): no plaintext byte of a delivery reaches the store.

    Same content as the latest version -> nothing new is written (idempotent); a file whose
    plaintext equals the latest version's keeps its stored ciphertext; ``presealed`` (by
    delivered path) are the files already sealed in the validating read. Any failure removes the
    object versions this call created, so no partial collection is ever registered and earlier
    versions stay as they were.
    """
    codes = sample_codes(res, plan)
    surrogate = {key: codes[key] for key in plan.included_subjects | plan.excluded_subjects}
    entries = [
        collect.ManifestEntry(dataset_path(check, planned, codes),
                              planned.role if planned else check.path.removesuffix(".parquet"),
                              check.format, check.size, check.sha256, check.records,
                              codes[planned.sample_id] if planned and planned.sample_id else None,
                              surrogate[planned.subject_key] if planned else None)
        for check, _, planned in sources
    ]
    excluded = tuple(sorted(surrogate[key] for key in plan.excluded_subjects))
    digest = collect.content_digest(entries)
    zone = policy["raw_zone"]
    with res.sessions() as session:
        existing = session.scalar(select(Dataset).where(Dataset.name == dataset))
        latest = existing.versions[-1] if existing and existing.versions else None
        previous = {f.path: {c: getattr(f, c) for c in _SEALED_COLUMNS}
                    for f in (latest.files if latest is not None else ())
                    if f.plaintext_purged and f.object_key == f.encrypted_key}
        unchanged = None
        if latest is not None and _content_digest_of(latest) == digest:
            unchanged = (latest.version, latest.manifest_sha256, latest.file_count,
                         latest.total_bytes)
        version = (latest.version + 1) if latest else 1
    if unchanged is not None:  # with the stored copies, for a lineage record a crash left out
        number, manifest_sha256, files, total_bytes = unchanged
        return Registered(dataset, number, False, manifest_sha256, files, total_bytes,
                          len(plan.included_subjects), excluded,
                          {path: (row["cipher_sha256"], str(_local_copy(
                              res, row, Path(workdir) / f"prior-{number}.c4gh")))
                           for number, (path, row) in enumerate(previous.items())})

    created: list[ObjectVersion] = []
    try:
        stored: dict[str, dict] = {}
        local: dict[str, tuple[str, str]] = {}
        for (check, path, _), entry in zip(sources, entries):
            prior = previous.get(entry.path)
            if prior is not None and prior["sha256"] == entry.sha256:
                stored[entry.path] = prior
                copy = _local_copy(res, prior, Path(workdir) / f"prior-{len(local)}.c4gh")
                local[entry.path] = (prior["cipher_sha256"], str(copy))
                continue
            done = (presealed or {}).get(check.path)  # sealed in the validating read
            sealed = replace(done, path=entry.path) if done is not None else encrypt.seal(
                res, dataset, entry.path, path, Path(workdir), check.sha256)
            obj = encrypt.put_sealed(res, zone, dataset, sealed)
            created.append(obj)
            stored[entry.path] = encrypt.sealed_columns(sealed, obj)
            local[entry.path] = (sealed.cipher_sha256, str(sealed.cipher))
        signed, signed_obj, fingerprint = encrypt.signed_manifest(
            res, zone, dataset, version, list(stored.values()), policy.content_hash)
        created.append(signed_obj)
        manifest = collect.render_manifest(dataset, version, plan.scenario, policy.content_hash,
                                           entries)
        manifest_key = f"{zone}/{dataset}/_manifests/v{version}.json"
        created.append(res.store.put_bytes(manifest_key, manifest))
        manifest_sha256 = created[-1].sha256
        _register(res, dataset, owner, version, zone, manifest_key, manifest_sha256, entries,
                  stored, plan, surrogate, policy, flow_run_id,
                  (signed, signed_obj, fingerprint))
    except BaseException:
        for obj in created:
            try:
                res.store.delete_version(obj.key, obj.version_id)
            except StorageError:
                pass  # the orphan is unregistered and harmless; the original error matters
        raise
    return Registered(dataset, version, True, manifest_sha256, len(entries),
                      sum(e.size for e in entries), len(plan.included_subjects), excluded, local)


def _local_copy(res: Resources, row: dict, target: Path) -> Path:
    """The stored Crypt4GH bytes of a file, copied to scratch (the store checks their digest)."""
    with res.store.open(row["object_key"], row["object_version_id"]) as src, \
            open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


#: What a sealed file's catalog row carries (see ``tasks.encrypt.sealed_columns``).
_SEALED_COLUMNS = ("path", "size", "sha256", "object_key", "object_version_id", "encrypted_key",
                   "encrypted_version_id", "cipher_sha256", "cipher_size", "header_size",
                   "plaintext_purged")


def _content_digest_of(version: DatasetVersion) -> str:
    return collect.content_digest(
        collect.ManifestEntry(f.path, f.role, f.format, f.size, f.sha256, f.records, f.sample_id,
                              None) for f in version.files)


def _register(res: Resources, dataset: str, owner: str, version: int, zone: str, manifest_key: str,
              manifest_sha256: str, entries: list[collect.ManifestEntry],
              stored: dict[str, dict], plan: collect.CollectionPlan,
              surrogate: dict[str, str], policy: Policy, flow_run_id: str,
              integrity: tuple[dict, ObjectVersion, str]) -> None:
    with res.sessions.begin() as session:
        record = session.scalar(select(Dataset).where(Dataset.name == dataset))
        if record is None:
            record = Dataset(name=dataset, kind="raw", owner=owner)
            session.add(record)
            session.flush()
        taken = session.scalar(select(func.max(DatasetVersion.version))
                               .where(DatasetVersion.dataset_id == record.id)) or 0
        if taken >= version:
            raise CollectError(f"Dataset '{dataset}' gained version {taken} while this collection "
                               "ran; collect again.")
        subjects = {}
        for key, code in surrogate.items():
            subject = session.scalar(select(Subject).where(Subject.surrogate == code))
            if subject is None:
                subject = Subject(surrogate=code)
                session.add(subject)
                session.flush()
            subjects[code] = subject
        dataset_version = DatasetVersion(
            dataset_id=record.id, version=version, zone=zone, manifest_sha256=manifest_sha256,
            manifest_key=manifest_key, file_count=len(entries),
            total_bytes=sum(e.size for e in entries), flow_run_id=flow_run_id,
            policy_hash=policy.content_hash)
        session.add(dataset_version)
        session.flush()
        for entry in entries:
            session.add(DataFile(
                dataset_version_id=dataset_version.id, role=entry.role, format=entry.format,
                records=entry.records, **stored[entry.path],
                subject_id=subjects[entry.subject].id if entry.subject else None,
                sample_id=entry.sample_id))
        signed, signed_obj, fingerprint = integrity
        session.add(IntegrityManifest(dataset_version_id=dataset_version.id,
                                      manifest_key=signed_obj.key,
                                      manifest_version_id=signed_obj.version_id, document=signed,
                                      data_key_fingerprint=fingerprint))
        for key, records in plan.consents.items():
            if key not in surrogate:
                continue
            subject = subjects[surrogate[key]]
            for consent in records:
                known = session.scalar(select(Consent).where(
                    Consent.subject_id == subject.id, Consent.scope == consent.scope,
                    Consent.signed_on == consent.signed_on))
                if known is None:
                    session.add(Consent(subject_id=subject.id, scope=consent.scope,
                                        signed_on=consent.signed_on,
                                        withdrawn_on=consent.withdrawn_on))
                elif known.withdrawn_on != consent.withdrawn_on:
                    known.withdrawn_on = consent.withdrawn_on


def new_workdir(res: Resources) -> tempfile.TemporaryDirectory:
    """Scratch space under SEQLIFE_HOME, removed when the flow ends whatever happens."""
    return tempfile.TemporaryDirectory(dir=res.scratch(), prefix="collect-")
