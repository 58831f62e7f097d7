"""Reading and writing matrix files. Every write is atomic: the data goes to a
temporary name in the destination folder and is renamed into place only when
complete, so a failed run never leaves a partial file (and an existing file is
replaced only by a complete one)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np

from ..errors import InputError, Span


@contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yields a temporary path next to ``path``; renames it onto ``path`` on success."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        if os.path.isfile(tmp):
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved result should look like any other file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npy(path: str, array: np.ndarray) -> None:
    with atomic_path(path, ".npy") as tmp:
        with open(tmp, "wb") as f:
            np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())


WRITERS: dict[str, Callable[[str, np.ndarray], None]] = {"npy": save_npy}


def load_npy(path: str, dtype: str, span: Span | None = None) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}", span) from None
    if array.dtype != np.dtype(dtype):
        array = array.astype(dtype)
    return np.ascontiguousarray(array)


def check_finite(array: np.ndarray, path: str, span: Span | None) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise InputError(f"{path} has a non-finite value {array[i, j]} at row {i}, column {j} (finite=true)", span)


READERS: dict[str, Callable[[str, str, Span | None], np.ndarray]] = {"npy": load_npy}
