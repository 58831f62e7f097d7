"""Headers of the sparse file formats, read before anything runs: Matrix Market (``.mtx``)
and SciPy's ``.npz`` (``scipy.sparse.save_npz``). Shape, dtype and the stored entries
come from the header alone; the data is read by the run."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..errors import InputError, Span

# scipy.sparse.save_npz's formats and the members holding their stored entries
_NPZ_FORMATS = ("csr", "csc", "coo", "bsr", "dia")


def mtx_info(path: str, span: Span | None) -> tuple[tuple[int, int], str, int, bool]:
    """(shape, dtype, stored entries, whether coordinate) of a Matrix Market file."""
    if not os.path.isfile(path):
        raise InputError(f"file not found: {path}", span)
    import scipy.io

    try:
        rows, cols, entries, layout, field, symmetry = scipy.io.mminfo(path)
    except (ValueError, OSError, IndexError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not a Matrix Market file ({err})", span) from None
    if field == "complex":
        raise InputError(f"{path} holds complex numbers; jampi matrices are real", span)
    if rows < 1 or cols < 1:
        raise InputError(f"{path} is {rows}x{cols}; rows and columns must be at least 1", span)
    if symmetry != "general":  # the mirrored half is stored once in the file
        entries = min(rows * cols, 2 * entries)
    return (int(rows), int(cols)), "float64", int(entries), layout == "coordinate"


def npz_info(path: str, span: Span | None) -> tuple[tuple[int, int], str, int]:
    """(shape, dtype, stored entries) of a ``scipy.sparse.save_npz`` file, from its small members
    and the header of its data member (never the data)."""
    if not os.path.isfile(path):
        raise InputError(f"file not found: {path}", span)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if not {"format.npy", "shape.npy", "data.npy"} <= names:
                raise InputError(f"{path} is not a SciPy sparse matrix file (scipy.sparse.save_npz); "
                                 f"it holds {sorted(n.removesuffix('.npy') for n in names)}", span)
            with archive.open("format.npy") as f:
                layout = np.lib.format.read_array(f, allow_pickle=False).item()
            with archive.open("shape.npy") as f:
                shape = tuple(int(v) for v in np.lib.format.read_array(f, allow_pickle=False))
            with archive.open("data.npy") as f:
                version = np.lib.format.read_magic(f)
                header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                data_shape, _, dtype = header(f)  # the header only, not the data
    except InputError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, KeyError, SyntaxError) as err:
        raise InputError(f"cannot read {path}: {err}", span) from None
    layout = layout.decode() if isinstance(layout, bytes) else str(layout)
    if layout not in _NPZ_FORMATS:
        raise InputError(f"{path}: unknown sparse format {layout!r}", span)
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(f"{path}: shape {shape} is not a matrix of at least 1x1", span)
    if dtype.kind not in "fiub":
        raise InputError(f"{path} holds {dtype} values; jampi matrices are float64 or float32", span)
    entries = int(np.prod(data_shape))
    return (shape[0], shape[1]), "float32" if dtype == np.float32 else "float64", entries
