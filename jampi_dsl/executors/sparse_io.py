"""Sparse matrices in and out: coordinate Parquet, Matrix Market (``.mtx``) and SciPy's ``.npz``.

Coordinate Parquet is read in batches into three preallocated arrays (32-bit indices where
they fit) and turned into CSR in place when the entries come sorted by row, as jampi and
most writers store them; the whole table is never in memory as Arrow columns beside its
CSR copy. The peak is about the CSR size, plus one batch.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import InputError, Span
from .formats import check_range, indices

BATCH_ROWS = 1 << 20


def _index_dtype(shape: tuple[int, int], entries: int) -> np.dtype:
    return np.dtype(np.int32 if max(shape[0], shape[1], entries) < 2**31 else np.int64)


def read_coordinate_parquet(path: str, dtype: str, shape: tuple[int, int], span: Span | None):
    import pyarrow.parquet as pq

    try:
        dataset = pq.ParquetDataset(path)
        parts = list(dataset.files) or [path]
        entries = sum(pq.read_metadata(p).num_rows for p in parts)
        index = _index_dtype(shape, entries)
        i, j, v = np.empty(entries, index), np.empty(entries, index), np.empty(entries, dtype)
        filled = 0
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=BATCH_ROWS, columns=["i", "j", "v"]):
                n = batch.num_rows
                bi, bj = indices(batch, "i", path, span), indices(batch, "j", path, span)
                check_range(bi, shape[0], "i", path, span)
                check_range(bj, shape[1], "j", path, span)
                i[filled:filled + n], j[filled:filled + n] = bi, bj
                v[filled:filled + n] = batch.column("v").to_numpy(zero_copy_only=False)
                filled += n
    except InputError:
        raise
    except Exception as err:  # pyarrow raises several types for unreadable or mismatched parts
        raise InputError(f"cannot read {path}: {err}", span) from None
    if filled != entries:
        raise InputError(f"{path} changed while it was read", span)
    return coordinates_to_csr(i, j, v, shape, path, span)


def table_to_csr(table, shape: tuple[int, int], dtype: str, what: str, span):
    """CSR from an Arrow table in coordinate form (a DataFrame handed in through the API)."""
    i, j = indices(table, "i", what, span), indices(table, "j", what, span)
    check_range(i, shape[0], "i", what, span)
    check_range(j, shape[1], "j", what, span)
    v = table.column("v").to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    index = _index_dtype(shape, i.size)
    return coordinates_to_csr(i.astype(index), j.astype(index), v, shape, what, span)


def coordinates_to_csr(i: np.ndarray, j: np.ndarray, v: np.ndarray, shape: tuple[int, int], what: str, span):
    """CSR of the entries (i, j, v); a position given twice is an input error. Entries sorted by
    row with increasing columns become CSR without a copy; others go through SciPy's sort."""
    same_row = i[1:] == i[:-1]
    in_order = bool(np.all(i[1:] >= i[:-1])) and not np.any(same_row & (j[1:] <= j[:-1]))
    del same_row
    if in_order:
        counts = np.bincount(i, minlength=shape[0])
        indptr = np.zeros(shape[0] + 1, dtype=i.dtype)
        np.cumsum(counts, out=indptr[1:])
        out = sp.csr_array((v, j, indptr), shape=shape, copy=False)
    else:
        out = sp.csr_array((v, (i, j)), shape=shape)  # sums duplicates: fewer entries means one came twice
        if out.nnz != v.size:
            linear = np.sort(i.astype(np.int64) * shape[1] + j)
            dup = int(linear[np.flatnonzero(linear[1:] == linear[:-1])[0]])
            raise InputError(f"{what}: duplicate entry at ({dup // shape[1]}, {dup % shape[1]})", span)
    out.eliminate_zeros()
    return out


def load_mtx(path: str, dtype: str, span: Span | None):
    import scipy.io

    try:
        value = scipy.io.mmread(path)
    except (ValueError, OSError, IndexError, OverflowError) as err:
        raise InputError(f"cannot read {path}: {err}", span) from None
    if not sp.issparse(value):
        return np.asarray(value, dtype=dtype)
    coo = sp.coo_array(value)
    out = sp.csr_array(coo, dtype=dtype)
    if out.nnz != coo.nnz:  # SciPy sums a repeated entry; jampi reads it as an error, as in Parquet
        raise InputError(f"{path}: an entry appears twice", span)
    return out


def load_npz(path: str, dtype: str, span: Span | None):
    try:
        value = sp.csr_array(sp.load_npz(path), dtype=dtype)
        value.check_format(full_check=True)  # indices in range, pointers in order
    except (ValueError, OSError, KeyError, IndexError) as err:
        raise InputError(f"cannot read {path}: {err}", span) from None
    return value


def write_npz(path: str, array) -> None:
    with open(path, "wb") as f:  # save_npz would add ".npz" to a name without it
        sp.save_npz(f, sp.csr_array(array), compressed=False)


def write_mtx(path: str, array) -> None:
    import scipy.io

    with open(path, "wb") as f:
        scipy.io.mmwrite(f, sp.coo_array(array), precision=9 if array.dtype == np.float32 else 17)
