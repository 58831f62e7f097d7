"""What the planner needs to know about files before anything runs: the format,
and for inputs the shape and dtype (read from headers, never the data)."""

from __future__ import annotations

import math
import os
import re
import tokenize
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, Span

FORMATS = ("npy", "csv", "parquet", "mtx", "npz")
SPARSE_FORMATS = ("mtx", "npz")  # sparse by default, as is coordinate Parquet
SHAPE_KEY = b"jampi.shape"  # Parquet key-value metadata jampi writes, so empty last rows keep the shape
# Rows or columns of one matrix. Beyond it, 32-bit indexing (Spark, BLAS) breaks, and with both
# dimensions below it rows * cols stays far inside int64 (the flat index of an entry).
MAX_DIMENSION = 2**31 - 1


@dataclass(frozen=True)
class InputInfo:
    format: str
    shape: tuple[int, int]
    dtype: str
    options: dict[str, Any] = field(default_factory=dict)
    entries: int | None = None  # stored entries of a sparse format (coordinate Parquet, .mtx, .npz)
    sparse: bool = False  # the format's default storage


def format_of(path: str, explicit: str | None, span: Span | None) -> str:
    if explicit is not None:
        if explicit not in FORMATS:
            raise InputError(f"unknown format {explicit!r}; use one of {', '.join(FORMATS)}", span)
        return explicit
    ext = os.path.splitext(path.rstrip("/"))[1].lower().lstrip(".")
    if ext in FORMATS:
        return ext
    raise InputError(
        f"cannot tell the format of {os.path.basename(path)!r} from its extension; "
        f"use .npy, .csv, .parquet, .mtx or .npz, or format=\"...\"",
        span,
    )


def read_npy_header(path: str, span: Span | None = None) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a .npy file, without reading its data."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except FileNotFoundError:
        raise InputError(f"file not found: {path}", span) from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a .npy file", span) from None
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied", span) from None
    except NPY_HEADER_ERRORS as err:
        raise InputError(f"{path} is not a valid .npy file ({npy_error_text(err)})", span) from None
    if any(type(n) is not int or n < 0 for n in shape):  # (a bool is no dimension)
        raise InputError(f"{path} is not a valid .npy file (its header gives the shape {shape!r})", span)
    # Python integers: an absurd shape must not wrap around in int64 and pass for small.
    expected = offset + math.prod(shape) * dtype.itemsize
    if os.path.getsize(path) < expected:
        raise InputError(f"{path} is truncated: its header promises {expected} bytes", span)
    return shape, dtype, fortran, offset


# What NumPy raises for a malformed .npy header: its own checks raise ValueError, but the header
# is a Python literal read with tokenize and ast, whose errors pass through unwrapped.
NPY_HEADER_ERRORS = (ValueError, OSError, SyntaxError, TypeError, EOFError, tokenize.TokenError)


def npy_error_text(err: BaseException) -> str:
    """A short reason for a .npy read error (NumPy quotes the whole header, which may be long)."""
    if isinstance(err, tokenize.TokenError):
        return "its header is cut off or corrupt"
    text = str(err) or type(err).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def npy_matrix_dtype(path: str, shape: tuple[int, ...], dtype: np.dtype, span: Span | None) -> str:
    if len(shape) != 2:
        raise InputError(f"{os.path.basename(path)} holds a {len(shape)}-D array; jampi matrices are 2-D", span)
    if min(shape) < 1:
        raise InputError(f"{os.path.basename(path)} is empty ({shape[0]}x{shape[1]})", span)
    if max(shape) > MAX_DIMENSION:
        raise InputError(f"{os.path.basename(path)} is {shape[0]}x{shape[1]}; jampi matrices have at most "
                         f"{MAX_DIMENSION} rows and columns", span)
    if dtype.kind == "f" and dtype.itemsize in (4, 8):
        return "float32" if dtype.itemsize == 4 else "float64"
    if dtype.kind in "iub":  # integers and booleans load as float64, as NumPy arithmetic would give
        return "float64"
    raise InputError(f"{os.path.basename(path)} holds {dtype} values; jampi reads float32/float64", span)


def csv_shape(path: str, span: Span | None) -> tuple[int, int]:
    """Rows and columns of a dense CSV, from its first line and a newline count (no parsing)."""
    try:
        with open(path, "rb") as f:
            first = f.readline()
            newlines = first.count(b"\n")
            tail = first[-4096:]
            while chunk := f.read(1 << 24):
                newlines += chunk.count(b"\n")
                tail = (tail + chunk)[-4096:]
    except FileNotFoundError:
        raise InputError(f"file not found: {path}", span) from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a CSV file", span) from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err}", span) from None
    if not first.strip():
        raise InputError(f"{path} is empty or starts with a blank line", span)
    stripped = tail.rstrip()
    trailing_newlines = tail[len(stripped):].count(b"\n")
    # Every data line ends in a newline except perhaps the last; blank lines at the end do not count.
    rows = newlines - trailing_newlines + 1
    return rows, first.count(b",") + 1


def parquet_info(path: str, shape: tuple[int, int] | None, form: str | None, span: Span | None):
    """(form, shape, dtype) of a Parquet file or directory, from its schema, metadata and statistics.

    Every part file's footer is checked (a folder's parts may disagree with the first one,
    whose schema the dataset reports), so bad index columns are an input error before anything
    runs, not a failure in the middle of it."""
    if not os.path.exists(path):
        raise InputError(f"file not found: {path}", span)
    import pyarrow.parquet as pq

    try:
        dataset = pq.ParquetDataset(path)
        schema = dataset.schema
    except Exception as err:  # pyarrow raises several types for unreadable files
        raise InputError(f"{path} is not a readable Parquet file or folder ({err})", span) from None
    names = set(schema.names)
    detected = "coordinate" if {"i", "j", "v"} <= names else "rows" if {"i", "row"} <= names else None
    if detected is None:
        raise InputError(f"{path} has columns {sorted(names)}; expected i, j, v (coordinate) or i, row (rows)", span)
    if form not in (None, detected):
        raise InputError(f"form={form!r} but {path} is in {detected} form", span)
    dtype = _value_dtype(schema, detected, path, span)
    stored = (schema.metadata or {}).get(SHAPE_KEY)
    entries = sum(_check_part(pq, part, detected, span) for part in _part_files(dataset, path))
    if shape is None and stored:
        shape = _stored_shape(stored, path, span)
    if shape is None:
        shape = _shape_from_indices(dataset, detected, path, span)
    return detected, (int(shape[0]), int(shape[1])), dtype, entries


def _value_dtype(schema, form: str, path: str, span) -> str:
    """float32 or float64, from the value column's type (``v``, or the items of ``row``)."""
    import pyarrow as pa

    value_type = schema.field("v").type if form == "coordinate" else schema.field("row").type
    if form == "rows":
        if not pa.types.is_list(value_type) and not pa.types.is_large_list(value_type):
            raise InputError(f"{path}: column 'row' must be an array of numbers, got {value_type}", span)
        value_type = value_type.value_type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise InputError(f"{path}: values must be numeric, got {value_type}", span)
    return "float32" if pa.types.is_float32(value_type) else "float64"


def _part_files(dataset, path: str) -> list[str]:
    files = getattr(dataset, "files", None)
    return list(files) if files else [path]


def _check_part(pq, part: str, form: str, span) -> int:
    """One part file's footer: the index columns are integers without missing values (where the
    statistics tell), and its values are numbers. Gives its row count."""
    import pyarrow as pa

    try:
        metadata = pq.read_metadata(part)  # the footer only
        schema = metadata.schema.to_arrow_schema()
    except Exception as err:  # pyarrow raises several types for unreadable files
        raise InputError(f"{part} is not a readable Parquet file ({err})", span) from None
    indices = ("i", "j") if form == "coordinate" else ("i",)
    for name in (*indices, "v" if form == "coordinate" else "row"):
        if name not in schema.names:
            raise InputError(f"{part} has no column {name!r} (its columns: {', '.join(schema.names)})", span)
    for name in indices:
        kind = schema.field(name).type
        if not pa.types.is_integer(kind):
            raise InputError(f"{part}: column {name!r} must hold integers, got {kind}", span)
    _value_dtype(schema, form, part, span)  # numeric (parts of different widths are read as the first's)
    positions = {metadata.schema.column(k).path: k for k in range(metadata.num_columns)}
    for name in indices:
        column = positions.get(name)
        for group in range(metadata.num_row_groups) if column is not None else ():
            stats = metadata.row_group(group).column(column).statistics
            if stats is not None and stats.has_null_count and stats.null_count:
                raise InputError(f"{part}: column {name!r} has missing values", span)
    return int(metadata.num_rows)


def _stored_shape(stored: bytes, path: str, span) -> tuple[int, int]:
    """The shape jampi wrote into the metadata: two positive whole numbers, "rows,cols"."""
    try:
        text = stored.decode("ascii")
        shown = repr(text) if len(text) <= 60 else repr(text[:60]) + "..."
    except UnicodeDecodeError:
        text, shown = "", repr(stored[:60]) + ("..." if len(stored) > 60 else "")
    parts = text.split(",")
    if len(text) > 60 or len(parts) != 2 or not all(re.fullmatch(r"\s*[0-9]+\s*", p) for p in parts):
        raise InputError(f"{path}: its {SHAPE_KEY.decode()} metadata is {shown}, not \"rows,cols\" "
                         "(two whole numbers); give shape=(rows, cols) or rewrite the file", span)
    rows, cols = (int(p) for p in parts)
    _check_dimensions(rows, cols, f"{path}: its {SHAPE_KEY.decode()} metadata gives the shape {shown}", span)
    return rows, cols


def _check_dimensions(rows: int, cols: int, what: str, span) -> None:
    if rows < 1 or cols < 1:
        raise InputError(f"{what}; rows and columns must be at least 1", span)
    if rows > MAX_DIMENSION or cols > MAX_DIMENSION:
        raise InputError(f"{what}; jampi matrices have at most {MAX_DIMENSION} rows and columns", span)


def _shape_from_indices(dataset, form: str, path: str, span):
    try:
        table = dataset.read(columns=["i", "j"] if form == "coordinate" else ["i", "row"])
    except Exception as err:  # pyarrow raises several types for unreadable or mismatched parts
        raise InputError(f"{path}: cannot read its index columns ({err})", span) from None
    if table.num_rows == 0:
        raise InputError(f"{path} has no entries; give shape=(rows, cols)", span)
    rows = _extent(table, "i", path, span)
    if form == "coordinate":
        cols = _extent(table, "j", path, span)
    else:
        import pyarrow.compute as pc

        row = table.column("row")
        if row.null_count:
            raise InputError(f"{path}: column 'row' has missing values", span)
        cols = int(pc.max(pc.list_value_length(row)).as_py() or 0)
    _check_dimensions(rows, cols, f"{path}: its indices give the shape {rows}x{cols}", span)
    return rows, cols


def _extent(table, name: str, path: str, span) -> int:
    """Largest index in column ``name`` plus one, the column checked (integers, no missing values)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(name)
    if not pa.types.is_integer(column.type):
        raise InputError(f"{path}: column {name!r} must hold integers, got {column.type}", span)
    if column.null_count:
        raise InputError(f"{path}: column {name!r} has missing values", span)
    smallest, largest = (pc.min_max(column)[k].as_py() for k in ("min", "max"))
    if smallest < 0:
        raise InputError(f"{path}: column {name!r} has a negative index {smallest}", span)
    return largest + 1


def inspect_input(
    path: str, explicit_format: str | None, *, shape=None, form=None, span: Span | None = None
) -> InputInfo:
    fmt = format_of(path, explicit_format, span)
    if fmt == "csv":
        file_shape = csv_shape(path, span)
        if shape is not None and tuple(shape) != file_shape:
            raise InputError(f"shape={tuple(shape)} does not match the file's {file_shape}", span)
        return InputInfo("csv", file_shape, "float64", {})
    if fmt == "parquet":
        if form not in (None, "coordinate", "rows"):
            raise InputError(f'form must be "coordinate" or "rows", got {form!r}', span)
        detected, file_shape, dtype, entries = parquet_info(path, shape, form, span)
        coordinate = detected == "coordinate"
        return InputInfo("parquet", file_shape, dtype, {"form": detected}, entries if coordinate else None,
                         coordinate)
    if form is not None:
        raise InputError("form= applies to Parquet files only", span)
    if fmt in SPARSE_FORMATS:
        return _sparse_file(path, fmt, shape, span)
    file_shape, dtype, fortran, offset = read_npy_header(path, span)
    matrix_dtype = npy_matrix_dtype(path, file_shape, dtype, span)
    if shape is not None and tuple(shape) != tuple(file_shape):
        raise InputError(f"shape={tuple(shape)} does not match the file's {tuple(file_shape)}", span)
    return InputInfo("npy", (int(file_shape[0]), int(file_shape[1])), matrix_dtype, {})


def _sparse_file(path: str, fmt: str, shape, span) -> InputInfo:
    from .sparse_inputs import mtx_info, npz_info

    if fmt == "mtx":
        file_shape, dtype, entries, coordinate = mtx_info(path, span)
    else:
        (file_shape, dtype, entries), coordinate = npz_info(path, span), True
    if shape is not None and tuple(shape) != file_shape:
        raise InputError(f"shape={tuple(shape)} does not match the file's {file_shape}", span)
    _check_dimensions(*file_shape, f"{path} is {file_shape[0]}x{file_shape[1]}", span)
    return InputInfo(fmt, file_shape, dtype, {}, entries if coordinate else None, coordinate)
