"""A class-data-sharing archive that halves the JVM's part of a cold start.

Starting Spark's driver JVM is mostly loading and verifying Spark's classes from
jars (~3 s for the JVM, ~2.5 s for the SparkContext, ~3 s for the SparkSession
on the project VM). With those classes mapped from a CDS archive each part
takes about half (measured: 14.1 s → 7.9 s from launch to a first job's end).

The first JVM jampi starts without an archive records one: the JVM writes it
as it exits (``-XX:ArchiveClassesAtExit``), into a file of its own. That takes
seconds, so at this process's exit jampi only tells the JVM to end and leaves a
small watcher (``python -m jampi_dsl.jvm_archive``) to wait for it, check the
file with ``java -Xshare:on`` and rename it into place: a truncated archive
would crash every JVM that maps it (SIGBUS). Later starts map the archive. The
JVM itself rejects an archive made for other jars or another JDK, and the
file's name carries both.

``JAMPI_JVM_ARCHIVE=0`` turns this off; ``JAMPI_CACHE_DIR`` moves the cache.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import subprocess
import sys
import time

log = logging.getLogger(__name__)

# The JVM's CDS messages go to stdout, where they would mix with a program's output.
_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"
_USER_CDS = ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare")


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

    def java_options(self) -> str:
        """Options for the driver JVM about to start ("" when there is nothing to do)."""
        if os.path.exists(self.path):
            self.options = f"-XX:SharedArchiveFile={self.path} {_QUIET}"
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
                # No recorder is alive: its half-written file (named after the process that
                # started the JVM, not the watcher whose pid the lock may hold) is garbage.
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

    def discard(self) -> None:
        """Drop an archive the JVM could not start with.

        A JVM that crashed on the archive left an ``hs_err_pid*.log`` in the working
        directory; those that name this archive go too (it is jampi's mess, not the user's)."""
        try:
            names = os.listdir(".")
        except OSError:
            names = []
        for name in names:
            if name.startswith("hs_err_pid") and name.endswith(".log"):
                try:
                    with open(name, errors="replace") as fh:
                        ours = self.path in fh.read()
                except OSError:
                    ours = False
                if ours:
                    _remove(name)
        _remove(self.path)


def _valid(java: str, classpath: str, archive: str) -> bool:
    """Whether a JVM maps the archive: ``-Xshare:on`` fails instead of silently not sharing."""
    if not os.path.exists(archive) or os.path.getsize(archive) == 0:
        return False
    folder = os.path.dirname(archive)
    argv = [java, "-Xshare:on", f"-XX:SharedArchiveFile={archive}", *_QUIET.split(),
            f"-XX:ErrorFile={folder}/hs_err_check_%p.log", "-cp", classpath, "-version"]
    try:
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder, timeout=60)
    finally:
        for name in os.listdir(folder):
            if name.startswith("hs_err_check_"):
                _remove(os.path.join(folder, name))
    return done.returncode == 0


def _age(path: str) -> float:
    try:
        return time.time() - os.path.getmtime(path)
    except OSError:
        return float("inf")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def user_has_cds(java_options: str) -> bool:
    return any(flag in java_options for flag in _USER_CDS)


def finish_at_exit(archive: Archive, spark_context_class) -> None:
    """At interpreter exit, end the recording JVM and leave a watcher to keep its archive."""

    def finish():
        gateway = getattr(spark_context_class, "_gateway", None)
        proc = getattr(gateway, "proc", None)
        if proc is None or archive.recording is None or proc.poll() is not None:
            archive.abandon_recording()
            return
        try:
            system = gateway.jvm.System
            java = os.path.join(system.getProperty("java.home"), "bin", "java")
            classpath = system.getProperty("java.class.path")
            active = spark_context_class._active_spark_context
            if active is not None:
                active.stop()
            watcher = subprocess.Popen(
                [sys.executable, "-m", __name__, str(proc.pid), archive.recording, archive.path, archive.lock, java],
                env={**os.environ, "JAMPI_ARCHIVE_CLASSPATH": classpath},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            with open(archive.lock, "w") as fh:  # the recording is the watcher's now
                fh.write(str(watcher.pid))
            proc.stdin.close()  # Spark's gateway exits on EOF; the JVM dumps as it exits
        except Exception as exc:  # noqa: BLE001 - no archive this time; the next start records again
            log.debug("no JVM archive recorded: %s", exc)
            archive.abandon_recording()

    atexit.register(finish)


def settle(jvm_pid: int, recording: str, path: str, lock: str, java: str, classpath: str,
           timeout: float = 300.0) -> bool:
    """Wait for the recording JVM to exit, then keep its archive if a JVM can map it."""
    try:
        deadline = time.monotonic() + timeout
        while _alive(jvm_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(jvm_pid) or not _valid(java, classpath, recording):
            return False
        os.replace(recording, path)
        return True
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("no JVM archive recorded: %s", exc)
        return False
    finally:
        _remove(recording)
        _remove(lock)


if __name__ == "__main__":
    pid, recording_file, archive_file, lock_file, java_exe = sys.argv[1:6]
    settle(int(pid), recording_file, archive_file, lock_file, java_exe, os.environ.get("JAMPI_ARCHIVE_CLASSPATH", ""))
