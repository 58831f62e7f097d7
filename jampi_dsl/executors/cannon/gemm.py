"""The local block product: ``C += op(A) @ op(B)`` in place, through the BLAS NumPy ships.

NumPy has no "accumulate into C" product, and ``C += A @ B`` needs a temporary
block (memory and a pass over it) every round. BLAS GEMM does it in place with
beta = 1, so this module calls ``cblas_?gemm`` of the very library NumPy is
linked against (found through threadpoolctl, called with ctypes, which releases
the GIL) — no SciPy. Transposed operands are passed as BLAS flags on the
stored arrays, never copied. Where no usable CBLAS symbol is found it falls back
to NumPy, accumulating through a small row-panel buffer.
"""

from __future__ import annotations

import ctypes

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
# (symbol prefix, suffix, integer type) variants seen in NumPy/SciPy OpenBLAS builds and system CBLAS
_VARIANTS = (
    ("scipy_cblas_", "64_", ctypes.c_int64),
    ("cblas_", "64_", ctypes.c_int64),
    ("scipy_cblas_", "", ctypes.c_int32),
    ("cblas_", "", ctypes.c_int32),
)
_cblas: dict | None = None


def _bind(lib, prefix: str, suffix: str, itype) -> dict | None:
    fns = {}
    for dtype, letter, real in (
        (np.dtype(np.float64), "d", ctypes.c_double),
        (np.dtype(np.float32), "s", ctypes.c_float),
    ):
        fn = getattr(lib, f"{prefix}{letter}gemm{suffix}", None)
        if fn is None:
            return None
        fn.restype = None
        fn.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            itype,
            itype,
            itype,
            real,
            ctypes.c_void_p,
            itype,
            ctypes.c_void_p,
            itype,
            real,
            ctypes.c_void_p,
            itype,
        ]
        fns[dtype] = fn
    return fns


def _self_test(fns: dict) -> bool:
    rng = np.random.default_rng(0)
    for dtype in fns:
        a = rng.standard_normal((5, 3)).astype(dtype)
        b = rng.standard_normal((7, 5)).astype(dtype)
        c = np.ones((3, 7), dtype)
        _call(fns, a, True, b, True, c, 1.0)
        if not np.allclose(c, 1 + a.T @ b.T, rtol=1e-4, atol=1e-4):
            return False
    return True


def _load() -> dict:
    global _cblas
    if _cblas is not None:
        return _cblas
    found: dict = {}
    try:
        from threadpoolctl import threadpool_info

        paths = [i["filepath"] for i in threadpool_info() if i.get("user_api") == "blas"]
        for path in paths:
            lib = ctypes.CDLL(path)
            for variant in _VARIANTS:
                fns = _bind(lib, *variant)
                if fns and _self_test(fns):
                    found = fns
                    break
            if found:
                break
    except Exception:  # noqa: BLE001 - any trouble: use the NumPy fallback
        found = {}
    _cblas = found
    return found


def _call(fns: dict, a, trans_a: bool, b, trans_b: bool, c, beta: float) -> None:
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    fns[c.dtype](
        _ROW_MAJOR,
        _TRANS if trans_a else _NO_TRANS,
        _TRANS if trans_b else _NO_TRANS,
        m,
        n,
        k,
        1.0,
        a.ctypes.data,
        max(1, a.shape[1]),
        b.ctypes.data,
        max(1, b.shape[1]),
        beta,
        c.ctypes.data,
        max(1, n),
    )


def has_inplace_gemm() -> bool:
    return bool(_load())


def gemm_into(
    a: np.ndarray, trans_a: bool, b: np.ndarray, trans_b: bool, c: np.ndarray, *, accumulate: bool
) -> None:
    """``c = op(a) @ op(b)``, or ``c += op(a) @ op(b)`` when ``accumulate``; op(x) = x.T when asked.

    ``a``, ``b`` and ``c`` are C-contiguous; ``c`` is written in place.
    """
    la_shape = a.shape[::-1] if trans_a else a.shape
    lb_shape = b.shape[::-1] if trans_b else b.shape
    if la_shape[1] != lb_shape[0] or c.shape != (la_shape[0], lb_shape[1]):
        raise ValueError(f"gemm shapes {la_shape} @ {lb_shape} -> {c.shape}")
    fns = _load()
    if (
        fns
        and c.dtype in fns
        and a.dtype == b.dtype == c.dtype
        and a.flags.c_contiguous
        and b.flags.c_contiguous
        and c.flags.c_contiguous
        and c.flags.writeable
        and c.size
    ):
        if la_shape[1] == 0:
            if not accumulate:
                c.fill(0)
            return
        _call(fns, a, trans_a, b, trans_b, c, 1.0 if accumulate else 0.0)
        return
    la = a.T if trans_a else a
    lb = b.T if trans_b else b
    if not accumulate:
        np.matmul(la, lb, out=c)
        return
    rows = max(1, min(c.shape[0], (8 << 20) // max(1, c.shape[1] * c.itemsize)))
    tmp = np.empty((rows, c.shape[1]), c.dtype)
    for r0 in range(0, c.shape[0], rows):
        part = tmp[: min(rows, c.shape[0] - r0)]
        np.matmul(la[r0 : r0 + rows], lb, out=part)
        c[r0 : r0 + part.shape[0]] += part
