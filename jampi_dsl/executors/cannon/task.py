"""What one Cannon barrier task runs on an executor.

Order of work, chosen so the waits overlap with arithmetic:

1. open this task's listener (its executor's host, an ephemeral port) and, in a
   thread, register "host:port" with the driver's rendezvous (or Spark's
   ``allGather``, which answers only on a one-second tick), while the task
2. produces its round-0 operand blocks (read from a file, generated, or taken
   from its partition, already skewed where the layout allowed) and
3. multiplies them panel by panel (:mod:`.rounds`), while sender and receiver
   threads connect to the left/up neighbours (authenticated, persistent links)
   and move the next panels into the buffers that multiplied-and-sent panels
   free; NumPy/BLAS release the GIL, so the products and the copies run at once.
4. q rounds later the C block goes out: to Spark (raw bytes) or straight into
   the output ``.npy`` file.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .channel import BLOCK_HEADER, ChannelError, Credentials, Link, Listener, PeerTimeout, connect
from .layout import A_SHIFT, A_SKEW, B_SHIFT, B_SKEW, FaultSpec, Geometry
from .rendezvous import discover
from .rounds import column_group, column_panel_layouts, put_piece, read_column_panels, run_rounds
from .util import (
    ERROR_TAG,
    CannonTaskError,
    current_rss,
    fault_exit,
    fault_stop,
    peak_rss,
    reset_peak_rss,
    task_host,
    trim_heap,
)


@dataclass(frozen=True)
class OperandFeed:
    """Where a task finds one operand's round-0 block.

    ``source``: read it from a BlockSource (file or generator); ``placed``: the
    partition holds exactly that block; ``aligned``: the partition holds the
    block at the task's own grid index and the initial skew goes over the peer
    links; ``pieces``: the partition holds pieces of it, from a Spark shuffle.
    ``slot`` says which half of a zipped partition element belongs to it.
    """

    kind: str
    source: Any = None
    slot: int | None = None


@dataclass(frozen=True)
class TaskSpec:
    geo: Geometry
    a: OperandFeed
    b: OperandFeed
    stream: str  # partition content: "none", "single", "pair" or "pieces"
    secret: bytes
    stage: str
    attempt: int
    timeout: float
    handshake_timeout: float
    blas_threads: int
    fault: FaultSpec | None = None
    announce_dir: str | None = None
    connect_delay: float = 0.0
    npy_path: str | None = None
    stats: Any = None  # a Spark accumulator of per-task stat dicts
    alpha: float = 1.0  # GEMM epilogue: C = alpha * product + beta * addend
    beta: float = 0.0
    addend: Any = None  # a BlockSource, or None
    rendezvous: tuple[str, int] | None = None  # the driver's peer discovery; None: Spark's allGather
    panels: int | None = None  # inner-dimension panels per block (see .rounds); None: chosen from the size


def fit_block(arr: np.ndarray, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """``arr`` as a writable C-contiguous ``shape`` block, zero-padded; no copy when it already is
    one, or when it is a ``(k, rows, cols // k)`` stack of column panels of that shape."""
    if arr.ndim == 3:
        k, rows, w = arr.shape
        if (rows, k * w) != shape:
            raise CannonTaskError(f"a stack of {k} panels {rows}x{w} is not a {shape} block")
        return arr if arr.dtype == dtype else arr.astype(dtype)
    if arr.shape == shape and arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.writeable:
        return arr
    if arr.shape[0] > shape[0] or arr.shape[1] > shape[1]:
        raise CannonTaskError(f"block of shape {arr.shape} does not fit the {shape} grid block")
    out = np.zeros(shape, dtype)
    out[: arr.shape[0], : arr.shape[1]] = arr
    return out


class TaskRun:
    def __init__(self, spec: TaskSpec, ctx, t: int):
        self.spec = spec
        self.geo = spec.geo
        self.ctx = ctx
        self.t = t
        self.dtype = np.dtype(spec.geo.dtype)
        self.creds = Credentials(spec.secret, spec.stage, spec.attempt)
        self.listener: Listener | None = None
        self.out_links: dict[tuple[int, int], Link] = {}
        self._out_lock = threading.Lock()
        self._gathered = threading.Event()
        self._addrs: list[str] | None = None
        self._gather_error: BaseException | None = None
        self.stats: dict[str, float] = {"task": t, "attempt": spec.attempt, "q": self.geo.q}

    # --- faults and stats -------------------------------------------------------------
    def fault(self, when: str) -> None:
        f = self.spec.fault
        if f is not None and f.hits(self.t, self.spec.attempt, when):
            fault_exit() if f.how == "exit" else fault_stop()

    def name(self) -> str:
        i, j = self.geo.coords(self.t)
        return f"task {self.t} (C block {i},{j}, attempt {self.spec.attempt})"

    # --- network setup ----------------------------------------------------------------
    def holder(self, stored: tuple[int, int]) -> int:
        """Task whose partition holds stored block ``stored`` in the aligned layout."""
        return self.geo.task(*stored)

    def skew_peers(self, operand: str) -> tuple[int, int] | None:
        """(send to, receive from) of the initial skew, or None when the block stays put."""
        geo, t = self.geo, self.t
        own = geo.coords(t)
        if operand == "A":
            dest, src = geo.a_owner(own), self.holder(geo.a_home(t))
        else:
            dest, src = geo.b_owner(own), self.holder(geo.b_home(t))
        return None if dest == t and src == t else (dest, src)

    def start_network(self) -> None:
        geo, t = self.geo, self.t
        expected: set[tuple[int, int]] = set()
        if geo.q > 1:
            expected |= {(geo.right(t), A_SHIFT), (geo.down(t), B_SHIFT)}
        for operand, feed, channel in (("A", self.spec.a, A_SKEW), ("B", self.spec.b, B_SKEW)):
            if feed.kind == "aligned":
                peers = self.skew_peers(operand)
                if peers is not None and peers[1] != t:
                    expected.add((peers[1], channel))
        if geo.q == 1:
            self._gathered.set()
            return
        host = task_host(self.ctx, self.t)
        self.listener = Listener(
            host,
            self.creds,
            local=t,
            expected=expected,
            handshake_timeout=self.spec.handshake_timeout,
        ).start()
        if self.spec.announce_dir:
            path = os.path.join(self.spec.announce_dir, f"task-{t}-attempt-{self.spec.attempt}")
            with open(path + ".tmp", "w") as fh:
                fh.write(self.listener.address)
            os.replace(path + ".tmp", path)
        threading.Thread(target=self._gather, name=f"cannon-gather-{t}", daemon=True).start()

    def _gather(self) -> None:
        try:
            if self.spec.rendezvous is not None:
                self._addrs = discover(self.spec.rendezvous, self.creds, self.t, self.listener.address,
                                       timeout=self.spec.timeout, connect_timeout=self.spec.handshake_timeout)
            else:
                self._addrs = list(self.ctx.allGather(self.listener.address))
        except BaseException as exc:  # noqa: BLE001 - reported by whoever waits
            self._gather_error = exc
        finally:
            self._gathered.set()

    def addresses(self) -> list[str]:
        t0 = time.perf_counter()
        if not self._gathered.wait(self.spec.timeout):
            raise PeerTimeout(
                f"{self.name()}: peer discovery took more than {self.spec.timeout:g}s"
            )
        self.stats["gather_wait"] = self.stats.get("gather_wait", 0.0) + time.perf_counter() - t0
        if self._gather_error is not None:
            raise CannonTaskError(f"{self.name()}: peer discovery failed: {self._gather_error}")
        return self._addrs

    def out_link(self, peer: int, channel: int) -> Link:
        with self._out_lock:
            link = self.out_links.get((peer, channel))
            if link is None:
                addrs = self.addresses()
                self.fault("after-gather")
                if self.spec.connect_delay and not self.out_links:
                    time.sleep(self.spec.connect_delay)
                host, port = addrs[peer].rsplit(":", 1)
                link = connect(
                    host.strip("[]"),
                    int(port),
                    self.creds,
                    local=self.t,
                    peer=peer,
                    channel=channel,
                    timeout=self.spec.timeout,
                )
                self.out_links[(peer, channel)] = link
            return link

    def in_link(self, peer: int, channel: int) -> Link:
        return self.listener.wait(peer, channel, self.spec.timeout)

    def close_network(self) -> None:
        for link in self.out_links.values():
            link.close()
        if self.listener is not None:
            self.listener.close()

    # --- moving blocks ------------------------------------------------------------------
    def transfer(self, sends, recvs, step: int) -> tuple:
        """Start sending ``[(peer, channel, arr)]`` and receiving ``[(peer, channel, out)]``.

        Returns a handle for :meth:`finish`, which joins the threads, adds the bytes
        moved to the stats and raises the first error.
        """
        errors: list[BaseException] = []
        moved = {"peer_bytes_sent": 0, "peer_bytes_received": 0}  # each key written by one thread

        def guard(fn):
            def run():
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
                    errors.append(exc)
                    self.abort_links()

            return run

        def do_send():
            for peer, channel, arr in sends:
                link = self.out_link(peer, channel)
                abort = None
                if step == 0 and channel in (A_SHIFT, A_SKEW) and self.spec.fault is not None:
                    if self.spec.fault.hits(self.t, self.spec.attempt, "mid-exchange"):
                        abort = max(1, arr.nbytes // 2)
                moved["peer_bytes_sent"] += link.send(
                    arr, step, self.spec.timeout, abort_after=abort
                )

        def do_recv():
            for peer, channel, out in recvs:
                self.in_link(peer, channel).recv(step, out, self.spec.timeout)
                moved["peer_bytes_received"] += BLOCK_HEADER.size + out.nbytes

        threads = [
            threading.Thread(target=guard(do_send), daemon=True),
            threading.Thread(target=guard(do_recv), daemon=True),
        ]
        for th in threads:
            th.start()
        return threads, errors, moved

    def finish(self, handle) -> None:
        threads, errors, moved = handle
        t0 = time.perf_counter()
        for th in threads:
            th.join()
        self.stats["exchange_wait"] = (
            self.stats.get("exchange_wait", 0.0) + time.perf_counter() - t0
        )
        for key, count in moved.items():
            self.stats[key] = self.stats.get(key, 0) + count
        if errors:
            self.raise_exchange_error(errors[0])

    def raise_exchange_error(self, exc: BaseException) -> None:
        """An exchange thread's failure, as a CannonTaskError that names this task."""
        if isinstance(exc, ChannelError | CannonTaskError):
            text = str(exc).removeprefix(ERROR_TAG).strip()
            raise CannonTaskError(
                text if text.startswith(self.name()) else f"{self.name()}: {text}"
            ) from exc
        raise CannonTaskError(f"{self.name()}: exchange failed: {exc!r}") from exc

    def abort_links(self) -> None:
        """Unblock the other exchange thread after a failure."""
        for link in list(self.out_links.values()):
            link.close()
        if self.listener is not None:
            self.listener.close()

    # --- inputs ---------------------------------------------------------------------------
    def read_inputs(self, iterator) -> dict[str, np.ndarray]:
        """This task's round-0 A and B blocks (after the initial skew, where it goes over the links)."""
        geo, spec = self.geo, self.spec
        shapes = {"A": geo.a_stored_shape(), "B": geo.b_stored_shape()}
        element: Any = None
        pieces: list = []
        if spec.stream in ("single", "pair"):
            element = next(iterator, None)
            if element is None:
                raise CannonTaskError(f"{self.name()}: its input partition is empty")
        elif spec.stream == "pieces":
            pieces = [value for _, value in iterator]
        # Read the partition to its end in every case: PySpark returns a Python worker to
        # its pool only when the task consumed all its input (else the next stage pays
        # for a fresh worker and its imports).
        for _extra in iterator:
            if spec.stream in ("single", "pair"):
                raise CannonTaskError(f"{self.name()}: more than one block in its input partition")
        blocks: dict[str, np.ndarray] = {}
        panels = column_panel_layouts(geo, spec.panels)
        for operand, feed in (("A", spec.a), ("B", spec.b)):
            shape = shapes[operand]
            home = geo.a_home(self.t) if operand == "A" else geo.b_home(self.t)
            if feed.kind == "source":
                (r0, r1), (c0, c1) = geo.stored_region(operand, home)
                src = feed.source
                stack = panels.get(operand)
                if np.dtype(src.dtype) != self.dtype:
                    blocks[operand] = fit_block(src.region((r0, r1), (c0, c1)), shape, self.dtype)
                elif stack is not None and (group := column_group(src, c0, (c1 - c0) // stack[2], stack[2])):
                    blocks[operand] = read_column_panels(src, (r0, r1), (c0, c1), stack[2], group, self.dtype)
                else:
                    blocks[operand] = src.region(
                        (r0, r1), (c0, c1), out=np.empty(shape, self.dtype)
                    )
            elif feed.kind == "pieces":
                stack = panels.get(operand)
                buf = np.zeros((stack[2], shape[0], shape[1] // stack[2]) if stack else shape, self.dtype)
                for op, pr, pc, piece in pieces:
                    if op == operand:
                        put_piece(buf, pr, pc, piece)
                blocks[operand] = buf
            else:
                key, arr = element if feed.slot is None else element[feed.slot]
                want = home if feed.kind == "placed" else geo.coords(self.t)
                if tuple(key) != want:
                    raise CannonTaskError(
                        f"{self.name()}: got {operand} block {tuple(key)}, expected {want}"
                    )
                blocks[operand] = fit_block(arr, shape, self.dtype)
        element = None
        self.stats["panel_stacks"] = sum(block.ndim == 3 for block in blocks.values())  # arrived cut, no copy
        sends, recvs = [], []
        for operand, feed, channel in (("A", spec.a, A_SKEW), ("B", spec.b, B_SKEW)):
            peers = self.skew_peers(operand) if feed.kind == "aligned" else None
            if peers is None:
                continue
            dest, src = peers
            out = np.empty(shapes[operand], self.dtype)
            if dest != self.t:
                sends.append((dest, channel, blocks[operand]))
            if src != self.t:
                recvs.append((src, channel, out))
            blocks[operand] = out
        if sends or recvs:
            self.finish(self.transfer(sends, recvs, 0))
        return blocks  # the blocks sent in the skew go with ``sends`` on return

    # --- output ---------------------------------------------------------------------------
    def epilogue(self, c: np.ndarray) -> None:
        """GEMM's ``alpha * C + beta * addend``, in place, rounded as DistMatrix.scalar/elementwise do."""
        spec = self.spec
        if spec.alpha != 1.0:
            np.multiply(c, c.dtype.type(spec.alpha), out=c)
        if spec.addend is None or spec.beta == 0.0:
            return
        i, j = self.geo.coords(self.t)
        bm, bn = self.geo.bm, self.geo.bn
        s = spec.addend.region((i * bm, (i + 1) * bm), (j * bn, (j + 1) * bn))
        if spec.beta == -1.0:
            np.subtract(c, s, out=c)
            return
        if spec.beta != 1.0:
            np.multiply(s, s.dtype.type(spec.beta), out=s)
        np.add(c, s, out=c)

    def write_npy(self, c: np.ndarray) -> None:
        """Write the block's rows into their places in the preallocated file.

        ``pwrite`` rather than a memory map: no page faults on the sparse file,
        no ``msync`` (which waits for the disk), and NFS-style shared
        filesystems publish the data on close.
        """
        geo = self.geo
        i, j = geo.coords(self.t)
        rows, cols = geo.c_shape(i, j)
        with open(self.spec.npy_path, "r+b") as fh:
            fmt = np.lib.format
            v1 = fmt.read_magic(fh) == (1, 0)
            shape, fortran, dtype = (fmt.read_array_header_1_0 if v1 else fmt.read_array_header_2_0)(fh)
            if shape != (geo.m, geo.n) or fortran or dtype != self.dtype:
                raise CannonTaskError(
                    f"{self.name()}: output file is {shape} {dtype}, expected {(geo.m, geo.n)} {self.dtype}"
                )
            fd, size = fh.fileno(), self.dtype.itemsize
            start = fh.tell() + (i * geo.bm * geo.n + j * geo.bn) * size
            if cols == geo.n:  # whole rows: one contiguous stretch of the file
                _pwrite_all(fd, np.ascontiguousarray(c[:rows]), start)
                return
            for r in range(rows):
                _pwrite_all(fd, c[r, :cols], start + r * geo.n * size)


def _pwrite_all(fd: int, arr: np.ndarray, offset: int) -> None:
    view = memoryview(arr).cast("B")
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


_FROZEN = False


def _freeze_worker_heap() -> None:
    """PySpark's daemon runs a full ``gc.collect()`` in a reused worker after every task,
    while the stage's other tasks still compute (~0.1 s of CPU each at n=4096). Freezing
    what the worker holds at its first Cannon task (modules, mostly, which live as long
    as it does) leaves those collections only the objects made since. Once per worker:
    refreezing every task would also pin each task's short-lived cycles for good."""
    global _FROZEN
    if not _FROZEN:
        gc.freeze()
        _FROZEN = True


def run_task(spec: TaskSpec, iterator):
    """The barrier task body (a generator: it yields this task's C block, or nothing)."""
    from pyspark import BarrierTaskContext

    ctx = BarrierTaskContext.get()
    run = TaskRun(spec, ctx, ctx.partitionId())
    start = time.perf_counter()
    run.stats["started_at"] = time.time()  # wall clock: the driver compares it with its submit time
    run.fault("start")
    _freeze_worker_heap()
    trim_heap()
    measured = reset_peak_rss()
    run.stats["rss_start"] = current_rss()
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(limits=spec.blas_threads, user_api="blas"):
            run.start_network()
            blocks = run.read_inputs(iterator)
            run.stats["inputs_ready"] = time.perf_counter() - start
            c = run_rounds(run, blocks)  # takes the blocks out of the dict, so cut copies free them
            run.epilogue(c)
    except CannonTaskError:
        raise
    except ChannelError as exc:
        raise CannonTaskError(f"{run.name()}: {exc}") from exc
    finally:
        run.close_network()
    run.stats["compute_done"] = time.perf_counter() - start
    run.fault("before-output")
    geo = spec.geo
    i, j = geo.coords(run.t)
    if spec.npy_path is not None:
        run.write_npy(c)
        run.stats["wrote_npy"] = 1
        del c
    else:
        rows, cols = geo.c_shape(i, j)
        block = c if (rows, cols) == c.shape else np.ascontiguousarray(c[:rows, :cols])
        del c
        yield (i, j), block
        del block
    run.stats["total"] = time.perf_counter() - start
    run.stats["ended_at"] = time.time()
    run.stats["peak_rss"] = peak_rss() if measured else float("nan")
    run.stats["block_bytes"] = (
        max(geo.bm * geo.bk, geo.bk * geo.bn, geo.bm * geo.bn) * np.dtype(geo.dtype).itemsize
    )
    if spec.stats is not None:
        spec.stats.add([run.stats])
