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
