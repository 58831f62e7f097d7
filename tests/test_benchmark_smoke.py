"""The benchmark suite at n=256: every system must produce NumPy's product, so the suite can
never compare wrong answers. It runs in this process on the shared ``spark`` fixture (one
repeat, no warm-up, end to end "warm"), and renders the report from what it measured.

Left out here, and why: MLlib with native BLAS needs a JVM of its own (the same measuring code
as the Java-BLAS rows, which run), and Dask when it is not installed (the ``[bench]`` extra;
CI installs ``.[test]`` only, so its rows are then checked to be reported as skipped).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from benchmarks import e2e, report, run
from benchmarks.common import TOLERANCE, Record, rel_error
from jampi_dsl.executors.cannon.channel import BLOCK_HEADER

N = 256


@pytest.fixture(scope="module")
def measured(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = run.parse_args(["--sizes", str(N), "--reps", "1", "--no-warmup", "--e2e", "warm", "--skip", "mllib-native",
                           "--mllib-fractions", "2", "--out", str(out), "--no-doc"])
    meta, records = run.run_suite(args, spark=spark)
    return out, meta, records


def _dask() -> bool:
    try:
        import dask.array  # noqa: F401
    except ImportError:
        return False
    return True


def test_every_system_matches_numpy(measured):
    _, _, records = measured
    expected = {s for s in run.ALL if s != "mllib-native"}
    assert {r.system for r in records} == expected
    for r in records:
        skip_ok = (r.system in ("mllib-java", "e2e-mllib") and r.dtype == "float32") or \
                  (r.system in ("dask", "e2e-dask") and not _dask()) or \
                  (r.system == "jampi-broadcast" and "does not apply" in r.note)
        if r.status == "skipped":
            assert skip_ok, f"{r.system} {r.dtype} skipped: {r.note}"
            continue
        assert r.status == "ok", f"{r.system} {r.dtype} {r.variant}: {r.status} {r.note}"
        assert r.rel_error is not None and r.rel_error <= TOLERANCE[r.dtype], (r.system, r.dtype, r.rel_error)
        assert r.correct and r.seconds and r.seconds > 0


def test_measurements_are_recorded(measured):
    _, meta, records = measured
    stages = [r for r in records if r.system == "cannon-stage"]
    assert {r.dtype for r in stages} == {"float64", "float32"}
    for r in stages:
        q, k = r.extra["q"], r.extra["panels"]
        # Counted on the wire by the tasks: A and B blocks per task per shift, each block
        # its payload and one header per panel.
        assert r.peer_bytes == q * q * (q - 1) * 2 * (r.extra["block_bytes"] + k * BLOCK_HEADER.size)
        assert r.task_rss and r.run_rss and r.run_rss >= r.run_rss_base > 0
        split = r.extra["split"]
        assert split["compute"] > 0 and split["wall"] >= split["compute"]
    mllib = [r for r in records if r.system == "mllib-java" and r.status == "ok"]
    assert mllib and all(r.blas.startswith(("Java", "native")) for r in mllib)
    assert all(r.shuffle_bytes and r.shuffle_bytes > 0 for r in mllib)  # the replication, seen by Spark
    auto = next(r for r in records if r.system == "jampi-auto" and r.dtype == "float64")
    assert auto.variant  # the planner's choice is named
    assert meta["slots"] >= 1 and meta["mllib_blas_main"]


def test_report_renders(measured, tmp_path):
    out, meta, records = measured
    path = report.save(str(out), meta, records)
    meta2, records2 = report.load(path)
    assert [r.to_dict() for r in records2] == json.loads(json.dumps([r.to_dict() for r in records], default=float))
    doc = tmp_path / "BENCH.md"
    doc.write_text("# Benchmarks\n\nhand-written intro\n\n" + report.BEGIN + "\nold\n" + report.END + "\n\n## kept\n")
    written = report.render(str(out), meta2, records2, doc=str(doc), plots=False)
    text = doc.read_text()
    assert "hand-written intro" in text and "## kept" in text and "\nold\n" not in text
    assert "### Targets of the Cannon issue" in text and "Cannon stage" in text
    assert "What the model predicts for the JAMPI paper's clusters" in text
    assert str(doc) in written


def test_cold_end_to_end_paths(measured, tmp_path):
    """The subprocess path of the full run, for the two systems that start no JVM."""
    _, _, records = measured
    a = np.random.default_rng(1).random((N, N))
    b = np.random.default_rng(2).random((N, N))
    paths = {k: str(tmp_path / f"{k}.npy") for k in ("a", "b", "c")}
    np.save(paths["a"], a)
    np.save(paths["b"], b)
    case = type("Case", (), {"n": N, "dtype": "float64", "want": a @ b, "spark": None})()
    for system in ("e2e-numpy", "e2e-jampi"):
        rec = e2e.run_e2e(case, system, "cold", 1, False, paths, str(tmp_path))
        assert rec.status == "ok" and rec.correct, (system, rec.note, open(tmp_path / f"{system}-{N}-float64.log").read())
        assert rec.run_rss and rec.seconds > 0
    # A run over its time limit is killed with everything it started, and recorded as a lower bound.
    rec = e2e.run_e2e(case, "e2e-jampi", "cold", 1, False, paths, str(tmp_path), limit=0.2)
    assert rec.status == "timeout" and rec.seconds is None and rec.extra["limit"] == 0.2
    assert not os.path.exists(paths["c"])
    import psutil

    assert not [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]


def test_a_failed_cold_run_reports_its_cause_and_a_lower_bound(tmp_path):
    """A child that dies is recorded with the error that ended it (not its last stack line)
    and how long it ran; the targets table turns that time into a lower bound on the ratio."""
    log = tmp_path / "child.log"
    script = (
        "import sys; print('java.lang.OutOfMemoryError: Java heap space', file=sys.stderr); "
        "print('\\tat org.example.Grow.zeros(Grow.java:1)', file=sys.stderr); "
        "print('\\tat org.apache.spark.scheduler.Task.run(Task.scala:147)', file=sys.stderr); sys.exit(3)"
    )
    with pytest.raises(e2e.ChildFailed) as failed:
        e2e._cold_once([sys.executable, "-c", script], str(log))
    assert str(failed.value).startswith("exited 3 after ")
    assert "OutOfMemoryError: Java heap space (at org.example.Grow.zeros" in str(failed.value)
    py4j = "Traceback (most recent call last):\npy4j.protocol.Py4JJavaError: An error\nValueError: bad\n"
    assert e2e.failure_reason(py4j) == "ValueError: bad"

    jampi = Record("e2e-jampi", 8192, "float64", variant="cold")
    jampi.seconds, jampi.correct = 20.0, True
    mllib = Record("e2e-mllib", 8192, "float64", status="failed", variant="cold", note="exited 1 after 500 s: OOM")
    rows = [r for r in report.targets(report.Index([jampi, mllib])) if "n=8192: `jampi run`" in r]
    assert rows and "did not finish" in rows[0] and "lower bound" not in rows[0]  # no time: no bound
    mllib.extra["failed_after"] = 500.0
    rows = [r for r in report.targets(report.Index([jampi, mllib])) if "n=8192: `jampi run`" in r]
    assert "≥ 25.0×" in rows[0] and rows[0].endswith("**met** (lower bound) |")
    assert report._cell(report.Index([mllib]), "e2e-mllib", 8192, "float64", None) == "failed after 500 s"
    mllib.extra["failed_after"] = 60.0  # failed early: 3× proves nothing about 5×
    rows = [r for r in report.targets(report.Index([jampi, mllib])) if "n=8192: `jampi run`" in r]
    assert "≥ 3.0×" in rows[0] and rows[0].endswith("did not finish |")


def test_model_matches_mllib_replication():
    from benchmarks.model import _grid, mllib_shuffle_bytes

    # One block per input partition: each A block goes to every column group (N of them).
    assert mllib_shuffle_bytes(512, 64, 8) == 512 * 512 * 8 * (8 + 8) + 512 * 512 * 8
    assert _grid(4096, 1024, 4) == (4, 2, 2, 4)  # toBlockMatrix on 4 row partitions: 2×2 blocks each


def test_rel_error_is_a_real_check():
    want = np.arange(12.0).reshape(3, 4) + 1
    assert rel_error(want.copy(), want) == 0
    assert rel_error(want * (1 + 1e-3), want) == pytest.approx(1e-3)
    assert rel_error(want[:, :3], want) == float("inf")
    rec = Record("x", 3, "float64")
    rec.check(want + 1, want)
    assert rec.correct is False and "WRONG" in rec.note


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([os.path.abspath(__file__), "-q"]))


def test_sparse_benchmark_compares_equal_answers(spark, tmp_path):
    """benchmarks/sparse_matrices.py at a toy size: jampi, SciPy and MLlib agree before they are timed."""
    from benchmarks import sparse_matrices as bench

    args = bench.parse_args(["--nodes", "5000", "--edges", "40000", "--iterations", "3", "--users", "2000",
                             "--items", "500", "--ratings", "20000", "--features", "8", "--mllib-iterations", "1",
                             "--mllib-block", "2500"])
    report: dict = {}
    before = {int(k) for k in spark.sparkContext._jsc.getPersistentRDDs().keySet()}
    bench.part_pagerank(args, spark.sparkContext, spark, tmp_path, report)
    bench.part_ratings(args, spark.sparkContext, spark, tmp_path, report)
    pr, rt = report["pagerank"], report["ratings"]
    assert pr["max_difference"] <= 1e-15 and pr["mllib_max_difference"] <= 1e-15, pr
    assert rt["max_difference"] <= 1e-12 and rt["mllib_max_difference"] <= 1e-9, rt
    assert "| MLlib BlockMatrix.multiply" in bench.markdown(report)
    # MLlib's cached block sizes are released: later tests count persisted RDDs
    assert {int(k) for k in spark.sparkContext._jsc.getPersistentRDDs().keySet()} == before
