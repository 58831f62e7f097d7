"""Reading and writing matrix files.

Writes are staged: each output is written completely under a temporary name in
its destination folder, and all of a run's outputs are renamed into place only
when the whole run has succeeded. A failed run therefore leaves no partial file
and replaces no existing output; a Parquet folder appears complete or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, Span
from . import formats


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass
class StagedOutputs:
    """Temporary outputs of one run, committed together at its end."""

    pending: list[tuple[str, str]] = field(default_factory=list)  # (temporary, final)

    def stage(self, path: str, write: Callable[[str], None], directory: bool = False) -> str:
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        prefix = f".{os.path.basename(path)}."
        if directory:
            tmp = tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=folder)
        else:
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
            os.close(fd)
        try:
            write(tmp)
        except BaseException:
            _remove(tmp)
            raise
        mode = 0o777 if directory else 0o666
        os.chmod(tmp, mode & ~_umask())  # mkstemp/mkdtemp make private files; a result should not be
        self.pending.append((tmp, path))
        return tmp

    def commit(self) -> None:
        for tmp, path in self.pending:
            if os.path.isdir(tmp) and os.path.exists(path):
                # A folder cannot be renamed over a non-empty one: swap, then drop the old copy.
                old = f"{path}.old-{uuid.uuid4().hex[:8]}"
                os.rename(path, old)
                os.rename(tmp, path)
                _remove(old)
            else:
                os.replace(tmp, path)
        self.pending.clear()

    def discard(self) -> None:
        for tmp, _ in self.pending:
            _remove(tmp)
        self.pending.clear()


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)


def write_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def save_local(staged: StagedOutputs, path: str, fmt: str, array: np.ndarray, options: dict) -> None:
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
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}", span) from None
    if array.dtype != np.dtype(dtype):
        array = array.astype(dtype)
    return np.ascontiguousarray(array)


def load_local(path: str, fmt: str, dtype: str, shape: tuple[int, int], options: dict, span: Span | None):
    if fmt == "npy":
        return load_npy(path, dtype, span)
    if fmt == "csv":
        return formats.read_csv(path, dtype, shape, span)
    return formats.read_parquet(path, dtype, shape, options["form"], span)


def check_finite(array: np.ndarray, path: str, span: Span | None) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise InputError(f"{path} has a non-finite value {array[i, j]} at row {i}, column {j} (finite=true)", span)
