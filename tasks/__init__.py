"""Prefect tasks: thin wrappers that fetch with an adapter, call the pure core, return plain data."""

from __future__ import annotations

from typing import Any

from seqlife.exceptions import Transient


def is_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry only what a retry can cure: storage or database hiccups, never a policy refusal."""
    return isinstance(state.data, Transient)
