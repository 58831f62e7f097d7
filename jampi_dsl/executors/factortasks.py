"""Task-side kernels of :mod:`.factorize`: each runs over the row panels of one
partition, ``(key, block)`` pairs with every column in the block."""

from __future__ import annotations

import numpy as np


def panel_r(dtype, blocks):
    """TSQR's first pass: this panel's R factor, by row-panel index."""
    for key, block in blocks:
        yield key[0], np.linalg.qr(np.asarray(block, dtype=dtype), mode="r")


def panel_q(dtype, pieces, blocks):
    """TSQR's second pass: this panel's rows of Q (times what the driver shipped per panel).
    The panel is factored again (the same Householder steps as the first pass)."""
    shipped = pieces.value
    for key, block in blocks:
        q = np.linalg.qr(np.asarray(block, dtype=dtype), mode="reduced")[0]
        yield key, np.ascontiguousarray(q @ shipped[key[0]], dtype=dtype)


def panel_times(dtype, matrix, blocks):
    right = matrix.value
    for key, block in blocks:
        yield key, np.ascontiguousarray(np.asarray(block, dtype=dtype) @ right, dtype=dtype)


def panel_gram(dtype, pairs):
    """a_i.T @ q_i of zipped panels, summed within the partition."""
    total = None
    for (ka, a), (kq, q) in pairs:
        if ka[0] != kq[0]:
            raise RuntimeError(f"panels {ka} and {kq} are not on the same row grid")
        part = np.asarray(a, dtype=dtype).T @ np.asarray(q, dtype=dtype)
        total = part if total is None else total + part
    if total is not None:
        yield total


def panel_self_gram(right, blocks):
    """CholeskyQR's pass: (a_i @ right).T @ (a_i @ right) of this partition's panels, summed, in
    float64 whatever A's dtype (``right``: None, or a broadcast n x n matrix)."""
    shipped = None if right is None else right.value
    total = None
    for _, block in blocks:
        a = np.asarray(block, dtype=np.float64)
        if shipped is not None:
            a = a @ shipped
        part = a.T @ a  # NumPy runs a.T @ a as one symmetric rank-k update
        total = part if total is None else total + part
    if total is not None:
        yield total


def panel_cholesky_q(dtype, factors, blocks):
    """CholeskyQR2's third pass: this panel's rows of Q = (A R1⁻¹) R2⁻¹ (times what follows R2⁻¹),
    in float64, in that order: R2 corrects the rounding of A R1⁻¹, which R1's condition sets."""
    r1_inv, rest = factors.value
    for key, block in blocks:
        q = (np.asarray(block, dtype=np.float64) @ r1_inv) @ rest
        yield key, np.ascontiguousarray(q, dtype=dtype)
