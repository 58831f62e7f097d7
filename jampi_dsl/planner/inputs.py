"""What the planner needs to know about files before anything runs: the format,
and for inputs the shape and dtype (read from headers, never the data)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, Span

FORMATS = ("npy", "csv", "parquet")


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


def output_format(path: str, explicit: str | None, span: Span | None) -> str:
    fmt = format_of(path, explicit, span)
    if fmt != "npy":
        raise InputError(f"saving {fmt} files needs jampi's Spark I/O, which this build does not have yet", span)
    if not os.path.isdir(os.path.dirname(path) or "."):
        # The folder is created at save time; a path through an existing *file* can never work.
        parent = os.path.dirname(path)
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if parent and not os.path.isdir(parent):
            raise InputError(f"cannot save to {path}: {parent} is a file, not a folder", span)
    return fmt


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


def inspect_input(
    path: str, explicit_format: str | None, *, shape=None, form=None, span: Span | None = None
) -> InputInfo:
    fmt = format_of(path, explicit_format, span)
    if fmt != "npy":
        if not os.path.exists(path):
            raise InputError(f"file not found: {path}", span)
        raise InputError(f"reading {fmt} files needs jampi's Spark I/O, which this build does not have yet", span)
    file_shape, dtype, fortran, offset = read_npy_header(path, span)
    matrix_dtype = npy_matrix_dtype(path, file_shape, dtype, span)
    if shape is not None and tuple(shape) != tuple(file_shape):
        raise InputError(f"shape={tuple(shape)} does not match the file's {tuple(file_shape)}", span)
    return InputInfo("npy", (int(file_shape[0]), int(file_shape[1])), matrix_dtype, {})
