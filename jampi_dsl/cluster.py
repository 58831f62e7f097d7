"""What a running Spark session can tell the planner: task slots, cores per task, memory,
dynamic allocation. Read-only facts, apart from remembering a cluster's slot count once
its executors stopped registering."""

from __future__ import annotations

import os
import re
import time

from .planner.grid import default_q
from .spark_internals import max_concurrent_tasks

# applicationId -> slots once they stopped changing (executors register asynchronously).
_settled_slots: dict[str, int] = {}


def forget(spark) -> None:
    """Drop what was learnt of ``spark``'s slots (the session is being stopped)."""
    _settled_slots.pop(spark.sparkContext.applicationId, None)


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
        return max_concurrent_tasks(sc)
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


grid_side = default_q  # the side q of the largest q x q grid of tasks that fits in the slots


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
