"""Sharing end to end on both settings: request -> checks -> random reviewers -> > 2/3 vote ->
agreement -> delivery by tier with a per-recipient watermark -> trace and blacklist -> subject
access; the controlled API over real HTTPS with authentication and rate alerts (SEQ §6, §7.3.2.2;
GB/T 39725 §7 g, o-p, §8.3 Table 5, §10.1 g, §11.4.2.2-11.4.2.6, App. C; RARE §3.5-§4.11)."""

from __future__ import annotations

import io
import ssl
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import as_role
from crypt4gh.keys import get_public_key

from infra.resources import Resources
from seqlife.encrypt import c4gh
from seqlife.exceptions import PolicyViolation
from seqlife.share import rules

pytestmark = pytest.mark.usefixtures("prefect_backend")

VARIABLES = ["sex", "lab_hemoglobin_g_l", "lab_wbc_10e9_l", "lab_alt_u_l"]


def request_document(dataset: str, **changes) -> dict:
    document = {
        "institution": "Fudan University", "applicant": "applicant-0042",
        "project": "NSFC-2026-0917", "funded": True, "qualifications": ["GCP training"],
        "plan": {"purpose": "Anaemia and liver enzymes in a sequencing cohort",
                 "inclusion": "all consented subjects", "exclusion": "none",
                 "variables": VARIABLES, "endpoints": "haemoglobin by diagnosis",
                 "analysis": "linear models"},
        "duo_codes": ["DUO:0000042"], "dataset": dataset, "version": None,
        "variables": VARIABLES, "records": 1000, "destination_country": "CN", "tier": "file"}
    document.update(changes)
    return document


@pytest.fixture
def certified(resources: Resources, cohort: Path) -> str:
    from flows.certify import run_certify
    from flows.classify import classify_flow
    from flows.collect import collect_flow
    from flows.deidentify import deidentify_flow
    from seqlife.classify.labels import load_classify_policy
    from seqlife.deidentify.tables import load_deidentify_policy
    from tasks import classify, deidentify

    collect_flow(str(cohort), "cohort-s")
    classify_flow("cohort-s")
    classify.approve(resources, "cohort-s", None, [], load_classify_policy())
    derived = deidentify_flow("cohort-s", "p1")["dataset"]
    deidentify.approve(as_role(resources, "committee"), "cohort-s", "p1", None,
                       load_deidentify_policy())
    run_certify(resources, derived, None, "scientific_research")
    return derived


def approve_request(resources: Resources, dataset: str, in_favour: int = 5, **changes) -> dict:
    from tasks import share

    submitted = share.submit(resources, request_document(dataset, **changes))
    committee = as_role(resources, "committee")
    scores = {c: 4 for c in rules.load_share_policy()["review_criteria"]}
    for index, reviewer in enumerate(submitted["reviewers"]):
        share.vote(committee, submitted["request"], reviewer, index < in_favour, scores)
    decided = share.decide(committee, submitted["request"], months=12,
                           protection_measures=["encrypted storage", "named analysts only"],
                           emergency_plan="notify the controller within 24 hours")
    return {**submitted, **decided}


def test_request_review_agreement_and_file_delivery(resources: Resources, certified: str,
                                                    tmp_path: Path) -> None:
    """RARE §3.6-§4.3; App. C art. 11: an institution's request, five reviewers drawn, 4 of 5 in
    favour approve it; the file share is Crypt4GH for the recipient and only what was approved."""
    from tasks import share

    decided = approve_request(resources, certified, in_favour=4)
    assert decided["approved"] and len(decided["reviewers"]) == 5
    # the recipient's own tools: a key pair from crypt4gh-keygen, the reference CLI to decrypt
    tools = Path(sys.executable).parent
    subprocess.run([str(tools / "crypt4gh-keygen"), "--sk", str(tmp_path / "r.sec"), "--pk",
                    str(tmp_path / "r.pub"), "--nocrypt", "-f"], check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)
    delivered = share.deliver_file(resources, decided["agreement"],
                                   get_public_key(str(tmp_path / "r.pub")), tmp_path / "out")
    with open(delivered["out"], "rb") as src:
        plain = subprocess.run([str(tools / "crypt4gh"), "decrypt", "--sk",
                                str(tmp_path / "r.sec")], stdin=src, capture_output=True,
                               check=True).stdout
    frame = pd.read_parquet(io.BytesIO(plain))
    assert list(frame.columns) == ["subject", *VARIABLES]  # minimum necessary
    assert len(frame) == delivered["records"] > 0
    actions = [(e.action, e.outcome) for e in resources.audit.entries()]
    for step in [("share.request", "in_review"), ("share.vote", "yes"), ("share.vote", "no"),
                 ("share.decide", "approved"), ("share.deliver", "ok")]:
        assert step in actions


def test_two_thirds_not_reached_is_rejected(resources: Resources, certified: str) -> None:
    """App. C art. 11: 3 of 5 in favour is not more than two thirds."""
    decided = approve_request(resources, certified, in_favour=3)
    assert not decided["approved"] and decided["agreement"] is None
    assert "3 of 5" in decided["message"]


def test_refusals_before_review_list_every_failed_rule(resources: Resources,
                                                       certified: str) -> None:
    """RARE §3.5-§3.6, §4.1; HDS §11.4.2.2: raw data, variables beyond the plan, an unfunded
    project: refused with each rule and clause named, stored and audited."""
    from tasks import share

    with pytest.raises(rules.RequestRefused) as refused:
        share.submit(resources, request_document(
            "cohort-s", funded=False, variables=VARIABLES + ["postcode"]))
    message = refused.value.message
    assert "RARE §3.5" in message and "funded" in message.lower()
    actions = [(e.action, e.outcome) for e in resources.audit.entries()]
    assert ("share.refuse", "refused") in actions


def test_piecemeal_requests_are_considered_together(resources: Resources,
                                                    certified: str) -> None:
    """HDS §11.4.2.2: a second request for other variables, under a plan that does not need the
    ones already granted, is refused."""
    from tasks import share

    first = ["sex", "lab_hemoglobin_g_l"]
    approve_request(resources, certified, variables=first,
                    plan={**request_document(certified)["plan"], "variables": first})
    second = ["lab_wbc_10e9_l", "lab_alt_u_l"]
    with pytest.raises(rules.RequestRefused, match="§11.4.2.2"):
        share.submit(resources, request_document(
            certified, variables=second,
            plan={**request_document(certified)["plan"], "variables": second}))


def test_watermark_traces_a_leak_and_blacklists_the_institution(
        resources: Resources, certified: str, tmp_path: Path) -> None:
    """RARE §4.11: two recipients get differently marked copies; a shuffled, column-subsetted
    leak names the right agreement; confirming it blacklists the institution, whose agreements
    then deliver nothing more."""
    from tasks import share

    first = approve_request(resources, certified)
    second = approve_request(resources, certified, institution="Zhejiang University")
    copies = {}
    for decided in (first, second):
        key = c4gh.new_secret_key()
        out = share.deliver_file(resources, decided["agreement"], c4gh.public_key_of(key),
                                 tmp_path / decided["agreement"])
        plain = io.BytesIO()
        with open(out["out"], "rb") as src:
            c4gh.decrypt_stream(src, plain, key)
        copies[decided["agreement"]] = pd.read_parquet(io.BytesIO(plain.getvalue()))
    leak = copies[second["agreement"]].sample(frac=1.0, random_state=3)[
        ["subject", "lab_hemoglobin_g_l", "lab_alt_u_l"]]
    matches = share.trace(resources, leak)
    assert matches[0]["agreement"] == second["agreement"]
    assert matches[0]["confidence"] > 0.999 and matches[1]["confidence"] < 0.99
    share.blacklist(as_role(resources, "committee"), "Zhejiang University", "leak confirmed")
    with pytest.raises(rules.AgreementError, match="blacklisted"):
        share.deliver_file(resources, second["agreement"], c4gh.public_key_of(
            c4gh.new_secret_key()), tmp_path / "again")
    with pytest.raises(rules.RequestRefused, match="RARE §4.11"):
        share.submit(resources, request_document(certified, institution="Zhejiang University"))


def test_expired_agreement_and_third_extension_are_refused(resources: Resources,
                                                           certified: str, tmp_path: Path) -> None:
    """RARE §3.7; HDS §11.4.2.5: nothing is delivered outside the use period; at most two
    extensions by written request."""
    from tasks import share

    decided = approve_request(resources, certified)
    committee = as_role(resources, "committee")
    ends = date.fromisoformat(decided["ends"])
    with pytest.raises(rules.AgreementError):
        share.deliver_file(resources, decided["agreement"], c4gh.public_key_of(
            c4gh.new_secret_key()), tmp_path, today=ends + timedelta(days=1))
    for months in (1, 2):
        share.extend(committee, decided["agreement"], ends + timedelta(days=30 * months),
                     "please extend: analysis not finished")
    with pytest.raises(rules.AgreementError):
        share.extend(committee, decided["agreement"], ends + timedelta(days=120), "once more")


def test_cross_border_cap_is_cumulative_per_destination(resources: Resources, certified: str,
                                                        tmp_path: Path, monkeypatch) -> None:
    """HDS §7 o-p: at most 250 records abroad per destination, counted over every delivery."""
    from tasks import share

    policy = rules.load_share_policy()
    small = replace(policy, rules={**policy.rules, "cross_border_record_cap": replace(
        policy.rules["cross_border_record_cap"], value=10)})
    monkeypatch.setattr(rules, "load_share_policy", lambda: small)
    decided = approve_request(resources, certified, destination_country="SG", records=5)
    key = c4gh.public_key_of(c4gh.new_secret_key())
    first = share.deliver_file(resources, decided["agreement"], key, tmp_path / "1")
    assert first["records"] <= 10
    with pytest.raises(rules.CrossBorderRefused, match="§7"):
        for attempt in range(2, 12):
            share.deliver_file(resources, decided["agreement"], key, tmp_path / str(attempt))


def test_subject_access_lists_every_disclosure(resources: Resources, certified: str,
                                               cohort: Path, tmp_path: Path) -> None:
    """HDS §7 g: the controller lists who received a subject's data, when, and its status."""
    from tasks import share

    decided = approve_request(resources, certified)
    out = share.deliver_file(resources, decided["agreement"], c4gh.public_key_of(
        c4gh.new_secret_key()), tmp_path)
    assert out["subjects"] > 0
    samples = pd.read_csv(cohort / "samples.csv")
    consents = pd.read_csv(cohort / "consents.csv")
    withdrawn = set(consents.loc[consents["withdrawn_on"].notna(), "mrn"]) \
        if "withdrawn_on" in consents else set()
    included = [m for m in samples["mrn"] if m not in withdrawn]
    rows = share.subject_access(resources, str(included[0]))
    assert any(r["agreement"] == decided["agreement"] and r["recipient"] == "Fudan University"
               and r["destroyed_at"] is None for r in rows)
    assert share.subject_access(resources, "MR00000000") == []


def test_only_the_committee_votes_and_decides(resources: Resources, certified: str) -> None:
    from tasks import share

    submitted = share.submit(resources, request_document(certified))
    with pytest.raises(PolicyViolation, match="committee"):
        share.vote(as_role(resources, "operator"), submitted["request"],
                   submitted["reviewers"][0], True, {})


@contextmanager
def running_api(resources: Resources):
    """The sharing API as `share serve` configures it (TLS, the self-signed pair of the test's
    home) on a free loopback port, in a thread of this process; yields an HTTPS client that
    trusts that certificate only."""
    import uvicorn

    from infra.https import server_config
    from infra.share_api import create_app

    config = server_config(create_app(resources), resources.settings, "127.0.0.1", 0,
                           log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    trust = ssl.create_default_context(cafile=config.ssl_certfile)
    try:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust,
                          timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_controlled_api_authenticates_logs_and_alerts_over_https(
        resources: Resources, certified: str, monkeypatch) -> None:
    """HDS §8.3 Table 5: token bound to the agreement, sent over TLS only (§10.1 g); every call
    logged; high-frequency pulls refused and alerted."""
    from sqlalchemy import func, select

    from infra.catalog import ApiCall
    from tasks import share

    policy = rules.load_share_policy()
    limited = replace(policy, rules={**policy.rules, "api_limits": replace(
        policy.rules["api_limits"], value={"calls_per_minute": 3, "records_per_day": 100000})})
    monkeypatch.setattr(rules, "load_share_policy", lambda: limited)
    decided = approve_request(resources, certified, tier="api")
    token = share.issue_token(resources, decided["agreement"])["token"]
    with running_api(resources) as api:
        assert api.get("/v1/extract").status_code == 401
        assert api.get("/v1/extract",
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        ok = api.get("/v1/extract", headers=auth)
        assert ok.status_code == 200 and ok.json()["records"] > 0
        codes = [api.get("/v1/extract", headers=auth).status_code for _ in range(4)]
        assert 429 in codes
    with resources.sessions() as session:
        logged = session.scalar(select(func.count(ApiCall.id)))
    assert logged == 2 + 1 + 4  # every call, refused ones too
    alerts = [e for e in resources.audit.entries() if e.action == "share.alert"]
    assert alerts and "high-frequency" in alerts[0].reason and "caller 127.0.0.1" in alerts[0].reason


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_enclave_exports_need_committee_approval(resources: Resources, certified: str,
                                                 tmp_path: Path) -> None:
    """HDS Table 2; App. C art. 13-15: data stays in the enclave; a result leaves only when the
    committee approves, and every export is archived."""
    from tasks import share

    decided = approve_request(resources, certified, tier="enclave")
    opened = share.open_enclave(resources, decided["agreement"])
    root = Path(opened["enclave"])
    assert [p.name for p in (root / "data").iterdir()] == [share.ENCLAVE_EXTRACT]
    with share.enclave_session(resources, decided["agreement"]) as work:
        frame = pd.read_parquet(work / "extract.parquet")
        means = frame[["lab_hemoglobin_g_l"]].mean().to_csv()
    assert not work.exists()  # the clear extract lived only for the session
    assert frame["subject"].nunique() > 0
    (root / "exports" / "means.csv").write_text(means)
    pending = share.request_export(resources, decided["agreement"], "means.csv")
    assert not (root / "exports" / "means.csv").exists()  # archived sealed, nothing left in clear
    with pytest.raises(rules.ShareError):
        share.request_export(resources, decided["agreement"], "../data/" + share.ENCLAVE_EXTRACT)
    with pytest.raises(PolicyViolation):
        share.decide_export(resources, pending["export"], True, "fine")
    released = share.decide_export(as_role(resources, "committee"), pending["export"], True,
                                   "aggregate means only", tmp_path / "released")
    assert Path(released["released"]).read_text() == means
    actions = [(e.action, e.outcome) for e in resources.audit.entries()]
    for step in [("share.export_request", "pending"), ("share.export_decide", "approved"),
                 ("share.enclave_session", "opened"), ("share.enclave_session", "closed")]:
        assert step in actions


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_enclave_session_is_refused_after_the_agreement_ends(resources: Resources,
                                                             certified: str) -> None:
    """App. C art. 15: once the use period is over the enclave cannot be read any more."""
    from tasks import share

    decided = approve_request(resources, certified, tier="enclave")
    share.open_enclave(resources, decided["agreement"])
    after = date.fromisoformat(decided["ends"]) + timedelta(days=1)
    with pytest.raises(rules.AgreementError):
        with share.enclave_session(resources, decided["agreement"], today=after):
            pass


def test_public_aggregate_suppresses_small_cells_and_gets_a_uri(resources: Resources,
                                                                certified: str) -> None:
    """SEQ §6.2.4: committee-approved counts, cells < 5 suppressed, published under a URI."""
    from tasks import share

    published = share.publish_aggregate(as_role(resources, "committee"), certified, ["sex"])
    assert published["uri"].startswith("seqlife:dataset/")
    table = pd.read_csv(io.BytesIO(resources.store.get_bytes(published["key"])))
    assert ((table["count"].isna()) | (table["count"] >= 5)).all()


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_follow_up_without_output_reopens_the_topic(resources: Resources, certified: str,
                                                    tmp_path: Path) -> None:
    """RARE §3.7: 6 months after delivery the requester files its outputs; a topic with none
    may be reopened to others."""
    from tasks import share

    quiet = approve_request(resources, certified)
    busy = approve_request(resources, certified, institution="Zhejiang University")
    (tmp_path / "paper.pdf").write_bytes(b"%PDF-1.4 results")
    share.file_output(resources, busy["agreement"], tmp_path / "paper.pdf")
    assert share.follow_up(resources, date.today() + timedelta(days=100)) == []
    assert share.follow_up(resources, date.today() + timedelta(days=200)) == [quiet["agreement"]]
    assert share.follow_up(resources, date.today() + timedelta(days=201)) == []  # audited once


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_api_under_concurrent_clients_logs_every_call(resources: Resources, certified: str,
                                                      monkeypatch) -> None:
    """HDS §8.3 Table 5 under load: concurrent clients on 127.0.0.1 keep being served and every
    call is logged (calls made = calls logged)."""
    api_load(resources, certified, monkeypatch, calls=60)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_long_api_load(resources: Resources, certified: str, monkeypatch) -> None:
    """The long run (`make test-all`): 2,000 calls from 6 clients."""
    api_load(resources, certified, monkeypatch, calls=2000)


def api_load(resources: Resources, certified: str, monkeypatch, calls: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import func, select

    from infra.catalog import ApiCall
    from tasks import share

    policy = rules.load_share_policy()
    open_limits = replace(policy, rules={**policy.rules, "api_limits": replace(
        policy.rules["api_limits"], value={"calls_per_minute": 10**6, "records_per_day": 10**9})})
    monkeypatch.setattr(rules, "load_share_policy", lambda: open_limits)
    decided = approve_request(resources, certified, tier="api")
    token = share.issue_token(resources, decided["agreement"])["token"]
    latencies: list[float] = []

    with running_api(resources) as api:

        def pull(_: int) -> int:
            start = time.perf_counter()
            response = api.get("/v1/extract", headers={"Authorization": f"Bearer {token}"})
            latencies.append(time.perf_counter() - start)
            return response.status_code

        with ThreadPoolExecutor(max_workers=6) as pool:
            codes = list(pool.map(pull, range(calls)))
    assert codes.count(200) == calls
    with resources.sessions() as session:
        assert session.scalar(select(func.count(ApiCall.id))) == calls
    latencies.sort()
    print(f"API load: {calls} calls, 6 clients, median {latencies[len(latencies) // 2] * 1000:.0f}"
          f" ms, p95 {latencies[int(len(latencies) * 0.95) - 1] * 1000:.0f} ms")
