"""Shared fixtures: an embedded Spark session and a real standalone cluster.

Only one SparkContext can live in a Python process, and the session-scoped
``spark`` fixture holds the embedded ``local[N]`` one for the whole run. So a
test that needs the standalone cluster does not switch masters in this
process: it runs its code in a child Python (``on_cluster``), whose driver
connects to the cluster. That keeps the local session intact for the tests
after it, and a crash or hang on the cluster side cannot take the test
process down (the child has a timeout).

The cluster (a master and 2 workers of 2 cores each, all on 127.0.0.1) is
started from PySpark's own ``bin/spark-class`` on free ports, so it cannot
collide with another cluster on this machine, and is stopped by killing each
process group (the workers' executors included).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import settings

# CI replays the same generated examples every run (derandomized), so a run that
# passed on one machine passes on the next; locally each run explores new ones.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("JAMPI_CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_START_TIMEOUT = 90.0
WORKERS = 2
WORKER_CORES = 2


def pytest_collection_modifyitems(items):
    # A test that uses a fixture needing Spark is a Spark test, whether or not it says so.
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "spark" in names:
            item.add_marker(pytest.mark.spark)
        if "standalone_cluster" in names or "on_cluster" in names:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def spark():
    """The embedded default session (``get_spark()``), stopped at the end of the run.

    The fixture, not jampi, owns it: code under test that ends "the session
    jampi started" (``stop_spark()``, ``Session.close()``) or asks for another
    master must not stop it under the tests that come after; to jampi it looks
    like a session someone else started, which it reuses and leaves running.
    """
    # importlib: ``from jampi_dsl import session`` could return the API function of that name.
    jampi_session = importlib.import_module("jampi_dsl.session")
    spark_session = jampi_session.get_spark()
    jampi_session._owned = None
    yield spark_session
    spark_session.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def _master_state(webui_port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json/", timeout=2) as r:
            return json.load(r)
    except (OSError, ValueError):
        return None


def _stop(procs: list[subprocess.Popen]) -> None:
    # Workers first: they take their executors with them (same process group).
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in reversed(procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if all(p.poll() is not None for p in procs):
            break
    for p in procs:
        # The JVM may be gone while an executor it launched lives on in its group.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Cluster:
    """A Spark standalone master and its workers on 127.0.0.1, each in its own process group."""

    def __init__(self, logs: Path, workers: int = WORKERS, cores: int = WORKER_CORES):
        self.home = _spark_home()
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, SPARK_HOME=self.home, SPARK_LOCAL_IP="127.0.0.1",
                        PYSPARK_PYTHON=sys.executable)
        self.port, self.webui = _free_port(), _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.master: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.cores = cores
        try:
            self.master = self._launch("master", "org.apache.spark.deploy.master.Master", "--host",
                                       "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.webui))
            for i in range(workers):
                work = logs / f"worker{i}"
                work.mkdir()
                self.workers.append(self._launch(
                    f"worker{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                    "--cores", str(cores), "--memory", "3g", "--webui-port", str(_free_port()),
                    "--work-dir", str(work), self.url))
            self._wait_up(workers)
        except BaseException:
            self.stop()
            raise

    def _launch(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as log:
            return subprocess.Popen(
                [os.path.join(self.home, "bin", "spark-class"), *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group, so teardown can kill it whole
            )

    @property
    def procs(self) -> list[subprocess.Popen]:
        return [p for p in [self.master, *self.workers] if p is not None]

    def _wait_up(self, workers: int) -> None:
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT
        while True:
            state = _master_state(self.webui)
            if state and state.get("aliveworkers", 0) >= workers and state.get("cores", 0) >= workers * self.cores:
                return
            dead = [p.args[1] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                tails = "\n".join(f"--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted(self.logs.glob("*.log")))
                raise RuntimeError(f"standalone cluster did not come up (exited: {dead}); logs:\n{tails}")
            time.sleep(0.5)

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i``'s JVM and the executor it launched (same process group)."""
        os.killpg(self.workers[i].pid, signal.SIGKILL)

    def stop(self) -> None:
        _stop(self.procs)


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """A Spark standalone master with 2 workers (2 cores, 3g each) on 127.0.0.1; yields the master URL."""
    cluster = Cluster(tmp_path_factory.mktemp("spark-cluster"))
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def on_cluster(standalone_cluster):
    """Run Python code in a child process whose driver uses the standalone cluster.

    The code sees ``MASTER`` (the cluster URL) and the environment variable
    ``JAMPI_TEST_MASTER``; it should end its own session. Returns stdout;
    fails the test with the child's stderr on a non-zero exit.
    """

    def run(code: str, timeout: float = 240.0) -> str:
        prelude = f"MASTER = {standalone_cluster!r}\n"
        env = dict(os.environ, JAMPI_TEST_MASTER=standalone_cluster, SPARK_LOCAL_IP="127.0.0.1")
        child = subprocess.Popen(
            [sys.executable, "-c", prelude + textwrap.dedent(code)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its JVM too, so a timeout kills both
        )
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            out, err = child.communicate()
            pytest.fail(f"cluster child timed out after {timeout} s\nstdout:\n{out}\nstderr:\n{err[-4000:]}")
        finally:
            try:
                os.killpg(child.pid, signal.SIGKILL)  # a JVM left behind by a child that exited
            except ProcessLookupError:
                pass
        if child.returncode != 0:
            pytest.fail(f"cluster child exited {child.returncode}\nstdout:\n{out}\nstderr:\n{err[-4000:]}")
        return out

    return run
