"""The ``seqlife`` command: one verb per lifecycle step, readable tables or ``--json`` for scripts.

Exit codes: 0 done, 1 refused or failed (the message says why and the audit trail has it),
2 wrong usage.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from seqlife.cli import (
    catalog,
    certify,
    classify,
    collect,
    deidentify,
    demo,
    destroy,
    encrypt,
    lineage,
    share,
)
from seqlife.cli.common import Commands, err_console
from seqlife.exceptions import SeqlifeError
from seqlife.settings import ENVIRONMENT_VARIABLES, Settings

#: Stage modules in the order their verbs are listed by --help; each has ``register(commands)``.
STAGES = (demo, collect, classify, deidentify, certify, lineage, encrypt, share, destroy,
          catalog)


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
    commands = Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
                        common)
    for stage in STAGES:
        stage.register(commands)
    return parser


#: Sub-verbs that make a command a distinct action for access control.
_SUB_ACTIONS = {"classify": ("approve",), "certify": ("verify",),
                "deidentify": ("approve", "reidentify")}
#: ``seqlife deidentify KIND IN --out OUT``: the kinds of single file it takes.
FILE_MODES = ("table", "vcf", "bcf", "bam", "cram", "fastq")


def action_of(args: argparse.Namespace) -> str:
    """The access-control name of a parsed command line (``command`` or ``command.action``)."""
    command = args.command
    for attribute in ("action", "kind", "audit_command"):
        value = getattr(args, attribute, None)
        if value:
            return f"{command}.{value}"
    if command == "collect" and (getattr(args, "map", None) or getattr(args, "accept_map", False)):
        return "collect.map"  # a steward decides how a hospital's columns become ours
    if command == "decrypt" and getattr(args, "dataset", None):
        return "decrypt.dataset"  # with a dataset's data key, not the caller's own key file
    target = getattr(args, "target", None)
    if command == "deidentify" and target in FILE_MODES:
        return "deidentify.file"
    if target in _SUB_ACTIONS.get(command, ()):
        return f"{command}.{target}"
    return command


def _authorise(args: argparse.Namespace, settings: Settings) -> None:
    """Every command is checked against the role's permissions before it runs; a refusal is
    audited when the catalog can be opened."""
    from seqlife.access import load_access_policy, require

    action = action_of(args)
    try:
        require(settings.role, action, load_access_policy())
    except SeqlifeError as refused:
        try:
            from infra.resources import build_resources

            build_resources(settings).audit.append("access.denied", f"command:{action}",
                                                   "refused", reason=refused.message)
        except SeqlifeError:
            pass  # the refusal itself is what matters; the catalog may not exist yet
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        _authorise(args, settings)
        _prepare_prefect(settings, args.verbose)
        return args.handler(args, settings)
    except SeqlifeError as exc:
        if args.json:
            print(json.dumps({"error": type(exc).__name__, "stage": exc.stage,
                              "message": exc.message}))
        else:
            err_console.print(f"[red]{type(exc).__name__}[/] ({exc.stage}): {exc.message}")
        return 1
