"""QR and SVD of a distributed matrix.

``qr`` and the thin ``svd`` of a tall matrix use TSQR: every panel of rows is
factored by its task, the stacked small R factors once more on the driver,
and each task turns its panel's Q into its rows of the result (Q, or U = Q @
U_R). Only n×n pieces travel. ``svd(A, k=)`` is the randomized range finder of
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


def tsqr(a: DistMatrix, dtype: np.dtype, right: np.ndarray | None = None) -> tuple[DistMatrix, np.ndarray]:
    """(Q @ right, R) of a panel matrix ``a`` (Q itself when ``right`` is None)."""
    import scipy.linalg

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
    _, r = tsqr(p, dtype)
    u_r, s, vt = scipy.linalg.svd(r, full_matrices=False, check_finite=False, lapack_driver="gesdd")
    k = s.size if k is None else k
    u, _ = tsqr(p, dtype, right=u_r[:, :k])
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
    for _ in range(sketch.iters):
        q, _ = tsqr(y.persist(), dtype)
        z, _ = scipy.linalg.qr(_transposed_times(p, q, dtype), mode="economic", check_finite=False)
        y = _times(p, z.astype(dtype), dtype)
    q, _ = tsqr(y.persist(), dtype)
    b = _transposed_times(p, q, dtype).T  # Q.T @ A: width x n
    u_b, s, vt = scipy.linalg.svd(b, full_matrices=False, check_finite=False, lapack_driver="gesdd")
    u = _times(q.persist(), u_b[:, :k].astype(dtype), dtype)
    return u, s[:k, None].astype(dtype), np.ascontiguousarray(vt[:k], dtype=dtype)
