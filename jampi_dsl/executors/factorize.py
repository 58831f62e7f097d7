"""QR and SVD of a distributed matrix.

``qr`` and the thin ``svd`` of a tall matrix factor A by CholeskyQR2 while A is
well conditioned, else by TSQR. CholeskyQR2 (Fukaya, Nakatsukasa, Yanagisawa and
Yamamoto, 2014) is three passes of matrix products over A's panels: the Gram
matrix AᵀA summed from the panels and its Cholesky factor R1 on the driver, the
Gram matrix of A R1⁻¹ and its factor R2, then Q = A (R2 R1)⁻¹ made by the tasks;
R = R2 R1. Its Q is orthogonal to rounding for cond(A) up to about 1e8, and the
driver takes it only below CHOLQR_MAX_COND (checked on R1, whose condition is
A's). Householder QR of a 50-column panel runs at level-2 BLAS speed; these
passes are matrix products, about five times faster here. In TSQR every panel
of rows is factored by its task, the stacked small R factors once more on the
driver, and each task turns its panel's Q into its rows of the result (Q, or
U = Q @ U_R). Either way only n×n pieces travel. ``svd(A, k=)`` is the randomized range finder of
Halko, Martinsson and Tropp: a few passes over A's panels with an n×l sketch
(l = k + oversample), power iterations re-orthonormalised by TSQR, and the
small l×n problem solved on the driver.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..planner.linalg import Sketch
from . import factortasks as ft
from .distributed import DistMatrix, zip_block_rdds
from .holdings import hold


def panels(a: DistMatrix) -> DistMatrix:
    """``a`` as row panels (every column in one block), cached for the passes that read it."""
    rows = a.block[0] if a.block[1] >= a.shape[1] else max(a.block[0], a.shape[1])
    return a.rechunk((min(rows, a.shape[0]), a.shape[1])).persist()


CHOLQR_MAX_COND = 1e5  # CholeskyQR2's orthogonality holds to ~1e8; a margin for the inverse R formed


def _self_gram(a: DistMatrix, right: np.ndarray | None = None) -> np.ndarray:
    shipped = None if right is None else hold(a.rdd.ctx.broadcast(right))
    return np.sum(a.rdd.mapPartitions(partial(ft.panel_self_gram, shipped)).collect(), axis=0)


def cholesky_factors(a: DistMatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """CholeskyQR2's R, R1⁻¹ and R2⁻¹ (float64) of a panel matrix, from two passes over A; None
    when A is too ill-conditioned for it (its Gram matrix not positive definite to rounding,
    or cond(R1) over CHOLQR_MAX_COND). Q = (A R1⁻¹) R2⁻¹ is then the tasks' third pass."""
    import scipy.linalg

    eye = np.eye(a.shape[1])
    try:
        r1 = scipy.linalg.cholesky(_self_gram(a), lower=False, check_finite=False)
        if not np.all(np.isfinite(r1)) or np.linalg.cond(r1) > CHOLQR_MAX_COND:
            return None
        r1_inv = scipy.linalg.solve_triangular(r1, eye, check_finite=False)
        r2 = scipy.linalg.cholesky(_self_gram(a, r1_inv), lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    return r2 @ r1, r1_inv, scipy.linalg.solve_triangular(r2, eye, check_finite=False)


def _cholesky_q(a: DistMatrix, dtype: np.dtype, factors, right: np.ndarray | None) -> DistMatrix:
    """Q (or Q @ right) from cholesky_factors, made by the tasks."""
    _, r1_inv, r2_inv = factors
    rest = r2_inv if right is None else r2_inv @ right
    shipped = hold(a.rdd.ctx.broadcast((r1_inv, rest)))
    q = a.rdd.mapPartitions(partial(ft.panel_cholesky_q, dtype, shipped), preservesPartitioning=True)
    return DistMatrix(q, (a.shape[0], rest.shape[1]), (a.block[0], rest.shape[1]), dtype)


def tsqr(a: DistMatrix, dtype: np.dtype, right: np.ndarray | None = None,
         try_cholesky: bool = True) -> tuple[DistMatrix, np.ndarray]:
    """(Q @ right, R) of a panel matrix ``a`` (Q itself when ``right`` is None): CholeskyQR2
    when A is well conditioned (``try_cholesky``), else Householder TSQR."""
    import scipy.linalg

    fast = cholesky_factors(a) if try_cholesky else None
    if fast is not None:
        return _cholesky_q(a, dtype, fast, right), fast[0].astype(dtype)

    factors = sorted(a.rdd.mapPartitions(partial(ft.panel_r, dtype)).collect(), key=lambda p: p[0])
    stacked = np.vstack([r for _, r in factors])
    q2, r = scipy.linalg.qr(stacked, mode="economic", check_finite=False)
    pieces, start = {}, 0
    for index, part in factors:
        piece = q2[start:start + part.shape[0]]
        pieces[index] = piece @ right if right is not None else piece
        start += part.shape[0]
    cols = r.shape[1] if right is None else right.shape[1]
    shipped = hold(a.rdd.ctx.broadcast(pieces))
    q = a.rdd.mapPartitions(partial(ft.panel_q, dtype, shipped), preservesPartitioning=True)
    return DistMatrix(q, (a.shape[0], cols), (a.block[0], cols), dtype), r.astype(dtype, copy=False)


def qr(a: DistMatrix, dtype: np.dtype) -> tuple[DistMatrix, np.ndarray]:
    return tsqr(panels(a), dtype)


def thin_svd(a: DistMatrix, dtype: np.dtype, k: int | None) -> tuple[DistMatrix, np.ndarray, np.ndarray]:
    """Thin SVD of a tall matrix from its R factor: U = Q @ U_R, computed by the tasks."""
    import scipy.linalg

    p = panels(a)
    fast = cholesky_factors(p)
    r = fast[0] if fast is not None else tsqr(p, dtype, try_cholesky=False)[1]
    u_r, s, vt = scipy.linalg.svd(r, full_matrices=False, check_finite=False, lapack_driver="gesdd")
    k = s.size if k is None else k
    if fast is not None:  # U = Q U_R in one pass, R not factored again
        u = _cholesky_q(p, dtype, fast, u_r[:, :k])
    else:
        u, _ = tsqr(p, dtype, right=u_r[:, :k], try_cholesky=False)
    return u, s[:k, None].astype(dtype), np.ascontiguousarray(vt[:k], dtype=dtype)


def _times(p: DistMatrix, z: np.ndarray, dtype: np.dtype) -> DistMatrix:
    """A @ z for a panel matrix and a small driver matrix (shipped once)."""
    shipped = hold(p.rdd.ctx.broadcast(z))
    out = p.rdd.mapPartitions(partial(ft.panel_times, dtype, shipped), preservesPartitioning=True)
    return DistMatrix(out, (p.shape[0], z.shape[1]), (p.block[0], z.shape[1]), dtype)


def _transposed_times(p: DistMatrix, q: DistMatrix, dtype: np.dtype) -> np.ndarray:
    """A.T @ Q, summed on the driver from every panel's a_i.T @ q_i (small: n x l)."""
    parts = zip_block_rdds(p.rdd, q.rdd).mapPartitions(partial(ft.panel_gram, dtype)).collect()
    return np.sum(parts, axis=0)


def randomized_svd(a: DistMatrix, dtype: np.dtype, k: int, sketch: Sketch):
    """The driver's randomized_svd (planner.linalg) with A's products done by the tasks: the
    same test matrix from the same seed, so the two agree to rounding."""
    import scipy.linalg

    p = panels(a)
    m, n = a.shape
    width = min(n, m, k + sketch.oversample)
    z = np.random.default_rng(sketch.seed).standard_normal((n, width)).astype(dtype)
    y = _times(p, z, dtype)
    # The power iterations' Y is ill-conditioned by design: straight to Householder TSQR.
    for _ in range(sketch.iters):
        q, _ = tsqr(y.persist(), dtype, try_cholesky=False)
        z, _ = scipy.linalg.qr(_transposed_times(p, q, dtype), mode="economic", check_finite=False)
        y = _times(p, z.astype(dtype), dtype)
    q, _ = tsqr(y.persist(), dtype, try_cholesky=False)
    b = _transposed_times(p, q, dtype).T  # Q.T @ A: width x n
    u_b, s, vt = scipy.linalg.svd(b, full_matrices=False, check_finite=False, lapack_driver="gesdd")
    u = _times(q.persist(), u_b[:, :k].astype(dtype), dtype)
    return u, s[:k, None].astype(dtype), np.ascontiguousarray(vt[:k], dtype=dtype)
