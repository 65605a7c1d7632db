"""`seqlife synth` and `seqlife collect`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from seqlife.cli.common import Commands, console, emit, err_console
from seqlife.settings import Settings


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
    emit(args, payload, lambda: console.print(
        f"Synthetic cohort: {summary.subjects} subjects, {len(summary.files)} files, "
        f"{summary.total_bytes:,} bytes in {summary.out_dir}"))
    return 0


def cmd_collect(args: argparse.Namespace, settings: Settings) -> int:
    from flows.collect import collect_flow

    result = collect_flow(args.source, args.dataset, args.scenario, args.owner or "",
                          args.map, args.accept_map)
    emit(args, result, lambda: _render_collect(result))
    return 0


def _render_collect(result: dict[str, Any]) -> None:
    state = "registered as new version" if result["created"] else "unchanged: same content as"
    console.print(f"[bold]{result['dataset']}[/] {state} v{result['version']} — "
                  f"{result['files']} files, {result['total_bytes']:,} bytes, "
                  f"{result['subjects']} subjects, {len(result['excluded_subjects'])} left out "
                  "(consent withdrawn)")
    console.print(f"manifest sha256 {result['manifest_sha256']}")


def register(commands: Commands) -> None:
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
                    "store and register the delivery. Tables may be CSV/TSV (UTF-8 or "
                    "GBK/GB18030), .xlsx or Parquet; a clinical table with the hospital's own "
                    "column names is classified by content and a column map is proposed for a "
                    "steward to approve. Any refusal stores nothing and is audited.")
    collect.add_argument("source", help="delivery directory, laid out as `seqlife synth` writes it")
    collect.add_argument("--dataset", required=True, help="catalog name of the dataset")
    collect.add_argument("--scenario", default="research",
                         help="use the consent must cover (default research)")
    collect.add_argument("--owner", help="named owner of the dataset (default SEQLIFE_ACTOR)")
    collect.add_argument("--map", metavar="FILE",
                         help="steward: YAML map of the clinical table's own columns onto the "
                              "schema (delivered: canonical column, keep or drop); intake "
                              "writes a proposal to edit when the columns are not ours")
    collect.add_argument("--accept-map", action="store_true",
                         help="steward: accept the map proposed from the columns' content as is")
    collect.set_defaults(handler=cmd_collect)
