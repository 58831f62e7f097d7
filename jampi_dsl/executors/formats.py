"""CSV and Parquet matrices on the driver (pyarrow).

Parquet comes in two forms (LANGUAGE.md): coordinate (``i``, ``j``, ``v``;
missing entries are zero) and rows (``i``, ``row`` an array). jampi writes the
shape into the file's key-value metadata so a matrix whose last rows are empty
round-trips with its shape; files from elsewhere take ``shape=`` or max index + 1
(see ``planner.inputs``, which reads headers before anything runs).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError, Span
from ..planner.inputs import SHAPE_KEY


def _pq():
    import pyarrow.parquet as pq

    return pq


# ---------------------------------------------------------------- csv


def read_csv(path: str, dtype: str, shape: tuple[int, int], span: Span | None) -> np.ndarray:
    rows, cols = shape
    out = np.empty(shape, dtype=dtype)
    with open(path, encoding="utf-8", errors="replace") as f:
        r = 0
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split(",")
            if len(fields) != cols:
                raise InputError(f"{path}:{number}: {len(fields)} values, expected {cols} (ragged rows)", span)
            try:
                out[r] = [float(x) for x in fields]
            except ValueError:
                bad = next(x for x in fields if not _is_number(x))
                hint = " (a header row? jampi's CSV files are numbers only: remove it)" if number == 1 else ""
                raise InputError(f"{path}:{number}: {bad.strip()!r} is not a number{hint}", span) from None
            r += 1
    if r != rows:
        raise InputError(f"{path} has {r} rows, expected {rows}", span)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_csv(path: str, array: np.ndarray) -> None:
    fmt = "%.9g" if array.dtype == np.float32 else "%.17g"
    np.savetxt(path, array, delimiter=",", fmt=fmt)


# ---------------------------------------------------------------- parquet


def read_parquet(path: str, dtype: str, shape: tuple[int, int], form: str, span: Span | None) -> np.ndarray:
    try:
        table = _pq().read_table(path)
    except Exception as err:  # pyarrow raises several types for unreadable or mismatched parts
        raise InputError(f"cannot read {path}: {err}", span) from None
    return table_to_matrix(table, form, shape, dtype, path, span)


def table_to_matrix(table, form: str, shape: tuple[int, int], dtype: str, what: str, span) -> np.ndarray:
    """A dense matrix from an Arrow table in coordinate (i, j, v) or row (i, row) form, validated
    (a sparse one: :mod:`.sparse_io`)."""
    rows, cols = shape
    out = np.zeros(shape, dtype=dtype)
    i = indices(table, "i", what, span)
    if form == "coordinate":
        j = indices(table, "j", what, span)
        v = table.column("v").to_numpy(zero_copy_only=False)
        check_range(i, rows, "i", what, span)
        check_range(j, cols, "j", what, span)
        linear = i * cols + j
        _check_unique(linear, rows * cols, cols, what, span)
        out.reshape(-1)[linear] = v
        return out
    check_range(i, rows, "i", what, span)
    if np.unique(i).size != i.size:
        raise InputError(f"{what}: a row index appears twice", span)
    column = table.column("row")
    if column.null_count:
        raise InputError(f"{what}: column 'row' has missing values", span)
    column = column.combine_chunks()
    offsets = column.offsets.to_numpy()
    lengths = np.diff(offsets)
    if np.any(lengths != cols):
        bad = int(np.flatnonzero(lengths != cols)[0])
        raise InputError(f"{what}: row {int(i[bad])} has {int(lengths[bad])} values, expected {cols}", span)
    values = column.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
    out[i] = values.reshape(len(i), cols)
    return out


def _check_unique(linear: np.ndarray, size: int, cols: int, what: str, span) -> None:
    """Duplicate coordinates are an input error. Scatter each entry's position, read it back:
    an entry whose slot holds another position was overwritten, so its index came twice.
    O(entries) and vectorised (np.unique took 29 s for 16M entries here)."""
    position = np.arange(linear.size, dtype=np.int64 if linear.size >= 2**31 else np.int32)
    slots = np.empty(size, dtype=position.dtype)
    slots[linear] = position
    clash = slots[linear] != position
    if clash.any():
        dup = int(linear[np.flatnonzero(clash)[0]])
        raise InputError(f"{what}: duplicate entry at ({dup // cols}, {dup % cols})", span)


def indices(table, name: str, path: str, span) -> np.ndarray:
    column = table.column(name)
    import pyarrow as pa

    if not pa.types.is_integer(column.type):
        raise InputError(f"{path}: column {name!r} must hold integers, got {column.type}", span)
    if column.null_count:
        raise InputError(f"{path}: column {name!r} has missing values", span)
    return column.to_numpy().astype(np.int64, copy=False)


def check_range(index: np.ndarray, limit: int, name: str, path: str, span) -> None:
    if index.size and (index.min() < 0 or index.max() >= limit):
        bad = int(index[(index < 0) | (index >= limit)][0])
        raise InputError(f"{path}: index {name}={bad} is outside 0..{limit - 1}", span)


def matrix_to_table(array: np.ndarray, form: str = "coordinate"):
    """An Arrow table of ``array`` in coordinate form (non-zero entries) or row form, shape in its metadata."""
    import pyarrow as pa
    import scipy.sparse as sp

    rows, cols = array.shape
    if form == "rows":
        array = array.toarray() if sp.issparse(array) else array
        flat = pa.array(np.ascontiguousarray(array).reshape(-1))
        offsets = pa.array(np.arange(0, rows * cols + 1, cols, dtype=np.int32))
        table = pa.table({"i": pa.array(np.arange(rows, dtype=np.int64)),
                          "row": pa.ListArray.from_arrays(offsets, flat)})
    elif sp.issparse(array):  # the stored non-zeros only, in row order
        coo = array.tocsr().tocoo()
        keep = coo.data != 0
        table = pa.table({"i": coo.row[keep].astype(np.int64), "j": coo.col[keep].astype(np.int64),
                          "v": coo.data[keep]})
    else:
        i, j = np.nonzero(array)
        table = pa.table({"i": i.astype(np.int64), "j": j.astype(np.int64), "v": array[i, j]})
    return table.replace_schema_metadata({SHAPE_KEY: f"{rows},{cols}".encode()})


def write_parquet(path: str, array: np.ndarray, form: str = "coordinate") -> None:
    os.makedirs(path, exist_ok=True)
    _pq().write_table(matrix_to_table(array, form), os.path.join(path, "part-00000.parquet"))
