"""`seqlife share …`, `seqlife trace` and `seqlife subject-access`."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from seqlife.cli.common import Commands, console, emit, required
from seqlife.settings import Settings


def _scores(items: list[str] | None) -> dict[str, int]:
    scores = {}
    for item in items or []:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise SystemExit(f"seqlife share vote: cannot read score '{item}' (CRITERION=N)")
        scores[name] = int(value)
    return scores


def cmd_share(args: argparse.Namespace, settings: Settings) -> int:
    from infra.resources import build_resources
    from tasks import share

    res = build_resources(settings)
    action = args.action
    if action == "request":
        path = Path(required(args.target, "REQUEST.yaml"))
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise SystemExit(f"seqlife share request: cannot read {path} ({type(exc).__name__})")
        result = share.submit(res, document)
        text = (f"Request {result['request']} in review: reviewers {', '.join(result['reviewers'])};"
                f" {result['eligible_subjects']} subjects eligible, {result['excluded_subjects']} "
                f"excluded by consent; extract grade {result['grade']}")
    elif action == "vote":
        result = share.vote(res, required(args.target, "REQUEST"),
                            required(args.reviewer, "--reviewer"), not args.reject,
                            _scores(args.score), args.comment or "")
        text = f"Vote of {result['reviewer']} on {result['request']} recorded"
    elif action == "decide":
        result = share.decide(res, required(args.target, "REQUEST"), months=args.months,
                              protection_measures=args.measure or [],
                              emergency_plan=args.emergency_plan or "")
        text = result["message"] + (f"; agreement {result['agreement']} until {result['ends']}"
                                    if result["agreement"] else "")
    elif action == "extend":
        result = share.extend(res, required(args.target, "AGREEMENT"),
                              date.fromisoformat(required(args.until, "--until")),
                              args.written_request or "")
        text = (f"Agreement {result['agreement']} extended to {result['ends']} "
                f"(extension {result['extensions']})")
    elif action == "deliver":
        from flows.share import share_flow

        result = share_flow(required(args.target, "AGREEMENT"), args.recipient, args.out)
        text = f"Delivered ({result['tier']}): " + ", ".join(
            f"{k}={v}" for k, v in result.items() if k not in ("tier", "token"))
        if "token" in result:
            text += f"\nAPI token (shown once): {result['token']}"
    elif action == "serve":
        return _serve(res, args.host, args.port)
    elif action == "enclave-run":
        return _enclave_run(res, required(args.target, "AGREEMENT"), args.analysis)
    elif action == "export":
        result = share.request_export(res, required(args.target, "AGREEMENT"),
                                      required(args.name, "--name"))
        text = f"Export {result['export']} archived, pending committee approval"
    elif action == "export-decide":
        result = share.decide_export(res, required(args.target, "EXPORT"), not args.reject,
                                     required(args.reason, "--reason"),
                                     Path(args.out) if args.out else None)
        text = f"Export {result['export']} {result['status']}" + (
            f": released to {result['released']}" if result["released"] else "")
    elif action == "publish":
        result = share.publish_aggregate(res, required(args.target, "DATASET"),
                                         [c for c in (args.by or "").split(",") if c])
        text = (f"Published {result['uri']}: {result['cells']} cells, {result['suppressed']} "
                "suppressed")
    elif action == "output":
        result = share.file_output(res, required(args.target, "AGREEMENT"),
                                   Path(required(args.file, "--file")))
        text = f"Output filed under {result['agreement']} ({result['outputs']} so far)"
    elif action == "blacklist":
        result = share.blacklist(res, required(args.target, "INSTITUTION"),
                                 required(args.reason, "--reason"))
        text = f"{result['institution']} blacklisted"
    else:
        raise SystemExit(f"seqlife share: unknown action {action}")
    emit(args, result, lambda: console.print(text))
    return 0


def _enclave_run(res: Any, agreement: str, command: list[str]) -> int:
    """Run one analysis inside the enclave: the extract is in clear only for the command's life."""
    import os
    import subprocess

    from tasks import share

    if not command:
        raise SystemExit("seqlife share enclave-run AGREEMENT -- COMMAND …: name the analysis "
                         "to run")
    exports = share.enclave_dir(res, agreement) / "exports"
    with share.enclave_session(res, agreement) as work:
        env = {**os.environ, "SEQLIFE_ENCLAVE_DATA": str(work / "extract.parquet"),
               "SEQLIFE_ENCLAVE_EXPORTS": str(exports)}
        return subprocess.run(command, cwd=work, env=env, check=False).returncode


def _serve(res: Any, host: str, port: int) -> int:
    """Serve the API over TLS (plain HTTP only with SEQLIFE_PLAIN_HTTP=loopback on loopback)."""
    import uvicorn

    from infra.https import server_config
    from infra.share_api import create_app

    config = server_config(create_app(res), res.settings, host, port)
    scheme = "https" if config.ssl_certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    console.print(f"Controlled sharing API on {scheme}://{shown}:{port}/v1/extract (Ctrl-C stops)")
    if config.ssl_certfile and res.settings.tls_cert is None:
        console.print(f"Self-signed certificate for localhost: {config.ssl_certfile} (clients pin "
                      "it, e.g. curl --cacert FILE)")
    uvicorn.Server(config).run()
    return 0


def cmd_trace(args: argparse.Namespace, settings: Settings) -> int:
    """Name the agreement a leaked table came from; --confirm blacklists its institution."""
    import pandas as pd

    from infra.resources import build_resources
    from tasks import share

    path = Path(args.file)
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"seqlife trace: cannot read {path} as a table ({type(exc).__name__})")
    res = build_resources(settings)
    matches = share.trace(res, frame)
    best = matches[0] if matches else None
    found = best is not None and best["confidence"] >= args.threshold
    res.audit.append("share.trace", f"file:{path.name}", "found" if found else "not_found",
                     reason=(f"{best['agreement']} ({best['institution']}), confidence "
                             f"{best['confidence']:.6f}") if best else "no deliveries")
    payload: dict[str, Any] = {"file": str(path), "found": found, "matches": matches[:5]}
    if found and args.confirm:
        payload["blacklisted"] = share.blacklist(res, best["institution"],
                                                 required(args.reason, "--reason"))

    def render() -> None:
        table = Table("agreement", "institution", "agreeing / compared", "confidence",
                      title=f"watermark trace of {path.name}")
        for m in matches[:5]:
            table.add_row(m["agreement"], m["institution"], f"{m['agreeing']} / {m['compared']}",
                          f"{m['confidence']:.6f}")
        console.print(table)
        console.print(f"[red]Leak traced to {best['institution']}[/] ({best['agreement']})"
                      if found else "No agreement matches with enough confidence.")

    emit(args, payload, render)
    return 0 if found else 1


def cmd_subject_access(args: argparse.Namespace, settings: Settings) -> int:
    from infra.resources import build_resources
    from tasks import share

    rows = share.subject_access(build_resources(settings), args.subject)

    def render() -> None:
        table = Table("delivered", "recipient", "agreement", "tier", "destination",
                      "agreement ends", "destroyed", title="uses and disclosures (HDS §7 g)")
        for r in rows:
            table.add_row(r["delivered_at"][:19], r["recipient"], r["agreement"], r["tier"],
                          r["destination"], r["agreement_ends"], r["destroyed_at"] or "not yet")
        console.print(table)

    emit(args, {"disclosures": rows}, render)
    return 0


def register(commands: Commands) -> None:
    share = commands.add_parser(
        "share", help="data requests, committee review, agreements and delivery by tier",
        description="seqlife share request REQUEST.yaml: an institution's request (checked, then "
                    "reviewers drawn).\nseqlife share vote REQUEST --reviewer ID (--approve|--reject)"
                    " --score legality=4 …: a drawn reviewer's vote (role committee).\n"
                    "seqlife share decide REQUEST --months N --measure … --emergency-plan …: "
                    "more than 2/3 in favour -> data use agreement.\n"
                    "seqlife share extend AGREEMENT --until DATE --written-request TEXT (at most "
                    "twice).\nseqlife share deliver AGREEMENT [--recipient PUB --out DIR]: by the "
                    "agreement's tier (file, enclave, api token).\nseqlife share serve "
                    "[--host H --port N]: the controlled API over TLS.\n"
                    "seqlife share enclave-run AGREEMENT -- COMMAND …: run an analysis in the "
                    "enclave; $SEQLIFE_ENCLAVE_DATA is the extract (in clear only while it "
                    "runs), results go to $SEQLIFE_ENCLAVE_EXPORTS.\n"
                    "seqlife share export AGREEMENT --name FILE / "
                    "export-decide EXPORT (--approve|--reject) --reason …: enclave results.\n"
                    "seqlife share publish DATASET --by age,sex: public aggregate, small cells "
                    "suppressed.\nseqlife share output AGREEMENT --file F: file a research "
                    "output (6-month follow-up).\nseqlife share blacklist INSTITUTION --reason ….",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    share.add_argument("action", choices=("request", "vote", "decide", "extend", "deliver",
                                          "serve", "enclave-run", "export",
                                          "export-decide", "publish",
                                          "output", "blacklist"))
    share.add_argument("target", nargs="?", help="request file, request id, agreement id, "
                                                 "export id, dataset or institution")
    share.add_argument("--reviewer")
    share.add_argument("--approve", action="store_true", help="vote / export: in favour (default)")
    share.add_argument("--reject", action="store_true", help="vote / export: against")
    share.add_argument("--score", action="append", help="CRITERION=N (Table 8); repeatable")
    share.add_argument("--comment")
    share.add_argument("--months", type=int, default=12, help="decide: use period")
    share.add_argument("--measure", action="append", help="decide: a protection measure")
    share.add_argument("--emergency-plan", help="decide: the leak emergency plan")
    share.add_argument("--until", help="extend: new end date (YYYY-MM-DD)")
    share.add_argument("--written-request", help="extend: the requester's written request")
    share.add_argument("--recipient", help="deliver: recipient public key (file tier)")
    share.add_argument("--out", help="deliver / export-decide: output folder")
    share.add_argument("--host", default="127.0.0.1",
                       help="serve: interface to listen on (default 127.0.0.1)")
    share.add_argument("--port", type=int, default=8765)
    share.add_argument("--name", help="export: file name in the enclave's exports folder")
    share.add_argument("--reason")
    share.add_argument("--by", help="publish: comma-separated columns to count by")
    share.add_argument("--file", help="output: the research output to file (RARE §3.7)")
    share.add_argument("analysis", nargs="*",
                       help="enclave-run: the analysis command, after --")
    share.set_defaults(handler=cmd_share)

    trace = commands.add_parser(
        "trace", help="name the agreement a leaked table came from (watermark)",
        description="seqlife trace LEAKED_FILE [--confirm --reason TEXT]: score every "
                    "delivery's watermark against the table (Parquet or CSV, rows in any order, "
                    "columns or rows missing); --confirm blacklists the institution (RARE §4.11)."
                    " Exit 0 when an agreement is found.")
    trace.add_argument("file")
    trace.add_argument("--threshold", type=float, default=0.999,
                       help="confidence needed to name an agreement (default 0.999)")
    trace.add_argument("--confirm", action="store_true", help="blacklist the institution found")
    trace.add_argument("--reason", help="with --confirm: why")
    trace.set_defaults(handler=cmd_trace)

    access = commands.add_parser(
        "subject-access", help="every use and disclosure of one subject's data (HDS §7 g)",
        description="seqlife subject-access SUBJECT_KEY: run by the controller for a subject's "
                    "request; lists recipient, agreement, date and destruction status.")
    access.add_argument("subject", help="the subject's linkage key (e.g. medical-record number)")
    access.set_defaults(handler=cmd_subject_access)

