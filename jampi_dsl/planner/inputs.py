"""What the planner needs to know about files before anything runs: the format,
and for inputs the shape and dtype (read from headers, never the data)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, Span

FORMATS = ("npy", "csv", "parquet")
SHAPE_KEY = b"jampi.shape"  # Parquet key-value metadata jampi writes, so empty last rows keep the shape


@dataclass(frozen=True)
class InputInfo:
    format: str
    shape: tuple[int, int]
    dtype: str
    options: dict[str, Any] = field(default_factory=dict)


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
        f"use .npy, .csv or .parquet, or format=\"...\"",
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
    except (ValueError, OSError, SyntaxError) as err:
        raise InputError(f"{path} is not a valid .npy file ({err})", span) from None
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if os.path.getsize(path) < expected:
        raise InputError(f"{path} is truncated: its header promises {expected} bytes", span)
    return shape, dtype, fortran, offset


def npy_matrix_dtype(path: str, shape: tuple[int, ...], dtype: np.dtype, span: Span | None) -> str:
    if len(shape) != 2:
        raise InputError(f"{os.path.basename(path)} holds a {len(shape)}-D array; jampi matrices are 2-D", span)
    if min(shape) < 1:
        raise InputError(f"{os.path.basename(path)} is empty ({shape[0]}x{shape[1]})", span)
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
    """(form, shape, dtype) of a Parquet file or directory, from its schema, metadata and statistics."""
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
    import pyarrow as pa

    value_type = schema.field("v").type if detected == "coordinate" else schema.field("row").type
    if detected == "rows":
        if not pa.types.is_list(value_type) and not pa.types.is_large_list(value_type):
            raise InputError(f"{path}: column 'row' must be an array of numbers, got {value_type}", span)
        value_type = value_type.value_type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise InputError(f"{path}: values must be numeric, got {value_type}", span)
    dtype = "float32" if pa.types.is_float32(value_type) else "float64"
    stored = (schema.metadata or {}).get(SHAPE_KEY)
    if shape is None and stored:
        shape = tuple(int(x) for x in stored.decode().split(","))
    if shape is None:
        shape = _shape_from_indices(dataset, detected, path, span)
    return detected, (int(shape[0]), int(shape[1])), dtype


def _shape_from_indices(dataset, form: str, path: str, span):
    table = dataset.read(columns=["i", "j"] if form == "coordinate" else ["i", "row"])
    if table.num_rows == 0:
        raise InputError(f"{path} has no entries; give shape=(rows, cols)", span)
    i = table.column("i").to_numpy()
    if form == "coordinate":
        j = table.column("j").to_numpy()
        return int(i.max()) + 1, int(j.max()) + 1
    import pyarrow.compute as pc

    lengths = pc.list_value_length(table.column("row")).to_numpy(zero_copy_only=False)
    return int(i.max()) + 1, int(lengths.max())


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
        detected, file_shape, dtype = parquet_info(path, shape, form, span)
        return InputInfo("parquet", file_shape, dtype, {"form": detected})
    if form is not None:
        raise InputError("form= applies to Parquet files only", span)
    file_shape, dtype, fortran, offset = read_npy_header(path, span)
    matrix_dtype = npy_matrix_dtype(path, file_shape, dtype, span)
    if shape is not None and tuple(shape) != tuple(file_shape):
        raise InputError(f"shape={tuple(shape)} does not match the file's {tuple(file_shape)}", span)
    return InputInfo("npy", (int(file_shape[0]), int(file_shape[1])), matrix_dtype, {})
