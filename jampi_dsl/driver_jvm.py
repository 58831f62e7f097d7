"""The driver JVM this process launches: its stderr through a filter, and its end.

A JVM jampi launches is its child for good: its stderr passes through a filter
(the JVM's own start-up notices are dropped unless verbose), and when this
process exits the JVM is ended and waited for, with whatever it started, so no
process outlives a ``jampi run``. A JVM that records the class archive
(:mod:`.jvm_archive`) writes it as it exits; that is waited for and checked here.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import subprocess
import sys
import threading
import time

from .spark_internals import accumulator_server, active_context, gateway_process, launch_gateway

log = logging.getLogger(__name__)

# The driver JVM this process launched (a _Jvm), ended at exit; None when Spark's JVM is another's.
_jvm = None
# Whether the JVM's own notices reach stderr (jampi run --verbose, JAMPI_VERBOSE=1).
_verbose = False
# Lines the driver JVM prints on every start that tell a user nothing: the launcher's note on
# the module Spark adds, and netlib's (MLlib's BLAS) failing to find a native library, after
# which it uses its Java one.
_NOISE = re.compile(rb"^(WARNING: Using incubator modules: |netlib-\w+: .*dlopen)")


def current():
    """The JVM this process launched and has not ended yet, or None."""
    return _jvm


def carry_archive(archive) -> None:
    """The class archive whose options the next launch carries (recorded at that JVM's exit)."""
    global _launching_archive
    _launching_archive = archive


def show_spark_output(show: bool = True) -> None:
    """Let the driver JVM's own start-up notices through to stderr (``jampi run --verbose``).

    By default jampi drops the few lines every start prints that tell a user nothing
    (see ``_NOISE``); everything else the JVM prints, Spark's errors included, goes
    through. ``JAMPI_VERBOSE=1`` does the same as ``show_spark_output()``."""
    global _verbose
    _verbose = show


def _showing_spark_output() -> bool:
    return _verbose or os.environ.get("JAMPI_VERBOSE", "").strip().lower() not in ("", "0", "false", "no", "off")


class _JvmOutput:
    """The driver JVM's stderr, passed on to this process's stderr line by line by a thread.

    Lines that match ``_NOISE`` are dropped unless :func:`show_spark_output`. Until the JVM
    is up its lines are held: on a failed start they explain the failure (the error's
    message), instead of being printed once per attempt."""

    def __init__(self):
        read, self.write_fd = os.pipe()
        self._held: list[bytes] | None = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, args=(read,), name="jampi-jvm-stderr", daemon=True)
        self._thread.start()

    def _pump(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as stream:
            for line in stream:
                if _NOISE.match(line) and not _showing_spark_output():
                    continue
                with self._lock:
                    if self._held is not None:
                        self._held.append(line)
                        continue
                _write_stderr(line)

    def close_writer(self) -> None:
        """This process's copy of the pipe's write end; the JVM keeps its own."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def release(self) -> None:
        """The JVM is up: what it said so far, and all it says from now on, goes to stderr."""
        with self._lock:
            held, self._held = self._held or [], None
        for line in held:
            _write_stderr(line)

    def failure(self) -> str | None:
        """After the JVM died on the way up: the line that says why (the rest goes to stderr
        under --verbose)."""
        self.close_writer()
        self._thread.join(timeout=10)
        with self._lock:
            held, self._held = self._held or [], None
        lines = [line.decode(errors="replace").rstrip() for line in held]
        if _showing_spark_output():
            for line in held:
                _write_stderr(line)
        useful = [line for line in lines if line.strip() and not line.startswith("#")
                  and not line.startswith("Error: Could not create the Java Virtual Machine")
                  and not line.startswith("Error: A fatal exception has occurred")]
        return useful[0] if useful else None

    def join(self, timeout: float) -> None:
        self.close_writer()
        self._thread.join(timeout=timeout)
        self.release()


def _write_stderr(line: bytes) -> None:
    try:
        sys.stderr.flush()
        os.write(2, line)
    except (OSError, ValueError):
        pass


class _Jvm:
    """The driver JVM this process launched, and the archive it records (if it does)."""

    def __init__(self, proc, output: _JvmOutput):
        self.proc = proc
        self.output = output
        self.recording = None  # a jvm_archive.Archive whose recording this JVM writes at exit
        self.java = self.classpath = ""  # the JVM's own, to check what it recorded


_launching_archive = None  # the Archive whose options the next launch carries (see _with_jvm_archive)


def launch(conf):
    """Launch the gateway JVM as PySpark does, with its stderr through a :class:`_JvmOutput`,
    and see to it that it ends when this process does."""
    global _jvm, _launching_archive
    output = _JvmOutput()
    try:
        gateway = launch_gateway(conf, output.write_fd)
    except Exception as exc:
        exc.jvm_said = output.failure()
        raise
    finally:
        output.close_writer()
    output.release()
    _jvm = _Jvm(gateway_process(gateway), output)
    archive, _launching_archive = _launching_archive, None
    options = conf.get("spark.driver.extraJavaOptions", "") or ""
    if archive is not None and archive.recording is not None and archive.recording in options:
        try:
            system = gateway.jvm.System
            _jvm.java = os.path.join(system.getProperty("java.home"), "bin", "java")
            _jvm.classpath = system.getProperty("java.class.path")
            _jvm.recording = archive
        except Exception as exc:  # noqa: BLE001 - no archive this time; the next start records again
            log.debug("no JVM archive recorded: %s", exc)
    _register_end()
    return gateway


_registered = False


def _register_end() -> None:
    global _registered
    if not _registered:
        atexit.register(_end_jvm)
        _registered = True


def _end_jvm(timeout: float = 30.0, recording_timeout: float = 600.0) -> None:
    """End the driver JVM this process launched and wait for it, and for the processes it
    started (Python workers), so that none outlives this one. A JVM that records the class
    archive writes it as it exits: that is waited for too (once, said on stderr), and the
    archive is checked and kept before this returns."""
    global _jvm
    jvm, _jvm = _jvm, None
    if jvm is None or jvm.proc is None:
        return
    proc, archive = jvm.proc, jvm.recording
    try:
        if proc.poll() is None:
            import psutil

            if archive is not None:
                _write_stderr(b"jampi: saving the JVM's class archive for faster Spark starts (once)...\n")
            # The JVM stops its SparkContext as it exits (Spark's shutdown hook). A stop() from
            # here would take a second more, waiting on this side's accumulator server; that
            # server only needs to take the JVM's hanging up as the end, not print a trace.
            server = accumulator_server(active_context())
            if server is not None:
                server.handle_error = lambda request, address: None
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                children = []
            try:
                proc.stdin.close()  # Spark's gateway exits on EOF (and dumps the archive as it does)
            except (OSError, AttributeError):
                pass
            try:
                proc.wait(timeout=recording_timeout if archive is not None else timeout)
            except subprocess.TimeoutExpired:
                log.warning("the Spark driver JVM did not exit in time: killed it")
                proc.kill()
                proc.wait()
                if archive is not None:
                    archive.abandon_recording()
            # Its Python workers end when they see it gone; any that does not is ended here.
            for child in _still_running(children, timeout=10):
                with contextlib.suppress(psutil.Error):
                    child.kill()
        jvm.output.join(timeout=5)
        if archive is not None and archive.recording is not None:
            if proc.returncode == 0 and archive.keep_recording(jvm.java, jvm.classpath):
                log.debug("JVM archive kept: %s", archive.path)
            else:
                archive.abandon_recording()
    except BaseException as exc:  # Ctrl-C while waiting, say: end it now, keep nothing half-made
        log.debug("ending the Spark driver JVM: %r", exc)
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)
        if archive is not None:
            archive.abandon_recording()


def _still_running(procs, timeout: float) -> list:
    """Those of ``procs`` (psutil processes) still running after up to ``timeout`` seconds.

    A zombie has ended: its parent (the JVM, now gone) never reaps it, init does, in time."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        running = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    running.append(proc)
        if not running or time.monotonic() >= deadline:
            return running
        procs = running
        time.sleep(0.02)
