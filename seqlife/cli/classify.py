"""`seqlife classify` and `seqlife classify approve`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from seqlife.cli.common import Commands, console, emit
from seqlife.settings import Settings

if TYPE_CHECKING:
    from seqlife.classify.labels import Override


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
    emit(args, result, lambda: _render_classification(result))
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
    emit(args, result, lambda: console.print(
        f"[green]Approved[/] {result['dataset']} v{result['version']}: grade "
        f"{result['labels']['grade']}, tier {result['labels']['tier']}, labels at "
        f"{result['labels_key']}"))
    return 0


def _parse_override(text: str, reason: str) -> "Override":
    """FILE:FIELD=GRADE[:IDENTIFIER[:ROLE]], e.g. tables/clinical.parquet:note=3:quasi, or
    tables/clinical.parquet:c7=3:quasi:sex to give an unrecognised column its role."""
    from seqlife.classify.labels import Override

    target, _, value = text.rpartition("=")
    file, _, field = target.rpartition(":")
    grade_text, _, rest = value.partition(":")
    identifier, _, role = rest.partition(":")
    if not file or not field or not grade_text.isdigit():
        raise SystemExit(f"seqlife classify approve: cannot read override '{text}' "
                         "(expected FILE:FIELD=GRADE[:IDENTIFIER[:ROLE]])")
    return Override(file, field, int(grade_text), identifier or None, reason, role or None)


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


def register(commands: Commands) -> None:
    classify = commands.add_parser(
        "classify", help="propose labels for a dataset or file; `classify approve` as steward",
        description="seqlife classify TARGET: TARGET is a dataset name (a proposal is stored and "
                    "audited) or a file path (CSV, Parquet, FASTQ, BAM, CRAM, VCF, BCF; labels "
                    "printed only).\n"
                    "seqlife classify approve DATASET [--override FILE:FIELD=GRADE[:IDENTIFIER[:ROLE]] "
                    "--reason TEXT]: approve the current proposal (role steward); a sequencing "
                    "header field labelled unknown needs an override.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    classify.add_argument("target", help="dataset name, file path, or 'approve'")
    classify.add_argument("dataset", nargs="?", help="with 'approve': the dataset to approve")
    classify.add_argument("--version", type=int, help="dataset version (default the latest)")
    classify.add_argument("--override", action="append",
                          help="with 'approve': FILE:FIELD=GRADE[:IDENTIFIER]; repeatable")
    classify.add_argument("--reason", help="with --override: why the steward changed the label")
    classify.set_defaults(handler=cmd_classify)
