"""Flow ``classify``: propose labels for a stored dataset version; a steward then approves them.

Later stages call ``tasks.classify.require_approved_classification`` first and stop when the
classification is missing, unapproved or was made for other content.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow

from infra.resources import Resources, build_resources
from seqlife.classify.detectors import load_detectors
from seqlife.classify.labels import load_classify_policy
from seqlife.exceptions import SeqlifeError
from seqlife.settings import Settings
from tasks import classify as t


def run_classify(res: Resources, dataset: str, version: int | None) -> dict:
    policy, detectors = load_classify_policy(), load_detectors()
    rules_hash = t.policy_hash(policy, detectors)
    obj = f"dataset:{dataset}" + (f"@v{version}" if version else "")
    try:
        version_id, fields, summary = t.label_version(res, dataset, version, policy, detectors)
        proposal_id = t.store_proposal(res, version_id, fields, summary, rules_hash)
    except SeqlifeError as exc:
        res.audit.append("classify.refused", obj, "refused", reason=exc.message,
                         policy_hash=rules_hash)
        raise
    field_rows = [asdict(f) for f in fields]
    labels = asdict(summary)
    res.audit.append("classify.propose", obj, "proposed",
                     reason=f"grade {summary.grade}, tier {summary.tier}, {len(fields)} fields",
                     after_digest=t.labels_digest(labels, field_rows), policy_hash=rules_hash)
    return {"dataset": dataset, "proposal": proposal_id, "status": "proposed", "labels": labels,
            "fields": field_rows, "policy_hash": rules_hash}


@flow(name="classify", log_prints=False)
def classify_flow(dataset: str, version: int | None = None) -> dict:
    """Propose category, grade, tier and field labels for a dataset version (latest by default).

    Args:
        dataset: catalog name of a collected dataset.
        version: the version to classify; the latest when omitted.
    Returns:
        The proposal: dataset labels, one label per column/header field with its evidence.
    """
    return run_classify(build_resources(Settings.from_env()), dataset, version)
