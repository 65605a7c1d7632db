"""What every command shares: the consoles, --json output, the sub-command factory."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def emit(args: argparse.Namespace, payload: dict[str, Any], render: Callable[[], None]) -> None:
    """Print ``payload`` as JSON with --json, else call ``render`` for the readable form."""
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        render()


def required(value: str | None, what: str) -> str:
    if not value:
        raise SystemExit(f"seqlife: {what} is required here")
    return value


class Commands:
    """Sub-command factory that gives every verb the shared options (so --json works anywhere)."""

    def __init__(self, subparsers: Any, common: argparse.ArgumentParser) -> None:
        self.subparsers, self.common = subparsers, common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return self.subparsers.add_parser(name, parents=[self.common], **kwargs)
