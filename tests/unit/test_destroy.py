"""Destroy, retention and drill decisions (pure core)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqlife import destroy
from seqlife.exceptions import PolicyFileError
from seqlife.policy import Rule

POLICY = destroy.load_destroy_policy()


def clock(ends: date, destroyed: bool = False, proof: bool = False) -> destroy.AgreementClock:
    return destroy.AgreementClock("dua-1", "Fudan University", ends, destroyed, proof)


def test_sweep_destroys_after_the_end_and_flags_a_late_proof() -> None:
    """GB/T 39725 §11.4.2.6; RARE §4.4: copies go once the use period is over (within 30 days);
    a requester proof missing 30 days after the end is overdue."""
    ends = date(2027, 1, 31)
    assert destroy.sweep([clock(ends)], ends, POLICY).destroy == ()
    day_after = destroy.sweep([clock(ends)], ends + timedelta(days=1), POLICY)
    assert day_after.destroy == ("dua-1",) and day_after.overdue_proofs == ()
    late = destroy.sweep([clock(ends, destroyed=True)], ends + timedelta(days=31), POLICY)
    assert late.destroy == () and late.overdue_proofs == ("dua-1",)
    filed = destroy.sweep([clock(ends, destroyed=True, proof=True)], ends + timedelta(days=31),
                          POLICY)
    assert filed.overdue_proofs == ()
    assert destroy.destruction_deadline(ends, POLICY) == date(2027, 3, 2)


@given(st.lists(st.sampled_from(destroy.DATASET_STEPS), unique=True))
def test_a_resumed_destruction_never_repeats_a_step(done: list[str]) -> None:
    """§11.7.4.3 a: resumable and idempotent: the remaining steps keep their order."""
    remaining = destroy.next_steps(destroy.DATASET_STEPS, [{"step": s, "done": True}
                                                           for s in done])
    assert set(remaining) == set(destroy.DATASET_STEPS) - set(done)
    assert remaining == [s for s in destroy.DATASET_STEPS if s in remaining]


def test_retention_review_every_five_years() -> None:
    """§11.3.4.6 a 4."""
    made = date(2020, 2, 29)
    rows = [("d", 1, made, None), ("e", 1, date(2024, 1, 1), None)]
    due = destroy.retention_due(rows, date(2025, 3, 1), POLICY)
    assert due == [("d", 1, date(2025, 2, 28))]
    assert destroy.retention_due(rows, date(2025, 2, 27), POLICY) == []


def test_destruction_certificate_cites_its_rules_and_the_report_renders() -> None:
    body = destroy.certificate("dst-1", "dataset", "cohort", "retention", [{"step": "x"}],
                               ["store"], [], [], "2026-11-23T00:00:00+00:00", POLICY)
    assert body["remnants"] == [] and "§11.7.4.3 a" in body["clauses"][0]
    page = destroy.drill_report_html({"title": "Drill <1>", "checks": [
        {"check": "a", "ok": True, "detail": "<b>"}], "passed": True, "description": "d"})
    assert "Drill &lt;1&gt;" in page and "&lt;b&gt;" in page and "passed" in page


def test_a_certificate_is_never_issued_over_remnants() -> None:
    """GB/T 39725 §11.7.4.3 a: what verification found goes on the certificate; finding anything
    refuses the certificate with a typed error instead of a paper saying destroyed."""
    with pytest.raises(destroy.DestructionIncomplete, match="1 remnant") as refused:
        destroy.certificate("dst-1", "dataset", "cohort", "retention", [], ["store"],
                            ["store: 01_raw/cohort/clinical.csv"], [], "2026-11-23", POLICY)
    assert refused.value.attrs["remnants"] == ["store: 01_raw/cohort/clinical.csv"]


def link(project: str, dataset: str, role: str, live: bool = True) -> destroy.ProjectLink:
    return destroy.ProjectLink(project, dataset, role, live)


def test_the_code_index_goes_with_the_last_live_dataset_of_its_project() -> None:
    """GB/T 39725 §10.2 f–h, §11.7.4.3 a: destroying a dataset destroys the code index of each
    of its projects unless another live dataset (raw source or de-identified output) of that
    project still needs it; the certificate then names those datasets."""
    links = [link("p1", "raw", "source"), link("p1", "raw--p1", "output"),
             link("p2", "raw", "source"), link("p2", "raw--p2", "output", live=False),
             link("p3", "other", "source")]
    fates = {f.project: f for f in destroy.code_index_fates("raw", links, POLICY)}
    assert set(fates) == {"p1", "p2"}  # p3 does not involve the dataset
    assert fates["p1"].kept_for == ("raw--p1",) and not fates["p1"].destroyed
    assert fates["p2"].destroyed and fates["p2"].as_record()["kept_for"] == []
    record = fates["p1"].as_record()
    assert record["destroyed"] is False and "raw--p1" in record["why"]
    last = destroy.code_index_fates("raw--p1", [replace(x, live=False) if x.dataset == "raw"
                                                else x for x in links], POLICY)
    assert [(f.project, f.destroyed) for f in last] == [("p1", True)]
    body = destroy.certificate("dst-2", "dataset", "raw", "retention", [], ["store"], [],
                               [f.as_record() for f in fates.values()], "2026-11-23", POLICY)
    assert body["code_index"][0]["kept_for"] == ["raw--p1"]
    assert POLICY.clause("patient_code_index") in body["clauses"]


def test_the_policy_says_which_datasets_keep_the_code_index() -> None:
    """The roles that keep an index are policy (read, checked): only outputs keep it here."""
    only_outputs = replace(POLICY, rules={**POLICY.rules, "patient_code_index": Rule(
        {"kept_while_live": ["output"]}, "GB/T 39725 §10.2 f–h")})
    fates = destroy.code_index_fates("raw--p1", [link("p1", "raw", "source"),
                                                 link("p1", "raw--p1", "output")], only_outputs)
    assert fates[0].destroyed
    wrong = replace(POLICY, rules={**POLICY.rules, "patient_code_index": Rule(
        {"kept_while_live": ["shares"]}, "GB/T 39725 §10.2 f–h")})
    with pytest.raises(PolicyFileError, match="kept_while_live"):
        destroy.code_index_fates("raw", [link("p1", "raw", "source")], wrong)
