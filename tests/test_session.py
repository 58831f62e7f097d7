"""The Spark session jampi starts or reuses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jampi_dsl.session import _local_slots, default_master, get_spark, session_conf, task_slots


def test_default_conf_is_loopback_and_quiet():
    conf = session_conf()
    assert conf["spark.master"] == default_master()
    assert _local_slots(conf["spark.master"]) >= 4
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.ui.showConsoleProgress"] == "false"
    assert conf["spark.driver.memory"].endswith("g")
    # User settings come last; a remote master is not forced onto loopback.
    conf = session_conf("spark://10.1.2.3:7077", {"spark.driver.memory": "2g", "spark.task.cpus": 2})
    assert conf["spark.driver.memory"] == "2g" and conf["spark.task.cpus"] == "2"
    assert "spark.driver.host" not in conf
    assert "spark.driver.host" in session_conf("spark://127.0.0.1:7077")


def test_local_slots_parsing():
    assert _local_slots("local") == os.cpu_count()
    assert _local_slots("local[*]") == os.cpu_count()
    assert _local_slots("local[6]") == 6
    assert _local_slots("local[3, 2]") == 3
    assert _local_slots("local-cluster[2, 3, 1024]") == 6
    assert _local_slots("spark://127.0.0.1:7077") is None


def test_missing_java_is_one_clear_line(tmp_path):
    # A fresh interpreter: no session exists, so get_spark() must look for Java first.
    code = (
        "from jampi_dsl.session import get_spark\n"
        "from jampi_dsl.errors import ExecutionError\n"
        "try:\n    get_spark()\n"
        "except ExecutionError as e:\n    print(e)\n    raise SystemExit(e.exit_code)\n"
    )
    for env_extra in ({"JAVA_HOME": str(tmp_path)}, {"PATH": str(tmp_path)}):
        env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
        env.update(env_extra)
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout.count("\n") == 1 and "Java not found" in proc.stdout


@pytest.mark.spark
def test_session_reused_and_sized(spark):
    from jampi_dsl.session import dynamic_allocation, task_cpus

    assert get_spark() is spark  # the active session is reused, never replaced
    assert get_spark(conf={"spark.sql.shuffle.partitions": "7"}) is spark
    assert spark.conf.get("spark.sql.shuffle.partitions") == "7"
    sc = spark.sparkContext
    assert task_slots(spark) == _local_slots(sc.master) >= 4
    assert task_cpus(spark) == 1 and dynamic_allocation(spark) is False
    assert sc.getConf().get("spark.driver.bindAddress") == "127.0.0.1"
    # Python workers run this interpreter, not whatever python3 is first on PATH.
    assert set(sc.parallelize(range(8), 4).map(lambda _: __import__("sys").executable).collect()) == {sys.executable}


_OWN_SESSION = """
import numpy as np
from pyspark import SparkContext
from pyspark.sql import SparkSession
import jampi_dsl as jp
from jampi_dsl import session
spark = session.spark_for_plans()
assert isinstance(spark, session.OwnSession) and session.spark_for_plans() is spark
s = jp.Session(executor="cannon")
a = np.arange(12.0).reshape(3, 4)
got = s.compute(s.matrix(a) @ s.matrix(a.T))[0]
assert np.allclose(got, a @ a.T)
print("products made a SparkSession:", SparkSession.getActiveSession() is not None)
real = session.get_spark()
print("get_spark:", type(real).__name__, real.sparkContext is spark.sparkContext, real is SparkSession.getActiveSession())
print("sql on the same context:", spark.range(3).count(), spark.session is real)
session.stop_spark()
print("stopped:", SparkContext._active_spark_context is None)
"""


def test_jampi_runs_products_without_making_a_sparksession():
    """A SparkSession costs ~2 s of JVM start-up that Cannon never needs: jampi's own session
    makes it only when something asks for it, on the same SparkContext."""
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
    proc = subprocess.run([sys.executable, "-c", _OWN_SESSION], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "products made a SparkSession: False" in proc.stdout
    assert "get_spark: SparkSession True True" in proc.stdout
    assert "sql on the same context: 3 True" in proc.stdout and "stopped: True" in proc.stdout
    assert "FutureWarning" not in proc.stderr
