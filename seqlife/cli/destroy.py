"""`seqlife destroy`, `seqlife backup`, `seqlife drill`, `seqlife retention` and `seqlife serve`."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from seqlife.cli.common import Commands, console, emit, required
from seqlife.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def cmd_destroy(args: argparse.Namespace, settings: Settings) -> int:
    from flows.destroy import destroy_flow, destroy_sweep_flow
    from infra.resources import build_resources
    from tasks import destroy

    if args.kind == "sweep":
        result = destroy_sweep_flow(args.today)
        emit(args, result, lambda: console.print(
            f"Sweep of {result['today']}: {len(result['destroyed'])} destruction(s) verified, "
            f"{len(result['overdue_proofs'])} requester proof(s) overdue"))
        return 0
    target = required(args.target, "TARGET")
    if args.kind == "proof":
        result = destroy.register_proof(build_resources(settings), target,
                                        Path(required(args.file, "--file")))
        emit(args, result, lambda: console.print(
            f"Destruction proof for {target} registered (sha256 {result['sha256'][:16]})"))
        return 0
    if args.kind == "certificate":
        result = destroy.certificate_of(build_resources(settings), target)
        emit(args, result, lambda: console.print_json(data=result))
        return 0
    if not args.dry_run and not args.reason:
        raise SystemExit("seqlife destroy: --reason is required (it goes on the certificate)")
    result = destroy_flow(args.kind, target, args.reason or "", args.dry_run)
    if args.dry_run:
        emit(args, result, lambda: console.print_json(data=result))
        return 0
    emit(args, {k: v for k, v in result.items() if k != "signed"}, lambda: _render(result))
    return 0


def _render(result: dict[str, Any]) -> None:
    table = Table("step", "done at", "detail", title=f"destruction {result['destruction']} of "
                                                      f"{result['target']}")
    for step in result["steps"]:
        table.add_row(step["step"], step["at"], step["detail"])
    console.print(table)
    for fate in result["code_index"]:
        console.print(f"Patient code index of project {fate['project']}: {fate['why']}")
    console.print(f"[green]Verified[/]: nothing left ({'; '.join(result['checked'])}). Signed "
                  f"certificate {result['certificate_key']}")


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from flows.drill import backup_flow

    result = backup_flow()
    emit(args, result, lambda: console.print(
        f"Backup {result['stamp']}: catalog + {result['objects']} object versions "
        f"({result['bytes']:,} bytes) to {settings.backup_dir}; key store to "
        f"{settings.key_backup_dir}"))
    return 0


def cmd_drill(args: argparse.Namespace, settings: Settings) -> int:
    from flows.drill import emergency_drill_flow, restore_drill_flow

    report = restore_drill_flow(args.stamp) if args.kind == "restore" else emergency_drill_flow()

    def render() -> None:
        table = Table("check", "result", "detail", title=report["title"])
        for check in report["checks"]:
            table.add_row(check["check"], "passed" if check["ok"] else "[red]FAILED[/]",
                          check["detail"])
        console.print(table)
        console.print(f"{'[green]Passed' if report['passed'] else '[red]Failed'}[/] in "
                      f"{report['seconds']} s; report {report['report_key']}")

    emit(args, report, render)
    return 0 if report["passed"] else 1


def cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    from flows.retention import retention_review_flow

    result = retention_review_flow(args.today)
    emit(args, result, lambda: console.print(
        f"Retention review of {result['today']}: {len(result['due'])} version(s) due; "
        f"{result['tokens_revoked']} expired API token(s) revoked"))
    return 0


def scheduled_deployments() -> list[dict[str, Any]]:
    """The deployments of prefect.yaml that carry a schedule."""
    document = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return [d for d in document["deployments"] if d.get("schedules")]


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve every scheduled deployment of prefect.yaml from this process (no worker needed)."""
    from prefect import serve
    from prefect.client.schemas.schedules import CronSchedule

    deployments = []
    for spec in scheduled_deployments():
        module, function = spec["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")),
                       function)
        deployments.append((spec, flow.to_deployment(
            name=spec["name"], description=spec.get("description"), tags=spec.get("tags"),
            schedules=[CronSchedule(cron=s["cron"], timezone=s["timezone"])
                       for s in spec["schedules"]])))
    rows = [{"deployment": s["name"], "cron": s["schedules"][0]["cron"],
             "timezone": s["schedules"][0]["timezone"]} for s, _ in deployments]
    if args.list:
        emit(args, {"deployments": rows}, lambda: console.print_json(data=rows))
        return 0
    console.print(f"Serving {len(rows)} scheduled deployments; Ctrl-C stops.")
    serve(*[d for _, d in deployments])
    return 0


def register(commands: Commands) -> None:
    destroy = commands.add_parser(
        "destroy", help="destroy an agreement's copies or a dataset; the daily sweep; proofs",
        description="seqlife destroy agreement|dataset TARGET --reason TEXT [--dry-run]: every "
                    "copy under the controller's reach (object versions and delete markers, DVC "
                    "cache and remote, enclave area, delivered files, API tokens, backups) and "
                    "the data key (crypto-shredding); for a dataset also the patient code index "
                    "of its projects and its key (live, catalog and key backups) once no other "
                    "live dataset of the project needs it; verified by looking again; signed "
                    "certificate. Re-running after a crash finishes the job.\n"
                    "seqlife destroy sweep [--today DATE]: the daily run.\n"
                    "seqlife destroy proof AGREEMENT --file PROOF: register the requester's "
                    "destruction proof.\nseqlife destroy certificate DESTRUCTION: print one.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    destroy.add_argument("kind", choices=("agreement", "dataset", "sweep", "proof", "certificate"))
    destroy.add_argument("target", nargs="?")
    destroy.add_argument("--reason")
    destroy.add_argument("--dry-run", action="store_true", help="list what would be destroyed")
    destroy.add_argument("--today", help="sweep: the day to sweep for (YYYY-MM-DD)")
    destroy.add_argument("--file", help="proof: the requester's written proof")
    destroy.set_defaults(handler=cmd_destroy)

    backup = commands.add_parser("backup", help="back up catalog and store (keys apart)")
    backup.set_defaults(handler=cmd_backup)

    drill = commands.add_parser(
        "drill", help="run the backup-restore or the emergency drill",
        description="seqlife drill restore [--stamp S]: restore a backup into scratch, verify "
                    "every checksum and signature, confirm destroyed data stays unreadable, time "
                    "it. seqlife drill emergency: a simulated storage incident from detection to "
                    "recovery. Both write HTML + JSON reports; exit 1 if a check fails.")
    drill.add_argument("kind", choices=("restore", "emergency"))
    drill.add_argument("--stamp", help="restore: which backup (default the latest)")
    drill.set_defaults(handler=cmd_drill)

    retention = commands.add_parser("retention", help="the retention review")
    retention.add_argument("action", choices=("review",))
    retention.add_argument("--today", help="the day to review for (YYYY-MM-DD)")
    retention.set_defaults(handler=cmd_retention)

    serve = commands.add_parser(
        "serve", help="serve the scheduled deployments of prefect.yaml locally",
        description="Runs the daily sweep and backup, the monthly retention review, the yearly "
                    "drills and key rotation on their cron schedules from this process, against "
                    "Prefect's API (ephemeral by default, or PREFECT_API_URL).")
    serve.add_argument("--list", action="store_true", help="only list what would be served")
    serve.set_defaults(handler=cmd_serve)
