"""Starting Spark from `jampi run`: an unreachable master fails fast in one line, nothing
outlives the run, nothing of the user's is removed, and Spark's start-up chatter stays off
the terminal unless asked for.

Each run is a child `python -m jampi_dsl run` with a timeout: the session-scoped ``spark``
fixture holds this process's one SparkContext, and these need fresh drivers of their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from jampi_dsl import jvm_archive
from jampi_dsl.errors import ExecutionError
from jampi_dsl.session import _NOISE, _check_java, _check_reachable, _master_addresses

needs_java = pytest.mark.skipif(shutil.which("java") is None and not os.environ.get("JAVA_HOME"),
                                reason="no java")
PROGRAM = "A = random(600, 600, seed=1)\nprint(sum(A @ A))\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_GATEWAY_PORT", "JAMPI_VERBOSE")}
    env.update(extra)
    return env


def _jampi_run(cwd, *args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    """``jampi run`` in a child process (its own process group, killed whole on a timeout)."""
    child = subprocess.Popen([sys.executable, "-m", "jampi_dsl", "run", *args], cwd=cwd, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        pytest.fail(f"jampi run {' '.join(args)} timed out after {timeout} s\nstderr:\n{err[-3000:]}")
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


@pytest.fixture
def program(tmp_path):
    path = tmp_path / "prog.lin"
    path.write_text(PROGRAM)
    return path


# --- (9) an unreachable master ----------------------------------------------------------------


def test_master_addresses_and_reachability():
    assert _master_addresses("spark://127.0.0.1:7078") == [("127.0.0.1", 7078)]
    assert _master_addresses("spark://a:1,b:2") == [("a", 1), ("b", 2)]
    assert _master_addresses("spark://h") == [("h", 7077)]
    _check_reachable("local[4]")  # only spark:// masters are checked
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        _check_reachable(f"spark://127.0.0.1:{port}")
        # A standby setup is reachable when one of its masters is.
        _check_reachable(f"spark://127.0.0.1:{_free_port()},127.0.0.1:{port}")
    closed = _free_port()
    started = time.monotonic()
    with pytest.raises(ExecutionError, match=rf"cannot reach spark://127.0.0.1:{closed} \(connection refused\)$"):
        _check_reachable(f"spark://127.0.0.1:{closed}")
    assert time.monotonic() - started < 5


@needs_java
@pytest.mark.parametrize("executor", ["auto", "cannon"])
def test_an_unreachable_master_fails_fast_in_one_line(tmp_path, program, executor):
    """Not a minute and a half of Java traces and then a silent local run (or, with cannon,
    a misleading "no task slots"): one line, exit 1, at once, and no JVM left behind."""
    master = f"spark://127.0.0.1:{_free_port()}"  # nothing listens there
    marker = uuid.uuid4().hex
    started = time.monotonic()
    done = _jampi_run(tmp_path, str(program), "--master", master, "--executor", executor,
                      env=_env(JAMPI_TEST_RUN=marker), timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-3000:]
    assert elapsed < 30
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot reach {master}" in lines[0], done.stderr[-3000:]
    assert "Exception" not in done.stderr and "at org.apache" not in done.stderr
    assert done.stdout == ""  # no fallback to a local run
    assert _leftovers(marker, str(tmp_path)) == []


# --- (16) nothing outlives a run; nothing of the user's is removed ------------------------------


def _leftovers(marker: str, cache: str) -> list[str]:
    """Processes started by the run marked ``marker`` (they inherit its environment), or that
    name its cache folder or the old archive watcher, still running."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["pid"] in mine or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.environ()
        except psutil.Error:
            continue
        if environ.get("JAMPI_TEST_RUN") == marker or cache in cmdline or "jampi_dsl.jvm_archive" in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline[:200]}")
    return found


@needs_java
def test_no_process_outlives_a_run_and_a_bad_conf_keeps_the_archive(tmp_path, program):
    """The first run records the JVM's class archive in the foreground (saying so in one line)
    and leaves no process behind it: no watcher, no JVM, no Python worker. A run that fails on
    the user's own options (a bad --conf) leaves a valid archive alone. A file in the working
    folder that jampi did not make (an hs_err log of some JVM) is never removed."""
    cache = tmp_path / "cache"
    folder = cache / "jvm"
    work = tmp_path / "work"
    work.mkdir()
    archive = jvm_archive.Archive(_check_java(), str(folder))
    users = work / "hs_err_pid123.log"
    users.write_text(f"# a crash log of the user's\njvm_args: -XX:SharedArchiveFile={archive.path}\n")
    marker = uuid.uuid4().hex
    env = _env(JAMPI_CACHE_DIR=str(cache), JAMPI_JVM_ARCHIVE="1", JAMPI_TEST_RUN=marker)

    first = _jampi_run(work, str(program), "--executor", "cannon", env=env)
    assert _leftovers(marker, str(cache)) == []  # checked at once: the run has ended all it started
    assert first.returncode == 0, first.stderr[-3000:]
    assert "sum(A @ A) = " in first.stdout
    assert "saving the JVM's class archive" in first.stderr
    assert os.path.exists(archive.path)  # recorded and checked before the run exited
    assert sorted(os.listdir(folder)) == [os.path.basename(archive.path)]
    assert users.exists()

    recorded = os.stat(archive.path)
    bad = _jampi_run(work, str(program), "--executor", "cannon", "--conf", "spark.driver.memory=banana", env=env)
    assert _leftovers(marker, str(cache)) == []
    assert bad.returncode == 1, bad.stderr[-3000:]
    assert "banana" in bad.stderr and "Traceback" not in bad.stderr
    assert os.path.exists(archive.path), "a start that failed on the user's --conf deleted a valid archive"
    assert os.stat(archive.path).st_ino == recorded.st_ino
    assert users.exists() and sorted(os.listdir(work)) == [users.name]

    # The archive is used as it was, without a word about it.
    again = _jampi_run(work, str(program), "--executor", "cannon", "--quiet", env=env)
    assert _leftovers(marker, str(cache)) == []
    assert again.returncode == 0 and again.stderr == "", again.stderr[-3000:]
    assert os.stat(archive.path).st_ino == recorded.st_ino


# --- (17) Spark's start-up chatter ---------------------------------------------------------------


def test_the_noise_filter_drops_only_the_start_up_notices():
    assert _NOISE.match(b"WARNING: Using incubator modules: jdk.incubator.vector\n")
    assert _NOISE.match(b"netlib-blas: JNI_OnLoad: dlopen(libblas.so.3) failed: libblas.so.3: cannot open\n")
    assert _NOISE.match(b"netlib-lapack: JNI_OnLoad: dlopen(liblapack.so.3) failed: x\n")
    for kept in (b"26/01/01 10:00:00 ERROR Executor: Exception in task 0.0\n", b"WARNING: something else\n",
                 b"java.lang.OutOfMemoryError: Java heap space\n", b"Invalid maximum heap size: -Xmxbanana\n"):
        assert not _NOISE.match(kept)


@needs_java
def test_spark_start_up_notices_stay_off_the_terminal_unless_verbose(tmp_path, program):
    """The JVM launcher's incubator-module warning and netlib's failed dlopen (MLlib) are not a
    user's business on a normal run; --verbose shows them."""
    env = _env(JAMPI_JVM_ARCHIVE="0")  # about the JVM's output, not its start-up time
    quiet = _jampi_run(tmp_path, str(program), "--executor", "mllib", "--quiet", env=env)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "sum(A @ A) = " in quiet.stdout
    assert "incubator" not in quiet.stderr and "netlib" not in quiet.stderr, quiet.stderr[-3000:]

    verbose = _jampi_run(tmp_path, str(program), "--executor", "mllib", "--quiet", "--verbose", env=env)
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "WARNING: Using incubator modules" in verbose.stderr
