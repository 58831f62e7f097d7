"""The types of IR values: a matrix (shape, dtype, storage and, for a sparse one, its
non-zero count), a scalar, or an output. Checked when a node is built."""

from __future__ import annotations

from dataclasses import dataclass, field

FLOAT_DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Type:
    kind: str  # "matrix" | "scalar" | "output"
    shape: tuple[int, int] | None = None
    dtype: str = "float64"
    storage: str = "dense"  # "dense" | "sparse" (CSR); never changes a value
    # Stored non-zeros of a sparse matrix: exact for inputs, estimated for results. Not part of
    # equality: two estimates of one value's non-zeros are still one type.
    nnz: int | None = field(default=None, compare=False)

    @property
    def is_sparse(self) -> bool:
        return self.storage == "sparse"

    @property
    def entries(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def nonzeros(self) -> int:
        """Stored entries: the non-zero count of a sparse matrix, every entry of a dense one."""
        return self.nnz if self.is_sparse else self.entries

    @property
    def is_matrix(self) -> bool:
        return self.kind == "matrix"

    @property
    def is_scalar(self) -> bool:
        return self.kind == "scalar"

    @property
    def nbytes(self) -> int:
        if not self.is_matrix:
            return 8
        itemsize = 4 if self.dtype == "float32" else 8
        if self.is_sparse:  # CSR: values and column indices per non-zero, one row pointer per row
            index = 4 if max(self.nnz, self.shape[1]) < 2**31 else 8
            return self.nnz * (itemsize + index) + (self.shape[0] + 1) * index
        return self.shape[0] * self.shape[1] * itemsize

    @property
    def dense_nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * (4 if self.dtype == "float32" else 8) if self.is_matrix else 8

    def __str__(self) -> str:
        if self.is_matrix:
            text = f"{self.shape[0]}x{self.shape[1]} {self.dtype}"
            return f"{text} sparse nnz~{self.nnz:,}" if self.is_sparse else text
        return self.kind


SCALAR = Type("scalar")
OUTPUT = Type("output")
_MATRIX_TYPES: dict[tuple, Type] = {}


def matrix_type(shape: tuple[int, int], dtype: str, storage: str = "dense", nnz: float | None = None) -> Type:
    """One shared Type per (shape, dtype, storage, nnz): a program has few distinct ones, and
    equal types then compare by identity on the rewrite passes' hot path."""
    if storage == "sparse":
        entries = int(shape[0]) * int(shape[1])
        nnz = entries if nnz is None else max(0, min(entries, int(round(nnz))))
    else:
        nnz = None
    key = (shape, dtype, storage, nnz)
    found = _MATRIX_TYPES.get(key)
    if found is None:
        found = _MATRIX_TYPES.setdefault(key, Type("matrix", (int(shape[0]), int(shape[1])), dtype, storage, nnz))
    return found


def dense_type(t: Type) -> Type:
    return matrix_type(t.shape, t.dtype)


def join_dtype(*types: Type) -> str:
    """float32 only when every matrix operand is float32 (scalars never widen, as in NumPy)."""
    joined = "float64"
    for t in types:
        if t.kind == "matrix":
            if t.dtype != "float32":
                return "float64"
            joined = "float32"
    return joined
