"""Certificate rules: every DER §5 requirement checked and listed, Ed25519 signature binding
content, lineage and policy hashes; tampering with data, certificate or key voids it."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from seqlife import certify
from seqlife.deidentify.tables import load_deidentify_policy
from seqlife.quality import declare_release, declared_k, load_quality_policy

POLICY = certify.load_certify_policy()


def evidence(**changes) -> certify.Evidence:
    base = dict(
        dataset="cohort--p1", version=1, content_digest="c" * 64,
        files={"tables/clinical.parquet": "a" * 64, "seq/S-x.vcf.gz": "b" * 64},
        lineage=[{"stage": "deidentify", "dataset": "cohort--p1", "version": 1,
                  "zone": "03_deidentified", "digest": "c" * 64, "inputs": 3,
                  "outputs": {"tables/clinical.parquet": "a" * 64, "seq/S-x.vcf.gz": "b" * 64}},
                 {"stage": "collect", "dataset": "cohort", "version": 1, "zone": "01_raw",
                  "digest": "d" * 64, "inputs": 0, "outputs": {"clinical.parquet": "f" * 64}}],
        subjects_all_consented=True, method_recorded=True,
        quality=[{"suite": "deidentified", "success": True, "failed": []}],
        classification_approved=True, deidentification_approved=True, k_required=5, k_achieved=7,
        risk_passed=True, grade=4, generation_technique="deidentification",
        application_scenario="scientific_research", policy_hashes={"deidentify": "e" * 64})
    base.update(changes)
    return certify.Evidence(**base)


def signed(key: Ed25519PrivateKey, ev: certify.Evidence | None = None) -> dict:
    ev = ev or evidence()
    body = certify.build_certificate(ev, certify.check_requirements(ev, POLICY), POLICY, "steward",
                                     "2026-11-23T12:00:00+00:00", "cert-1")
    return certify.sign(body, key)


def test_all_requirements_met_for_complete_evidence() -> None:
    """DER §5: process, quality, security and privacy all met."""
    requirements = certify.check_requirements(evidence(), POLICY)
    assert {r.group for r in requirements} == {"process", "quality", "security"}
    assert all(r.ok for r in requirements)


@pytest.mark.parametrize("change, name", [
    ({"subjects_all_consented": False}, "lawful source"),
    ({"lineage": []}, "lineage complete to raw"),
    ({"lineage": [{"stage": "deidentify", "dataset": "x", "version": 1, "zone": "03_deidentified",
                   "digest": "", "inputs": 3, "outputs": {"tables/clinical.parquet": "a" * 64,
                                                          "seq/S-x.vcf.gz": "b" * 64}}]},
     "lineage complete to raw"),
    ({"lineage": [{"stage": "deidentify", "dataset": "cohort--p1", "version": 1,
                   "zone": "03_deidentified", "digest": "", "inputs": 3,
                   "outputs": {"tables/clinical.parquet": "0" * 64, "seq/S-x.vcf.gz": "b" * 64}},
                  {"stage": "collect", "dataset": "cohort", "version": 1, "zone": "01_raw",
                   "digest": "", "inputs": 0, "outputs": {}}]},
     "lineage complete to raw"),
    ({"method_recorded": False}, "method and parameters recorded"),
    ({"quality": [{"suite": "deidentified", "success": False, "failed": []}]}, "quality gate passed"),
    ({"quality": []}, "quality gate passed"),
    ({"classification_approved": False}, "classification approved"),
    ({"deidentification_approved": False}, "de-identification approved"),
    ({"k_achieved": 3}, "k-anonymity"),
    ({"risk_passed": False}, "re-identification risk within policy"),
])
def test_each_unmet_requirement_is_named(change, name) -> None:
    unmet = [r for r in certify.check_requirements(evidence(**change), POLICY) if not r.ok]
    assert [r.name for r in unmet] == [name]
    error = certify.CertificationRefused("cohort--p1 v1", unmet)
    assert name in error.message and "DER §5" in error.message


def test_refusal_lists_every_unmet_requirement() -> None:
    unmet = [r for r in certify.check_requirements(
        evidence(k_achieved=1, risk_passed=False, classification_approved=False), POLICY) if not r.ok]
    assert len(unmet) == 3
    message = certify.CertificationRefused("d", unmet).message
    assert all(r.name in message for r in unmet)


def test_valid_certificate_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    document = signed(key)
    files = dict(evidence().files)
    assert certify.verify(document, key.public_key(), files) == []
    assert document["certificate"]["dimensions"]["sensitivity_grade"] == 4
    assert document["certificate"]["policy_hashes"]["certify"] == POLICY.content_hash


def test_changed_data_voids_the_certificate() -> None:
    key = Ed25519PrivateKey.generate()
    files = dict(evidence().files)
    files["tables/clinical.parquet"] = "0" * 64
    problems = certify.verify(signed(key), key.public_key(), files)
    assert problems == ["tables/clinical.parquet: data changed since certification"]
    files = dict(evidence().files) | {"extra.csv": "1" * 64}
    assert "extra.csv: file added after certification" in certify.verify(signed(key), key.public_key(), files)


def test_edited_certificate_voids_it() -> None:
    key = Ed25519PrivateKey.generate()
    document = copy.deepcopy(signed(key))
    document["certificate"]["dimensions"]["sensitivity_grade"] = 1
    problems = certify.verify(document, key.public_key(), dict(evidence().files))
    assert any("signature does not match" in p for p in problems)


def test_wrong_key_is_refused() -> None:
    document = signed(Ed25519PrivateKey.generate())
    problems = certify.verify(document, Ed25519PrivateKey.generate().public_key(), None)
    assert any("not the controller's signing key" in p for p in problems)
    assert any("signature does not match" in p for p in problems)


def test_html_states_the_key_facts() -> None:
    page = certify.render_html(signed(Ed25519PrivateKey.generate())).decode()
    assert "cohort--p1" in page and "certified" in page and "c" * 64 in page
    assert "DER §5" in page and "01_raw" in page


@pytest.mark.parametrize("short", [1, 0])
def test_certification_holds_the_k_of_the_deidentify_policy_at_its_boundary(short) -> None:
    """GB/T 39725 §10.2 e; DER §5: k achieved one below the policy's k is refused, equal passes
    (k read from deidentify.yaml, as the certify task does)."""
    k = int(load_deidentify_policy()["k"])
    unmet = [r.name for r in certify.check_requirements(
        evidence(k_required=k, k_achieved=k - short), POLICY) if not r.ok]
    assert unmet == (["k-anonymity"] if short else [])


def test_the_k_certification_sees_is_measured_on_the_stored_release() -> None:
    """The evidence is the release itself over the quasi-identifiers it declares, not the
    de-identification report: a class of k - 1 rows gives k - 1; no declared set gives 0."""
    quality = load_quality_policy()
    k = int(load_deidentify_policy()["k"])
    table = pd.DataFrame({"sex": ["F"] * (k - 1) + ["M"] * (k + 2), "lab": range(2 * k + 1)})
    assert declared_k(declare_release(table, quality, ["sex"]), quality) == k - 1
    assert declared_k(declare_release(table, quality, ["lab"]), quality) == 1
    assert declared_k(table, quality) == 0
    assert declared_k(declare_release(table, quality, ["age"]), quality) == 0
