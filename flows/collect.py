"""Flow ``collect``: validate a delivery completely, then store and register it as one raw version.

Nothing is stored before every file and table has been parsed, every subject linked to a
covering consent and the quality gate passed (clinical, variant and sequencing-QC suites); the
version is then recorded in the lineage registry. A refusal is written to the audit trail and
leaves earlier versions untouched.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from pathlib import Path

from prefect import flow, unmapped
from prefect.runtime import flow_run

from flows import on_cluster
from infra.resources import Resources, build_resources
from seqlife.collect import coded_path, load_collect_policy
from seqlife.exceptions import SeqlifeError
from seqlife.quality import load_quality_policy
from seqlife.settings import Settings
from tasks import batches, lineage, quality
from tasks import collect as t
from tasks.lineage import stage_of_run


def run_collect(res: Resources, source: str, dataset: str, scenario: str, owner: str,
                run_id: str, column_map: str | None = None, accept_map: bool = False
                ) -> t.Registered:
    """The collect steps in order; shared by the flow and by callers that hold resources."""
    policy = load_collect_policy()
    obj = f"dataset:{dataset}"
    res.audit.append("collect.start", obj, "started", reason=f"scenario={scenario}",
                     policy_hash=policy.content_hash)
    codes: dict[str, str] = {}
    try:
        delivery = t.read_delivery(source, policy, str(res.settings.home / "maps"), column_map,
                                   accept_map)
        plan = t.plan_collection(delivery, scenario, policy)
        codes = t.sample_codes(res, plan)
        references = res.references(tuple((delivery.source / path, path)
                                          for path in delivery.references))
        with t.new_workdir(res) as workdir:
            seal = (res.data_keys.public_key(dataset), workdir)  # FASTQ: sealed as validated
            futures = t.check_sequencing_files.map(
                unmapped(str(delivery.source)), batches(plan.files), unmapped(policy),
                unmapped(codes), unmapped(str(references)), unmapped(seal))
            futures.wait()  # every batch has stopped writing to the workdir before a refusal
            checked = [one for batch in futures.result() for one in batch]
            checks = [check for check, _ in checked]
            presealed = {check.path: sealed for check, sealed in checked if sealed is not None}
            sequencing = [(coded_path(planned.path, codes), delivery.source / planned.path,
                           check.format)
                          for check, planned in zip(checks, plan.files)]
            frames = quality.intake_frames(delivery.tables["clinical"].to_pandas(), sequencing,
                                           load_quality_policy())
            _, report, _ = quality.gate_step(
                res, frames, obj, f"{policy['raw_zone']}/{dataset}/_quality/refused-"
                                  f"{run_id or uuid.uuid4()}.html")
            tables = t.stage_tables(delivery, plan, workdir)
            sources = [(check, delivery.source / planned.path, planned)
                       for check, planned in zip(checks, plan.files)]
            sources += [(check, path, None) for check, path in tables]
            registered = t.store_and_register(res, dataset, owner, plan, sources, policy, run_id,
                                              workdir, presealed)
            if registered.created:
                res.store.put_bytes(f"{policy['raw_zone']}/{dataset}/_quality/"
                                    f"v{registered.version}.html", report.encode())
                res.store.put_bytes(f"{policy['raw_zone']}/{dataset}/_maps/"
                                    f"v{registered.version}.yaml", delivery.column_map.render())
            stage, files = stage_of_run(  # the stored ciphertext, never the delivery's bytes
                "collect", dataset, registered.version,
                {path: (sha, Path(copy)) for path, (sha, copy) in registered.sealed.items()},
                (), run_id, policy.content_hash, {"scenario": scenario})
            lineage.record_stage(res, stage, files)
    except SeqlifeError as exc:
        if codes:  # the person at the terminal reads the lab's names; the records, codes
            exc.record_as(coded_path(exc.message, codes))
        res.audit.append("collect.refused", obj, "refused", reason=str(exc),
                         policy_hash=policy.content_hash)
        raise
    for code in registered.excluded_subjects:
        res.audit.append("collect.exclude", f"subject:{code}", "excluded",
                         reason="consent withdrawn (RARE §4.9)", policy_hash=policy.content_hash)
    if registered.created:
        renamed = sum(1 for a, b in delivery.column_map.columns.items() if a != b)
        res.audit.append("collect.map", f"{obj}@v{registered.version}", "ok",
                         after_digest=delivery.column_map.digest,
                         reason=f"clinical columns: {renamed} mapped onto the schema by a "
                                f"steward-approved map" if renamed else
                                "clinical columns carry the schema's names",
                         policy_hash=policy.content_hash)
    res.audit.append("collect.register" if registered.created else "collect.unchanged",
                     f"{obj}@v{registered.version}", "ok", after_digest=registered.manifest_sha256,
                     reason=f"{registered.files} files, {registered.total_bytes} bytes",
                     policy_hash=policy.content_hash)
    return registered


@flow(name="collect", log_prints=False)
def collect_flow(source: str, dataset: str, scenario: str = "research", owner: str = "",
                 column_map: str | None = None, accept_map: bool = False) -> dict:
    """Ingest a delivery directory (as ``seqlife synth`` lays it out) as a raw dataset version.

    Args:
        source: directory holding clinical/consents/samples tables and the sequencing files.
        dataset: catalog name of the dataset.
        scenario: the use the subjects' consent must cover (policy collect.scenario_scopes).
        owner: the named owner of the dataset (GB/T 39725 §11.3.4.4 c).
        column_map: a steward's map of the clinical table's own columns onto the schema.
        accept_map: the steward accepts the map proposed from the columns' content.
    Returns:
        A summary: dataset, version, whether a new version was created, counts and digests.
    """
    settings = Settings.from_env()
    res = build_resources(settings)
    registered = run_collect(res, str(Path(source).resolve()), dataset, scenario,
                             owner or settings.actor, str(flow_run.id or ""),
                             str(Path(column_map).resolve()) if column_map else None, accept_map)
    return asdict(registered)


collect_flow = on_cluster(collect_flow)
