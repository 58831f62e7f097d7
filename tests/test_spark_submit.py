"""The README's spark-submit recipe, against the real standalone cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyspark

import jampi_dsl
from jampi_dsl.executors.blockgen import generate


def test_spark_submit_recipe(standalone_cluster, tmp_path):
    program = tmp_path / "job.lin"
    program.write_text(
        "param n = 300\nA = random(n, n, seed=1)\nB = randn(n, n, seed=2)\nC = A @ B.T\n"
        'save(C, "out/c.npy")\nprint(norm(C))\n'
    )
    submit = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    entry = Path(jampi_dsl.__file__).with_name("__main__.py")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP="127.0.0.1", SPARK_HOME=os.path.dirname(pyspark.__file__))
    result = subprocess.run(
        [submit, "--master", standalone_cluster, "--conf", "spark.driver.host=127.0.0.1",
         "--conf", "spark.driver.bindAddress=127.0.0.1", str(entry),
         "run", str(program), "--executor", "cannon", "--quiet"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    A = generate("uniform", (300, 300), "float64", seed=1)
    B = generate("normal", (300, 300), "float64", seed=2)
    C = A @ B.T
    got = np.load(tmp_path / "out" / "c.npy")
    # The language's float64 contract: a relative (Frobenius) error of at most 1e-10. The
    # blocked sums add in another order than NumPy's, so small entries differ in low bits.
    assert got.shape == C.shape and np.linalg.norm(got - C) <= 1e-10 * np.linalg.norm(C)
    printed = float(result.stdout.split("norm(C) = ")[1].split()[0])
    assert abs(printed - np.linalg.norm(C)) < 1e-9 * np.linalg.norm(C)
