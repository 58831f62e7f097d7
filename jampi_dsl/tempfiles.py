"""Names of the temporary files and folders jampi writes beside its outputs.

A name carries the writing process's pid and start time, so a later run can
tell a temporary of a run that died (SIGKILL, power loss) from one that is
still being written, and remove only the former. Nothing without this
pattern is ever removed.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid

import psutil

_PATTERN = re.compile(r"\.jampi-(\d+)-(\d+)-[0-9a-f]{12}\.tmp$")
_STARTED: int | None = None


def _start_stamp(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def temp_name(final: str) -> str:
    """A hidden name beside ``final`` that marks this process as its writer."""
    global _STARTED
    if _STARTED is None:
        _STARTED = _start_stamp(os.getpid()) or 0
    folder, base = os.path.split(os.path.abspath(final))
    return os.path.join(folder, f".{base}.jampi-{os.getpid()}-{_STARTED}-{uuid.uuid4().hex[:12]}.tmp")


def _writer_alive(pid: int, started: int) -> bool:
    return _start_stamp(pid) == started  # a reused pid has another start time


def remove_stale(folder: str) -> list[str]:
    """Remove jampi temporaries in ``folder`` whose writing process is gone; returns their paths."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _PATTERN.search(entry.name)
        if not match or _writer_alive(int(match.group(1)), int(match.group(2))):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(entry.path)
        except OSError:
            pass  # another run cleaning the same folder, or not ours to remove after all
    return removed
