"""The q rounds of one Cannon task, with each operand block cut into panels along
the inner dimension.

A round computes ``C += op(A) @ op(B)`` and shifts A left and B up. Cut along the
inner dimension, ``op(A) @ op(B) = sum over p of op(A_p) @ op(B_p)``: every panel
is multiplied once per round, and once panel p has been multiplied *and* sent on,
its memory is free for the next round's panel p. So a task holds its A and B
blocks, one spare panel of each and C: 3 + 2/k blocks, where moving whole blocks
needs a second copy of A and B (5 blocks). Panels start moving as soon as the
round starts, so the exchange hides behind the products except for the tail of a
round: panel p can only arrive once panel p-1 is multiplied (about 1/k of a block).

Threads per round: one sender and one receiver per operand. A receiver takes a
free buffer for each incoming panel, waiting until panel p-1 is multiplied and
sent. That wait only ever depends on lower panel numbers, so the ring of tasks
cannot deadlock: all panels 0 move (into the spares), which frees everyone's
panel 0 buffers for panels 1, and so on.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from ..blockgen import GEN_BLOCK
from ..sources import GeneratorSource, TransposedSource
from .channel import BLOCK_HEADER, ChannelError, PeerTimeout
from .gemm import gemm_into
from .layout import A_SHIFT, B_SHIFT

MAX_PANELS = 8
# Narrower panels make BLAS re-read C more often (a 512x512 block on one core: 8.8 ms in
# 128-wide panels, 10.1 ms in 64-wide), but the two spare panels cost 2/k blocks: at 64, a
# 512-square block takes 8 panels, and its task stays in the 5 blocks + 64 MiB budget.
MIN_PANEL_WIDTH = 64


def panel_count(inner: int, wanted: int | None = None) -> int:
    """Panels per block: the most (up to ``wanted``, else :data:`MAX_PANELS` at least
    :data:`MIN_PANEL_WIDTH` wide) that cut ``inner`` evenly, so every panel buffer fits every panel."""
    limit, width = (wanted, 1) if wanted else (MAX_PANELS, MIN_PANEL_WIDTH)
    for k in range(min(limit, inner), 1, -1):
        if inner % k == 0 and inner // k >= width:
            return k
    return 1


def column_panel_layouts(geo, wanted: int | None) -> dict[str, tuple[int, int, int]]:
    """``{operand: (rows, cols, k)}`` for the operands whose panels are column slices of
    the stored block (A, unless transposed; B, if transposed). Cutting those out of a
    row-major block copies it, so their round-0 blocks are best made or read as
    ``(k, rows, cols // k)`` panel stacks in the first place."""
    k = panel_count(geo.bk, wanted)
    if geo.q == 1 or k == 1:
        return {}
    out = {}
    if not geo.trans_a:
        out["A"] = (*geo.a_stored_shape(), k)
    if geo.trans_b:
        out["B"] = (*geo.b_stored_shape(), k)
    return out


def column_group(src, c0: int, width: int, k: int) -> int | None:
    """How many adjacent column panels to read from ``src`` at once, or None when reading
    it panel by panel would cost more than reading the block whole. Random generators
    make whole 512×512 tiles, so a read must not cut a tile (it would be made twice);
    a transposed source reads the base's rows, so it is read whole."""
    if isinstance(src, TransposedSource):
        return None
    if not (isinstance(src, GeneratorSource) and src.kind in ("uniform", "normal")):
        return 1
    if c0 % GEN_BLOCK:
        return None
    group = next((g for g in range(1, k + 1) if k % g == 0 and g * width % GEN_BLOCK == 0), None)
    return group if group is not None and group <= max(1, k // 2) else None


def read_column_panels(src, rows: tuple[int, int], cols: tuple[int, int], k: int, group: int, dtype) -> np.ndarray:
    """Region ``rows × cols`` of ``src`` as a ``(k, rows, cols // k)`` stack of column panels,
    read ``group`` panels at a time (through a buffer of that many panels when ``group`` > 1)."""
    (r0, r1), (c0, c1) = rows, cols
    w = (c1 - c0) // k
    stack = np.empty((k, r1 - r0, w), dtype)
    for p in range(0, k, group):
        span = (c0 + p * w, c0 + (p + group) * w)
        if group == 1:
            src.region((r0, r1), span, out=stack[p])
            continue
        put_piece(stack, 0, p * w, src.region((r0, r1), span))
    return stack


def put_piece(block: np.ndarray, r0: int, c0: int, piece: np.ndarray) -> None:
    """Write ``piece`` at row ``r0``, column ``c0`` of a block, row-major or a stack of column panels."""
    rows, cols = piece.shape
    if block.ndim == 2:
        block[r0 : r0 + rows, c0 : c0 + cols] = piece
        return
    w = block.shape[2]
    for p in range(c0 // w, (c0 + cols - 1) // w + 1):
        lo, hi = max(c0, p * w), min(c0 + cols, (p + 1) * w)
        block[p, r0 : r0 + rows, lo - p * w : hi - p * w] = piece[:, lo - c0 : hi - c0]


def split_panels(block: np.ndarray, axis: int, k: int) -> list[np.ndarray]:
    """``block`` cut into ``k`` C-contiguous panels along ``axis``: views when the cut runs
    along rows (axis 0) or the block already is a ``(k, rows, cols // k)`` stack of column
    panels, copies otherwise (the caller then drops the block)."""
    if block.ndim == 3:
        if axis != 1 or block.shape[0] != k:
            raise ValueError(f"a stack of {block.shape[0]} column panels cannot be cut into {k} along axis {axis}")
        return list(block)
    if axis == 0:
        return list(np.split(block, k, axis=0))
    return [np.ascontiguousarray(part) for part in np.split(block, k, axis=1)]


class _Pool:
    """Free panel buffers of one operand; a buffer is returned once multiplied and sent."""

    def __init__(self, spare: np.ndarray):
        self.free = [spare]
        self.cond = threading.Condition()
        self.pending: dict[int, int] = {}  # panel -> how many of (multiplied, sent) are still due
        self.failed = False

    def arm(self, k: int) -> None:
        self.pending = {p: 2 for p in range(k)}  # multiplied, and sent

    def done(self, p: int, buffer: np.ndarray) -> None:
        with self.cond:
            self.pending[p] -= 1
            if self.pending[p] == 0:
                self.free.append(buffer)
                self.cond.notify_all()

    def take(self, deadline: float, what: str) -> np.ndarray:
        with self.cond:
            while True:
                if self.failed:
                    raise ChannelError(f"{what}: the round was aborted")
                if self.free:
                    return self.free.pop()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PeerTimeout(f"{what}: no free panel buffer in time (the previous panel was not sent)")
                self.cond.wait(min(remaining, 0.5))

    def abort(self) -> None:
        with self.cond:
            self.failed = True
            self.cond.notify_all()


def run_rounds(run, blocks: dict[str, np.ndarray]) -> np.ndarray:
    """All q rounds of task ``run`` (a TaskRun) from its round-0 blocks, which it takes
    out of ``blocks`` (so a block cut into copies is freed); returns its C block."""
    geo = run.geo
    a, b = blocks.pop("A"), blocks.pop("B")
    if geo.q == 1:
        c = np.empty((geo.bm, geo.bn), run.dtype)
        t0 = time.perf_counter()
        gemm_into(a, geo.trans_a, b, geo.trans_b, c, accumulate=False)
        run.stats["gemm"] = run.stats["gemm0"] = time.perf_counter() - t0
        return c
    t_prep = time.perf_counter()
    k = panel_count(geo.bk, run.spec.panels)
    run.stats["panels"] = k
    a_panels = split_panels(a, 0 if geo.trans_a else 1, k)  # stored A: bm×bk, or bk×bm when transposed
    del a
    b_panels = split_panels(b, 1 if geo.trans_b else 0, k)  # stored B: bk×bn, or bn×bk when transposed
    del b
    c = np.empty((geo.bm, geo.bn), run.dtype)  # after the cutting: its copies peak before C exists
    pools = {"A": _Pool(np.empty_like(a_panels[0])), "B": _Pool(np.empty_like(b_panels[0]))}
    gemm_time = 0.0
    run.stats["prep"] = time.perf_counter() - t_prep  # cutting the blocks into panels
    for r in range(geo.q):
        exchange = _Exchange(run, r, k, a_panels, b_panels, pools) if r < geo.q - 1 else None
        t_round = time.perf_counter()
        try:
            for p in range(k):
                if exchange is not None and exchange.errors:
                    break  # the shift failed: finish() reports it, no use multiplying on
                t0 = time.perf_counter()
                gemm_into(a_panels[p], geo.trans_a, b_panels[p], geo.trans_b, c, accumulate=r > 0 or p > 0)
                gemm_time += time.perf_counter() - t0
                if exchange is not None:
                    pools["A"].done(p, a_panels[p])
                    pools["B"].done(p, b_panels[p])
        except BaseException:
            if exchange is not None:
                exchange.abort()  # no exchange thread may outlive the task in a reused worker
            raise
        run.stats[f"gemm{r}"] = time.perf_counter() - t_round
        if exchange is not None:
            a_panels, b_panels = exchange.finish()
    run.stats["gemm"] = gemm_time
    return c


class _Exchange:
    """One round's shift: send this task's panels left/up, receive the next ones from right/down."""

    def __init__(self, run, r: int, k: int, a_panels, b_panels, pools: dict[str, _Pool]):
        self.run, self.k, self.pools = run, k, pools
        geo, t = run.geo, run.t
        self.errors: list[BaseException] = []
        self.received: dict[str, list] = {"A": [None] * k, "B": [None] * k}
        self.moved = {"peer_bytes_sent": 0, "peer_bytes_received": 0}
        self._lock = threading.Lock()
        for operand in ("A", "B"):
            pools[operand].arm(k)
        first = r * k  # wire step numbers: one per panel, so a stray panel is caught by its header
        work = (
            (self._send, ("A", geo.left(t), A_SHIFT, a_panels, first)),
            (self._send, ("B", geo.up(t), B_SHIFT, b_panels, first)),
            (self._recv, ("A", geo.right(t), A_SHIFT, first)),
            (self._recv, ("B", geo.down(t), B_SHIFT, first)),
        )
        self.threads = [threading.Thread(target=self._guard(fn), args=args, daemon=True) for fn, args in work]
        for th in self.threads:
            th.start()

    def _guard(self, fn):
        def run(*args):
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
                self.errors.append(exc)
                self._stop()

        return run

    def _stop(self) -> None:
        for pool in self.pools.values():
            pool.abort()
        self.run.abort_links()  # wakes the threads blocked on a socket

    def abort(self) -> None:
        """The compute side failed: stop the exchange threads and wait for them."""
        self._stop()
        for th in self.threads:
            th.join()

    def _send(self, operand: str, peer: int, channel: int, panels, first: int) -> None:
        run, spec = self.run, self.run.spec
        link = run.out_link(peer, channel)
        sent = 0
        for p, panel in enumerate(panels):
            if self.pools[operand].failed:
                return  # another thread failed: the round is over
            abort = None
            if first + p == 0 and channel == A_SHIFT and spec.fault is not None:
                if spec.fault.hits(run.t, spec.attempt, "mid-exchange"):
                    abort = max(1, panel.nbytes // 2)
            sent += link.send(panel, first + p, spec.timeout, abort_after=abort)
            self.pools[operand].done(p, panel)
        with self._lock:
            self.moved["peer_bytes_sent"] += sent

    def _recv(self, operand: str, peer: int, channel: int, first: int) -> None:
        run, spec = self.run, self.run.spec
        link = run.in_link(peer, channel)
        got = 0
        for p in range(self.k):
            deadline = time.monotonic() + spec.timeout
            out = self.pools[operand].take(deadline, f"{run.name()}: {operand} panel {p}")
            link.recv(first + p, out, spec.timeout)
            self.received[operand][p] = out
            got += BLOCK_HEADER.size + out.nbytes
        with self._lock:
            self.moved["peer_bytes_received"] += got

    def finish(self) -> tuple[list, list]:
        """Wait for the round's shift (the task's own join, stats and error naming); the
        panels received are the next round's."""
        self.run.finish((self.threads, self.errors, self.moved))
        # Each pool now holds exactly one free buffer again (the spare for the next round).
        return self.received["A"], self.received["B"]
