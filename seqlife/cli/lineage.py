"""`seqlife lineage DATASET[@VERSION]`: the chain back to raw inputs and what was derived from it."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from seqlife.cli.common import Commands, console, emit
from seqlife.settings import Settings


def parse_target(text: str) -> tuple[str, int | None]:
    """``name`` or ``name@N`` (also ``name@vN``) -> (name, N or None for the latest)."""
    name, _, version = text.partition("@")
    version = version.removeprefix("v")
    if not name or (version and not version.isdigit()):
        raise SystemExit(f"seqlife lineage: cannot read '{text}' (expected DATASET or DATASET@N)")
    return name, int(version) if version else None


def _step(stage: Any) -> dict[str, Any]:
    return {"stage": stage.name, "verb": stage.stage, "flow_run_id": stage.flow_run_id,
            "policy_hash": stage.policy_hash, "params": stage.params,
            "inputs": [a.to_dict() for a in stage.inputs],
            "outputs": [a.to_dict() for a in stage.outputs]}


def _by_version(artifacts: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for a in artifacts:
        key = f"{a['dataset']} v{a['version']}"
        counts[key] = counts.get(key, 0) + 1
    return "\n".join(f"{key} ({n} file{'s' if n > 1 else ''})" for key, n in counts.items())


def cmd_lineage(args: argparse.Namespace, settings: Settings) -> int:
    """Print both directions of a version's lineage, its handling grade and, with --verify,
    whether the registry still holds every recorded byte."""
    from infra.lineage import LineageRegistry
    from infra.resources import build_resources
    from tasks.classify import find_version
    from tasks.lineage import effective_grade, lineage_of

    res = build_resources(settings)
    dataset, version = parse_target(args.target)
    with res.sessions() as session:
        version = find_version(session, dataset, version).version
    directions = ("back", "forward") if args.direction == "both" else (args.direction,)
    chains = {d: [_step(s) for s in lineage_of.fn(res, dataset, version, d)] for d in directions}
    payload: dict[str, Any] = {"dataset": dataset, "version": version, **chains,
                               "grade": effective_grade(res, dataset, version)}
    if args.verify:
        payload["problems"] = LineageRegistry.open(settings).verify(dataset, version,
                                                                    deep=args.deep)

    def render() -> None:
        grade = payload["grade"]
        note = ("own grade, re-classified and certified" if grade["certified"] else
                f"inherited from {', '.join(grade['inherited_from'])}" if grade["inherited_from"]
                else "its own classified grade")
        console.print(f"[bold]{dataset} v{version}[/]: handled at grade {grade['grade']} ({note})")
        titles = {"back": "derived -> raw: what it was made from",
                  "forward": "raw -> derived: what was made from it"}
        for direction, steps in chains.items():
            table = Table("stage", "flow run", "policy", "reads", "writes", title=titles[direction])
            for step in steps:
                table.add_row(step["verb"], step["flow_run_id"][:8], step["policy_hash"][:8],
                              _by_version(step["inputs"]) or "(raw intake)",
                              _by_version(step["outputs"]))
            console.print(table)
            if args.files:
                files = Table("stage", "file", "sha256", title="files")
                for step in steps:
                    for artifact in step["outputs"]:
                        files.add_row(step["verb"], f"{artifact['dataset']} v{artifact['version']}"
                                      f" {artifact['path']}", artifact["sha256"])
                console.print(files)
        if args.verify:
            problems = payload["problems"]
            console.print("[green]Registry intact[/]: every recorded byte is in the cache and the "
                          "remote" if not problems else "[red]Registry problems[/]: "
                          + "; ".join(problems))

    emit(args, payload, render)
    return 1 if args.verify and payload["problems"] else 0


def register(commands: Commands) -> None:
    lineage = commands.add_parser(
        "lineage", help="trace a dataset version back to raw data and forward to what derives "
                        "from it",
        description="seqlife lineage DATASET[@VERSION]: the recorded stages (DVC registry) from "
                    "this version back to the raw files it came from, and forward to every "
                    "dataset derived from it, with SHA-256s, Prefect flow-run ids and policy "
                    "hashes; plus the grade the version must be handled at (inherited from its "
                    "sources until it is re-classified and certified).")
    lineage.add_argument("target", help="DATASET or DATASET@VERSION (default the latest)")
    lineage.add_argument("--direction", choices=("back", "forward", "both"), default="both")
    lineage.add_argument("--verify", action="store_true",
                         help="also check the registry: workspace, DVC cache and remote hold the "
                              "recorded bytes (exit 1 if not)")
    lineage.add_argument("--files", action="store_true",
                         help="also list every file each stage wrote, with its SHA-256")
    lineage.add_argument("--deep", action="store_true", help="with --verify: re-hash every byte")
    lineage.set_defaults(handler=cmd_lineage)
