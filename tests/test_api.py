"""The lazy Python API: expressions build IR (shape errors at once), run on demand."""

from __future__ import annotations

import numpy as np
import pytest

import jampi_dsl
from jampi_dsl import ShapeError
from jampi_dsl.executors.blockgen import generate


@pytest.fixture(scope="module")
def js():
    return jampi_dsl.session(executor="local")


def test_expressions_match_numpy(js):
    A = js.random(40, 30, seed=1)
    B = js.randn(30, 20, seed=2)
    a = generate("uniform", (40, 30), "float64", seed=1)
    b = generate("normal", (30, 20), "float64", seed=2)
    expr = (A @ B).T @ A - 2.5 * js.ones(20, 30) / np.float64(4.0)
    expected = (a @ b).T @ a - 2.5 * np.ones((20, 30)) / 4.0
    assert expr.shape == (20, 30) and expr.dtype == np.float64
    np.testing.assert_allclose(expr.to_numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose((-A).to_numpy(), -a)
    np.testing.assert_allclose((np.float64(3) * A + 1).to_numpy(), 3 * a + 1)
    s = A.norm() / A.sum()
    assert abs(float(s) - np.linalg.norm(a) / a.sum()) < 1e-12
    np.testing.assert_allclose((A / s).to_numpy(), a / (np.linalg.norm(a) / a.sum()), rtol=1e-12)


def test_matrix_from_numpy_and_float32(js):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    X = js.matrix(x)
    assert X.dtype == np.float32
    Y = (X @ X.T) * 0.5
    assert Y.dtype == np.float32
    out = Y.to_numpy()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (x @ x.T) * 0.5, rtol=1e-6)
    assert js.eye(3).trace().value() == 3.0


def test_shape_errors_raise_when_built(js):
    A = js.random(3, 4)
    with pytest.raises(ShapeError, match="left columns == right rows"):
        A @ A
    with pytest.raises(ShapeError, match="equal shapes"):
        A + A.T
    with pytest.raises(ShapeError, match="square"):
        A.trace()


def test_load_save_and_explain(js, tmp_path):
    data = np.random.default_rng(0).standard_normal((50, 8))
    np.save(tmp_path / "x.npy", data)
    X = js.load(tmp_path / "x.npy")
    G = X.T @ X
    G.save(tmp_path / "out" / "g.npy")
    np.testing.assert_allclose(np.load(tmp_path / "out" / "g.npy"), data.T @ data, rtol=1e-12)
    text = G.explain()
    assert "matmul(" in text and "trans_a=True" in text and "local" in text
    assert '"nodes"' in G.explain(format="json")


def test_run_file_returns_printed_and_saved(js, tmp_path):
    path = tmp_path / "p.lin"
    path.write_text('param n = 5\nX = eye(n)\ns = trace(X)\nprint(s)\nsave(X * s, "x.npy")\n')
    values = js.run_file(path, params={"n": 7})
    assert values["s"] == 7.0
    np.testing.assert_array_equal(values[str(tmp_path / "x.npy")], 7 * np.eye(7))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), 7 * np.eye(7))


def test_literal_labels_name_no_array_id_and_distinct_arrays_stay_distinct():
    js = jampi_dsl.session(executor="local")
    a, b = np.ones((3, 2)), np.full((3, 2), 2.0)
    expr = js.matrix(a) + js.matrix(b)
    assert "array_id" not in expr.explain() and "literal(shape=3x2, dtype=float64)" in expr.explain()
    np.testing.assert_array_equal(expr.to_numpy(), a + b)  # CSE must not take b for a


def test_kept_values_cannot_be_changed_from_outside():
    """Review findings: the array to_numpy() returns, or the one given to js.matrix(), changed
    in place afterwards, must not change later results; lazy scalars compare by value."""
    js = jampi_dsl.session(executor="local")
    a = np.ones((2, 2))
    M = js.matrix(a)
    B = M * 2
    x = B.to_numpy()
    x[:] = 99
    a[:] = 5
    np.testing.assert_array_equal(B.to_numpy(), np.full((2, 2), 2.0))
    np.testing.assert_array_equal((B + 0).to_numpy(), np.full((2, 2), 2.0))
    np.testing.assert_array_equal((M * 2).to_numpy(), np.full((2, 2), 2.0))
    s = js.matrix(np.full((2, 2), 5.0)).sum()
    assert s == 20.0 and not s != 20.0 and s > 19 and round(s) == 20


def test_python_loops_do_not_keep_their_history():
    """Once a value is kept, its lazy handle stands for it: the expression that made it (and the
    arrays in it) can be freed, so a loop's memory does not grow with its length."""
    import gc
    import weakref

    js = jampi_dsl.session(executor="local")
    X = js.zeros(50, 50)
    first = None
    for step in range(30):
        chunk = js.matrix(np.full((50, 50), float(step)))
        if first is None:
            first = weakref.ref(chunk.node)
        X = X + chunk
        X.to_numpy()
        del chunk
    gc.collect()
    assert first() is None, "the first step's array is still held by the loop's history"
    np.testing.assert_array_equal(X.to_numpy(), np.full((50, 50), float(sum(range(30)))))
