"""De-identify tasks: fetch a classified raw version, transform its table and files, store the
output as a research dataset awaiting committee approval, keep the patient code index sealed."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from infra.catalog import (
    DataFile,
    Dataset,
    DatasetVersion,
    Deidentification,
    IntegrityManifest,
    PatientCodeIndex,
)
from infra.keystore import code_index_key, date_shift_key, surrogate_key
from infra.resources import Resources
from seqlife import collect
from seqlife.classify.detectors import date_parser
from seqlife.deidentify import report as reports
from seqlife.deidentify import residual
from seqlife.deidentify import sequencing
from seqlife.deidentify import tables as rules
from seqlife.deidentify.errors import CodeIndexDestroyed, DeidentificationError
from seqlife.deidentify.files import with_compression
from seqlife.deidentify.hierarchy import load_hierarchies
from seqlife.exceptions import PolicyViolation
from seqlife.policy import Policy
from tasks import encrypt, is_transient
from tasks.classify import current_classification, find_version
from tasks.encrypt import open_data

ZONE = "03_deidentified"


@dataclass(frozen=True)
class Source:
    """A raw version ready for de-identification: its approved field labels and its files."""

    dataset: str
    version: int
    version_id: int
    fields: list[dict]
    files: list[dict]


def output_name(dataset: str, project: str) -> str:
    return f"{dataset}--{project}"


def _fetch(res: Resources, data_file: dict, target: Path) -> Path:
    """Copy a stored version to a local file; the full read verifies its SHA-256."""
    with open_data(res, data_file) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


@task(name="load_source", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=is_transient)
def load_source(res: Resources, dataset: str, version: int | None) -> Source:
    with res.sessions() as session:
        dataset_version = find_version(session, dataset, version)
        classification = current_classification(session, dataset_version)
        fields = [{c: getattr(f, c) for c in ("file", "field", "detector", "identifier", "grade")}
                  for f in classification.fields] if classification else []
        files = [{"id": f.id, "path": f.path, "role": f.role, "format": f.format,
                  "sha256": f.sha256, "plaintext_purged": f.plaintext_purged,
                  "object_key": f.object_key, "object_version_id": f.object_version_id,
                  "encrypted_key": f.encrypted_key,
                  "encrypted_version_id": f.encrypted_version_id,
                  "sample_id": f.sample_id, "subject_id": f.subject_id}
                 for f in dataset_version.files]
        return Source(dataset, dataset_version.version, dataset_version.id, fields, files)


@task(name="deidentify_table", cache_policy=NO_CACHE)
def deidentify_table(res: Resources, source: Source, project: str, policy: Policy
                     ) -> tuple[rules.TableResult, pd.DataFrame, frozenset[str]]:
    """The clinical table through every rule, by the roles of its approved classification, plus
    the sample sheet for file renaming and the raw identifiers the outputs are scanned for
    (held in memory only)."""
    clinical = next(f for f in source.files if f["role"] == "clinical")
    samples = next(f for f in source.files if f["role"] == "samples")
    consents = next(f for f in source.files if f["role"] == "consents")
    with tempfile.TemporaryDirectory(dir=res.scratch()) as scratch:
        df = pq.read_table(_fetch(res, clinical, Path(scratch) / "c.parquet")).to_pandas(
            types_mapper=None)
        sample_sheet = pq.read_table(_fetch(res, samples, Path(scratch) / "s.parquet")).to_pandas()
        # kept whole at intake: it still names the subjects who withdrew (a trio's relative)
        consent_table = pq.read_table(_fetch(res, consents, Path(scratch) / "k.parquet"),
                                      columns=["mrn"]).to_pandas()
    roles = rules.roles_from_fields(source.fields, clinical["path"])
    result = rules.deidentify_table(
        df, roles, policy,
        surrogate_secret=res.keys.secret(surrogate_key(project)),
        shift_secret=res.keys.secret(date_shift_key(project)),
        populations=rules.load_populations(), hierarchies=load_hierarchies(),
        parse_date=date_parser())
    direct = [c for c, r in roles.items() if r.identifier == "direct"
              or r.detector in policy["delete_identifiers"]
              or r.detector == policy["linkage_identifier"]["role"]]
    identifiers = residual.identifiers_of([(df, direct), (sample_sheet, ["sample_id", "mrn"]),
                                           (consent_table, ["mrn"])])
    return result, sample_sheet, identifiers


def with_lab_sample_ids(res: Resources, files: list[dict], samples: pd.DataFrame) -> list[dict]:
    """The source's files with the lab's sample ID in place of the code the catalog keeps, for
    this run's scrubbing only (the IDs come from the sealed sample sheet, held in memory)."""
    secret = res.keys.secret("subject-surrogate")
    lab_id = {collect.sample_code(secret, str(sid)): str(sid) for sid in samples["sample_id"]}
    unknown = [f["path"] for f in files if f["sample_id"] not in lab_id]
    if unknown:
        raise DeidentificationError(
            f"{unknown[0]}: its sample is not on the version's sample sheet ({len(unknown)} "
            "such file(s)); the version is inconsistent. Collect the delivery again.",
            files=unknown)
    return [{**f, "sample_id": lab_id[f["sample_id"]]} for f in files]


@task(name="scan_outputs", cache_policy=NO_CACHE)
def scan_outputs(files: list[tuple[str, Path, str]], identifiers: frozenset[str]
                 ) -> dict[str, int]:
    """Every output, decompressed and streamed, holds no identifier of a source subject."""
    return residual.check_outputs(files, identifiers)


@task(name="scrub_sequencing_file", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[1, 5], retry_condition_fn=is_transient)
def scrub_sequencing_file(res: Resources, data_file: dict, sample_map: dict[str, str],
                          name_map: dict[str, str], workdir: str, policy: Policy,
                          relative: str, subject_key: str
                          ) -> tuple[str, Path, sequencing.ScrubReport, tuple[str, Path] | None]:
    """Scrub one file in streaming; the output is named by surrogate (``relative``) and gets
    its own index where the format has one (the delivered index no longer fits it)."""
    # Fetched under its delivered base name, so an error names the file the lab knows.
    inbox = Path(workdir) / f"in-{hashlib.sha256(data_file['path'].encode()).hexdigest()[:12]}"
    inbox.mkdir(parents=True, exist_ok=True)
    src = _fetch(res, data_file, inbox / Path(data_file["path"]).name)
    with open(src, "rb") as handle:
        relative = with_compression(relative, data_file["format"], handle.read(2) == b"\x1f\x8b")
    dst = Path(workdir) / relative
    dst.parent.mkdir(parents=True, exist_ok=True)
    # A lab names samples by its own sample ID, a hospital by the record number: both identify,
    # and both may stand in a header, a read group, a read name or a tag. Reads are renamed with
    # this file's own identifiers (a short pattern); the last check scans for everyone's.
    identifiers = {**sample_map, **name_map}
    own = {k: v for k, v in identifiers.items() if k in (data_file["sample_id"], subject_key)}
    file_format = data_file["format"]
    if file_format == "vcf":
        report = sequencing.scrub_vcf(src, dst, identifiers, policy["vcf_keep_meta"], index=False)
    elif file_format == "bcf":
        report = sequencing.scrub_bcf(src, dst, identifiers, policy["vcf_keep_meta"])
    elif file_format == "bam":
        report = sequencing.scrub_bam(src, dst, identifiers)
    elif file_format == "cram":
        res.references()
        report = sequencing.scrub_cram(src, dst, identifiers)
    else:
        report = sequencing.scrub_fastq(src, dst, own or name_map)
    src.unlink()
    inbox.rmdir()
    index = sequencing.index_output(dst, file_format)
    return relative, dst, report, (
        (relative + index.name[len(dst.name):], index) if index is not None else None)


@task(name="scrub_sequencing_files", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[1, 5], retry_condition_fn=is_transient)
def scrub_sequencing_files(res: Resources, data_files: list[dict], sample_map: dict[str, str],
                           name_map: dict[str, str], workdir: str, policy: Policy,
                           names: dict[str, str], subject_of: dict[str, str]
                           ) -> list[tuple[str, Path, sequencing.ScrubReport,
                                           tuple[str, Path] | None]]:
    """A batch of files scrubbed in one task (see ``tasks.batches``); a retry redoes the batch,
    which only rewrites the same scratch files."""
    return [scrub_sequencing_file.fn(res, f, sample_map, name_map, workdir, policy,
                                     names[f["path"]], subject_of[f["sample_id"]])
            for f in data_files]


@task(name="store_deidentified", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=is_transient)
def store_deidentified(res: Resources, source: Source, project: str,
                       outputs: list[tuple[str, str, Path, str | None]], code_index: dict[str, str],
                       report: dict, policy: Policy, flow_run_id: str) -> dict:
    """Store the outputs as the next version of `<dataset>--<project>` (zone 03_deidentified),
    pending committee approval, each sealed as Crypt4GH under the output dataset's data key (a
    release is still personal information: GB/T 39725 §10.1 c); seal the code index; any failure
    removes what this call stored."""
    name = output_name(source.dataset, project)
    created = []
    try:
        checks, stored, local = [], {}, {}
        for relative, role, path, subject in outputs:
            sealed = encrypt.seal(res, name, relative, path, Path(path).parent)
            checks.append((collect.ManifestEntry(relative, role, _format_of(relative),
                                                 sealed.size, sealed.sha256, 0, None, subject),
                           path))
            obj = encrypt.put_sealed(res, ZONE, name, sealed)
            created.append(obj)
            stored[relative] = encrypt.sealed_columns(sealed, obj)
            local[relative] = (sealed.cipher_sha256, sealed.cipher)
        with res.sessions() as session:
            existing = session.scalar(select(Dataset).where(Dataset.name == name))
            version = (existing.versions[-1].version + 1) if existing and existing.versions else 1
        signed, signed_obj, fingerprint = encrypt.signed_manifest(
            res, ZONE, name, version, list(stored.values()), policy.content_hash)
        created.append(signed_obj)
        manifest = collect.render_manifest(name, version, f"deidentify:{project}",
                                           policy.content_hash, [e for e, _ in checks])
        manifest_key = f"{ZONE}/{name}/_manifests/v{version}.json"
        manifest_obj = res.store.put_bytes(manifest_key, manifest)
        created.append(manifest_obj)
        report = {**report, "output": {"dataset": name, "version": version,
                                       "manifest_sha256": manifest_obj.sha256}}
        for key, body in ((f"{ZONE}/{name}/_reports/v{version}.json", reports.render_json(report)),
                          (f"{ZONE}/{name}/_reports/v{version}.html", reports.render_html(report))):
            created.append(res.store.put_bytes(key, body))
        sealer = res.keys.sealer(code_index_key(project))
        with res.sessions.begin() as session:
            record = session.scalar(select(Dataset).where(Dataset.name == name))
            if record is None:
                record = Dataset(name=name, kind="research", owner=res.settings.actor)
                session.add(record)
                session.flush()
            output = DatasetVersion(
                dataset_id=record.id, version=version, zone=ZONE,
                manifest_sha256=manifest_obj.sha256, manifest_key=manifest_key,
                file_count=len(checks), total_bytes=sum(e.size for e, _ in checks),
                flow_run_id=flow_run_id, policy_hash=policy.content_hash)
            session.add(output)
            session.flush()
            for entry, _ in checks:
                session.add(DataFile(
                    dataset_version_id=output.id, role=entry.role, format=entry.format,
                    records=0, subject_id=None, sample_id=None, **stored[entry.path]))
            session.add(IntegrityManifest(
                dataset_version_id=output.id, manifest_key=signed_obj.key,
                manifest_version_id=signed_obj.version_id, document=signed,
                data_key_fingerprint=fingerprint))
            known = set(session.scalars(select(PatientCodeIndex.surrogate)
                                        .where(PatientCodeIndex.project == project)))
            for surrogate, key in code_index.items():
                if surrogate not in known:
                    session.add(PatientCodeIndex(project=project, surrogate=surrogate,
                                                 sealed_subject_key=sealer.encrypt(key.encode()).decode()))
            run = Deidentification(source_version_id=source.version_id, output_version_id=output.id,
                                   project=project, status="pending_approval", report=report,
                                   policy_hash=policy.content_hash, created_by=res.settings.actor)
            session.add(run)
            session.flush()
            run_id = run.id
    except BaseException:
        for obj in created:
            res.store.delete_version(obj.key, obj.version_id)
        raise
    return {"run": run_id, "dataset": name, "version": version, "status": "pending_approval",
            "report_key": f"{ZONE}/{name}/_reports/v{version}.html", "report": report,
            "files": {entry.path: entry.sha256 for entry, _ in checks},
            "sealed": local}


def _format_of(path: str) -> str:
    for suffix, name in ((".parquet", "parquet"), (".fastq.gz", "fastq"), (".fastq", "fastq"),
                         (".vcf", "vcf"), (".bam", "bam"), (".cram", "cram"), (".bcf", "bcf"),
                         (".vcf.gz", "vcf"), (".bai", "index"), (".crai", "index"),
                         (".tbi", "index"), (".csi", "index")):
        if path.endswith(suffix):
            return name
    return "other"


def write_table(table: pd.DataFrame, path: Path) -> Path:
    collect.write_parquet(pa.Table.from_pandas(table, preserve_index=False), path)
    return path


def approve(res: Resources, dataset: str, project: str, version: int | None, policy: Policy) -> dict:
    """The committee approves a de-identified output for release (GB/T 39725 §10.2; §10.2 i)."""
    role = policy["approver_role"]
    if res.settings.role != role:
        raise PolicyViolation(
            f"Only the {role} approves a de-identified release (GB/T 39725 §10.2); requesters never "
            f"take part (§10.2 i). The current role is '{res.settings.role}'.")
    name = output_name(dataset, project)
    with res.sessions.begin() as session:
        output = find_version(session, name, version)
        run = session.scalar(select(Deidentification).where(
            Deidentification.output_version_id == output.id))
        if run is None:
            raise DeidentificationError(f"{name} v{output.version} is not a de-identified output.")
        run.status, run.approved_by = "approved", res.settings.actor
        run.approved_at = datetime.now(timezone.utc)
        result = {"dataset": name, "version": output.version, "status": run.status,
                  "policy_hash": run.policy_hash}
    res.audit.append("deidentify.approve", f"dataset:{name}@v{result['version']}", "approved",
                     policy_hash=result["policy_hash"])
    return result


def read_code_index(res: Resources, project: str, surrogate: str, reason: str, policy: Policy) -> str:
    """Re-identification by the designated role only, each read audited (GB/T 39725 §10.2 g–h).

    Raises:
        CodeIndexDestroyed: the project's index went with its last live dataset (destroy stage).
    """
    role = policy["code_index_role"]
    obj = f"code-index:{project}/{surrogate}"
    if res.settings.role != role:
        res.audit.append("deidentify.code_index_read", obj, "refused",
                         reason=f"role {res.settings.role} is not {role}")
        raise PolicyViolation(f"Only the {role} may read the patient code index "
                              "(GB/T 39725 §10.2 g–h).")
    if not reason.strip():
        raise PolicyViolation("A read of the patient code index needs a stated reason.")
    with res.sessions() as session:
        row = session.scalar(select(PatientCodeIndex).where(
            PatientCodeIndex.project == project, PatientCodeIndex.surrogate == surrogate))
        destroyed = None if row else session.scalar(select(Deidentification).where(
            Deidentification.project == project,
            Deidentification.code_index_destroyed_at.is_not(None))
            .order_by(Deidentification.code_index_destroyed_at.desc()).limit(1))
    if row is None and destroyed is not None:
        res.audit.append("deidentify.code_index_read", obj, "refused",
                         reason="the project's code index was destroyed")
        raise CodeIndexDestroyed(project, destroyed.code_index_destroyed_at.date().isoformat(),
                                 destroyed.code_index_destruction)
    if row is None:
        raise DeidentificationError(f"No surrogate {surrogate} in project {project}.")
    sealer = res.keys.sealer(code_index_key(project), create=False)  # never a fresh key
    res.audit.append("deidentify.code_index_read", obj, "ok", reason=reason)
    return sealer.decrypt(row.sealed_subject_key.encode()).decode()

