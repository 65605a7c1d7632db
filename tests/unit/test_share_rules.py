"""Share rules, pure core: pre-review checks, consent by DUO code, reviewer draw and tally, data use
agreements and the cross-border cap — each test names the clause it enforces."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlife.exceptions import SeqlifeError
from seqlife.share import rules

POLICY = rules.load_share_policy()
TODAY = date(2026, 11, 23)
CRITERIA = ("legality", "need_consistency", "value", "leakage_risk", "cost")


def request_doc(**changes) -> dict:
    doc = {
        "institution": "Shanghai Children's Hospital", "applicant": "Dr Researcher",
        "project": "NSFC 8200000", "funded": True, "qualifications": ["attending physician"],
        "plan": {"purpose": "genotype-phenotype of disorder X", "inclusion": "confirmed X",
                 "exclusion": "no consent", "variables": ["age_band", "sex", "gene", "hpo"],
                 "endpoints": "diagnostic yield", "analysis": "logistic regression"},
        "duo_codes": ["DUO:0000007"], "dataset": "cohort--p1", "version": 2,
        "variables": ["age_band", "sex", "gene"], "records": 100,
        "destination_country": "CN", "tier": "enclave",
    }
    doc.update(changes)
    return doc


def request(**changes) -> rules.ShareRequest:
    return replace(rules.parse_request(request_doc(), "R-1"), **changes)


def facts(**changes) -> rules.DatasetFacts:
    base = dict(dataset="cohort--p1", version=2, certified=True, zone="03_deidentified",
                deidentified=True, important_data=False,
                columns=frozenset({"age_band", "sex", "gene", "hpo", "region"}),
                allowed_tiers=frozenset({"enclave", "aggregate"}))
    base.update(changes)
    return rules.DatasetFacts(**base)


def grant(**changes) -> rules.PastGrant:
    base = dict(request_id="R-0", institution="Shanghai Children's Hospital", dataset="cohort--p1",
                variables=frozenset({"age_band"}), records=100, decided_on=date(2026, 1, 10),
                destination_country="CN")
    base.update(changes)
    return rules.PastGrant(**base)


def check(req: rules.ShareRequest | None = None, fx: rules.DatasetFacts | None = None, *,
          past=(), blacklisted=()) -> dict[str, rules.Finding]:
    findings = rules.check_request(req or request(), fx or facts(), past=list(past),
                                   blacklisted=set(blacklisted), today=TODAY, policy=POLICY)
    return {f.rule: f for f in findings}


def failed(findings: dict[str, rules.Finding]) -> set[str]:
    return {name for name, f in findings.items() if not f.ok}


# --- policy ---------------------------------------------------------------------------------


def test_share_policy_loads_every_rule_with_a_clause() -> None:
    """GB/T 39725 App. C art. 11, §7 o–p; RARE §3.7: share rules are data, each with its clause."""
    assert set(POLICY.rules) == rules.REQUIRED_RULES
    assert all(rule.clause for rule in POLICY.rules.values())
    assert POLICY["approval_fraction"] == {"numerator": 2, "denominator": 3}
    assert POLICY["cross_border_record_cap"] == 250 and POLICY["max_extensions"] == 2
    assert POLICY.clause("approval_fraction") == "GB/T 39725 App. C art. 11"


def test_duo_purposes_use_collect_consent_scopes() -> None:
    """GB/T 39725 §7 a–b: DUO codes map to the consent scopes collect records, nothing else."""
    from seqlife.collect import load_collect_policy

    known = {s for scopes in load_collect_policy()["scenario_scopes"].values() for s in scopes}
    for scopes in POLICY["duo_purposes"].values():
        assert set(scopes) <= known


# --- parse ----------------------------------------------------------------------------------


def test_parse_request_builds_the_request() -> None:
    """RARE §4.1.2: the request carries a structured research plan."""
    req = rules.parse_request(request_doc(destination_country="de"), "R-1")
    assert req.id == "R-1" and req.plan.variables == ("age_band", "sex", "gene", "hpo")
    assert req.destination_country == "DE" and req.applicant_is_institution is True
    assert rules.parse_request({k: v for k, v in request_doc().items() if k != "version"},
                               "R-1").version is None


@pytest.mark.parametrize("doc, field", [
    ({k: v for k, v in request_doc().items() if k != "institution"}, "'institution' is missing"),
    (request_doc(records="100"), "'records'"),
    (request_doc(records=True), "'records'"),
    (request_doc(records=0), "'records'"),
    (request_doc(funded="yes"), "'funded'"),
    (request_doc(tier="usb"), "'tier'"),
    (request_doc(variables="age_band"), "'variables'"),
    (request_doc(variables=[]), "'variables'"),
    (request_doc(duo_codes=[]), "'duo_codes'"),
    (request_doc(version="latest"), "'version'"),
    (request_doc(plan="see attachment"), "'plan'"),
    (request_doc(plan={"purpose": "p"}), "'plan.inclusion' is missing"),
    (request_doc(destination_country="1 2"), "'destination_country'"),
    (request_doc(applicant_is_institution="no"), "'applicant_is_institution'"),
    (request_doc(instituton="typo"), "unknown field"),
])
def test_parse_request_names_the_field_and_never_echoes_values(doc, field) -> None:
    """RARE §4.1: a malformed request is refused naming the field, without quoting its value."""
    doc = {**doc, "applicant": "Zhang Wei 13812345678"}
    with pytest.raises(rules.ShareError, match=field) as info:
        rules.parse_request(doc, "R-1")
    assert "Zhang" not in str(info.value) and "13812345678" not in str(info.value)
    assert info.value.stage == "share" and isinstance(info.value, SeqlifeError)


# --- pre-review checks ----------------------------------------------------------------------


def test_complete_request_passes_every_check() -> None:
    """GB/T 39725 §11.4.2.2; RARE §3.5–3.6, §4.1: a complete request goes to review."""
    findings = check()
    assert set(findings) >= {"institution", "funded_project", "research_plan",
                             "certified_research_data", "minimum_necessary", "piecemeal",
                             "blacklist", "tier", "cross_border"}
    assert failed(findings) == set()
    rules.require_passed(request(), list(findings.values()))


def test_individual_applicant_is_refused() -> None:
    """RARE §3.6: institutions apply, not individuals."""
    findings = check(request(applicant_is_institution=False))
    assert failed(findings) == {"institution"}
    assert findings["institution"].clause.startswith("RARE §3.6")


def test_unfunded_or_unqualified_applicant_is_refused() -> None:
    """RARE §3.6, §4.1.1: a qualified researcher with a funded project."""
    assert failed(check(request(funded=False))) == {"funded_project"}
    assert failed(check(request(qualifications=()))) == {"qualified_researcher"}


def test_incomplete_research_plan_is_refused_naming_the_missing_parts() -> None:
    """RARE §4.1.2: purpose, inclusion/exclusion, variables, endpoints and analysis plan."""
    req = request()
    req = replace(req, plan=replace(req.plan, endpoints=" ", analysis=""))
    finding = check(req)["research_plan"]
    assert not finding.ok and "endpoints" in finding.detail and "analysis" in finding.detail
    assert finding.clause == "RARE §4.1.2"


@pytest.mark.parametrize("change", [{"certified": False}, {"zone": "01_raw"},
                                    {"zone": "02_classified"}, {"deidentified": False}])
def test_uncertified_raw_or_registry_data_is_refused(change) -> None:
    """RARE §3.5: only certified research data is shared, never raw or registry data."""
    findings = check(fx=facts(**change))
    assert "certified_research_data" in failed(findings)
    assert findings["certified_research_data"].clause == "RARE §3.5"


def test_variables_beyond_the_plan_or_the_dataset_are_refused() -> None:
    """GB/T 39725 §11.4.2.2; RARE §4.1: minimum necessary — only what the plan needs."""
    findings = check(request(variables=("age_band", "region")))
    assert failed(findings) == {"minimum_necessary"}
    assert "region" in findings["minimum_necessary"].detail
    req = request()
    req = replace(req, variables=("age_band", "phone"),
                  plan=replace(req.plan, variables=("age_band", "phone")))
    assert "not in the dataset" in check(req)["minimum_necessary"].detail


def test_piecemeal_request_is_refused_when_past_grants_exceed_the_plan() -> None:
    """GB/T 39725 §11.4.2.2: past requests are checked to prevent leakage in instalments."""
    earlier = grant(variables=frozenset({"region", "age_band"}))
    findings = check(past=[earlier])
    assert failed(findings) == {"piecemeal"}
    assert "region" in findings["piecemeal"].detail
    assert findings["piecemeal"].clause == "GB/T 39725 §11.4.2.2"


def test_piecemeal_ignores_other_institutions_datasets_and_old_grants() -> None:
    """GB/T 39725 §11.4.2.2: only the same institution, dataset and window count together."""
    extra = frozenset({"region"})
    past = [grant(variables=extra, institution="Other Hospital"),
            grant(variables=extra, dataset="other--p2"),
            grant(variables=extra, decided_on=date(2023, 11, 1)),
            grant(variables=frozenset({"hpo"}))]  # within this plan: fine
    assert failed(check(past=past)) == set()


def test_blacklisted_institution_or_applicant_is_refused() -> None:
    """RARE §4.11: offenders are blacklisted and no longer accepted."""
    for name in ("shanghai children's hospital", "Dr Researcher"):
        findings = check(blacklisted=[name])
        assert failed(findings) == {"blacklist"}
        assert "Dr Researcher" not in findings["blacklist"].detail


def test_tier_not_allowed_for_the_dataset_is_refused() -> None:
    """GB/T 39725 §6.5 Table 2: the sharing form must be one allowed for the data."""
    assert failed(check(request(tier="file"))) == {"tier"}


def test_require_passed_lists_every_failed_check_with_its_clause() -> None:
    """RARE §3.5–3.6: the refusal names every failed check and its clause."""
    req = request(applicant_is_institution=False)
    findings = list(check(req, facts(certified=False)).values())
    with pytest.raises(rules.RequestRefused) as info:
        rules.require_passed(req, findings)
    assert {f.rule for f in info.value.findings} == {"institution", "certified_research_data"}
    message = str(info.value)
    assert "RARE §3.6" in message and "RARE §3.5" in message and "2 check(s)" in message
    assert "Dr Researcher" not in message


def test_catalog_facts_must_describe_the_requested_version() -> None:
    """RARE §3.5: checks run against the version actually requested."""
    with pytest.raises(rules.ShareError, match="not the requested"):
        check(fx=facts(version=3))


# --- cross-border ---------------------------------------------------------------------------


def cb(records: int, already: int = 0, **kw) -> rules.Finding:
    args = dict(deidentified=True, important_data=False, approved=True)
    args.update(kw)
    return rules.cross_border_check("DE", records, already, policy=POLICY, **args)


def test_cross_border_250_records_pass_and_the_251st_is_refused() -> None:
    """GB/T 39725 §7 o–p: at most 250 records cumulatively per destination."""
    assert cb(250).ok and cb(50, already=200).ok
    refused = cb(1, already=250)
    assert not refused.ok and "251" in refused.detail and "authorities" in refused.detail
    assert refused.clause == "GB/T 39725 §7 o–p"


@pytest.mark.parametrize("kw, text", [({"important_data": True}, "important"),
                                      ({"deidentified": False}, "not de-identified"),
                                      ({"approved": False}, "not approved")])
def test_cross_border_refuses_important_identifiable_or_unapproved_data(kw, text) -> None:
    """GB/T 39725 §7 o–p: only de-identified, non-important data after committee approval."""
    finding = cb(1, **kw)
    assert not finding.ok and text in finding.detail


def test_domestic_transfer_has_no_cross_border_limit() -> None:
    """GB/T 39725 §7 o–p: the cap applies to transfers abroad only."""
    assert rules.cross_border_check("cn", 10_000, 0, deidentified=True, important_data=True,
                                    approved=False, policy=POLICY).ok


def test_check_request_counts_past_grants_to_the_same_country() -> None:
    """GB/T 39725 §7 p: the cap is cumulative per destination country, over all recipients."""
    req = request(destination_country="DE", records=51)
    past = [grant(records=200, destination_country="DE", institution="Other Hospital",
                  dataset="other--p2"),
            grant(records=200, destination_country="US")]
    assert failed(check(req, past=past)) == {"cross_border"}
    assert failed(check(replace(req, records=50), past=past)) == set()
    assert failed(check(replace(req, records=1), facts(important_data=True))) == {"cross_border"}


# --- consent --------------------------------------------------------------------------------


CONSENTS = {
    "S-1": (frozenset({"research"}), False),
    "S-2": (frozenset({"broad"}), False),
    "S-3": (frozenset({"research"}), True),      # withdrew
    "S-4": (frozenset({"clinical"}), False),     # clinical use only
}


def test_withdrawn_or_uncovered_subjects_are_excluded() -> None:
    """GB/T 39725 §7 a–b; RARE §4.9: withdrawn consent and use beyond the consented scope exclude.
    """
    eligible, excluded = rules.eligible_subjects(CONSENTS, ["DUO:0000007", "DUO:0000042"], POLICY)
    assert eligible == {"S-1", "S-2"} and excluded == {"S-3", "S-4"}


def test_unknown_duo_code_is_an_error() -> None:
    """GB/T 39725 §7 a: consent coverage cannot be judged for a use the policy does not define."""
    with pytest.raises(rules.ShareError, match="DUO:9999999"):
        rules.eligible_subjects(CONSENTS, ["DUO:9999999"], POLICY)
    with pytest.raises(rules.ShareError, match="at least one DUO"):
        rules.eligible_subjects(CONSENTS, [], POLICY)


# --- reviewers and tally --------------------------------------------------------------------


POOL = [rules.Reviewer(f"E{i:02d}", f"Institute {i % 4}") for i in range(12)]


def test_reviewers_with_a_conflict_of_interest_are_recused() -> None:
    """GB/T 39725 §11.4.2.3; App. C art. 11: drawn at random from the pool, without conflicts."""
    req = request(institution="Institute 1")
    pool = POOL + [rules.Reviewer("X1", "Elsewhere", frozenset({"Dr Researcher"})),
                   rules.Reviewer("X2", "Elsewhere", frozenset({"institute 1"}))]
    for seed in (b"a", b"b", b"c", b"d"):
        drawn = rules.draw_reviewers(pool, req, seed, POLICY)
        assert len(drawn) == 5 and len({r.id for r in drawn}) == 5
        assert all(r.institution != "Institute 1" and not r.id.startswith("X") for r in drawn)


def test_draw_is_deterministic_for_a_seed_and_independent_of_pool_order() -> None:
    """GB/T 39725 §11.4.2.3: the random draw can be replayed by an auditor."""
    req = request()
    first = rules.draw_reviewers(POOL, req, b"meeting-2026Q4", POLICY)
    assert rules.draw_reviewers(list(reversed(POOL)), req, b"meeting-2026Q4", POLICY) == first
    others = {tuple(r.id for r in rules.draw_reviewers(POOL, req, bytes([i]), POLICY))
              for i in range(10)}
    assert len(others) > 1


def test_too_few_reviewers_without_conflict_is_an_error() -> None:
    """RARE §4.2: five reviewers free of conflicts are needed."""
    req = request(institution="Institute 1")
    with pytest.raises(rules.ReviewError, match="Enlarge the expert pool"):
        rules.draw_reviewers(POOL[:6], req, b"s", POLICY)


def votes(yes: int, no: int, score: int = 4) -> tuple[list[str], list[rules.Vote]]:
    drawn = [f"E{i}" for i in range(yes + no)]
    scores = dict.fromkeys(CRITERIA, score)
    return drawn, [rules.Vote(r, i < yes, scores) for i, r in enumerate(drawn)]


@pytest.mark.parametrize("yes, no, approved", [(4, 1, True), (3, 2, False), (2, 1, False),
                                               (3, 0, True), (5, 0, True), (0, 5, False)])
def test_approval_needs_more_than_two_thirds(yes, no, approved) -> None:
    """GB/T 39725 App. C art. 11: more than two thirds of the reviewers must vote yes."""
    drawn, cast = votes(yes, no)
    decision = rules.tally(drawn, cast, POLICY)
    assert decision.approved is approved
    assert (decision.in_favour, decision.voters) == (yes, yes + no)
    assert f"{yes} of {yes + no} reviewers in favour" in decision.message
    assert "more than 2/3" in decision.message and "App. C art. 11" in decision.message
    assert decision.message.startswith("Approved" if approved else "Not approved")
    assert decision.mean_scores == dict.fromkeys(CRITERIA, 4.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=30).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n))))
def test_tally_approves_iff_in_favour_times_three_exceeds_voters_times_two(case) -> None:
    """GB/T 39725 App. C art. 11: approved iff yes/voters > 2/3, computed exactly in integers."""
    voters, yes = case
    drawn, cast = votes(yes, voters - yes)
    assert rules.tally(drawn, cast, POLICY).approved is (yes * 3 > voters * 2)


def test_double_outsider_and_missing_votes_are_refused() -> None:
    """GB/T 39725 §11.4.2.3; App. C art. 11: each drawn reviewer votes once, nobody else votes."""
    drawn, cast = votes(4, 1)
    with pytest.raises(rules.ReviewError, match="more than once"):
        rules.tally(drawn, cast + [cast[0]], POLICY)
    with pytest.raises(rules.ReviewError, match="not drawn"):
        rules.tally(drawn, cast + [replace(cast[0], reviewer="intruder")], POLICY)
    with pytest.raises(rules.ReviewError, match="1 of 5 drawn reviewer"):
        rules.tally(drawn, cast[:4], POLICY)


@pytest.mark.parametrize("scores, text", [
    (dict.fromkeys(CRITERIA, 6), "from 1 to 5"),
    (dict.fromkeys(CRITERIA, 0), "from 1 to 5"),
    ({**dict.fromkeys(CRITERIA, 3), "cost": 2.5}, "from 1 to 5"),
    ({c: 3 for c in CRITERIA if c != "cost"}, "missing: cost"),
    ({**dict.fromkeys(CRITERIA, 3), "charm": 3}, "unknown: charm"),
])
def test_incomplete_or_out_of_range_scores_are_refused(scores, text) -> None:
    """GB/T 39725 §11.4.2.3 Table 8: every criterion scored within the scale."""
    drawn, cast = votes(5, 0)
    cast[2] = replace(cast[2], scores=scores)
    with pytest.raises(rules.ReviewError, match=text):
        rules.tally(drawn, cast, POLICY)


# --- agreement ------------------------------------------------------------------------------


def agreement(**kw) -> rules.Agreement:
    args = dict(agreement_id="DUA-1", starts=date(2026, 1, 31), months=12,
                protection_measures=["encrypted enclave", "no linkage"],
                emergency_plan="notify the controller within 24 h")
    args.update(kw)
    return rules.new_agreement(request(), **args)


def test_agreement_runs_for_the_agreed_months() -> None:
    """GB/T 39725 §11.4.2.5; RARE §4.3: a signed agreement with a use period."""
    dua = agreement()
    assert (dua.starts, dua.ends, dua.extensions) == (date(2026, 1, 31), date(2027, 1, 31), 0)
    assert dua.request_id == "R-1" and dua.institution == "Shanghai Children's Hospital"
    rules.require_active(dua, date(2026, 1, 31))
    rules.require_active(dua, date(2027, 1, 31))


@pytest.mark.parametrize("kw, text", [({"protection_measures": [" "]}, "protection measures"),
                                      ({"emergency_plan": ""}, "emergency plan"),
                                      ({"months": 0}, "use period")])
def test_agreement_without_protections_plan_or_period_is_refused(kw, text) -> None:
    """GB/T 39725 §11.4.2.5; RARE §4.3: protection measures, leak emergency plan, use period."""
    with pytest.raises(rules.AgreementError, match=text):
        agreement(**kw)


def test_expired_or_not_yet_active_agreement_is_refused() -> None:
    """GB/T 39725 §11.4.2.5: no use outside the agreed period."""
    dua = agreement()
    with pytest.raises(rules.AgreementError, match="expired on 2027-01-31"):
        rules.require_active(dua, date(2027, 2, 1))
    with pytest.raises(rules.AgreementError, match="not in force"):
        rules.require_active(dua, date(2026, 1, 30))


def test_third_extension_is_refused() -> None:
    """RARE §3.7: extension by written request, at most twice."""
    dua = agreement()
    once = rules.extend(dua, date(2027, 7, 30), "analysis delayed by reviewer requests", POLICY)
    twice = rules.extend(once, date(2028, 1, 30), "revision requested by journal", POLICY)
    assert (once.extensions, twice.extensions, twice.ends) == (1, 2, date(2028, 1, 30))
    with pytest.raises(rules.AgreementError, match="at most 2 extensions"):
        rules.extend(twice, date(2028, 7, 30), "one more please", POLICY)


def test_extension_needs_a_written_request_and_a_later_end() -> None:
    """RARE §3.7: a written request with reasons; the period only grows."""
    dua = agreement()
    with pytest.raises(rules.AgreementError, match="written request"):
        rules.extend(dua, date(2027, 7, 30), "  ", POLICY)
    with pytest.raises(rules.AgreementError, match="after the current end"):
        rules.extend(dua, dua.ends, "reasons", POLICY)


def test_follow_up_and_destruction_dates() -> None:
    """RARE §3.7: 6-month follow-up; GB/T 39725 §11.4.2.6: destroy within 30 days after the end."""
    dua = agreement()
    assert rules.follow_up_due(dua, POLICY) == date(2026, 7, 31)
    assert rules.destruction_due(dua, POLICY) == date(2027, 3, 2)
    short = agreement(starts=date(2025, 8, 31), months=6)
    assert short.ends == date(2026, 2, 28)                       # clamped day
    assert rules.follow_up_due(short, POLICY) == date(2026, 2, 28)


def test_errors_belong_to_the_share_stage() -> None:
    """SEQ §7.3.2.2: every share error is a SeqlifeError of stage 'share'."""
    for cls in (rules.RequestRefused, rules.ReviewError, rules.AgreementError,
                rules.CrossBorderRefused):
        assert issubclass(cls, rules.ShareError) and cls.stage == "share"
