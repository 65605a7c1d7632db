"""Certify: check a derived dataset against the three groups of DER §5 (process, quality, security
and privacy), classify it along application scenario, generation technique and sensitivity grade,
and issue a certificate signed with the controller's Ed25519 key that binds the content hash,
lineage and every policy hash. Any later change to the data or the certificate voids it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from seqlife.exceptions import SeqlifeError
from seqlife.policy import Policy, load_policy

REQUIRED_RULES = frozenset({"signature_algorithm", "requirements", "dimensions", "signer_role"})


class CertificationError(SeqlifeError):
    stage = "certify"


class CertificationRefused(CertificationError):
    """At least one DER §5 requirement is unmet; every unmet one is listed."""

    def __init__(self, dataset: str, unmet: Sequence["Requirement"]) -> None:
        items = "; ".join(f"[{r.group}] {r.name}: {r.detail} ({r.clause})" for r in unmet)
        super().__init__(f"{dataset} cannot be certified: {len(unmet)} requirement(s) unmet — "
                         f"{items}. Resolve them and certify again (DER §5).", dataset=dataset)
        self.unmet = list(unmet)


class CertificateInvalid(CertificationError):
    """The certificate's signature or the data it describes no longer holds."""


def load_certify_policy() -> Policy:
    return load_policy("certify", REQUIRED_RULES)


@dataclass(frozen=True)
class Evidence:
    """Everything certification looks at, gathered from the catalog, store and quality gate."""

    dataset: str
    version: int
    content_digest: str
    files: Mapping[str, str]                     # path -> sha256
    lineage: Sequence[Mapping[str, Any]]         # derived -> raw, one step per recorded stage
    subjects_all_consented: bool
    method_recorded: bool
    quality: Sequence[Mapping[str, Any]]         # quality summaries: suite, success, failed
    classification_approved: bool
    deidentification_approved: bool
    k_required: int
    k_achieved: int
    risk_passed: bool
    grade: int
    generation_technique: str
    application_scenario: str
    policy_hashes: Mapping[str, str] = field(default_factory=dict)
    #: path -> SHA-256 of the bytes the store holds (the Crypt4GH copy), which is what the
    #: lineage registry seals; None where the store holds the plaintext itself
    stored: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Requirement:
    group: str
    name: str
    ok: bool
    detail: str
    clause: str


def check_requirements(evidence: Evidence, policy: Policy) -> list[Requirement]:
    """Every DER §5 requirement with its verdict; certification needs all of them met."""
    clauses = policy["requirements"]
    reaches_raw, lineage_detail = _lineage_verdict(evidence)
    failed_suites = [q["suite"] for q in evidence.quality if not q["success"]]
    return [
        Requirement("process", "lawful source", evidence.subjects_all_consented,
                    "every subject of the source is covered by consent" if
                    evidence.subjects_all_consented else "source subjects lack a covering consent",
                    clauses["lawful_source"]),
        Requirement("process", "lineage complete to raw", reaches_raw, lineage_detail,
                    clauses["lineage"]),
        Requirement("process", "method and parameters recorded", evidence.method_recorded,
                    "de-identification report with policy hash and levels" if
                    evidence.method_recorded else "no de-identification report", clauses["method"]),
        Requirement("quality", "quality gate passed", bool(evidence.quality) and not failed_suites,
                    "all suites passed" if evidence.quality and not failed_suites else
                    f"failed suites: {', '.join(failed_suites) or 'none run'}", clauses["quality"]),
        Requirement("security", "classification approved", evidence.classification_approved,
                    "source classification approved by a steward" if
                    evidence.classification_approved else "source classification not approved",
                    clauses["classification"]),
        Requirement("security", "de-identification approved", evidence.deidentification_approved,
                    "approved by the committee" if evidence.deidentification_approved else
                    "awaiting committee approval", clauses["deidentification"]),
        Requirement("security", "k-anonymity", evidence.k_achieved >= evidence.k_required,
                    f"k = {evidence.k_achieved} (required {evidence.k_required})", clauses["k"]),
        Requirement("security", "re-identification risk within policy", evidence.risk_passed,
                    "risk test passed" if evidence.risk_passed else "risk above policy limits",
                    clauses["risk"]),
    ]


def _lineage_verdict(evidence: Evidence) -> tuple[bool, str]:
    """The chain must start at this version's own files and end at a collected raw version.

    Each step is one recorded stage: ``dataset``, ``version``, ``stage`` (the verb), ``zone``,
    ``outputs`` (path -> SHA-256 of what the stage wrote for that version) and ``inputs`` (how
    many files it read).
    """
    if not evidence.lineage:
        return False, "no lineage is recorded for this version"
    derived = [s for s in evidence.lineage if s.get("stage") != "encrypt"]  # storage form only
    if not derived:
        return False, "no lineage is recorded for this version"
    first, last = derived[0], derived[-1]
    stored = evidence.files if evidence.stored is None else evidence.stored
    if dict(first.get("outputs", {})) != dict(stored):
        return False, "the files recorded in the lineage differ from the stored files"
    if last.get("stage") != "collect" or last.get("inputs") or last.get("zone") != "01_raw":
        return False, "the chain does not reach a raw, collected version"
    return True, (f"{len(evidence.lineage)} recorded stage(s) back to raw "
                  f"{last['dataset']} v{last['version']}")


def _canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def build_certificate(evidence: Evidence, requirements: Sequence[Requirement], policy: Policy,
                      issuer: str, issued_at: str, certificate_id: str) -> dict[str, Any]:
    """The unsigned certificate body: what is certified, why, and under which rules."""
    dims = policy["dimensions"]
    return {
        "id": certificate_id,
        "issued_at": issued_at,
        "issuer": issuer,
        "dataset": evidence.dataset,
        "version": evidence.version,
        "content_digest": evidence.content_digest,
        "files": dict(sorted(evidence.files.items())),
        "lineage": list(evidence.lineage),
        "dimensions": {
            "application_scenario": evidence.application_scenario,
            "generation_technique": evidence.generation_technique,
            "sensitivity_grade": evidence.grade,
            "scenarios_known": dims["application_scenarios"],
        },
        "requirements": [asdict(r) for r in requirements],
        "policy_hashes": {**evidence.policy_hashes, "certify": policy.content_hash},
        "decision": "certified",
    }


def sign(body: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """Sign the canonical JSON of the body; the public key travels with it for reference."""
    public = key.public_key().public_bytes_raw()
    return {"certificate": dict(body), "signature": {
        "algorithm": "Ed25519",
        "public_key": public.hex(),
        "key_fingerprint": hashlib.sha256(public).hexdigest()[:16],
        "value": base64.b64encode(key.sign(_canonical(body))).decode(),
    }}


def verify(signed: Mapping[str, Any], trusted_key: Ed25519PublicKey,
           current_files: Mapping[str, str] | None) -> list[str]:
    """Problems with a certificate: bad signature, foreign key, or data that changed since."""
    problems = []
    try:
        body, signature = signed["certificate"], signed["signature"]
        value = base64.b64decode(signature["value"])
    except (KeyError, TypeError, ValueError):
        return ["not a seqlife certificate (missing certificate or signature)"]
    trusted = trusted_key.public_bytes_raw().hex()
    if signature.get("public_key") != trusted:
        problems.append("signed with a key that is not the controller's signing key")
    try:
        trusted_key.verify(value, _canonical(body))
    except InvalidSignature:
        problems.append("signature does not match the certificate (edited or forged)")
    if current_files is not None:
        certified = body.get("files", {})
        for path, digest in certified.items():
            now = current_files.get(path)
            if now is None:
                problems.append(f"{path}: certified file is missing")
            elif now != digest:
                problems.append(f"{path}: data changed since certification")
        for path in sorted(set(current_files) - set(certified)):
            problems.append(f"{path}: file added after certification")
    return problems


def render_html(signed: Mapping[str, Any]) -> bytes:
    """The certificate as a page a reader checks at a glance (no personal data in it)."""
    body, signature = signed["certificate"], signed["signature"]
    dims = body["dimensions"]
    rows = "".join(
        f"<tr class='{'ok' if r['ok'] else 'no'}'><td>{html.escape(r['group'])}</td>"
        f"<td>{html.escape(r['name'])}</td><td>{'met' if r['ok'] else 'NOT met'}</td>"
        f"<td>{html.escape(r['detail'])}</td><td>{html.escape(r['clause'])}</td></tr>"
        for r in body["requirements"])
    lineage = "".join(f"<li>{html.escape(str(step.get('stage', '')))}: "
                      f"{html.escape(str(step['dataset']))} v{step['version']} "
                      f"({html.escape(str(step.get('zone', '')))}) — "
                      f"{len(step.get('outputs', {}))} file(s), manifest "
                      f"<code>{html.escape(str(step.get('digest', ''))[:16])}</code>, flow run "
                      f"<code>{html.escape(str(step.get('flow_run_id', ''))[:8])}</code></li>"
                      for step in body["lineage"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Certificate {html.escape(body['id'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}
tr.ok td:nth-child(3){{color:#060}}tr.no td:nth-child(3){{color:#a00}}code{{font-size:.9em}}</style>
</head><body>
<h1>Derived-data certificate</h1>
<p id="subject">Dataset <b>{html.escape(body['dataset'])}</b> version <b>{body['version']}</b> is
<b id="decision">{html.escape(body['decision'])}</b>.</p>
<table>
<tr><th>Certificate</th><td>{html.escape(body['id'])}</td></tr>
<tr><th>Issued</th><td>{html.escape(body['issued_at'])} by {html.escape(body['issuer'])}</td></tr>
<tr><th>Content digest</th><td><code id="digest">{html.escape(body['content_digest'])}</code></td></tr>
<tr><th>Sensitivity grade</th><td id="grade">{dims['sensitivity_grade']}</td></tr>
<tr><th>Application scenario</th><td>{html.escape(dims['application_scenario'])}</td></tr>
<tr><th>Generation technique</th><td>{html.escape(dims['generation_technique'])}</td></tr>
<tr><th>Signature</th><td>{html.escape(signature['algorithm'])}, key
<code>{html.escape(signature['key_fingerprint'])}</code></td></tr>
</table>
<h2>Requirements (DER §5)</h2>
<table><tr><th>group</th><th>requirement</th><th>verdict</th><th>evidence</th><th>clause</th></tr>
{rows}</table>
<h2>Lineage back to raw data (GB/T 39725 §11.3.4.6 b 2)</h2><ol>{lineage}</ol>
<p>Verify with <code>seqlife certify verify CERTIFICATE.json</code>: any change to the data or to
this certificate voids it.</p>
</body></html>
"""
    return page.encode("utf-8")
