"""Linear algebra on the driver: each function declared once, with its shape rule, its
cost and its LAPACK kernel (SciPy), read by the IR, the builder, the executors and the API.

A factorisation with several results (``Q, R = qr(A)``) is one node per result
(``part``); the executor computes the factorisation once per run and hands each
part out. None of these has a distributed kernel yet: the planner runs them on
the driver, within its memory budget, and says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinalgFunction:
    name: str
    inputs: int  # matrices it takes: 1 (A) or 2 (A, B)
    parts: tuple[str, ...]  # the names of its results, in order (one for most)
    # (input shapes, k) -> the shape of each result, or a message saying what is wrong
    shapes: Callable[[list[tuple[int, int]], int | None], list[tuple[int, int]] | str]
    kernel: Callable[..., tuple[np.ndarray, ...]]
    flops: Callable[[list[tuple[int, int]]], float]
    takes_k: bool = False


def _square(what: str):
    def check(shapes, k):
        (n, m), = shapes[:1]
        return None if n == m else f"{what} needs a square matrix, got {n}x{m}"
    return check


def _diag_shapes(shapes, k):
    (r, c), = shapes
    if r == 1 or c == 1:
        n = max(r, c)
        return [(n, n)]
    if r != c:
        return f"diag() takes an n x 1 or 1 x n vector, or a square matrix; got {r}x{c}"
    return [(r, 1)]


def _solve_shapes(shapes, k):
    (n, m), (rows, cols) = shapes
    if n != m:
        return f"solve() needs a square A, got {n}x{m}"
    if rows != n:
        return f"solve(A, B) needs B with {n} rows (as A), got {rows}x{cols}"
    return [(n, cols)]


def _lstsq_shapes(shapes, k):
    (m, n), (rows, cols) = shapes
    if m < n:
        return f"lstsq() needs a tall A (rows >= columns), got {m}x{n}"
    if rows != m:
        return f"lstsq(A, B) needs B with {m} rows (as A), got {rows}x{cols}"
    return [(n, cols)]


def _square_result(what: str):
    def shapes(shapes, k):
        error = _square(what)(shapes, k)
        return error if error else [shapes[0]]
    return shapes


def _qr_shapes(shapes, k):
    (m, n), = shapes
    if m < n:
        return f"qr() needs a tall A (rows >= columns), got {m}x{n}"
    return [(m, n), (n, n)]


def _svd_shapes(shapes, k):
    (m, n), = shapes
    full = min(m, n)
    if k is not None and not 1 <= k <= full:
        return f"svd(A, k={k}) needs 1 <= k <= {full} (the smaller side of a {m}x{n} A)"
    k = full if k is None else k
    return [(m, k), (k, 1), (k, n)]


def _eigh_shapes(shapes, k):
    error = _square("eigh()")(shapes, k)
    if error:
        return error
    n = shapes[0][0]
    return [(n, 1), (n, n)]


def _lapack():
    import scipy.linalg

    return scipy.linalg


def _diag(x):
    return (np.diag(x.ravel()) if 1 in x.shape else np.diag(x)[:, None].copy(),)


def _solve(a, b):
    return (_lapack().solve(a, b, check_finite=False),)


def _lstsq(a, b):
    # gelsd: the minimum-norm answer for a rank-deficient A, as numpy.linalg.lstsq gives
    return (_lapack().lstsq(a, b, lapack_driver="gelsd", check_finite=False)[0].astype(a.dtype, copy=False),)


def _inv(a):
    return (_lapack().inv(a, check_finite=False),)


def _cholesky(a):
    return (_lapack().cholesky(a, lower=True, check_finite=False),)


def _qr(a):
    q, r = _lapack().qr(a, mode="economic", check_finite=False)
    return q, r


@dataclass(frozen=True)
class Sketch:
    """How ``svd(A, k=)`` sketches A when it is randomized (Halko, Martinsson and Tropp): an
    n x (k + oversample) Gaussian test matrix drawn from ``seed``, then ``iters`` power
    iterations, each re-orthonormalised by QR."""

    oversample: int = 10
    iters: int = 4
    seed: int = 0


def randomized_svd(a: np.ndarray, k: int, sketch: Sketch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    qr = _lapack().qr
    m, n = a.shape
    width = min(m, n, k + sketch.oversample)
    y = a @ np.random.default_rng(sketch.seed).standard_normal((n, width)).astype(a.dtype)
    for _ in range(sketch.iters):
        q, _ = qr(y, mode="economic", check_finite=False)
        z, _ = qr(a.T @ q, mode="economic", check_finite=False)
        y = a @ z
    q, _ = qr(y, mode="economic", check_finite=False)
    u_b, s, vt = _lapack().svd(q.T @ a, full_matrices=False, check_finite=False, lapack_driver="gesdd")
    u = q @ u_b[:, :k]
    return np.ascontiguousarray(u), s[:k, None].astype(a.dtype, copy=False), np.ascontiguousarray(vt[:k])


def _svd(a, k=None, sketch=None):
    if svd_is_randomized(a.shape, k):
        return randomized_svd(a, k, sketch or Sketch())
    u, s, vt = _lapack().svd(a, full_matrices=False, check_finite=False, lapack_driver="gesdd")
    k = s.size if k is None else k
    return np.ascontiguousarray(u[:, :k]), s[:k, None].astype(a.dtype, copy=False), np.ascontiguousarray(vt[:k])


def _eigh(a):
    w, v = _lapack().eigh(a, check_finite=False)
    return w[:, None].astype(a.dtype, copy=False), v


def _cube(shapes):
    m, n = shapes[0]
    return 2.0 * m * n * min(m, n)


FUNCTIONS: dict[str, LinalgFunction] = {f.name: f for f in (
    LinalgFunction("diag", 1, ("D",), _diag_shapes, _diag, lambda s: float(s[0][0] * s[0][1])),
    LinalgFunction("solve", 2, ("X",), _solve_shapes, _solve,
                   lambda s: 2 / 3 * s[0][0] ** 3 + 2.0 * s[0][0] ** 2 * s[1][1]),
    LinalgFunction("lstsq", 2, ("X",), _lstsq_shapes, _lstsq, lambda s: 4.0 * s[0][0] * s[0][1] ** 2),
    LinalgFunction("inv", 1, ("Ainv",), _square_result("inv()"), _inv, lambda s: 2.0 * s[0][0] ** 3),
    LinalgFunction("cholesky", 1, ("L",), _square_result("cholesky()"), _cholesky, lambda s: s[0][0] ** 3 / 3),
    LinalgFunction("qr", 1, ("Q", "R"), _qr_shapes, _qr, lambda s: 4.0 * s[0][0] * s[0][1] ** 2),
    LinalgFunction("svd", 1, ("U", "s", "Vt"), _svd_shapes, _svd, lambda s: 6.0 * _cube(s), takes_k=True),
    LinalgFunction("eigh", 1, ("w", "V"), _eigh_shapes, _eigh, lambda s: 9.0 * s[0][0] ** 3),
)}


EXACT_SVD_MAX_COLUMNS = 1000  # svd(A, k=) of a wider A is randomized


def svd_is_randomized(shape: tuple[int, int], k: int | None) -> bool:
    """``svd(A, k=)`` is exact (LAPACK; on Spark TSQR, then LAPACK on R) while A is tall and
    narrow; past that, on the driver as on Spark, the randomized range finder, which costs
    O(m n k) instead of O(m n min(m, n)) and is accurate where the spectrum decays."""
    return k is not None and k < min(shape) and (shape[1] > EXACT_SVD_MAX_COLUMNS or shape[0] < shape[1])


def compute(name: str, arrays: list[np.ndarray], k: int | None, sketch: Sketch | None = None) -> tuple[np.ndarray, ...]:
    """Every result of ``name`` over driver-side arrays (LAPACK errors propagate: singular,
    not positive definite)."""
    declared = FUNCTIONS[name]
    dtype = np.result_type(*arrays)
    arrays = [np.ascontiguousarray(a, dtype=dtype) for a in arrays]
    with warnings.catch_warnings():  # an ill-conditioned input is the user's to judge, not a warning
        warnings.simplefilter("ignore")
        out = declared.kernel(*arrays, k, sketch) if declared.takes_k else declared.kernel(*arrays)
    return tuple(np.asarray(x, dtype=dtype) for x in out)
