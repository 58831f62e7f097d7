"""Matrices any task can make a region of by itself, without the driver.

A :class:`BlockSource` is a small picklable description (a generator and its
seed, or a file path and its header). A Spark task, or a Cannon task making
its own operand block, calls :meth:`BlockSource.region` for exactly the rows
and columns it needs; parts of the region outside the matrix are zero, which
is the padding a block grid needs at its ragged edge.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from . import blockgen

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _region_buffer(shape, dtype, rows, cols, out):
    """The output array for a region, and the extent of its part inside ``shape``."""
    want = (rows[1] - rows[0], cols[1] - cols[0])
    if out is None:
        out = np.empty(want, dtype=dtype)
    elif out.shape != want or out.dtype != dtype:
        raise ValueError(f"out has shape {out.shape} {out.dtype}, expected {want} {dtype}")
    vr = max(0, min(rows[1], shape[0]) - rows[0])
    vc = max(0, min(cols[1], shape[1]) - cols[0])
    # Zero only the padding: the valid part is about to be overwritten.
    out[vr:, :] = 0
    out[:vr, vc:] = 0
    return out, vr, vc


class BlockSource:
    """A matrix of known shape and dtype that can produce any region of itself."""

    shape: tuple[int, int]
    dtype: np.dtype

    def region(self, rows: tuple[int, int], cols: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def transposed(self) -> BlockSource:
        """A source for the transpose (no data is touched)."""
        return TransposedSource(self)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(map(repr, self.__dict__.items())))))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({fields})"


class GeneratorSource(BlockSource):
    """``random``/``randn``/``zeros``/``ones``/``eye``, bit-identical to :func:`blockgen.generate`."""

    def __init__(self, kind: str, shape: tuple[int, int], dtype: str | np.dtype = np.float64, seed: int = 0):
        if kind not in blockgen.GENERATOR_KINDS:
            raise ValueError(f"unknown generator {kind!r}; expected one of {blockgen.GENERATOR_KINDS}")
        self.kind = kind
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.seed = int(seed)

    def region(self, rows, cols, out=None):
        return blockgen.generate_region(self.kind, self.shape, self.dtype, rows, cols, seed=self.seed, out=out)

    def transposed(self):
        if self.kind in ("zeros", "ones", "eye"):  # symmetric definitions: just swap the shape
            return GeneratorSource(self.kind, self.shape[::-1], self.dtype, self.seed)
        return TransposedSource(self)


class NpySource(BlockSource):
    """A 2-D float32/float64 ``.npy`` file, read by memory map so a task touches only its slice.

    The path must be reachable from the executors (local mode, or a shared
    filesystem). Fortran-order files are handled by mapping them as such;
    a big-endian file is converted to native byte order as it is read.
    """

    def __init__(self, path: str, shape, dtype, fortran_order: bool, offset: int, file_dtype=None):
        self.path = os.path.abspath(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.file_dtype = np.dtype(file_dtype if file_dtype is not None else dtype)
        self.fortran_order = bool(fortran_order)
        self.offset = int(offset)

    @classmethod
    def open(cls, path: str) -> NpySource:
        """Read and validate the header only; the data stays on disk."""
        path = os.path.abspath(path)
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise InputError(f"{path}: unsupported .npy format version {version[0]}.{version[1]}")
                offset = f.tell()
                size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except ValueError as exc:  # bad magic or header
            raise InputError(f"{path} is not a valid .npy file: {exc}") from exc
        if len(shape) != 2:
            raise InputError(f"{path} holds a {len(shape)}-D array; a matrix must be 2-D")
        if dtype.newbyteorder("=") not in _FLOATS:
            raise InputError(f"{path} holds {dtype}; only float32 and float64 matrices are supported")
        if min(shape) < 1:
            raise InputError(f"{path} holds an empty {shape[0]}×{shape[1]} matrix")
        needed = offset + shape[0] * shape[1] * dtype.itemsize
        if size < needed:
            raise InputError(f"{path} is truncated: {size} bytes, the header promises {needed}")
        return cls(path, shape, dtype.newbyteorder("="), fortran, offset, file_dtype=dtype)

    def region(self, rows, cols, out=None):
        out, vr, vc = _region_buffer(self.shape, self.dtype, rows, cols, out)
        if vr and vc:
            data = np.memmap(
                self.path,
                dtype=self.file_dtype,
                mode="r",
                offset=self.offset,
                shape=self.shape,
                order="F" if self.fortran_order else "C",
            )
            out[:vr, :vc] = data[rows[0] : rows[0] + vr, cols[0] : cols[0] + vc]
            del data  # unmap now, not at the next garbage collection
        return out

    def transposed(self):
        # A C-order m×n file read as Fortran order n×m is exactly the transpose.
        return NpySource(self.path, self.shape[::-1], self.dtype, not self.fortran_order, self.offset, self.file_dtype)


class TransposedSource(BlockSource):
    """The transpose of another source: region (rows, cols) is the base's (cols, rows), transposed."""

    def __init__(self, base: BlockSource):
        self.base = base
        self.shape = (base.shape[1], base.shape[0])
        self.dtype = base.dtype

    def region(self, rows, cols, out=None):
        part = self.base.region(cols, rows)
        if out is None:
            return np.ascontiguousarray(part.T)
        if out.shape != (rows[1] - rows[0], cols[1] - cols[0]) or out.dtype != self.dtype:
            raise ValueError(f"out has shape {out.shape} {out.dtype}, expected {part.shape[::-1]} {self.dtype}")
        out[...] = part.T
        return out

    def transposed(self):
        return self.base
