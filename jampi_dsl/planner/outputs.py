"""Where a run may write, decided before anything runs.

jampi replaces only what it can recognise as an output of its kind: a file
where a ``.npy``/``.csv`` goes, or a folder holding nothing but Parquet part
files and the markers Spark and pyarrow leave beside them. Anything else (a
user's folder, the program's own folder or one above it, a place it cannot
write) is an input error, reported with the ``save`` that named it.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable

from ..errors import InputError, Span
from .inputs import format_of

# Part files (pyarrow's part-0.parquet, Spark's part-00000-<uuid>-c000.snappy.parquet), Spark's
# and Hadoop's markers and their checksum twins. Nothing else is taken for a previous output.
_PARQUET_ENTRY = re.compile(r"^(\.?part-[\w.-]*\.parquet(\.crc)?|_SUCCESS|_metadata|_common_metadata|\._SUCCESS\.crc)$")
_EXTENSIONS = {"npy": (".npy",), "csv": (".csv",), "mtx": (".mtx",), "npz": (".npz",)}  # files a save may replace


def parquet_output_folder(path: str) -> bool:
    """True when ``path`` is a folder of only Parquet part files and markers (or empty)."""
    try:
        with os.scandir(path) as entries:
            return all(e.is_file(follow_symlinks=False) and _PARQUET_ENTRY.match(e.name) for e in entries)
    except OSError:
        return False


def _within(folder: str, path: str) -> bool:
    """``folder`` is ``path`` or lies below it."""
    try:
        return os.path.commonpath([folder, path]) == path
    except ValueError:  # different drives
        return False


def _nearest_existing(path: str) -> str:
    parent = os.path.dirname(path)
    while parent and not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    return parent or os.sep


def _writable(folder: str) -> bool:
    """Whether a file can be made in ``folder``: asked of the file system, not of mode bits
    (root passes every access() check, yet /proc and read-only mounts refuse it)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".jampi-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def check_destination(path: str, fmt: str, span: Span | None, protected: Iterable[str] = (),
                      protected_files: Iterable[str] = ()) -> None:
    """Raise an :class:`InputError` unless ``path`` can take a ``fmt`` output without losing
    anything jampi did not write. ``protected`` folders (the program's, the working one) and
    every folder above them are never replaced."""
    path = os.path.abspath(path)
    for folder in protected:
        if _within(os.path.abspath(folder), path):
            raise InputError(f"cannot save to {path}: it is {_relation(folder, path)}; "
                             "name a file or a new folder inside it", span)
    if any(os.path.exists(f) and os.path.samefile(f, path) for f in protected_files if os.path.lexists(path)):
        raise InputError(f"cannot save to {path}: it is the program itself", span)
    if os.path.isfile(path) and fmt in _EXTENSIONS and not path.lower().endswith(_EXTENSIONS[fmt]):
        raise InputError(f"cannot save to {path}: an existing file that is not a .{fmt} file; "
                         "jampi replaces only a file of the format it writes", span)
    if os.path.isdir(path):
        if fmt != "parquet":
            raise InputError(f"cannot save to {path}: it is a folder, and a .{fmt} output is a file", span)
        if os.path.islink(path) or not parquet_output_folder(path):
            raise InputError(f"cannot save to {path}: the folder holds files jampi did not write "
                             "(only a folder of Parquet part files is replaced); choose another path", span)
    elif os.path.lexists(path) and fmt == "parquet":
        raise InputError(f"cannot save to {path}: it is a file, and a Parquet output is a folder", span)
    parent = _nearest_existing(path)
    if not os.path.isdir(parent):
        raise InputError(f"cannot save to {path}: {parent} is a file, not a folder", span)
    if not _writable(parent):
        raise InputError(f"cannot save to {path}: {parent} is not writable", span)


def _relation(folder: str, path: str) -> str:
    folder = os.path.abspath(folder)
    return "the program's or working folder" if folder == path else f"a folder above {folder}"


def output_format(path: str, explicit: str | None, span: Span | None, protected: Iterable[str] = (),
                  protected_files: Iterable[str] = ()) -> str:
    """The format of an output, once its destination is known to be safe to write."""
    fmt = format_of(path, explicit, span)
    check_destination(path, fmt, span, protected, protected_files)
    return fmt
