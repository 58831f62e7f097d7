"""The benchmark suite: jampi vs NumPy, MLlib and Dask, side by side in one run.

    python -m benchmarks                       # the full run; rewrites BENCHMARKS.md's generated section
    python -m benchmarks --sizes 1024 --reps 1 # a quick look (BENCHMARKS.md untouched)
    python -m benchmarks --from-json benchmarks/results/results.json --doc BENCHMARKS.md  # re-render

For every (dtype, n), on the same A = random(n, n, seed=1) and B = random(n, n, seed=2):
NumPy first (its product is the reference every other result is checked against),
then the in-memory systems, MLlib at block sizes n/8, n/4, n/2 (Java BLAS in this
JVM, native BLAS in a child JVM when a libblas.so.3 exists), and the end-to-end
.npy -> .npy paths. Timings are the median of the repeats after one warm-up run.
Results go to OUT/results.json and OUT/results.md, plots to OUT/*.png.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np

from . import e2e, systems
from .common import SHORT_DTYPE, Record, native_blas_path

IN_MEMORY = ("numpy", "dask", "jampi-auto", "jampi-cannon", "jampi-broadcast", "jampi-mllib", "cannon-stage",
             "mllib-java", "mllib-native")
ALL = IN_MEMORY + e2e.SYSTEMS
GROUPS = {"all": ALL, "jampi": tuple(s for s in ALL if s.startswith("jampi-")),
          "mllib": ("mllib-java", "mllib-native"), "e2e": e2e.SYSTEMS, "in-memory": IN_MEMORY}
DEFAULT_SIZES = {"float64": [1024, 2048, 4096, 8192], "float32": [4096, 8192]}
HERE = os.path.dirname(os.path.abspath(__file__))


def default_reps(n: int) -> int:
    return 3 if n <= 1024 else 2 if n <= 4096 else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", help="n for every dtype (default: 1024-8192 f64, 4096 8192 f32)")
    p.add_argument("--dtypes", nargs="+", choices=("float64", "float32"), default=["float64", "float32"])
    p.add_argument("--systems", nargs="+", default=["all"], help=f"names or groups {sorted(GROUPS)}: {', '.join(ALL)}")
    p.add_argument("--skip", nargs="+", default=[], help="systems or groups to leave out")
    p.add_argument("--reps", type=int, help="timed repeats (default 3 for n<=1024, 2 up to 4096, 1 above; "
                   "at most 2 for cold end-to-end runs)")
    p.add_argument("--no-warmup", action="store_true", help="no untimed first run")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="folder for JSON, Markdown, plots, logs")
    p.add_argument("--e2e", choices=("cold", "warm"), default="cold",
                   help="end to end as separate processes (cold, default) or in this process, Spark up (warm)")
    p.add_argument("--long", type=float, default=45.0,
                   help="a run predicted longer than this (s) gets one timed run and no separate warm-up, "
                   "and a measurement stops repeating once it has spent this long")
    p.add_argument("--e2e-timeout", type=float, default=1200.0,
                   help="kill a cold end-to-end run still going after this many seconds and record a lower "
                   "bound (the PySpark MLlib path at n=8192 can take longer than the rest of the suite)")
    p.add_argument("--mllib-budget", type=float, default=150.0,
                   help="skip an MLlib run (a block size, or jampi's mllib method) predicted from this run's "
                   "smaller n to take longer than this (s)")
    p.add_argument("--mllib-fractions", type=int, nargs="+", default=[8, 4, 2], metavar="K",
                   help="MLlib block sizes n/K (default: 8 4 2)")
    p.add_argument("--doc", help="rewrite the generated section of this Markdown file "
                   "(default: BENCHMARKS.md on a full default run only)")
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--from-json", help="no measuring: render tables, plots and the doc from this results.json")
    args = p.parse_args(argv)
    from .common import TIME_CAP

    TIME_CAP[0] = args.long
    args.full = args.sizes is None and args.systems == ["all"] and not args.skip and args.reps is None \
        and args.dtypes == ["float64", "float32"] and args.mllib_fractions == [8, 4, 2] and not args.no_warmup
    return args


def selected(names: list[str], skip: list[str]) -> list[str]:
    def expand(items):
        out = []
        for item in items:
            if item in GROUPS:
                out += GROUPS[item]
            elif item in ALL:
                out.append(item)
            else:
                raise SystemExit(f"unknown system {item!r}; choose from {', '.join(ALL)} or {', '.join(GROUPS)}")
        return set(out)

    chosen = expand(names) - expand(skip)
    return [s for s in ALL if s in chosen or s == "numpy"]


def predict(records: list[Record], system: str, dtype: str, n: int, block: int | None = None) -> float | None:
    """Time of one run, scaled as n³ from the largest smaller n this run measured (same block size,
    else the same fraction of n); None when there is nothing to go on."""
    done = [r for r in records if r.system == system and r.dtype == dtype and r.status == "ok" and r.seconds
            and r.n < n]
    if block is not None:
        done = [r for r in done if r.extra.get("block") == block] or \
               [r for r in done if r.extra.get("block") and r.n * block == n * r.extra["block"]]
    if not done:
        return None
    last = max(done, key=lambda r: r.n)
    return last.seconds * (n / last.n) ** 3


class Runner:
    def __init__(self, args, spark, console, progress, task):
        self.args, self.spark, self.console = args, spark, console
        self.progress, self.task = progress, task
        self.records: list[Record] = []
        self.log_dir = os.path.join(args.out, "logs")
        os.makedirs(self.log_dir, exist_ok=True)

    def schedule(self, system: str, n: int, dtype: str, block: int | None = None) -> tuple[int, bool, str]:
        reps = self.args.reps or default_reps(n)
        if system.startswith("e2e-") and self.args.e2e == "cold":
            reps = min(reps, 2)  # each run is a new process: the spread is small, the cost large
        warmup = not self.args.no_warmup
        guess = predict(self.records, system, dtype, n, block)
        if guess is not None and guess > self.args.long:
            if system.startswith("e2e-") and self.args.e2e == "cold":
                return 1, False, f"one run (predicted {guess:.0f} s)"
            return 1, False, f"one run, no separate warm-up (predicted {guess:.0f} s; this code already ran at smaller n)"
        return reps, warmup, ""

    def add(self, rec: Record) -> None:
        self.records.append(rec)
        base = next((r for r in self.records if r.system == "numpy" and r.n == rec.n and r.dtype == rec.dtype), None)
        label = f"n={rec.n} {SHORT_DTYPE[rec.dtype]} {rec.system}{' ' + rec.variant if rec.variant else ''}"
        if rec.status != "ok":
            line = f"{label}: {rec.status} — {rec.note}"
        else:
            ratio = f" ({rec.seconds / base.seconds:.2f}x NumPy)" if base and base.seconds else ""
            check = "" if rec.correct is None else " ✓" if rec.correct else f" ✗ rel. error {rec.rel_error:.1e}"
            line = f"{label}: {rec.seconds:.2f} s{ratio}{check}"
        self.console.print(line, markup=False, highlight=False)

    def step(self, description: str, fn, *fail_args) -> None:
        self.progress.update(self.task, description=description)
        try:
            out = fn()
            for rec in out if isinstance(out, list) else [out]:
                self.add(rec)
        except Exception as exc:  # noqa: BLE001 - one system failing must not end the run
            system, n, dtype, variant = fail_args
            with open(os.path.join(self.log_dir, "failures.log"), "a") as fh:
                fh.write(f"--- {system} n={n} {dtype} {variant}\n{traceback.format_exc()}\n")
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            self.add(Record(system, n, dtype, status="failed", variant=variant, note=first))
        self.progress.advance(self.task)

    def case(self, n: int, dtype: str, chosen: list[str], workdir: str) -> None:
        from jampi_dsl.executors.blockgen import generate

        case = systems.Case(self.spark, n, dtype, generate("uniform", (n, n), dtype, seed=1),
                            generate("uniform", (n, n), dtype, seed=2))
        tag = f"n={n} {SHORT_DTYPE[dtype]}"
        reps, warmup, note = self.schedule("numpy", n, dtype)
        self.step(f"{tag} numpy", lambda: systems.run_numpy(case, reps, warmup), "numpy", n, dtype, "")
        if case.want is None:
            return
        paths = {k: os.path.join(workdir, f"{k}.npy") for k in ("a", "b", "want", "c")}
        if any(s.startswith("e2e-") or s == "mllib-native" for s in chosen):
            for key, arr in (("a", case.a), ("b", case.b), ("want", case.want)):
                np.save(paths[key], arr)
        for system in chosen:
            if system == "numpy":
                continue
            if system == "mllib-java":
                self.mllib_java(case, tag)
            elif system == "mllib-native":
                self.mllib_native(case, tag, paths)
            elif system.startswith("e2e-"):
                reps, warmup, note = self.schedule(system, n, dtype)
                self.step(f"{tag} {system} ({self.args.e2e})", lambda s=system, r=reps, w=warmup, nt=note: self._noted(
                    e2e.run_e2e(case, s, self.args.e2e, r, w, paths, self.log_dir, self.args.e2e_timeout), nt), system, n, dtype, self.args.e2e)
            else:
                reps, warmup, note = self.schedule(system, n, dtype)
                guess = predict(self.records, system, dtype, n)
                if system == "jampi-mllib" and guess is not None and guess > self.args.mllib_budget:
                    self.step(f"{tag} {system}", lambda s=system, g=guess: Record(
                        s, n, dtype, status="skipped", note=f"predicted {g:.0f} s from this run's smaller n, over "
                        f"the {self.args.mllib_budget:.0f} s budget"), system, n, dtype, "")
                    continue
                self.step(f"{tag} {system}", lambda s=system, r=reps, w=warmup, nt=note: self._noted(
                    self.in_memory(case, s, r, w), nt), system, n, dtype, "")

    @staticmethod
    def _noted(rec: Record, note: str) -> Record:
        if note:
            rec.note = f"{rec.note}; {note}" if rec.note else note
        return rec

    def in_memory(self, case, system: str, reps: int, warmup: bool) -> Record:
        if system == "dask":
            return systems.run_dask(case, reps, warmup)
        if system == "cannon-stage":
            return systems.run_cannon_stage(case, reps, warmup)
        return systems.run_jampi(case, system.removeprefix("jampi-"), reps, warmup)

    def _mllib_plan(self, case, system: str) -> tuple[list[dict], list[Record]]:
        plan, skipped = [], []
        for block in systems.mllib_blocks(case.n, tuple(self.args.mllib_fractions)):
            guess = predict(self.records, system, "float64", case.n, block)
            if guess is not None and guess > self.args.mllib_budget:
                skipped.append(Record(system, case.n, case.dtype, status="skipped", variant=f"b={block}",
                                      extra={"block": block}, note=f"predicted {guess:.0f} s from this run's "
                                      f"smaller n, over the {self.args.mllib_budget:.0f} s budget"))
                continue
            reps, warmup, note = self.schedule(system, case.n, case.dtype, block)
            plan.append({"block": block, "reps": reps, "warmup": warmup, "note": note})
        return plan, skipped

    def mllib_java(self, case, tag: str) -> None:
        if case.dtype != "float64":
            self.step(f"{tag} mllib-java", lambda: Record("mllib-java", case.n, case.dtype, status="skipped",
                                                          note="MLlib is float64 only"), "mllib-java", case.n,
                      case.dtype, "")
            return
        plan, skipped = self._mllib_plan(case, "mllib-java")
        for rec in skipped:
            self.step(f"{tag} mllib-java {rec.variant}", lambda r=rec: r, "mllib-java", case.n, case.dtype, rec.variant)
        for p in plan:
            self.step(f"{tag} mllib-java b={p['block']}", lambda p=p: self._noted(systems.run_mllib(
                self.spark, case.a, case.b, case.want, "mllib-java", p["block"], p["reps"], p["warmup"]), p["note"]),
                "mllib-java", case.n, case.dtype, f"b={p['block']}")

    def mllib_native(self, case, tag: str, paths: dict) -> None:
        from .systems import run_child

        def skipped(note):
            return Record("mllib-native", case.n, case.dtype, status="skipped", note=note)

        if case.dtype != "float64":
            self.step(f"{tag} mllib-native", lambda: skipped("MLlib is float64 only"), "mllib-native", case.n,
                      case.dtype, "")
        elif native_blas_path() is None:
            self.step(f"{tag} mllib-native", lambda: skipped(
                "no native libblas.so.3 on this machine (e.g. apt-get install libopenblas0-pthread)"),
                "mllib-native", case.n, case.dtype, "")
        else:
            plan, skipped_recs = self._mllib_plan(case, "mllib-native")
            for rec in skipped_recs:
                self.add(rec)
            out = os.path.join(os.path.dirname(paths["a"]), "native.json")
            log = os.path.join(self.log_dir, f"mllib-native-{case.n}.log")

            def child():
                recs = run_child("native", paths["a"], paths["b"], paths["want"], plan, out, log, timeout=3600)
                for rec, p in zip(recs, plan, strict=False):
                    self._noted(rec, p["note"])
                return recs

            self.step(f"{tag} mllib-native (child JVM)", child, "mllib-native", case.n, case.dtype, "")


def start_spark():
    """jampi's embedded session with Spark's default (Java) BLAS forced, so the MLlib rows in this
    JVM are the Java-BLAS ones whatever is installed."""
    from jampi_dsl.session import get_spark

    from .common import spark_conf_for_blas

    return get_spark(conf=spark_conf_for_blas("java"))


def machine_meta(spark, args, chosen: list[str]) -> dict:
    import psutil
    import pyspark
    from threadpoolctl import threadpool_info

    from jampi_dsl.session import task_slots

    from .common import mllib_blas

    sc = spark.sparkContext
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    native = native_blas_path()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": f"{np.__version__} ({', '.join(blas) or 'BLAS unknown'})",
        "pyspark": pyspark.__version__,
        "java": sc._jvm.java.lang.System.getProperty("java.version"),
        "master": sc.master,
        "slots": task_slots(spark),
        "mllib_blas_main": mllib_blas(sc),
        "native_blas": os.path.realpath(native) if native else None,
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(("run.py", "__main__.py"))
        else "(library call)",
        "systems": chosen,
        "e2e_mode": args.e2e,
        "load_average": os.getloadavg(),
    }


def plan_sizes(args) -> list[tuple[str, int]]:
    return [(dtype, n) for dtype in args.dtypes for n in (args.sizes or DEFAULT_SIZES[dtype])]


def count_steps(args, chosen: list[str]) -> int:
    total = 0
    for dtype, n in plan_sizes(args):
        for s in chosen:
            total += len(systems.mllib_blocks(n, tuple(args.mllib_fractions))) if s == "mllib-java" and dtype == "float64" \
                else 1
    return total


def run_suite(args, spark=None, console=None) -> tuple[dict, list[Record]]:
    """Measure everything ``args`` asks for; ``spark`` is reused as it is when given (tests)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    chosen = selected(args.systems, args.skip)
    os.makedirs(args.out, exist_ok=True)
    ours = spark is None
    if ours:
        with console.status("starting Spark (Java BLAS forced for the in-process MLlib rows)"):
            spark = start_spark()
    meta = machine_meta(spark, args, chosen)
    console.print(f"{meta['date']}  {meta['machine']}  {meta['master']} ({meta['slots']} slots)  "
                  f"MLlib BLAS here: {meta['mllib_blas_main']}  native libblas: {meta['native_blas']}",
                  markup=False, highlight=False)
    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="jampi-bench-")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("benchmarks", total=count_steps(args, chosen))
            runner = Runner(args, spark, progress.console, progress, task)
            for dtype, n in plan_sizes(args):
                runner.case(n, dtype, chosen, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if ours:
            from jampi_dsl.session import stop_spark

            stop_spark()
    meta["seconds"] = round(time.perf_counter() - started, 1)
    meta["load_average_end"] = os.getloadavg()
    return meta, runner.records


def main(argv: list[str] | None = None) -> int:
    from . import report

    args = parse_args(argv)
    if args.from_json:
        meta, records = report.load(args.from_json)
    else:
        meta, records = run_suite(args)
        report.save(args.out, meta, records)
    doc = None if args.no_doc else args.doc or (os.path.join(os.path.dirname(HERE), "BENCHMARKS.md")
                                                if args.full and not args.from_json else None)
    written = report.render(args.out, meta, records, doc=doc, plots=not args.no_plots)
    for path in written:
        print(f"wrote {path}")
    failed = [r for r in records if r.status == "failed" or r.correct is False]
    for r in failed:
        print(f"FAILED: {r.system} n={r.n} {r.dtype} {r.variant}: {r.note}", file=sys.stderr)
    return 1 if failed else 0
