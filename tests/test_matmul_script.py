"""``benchmarks/matmul.py`` as a user runs it (``python benchmarks/matmul.py``), at a small n:
its own Spark, every system's product checked against NumPy inside the script, a table and a
machine-readable line printed. The figures themselves are not asserted (a benchmark, not a
timed test); what is asserted is that every measurement it promises is there and positive."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.common import child_env, native_blas_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_matmul_script_prints_every_measurement(tmp_path):
    n = 256
    # The Java-BLAS child JVM runs only where a native libblas.so.3 makes the main JVM native;
    # its rows come from the suite's child, which test_benchmark_smoke covers. Keep CI to one JVM.
    argv = [sys.executable, os.path.join(ROOT, "benchmarks", "matmul.py"), "--sizes", str(n), "--reps", "1",
            "--driver-memory", "1g", "--java-blas-up-to", "0"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=child_env(), timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    lines = done.stdout.splitlines()
    header = lines[0]
    assert "slots" in header and "MLlib BLAS here:" in header and "driver heap 1g" in header
    assert ("native" in header) == (native_blas_path() is not None)
    table = [ln for ln in lines if ln.startswith(f"| {n} |")]
    assert len(table) == 1 and "failed" not in table[0], table
    (row,) = json.loads(lines[-1])["rows"]
    assert row["n"] == n
    for key in ("numpy", "cannon", "cannon_src", "rss", "growth", "stage"):
        assert row[key] > 0, key
    mllib = {k: v for k, v in row.items() if k.startswith("mllib_")}
    assert set(mllib) == {f"mllib_{n // 8}", f"mllib_{n // 4}", f"mllib_{n // 2}"}
    assert all(v > 0 for v in mllib.values())
    # The task's high-water mark covers what grew during the task: at least its C block.
    assert row["rss"] >= row["growth"] >= row["block"]
    assert row["budget"] == 5 * row["block"] + 64 * 2**20
