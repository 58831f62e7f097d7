"""One suite over every product method: the same programs run with each method
forced, and every result must match NumPy (float64 1e-10, float32 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest

import jampi_dsl
from jampi_dsl.executors.blockgen import generate

METHODS = ["local", "cannon", "broadcast", "mllib"]


def G(kind, r, c, seed, dtype="float64"):
    return generate(kind, (r, c), dtype, seed=seed)


# (name, program, {printed label: expected})
CASES = [
    ("square", "A = random(64, 64, seed=1)\nB = randn(64, 64, seed=2)\nprint(A @ B)\n",
     lambda: {"A @ B": G("uniform", 64, 64, 1) @ G("normal", 64, 64, 2)}),
    ("rectangular_nondivisible", "A = random(37, 53, seed=3)\nB = random(53, 29, seed=4)\nprint(A @ B)\n",
     lambda: {"A @ B": G("uniform", 37, 53, 3) @ G("uniform", 53, 29, 4)}),
    ("skinny", "A = randn(301, 7, seed=5)\nv = randn(7, 1, seed=6)\nprint(A @ v)\nprint(v.T @ A.T)\n",
     lambda: {"A @ v": G("normal", 301, 7, 5) @ G("normal", 7, 1, 6),
              "v.T @ A.T": (G("normal", 301, 7, 5) @ G("normal", 7, 1, 6)).T}),
    ("one_by_one", "a = random(1, 1, seed=7)\nb = random(1, 1, seed=8)\nprint(a @ b)\n",
     lambda: {"a @ b": G("uniform", 1, 1, 7) @ G("uniform", 1, 1, 8)}),
    ("transposed", "A = randn(40, 30, seed=9)\nB = randn(50, 30, seed=10)\nprint(A.T @ A)\nprint(A @ B.T)\n"
     "print(B.T @ B)\n",
     lambda: {"A.T @ A": G("normal", 40, 30, 9).T @ G("normal", 40, 30, 9),
              "A @ B.T": G("normal", 40, 30, 9) @ G("normal", 50, 30, 10).T,
              "B.T @ B": G("normal", 50, 30, 10).T @ G("normal", 50, 30, 10)}),
    ("float32", 'A = random(45, 33, seed=11, dtype="float32")\nB = random(33, 21, seed=12, dtype="float32")\n'
     "C = A @ B\nprint(C)\n",
     lambda: {"C": G("uniform", 45, 33, 11, "float32") @ G("uniform", 33, 21, 12, "float32")}),
    ("chained_gemm", "A = randn(48, 48, seed=13)\nB = randn(48, 48, seed=14)\nC = A @ B\nD = C @ A.T + 2 * B\n"
     "E = 0.5 * (D @ C) - A\nprint(E)\nprint(norm(D))\n",
     lambda: _chained()),
]


def _chained():
    A, B = G("normal", 48, 48, 13), G("normal", 48, 48, 14)
    C = A @ B
    D = C @ A.T + 2 * B
    return {"E": 0.5 * (D @ C) - A, "norm(D)": np.linalg.norm(D)}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_product_methods_match_numpy(spark, method, case):
    name, program, expected_fn = case
    session = jampi_dsl.session(executor=method)
    values = session.run_text(program)
    for label, expected in expected_fn().items():
        actual = values[label]
        expected = np.asarray(expected)
        dtype = expected.dtype if expected.ndim else np.dtype("float64")
        assert np.asarray(actual).dtype == dtype, f"{method} {label}: dtype {np.asarray(actual).dtype}"
        rtol = 1e-4 if dtype == np.float32 else 1e-10
        err = np.linalg.norm(np.asarray(actual, dtype=np.float64) - expected) / max(np.linalg.norm(expected), 1e-300)
        assert err <= rtol, f"{method} {name} {label}: relative error {err:.3g}"


@pytest.mark.parametrize("method", ["cannon", "broadcast", "mllib"])
def test_forced_method_is_used_and_explained(spark, method):
    session = jampi_dsl.session(executor=method)
    A = session.random(30, 30, seed=1)
    v = session.random(30, 2, seed=2)
    text = (A @ v).explain()
    assert f"[{method} forced]" in text and f"forced by session(executor={method!r})" in text


def _driver_only_modules(_items):
    import sys

    yield sorted(m for m in ("networkx", "lark", "rich") if m in sys.modules)


def test_spark_tasks_never_import_the_planner(spark):
    """A task imports only the module of the function it runs; the planner, networkx,
    lark and rich (~20 MiB) must stay on the driver, or every reused Python worker
    carries them into the Cannon tasks' memory budget."""
    s = jampi_dsl.session(executor="broadcast")
    a, b = G("uniform", 96, 80, 21), G("uniform", 80, 24, 22)
    got = (s.matrix(a) @ s.matrix(b)).to_numpy()
    np.testing.assert_allclose(got, a @ b, rtol=1e-12)
    probes = spark.sparkContext.parallelize(range(16), 16).mapPartitions(_driver_only_modules).collect()
    assert probes == [[]] * 16
