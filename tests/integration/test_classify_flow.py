"""classify end to end on both backends: a stored proposal, steward approval with an audited
override, labels written beside the data, and the gate refusing what is not approved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import stored_path

from seqlife.exceptions import ClassificationMissing, ClassificationNotApproved, PolicyViolation

pytestmark = pytest.mark.usefixtures("prefect_backend")


@pytest.fixture
def collected(resources, cohort: Path) -> str:
    from flows.collect import collect_flow

    collect_flow(str(cohort), "cohort-c")
    return "cohort-c"


def test_proposal_labels_every_column_and_header_field(resources, collected: str) -> None:
    from flows.classify import classify_flow

    result = classify_flow(collected)
    fields = {(f["file"], f["field"]): f for f in result["fields"]}
    assert fields[("tables/clinical.parquet", "id_number")]["detector"] == "resident_id"
    assert fields[("tables/clinical.parquet", "mrn")]["identifier"] == "direct"
    assert any(f["field"] == "RG.SM" for f in result["fields"])
    labels = result["labels"]
    assert labels["grade"] == 5 and labels["tier"] == "RIF"  # special diseases + identifiers
    assert labels["data_kind"] == "raw" and not labels["shareable"]  # RARE §3.5
    assert labels["identifiable"]
    events = [(e.action, e.outcome) for e in resources.audit.entries()]
    assert ("classify.propose", "proposed") in events


def test_gate_refuses_until_a_steward_approves(resources, collected: str) -> None:
    from flows.classify import classify_flow
    from seqlife.classify.labels import Override, load_classify_policy
    from tasks.classify import approve, require_approved_classification

    with pytest.raises(ClassificationMissing, match="has not been classified"):
        require_approved_classification.fn(resources, collected, None, "deidentify")
    classify_flow(collected)
    with pytest.raises(ClassificationNotApproved, match="proposed but not approved"):
        require_approved_classification.fn(resources, collected, None, "deidentify")
    refusals = [e for e in resources.audit.entries() if e.action == "deidentify.gate"]
    assert [e.outcome for e in refusals] == ["refused", "refused"]

    override = Override("tables/clinical.parquet", "lab_alt_u_l", 2, None, "lab values reviewed")
    result = approve(resources, collected, None, [override], load_classify_policy())
    labels = require_approved_classification.fn(resources, collected, None, "deidentify")
    assert labels["grade"] == result["labels"]["grade"] == 5
    sidecar = json.loads(resources.store.get_bytes(result["labels_key"]))
    assert sidecar["approved_by"] == "test-steward" and sidecar["labels"]["tier"] == "RIF"
    assert any(f["override_reason"] == "lab values reviewed" for f in sidecar["fields"])
    actions = [(e.action, e.reason) for e in resources.audit.entries()]
    assert ("classify.override", "lab values reviewed") in actions
    assert any(a == "classify.approve" for a, _ in actions)
    assert resources.audit.verify().ok


def test_only_a_steward_approves(resources, collected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from flows.classify import classify_flow
    from infra.resources import Resources
    from seqlife.classify.labels import load_classify_policy
    from tasks.classify import approve

    classify_flow(collected)
    operator = Resources(**{**resources.__dict__,
                            "settings": replace(resources.settings, role="operator")})
    with pytest.raises(PolicyViolation, match="Only a data steward"):
        approve(operator, collected, None, [], load_classify_policy())


def test_an_unknown_header_field_is_approved_only_with_a_steward_override(
        resources, cohort: Path) -> None:
    """Fail closed (GB/T 39725 §10.2 a, d; SEQ §5): the synthetic cohort has no unknown header
    field, but a lab BAM whose read group carries a custom key is not approved until a steward
    decides that key, with a reason, through --override."""
    import pysam

    from flows.classify import classify_flow
    from flows.collect import collect_flow
    from seqlife.classify.labels import Override, load_classify_policy
    from seqlife.exceptions import HeaderFieldsUndecided
    from tasks.classify import approve, require_approved_classification

    bam = sorted((cohort / "seq").glob("*.bam"))[0]
    with pysam.AlignmentFile(str(bam), "rb") as original:
        text = str(original.header).replace("\tPL:ILLUMINA", "\tPL:ILLUMINA\txx:site-7")
        reads = list(original.fetch(until_eof=True))
    header = pysam.AlignmentHeader.from_text(text)
    with pysam.AlignmentFile(str(bam), "wb", header=header) as out:
        for read in reads:
            out.write(pysam.AlignedSegment.fromstring(read.to_string(), header))
    collect_flow(str(cohort), "cohort-h")
    result = classify_flow("cohort-h")
    unknown = [(f["file"], f["field"]) for f in result["fields"] if f["identifier"] == "unknown"
               and f["file"].startswith("seq/")]
    stored = stored_path(resources, cohort, f"seq/{bam.name}")  # the sample ID coded
    assert unknown == [(stored, "RG.xx")]  # and nothing else in the cohort
    policy = load_classify_policy()
    with pytest.raises(HeaderFieldsUndecided, match=f"--override {stored}:RG.xx="):
        approve(resources, "cohort-h", None, [], policy)
    with pytest.raises(ClassificationNotApproved):
        require_approved_classification.fn(resources, "cohort-h", None, "deidentify")
    decided = Override(stored, "RG.xx", 4, "free_text",
                       "site code; de-identification removes it")
    approve(resources, "cohort-h", None, [decided], policy)
    require_approved_classification.fn(resources, "cohort-h", None, "deidentify")
