"""`seqlife deidentify`: a dataset, a single file, a release approval, a re-identification."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seqlife.cli.common import Commands, console, emit, required
from seqlife.settings import Settings


def cmd_deidentify(args: argparse.Namespace, settings: Settings) -> int:
    """De-identify a dataset (flow), a single file, approve a release, or re-identify one code."""
    from seqlife.cli import FILE_MODES

    if args.target in FILE_MODES:
        result = _deidentify_file(args, settings)
    elif args.target == "approve":
        from infra.resources import build_resources
        from seqlife.deidentify.tables import load_deidentify_policy
        from tasks.deidentify import approve

        result = approve(build_resources(settings), required(args.input, "DATASET"),
                         args.project, args.version, load_deidentify_policy())
    elif args.target == "reidentify":
        from infra.resources import build_resources
        from seqlife.deidentify.tables import load_deidentify_policy
        from tasks.deidentify import read_code_index

        subject = read_code_index(build_resources(settings), args.project,
                                  required(args.input, "SURROGATE"), args.reason or "",
                                  load_deidentify_policy())
        result = {"surrogate": args.input, "subject_key": subject}
    else:
        from flows.deidentify import deidentify_flow

        result = deidentify_flow(args.target, args.project, args.version)
    emit(args, result, lambda: _render_deidentify(result))
    return 0


def _deidentify_file(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """One file outside the catalog: secrets of the project from the key store, report beside OUT."""
    from infra.keystore import LocalKeyStore, date_shift_key, surrogate_key
    from seqlife.deidentify.files import deidentify_local_file

    if not args.out:
        raise SystemExit("seqlife deidentify: --out is required for a file")
    keys = LocalKeyStore(settings.keystore_dir)
    if args.target == "cram":  # decoded against the reference cache, never a network lookup
        from infra.resources import build_resources

        build_resources(settings).references()
    return deidentify_local_file(
        args.target, Path(required(args.input, "IN")), Path(args.out),
        surrogate_secret=keys.secret(surrogate_key(args.project)),
        shift_secret=keys.secret(date_shift_key(args.project)), project=args.project)


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
        console.print(f"k = {kanon['k_achieved']} (asked {kanon['k']}) over "
                      f"{', '.join(kanon['quasi_identifiers'])}; levels {kanon['levels']}, "
                      f"{kanon['suppressed']} rows suppressed; prosecutor risk max "
                      f"{risk.get('prosecutor_max', 0):.3f}")
    attacker = report.get("attacker")
    if attacker:
        console.print(f"attacker who knows {', '.join(attacker['knows'])}: re-identifies "
                      f"{attacker['reidentified_share']:.1%} of the raw records (limit "
                      f"{attacker['limit']:.1%}); re-identification test "
                      f"{'passed' if risk.get('passed') else 'failed'}")
    if result.get("report_key") or result.get("report_path"):
        console.print(f"report: {result.get('report_key') or result.get('report_path')}")


def register(commands: Commands) -> None:
    deidentify = commands.add_parser(
        "deidentify", help="de-identify a dataset or a file; approve a release; re-identify",
        description="seqlife deidentify DATASET --project P: run the deidentify flow on a "
                    "classified, approved dataset (output pending committee approval).\n"
                    "seqlife deidentify table|vcf|bcf|bam|cram|fastq IN --project P --out OUT: one file, "
                    "with a JSON + HTML report beside OUT.\n"
                    "seqlife deidentify approve DATASET --project P: committee approval.\n"
                    "seqlife deidentify reidentify SURROGATE --project P --reason TEXT: read the "
                    "patient code index (designated role only; audited).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    deidentify.add_argument("target", help="dataset, or table|vcf|bcf|bam|cram|fastq|approve|reidentify")
    deidentify.add_argument("input", nargs="?", help="input file, dataset or surrogate")
    deidentify.add_argument("--project", required=True, help="research project (secrets are per project)")
    deidentify.add_argument("--out", help="output file (file modes)")
    deidentify.add_argument("--version", type=int, help="dataset version (default the latest)")
    deidentify.add_argument("--reason", help="reidentify: why the code index is read")
    deidentify.set_defaults(handler=cmd_deidentify)
