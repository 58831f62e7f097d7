"""What the planner knows about the machine, and the estimates it compares.

The constants below were measured on this project's machine (2 cores, 24 GiB,
OpenBLAS SkylakeX kernel; see BACKGROUND.md), not guessed. They are the only
tuning knobs of the cost model.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

import psutil

from .. import ops
from . import ir, sparsity

CALIBRATION = {
    # NumPy float64 GEMM on the driver: ~100 GFLOP/s at n=4096 (1.3-1.5 s), float32 about twice that.
    "local_gemm_flops": 100e9,
    # Streaming elementwise work on the driver (read two operands, write one).
    "local_stream_bytes_per_s": 4e9,
    # Fixed cost of anything that runs as a Spark job (scheduling, Python worker start).
    "spark_job_seconds": 0.15,
    # Fixed cost of a Cannon barrier stage: launch, allGather (Spark polls barrier calls once a
    # second), connections, first blocks. Measured 1.3-1.5 s for tiny products (cannon helper).
    "cannon_stage_seconds": 1.4,
    # Raw block bytes between two Python workers over a socket.
    "peer_bytes_per_s": 2e9,
    # Reading cached blocks from the JVM into a Python worker (0.32 s for 64 MB, BACKGROUND.md).
    "jvm_python_bytes_per_s": 2e8,
    # MLlib BlockMatrix.multiply per core with Spark's default Java BLAS (137 GFLOP in 29 s on 2 cores).
    "mllib_flops_per_core": 2.4e9,
    "mllib_stage_seconds": 0.6,
    "shuffle_bytes_per_s": 5e8,
    # Above this the "small" operand of a broadcast product is not small.
    "broadcast_max_bytes": 256 * 2**20,
    # A Python worker with NumPy loaded, before any block.
    "task_overhead_bytes": 64 * 2**20,
}


@dataclass(frozen=True)
class Resources:
    """The compute a plan may use. ``spark`` is False when no Spark session may be used."""

    spark: bool
    slots: int
    task_cpus: int
    local_cores: int  # cores of the driver's machine
    driver_budget: int  # bytes the driver may hold for local evaluation
    task_memory: int  # bytes one task may hold
    dynamic_allocation: bool = False
    master: str = "local"
    cores: int = 1  # physical cores the tasks share (local mode: the machine's, not the slots)
    executors: int = 1
    broadcast_max: int = CALIBRATION["broadcast_max_bytes"]  # largest operand a broadcast product ships

    @staticmethod
    def local_only() -> Resources:
        cores = os.cpu_count() or 1
        budget = int(psutil.virtual_memory().total * 0.5)
        return Resources(False, 0, 1, cores, budget, 0, master="none", cores=cores)

    def forbid_spark(self) -> Resources:
        return replace(self, spark=False)

    def with_conf(self, conf: dict[str, str] | None) -> Resources:
        """Planning settings given explicitly: jampi's own limits, and dynamic allocation
        (an explicit setting wins even over a running session that was started without it)."""
        conf = conf or {}
        changes: dict = {}
        if "jampi.local.maxBytes" in conf:
            changes["driver_budget"] = int(float(conf["jampi.local.maxBytes"]))
        if "jampi.broadcast.maxBytes" in conf:
            changes["broadcast_max"] = int(float(conf["jampi.broadcast.maxBytes"]))
        if "spark.dynamicAllocation.enabled" in conf:
            changes["dynamic_allocation"] = conf["spark.dynamicAllocation.enabled"].strip().lower() == "true"
        return replace(self, **changes) if changes else self

    @staticmethod
    def for_master(master: str | None, conf: dict[str, str] | None = None) -> Resources:
        return Resources._for_master(master, conf).with_conf(conf)

    @staticmethod
    def _for_master(master: str | None, conf: dict[str, str] | None = None) -> Resources:
        """Resources inferred from a master URL without starting Spark (for check/explain)."""
        conf = conf or {}
        cores = os.cpu_count() or 1
        total = psutil.virtual_memory().total
        slots = max(4, 2 * cores)
        if master:
            m = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master)
            if m:
                slots = cores if m.group(1) == "*" else int(m.group(1))
            elif master == "local":
                slots = 1
        task_cpus = int(conf.get("spark.task.cpus", "1"))
        dynamic = conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true"
        slots = max(1, slots // task_cpus)
        return Resources(
            spark=True,
            slots=slots,
            task_cpus=task_cpus,
            local_cores=cores,
            driver_budget=int(total * 0.4),
            # Local-mode tasks are threads of the driver JVM, but their Python workers share the machine.
            task_memory=int(total * 0.5 / slots),
            dynamic_allocation=dynamic,
            master=master or "embedded",
            cores=min(cores, slots * task_cpus),
            executors=1,
        )


@dataclass(frozen=True)
class Estimate:
    flops: float
    bytes_moved: float  # over the network / between processes
    task_memory: float  # peak bytes held by one task (or the driver for local)
    seconds: float
    stages: int = 0

    def short(self) -> str:
        return (
            f"~{_seconds(self.seconds)}, {_quantity(self.flops, 'FLOP')}, "
            f"{_bytes(self.bytes_moved)} moved, {_bytes(self.task_memory)}/task"
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "seconds": self.seconds,
            "flops": self.flops,
            "bytes_moved": self.bytes_moved,
            "task_memory": self.task_memory,
            "stages": self.stages,
        }


def _quantity(value: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def _bytes(value: float) -> str:
    for scale, prefix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= scale:
            return f"{value / scale:.1f} {prefix}"
    return f"{value:.0f} B"


def _seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def node_flops(node: ir.Node) -> float:
    if isinstance(node, ir.PRODUCT_NODES):
        m, n = node.type.shape
        flops = sparsity.product_flops(node.a.type, node.b.type, m, node.inner, n)
        return flops + (2.0 * m * n if isinstance(node, ir.Gemm) else 0.0)
    if isinstance(node, ir.LINALG_NODES):
        from .linalg import FUNCTIONS as LINALG

        return LINALG[node.operator].flops([c.type.shape for c in node.children])
    if node.type.is_matrix:
        per_entry = ops.ELEMENTWISE[node.operator].flops if isinstance(node, (ir.Binary, ir.Unary)) else 1.0
        return float(node.type.nonzeros) * per_entry
    child = next((c for c in node.children if c.type.is_matrix), None)
    return float(child.type.nonzeros) if child is not None else 1.0


def io_bytes(node: ir.Node) -> int:
    """Bytes a node reads from its inputs and writes as its result."""
    return sum(c.type.nbytes for c in node.children) + (node.type.nbytes if node.type.kind != "output" else 0)
