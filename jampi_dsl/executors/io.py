"""Reading and writing matrix files.

Writes are staged: each output is written completely under a temporary name in
its destination folder, and all of a run's outputs are renamed into place only
when the whole run has succeeded. A failed run therefore leaves no partial file
and replaces no existing output; a Parquet folder appears complete or not at all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .. import tempfiles
from ..errors import ExecutionError, InputError, Span
from ..planner.outputs import parquet_output_folder
from . import formats, sparse_io


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class CommitError(ExecutionError):
    """An output could not be put in place; every output of the run is as it was before."""


@dataclass
class StagedOutputs:
    """Temporary outputs of one run, committed together at its end, or not at all."""

    pending: list[tuple[str, str]] = field(default_factory=list)  # (temporary, final)

    def stage(self, path: str, write: Callable[[str], None], directory: bool = False) -> str:
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        tempfiles.remove_stale(folder)
        tmp = tempfiles.temp_name(path)
        if directory:
            os.mkdir(tmp, 0o700)
        else:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            write(tmp)
        except BaseException:
            _remove(tmp)
            raise
        mode = 0o777 if directory else 0o666
        os.chmod(tmp, mode & ~_umask())  # staged privately while written; a result should not be
        self.pending.append((tmp, path))
        return tmp

    def commit(self) -> None:
        """Put every output in place. The outputs they replace are kept aside until all are in
        place; if one fails, the new ones are taken out and the old ones put back."""
        aside: list[tuple[str, str]] = []  # (final, the previous output kept under a temporary name)
        placed: list[str] = []
        try:
            for tmp, path in self.pending:
                _check_replaceable(tmp, path)
            for tmp, path in self.pending:
                if os.path.lexists(path):
                    old = tempfiles.temp_name(path)
                    os.rename(path, old)
                    aside.append((path, old))
                os.rename(tmp, path)
                placed.append(path)
        except BaseException as err:
            for path in placed:
                _remove(path)
            for path, old in reversed(aside):
                os.rename(old, path)
            self.discard()
            if isinstance(err, OSError):
                raise CommitError(f"cannot save {err.filename or path}: {err.strerror or err}; "
                                  "no output was changed") from None
            raise
        for _, old in aside:
            _remove(old)
        self.pending.clear()

    def discard(self) -> None:
        for tmp, _ in self.pending:
            _remove(tmp)
        self.pending.clear()


def _check_replaceable(tmp: str, path: str) -> None:
    """What is at ``path`` now is still what the plan agreed to replace: it may have changed
    while the run computed."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(tmp):
        if not os.path.isdir(path) or os.path.islink(path) or not parquet_output_folder(path):
            raise CommitError(f"cannot save {path}: it changed during the run and is no longer a "
                              "Parquet output jampi may replace; no output was changed")
    elif os.path.isdir(path):
        raise CommitError(f"cannot save {path}: a folder appeared there during the run; no output was changed")


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def write_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def save_local(staged: StagedOutputs, path: str, fmt: str, array, options: dict) -> None:
    if fmt in ("npz", "mtx"):
        staged.stage(path, lambda tmp: (sparse_io.write_npz if fmt == "npz" else sparse_io.write_mtx)(tmp, array))
        return
    if sp.issparse(array) and not (fmt == "parquet" and (options.get("form") or "coordinate") == "coordinate"):
        array = array.toarray()  # .npy, .csv and row-form Parquet are dense formats (the plan checked the size)
    if fmt == "npy":
        staged.stage(path, lambda tmp: write_npy(tmp, array))
    elif fmt == "csv":
        staged.stage(path, lambda tmp: formats.write_csv(tmp, array))
    elif fmt == "parquet":
        form = options.get("form") or "coordinate"
        staged.stage(path, lambda tmp: formats.write_parquet(tmp, array, form), directory=True)
    else:  # the planner only admits the formats above
        raise InputError(f"cannot write {fmt} files")


def load_npy(path: str, dtype: str, span: Span | None = None) -> np.ndarray:
    from ..planner.inputs import NPY_HEADER_ERRORS, npy_error_text

    try:
        array = np.load(path, allow_pickle=False)
    except NPY_HEADER_ERRORS as err:  # a header that is not a valid literal raises tokenize's errors
        raise InputError(f"cannot read {path}: {npy_error_text(err)}", span) from None
    if array.dtype != np.dtype(dtype):
        array = array.astype(dtype)
    return np.ascontiguousarray(array)


def load_local(path: str, fmt: str, dtype: str, shape: tuple[int, int], options: dict, span: Span | None,
               storage: str = "dense"):
    if fmt == "npy":
        return load_npy(path, dtype, span)
    if fmt == "csv":
        return formats.read_csv(path, dtype, shape, span)
    if fmt == "mtx":
        return sparse_io.load_mtx(path, dtype, span)
    if fmt == "npz":
        return sparse_io.load_npz(path, dtype, span)
    if storage == "sparse" and options["form"] == "coordinate":
        return sparse_io.read_coordinate_parquet(path, dtype, shape, span)
    return formats.read_parquet(path, dtype, shape, options["form"], span)


def check_finite(array, path: str, span: Span | None) -> None:
    if sp.issparse(array):
        array = array.tocoo()
        bad = ~np.isfinite(array.data)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise InputError(f"{path} has a non-finite value {array.data[k]} at row {int(array.row[k])}, column "
                             f"{int(array.col[k])} (finite=true)", span)
        return
    bad = ~np.isfinite(array)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise InputError(f"{path} has a non-finite value {array[i, j]} at row {i}, column {j} (finite=true)", span)
