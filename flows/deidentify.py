"""Flow ``deidentify``: an approved, classified raw version in; a de-identified research version
out (table to k >= 5, sequencing headers scrubbed, re-identification test passed), stored pending
committee approval, with a JSON + HTML report that holds no personal data."""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

from prefect import flow, unmapped
from prefect.runtime import flow_run

from expectations import deidentified
from flows import on_cluster
from infra.keystore import surrogate_key
from infra.resources import Resources, build_resources
from seqlife.collect import sample_code, subject_surrogate
from seqlife.deidentify.report import allele_frequency_summary, cohort_summary
from seqlife.deidentify.files import output_names
from seqlife.deidentify.report import summary_columns, table_report
from seqlife.deidentify.tables import load_deidentify_policy, released_quasi_identifiers
from seqlife.exceptions import SeqlifeError
from seqlife.quality import declare_release, load_quality_policy, prepare_deidentified
from seqlife.settings import Settings
from tasks import batches, lineage, quality
from tasks import deidentify as t
from tasks.classify import require_approved_classification
from tasks.lineage import recorded_artifacts, stage_of_run

SEQUENCING = ("fastq", "bam", "cram", "vcf", "bcf")


def run_deidentify(res: Resources, dataset: str, project: str, version: int | None,
                   run_id: str = "") -> dict:
    policy = load_deidentify_policy()
    obj = f"dataset:{dataset}" + (f"@v{version}" if version else "")
    res.audit.append("deidentify.start", obj, "started", reason=f"project={project}",
                     policy_hash=policy.content_hash)
    try:
        labels = require_approved_classification(res, dataset, version, "deidentify")
        source = t.load_source(res, dataset, version)
        table, samples, identifiers = t.deidentify_table(res, source, project, policy)
        name = t.output_name(dataset, project)
        quality_policy = load_quality_policy()
        release = declare_release(table.table, quality_policy, released_quasi_identifiers(table))
        frames = {"tables/clinical.parquet": (prepare_deidentified(
            release, quality_policy, table.shifts), deidentified.SUITE)}
        _, quality_report, quality_hash = quality.gate_step(
            res, frames, f"dataset:{name}",
            f"{t.ZONE}/{name}/_quality/refused-{run_id or uuid.uuid4()}.html")
        secret = res.keys.secret(surrogate_key(project))
        sample_map = {mrn: subject_surrogate(secret, mrn) for mrn in samples["mrn"]}
        name_map = {sid: sample_code(secret, sid) for sid in samples["sample_id"]}
        subject_of = dict(zip(samples["sample_id"], samples["mrn"]))
        with tempfile.TemporaryDirectory(dir=res.scratch(), prefix="deidentify-") as workdir:
            work = Path(workdir)
            outputs = [
                ("tables/clinical.parquet", "clinical", t.write_table(release, work / "c.parquet"),
                 None),
            ]
            summary_by = summary_columns(table)
            if summary_by:
                summary = cohort_summary(table.table, summary_by, int(policy["small_cells"]))
                outputs.append(("tables/cohort_summary.parquet", "summary",
                                t.write_table(summary, work / "summary.parquet"), None))
            files = t.with_lab_sample_ids(res, [f for f in source.files
                                                if f["format"] in SEQUENCING], samples)
            names = output_names(files, name_map)
            scrubbed = [one for batch in t.scrub_sequencing_files.map(
                unmapped(res), batches(files), unmapped(sample_map), unmapped(name_map),
                unmapped(workdir), unmapped(policy), unmapped(names),
                unmapped(subject_of)).result() for one in batch]
            scanned = []
            for data_file, (relative, path, _, index) in zip(files, scrubbed):
                subject = sample_map[subject_of[data_file["sample_id"]]]
                outputs.append((relative, data_file["role"], path, subject))
                scanned.append((relative, path, data_file["format"]))
                if index is not None:
                    index_relative, index_path = index
                    outputs.append((index_relative, "index", index_path, subject))
                    scanned.append((index_relative, index_path, "index"))
            scan = t.scan_outputs(scanned + [(relative, _as_text(path, work), "table")
                                      for relative, _, path, _ in outputs
                                      if relative.endswith(".parquet")], identifiers)
            vcfs = [path for relative, path, _, _ in scrubbed
                    if relative.endswith((".vcf.gz", ".vcf", ".bcf"))]
            if vcfs:
                frequencies = allele_frequency_summary(vcfs, int(policy["small_cells"]))
                outputs.append(("tables/allele_frequency.parquet", "summary",
                                t.write_table(frequencies, work / "af.parquet"), None))
            report = {
                "dataset": dataset, "project": project,
                "source": {"dataset": dataset, "version": source.version,
                           "grade": labels["grade"], "tier": labels["tier"],
                           "policy_hash": policy.content_hash},
                **table_report(table, policy),
                "files": [{"path": relative, **asdict(scrub)}
                          for relative, _, scrub, _ in scrubbed],
                "approval": {"status": "pending_approval", "approver_role": policy["approver_role"]},
                "quality": {"passed": True, "policy_hash": quality_hash,
                            "identifier_scan": scan},
            }
            inputs = [a for a in recorded_artifacts(res, dataset, source.version)
                      if a.path in {f["path"] for f in source.files
                                    if f["role"] in ("clinical", "samples")
                                    or f["format"] in SEQUENCING}]
            stored = t.store_deidentified(res, source, project, outputs, dict(table.code_index),
                                          report, policy, run_id)
            res.store.put_bytes(f"{t.ZONE}/{name}/_quality/v{stored['version']}.html",
                                quality_report.encode())
            stage, local = stage_of_run(
                "deidentify", name, stored["version"],
                stored.pop("sealed"),  # the stored ciphertext: the registry holds no plaintext
                inputs, run_id, policy.content_hash,
                {"project": project, "k": int(policy["k"]),
                 "levels": {str(q): int(v) for q, v in table.kanon.levels.items()}})
            lineage.record_stage(res, stage, local)
    except SeqlifeError as exc:
        res.audit.append("deidentify.refused", obj, "refused", reason=exc.message,
                         policy_hash=policy.content_hash)
        raise
    res.audit.append("deidentify.store", f"dataset:{stored['dataset']}@v{stored['version']}",
                     "pending_approval", reason=f"k={report['kanon']['k_achieved']}, "
                     f"{report['kanon']['suppressed']} suppressed",
                     after_digest=stored["report"]["output"]["manifest_sha256"],
                     policy_hash=policy.content_hash)
    return stored


def _as_text(parquet: Path, work: Path) -> Path:
    """A table output as UTF-8 CSV in scratch, so the identifier scan reads its values."""
    import pandas as pd

    text = work / f"{parquet.stem}.scan.csv"
    pd.read_parquet(parquet).to_csv(text, index=False)
    return text


@flow(name="deidentify", log_prints=False)
def deidentify_flow(dataset: str, project: str, version: int | None = None) -> dict:
    """De-identify a classified, approved raw dataset version for one project.

    Args:
        dataset: catalog name of a collected dataset whose classification is approved.
        project: the research project; surrogates and date shifts are secret per project.
        version: the raw version (latest by default).
    Returns:
        The stored output (`<dataset>--<project>` version), its status and the report.
    """
    return run_deidentify(build_resources(Settings.from_env()), dataset, project, version,
                          str(flow_run.id or ""))


deidentify_flow = on_cluster(deidentify_flow)
