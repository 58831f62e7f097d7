"""The elementwise operations of ``jampi_dsl.ops``, NumPy broadcasting and axis reductions,
on the driver and on Spark (after a Cannon product the values are distributed), against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import jampi_dsl
from jampi_dsl import ops
from jampi_dsl.errors import ShapeError
from jampi_dsl.executors.blockgen import generate

R, K, C = 600, 40, 500  # 600x500 on local[4]: a 2x2 grid of blocks


def _inputs(js, dtype):
    """A factory of the product P (a fresh lazy value each time: a value a live variable stands
    for is kept on the driver once computed, and later expressions would start from there)."""
    a = generate("normal", (R, K), dtype, seed=1)
    b = generate("normal", (K, C), dtype, seed=2)
    A, B = js.matrix(a), js.matrix(b)

    def product():
        return A @ B

    p = product().to_numpy()  # the reference below: the product's own rounding is not under test
    np.testing.assert_allclose(p, a @ b, rtol=1e-4 if dtype == "float32" else 1e-12, atol=1e-4)
    return product, p


def _cases(P, p, js):
    """(lazy expression, NumPy result) pairs over a product P() (= p in NumPy)."""
    row, col = p[:1, :], p[:, :1]
    with np.errstate(all="ignore"):
        yield P() ** 2, p ** 2
        yield abs(P()) ** 0.5, np.abs(p) ** 0.5
        yield P().tanh(), np.tanh(p)
        yield P().sign() * 3.0, np.sign(p) * 3.0
        yield P() > 0.5, (p > 0.5).astype(p.dtype)
        yield P() <= 0.0, (p <= 0.0).astype(p.dtype)
        yield js.maximum(P(), 0.0), np.maximum(p, 0.0)
        yield js.minimum(P(), P() * 0.5), np.minimum(p, p * 0.5)
        yield js.where(P() > 0, P(), -1.0), np.where(p > 0, p, -1.0)
        yield P() - P().mean(axis=0), p - p.mean(axis=0, keepdims=True)
        yield P() / P().sum(axis=1), p / p.sum(axis=1, keepdims=True)
        yield P() * js.matrix(row), p * row
        yield js.matrix(col) - P(), col - p
        yield js.matrix(col) + js.matrix(row), col + row
        for kind in ("sum", "mean", "max", "min", "argmax", "argmin"):
            for axis in (0, 1):
                expected = getattr(np, kind)(p, axis=axis, keepdims=True)
                yield getattr(P(), kind)(axis=axis), expected.astype(np.float64) if kind.startswith("arg") else expected
        yield P().max(), float(p.max())
        yield P().min(), float(p.min())
        yield P().mean(), float(p.mean())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_local(dtype):
    js = jampi_dsl.session(executor="local")
    P, p = _inputs(js, dtype)
    for lazy, expected in _cases(P, p, js):
        _check(lazy, expected, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distributed(spark, dtype):
    js = jampi_dsl.session(executor="cannon")
    P, p = _inputs(js, dtype)
    steps = js.plan([jampi_dsl.api.ir.Result((P() ** 2).node)]).steps
    assert {s.method for s in steps if s.node.op == "binary"} == {"spark"}, "expected distributed elementwise"
    for lazy, expected in _cases(P, p, js):
        _check(lazy, expected, dtype)


def _check(lazy, expected, dtype):
    got = lazy.to_numpy() if isinstance(lazy, jampi_dsl.Matrix) else float(lazy)
    if isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-5 if dtype == "float32" else 1e-12)
        return
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.dtype, expected.dtype)
    # float32: blockwise sums accumulate in float64, NumPy in float32 pairwise: both round, differently
    np.testing.assert_allclose(got, expected, rtol=2e-4 if dtype == "float32" else 1e-12,
                               atol=1e-3 if dtype == "float32" else 1e-6)


def test_broadcast_shape_errors_at_build_time():
    js = jampi_dsl.session(executor="local")
    X, Y = js.ones(3, 4), js.ones(4, 3)
    with pytest.raises(ShapeError, match="got 3x4 and 4x3"):
        X + Y
    with pytest.raises(ShapeError, match="that broadcast"):
        X * js.ones(1, 3)
    with pytest.raises(ShapeError, match="needs axis"):
        X.argmax(axis=None)


def test_every_declared_operation_has_a_kernel_that_matches_numpy():
    """The ops table is the one source: each entry's kernel agrees with NumPy on scalars."""
    for op in ops.ELEMENTWISE.values():
        args = [0.75, -2.0, 3.0][: op.arity]
        result = op.apply(*args)
        assert isinstance(result, float)
        with np.errstate(all="ignore"):
            direct = op.kernel(*(np.float64(a) for a in args))
        assert result == pytest.approx(float(direct), nan_ok=True)
