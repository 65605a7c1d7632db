"""The ``seqlife`` command: one verb per lifecycle step, readable tables or ``--json`` for scripts.

Exit codes: 0 done, 1 refused or failed (the message says why and the audit trail has it),
2 wrong usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from seqlife.exceptions import SeqlifeError
from seqlife.settings import ENVIRONMENT_VARIABLES, Settings

if TYPE_CHECKING:
    from seqlife.classify.labels import Override

console = Console()
err_console = Console(stderr=True)


def _prepare_prefect(settings: Settings, verbose: bool) -> None:
    """Prefect runs ephemeral, with its home under ours; no server is started by hand.

    Unless --verbose, engine logs are silenced: a refusal is printed once, in steward words, and
    kept in the audit trail and in the flow run's state, not as a wall of tracebacks.
    """
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    # Prefect's ephemeral server dies silently (and the client waits out its start-up timeout)
    # when the parent of its home does not exist yet.
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    quiet = "WARNING" if verbose else "CRITICAL"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", quiet)
    os.environ.setdefault("PREFECT_LOGGING_ROOT_LEVEL", quiet)
    # The temporary API server logs harmless cancellation tracebacks when it shuts down.
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", quiet)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def _emit(args: argparse.Namespace, payload: dict[str, Any], render: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        render()


# --- commands --------------------------------------------------------------------------------


def cmd_synth(args: argparse.Namespace, settings: Settings) -> int:
    from seqlife.synth import generate_cohort

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=err_console, disable=args.json or
                  not args.fastq_bytes) as progress:
        bar = progress.add_task("large FASTQ", total=args.fastq_bytes or 0)
        summary = generate_cohort(
            Path(args.out), subjects=args.subjects, seed=args.seed, fastq_bytes=args.fastq_bytes,
            progress=lambda _name, done: progress.update(bar, completed=done))
    payload = {"out_dir": str(summary.out_dir), "subjects": summary.subjects,
               "files": len(summary.files), "total_bytes": summary.total_bytes}
    _emit(args, payload, lambda: console.print(
        f"Synthetic cohort: {summary.subjects} subjects, {len(summary.files)} files, "
        f"{summary.total_bytes:,} bytes in {summary.out_dir}"))
    return 0


def cmd_collect(args: argparse.Namespace, settings: Settings) -> int:
    from flows.collect import collect_flow

    result = collect_flow(args.source, args.dataset, args.scenario, args.owner or "")
    _emit(args, result, lambda: _render_collect(result))
    return 0


def _render_collect(result: dict[str, Any]) -> None:
    state = "registered as new version" if result["created"] else "unchanged: same content as"
    console.print(f"[bold]{result['dataset']}[/] {state} v{result['version']} — "
                  f"{result['files']} files, {result['total_bytes']:,} bytes, "
                  f"{result['subjects']} subjects, {len(result['excluded_subjects'])} left out "
                  "(consent withdrawn)")
    console.print(f"manifest sha256 {result['manifest_sha256']}")


def cmd_classify(args: argparse.Namespace, settings: Settings) -> int:
    """Propose labels (dataset or file), or approve the current proposal as a steward."""
    if args.target == "approve":
        return _classify_approve(args, settings)
    if args.dataset:
        raise SystemExit("seqlife classify: a second argument is only taken after 'approve'")
    path = Path(args.target)
    if path.exists():
        from seqlife.classify.detectors import load_detectors
        from seqlife.classify.labels import classify_file, load_classify_policy

        fields, summary = classify_file(path, load_detectors(), load_classify_policy())
        result = {"file": str(path), "status": "not stored (file outside the catalog)",
                  "labels": summary.__dict__, "fields": [f.__dict__ for f in fields]}
    else:
        from flows.classify import classify_flow

        result = classify_flow(args.target, args.version)
    _emit(args, result, lambda: _render_classification(result))
    return 0


def _classify_approve(args: argparse.Namespace, settings: Settings) -> int:
    from infra.resources import build_resources
    from seqlife.classify.labels import load_classify_policy
    from tasks.classify import approve

    if not args.dataset:
        raise SystemExit("seqlife classify approve: name the dataset to approve")
    overrides = [_parse_override(text, args.reason or "") for text in args.override or []]
    result = approve(build_resources(settings), args.dataset, args.version, overrides,
                     load_classify_policy())
    _emit(args, result, lambda: console.print(
        f"[green]Approved[/] {result['dataset']} v{result['version']}: grade "
        f"{result['labels']['grade']}, tier {result['labels']['tier']}, labels at "
        f"{result['labels_key']}"))
    return 0


def _parse_override(text: str, reason: str) -> "Override":
    """FILE:FIELD=GRADE[:IDENTIFIER], e.g. tables/clinical.parquet:note=3:quasi."""
    from seqlife.classify.labels import Override

    target, _, value = text.rpartition("=")
    file, _, field = target.rpartition(":")
    grade_text, _, identifier = value.partition(":")
    if not file or not field or not grade_text.isdigit():
        raise SystemExit(f"seqlife classify approve: cannot read override '{text}' "
                         "(expected FILE:FIELD=GRADE[:IDENTIFIER])")
    return Override(file, field, int(grade_text), identifier or None, reason)


def _render_classification(result: dict[str, Any]) -> None:
    labels = result["labels"]
    table = Table("file", "field", "identifier", "category", "grade", "evidence",
                  title=f"classification ({result['status']})")
    for f in result["fields"]:
        evidence = (f"{f['detector']} {f['share']:.0%} of {f['sampled']}"
                    + (" + name" if f["name_hint"] else "")) if f["detector"] else ""
        table.add_row(f["file"], f["field"], f["identifier"], f["category"], str(f["grade"]),
                      "; ".join(x for x in (evidence, f["note"]) if x))
    console.print(table)
    console.print(
        f"dataset: grade [bold]{labels['grade']}[/], tier {labels['tier']}, "
        f"{labels['confidentiality']}, identifiable={labels['identifiable']}, "
        f"kind={labels['data_kind']} (shareable={labels['shareable']}), "
        f"important data={labels['important_data']}, special-disease rows="
        f"{labels['special_disease_rows']}; allowed sharing: "
        f"{', '.join(labels['sharing_forms']) or 'none'}")


def cmd_deidentify(args: argparse.Namespace, settings: Settings) -> int:
    """De-identify a dataset (flow), a single file, approve a release, or re-identify one code."""
    if args.target in ("table", "vcf", "bam", "fastq"):
        result = _deidentify_file(args, settings)
    elif args.target == "approve":
        from infra.resources import build_resources
        from seqlife.deidentify.tables import load_deidentify_policy
        from tasks.deidentify import approve

        result = approve(build_resources(settings), _required(args.input, "DATASET"),
                         args.project, args.version, load_deidentify_policy())
    elif args.target == "reidentify":
        from infra.resources import build_resources
        from seqlife.deidentify.tables import load_deidentify_policy
        from tasks.deidentify import read_code_index

        subject = read_code_index(build_resources(settings), args.project,
                                  _required(args.input, "SURROGATE"), args.reason or "",
                                  load_deidentify_policy())
        result = {"surrogate": args.input, "subject_key": subject}
    else:
        from flows.deidentify import deidentify_flow

        result = deidentify_flow(args.target, args.project, args.version)
    _emit(args, result, lambda: _render_deidentify(result))
    return 0


def _required(value: str | None, what: str) -> str:
    if not value:
        raise SystemExit(f"seqlife deidentify: {what} is required here")
    return value


def _deidentify_file(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """One file outside the catalog: secrets of the project from the key store, report beside OUT."""
    from infra.keystore import LocalKeyStore
    from seqlife.deidentify.files import deidentify_local_file

    if not args.out:
        raise SystemExit("seqlife deidentify: --out is required for a file")
    keys = LocalKeyStore(settings.keystore_dir)
    return deidentify_local_file(
        args.target, Path(_required(args.input, "IN")), Path(args.out),
        surrogate_secret=keys.secret(f"surrogate-{args.project}"),
        shift_secret=keys.secret(f"date-shift-{args.project}"), project=args.project)


def _render_deidentify(result: dict[str, Any]) -> None:
    if "subject_key" in result:
        console.print(f"{result['surrogate']} -> {result['subject_key']} (read audited)")
        return
    if result.get("status") == "approved":
        console.print(f"[green]Approved for release[/]: {result['dataset']} v{result['version']}")
        return
    report = result.get("report", {})
    kanon, risk = report.get("kanon", {}), report.get("risk", {})
    where = f"{result['dataset']} v{result['version']}" if "dataset" in result else result.get("out")
    console.print(f"De-identified -> {where} ({result.get('status', 'written')})")
    if kanon:
        console.print(f"k = {kanon['k_achieved']} (asked {kanon['k']}), levels {kanon['levels']}, "
                      f"{kanon['suppressed']} rows suppressed; prosecutor risk max "
                      f"{risk.get('prosecutor_max', 0):.3f}; re-identification test "
                      f"{'passed' if risk.get('passed') else 'failed'}")
    if result.get("report_key") or result.get("report_path"):
        console.print(f"report: {result.get('report_key') or result.get('report_path')}")


def cmd_certify(args: argparse.Namespace, settings: Settings) -> int:
    """Certify a derived dataset (steward), or verify a certificate file."""
    from infra.resources import build_resources

    res = build_resources(settings)
    if args.target == "verify":
        from tasks.certify import verify_document

        path = Path(_required(args.input, "CERTIFICATE"))
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"seqlife certify verify: cannot read {path} ({exc.__class__.__name__})")
        problems = verify_document(res, document)
        payload = {"certificate": str(path), "valid": not problems, "problems": problems}

        def render() -> None:
            if problems:
                console.print(f"[red]Certificate void[/]: " + "; ".join(problems))
            else:
                body = document["certificate"]
                console.print(f"[green]Certificate valid[/]: {body['dataset']} v{body['version']} "
                              f"matches its signature and the stored data")

        _emit(args, payload, render)
        return 0 if not problems else 1
    from flows.certify import certify_flow

    result = certify_flow(args.target, args.version, args.scenario)
    out = Path(args.out) if args.out else None
    if out:
        out.write_text(json.dumps(result["signed"], indent=2, sort_keys=True), encoding="utf-8")
    _emit(args, {k: v for k, v in result.items() if k != "signed"} | {"written": str(out or "")},
          lambda: console.print(
              f"[green]Certified[/] {result['dataset']} v{result['version']}: certificate "
              f"{result['certificate']} at {result['certificate_key']}"
              + (f", copy in {out}" if out else "")))
    return 0


def cmd_datasets(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import select

    from infra.catalog import Dataset
    from infra.resources import build_resources

    res = build_resources(settings)
    with res.sessions() as session:
        rows = [
            {"dataset": d.name, "kind": d.kind, "owner": d.owner, "version": v.version,
             "zone": v.zone, "files": v.file_count, "bytes": v.total_bytes,
             "manifest_sha256": v.manifest_sha256, "created_at": v.created_at.isoformat()}
            for d in session.scalars(select(Dataset).order_by(Dataset.name)) for v in d.versions
        ]

    def render() -> None:
        table = Table("dataset", "version", "zone", "files", "bytes", "manifest", "created")
        for row in rows:
            table.add_row(row["dataset"], str(row["version"]), row["zone"], str(row["files"]),
                          f"{row['bytes']:,}", row["manifest_sha256"][:16], row["created_at"][:19])
        console.print(table)

    _emit(args, {"versions": rows}, render)
    return 0


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from infra.resources import build_resources

    report = build_resources(settings).audit.verify()
    payload = {"ok": report.ok, "records": report.count, "head_hash": report.head_hash,
               "first_bad_seq": report.first_bad_seq, "problem": report.problem}

    def render() -> None:
        if report.ok:
            console.print(f"[green]Audit trail intact[/]: {report.count} records, "
                          f"head {report.head_hash}")
        else:
            console.print(f"[red]Audit trail broken at record #{report.first_bad_seq}[/]: "
                          f"{report.problem}. {report.count} records before it verify.")

    _emit(args, payload, render)
    return 0 if report.ok else 1


def cmd_audit_log(args: argparse.Namespace, settings: Settings) -> int:
    from infra.resources import build_resources

    entries = list(build_resources(settings).audit.entries())[-args.limit:]

    def render() -> None:
        table = Table("#", "time", "actor", "action", "object", "outcome", "reason")
        for e in entries:
            table.add_row(str(e.seq), e.ts[:19], e.actor, e.action, e.object, e.outcome,
                          e.reason[:80])
        console.print(table)

    _emit(args, {"entries": [e.__dict__ for e in entries]}, render)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """synth -> collect -> collect again (idempotent) -> audit verify, with a summary."""
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

    _emit(args, payload, render)
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


# --- parser ----------------------------------------------------------------------------------


class _Commands:
    """Sub-command factory that gives every verb the shared options (so --json works anywhere)."""

    def __init__(self, subparsers: Any, common: argparse.ArgumentParser) -> None:
        self.subparsers, self.common = subparsers, common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return self.subparsers.add_parser(name, parents=[self.common], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    env_help = "\n".join(f"  {name:<26} {text}" for name, text in ENVIRONMENT_VARIABLES.items())
    parser = argparse.ArgumentParser(
        prog="seqlife",
        description="Run the lifecycle of clinical sequencing data: collect, classify, "
                    "de-identify, quality-gate, encrypt, share and destroy, with an audit trail.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Environment variables:\n" + env_help,
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--verbose", action="store_true",
                        help="show the workflow engine's own logs (Prefect) on stderr")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print machine-readable JSON")
    commands = _Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
                         common)

    demo = commands.add_parser("demo", help="run the whole lifecycle on a synthetic cohort")
    demo.add_argument("--subjects", type=int, default=20)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(handler=cmd_demo)

    synth = commands.add_parser("synth", help="generate a deterministic synthetic cohort")
    synth.add_argument("out", help="directory to write (clinical, consents, samples, seq/)")
    synth.add_argument("--subjects", type=int, default=20)
    synth.add_argument("--seed", type=int, default=7)
    synth.add_argument("--fastq-bytes", type=int, default=None,
                       help="grow the first subject's FASTQ.gz to at least this many bytes "
                            "(streamed; for benchmarks)")
    synth.set_defaults(handler=cmd_synth)

    collect = commands.add_parser(
        "collect", help="validate a delivery and store it as a raw dataset version",
        description="Parse every file and table, link every subject to a covering consent, then "
                    "store and register the delivery. Any refusal stores nothing and is audited.")
    collect.add_argument("source", help="delivery directory, laid out as `seqlife synth` writes it")
    collect.add_argument("--dataset", required=True, help="catalog name of the dataset")
    collect.add_argument("--scenario", default="research",
                         help="use the consent must cover (default research)")
    collect.add_argument("--owner", help="named owner of the dataset (default SEQLIFE_ACTOR)")
    collect.set_defaults(handler=cmd_collect)

    classify = commands.add_parser(
        "classify", help="propose labels for a dataset or file; `classify approve` as steward",
        description="seqlife classify TARGET: TARGET is a dataset name (a proposal is stored and "
                    "audited) or a file path (CSV, Parquet, FASTQ, BAM, VCF; labels printed only).\n"
                    "seqlife classify approve DATASET [--override FILE:FIELD=GRADE[:IDENTIFIER] "
                    "--reason TEXT]: approve the current proposal (role steward).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    classify.add_argument("target", help="dataset name, file path, or 'approve'")
    classify.add_argument("dataset", nargs="?", help="with 'approve': the dataset to approve")
    classify.add_argument("--version", type=int, help="dataset version (default the latest)")
    classify.add_argument("--override", action="append",
                          help="with 'approve': FILE:FIELD=GRADE[:IDENTIFIER]; repeatable")
    classify.add_argument("--reason", help="with --override: why the steward changed the label")
    classify.set_defaults(handler=cmd_classify)

    deidentify = commands.add_parser(
        "deidentify", help="de-identify a dataset or a file; approve a release; re-identify",
        description="seqlife deidentify DATASET --project P: run the deidentify flow on a "
                    "classified, approved dataset (output pending committee approval).\n"
                    "seqlife deidentify table|vcf|bam|fastq IN --project P --out OUT: one file, "
                    "with a JSON + HTML report beside OUT.\n"
                    "seqlife deidentify approve DATASET --project P: committee approval.\n"
                    "seqlife deidentify reidentify SURROGATE --project P --reason TEXT: read the "
                    "patient code index (designated role only; audited).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    deidentify.add_argument("target", help="dataset, or table|vcf|bam|fastq|approve|reidentify")
    deidentify.add_argument("input", nargs="?", help="input file, dataset or surrogate")
    deidentify.add_argument("--project", required=True, help="research project (secrets are per project)")
    deidentify.add_argument("--out", help="output file (file modes)")
    deidentify.add_argument("--version", type=int, help="dataset version (default the latest)")
    deidentify.add_argument("--reason", help="reidentify: why the code index is read")
    deidentify.set_defaults(handler=cmd_deidentify)

    certify = commands.add_parser(
        "certify", help="certify a derived dataset (DER §5) or verify a certificate",
        description="seqlife certify DATASET [--version N] [--out CERT.json]: check process, "
                    "quality and security requirements, then sign (role steward).\n"
                    "seqlife certify verify CERT.json: check the signature and that the stored "
                    "data still matches; exit 1 if void.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    certify.add_argument("target", help="derived dataset name, or 'verify'")
    certify.add_argument("input", nargs="?", help="with 'verify': the certificate JSON")
    certify.add_argument("--version", type=int, help="dataset version (default the latest)")
    certify.add_argument("--scenario", default="scientific_research",
                         help="application scenario certified for (DER §4)")
    certify.add_argument("--out", help="also write the signed certificate JSON here")
    certify.set_defaults(handler=cmd_certify)

    datasets = commands.add_parser("datasets", help="list datasets and their versions")
    datasets.set_defaults(handler=cmd_datasets)

    audit = commands.add_parser("audit", help="inspect the tamper-evident audit trail")
    audit_commands = _Commands(
        audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION"), common)
    verify = audit_commands.add_parser("verify", help="recompute the hash chain; name the first "
                                                      "broken record")
    verify.set_defaults(handler=cmd_audit_verify)
    log = audit_commands.add_parser("log", help="show the latest audit records")
    log.add_argument("--limit", type=int, default=30)
    log.set_defaults(handler=cmd_audit_log)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        _prepare_prefect(settings, args.verbose)
        return args.handler(args, settings)
    except SeqlifeError as exc:
        if args.json:
            print(json.dumps({"error": type(exc).__name__, "stage": exc.stage,
                              "message": exc.message}))
        else:
            err_console.print(f"[red]{type(exc).__name__}[/] ({exc.stage}): {exc.message}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
