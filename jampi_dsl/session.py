"""The Spark session jampi runs on: found, or started and configured.

An active session (spark-submit, a notebook) is reused as it is. Otherwise
jampi starts one: by default an embedded ``local[N]`` with enough slots for a
2×2 Cannon grid even on a 2-core machine, bound to loopback, quiet, and with
workers running this very interpreter.

The driver JVM it launches is :mod:`.driver_jvm`'s (its output and its end);
what a running session can tell the planner is :mod:`.cluster`'s. A
``spark://`` master is checked for reachability before any JVM starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import types
import warnings
from urllib.parse import urlparse

from . import cluster, driver_jvm
from .cluster import (  # noqa: F401
    _local_slots,  # noqa: F401 - re-exported: callers and tests read it here
    dynamic_allocation,
    grid_side,
    resources_from_spark,
    task_cpus,
    task_slots,
)
from .driver_jvm import _NOISE, show_spark_output  # noqa: F401 - re-exported for the CLI and tests
from .errors import ExecutionError
from .spark_internals import active_context, gateway, jvm

log = logging.getLogger(__name__)

_LOOPBACK = "127.0.0.1"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# The session jampi started itself; stop_spark() never stops one it merely reused.
_owned = None
# How long a connection to a spark:// master may take before it counts as unreachable.
REACH_TIMEOUT = 5.0

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
    from pyspark.sql import SparkSession

    if _owned is not None and active_context() is _owned.sparkContext:
        return _owned
    active = SparkSession.getActiveSession()
    if active is None and active_context() is not None:
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
            launched = driver_jvm.current()
            if archive is not None and (launched is None or launched.recording is not archive):
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
    from . import jvm_archive

    try:
        system = jvm().System
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
        if gateway() is not None or os.environ.get("PYSPARK_GATEWAY_PORT"):
            return OwnSession(SparkContext.getOrCreate(conf))
        return OwnSession(SparkContext(conf=conf, gateway=driver_jvm.launch(conf)))


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
    from . import jvm_archive

    options = settings.get("spark.driver.extraJavaOptions", "")
    if (not jvm_archive.enabled() or gateway() is not None or os.environ.get("PYSPARK_GATEWAY_PORT")
            or jvm_archive.user_has_cds(options)):
        return None
    archive = jvm_archive.Archive(java or _check_java())
    extra = archive.java_options(options)
    if not extra:
        return None
    settings["spark.driver.extraJavaOptions"] = f"{options} {extra}".strip()
    driver_jvm.carry_archive(archive)
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
        cluster.forget(_owned)
        _owned.stop()
        _owned = None


class _CallableModule(types.ModuleType):
    """``jampi_dsl.session(...)`` is the API's entry point, but once this module is imported
    Python binds ``jampi_dsl.session`` to the module itself; so the module is callable too.

    It makes the package's (lazily exported) ``Session``: the API uses this module, and this
    module does not import the API back."""

    def __call__(self, *args, **kwargs):
        from . import Session

        return Session(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
