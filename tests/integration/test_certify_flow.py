"""Derived-data certification end to end (DER §5): a de-identified, committee-approved version is
certified by the steward with a signed certificate that voids when the data changes; unmet
requirements are all listed and audited; the HTML certificate reads right in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import as_role

from infra.resources import Resources
from seqlife.certify import CertificationRefused
from seqlife.exceptions import PolicyViolation

pytestmark = pytest.mark.usefixtures("prefect_backend")


@pytest.fixture
def derived(resources: Resources, cohort: Path) -> str:
    """collect -> classify -> steward approval -> deidentify (pending committee approval)."""
    from flows.classify import classify_flow
    from flows.collect import collect_flow
    from flows.deidentify import deidentify_flow
    from seqlife.classify.labels import load_classify_policy
    from tasks.classify import approve

    collect_flow(str(cohort), "cohort-e")
    classify_flow("cohort-e")
    approve(resources, "cohort-e", None, [], load_classify_policy())
    return deidentify_flow("cohort-e", "p1")["dataset"]


def committee_approves(resources: Resources) -> None:
    from seqlife.deidentify.tables import load_deidentify_policy
    from tasks.deidentify import approve

    approve(as_role(resources, "committee"), "cohort-e", "p1", None, load_deidentify_policy())


def test_unapproved_release_is_refused_with_the_unmet_requirement(resources: Resources,
                                                                  derived: str) -> None:
    from flows.certify import certify_flow

    with pytest.raises(CertificationRefused, match="de-identification approved") as caught:
        certify_flow(derived)
    assert [r.name for r in caught.value.unmet] == ["de-identification approved"]
    events = [(e.action, e.outcome) for e in resources.audit.entries()]
    assert events[-1] == ("certify.refuse", "refused")


def test_only_the_steward_signs(resources: Resources, derived: str) -> None:
    from flows.certify import run_certify

    committee_approves(resources)
    with pytest.raises(PolicyViolation, match="Only a data steward"):
        run_certify(as_role(resources, "operator"), derived, None, "scientific_research")


def test_certificate_is_signed_verifies_and_is_void_after_a_data_change(
        resources: Resources, derived: str, backend: str) -> None:
    from flows.certify import certify_flow
    from tasks.certify import is_certified, verify_document

    committee_approves(resources)
    issued = certify_flow(derived)
    document = issued["signed"]
    assert document["signature"]["algorithm"] == "Ed25519"
    assert document["certificate"]["lineage"][-1]["zone"] == "01_raw"
    assert verify_document(resources, document) == []
    assert is_certified(resources, derived, None)
    assert ("certify.sign", "certified") in [(e.action, e.outcome) for e in resources.audit.entries()]
    stored = json.loads(resources.store.get_bytes(issued["certificate_key"]))
    assert stored == document
    edited = json.loads(json.dumps(document))
    edited["certificate"]["dimensions"]["sensitivity_grade"] = 1
    assert any("signature" in p for p in verify_document(resources, edited))
    if backend == "embedded":  # a versioned S3 object cannot be altered in place
        version = next(v for v in resources.store.list_versions(f"03_deidentified/{derived}/")
                       if v.key.endswith("tables/clinical.parquet.c4gh"))  # stored sealed
        path = (resources.store.root / "objects" /  # type: ignore[attr-defined]
                f"{version.key}.versions" / version.version_id)
        os.chmod(path, 0o644)
        path.write_bytes(path.read_bytes()[:-1] + b"\x00")
        problems = verify_document(resources, document)
        assert problems == ["tables/clinical.parquet: data changed since certification"]
        assert not is_certified(resources, derived, None)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_certificate_html_in_headless_chromium(resources: Resources, derived: str,
                                               tmp_path: Path) -> None:
    from flows.certify import certify_flow

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("headless Chromium is required (.ci/services installs Debian's chromium)")
    committee_approves(resources)
    issued = certify_flow(derived)
    page = tmp_path / "certificate.html"
    page.write_bytes(resources.store.get_bytes(issued["certificate_key"].replace(".json", ".html")))
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    body = issued["signed"]["certificate"]
    assert '<b id="decision">certified</b>' in dom
    assert body["content_digest"] in dom and derived in dom
    assert f'<td id="grade">{body["dimensions"]["sensitivity_grade"]}</td>' in dom
    assert dom.count("met</td>") >= len(body["requirements"])
