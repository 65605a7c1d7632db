"""`seqlife demo`: the whole lifecycle on a synthetic cohort, with a summary table."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from rich.table import Table

from seqlife.cli.common import Commands, console, emit
from seqlife.exceptions import SeqlifeError
from seqlife.settings import Settings


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """synth -> collect (quality gate, lineage) -> collect again (idempotent) -> a damaged copy
    refused -> classify -> deidentify -> certify -> lineage -> encrypt -> share -> backup ->
    destroy -> restore drill -> audit verify."""
    from flows.collect import collect_flow
    from infra.resources import build_resources
    from seqlife.synth import generate_cohort

    started = time.perf_counter()
    cohort = settings.home / "demo" / "cohort"
    shutil.rmtree(cohort, ignore_errors=True)
    steps: list[tuple[str, str]] = []
    summary = generate_cohort(cohort, subjects=args.subjects, seed=args.seed)
    steps.append(("synth", f"{summary.subjects} subjects, {len(summary.files)} files, "
                           f"{summary.total_bytes:,} bytes"))
    first = collect_flow(str(cohort), "demo-cohort")
    steps.append(("collect", f"v{first['version']} ({'new' if first['created'] else 'unchanged'}): "
                             f"{first['files']} files, {first['subjects']} subjects, "
                             f"{len(first['excluded_subjects'])} left out (consent withdrawn)"))
    again = collect_flow(str(cohort), "demo-cohort")
    steps.append(("collect again", f"v{again['version']}, new version created: {again['created']}"))
    steps.append(("collect damaged copy", _collect_damaged(cohort, collect_flow)))
    steps.append(("classify + approve", _classify_and_approve(settings, "demo-cohort")))
    steps.append(("deidentify + approve", _deidentify_and_approve(settings, "demo-cohort")))
    steps.append(("certify", _certify(settings, "demo-cohort--demo-project")))
    steps.append(("lineage", _lineage(settings, "demo-cohort--demo-project")))
    steps.append(("encrypt", _encrypt(settings, "demo-cohort")))
    steps += _share(settings, "demo-cohort--demo-project")
    steps += _destroy_and_drill(settings)
    report = build_resources(settings).audit.verify()
    steps.append(("audit verify", f"{'intact' if report.ok else 'BROKEN'}: {report.count} records,"
                                  f" head {report.head_hash[:16]}"))
    elapsed = time.perf_counter() - started
    payload = {"steps": dict(steps), "collect": first, "audit_ok": report.ok,
               "seconds": round(elapsed, 1), "home": str(settings.home)}

    def render() -> None:
        table = Table("step", "result", title="seqlife demo: synthetic cohort through the lifecycle")
        for name, text in steps:
            table.add_row(name, text)
        console.print(table)
        console.print(f"Done in {elapsed:.1f} s. Catalog, store and keys under {settings.home}")

    emit(args, payload, render)
    refused = steps[3][1].startswith("refused")
    return 0 if report.ok and not again["created"] and refused else 1


def _classify_and_approve(settings: Settings, dataset: str) -> str:
    """Propose labels, approve them as the steward, and pass the gate later stages use."""
    from dataclasses import replace

    from flows.classify import classify_flow
    from infra.resources import build_resources
    from seqlife.classify.labels import load_classify_policy
    from tasks.classify import approve, require_approved_classification

    proposal = classify_flow(dataset)
    steward = build_resources(replace(settings, role="steward"))
    approve(steward, dataset, None, [], load_classify_policy())
    labels = require_approved_classification.fn(steward, dataset, None, "demo")
    direct = sum(1 for f in proposal["fields"] if f["identifier"] == "direct")
    return (f"{len(proposal['fields'])} fields ({direct} direct identifiers); grade "
            f"{labels['grade']}, tier {labels['tier']}, {labels['special_disease_rows']} "
            f"special-disease rows; approved by steward; gate passes")


def _deidentify_and_approve(settings: Settings, dataset: str) -> str:
    """De-identify for a project, then approve the release as the committee."""
    from dataclasses import replace

    from flows.deidentify import deidentify_flow
    from infra.resources import build_resources
    from seqlife.deidentify.tables import load_deidentify_policy
    from tasks.deidentify import approve

    result = deidentify_flow(dataset, "demo-project")
    committee = build_resources(replace(settings, role="committee"))
    approve(committee, dataset, "demo-project", None, load_deidentify_policy())
    kanon, risk = result["report"]["kanon"], result["report"]["risk"]
    return (f"{result['dataset']} v{result['version']}: k = {kanon['k_achieved']} "
            f"(levels {kanon['levels']}), {kanon['suppressed']} rows suppressed, "
            f"prosecutor risk ≤ {risk['prosecutor_max']:.2f}, "
            f"{len(result['report']['files'])} sequencing files scrubbed; approved by committee; "
            f"report {result['report_key']}")


def _certify(settings: Settings, derived: str) -> str:
    """Certify the approved release as the steward (DER §5) and check the certificate."""
    from dataclasses import replace

    from flows.certify import certify_flow
    from infra.resources import build_resources
    from tasks.certify import verify_document

    previous = os.environ.get("SEQLIFE_ROLE")
    os.environ["SEQLIFE_ROLE"] = "steward"  # the flow reads its role from the environment
    try:
        result = certify_flow(derived)
    finally:
        if previous is None:
            os.environ.pop("SEQLIFE_ROLE")
        else:
            os.environ["SEQLIFE_ROLE"] = previous
    steward = replace(settings, role="steward")
    problems = verify_document(build_resources(steward), result["signed"])
    unmet = [r for r in result["signed"]["certificate"]["requirements"] if not r["ok"]]
    return (f"{derived} v{result['version']}: {len(result['signed']['certificate']['requirements'])}"
            f" DER §5 requirements met ({len(unmet)} unmet), Ed25519-signed, "
            f"{'verifies' if not problems else 'VOID: ' + '; '.join(problems)}; "
            f"{result['certificate_key']}")


def _lineage(settings: Settings, derived: str) -> str:
    """Walk the DVC registry back from the certified release to the raw files."""
    from infra.resources import build_resources
    from tasks.lineage import effective_grade, lineage_of

    res = build_resources(settings)
    back = lineage_of.fn(res, derived, 1, "back")
    raw = back[-1]
    grade = effective_grade(res, derived, None)
    return (f"{len(back)} recorded stages back to raw ({raw.stage} of "
            f"{raw.outputs[0].dataset} v{raw.outputs[0].version}, {len(raw.outputs)} files); "
            f"handled at grade {grade['grade']} "
            f"({'own grade, certified' if grade['certified'] else 'inherited'}); "
            f"`seqlife lineage {derived}` shows both directions")


def _encrypt(settings: Settings, dataset: str) -> str:
    """Prove the raw version is kept as Crypt4GH only (sealed at intake), and that a later read
    still works through it."""
    from flows.encrypt import encrypt_flow
    from infra.resources import build_resources
    from tasks.certify import stored_digests

    result = encrypt_flow(dataset)
    res = build_resources(settings)
    digests = stored_digests(res, dataset, result["version"])
    readable = sum(1 for d in digests.values() if d != "altered")
    return (f"{dataset} v{result['version']}: {result['verified']} files sealed as Crypt4GH at "
            f"intake (no plaintext was ever stored), every segment authenticated against the "
            f"signed manifest; {readable}/{len(digests)} files read back through decryption")


def _share(settings: Settings, derived: str) -> list[tuple[str, str]]:
    """An institution's request through review, agreement, watermarked delivery, leak trace and
    subject access."""
    import io
    from dataclasses import replace

    import pandas as pd

    from infra.resources import build_resources
    from seqlife.encrypt import c4gh
    from seqlife.share import rules
    from tasks import share

    res = build_resources(settings)
    committee = build_resources(replace(settings, role="committee"))
    variables = ["sex", "lab_hemoglobin_g_l", "lab_wbc_10e9_l", "lab_alt_u_l"]
    submitted = share.submit(res, {
        "institution": "Fudan University", "applicant": "applicant-0042",
        "project": "NSFC-2026-0917", "funded": True, "qualifications": ["GCP training"],
        "plan": {"purpose": "Anaemia and liver enzymes in a sequencing cohort",
                 "inclusion": "consented subjects", "exclusion": "none", "variables": variables,
                 "endpoints": "haemoglobin by sex", "analysis": "linear models"},
        "duo_codes": ["DUO:0000042"], "dataset": derived, "variables": variables,
        "records": 1000, "destination_country": "CN", "tier": "file"})
    scores = {c: 4 for c in rules.load_share_policy()["review_criteria"]}
    for index, reviewer in enumerate(submitted["reviewers"]):
        share.vote(committee, submitted["request"], reviewer, index != 0, scores)
    decided = share.decide(committee, submitted["request"], months=12,
                           protection_measures=["encrypted storage", "named analysts only"],
                           emergency_plan="notify the controller within 24 hours")
    recipient = c4gh.new_secret_key()
    out = settings.home / "demo" / "delivered"
    delivered = share.deliver_file(res, decided["agreement"], c4gh.public_key_of(recipient), out)
    plain = io.BytesIO()
    with open(delivered["out"], "rb") as src:
        c4gh.decrypt_stream(src, plain, recipient)
    leaked = pd.read_parquet(io.BytesIO(plain.getvalue())).sample(frac=0.5, random_state=1)
    found = share.trace(res, leaked[["subject", "lab_hemoglobin_g_l", "lab_alt_u_l"]])[0]
    return [
        ("share: request + review", f"{submitted['request']} from Fudan University: checks "
         f"passed, {len(submitted['reviewers'])} reviewers drawn, {submitted['eligible_subjects']}"
         f" subjects eligible ({submitted['excluded_subjects']} excluded by consent); "
         f"{decided['message']}"),
        ("share: deliver", f"{decided['agreement']} until {decided['ends']}: "
         f"{delivered['records']} watermarked records as Crypt4GH for the recipient's key -> "
         f"{delivered['out']}"),
        ("share: trace a leak", f"half the rows, two columns, shuffled: traced to "
         f"{found['institution']} ({found['agreement']}), confidence {found['confidence']:.6f}"),
    ]


def _destroy_and_drill(settings: Settings) -> list[tuple[str, str]]:
    """Back up, let the sweep destroy the agreement once its use period is over, then prove by a
    restore drill that everything else restores and verifies."""
    from datetime import timedelta

    from sqlalchemy import select

    from infra.catalog import AgreementRow
    from infra.resources import build_resources
    from tasks import destroy, drill

    res = build_resources(settings)
    taken = drill.backup(res)
    with res.sessions() as session:
        ends = max(a.ends for a in session.scalars(select(AgreementRow)))
    swept = destroy.sweep(res, ends + timedelta(days=31))
    certificate = destroy.certificate_of(res, swept["destroyed"][0])["certificate"]
    report = drill.restore_drill(res)
    passed = sum(c["ok"] for c in report["checks"])
    return [
        ("backup", f"{taken['stamp']}: catalog + {taken['objects']} object versions to the "
                   f"second location, key store apart"),
        ("destroy (sweep)", f"day {ends + timedelta(days=31)} (use period over): "
         f"{len(certificate['steps'])} steps, nothing left on checking "
         f"{len(certificate['verified'])} places; signed certificate {swept['destroyed'][0]}; "
         f"{len(swept['overdue_proofs'])} requester proof overdue (alert)"),
        ("restore drill", f"{'passed' if report['passed'] else 'FAILED'}: {passed}/"
         f"{len(report['checks'])} checks, recovery {report['recovery_seconds']:.2f} s; "
         f"{report['report_key']}"),
    ]


def _collect_damaged(cohort: Path, collect_flow: Callable[..., dict]) -> str:
    """Show bad input handled: a truncated BAM is refused, audited, and stores nothing."""
    damaged = cohort.parent / "damaged"
    shutil.rmtree(damaged, ignore_errors=True)
    shutil.copytree(cohort, damaged)
    bam = sorted((damaged / "seq").glob("*.bam"))[0]
    bam.write_bytes(bam.read_bytes()[:-40])
    try:
        collect_flow(str(damaged), "demo-cohort")
    except SeqlifeError as exc:
        return f"refused as expected ({type(exc).__name__}): {exc.message.split('. ')[0]}"
    finally:
        shutil.rmtree(damaged, ignore_errors=True)
    return "NOT refused: a truncated file was accepted"


def register(commands: Commands) -> None:
    demo = commands.add_parser("demo", help="run the whole lifecycle on a synthetic cohort")
    demo.add_argument("--subjects", type=int, default=20)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(handler=cmd_demo)
