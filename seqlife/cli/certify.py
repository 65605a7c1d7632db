"""`seqlife certify` and `seqlife certify verify`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seqlife.cli.common import Commands, console, emit, required
from seqlife.settings import Settings


def cmd_certify(args: argparse.Namespace, settings: Settings) -> int:
    """Certify a derived dataset (steward), or verify a certificate file."""
    from infra.resources import build_resources

    res = build_resources(settings)
    if args.target == "verify":
        from tasks.certify import verify_document

        path = Path(required(args.input, "CERTIFICATE"))
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"seqlife certify verify: cannot read {path} ({exc.__class__.__name__})")
        problems = verify_document(res, document)
        payload = {"certificate": str(path), "valid": not problems, "problems": problems}

        def render() -> None:
            if problems:
                console.print("[red]Certificate void[/]: " + "; ".join(problems))
            else:
                body = document["certificate"]
                console.print(f"[green]Certificate valid[/]: {body['dataset']} v{body['version']} "
                              f"matches its signature and the stored data")

        emit(args, payload, render)
        return 0 if not problems else 1
    from flows.certify import certify_flow

    result = certify_flow(args.target, args.version, args.scenario)
    out = Path(args.out) if args.out else None
    if out:
        out.write_text(json.dumps(result["signed"], indent=2, sort_keys=True), encoding="utf-8")
    emit(args, {k: v for k, v in result.items() if k != "signed"} | {"written": str(out or "")},
          lambda: console.print(
              f"[green]Certified[/] {result['dataset']} v{result['version']}: certificate "
              f"{result['certificate']} at {result['certificate_key']}"
              + (f", copy in {out}" if out else "")))
    return 0


def register(commands: Commands) -> None:
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
