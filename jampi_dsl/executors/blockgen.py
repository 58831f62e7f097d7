"""Generators defined blockwise, so any executor can make any region of them.

``random(r, c, seed=s)`` is defined as a grid of GEN_BLOCK × GEN_BLOCK tiles;
tile (i, j) is drawn from its own generator seeded with ``(s, i, j)``. The local
executor, a Spark task making one block of a distributed matrix, and a Cannon
task making its own operand block all call :func:`generate_region`, so the
matrix is bit-identical wherever it is made and never has to pass through the
driver.
"""

from __future__ import annotations

import numpy as np

GEN_BLOCK = 512  # part of the definition of random/randn: changing it changes every matrix
# Distinguishes uniform from normal streams so random(seed=s) and randn(seed=s) are unrelated.
_KIND_TAG = {"uniform": 0, "normal": 1}

GENERATOR_KINDS = ("uniform", "normal", "zeros", "ones", "eye")


def _tile(kind: str, seed: int, ti: int, tj: int, rows: int, cols: int, dtype: np.dtype) -> np.ndarray:
    rng = np.random.default_rng([int(seed), _KIND_TAG[kind], ti, tj])
    if kind == "uniform":
        return rng.random((rows, cols), dtype=dtype)
    return rng.standard_normal((rows, cols), dtype=dtype)


def generate_region(
    kind: str,
    shape: tuple[int, int],
    dtype: str | np.dtype,
    rows: tuple[int, int],
    cols: tuple[int, int],
    *,
    seed: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Rows ``rows[0]:rows[1]`` and columns ``cols[0]:cols[1]`` of a generated matrix.

    Parts of the region outside ``shape`` are zero, which is exactly the padding
    a block grid needs at its ragged edge. ``out`` (C-contiguous, right shape and
    dtype) avoids an allocation when the caller has a buffer.
    """
    dtype = np.dtype(dtype)
    r0, r1 = rows
    c0, c1 = cols
    if out is None:
        out = np.empty((r1 - r0, c1 - c0), dtype=dtype)
    elif out.shape != (r1 - r0, c1 - c0) or out.dtype != dtype:
        raise ValueError(f"out has shape {out.shape} {out.dtype}, expected {(r1 - r0, c1 - c0)} {dtype}")
    nr, nc = shape
    vr1, vc1 = min(r1, nr), min(c1, nc)  # the valid (unpadded) part of the region
    if kind in _KIND_TAG and vr1 > r0 and vc1 > c0:
        # The tiles below overwrite the valid part: zero only the padding (a pass less).
        out[max(0, vr1 - r0) :, :] = 0
        out[:, max(0, vc1 - c0) :] = 0
    else:
        out.fill(0)
    if vr1 <= r0 or vc1 <= c0:
        return out
    if kind == "zeros":
        return out
    if kind == "ones":
        out[: vr1 - r0, : vc1 - c0] = 1
        return out
    if kind == "eye":
        lo, hi = max(r0, c0), min(vr1, vc1)
        if lo < hi:
            idx = np.arange(lo, hi)
            out[idx - r0, idx - c0] = 1
        return out
    if kind not in _KIND_TAG:
        raise ValueError(f"unknown generator {kind!r}")
    for ti in range(r0 // GEN_BLOCK, (vr1 - 1) // GEN_BLOCK + 1):
        tr0 = ti * GEN_BLOCK
        trows = min(GEN_BLOCK, nr - tr0)
        for tj in range(c0 // GEN_BLOCK, (vc1 - 1) // GEN_BLOCK + 1):
            tc0 = tj * GEN_BLOCK
            tcols = min(GEN_BLOCK, nc - tc0)
            tile = _tile(kind, seed, ti, tj, trows, tcols, dtype)
            # Intersection of the tile with the requested region, in global coordinates.
            gr0, gr1 = max(r0, tr0), min(vr1, tr0 + trows)
            gc0, gc1 = max(c0, tc0), min(vc1, tc0 + tcols)
            out[gr0 - r0 : gr1 - r0, gc0 - c0 : gc1 - c0] = tile[gr0 - tr0 : gr1 - tr0, gc0 - tc0 : gc1 - tc0]
    return out


def generate(kind: str, shape: tuple[int, int], dtype: str | np.dtype, *, seed: int = 0) -> np.ndarray:
    """The whole generated matrix (what the local executor uses)."""
    return generate_region(kind, shape, dtype, (0, shape[0]), (0, shape[1]), seed=seed)
