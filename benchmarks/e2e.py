"""End to end: two ``.npy`` files in, the product as a ``.npy`` file out, the way a user runs it.

- ``e2e-jampi``: ``jampi run prog.lin`` (the planner chooses); ``e2e-jampi-cannon``: the same
  with ``--executor cannon`` (tasks read their blocks from the files and write C into the file);
- ``e2e-mllib``: the PySpark MLlib path a user would write: rows -> ``IndexedRowMatrix`` ->
  ``toBlockMatrix()`` (default 1024 blocks) -> ``multiply`` -> ``toLocalMatrix`` -> ``np.save``;
- ``e2e-numpy``: ``np.save(c, np.load(a) @ np.load(b))``;
- ``e2e-dask``: the files memory-mapped into ``dask.array`` (chunks n/2), ``da.store`` into a
  memory-mapped ``.npy``, threaded scheduler.

Mode ``cold`` (the suite's default) runs each as its own process and times it from launch to
exit: what a user waits for, Spark's start-up included for the Spark paths. Mode ``warm`` runs
the same code in this process on the Spark session that is already up (the CI smoke test).

    python -m benchmarks.e2e numpy|dask|mllib A.npy B.npy C.npy     # one cold script
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from .common import Record, TreeRss, child_env, shuffle_read_total, spark_conf_for_blas, timed

SYSTEMS = ("e2e-jampi", "e2e-jampi-cannon", "e2e-mllib", "e2e-numpy", "e2e-dask")
PROGRAM = 'A = load("{a}")\nB = load("{b}")\nC = A @ B\nsave(C, "{c}")\n'


# --- the user scripts ----------------------------------------------------------------------------


def numpy_script(a: str, b: str, c: str) -> None:
    np.save(c, np.load(a) @ np.load(b))


def dask_script(a: str, b: str, c: str) -> None:
    import dask.array as da

    x, y = np.load(a, mmap_mode="r"), np.load(b, mmap_mode="r")
    chunk = -(-x.shape[0] // 2)
    product = da.from_array(x, chunks=chunk) @ da.from_array(y, chunks=chunk)
    out = np.lib.format.open_memmap(c, mode="w+", dtype=product.dtype, shape=product.shape)
    da.store(product, out, scheduler="threads")
    out.flush()
    del out


def mllib_script(spark, a: str, b: str, c: str) -> None:
    from pyspark.mllib.linalg.distributed import IndexedRow, IndexedRowMatrix

    sc = spark.sparkContext

    def block_matrix(path: str):
        m = np.load(path).astype(np.float64, copy=False)  # MLlib is float64 only
        rows = sc.parallelize([IndexedRow(i, m[i]) for i in range(m.shape[0])])
        return IndexedRowMatrix(rows).toBlockMatrix()

    product = block_matrix(a).multiply(block_matrix(b))
    np.save(c, product.toLocalMatrix().toArray())


def user_spark():
    """A plain SparkSession as a user's script would build it: jampi's embedded settings
    (loopback, quiet logs), Spark's default Java BLAS, and half the machine's memory (MLlib's
    collect of C needs more than jampi's default quarter at n=8192)."""
    from pyspark.sql import SparkSession

    from jampi_dsl.session import session_conf

    from .common import mllib_child_memory

    builder = SparkSession.builder
    for key, value in session_conf(conf=spark_conf_for_blas("java", mllib_child_memory())).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def program_file(folder: str, a: str, b: str, c: str) -> str:
    path = os.path.join(folder, "e2e.lin")
    with open(path, "w") as fh:
        fh.write(PROGRAM.format(a=a, b=b, c=c))
    return path


def _jampi_argv() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "jampi")
    if os.access(exe, os.X_OK):
        return [exe]
    found = shutil.which("jampi")
    return [found] if found else [sys.executable, "-m", "jampi_dsl"]


def command(system: str, prog: str, a: str, b: str, c: str) -> list[str]:
    if system in ("e2e-jampi", "e2e-jampi-cannon"):
        executor = "cannon" if system == "e2e-jampi-cannon" else "auto"
        return [*_jampi_argv(), "run", prog, "--quiet", "--executor", executor]
    kind = system.removeprefix("e2e-")
    return [sys.executable, "-m", "benchmarks.e2e", kind, a, b, c]


def run_warm(system: str, spark, prog: str, a: str, b: str, c: str) -> None:
    if system in ("e2e-jampi", "e2e-jampi-cannon"):
        from jampi_dsl.cli import main

        executor = "cannon" if system == "e2e-jampi-cannon" else "auto"
        code = main(["run", prog, "--quiet", "--executor", executor])
        if code != 0:
            raise RuntimeError(f"jampi run exited {code}")
    elif system == "e2e-mllib":
        mllib_script(spark, a, b, c)
    elif system == "e2e-numpy":
        numpy_script(a, b, c)
    else:
        dask_script(a, b, c)


# --- measuring -------------------------------------------------------------------------------------


class TimedOut(Exception):
    """A cold run that was still going after its time limit (it was killed, with its JVM)."""


class ChildFailed(Exception):
    """A cold run that exited non-zero: how long it ran and the error that ended it."""

    def __init__(self, code: int, elapsed: float, reason: str):
        super().__init__(f"exited {code} after {elapsed:.0f} s: {reason}")
        self.elapsed = elapsed


def _cold_once(argv: list[str], log_path: str, limit: float | None = None) -> tuple[float, TreeRss]:
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        t0 = time.perf_counter()
        # Its own process group, so a kill also takes the JVM the script started.
        child = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=child_env(),
                                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 start_new_session=True)
        try:
            rss = TreeRss(child.pid)
            with rss:
                code = child.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            raise TimedOut(f"did not finish in {limit:.0f} s (killed)") from None
        except BaseException:
            _kill_group(child)
            raise
        elapsed = time.perf_counter() - t0
    if code != 0:
        with open(log_path, errors="replace") as fh:
            this_run = fh.read().rsplit("\n$ ", 1)[-1]
        raise ChildFailed(code, elapsed, failure_reason(this_run))
    return elapsed, rss


# Errors that only report another one: a py4j wrapper, a cancelled job, a daemon's broken pipe.
_ECHOES = re.compile(r"Py4JJavaError|BrokenPipeError|SparkException: Job \d+ cancelled|^Traceback")
_ERROR_LINE = re.compile(r"^(?:[\w$]+\.)*[\w$]*(?:Error|Exception)\b")


def failure_reason(log: str) -> str:
    """The error that ended a child, not the last line it printed (a Java stack frame, or
    py4j's wrapper): the first error line that is not an echo, with its first stack frame."""
    lines = [line.strip() for line in log.splitlines()]
    for i, line in enumerate(lines):
        if not _ERROR_LINE.match(line) or _ECHOES.search(line):
            continue
        frame = next((f for f in lines[i + 1 : i + 4] if f.startswith("at ")), "")
        return f"{line} ({frame})" if frame else line
    return next((line for line in reversed(lines) if line), "")


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
    child.wait()


def run_e2e(case, system: str, mode: str, reps: int, warmup: bool, paths: dict[str, str], log_dir: str,
            limit: float | None = None) -> Record:
    """One end-to-end system at one size. A cold run longer than ``limit`` seconds is killed
    and recorded as ``timeout``: the table then shows a lower bound, not a time."""
    rec = Record(system, case.n, case.dtype, variant=mode)
    if system == "e2e-mllib" and case.dtype != "float64":
        rec.status, rec.note = "skipped", "MLlib is float64 only"
        return rec
    if system == "e2e-dask":
        try:
            import dask.array  # noqa: F401
        except ImportError:
            rec.status, rec.note = "skipped", "dask is not installed (pip install -e '.[bench]')"
            return rec
    a, b, c = paths["a"], paths["b"], paths["c"]
    prog = program_file(os.path.dirname(c), a, b, c)

    def cleanup():
        if os.path.exists(c):
            os.unlink(c)

    if mode == "cold":
        # Every run is a fresh process; the inputs are already in the page cache (just written).
        times, peak, base, worker = [], 0.0, 0.0, 0.0
        log_path = os.path.join(log_dir, f"{system}-{case.n}-{case.dtype}.log")
        for _ in range(reps):
            cleanup()
            try:
                elapsed, rss = _cold_once(command(system, prog, a, b, c), log_path, limit)
            except TimedOut as exc:
                cleanup()
                rec.status, rec.note, rec.extra["limit"] = "timeout", str(exc), limit
                return rec
            except ChildFailed as exc:
                cleanup()
                rec.status, rec.note, rec.extra["failed_after"] = "failed", str(exc), round(exc.elapsed, 1)
                return rec
            times.append(elapsed)
            peak, base, worker = max(peak, rss.peak), rss.base, max(worker, rss.worker_peak)
        rec.run_rss, rec.run_rss_base = peak, base
        if worker:
            rec.task_rss, rec.task_rss_how = worker, "sampled: largest PySpark worker"
        warmup = False
    else:
        sc = case.spark.sparkContext
        before = shuffle_read_total(sc)
        with TreeRss() as rss:
            times, _ = timed(lambda: run_warm(system, case.spark, prog, a, b, c), reps, warmup=warmup,
                             before=cleanup)
        after = shuffle_read_total(sc)
        rss.fill(rec)
        if before is not None and after is not None:
            rec.shuffle_bytes = (after - before) / (reps + int(warmup))
    got = np.load(c, mmap_mode="r")
    rec.check(got, case.want)
    del got
    cleanup()
    rec.times = [round(t, 4) for t in times]
    rec.seconds = float(np.median(times))
    rec.warmup = warmup
    return rec


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4 or args[0] not in ("numpy", "dask", "mllib"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    kind, a, b, c = args
    if kind == "numpy":
        numpy_script(a, b, c)
    elif kind == "dask":
        dask_script(a, b, c)
    else:
        spark = user_spark()
        try:
            mllib_script(spark, a, b, c)
        finally:
            spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
