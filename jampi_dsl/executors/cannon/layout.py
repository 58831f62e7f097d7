"""Geometry of a Cannon product: the q×q grid, padded block shapes, who holds what when.

Everything here is plain arithmetic shared by the driver (planning the stage)
and the tasks (running it), so both agree on every block's place.

Conventions. C = op(A) @ op(B) with op(X) = X or Xᵀ; A is m×k and B k×n after
op. Task t = i*q + j computes C block (i, j); that is also the partition index
of the result, the same layout as a ``DistMatrix`` in a q×q grid. Operand
blocks are kept in their *stored* orientation (a block of the transposed
matrix is the transpose of a stored block): a task multiplies with a
transposed view, so no transpose is ever materialised and blocks travel over
the wire exactly as stored. In round r, task (i, j) multiplies A block
(i, l) by B block (l, j) with l = (i + j + r) mod q; A then moves one task
left and B one task up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...planner.grid import cdiv, choose_grid, default_q, grid_fits  # noqa: F401 - re-exported

A_SHIFT, B_SHIFT, A_SKEW, B_SKEW = 0, 1, 2, 3  # channel numbers on the wire

FAULT_POINTS = ("start", "after-gather", "mid-exchange", "before-output")


@dataclass(frozen=True)
class FaultSpec:
    """Test hook: task ``task`` calls ``os._exit(1)`` at ``when`` on jampi attempt
    ``attempt`` (``None``: on every attempt)."""

    task: int
    attempt: int | None = 0
    when: str = "mid-exchange"
    how: str = "exit"  # "exit": the worker dies; "stop": it freezes (SIGSTOP), as a hung machine does

    def __post_init__(self):
        if self.when not in FAULT_POINTS:
            raise ValueError(f"fault point {self.when!r} is not one of {FAULT_POINTS}")
        if self.how not in ("exit", "stop"):
            raise ValueError(f"a fault is 'exit' or 'stop', not {self.how!r}")

    @classmethod
    def coerce(cls, value: Any) -> FaultSpec | None:
        if value is None or isinstance(value, FaultSpec):
            return value
        return cls(*value)

    def hits(self, task: int, attempt: int, when: str) -> bool:
        return self.task == task and self.when == when and self.attempt in (None, attempt)


@dataclass(frozen=True)
class CannonConfig:
    """Knobs of one Cannon product. The defaults suit production; tests shrink the timeouts."""

    retries: int = 2  # jampi re-runs a failed barrier stage this many times
    timeout: float = 300.0  # bound on each connect/accept/receive and on peer discovery
    handshake_timeout: float = 10.0  # a client must authenticate within this
    blas_threads: int | None = None  # BLAS threads per task; None: spark.task.cpus
    skew: str = "auto"  # DistMatrix inputs: "auto", "channel" (skew over peer links) or "shuffle"
    # Peer discovery: "driver" (a service on the driver, see .rendezvous) or "spark"
    # (BarrierTaskContext.allGather, ~1 s slower: Spark answers it on a one-second tick).
    discovery: str = "driver"
    fail_task: FaultSpec | tuple | None = None  # fault injection, see FaultSpec
    announce_dir: str | None = None  # test hook: each task writes its "host:port" here
    connect_delay: float = 0.0  # test hook: seconds a task waits before connecting to peers
    panels: int | None = None  # inner-dimension panels per block (see .rounds); None: chosen from the size
    stats: list | None = field(default=None, compare=False)  # per-task timings/RSS appended here
    notify: Any = field(default=None, compare=False)  # called with one line when a stage is retried

    def __post_init__(self):
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.timeout <= 0 or self.handshake_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.skew not in ("auto", "channel", "shuffle"):
            raise ValueError(f"skew must be 'auto', 'channel' or 'shuffle', not {self.skew!r}")
        if self.panels is not None and self.panels < 1:
            raise ValueError("panels must be >= 1")
        if self.discovery not in ("driver", "spark"):
            raise ValueError(f"discovery must be 'driver' or 'spark', not {self.discovery!r}")
        object.__setattr__(self, "fail_task", FaultSpec.coerce(self.fail_task))


@dataclass(frozen=True)
class Geometry:
    q: int
    m: int
    k: int
    n: int
    trans_a: bool
    trans_b: bool
    dtype: str

    @classmethod
    def make(cls, q: int, m: int, k: int, n: int, trans_a: bool, trans_b: bool, dtype) -> Geometry:
        return cls(q, m, k, n, bool(trans_a), bool(trans_b), np.dtype(dtype).name)

    @property
    def bm(self) -> int:
        return cdiv(self.m, self.q)

    @property
    def bk(self) -> int:
        return cdiv(self.k, self.q)

    @property
    def bn(self) -> int:
        return cdiv(self.n, self.q)

    @property
    def tasks(self) -> int:
        return self.q * self.q

    def coords(self, t: int) -> tuple[int, int]:
        return divmod(t, self.q)

    def task(self, i: int, j: int) -> int:
        return (i % self.q) * self.q + (j % self.q)

    # --- stored shapes and regions -------------------------------------------------
    def a_stored_shape(self) -> tuple[int, int]:
        """Padded shape of an A block as stored (A is kept un-transposed on the wire)."""
        return (self.bk, self.bm) if self.trans_a else (self.bm, self.bk)

    def b_stored_shape(self) -> tuple[int, int]:
        return (self.bn, self.bk) if self.trans_b else (self.bk, self.bn)

    def a_stored_index(self, i: int, inner: int) -> tuple[int, int]:
        """Grid index, in the stored matrix, of logical A block (i, inner)."""
        return (inner, i) if self.trans_a else (i, inner)

    def b_stored_index(self, inner: int, j: int) -> tuple[int, int]:
        return (j, inner) if self.trans_b else (inner, j)

    def stored_region(
        self, operand: str, index: tuple[int, int]
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        """Rows and columns of the stored matrix covered by padded stored block ``index``."""
        h, w = self.a_stored_shape() if operand == "A" else self.b_stored_shape()
        r, c = index
        return (r * h, (r + 1) * h), (c * w, (c + 1) * w)

    def stored_extent(self, operand: str) -> tuple[int, int]:
        if operand == "A":
            return (self.k, self.m) if self.trans_a else (self.m, self.k)
        return (self.n, self.k) if self.trans_b else (self.k, self.n)

    def c_shape(self, i: int, j: int) -> tuple[int, int]:
        return min(self.bm, self.m - i * self.bm), min(self.bn, self.n - j * self.bn)

    # --- the schedule ----------------------------------------------------------------
    def inner(self, t: int, r: int = 0) -> int:
        i, j = self.coords(t)
        return (i + j + r) % self.q

    def a_home(self, t: int) -> tuple[int, int]:
        """Stored index of the A block task t multiplies in round 0."""
        i, _ = self.coords(t)
        return self.a_stored_index(i, self.inner(t))

    def b_home(self, t: int) -> tuple[int, int]:
        _, j = self.coords(t)
        return self.b_stored_index(self.inner(t), j)

    def a_owner(self, stored: tuple[int, int]) -> int:
        """The task that needs stored A block ``stored`` in round 0."""
        i, inner = (stored[1], stored[0]) if self.trans_a else stored
        return self.task(i, inner - i)

    def b_owner(self, stored: tuple[int, int]) -> int:
        inner, j = (stored[1], stored[0]) if self.trans_b else stored
        return self.task(inner - j, j)

    def left(self, t: int) -> int:
        i, j = self.coords(t)
        return self.task(i, j - 1)

    def right(self, t: int) -> int:
        i, j = self.coords(t)
        return self.task(i, j + 1)

    def up(self, t: int) -> int:
        i, j = self.coords(t)
        return self.task(i - 1, j)

    def down(self, t: int) -> int:
        i, j = self.coords(t)
        return self.task(i + 1, j)


def stored_layout_is_grid(shape: tuple[int, int], block: tuple[int, int], q: int) -> bool:
    """Whether a matrix stored with ``block`` is exactly the q×q Cannon tiling of its shape."""
    rows, cols = shape
    return (
        grid_fits(rows, q) and grid_fits(cols, q) and tuple(block) == (cdiv(rows, q), cdiv(cols, q))
    )
