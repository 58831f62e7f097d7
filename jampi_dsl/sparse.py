"""Kernels on sparse values (SciPy CSR arrays), beside the NumPy ones of :mod:`.ops`.

The planner decides each result's storage before the run (:mod:`.planner.sparsity`);
these kernels compute it without densifying a sparse operand whose result is
sparse, and :func:`conform` hands back exactly the storage and dtype the plan
promised. NumPy and SciPy only: Spark tasks may import this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from . import ops

SPARSE_GEN_ROWS = 4096  # random(..., density=) is made in bands of this many rows (part of its definition)
_SPARSE_TAG = {"uniform": 2, "normal": 3}  # unrelated to the dense random/randn streams


def is_sparse(x: Any) -> bool:
    return sp.issparse(x)


def dense(x: Any) -> Any:
    return x.toarray() if sp.issparse(x) else x


def conform(x: Any, storage: str, dtype: str) -> Any:
    """``x`` in the storage and dtype the plan gave its node (a SciPy result may be COO or CSC,
    and a mixed product may come back as either storage)."""
    if storage == "sparse":
        out = x.tocsr() if sp.issparse(x) else sp.csr_array(np.asarray(x))
        if out.dtype != np.dtype(dtype):
            out = out.astype(dtype)
        out = out if isinstance(out, sp.sparray) else sp.csr_array(out)
        out.eliminate_zeros()  # `S * 0` stores nothing: what is stored is what nnz() counts and saves write
        return out
    out = x.toarray() if sp.issparse(x) else np.asarray(x)
    return out.astype(dtype, copy=False)


def matmul(a: Any, b: Any) -> Any:
    """a @ b with either operand sparse (SciPy picks the kernel; a dense result is an ndarray)."""
    out = a @ b
    return out.toarray() if sp.issparse(out) and not (sp.issparse(a) and sp.issparse(b)) else out


def elementwise(name: str, args: list[Any], sparse_result: bool) -> Any:
    """An elementwise operation of :mod:`.ops` over operands of which some may be sparse."""
    if not any(sp.issparse(a) for a in args):
        return ops.apply(name, *args)
    if not sparse_result:
        return ops.apply(name, *[dense(a) for a in args])
    sparse_args = [a for a in args if sp.issparse(a)]
    if name == "*":
        first = next(i for i, a in enumerate(args) if sp.issparse(a))
        out = args[first]
        for i, other in enumerate(args):  # by position: S * S has one object twice
            if i != first:
                out = out * other if isinstance(other, float | int) else out.multiply(other)
        return out
    if len(sparse_args) == 2:
        a, b = args
        if name == "+":
            return a + b
        if name == "-":
            return a - b
        return a.maximum(b) if name == "maximum" else a.minimum(b)
    # One sparse operand, the others scalars, and the operation maps 0 to 0: apply it to the
    # stored entries only.
    (x,) = sparse_args
    out = x.tocsr(copy=True)
    out.data = ops.apply(name, *[out.data if a is x else a for a in args])
    out.eliminate_zeros()
    return out


def reduce(operator: str, axis: int | None, x: Any) -> Any:
    """A reduction of a sparse matrix: a Python float, or a dense 1xc / rx1 matrix."""
    if operator == "nnz":
        return float(x.count_nonzero())
    if axis is None:
        if operator == "trace":
            return float(x.trace())
        if operator == "norm":
            return float(np.sqrt((abs(x.data) ** 2).sum()))
        if operator == "mean":
            return float(x.sum()) / (x.shape[0] * x.shape[1])
        return float(getattr(x, operator)())
    out = getattr(x, operator)(axis=axis)
    out = dense(out) if sp.issparse(out) else np.asarray(out)
    out = out.reshape((1, -1) if axis == 0 else (-1, 1))
    return out.astype(np.float64) if operator.startswith("arg") else out.astype(x.dtype, copy=False)


def update(x: Any, rows: slice, cols: slice, y: Any, dtype: str) -> Any:
    """A copy of sparse ``x`` with a region replaced (through LIL, which SciPy assigns into cheaply)."""
    out = x.tolil(copy=True).astype(dtype)
    out[rows, cols] = dense(y) if sp.issparse(y) else y
    return out.tocsr()


def concat(parts: list[Any], axis: int, sparse_result: bool, dtype: str) -> Any:
    if sparse_result:
        stack = sp.hstack if axis == 1 else sp.vstack
        return stack(parts, format="csr", dtype=dtype)
    return np.concatenate([np.asarray(dense(p), dtype=dtype) for p in parts], axis=axis)


def random_band(kind: str, shape: tuple[int, int], dtype: str, density: float, seed: int, band: int) -> Any:
    """Rows ``band * SPARSE_GEN_ROWS`` on of ``random(r, c, density=d, seed=s)``: the band's own
    generator places round(d * rows * cols) non-zeros uniformly, so any executor makes the same band."""
    r0 = band * SPARSE_GEN_ROWS
    rows = min(SPARSE_GEN_ROWS, shape[0] - r0)
    rng = np.random.default_rng([int(seed), _SPARSE_TAG[kind], band])
    sampler = (lambda size: rng.random(size, dtype=dtype)) if kind == "uniform" else \
        (lambda size: rng.standard_normal(size, dtype=dtype))
    out = sp.random_array((rows, shape[1]), density=density, format="csr", dtype=dtype, rng=rng,
                          data_sampler=sampler)
    out.sort_indices()
    return out


def random(kind: str, shape: tuple[int, int], dtype: str, density: float, seed: int) -> Any:
    bands = [random_band(kind, shape, dtype, density, seed, b)
             for b in range(-(-shape[0] // SPARSE_GEN_ROWS))]
    return bands[0] if len(bands) == 1 else sp.vstack(bands, format="csr")


def describe(x: Any, limit: int = 6) -> str:
    """What ``print`` shows of a sparse matrix: its first stored entries."""
    coo = x.tocoo()
    order = np.lexsort((coo.col, coo.row))[:limit]
    items = ", ".join(f"({int(coo.row[k])}, {int(coo.col[k])}) {float(coo.data[k]):.6g}" for k in order)
    more = ", ..." if x.nnz > limit else ""
    return f"[{items}{more}]"
