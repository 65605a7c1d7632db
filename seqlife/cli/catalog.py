"""`seqlife datasets` and `seqlife audit verify|log`."""

from __future__ import annotations

import argparse

from rich.table import Table

from seqlife.cli.common import Commands, console, emit
from seqlife.settings import Settings


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

    emit(args, {"versions": rows}, render)
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

    emit(args, payload, render)
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

    emit(args, {"entries": [e.__dict__ for e in entries]}, render)
    return 0


def register(commands: Commands) -> None:
    datasets = commands.add_parser("datasets", help="list datasets and their versions")
    datasets.set_defaults(handler=cmd_datasets)

    audit = commands.add_parser("audit", help="inspect the tamper-evident audit trail")
    audit_commands = Commands(
        audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION"),
        commands.common)
    verify = audit_commands.add_parser("verify", help="recompute the hash chain; name the first "
                                                      "broken record")
    verify.set_defaults(handler=cmd_audit_verify)
    log = audit_commands.add_parser("log", help="show the latest audit records")
    log.add_argument("--limit", type=int, default=30)
    log.set_defaults(handler=cmd_audit_log)
