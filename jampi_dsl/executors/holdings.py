"""What a plan step keeps on Spark (cached RDDs, broadcast variables), released
by the runner at the point the plan gives for that step's value.

Spark would free them on its own only when the JVM collects objects that
Python let go of, and a cached RDD read by block id (a detached matrix) is not
reachable from its readers: releasing by garbage collection lost blocks that
later steps still needed. Here the runner holds them and frees them itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_HELD: ContextVar[list | None] = ContextVar("jampi_held", default=None)


def hold(resource: Any) -> Any:
    """Record ``resource`` (an RDD that was persisted, or a Broadcast) for the step being run."""
    held = _HELD.get()
    if held is not None:
        held.append(resource)
    return resource


@contextmanager
def holding() -> Iterator[list]:
    """Collects what :func:`hold` records while the block runs (outside a run, nothing is held)."""
    held: list = []
    token = _HELD.set(held)
    try:
        yield held
    finally:
        _HELD.reset(token)


class KeptFile:
    """A file that holds a kept value's blocks (see ``DistMatrix.keep_in_file``)."""

    def __init__(self, path: str):
        self.path = path

    def destroy(self, blocking: bool = False) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def release(held: list) -> None:
    """Unpersist the RDDs and destroy the broadcasts; asynchronous, since their readers are done."""
    for resource in held:
        try:
            if hasattr(resource, "destroy"):
                resource.destroy(blocking=False)
            elif resource.is_cached:
                resource.unpersist(blocking=False)
        except Exception:  # noqa: BLE001 - a stopped SparkContext has freed everything already
            pass
    held.clear()
