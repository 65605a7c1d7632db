"""Prefect tasks: thin wrappers that fetch with an adapter, call the pure core, return plain data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from seqlife.exceptions import Transient

T = TypeVar("T")


def is_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry only what a retry can cure: storage or database hiccups, never a policy refusal."""
    return isinstance(state.data, Transient)


#: Most tasks one mapped step is split into. Prefect costs ~10 ms per task run (submission and
#: state writes); 3,000 one-file tasks would spend more time orchestrating than working, while 32
#: batches still keep every Dask worker of a cluster busy (bench/lifecycle.py measures the share).
MAX_MAPPED_TASKS = 32


def batches(items: Sequence[T], max_tasks: int = MAX_MAPPED_TASKS) -> list[list[T]]:
    """``items`` in at most ``max_tasks`` consecutive, near-equal batches (order kept)."""
    if not items:
        return []
    size = -(-len(items) // min(len(items), max_tasks))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
