"""The Spark session jampi runs on, and what it can tell about its resources.

An active session (spark-submit, a notebook) is reused as it is. Otherwise
jampi starts one: by default an embedded ``local[N]`` with enough slots for a
2×2 Cannon grid even on a 2-core machine, bound to loopback, quiet, and with
workers running this very interpreter.

A driver JVM jampi launches is its child for good: its stderr passes through a
filter (the JVM's own start-up notices are dropped unless verbose), and when
this process exits the JVM is ended and waited for, with whatever it started,
so no process outlives a ``jampi run``. A ``spark://`` master is checked for
reachability before any JVM starts.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import warnings
from urllib.parse import urlparse

from .errors import ExecutionError

log = logging.getLogger(__name__)

_LOOPBACK = "127.0.0.1"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# The session jampi started itself; stop_spark() never stops one it merely reused.
_owned = None
# applicationId -> slots once they stopped changing (executors register asynchronously).
_settled_slots: dict[str, int] = {}
# The driver JVM this process launched (a _Jvm), ended at exit; None when Spark's JVM is another's.
_jvm = None
# Whether the JVM's own notices reach stderr (jampi run --verbose, JAMPI_VERBOSE=1).
_verbose = False
# How long a connection to a spark:// master may take before it counts as unreachable.
REACH_TIMEOUT = 5.0
# Lines the driver JVM prints on every start that tell a user nothing: the launcher's note on
# the module Spark adds, and netlib's (MLlib's BLAS) failing to find a native library, after
# which it uses its Java one.
_NOISE = re.compile(rb"^(WARNING: Using incubator modules: |netlib-\w+: .*dlopen)")

# Keeps Spark's start-up chatter off the console. The root level stays WARN because
# Spark prints a "Setting default log level" banner when a shell's root level is
# anything else; get_spark() lowers it to ERROR once the session is up.
_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.hadoop.name = org.apache.hadoop.util.NativeCodeLoader
logger.hadoop.level = error
"""


def default_master() -> str:
    """``local[N]``: at least 4 slots so a 2×2 grid fits, 2 per core beyond that."""
    return f"local[{max(4, 2 * (os.cpu_count() or 1))}]"


def default_driver_memory() -> str:
    """A quarter of the machine's RAM, at least 1 GiB and at most 64 GiB.

    In local mode the executors live in the driver JVM, so this is the memory
    for every cached block as well as for collecting results.
    """
    import psutil

    gib = psutil.virtual_memory().total // 2**30
    return f"{min(64, max(1, gib // 4))}g"


def _is_loopback_master(master: str) -> bool:
    if master.startswith("local"):
        return True
    host = urlparse(master).hostname
    return host is not None and host in _LOOPBACK_HOSTS


def _log4j2_file() -> str:
    path = os.path.join(tempfile.gettempdir(), f"jampi-log4j2-{os.getuid()}.properties")
    try:
        with open(path) as f:
            if f.read() == _LOG4J2:
                return path
    except OSError:
        pass
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(_LOG4J2)
    os.replace(tmp, path)
    return path


def _check_java() -> str:
    """The ``java`` Spark will launch (found as spark-class finds it); fails with one line
    before PySpark tries (and prints a page) to launch a JVM."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = os.path.join(home, "bin", "java")
        if not os.access(java, os.X_OK):
            raise ExecutionError(f"Java not found: JAVA_HOME={home} has no bin/java (Spark needs Java 17 or 21)")
        return java
    java = shutil.which("java")
    if java is None:
        raise ExecutionError("Java not found: install Java 17 or 21, or set JAVA_HOME (Spark needs a JVM)")
    return java


def session_conf(master: str | None = None, conf: dict[str, str] | None = None) -> dict[str, str]:
    """The configuration jampi starts a new session with (user ``conf`` wins)."""
    master = master or default_master()
    memory = default_driver_memory()
    settings = {
        "spark.master": master,
        "spark.app.name": "jampi",
        "spark.driver.memory": memory,
        # Collecting a matrix is a normal operation here, not an accident to guard against.
        "spark.driver.maxResultSize": memory,
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        "spark.python.worker.reuse": "true",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{_log4j2_file()}",
    }
    if _is_loopback_master(master):
        settings["spark.driver.host"] = _LOOPBACK
        settings["spark.driver.bindAddress"] = _LOOPBACK
    settings.update({str(k): str(v) for k, v in (conf or {}).items()})
    return settings


class OwnSession:
    """The session jampi started: its SparkContext at once, its SparkSession on first use.

    Making the SparkSession costs ~2 s of JVM start-up on the project VM (Spark SQL's
    classes), and jampi's own plans only need the SparkContext: blocks, barrier stages,
    broadcasts and MLlib's BlockMatrix are all RDDs. Anything else asked of this object
    is answered by the real SparkSession, made then.
    """

    def __init__(self, sc):
        self.sparkContext = sc
        self._session = None

    @property
    def session(self):
        if self._session is None:
            from pyspark.sql import SparkSession

            with _without_pandas_warning():
                self._session = SparkSession.builder.getOrCreate()  # wraps the running context
        return self._session

    def __getattr__(self, name: str):
        if name in ("sparkContext", "_session"):  # not set yet (mid-construction): no recursion
            raise AttributeError(name)
        return getattr(self.session, name)

    def stop(self) -> None:
        (self._session or self.sparkContext).stop()


def _existing_session():
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if _owned is not None and SparkContext._active_spark_context is _owned.sparkContext:
        return _owned
    active = SparkSession.getActiveSession()
    if active is None and SparkContext._active_spark_context is not None:
        # A context without a session on this thread (made by other code): wrap, don't restart.
        active = SparkSession.builder.getOrCreate()
    return active


def get_spark(master: str | None = None, conf: dict[str, str] | None = None):
    """The active SparkSession, or a new one configured for jampi.

    ``master`` is any Spark master URL (default: :func:`default_master`);
    ``conf`` holds ``--conf`` pairs, applied last. A reused session keeps its
    configuration; only runtime-modifiable keys of ``conf`` are applied to it.
    A session jampi started itself is restarted when another master is asked for.
    """
    spark = spark_for_plans(master, conf)
    return spark.session if isinstance(spark, OwnSession) else spark


def spark_for_plans(master: str | None = None, conf: dict[str, str] | None = None):
    """What jampi's plans run on: as :func:`get_spark`, except that a session jampi starts
    itself is an :class:`OwnSession`, whose SparkSession is made only when asked for."""
    global _owned
    # jampi.* keys tune the planner, not Spark.
    conf = {k: v for k, v in (conf or {}).items() if not str(k).startswith("jampi.")}
    active = _existing_session()
    if active is not None:
        _require_classic(active)
        owned = _owned is not None and active.sparkContext is _owned.sparkContext
        if owned and master and active.sparkContext.master != master:
            stop_spark()  # jampi's own session on another master: switching is what the caller asked for
            active = None
    if active is not None:
        if master and active.sparkContext.master != master:
            log.warning("using the running Spark session (master %s), not %s", active.sparkContext.master, master)
        for key, value in (conf or {}).items():
            if active.conf.isModifiable(key):
                active.conf.set(key, value)
            else:
                log.warning("ignoring --conf %s: the running Spark session is already configured", key)
        return active

    if os.environ.get("PYSPARK_GATEWAY_PORT") and not master:
        # Under spark-submit (or the pyspark shell) the JVM is already up with the submitted
        # configuration: join it as it is rather than impose jampi's embedded defaults.
        from pyspark.sql import SparkSession

        builder = SparkSession.builder
        for key, value in conf.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()

    java = _check_java()
    settings = session_conf(master, conf)
    master_url = settings["spark.master"]
    _check_reachable(master_url)
    if master_url.startswith("local"):
        # Workers must run this interpreter (its venv and jampi); a stale setting is never right here.
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    else:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if _is_loopback_master(master_url):
        os.environ.setdefault("SPARK_LOCAL_IP", _LOOPBACK)

    spark = _start(settings, _with_jvm_archive(settings, java))
    spark.sparkContext.setLogLevel("ERROR")
    _owned = spark
    return spark


def show_spark_output(show: bool = True) -> None:
    """Let the driver JVM's own start-up notices through to stderr (``jampi run --verbose``).

    By default jampi drops the few lines every start prints that tell a user nothing
    (see ``_NOISE``); everything else the JVM prints, Spark's errors included, goes
    through. ``JAMPI_VERBOSE=1`` does the same as ``show_spark_output()``."""
    global _verbose
    _verbose = show


def _showing_spark_output() -> bool:
    return _verbose or os.environ.get("JAMPI_VERBOSE", "").strip().lower() not in ("", "0", "false", "no", "off")


def _master_addresses(master: str) -> list[tuple[str, int]]:
    """The host:port pairs of a ``spark://`` master URL (several for a standby setup)."""
    addresses = []
    for part in master[len("spark://"):].split(","):
        parsed = urlparse(f"spark://{part.strip()}")
        try:
            port = parsed.port or 7077
        except ValueError:  # Spark rejects the URL itself, with its own message
            continue
        if parsed.hostname:
            addresses.append((parsed.hostname, port))
    return addresses


def _check_reachable(master: str, timeout: float | None = None) -> None:
    """Fail at once, in one line, when no master of a ``spark://`` URL accepts a connection.

    Spark itself would try for a minute, print a Java stack trace per try, and then go
    on without executors."""
    if not master.startswith("spark://"):
        return
    timeout = REACH_TIMEOUT if timeout is None else timeout
    reasons = []
    for host, port in _master_addresses(master):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except TimeoutError:
            reasons.append(f"no answer in {timeout:g} s")
        except OSError as exc:
            reasons.append((exc.strerror or type(exc).__name__).lower())
    if reasons:
        raise ExecutionError(f"cannot reach {master} ({'; '.join(dict.fromkeys(reasons))})")


def _start(settings: dict[str, str], archive):
    try:
        return _build(settings)
    except Exception as exc:  # PySpark raises several types here; the first line says what went wrong
        if archive is None or not _jvm_exited(exc):
            if archive is not None and (_jvm is None or _jvm.recording is not archive):
                archive.abandon_recording()  # else the JVM is up: it records all the same, at exit
            raise _start_error(settings, exc) from exc
    # The JVM died on the way up with the archive's options: try without them. Whether the
    # archive was at fault is then checked, not guessed: a bad --conf fails this way too.
    attempted = time.time()
    key = "spark.driver.extraJavaOptions"
    settings[key] = _without_archive(settings[key], archive.options)
    try:
        spark = _build(settings)
    except Exception as exc:
        archive.abandon_recording()  # the archive (if any) stays: Spark fails without it as well
        raise _start_error(settings, exc) from exc
    if archive.recording is not None:
        archive.abandon_recording()  # the next start records again
    elif _archive_is_damaged(archive):
        log.warning("the JVM could not map its class archive %s: dropped it; Spark started without it",
                    archive.path)
        archive.discard(since=attempted - 1)
    return spark


def _archive_is_damaged(archive) -> bool:
    """Whether a JVM like the running one (its java, its class path) fails to map ``archive``."""
    from pyspark import SparkContext

    from . import jvm_archive

    try:
        system = SparkContext._jvm.System
        java = os.path.join(system.getProperty("java.home"), "bin", "java")
        classpath = system.getProperty("java.class.path")
        return not jvm_archive.valid(java, classpath, archive.path)
    except Exception as exc:  # noqa: BLE001 - unsure: keep it
        log.debug("could not check the JVM archive: %s", exc)
        return False


def _jvm_exited(exc: Exception) -> bool:
    """The driver JVM died before it was up (what a damaged archive does), not a later error."""
    condition = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)
    return callable(condition) and condition() == "JAVA_GATEWAY_EXITED"


def _start_error(settings: dict[str, str], exc: Exception) -> ExecutionError:
    said = getattr(exc, "jvm_said", None)  # what the JVM printed before it died, if it died
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return ExecutionError(f"could not start Spark with master {settings['spark.master']}: {(said or first).strip()}")


def _build(settings: dict[str, str]) -> OwnSession:
    from pyspark import SparkConf, SparkContext

    conf = SparkConf().setAll(list(settings.items()))
    with _without_pandas_warning():
        if SparkContext._gateway is not None or os.environ.get("PYSPARK_GATEWAY_PORT"):
            return OwnSession(SparkContext.getOrCreate(conf))
        return OwnSession(SparkContext(conf=conf, gateway=_launch(conf)))


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


def _launch(conf):
    """Launch the gateway JVM as PySpark does, with its stderr through a :class:`_JvmOutput`,
    and see to it that it ends when this process does."""
    from pyspark.java_gateway import launch_gateway

    global _jvm, _launching_archive
    output = _JvmOutput()
    try:
        gateway = launch_gateway(conf, popen_kwargs={"stderr": output.write_fd})
    except Exception as exc:
        exc.jvm_said = output.failure()
        raise
    finally:
        output.close_writer()
    output.release()
    _jvm = _Jvm(gateway.proc, output)
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
            from pyspark import SparkContext

            if archive is not None:
                _write_stderr(b"jampi: saving the JVM's class archive for faster Spark starts (once)...\n")
            # The JVM stops its SparkContext as it exits (Spark's shutdown hook). A stop() from
            # here would take a second more, waiting on this side's accumulator server; that
            # server only needs to take the JVM's hanging up as the end, not print a trace.
            server = getattr(SparkContext._active_spark_context, "_accumulatorServer", None)
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


@contextlib.contextmanager
def _without_pandas_warning():
    """PySpark warns about the pandas version on every start; jampi does not use pandas-on-Spark."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyspark\..*")
        yield


def _without_archive(options: str, added: str) -> str:
    """``options`` as they were before the archive's ``added`` options were appended to them."""
    return options[: -len(added)].rstrip() if added and options.endswith(added) else options


def _with_jvm_archive(settings: dict[str, str], java: str | None = None):
    """Add the class-data-sharing archive to the driver JVM's options (see jvm_archive.py).

    Only when this process launches the JVM now, and the user has not set CDS options."""
    from pyspark import SparkContext

    from . import jvm_archive

    global _launching_archive
    options = settings.get("spark.driver.extraJavaOptions", "")
    if (not jvm_archive.enabled() or SparkContext._gateway is not None or os.environ.get("PYSPARK_GATEWAY_PORT")
            or jvm_archive.user_has_cds(options)):
        return None
    archive = jvm_archive.Archive(java or _check_java())
    extra = archive.java_options(options)
    if not extra:
        return None
    settings["spark.driver.extraJavaOptions"] = f"{options} {extra}".strip()
    _launching_archive = archive
    return archive


def _require_classic(spark) -> None:
    try:
        spark.sparkContext  # noqa: B018 - Spark Connect sessions raise here
    except Exception as exc:
        raise ExecutionError("jampi needs a classic Spark session with RDDs; Spark Connect is not supported") from exc


def stop_spark() -> None:
    """Stop the session jampi started, if any (a reused session is left running)."""
    global _owned
    if _owned is not None:
        _settled_slots.pop(_owned.sparkContext.applicationId, None)
        _owned.stop()
        _owned = None


def task_cpus(spark) -> int:
    return int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))


def dynamic_allocation(spark) -> bool:
    return spark.sparkContext.getConf().get("spark.dynamicAllocation.enabled", "false").strip().lower() == "true"


def _local_slots(master: str) -> int | None:
    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master)
    if m:
        n = m.group(1)
        return (os.cpu_count() or 1) if n in (None, "*") else int(n)
    m = re.fullmatch(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*\d+\s*\]", master)
    if m:
        return int(m.group(1)) * int(m.group(2))
    return None


def _current_slots(sc) -> int:
    """Concurrent task slots of the registered executors, as the barrier scheduler counts them."""
    try:
        jsc = sc._jsc.sc()
        return int(jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile()))
    except Exception:  # internal API moved: defaultParallelism is total cores on most backends
        return sc.defaultParallelism // max(1, int(sc.getConf().get("spark.task.cpus", "1")))


def _expected_slots(sc, cpus: int) -> int | None:
    conf = sc.getConf()
    if conf.contains("spark.cores.max"):
        return int(conf.get("spark.cores.max")) // cpus
    if conf.contains("spark.executor.instances") and conf.contains("spark.executor.cores"):
        return int(conf.get("spark.executor.instances")) * int(conf.get("spark.executor.cores")) // cpus
    return None


def task_slots(spark, *, timeout: float = 30.0, settle: float = 2.0) -> int:
    """Total concurrent task slots: executor cores / ``spark.task.cpus``.

    Local masters answer at once. On a cluster executors register
    asynchronously after the session starts, so this waits (at most
    ``timeout`` seconds) until the expected cores are there, or, when the
    configuration does not say how many to expect, until the count has been
    positive and unchanged for ``settle`` seconds.
    """
    sc = spark.sparkContext
    cpus = task_cpus(spark)
    local = _local_slots(sc.master)
    if local is not None:
        return max(1, local // cpus)
    app = sc.applicationId
    dynamic = dynamic_allocation(spark)
    if app in _settled_slots and not dynamic:
        return _settled_slots[app]
    expected = _expected_slots(sc, cpus)
    deadline = time.monotonic() + timeout
    slots, since = _current_slots(sc), time.monotonic()
    while time.monotonic() < deadline:
        if expected is not None and slots >= expected:
            break
        if expected is None and slots > 0 and time.monotonic() - since >= settle:
            break
        time.sleep(0.25)
        now = _current_slots(sc)
        if now != slots:
            slots, since = now, time.monotonic()
    if slots > 0 and not dynamic:
        _settled_slots[app] = slots
    return slots


def grid_side(slots: int) -> int:
    """The side q of the largest q×q grid of tasks that fits in ``slots``."""
    return max(1, math.isqrt(max(1, slots)))


def resources_from_spark(spark):
    """The planner's view of a running session: slots, cores, memory per task, dynamic allocation."""
    import psutil

    from .planner.cost import Resources

    sc = spark.sparkContext
    conf = sc.getConf()
    cpus = task_cpus(spark)
    slots = task_slots(spark)
    machine = psutil.virtual_memory().total
    local = _local_slots(sc.master) is not None
    cores = min(os.cpu_count() or 1, slots * cpus) if local else slots * cpus
    executor_memory = _bytes(conf.get("spark.executor.memory", "1g"))
    per_executor = int(conf.get("spark.executor.cores", str(max(1, slots * cpus)))) // cpus or 1
    task_memory = int(machine * 0.5 / max(1, slots)) if local else int(executor_memory * 1.5 / per_executor)
    return Resources(
        spark=True,
        slots=slots,
        task_cpus=cpus,
        local_cores=os.cpu_count() or 1,
        driver_budget=int(machine * 0.4),  # NumPy on the driver runs in Python, outside the JVM heap
        task_memory=task_memory,
        dynamic_allocation=dynamic_allocation(spark),
        master=sc.master,
        cores=max(1, cores),
        executors=1 if local else max(1, slots // per_executor),
    )


def _bytes(text: str) -> int:
    """Spark memory strings: 512m, 3g, 1024k, or bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*", text.lower())
    if not m:
        return 2**30
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2)]
    return int(float(m.group(1)) * scale)


class _CallableModule(types.ModuleType):
    """``jampi_dsl.session(...)`` is the API's entry point, but once this module is imported
    Python binds ``jampi_dsl.session`` to the module itself; so the module is callable too."""

    def __call__(self, *args, **kwargs):
        from .api import session

        return session(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
