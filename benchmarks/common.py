"""Shared pieces of the benchmark suite: records, timing, memory sampling, result checks,
and what Spark can tell about a run (shuffle bytes, which BLAS MLlib uses).

Everything here is measured, never assumed: the BLAS a row used is asked from the
JVM after the run, bytes moved are Spark's own shuffle counters, and memory is
the kernel's RSS of real processes.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

MiB = 2**20
# Relative Frobenius error against NumPy's product that still counts as "the same result".
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
SHORT_DTYPE = {"float64": "f64", "float32": "f32"}
# A nonexistent path: netlib's JNI loader fails to dlopen it and MLlib falls back to Java BLAS.
JAVA_BLAS_OPTION = "-Ddev.ludovic.netlib.blas.nativeLibPath=/nonexistent/jampi-bench-java-blas/libblas.so.3"


@dataclass
class Record:
    """One measurement of one system at one size; ``status`` is ok, skipped or failed."""

    system: str
    n: int
    dtype: str
    status: str = "ok"
    variant: str = ""  # e.g. the MLlib block size
    seconds: float | None = None  # median of the timed repeats
    times: list[float] = field(default_factory=list)
    warmup: bool = True
    note: str = ""
    rel_error: float | None = None
    correct: bool | None = None
    task_rss: float | None = None  # peak RSS of one Spark task (bytes)
    task_rss_how: str = ""
    run_rss: float | None = None  # peak RSS of the whole process tree during the timed runs
    run_rss_base: float | None = None  # the same tree just before the first run
    shuffle_bytes: float | None = None  # Spark shuffle bytes read during the timed runs (per run)
    peer_bytes: float | None = None  # bytes over Cannon's peer links (per run)
    blas: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, got: np.ndarray | None, want: np.ndarray) -> None:
        if got is None:
            return
        self.rel_error = rel_error(got, want)
        self.correct = bool(self.rel_error <= TOLERANCE[self.dtype])
        if not self.correct:
            self.note = (self.note + "; " if self.note else "") + f"WRONG RESULT (rel. error {self.rel_error:.1e})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Record:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def rel_error(got: Any, want: np.ndarray) -> float:
    """‖got − want‖_F / ‖want‖_F, in row chunks so an 8192² check needs no n² temporaries."""
    got = np.asarray(got)
    if got.shape != want.shape:
        return math.inf
    step = max(1, (32 * MiB) // max(1, want.shape[1] * 8))
    num = den = 0.0
    for r in range(0, want.shape[0], step):
        w = np.asarray(want[r : r + step], dtype=np.float64)
        g = np.asarray(got[r : r + step], dtype=np.float64)
        num += float(np.sum((g - w) ** 2))
        den += float(np.sum(w * w))
    return math.sqrt(num / den) if den else math.sqrt(num)


# A measurement that has already spent this long stops after its first timed run.
TIME_CAP = [45.0]


def timed(fn, reps: int, *, warmup: bool = True, before=None, release=None) -> tuple[list[float], Any]:
    """Run ``fn`` once untimed (when ``warmup``), then up to ``reps`` timed runs; returns (times,
    last result). Repeats stop early once the whole measurement has taken ``TIME_CAP`` seconds.

    ``before()`` runs ahead of every run (untimed); ``release(result)`` frees the
    result of every run but the last, so a cached product does not pile up.
    """
    times: list[float] = []
    result = None
    total = reps + (1 if warmup else 0)
    spent = 0.0
    for i in range(total):
        if before:
            before()
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t0
        spent += elapsed
        if i >= total - reps:
            times.append(elapsed)
        last = i == total - 1 or (times and spent > TIME_CAP[0])
        if release and not last:
            release(result)
            result = None
        if last:
            break
    return times, result


def median(times: list[float]) -> float | None:
    return statistics.median(times) if times else None


class TreeRss:
    """Samples the RSS of a process and all its descendants (JVM, PySpark workers) in a thread.

    ``peak`` is the largest sum over the tree, ``worker_peak`` the largest single
    PySpark worker that used CPU during the window (one worker runs one task at
    a time, so it bounds a task's RSS when the task does not measure itself;
    idle workers left from earlier jobs do not count). Shared pages count in
    every process that maps them, so the sum is an upper bound.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.1):
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.base = self.peak = self.worker_peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: dict[int, bool] = {}
        self._cpu_at_start: dict[int, float] = {}

    def _is_worker(self, proc) -> bool:
        known = self._workers.get(proc.pid)
        if known is None:
            try:
                known = any("pyspark" in part for part in proc.cmdline())
            except self._psutil.Error:
                known = False
            self._workers[proc.pid] = known
        return known

    def _active(self, proc) -> bool:
        try:
            cpu = sum(proc.cpu_times()[:2])
        except self._psutil.Error:
            return False
        return cpu > self._cpu_at_start.get(proc.pid, -1.0) + 0.01

    def sample(self, start: bool = False) -> float:
        total = 0.0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except self._psutil.Error:
            return 0.0
        for proc in procs:
            try:
                rss = float(proc.memory_info().rss)
            except self._psutil.Error:
                continue
            total += rss
            if proc is not self.root and self._is_worker(proc):
                if start:
                    try:
                        self._cpu_at_start[proc.pid] = sum(proc.cpu_times()[:2])
                    except self._psutil.Error:
                        pass
                elif self._active(proc):
                    self.worker_peak = max(self.worker_peak, rss)
        self.peak = max(self.peak, total)
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeRss:
        self.base = self.sample(start=True)
        self.worker_peak = 0.0
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def fill(self, record: Record, *, task_from_workers: bool = True) -> None:
        record.run_rss, record.run_rss_base = self.peak, self.base
        if task_from_workers and record.task_rss is None and self.worker_peak:
            record.task_rss = self.worker_peak
            record.task_rss_how = "sampled: largest PySpark worker"


# --- what Spark reports -------------------------------------------------------------------------


def shuffle_read_total(sc) -> float | None:
    """Shuffle bytes read by all executors so far (Spark's own counters, after its event queue drains)."""
    try:
        jsc = sc._jsc.sc()
        jsc.listenerBus().waitUntilEmpty()
        executors = jsc.statusStore().executorList(True)
        return float(sum(executors.apply(i).totalShuffleRead() for i in range(executors.length())))
    except Exception:  # noqa: BLE001 - internal API moved: report no figure rather than a wrong one
        return None


def mllib_blas(sc) -> str:
    """The BLAS MLlib's dense products call in this JVM (``BLAS.nativeBLAS``, which falls back to Java)."""
    try:
        jvm = sc._jvm
        module = jvm.java.lang.Class.forName("org.apache.spark.mllib.linalg.BLAS$").getField("MODULE$").get(None)
        name = module.nativeBLAS().getClass().getSimpleName()
    except Exception:  # noqa: BLE001
        return "unknown"
    if name == "JNIBLAS":
        path = native_blas_path()
        real = os.path.realpath(path) if path else ""
        return f"native ({os.path.basename(os.path.dirname(real))}/{os.path.basename(real)})" if real else "native"
    return f"Java ({name})"


def native_blas_path() -> str | None:
    """Where the system's ``libblas.so.3`` is, if there is one (what netlib would dlopen)."""
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.strip().startswith("libblas.so.3 ") and "=>" in line:
                path = line.split("=>", 1)[1].strip()
                if os.path.exists(path):
                    return path
    except (OSError, subprocess.SubprocessError):
        pass
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        path = os.path.join(folder, "libblas.so.3")
        if os.path.exists(path):
            return path
    return None


def blas_java_options(blas: str) -> str:
    """The JVM flag that makes netlib pick ``blas`` ("java" or "native"); must be set before the JVM starts."""
    if blas == "java":
        return JAVA_BLAS_OPTION
    path = native_blas_path()
    if path is None:
        raise RuntimeError("no libblas.so.3 on this machine (e.g. apt-get install libopenblas0-pthread)")
    return f"-Ddev.ludovic.netlib.blas.nativeLibPath={path}"


def spark_conf_for_blas(blas: str, memory: str | None = None) -> dict[str, str]:
    """jampi's embedded-session configuration with the JVM option that selects ``blas``
    (and, when given, another driver memory: in local mode the executors live in it)."""
    from jampi_dsl.session import session_conf

    base = session_conf().get("spark.driver.extraJavaOptions", "")
    option = blas_java_options(blas)
    conf = {
        "spark.driver.extraJavaOptions": f"{base} {option}".strip(),
        "spark.executor.extraJavaOptions": option,
    }
    if memory:
        conf.update({"spark.driver.memory": memory, "spark.driver.maxResultSize": memory})
    return conf


def mllib_child_memory() -> str:
    """Half the machine for a JVM that runs MLlib alone: its reducers hold whole row and column
    strips and its collect copies C several times, so it gets more than jampi's default quarter
    (at n=8192 a quarter is too tight); generous to MLlib on purpose."""
    import psutil

    return f"{max(2, psutil.virtual_memory().total // 2**31)}g"


def child_env() -> dict[str, str]:
    """Environment for a child benchmark process: workers run this interpreter, Spark on loopback."""
    import sys

    env = dict(os.environ)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
