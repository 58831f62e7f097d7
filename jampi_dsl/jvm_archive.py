"""A class-data-sharing archive that halves the JVM's part of a cold start.

Starting Spark's driver JVM is mostly loading and verifying Spark's classes from
jars (~3 s for the JVM, ~2.5 s for the SparkContext, ~3 s for the SparkSession
on the project VM). With those classes mapped from a CDS archive each part
takes about half (measured: 14.1 s → 7.9 s from launch to a first job's end).

The first JVM jampi starts without an archive records one: the JVM writes it as
it exits (``-XX:ArchiveClassesAtExit``), into a file of its own. That takes
seconds, so the process that started it says so on stderr (one line), ends the
JVM as it exits itself, waits for it, checks the file with ``java -Xshare:on``
(a truncated archive would crash every JVM that maps it: SIGBUS) and renames it
into place; nothing is left running after that process (see session.py's
``_end_jvm``). Later starts map the archive. The JVM itself rejects an archive
made for other jars or another JDK, and the file's name carries both.

Everything this module creates or removes is in its own folder, under names it
chose: the archive, the recording, its lock, and the crash logs
(``hs_err_jampi_<pid>.log``) of the JVMs that map the archive. Files anywhere
else, the user's ``hs_err_pid*.log`` included, are never touched.

``JAMPI_JVM_ARCHIVE=0`` turns this off; ``JAMPI_CACHE_DIR`` moves the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import time

log = logging.getLogger(__name__)

# The JVM's CDS messages go to stdout, where they would mix with a program's output.
_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"
_USER_CDS = ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare")
# Crash logs of the JVMs that map the archive: in this module's folder, named so that they
# can be told from anything else (a damaged archive crashes the JVM; see Archive.discard).
_CRASH_LOG = "hs_err_jampi_"


def enabled() -> bool:
    return os.environ.get("JAMPI_JVM_ARCHIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> str:
    base = os.environ.get("JAMPI_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "jampi"
    )
    return os.path.join(base, "jvm")


def _key(java: str) -> str:
    """What the archive depends on: the JDK Spark launches, and Spark's jars."""
    import pyspark

    parts = [pyspark.__version__, os.path.realpath(java)]
    try:
        st = os.stat(os.path.realpath(java))
        parts.append(f"{st.st_size}:{int(st.st_mtime)}")
        jars = os.path.join(os.path.dirname(pyspark.__file__), "jars")
        parts += sorted(f"{e.name}:{e.stat().st_size}" for e in os.scandir(jars))
    except OSError:
        pass
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited process nobody reaped yet (a zombie) is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class Archive:
    """The archive for this JDK and these jars: used if there, else recorded by one process."""

    def __init__(self, java: str, folder: str | None = None):
        """``java``: the executable Spark launches (session's ``_check_java`` finds it)."""
        self.folder = folder or cache_dir()
        key = _key(java)
        self.path = os.path.join(self.folder, f"spark-{key}.jsa")
        self.lock = os.path.join(self.folder, f"spark-{key}.recording")
        self.recording: str | None = None  # the file this process's JVM writes at exit
        self.options = ""  # what java_options() gave the JVM

    def java_options(self, user_options: str = "") -> str:
        """Options for the driver JVM about to start ("" when there is nothing to do).

        ``user_options``: the JVM options already set; a crash-log place of the user's own wins."""
        if os.path.exists(self.path):
            self.options = f"-XX:SharedArchiveFile={self.path} {_QUIET}"
            if "ErrorFile" not in user_options:
                self.options += f" -XX:ErrorFile={os.path.join(self.folder, _CRASH_LOG)}%p.log"
        elif self._take_lock():
            self.recording = f"{self.path}.{os.getpid()}.tmp"
            self.options = f"-XX:ArchiveClassesAtExit={self.recording} {_QUIET}"
        return self.options

    def _take_lock(self) -> bool:
        """One recorder at a time; a lock whose process died is taken over."""
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError:
            return False
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    with open(self.lock) as fh:
                        pid = int(fh.read().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid) or not pid and _age(self.lock) < 10:  # not yet written
                    return False
                # Its recorder died: the half-written file it left (named after that process) is garbage.
                _remove(self.lock)
                prefix = os.path.basename(self.path) + "."
                for name in os.listdir(self.folder):
                    if name.startswith(prefix) and name.endswith(".tmp"):
                        _remove(os.path.join(self.folder, name))
                continue
            except OSError:
                return False
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return True
        return False

    def abandon_recording(self) -> None:
        if self.recording is not None:
            _remove(self.recording)
            _remove(self.lock)
            self.recording = None

    def keep_recording(self, java: str, classpath: str) -> bool:
        """Once the recording JVM has exited: keep its archive if a JVM can map it.

        ``java`` and ``classpath`` are the recording JVM's own (the archive is only valid
        for them). The recording and the lock go in any case."""
        if self.recording is None:
            return False
        try:
            if not valid(java, classpath, self.recording):
                return False
            os.replace(self.recording, self.path)
            return True
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("no JVM archive recorded: %s", exc)
            return False
        finally:
            self.abandon_recording()

    def discard(self, since: float | None = None) -> None:
        """Drop an archive a JVM could not map (checked with :func:`valid`, never on a guess).

        The JVM that crashed on it wrote its crash log into this folder under a name of
        jampi's (``hs_err_jampi_<pid>.log``); such logs written since ``since`` (a
        ``time.time()``) that name this archive go too. Nothing outside the folder is touched."""
        if since is not None:
            try:
                names = os.listdir(self.folder)
            except OSError:
                names = []
            for name in names:
                path = os.path.join(self.folder, name)
                if not (name.startswith(_CRASH_LOG) and name.endswith(".log")) or _mtime(path) < since - 1:
                    continue
                try:
                    with open(path, errors="replace") as fh:
                        ours = self.path in fh.read()
                except OSError:
                    ours = False
                if ours:
                    _remove(path)
        _remove(self.path)


def valid(java: str, classpath: str, archive: str) -> bool:
    """Whether a JVM maps the archive: ``-Xshare:on`` fails instead of silently not sharing."""
    if not os.path.exists(archive) or os.path.getsize(archive) == 0:
        return False
    folder = os.path.dirname(archive) or "."
    argv = [java, "-Xshare:on", f"-XX:SharedArchiveFile={archive}", *_QUIET.split(),
            f"-XX:ErrorFile={folder}/hs_err_check_%p.log", "-cp", classpath, "-version"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=folder)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = -1
    finally:
        _remove(os.path.join(folder, f"hs_err_check_{proc.pid}.log"))  # this check's own crash log only
    return code == 0


def _age(path: str) -> float:
    return time.time() - _mtime(path)


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return float("-inf")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def user_has_cds(java_options: str) -> bool:
    return any(flag in java_options for flag in _USER_CDS)
