"""Every method the planner can choose, with its cost model. The executors that
implement them live in ``jampi_dsl.executors``; the planner never imports them.

A product node may run as ``local`` (NumPy on the driver), ``cannon`` (the
barrier stage), ``broadcast`` (the small operand shipped to every task) or
``mllib`` (``BlockMatrix.multiply``). Other nodes run ``local`` or ``spark``
(blockwise on a distributed matrix): they follow their inputs' placement,
decided in :mod:`.physical`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from . import ir
from .cost import CALIBRATION as K
from .cost import Estimate, Resources, io_bytes, node_flops
from .grid import choose_grid, default_q
from .linalg import svd_is_randomized


@dataclass(frozen=True)
class Method:
    name: str
    # (node, resources) -> None if the method can run the node, else why not
    rejects: Callable[[ir.Node, Resources], str | None]
    estimate: Callable[[ir.Node, Resources], Estimate]
    products_only: bool = False  # a product-only method (cannon, broadcast, mllib) never runs other nodes
    distributed: bool = False  # its results live on the executors


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def _dims(node: ir.Node) -> tuple[int, int, int]:
    m, n = node.type.shape
    return m, node.inner, n


def _itemsize(node: ir.Node) -> int:
    return 4 if node.type.dtype == "float32" else 8


def _gemm_rate(node: ir.Node, per_core: bool, resources: Resources) -> float:
    rate = K["local_gemm_flops"] * (2 if node.type.dtype == "float32" else 1)
    return rate / max(1, resources.local_cores) if per_core else rate


# ---------------------------------------------------------------- local


SPARSE_ON_DRIVER = "no distributed kernel for sparse matrices here yet: this step runs on the driver (SciPy)"


def touches_sparse(node: ir.Node) -> bool:
    return any(t.is_matrix and t.is_sparse for t in (node.type, *(c.type for c in node.children)))


def _sparse_on_spark(node: ir.Node) -> bool:
    """Steps with a kernel over the CSR blocks of a distributed sparse matrix (executors/sparse_dist,
    blocktasks): reading it, transposing it, elementwise operations whose result stays sparse
    (zeros map to zeros) with scalars, dense rows or columns, or a full operand of its shape,
    sums and counts, and sums and extremes along an axis. A product with a sparse operand runs
    by broadcast (see _broadcast_rejects)."""
    if isinstance(node, (ir.Load, ir.Transpose, ir.Input, ir.Export)):  # Input/Export: kept between parts
        return True
    if isinstance(node, (ir.Unary, ir.Binary)):
        if not node.type.is_sparse:
            return False
        full = [c for c in node.children if c.type.is_matrix and c.type.shape == node.type.shape]
        vectors = [c for c in node.children if c.type.is_matrix and c.type.shape != node.type.shape]
        return any(c.type.is_sparse for c in full) and not any(c.type.is_sparse for c in vectors)
    if isinstance(node, ir.Reduce):
        if node.axis is None:
            return node.operator in ("sum", "mean", "nnz", "norm")
        return node.operator in ("sum", "mean", "max", "min")
    return False


def _local_rejects(node: ir.Node, resources: Resources) -> str | None:
    need = io_bytes(node)
    if isinstance(node, ir.LINALG_NODES):
        # LAPACK works on a dense copy and its workspace, beside the input and the result
        need = 3 * (sum(c.type.dense_nbytes for c in node.children) + node.type.nbytes)
    elif isinstance(node, ir.Save) and node.x.type.is_sparse and node.writes_every_entry:
        need += node.x.type.dense_nbytes  # written dense
    if need > resources.driver_budget:
        hint = _LINALG_HINTS.get(getattr(node, "operator", None), "") if isinstance(node, ir.LINALG_NODES) else ""
        return f"needs {_gib(need)} on the driver, budget {_gib(resources.driver_budget)}{hint}"
    return None


_LINALG_HINTS = {
    "inv": "; a system needs no inverse: solve(A, B), lstsq(A, B), or a CG loop with products only",
    "solve": "; for a large system, a CG loop with products only runs distributed",
    "svd": "; svd(A, k=...) of the leading triplets needs far less",
}


def _local_estimate(node: ir.Node, resources: Resources) -> Estimate:
    flops = node_flops(node)
    moved = io_bytes(node)
    if isinstance(node, ir.PRODUCT_NODES) and touches_sparse(node):
        seconds = moved / K["local_stream_bytes_per_s"]  # a sparse product is bound by memory, not flops
    elif isinstance(node, ir.PRODUCT_NODES):
        seconds = flops / _gemm_rate(node, False, resources)
    else:
        seconds = moved / K["local_stream_bytes_per_s"]
    return Estimate(flops=flops, bytes_moved=0.0, task_memory=float(moved), seconds=seconds)


# ---------------------------------------------------------------- shared by the Spark methods


def _no_spark(resources: Resources, node: ir.Node | None = None) -> str | None:
    if not resources.spark:
        return "no Spark session may be used"
    if resources.slots < 1:
        return "no task slots"
    if node is not None and touches_sparse(node):
        return SPARSE_ON_DRIVER
    return None


def _parallel_rate(node: ir.Node, tasks: int, resources: Resources, per_core: float | None = None) -> float:
    """GEMM rate of ``tasks`` concurrent tasks, never more than the cores that actually exist."""
    cores = min(tasks * resources.task_cpus, resources.cores)
    return (per_core or _gemm_rate(node, True, resources)) * max(1, cores)


# ---------------------------------------------------------------- cannon


def cannon_q(resources: Resources) -> int:
    return default_q(resources.slots)


def cannon_grid(node: ir.Node, resources: Resources) -> int:
    """The side of the grid a Cannon step runs on: the largest square the slots hold whose
    blocks of the result are all non-empty. Fixed here; the stage takes it from the step."""
    m, _, n = _dims(node)
    return choose_grid(m, n, cannon_q(resources))


def _cannon_memory(node: ir.Node, resources: Resources) -> float:
    m, k, n = _dims(node)
    q = cannon_q(resources)
    size = _itemsize(node)
    a, b, c = math.ceil(m / q) * math.ceil(k / q), math.ceil(k / q) * math.ceil(n / q), math.ceil(m / q) * math.ceil(n / q)
    # The A and B blocks in use, the two arriving, and C: whole-block double buffering. The
    # executor now moves panels and holds 3 + 2/k blocks (executors/cannon/rounds.py), so this
    # is an upper bound, kept so as not to move the skinny-product choice to Cannon, whose
    # estimate does not yet charge for bringing a big operand into the tasks.
    return float(size * (2 * a + 2 * b + c) + K["task_overhead_bytes"])


def _cannon_rejects(node: ir.Node, resources: Resources) -> str | None:
    if (why := _no_spark(resources, node)) is not None:
        return why
    if resources.dynamic_allocation:
        return "dynamic allocation is on, and Spark rejects barrier stages then (SPARK-24942)"
    q = cannon_q(resources)
    if q * q > resources.slots:
        return f"a {q}x{q} grid needs {q * q} slots, only {resources.slots}"
    need = _cannon_memory(node, resources)
    if need > resources.task_memory:
        return f"needs {_gib(need)} per task, a task has {_gib(resources.task_memory)}"
    return None


def _cannon_estimate(node: ir.Node, resources: Resources) -> Estimate:
    m, k, n = _dims(node)
    q = cannon_q(resources)
    size = _itemsize(node)
    flops = node_flops(node)
    # Each task passes q-1 A blocks and q-1 B blocks to its neighbours; the skew is folded into placement.
    moved = size * (q - 1) * (m * k + k * n)
    compute = flops / _parallel_rate(node, q * q, resources)
    exchange = moved / K["peer_bytes_per_s"] / max(1, q * q)
    # Exchange overlaps the products; only the part that does not fit under them shows.
    seconds = K["cannon_stage_seconds"] + max(compute, exchange) + 0.1 * min(compute, exchange)
    return Estimate(flops, float(moved), _cannon_memory(node, resources), seconds, stages=1)


# ---------------------------------------------------------------- broadcast


def _small_operand(node: ir.Node) -> tuple[str, int]:
    """The side a broadcast product ships (in its own storage: a sparse side goes as CSR) and
    its bytes; the plan's ``ships`` and the executor read this one choice."""
    a_bytes, b_bytes = node.a.type.nbytes, node.b.type.nbytes
    return ("a", a_bytes) if a_bytes <= b_bytes else ("b", b_bytes)


def shipped_side(node: ir.Node) -> str:
    return _small_operand(node)[0]


def _broadcast_rejects(node: ir.Node, resources: Resources) -> str | None:
    # Each block of the big operand (CSR or dense) multiplies its slice of the shipped one (CSR
    # or dense); sparse x sparse gives CSR partials. A fused GEMM with a sparse side runs unfused.
    sparse_ok = type(node) is ir.MatMul
    if (why := _no_spark(resources, None if sparse_ok else node)) is not None:
        return why
    _, small = _small_operand(node)
    if small > resources.broadcast_max:
        return f"the smaller operand is {_gib(small)}, over the {_gib(resources.broadcast_max)} broadcast limit"
    return None


def _broadcast_estimate(node: ir.Node, resources: Resources) -> Estimate:
    side, small = _small_operand(node)
    flops = node_flops(node)
    tasks = resources.slots
    moved = small * min(tasks, resources.executors) + node.type.nbytes  # broadcast + partial results
    big = node.b if side == "a" else node.a
    memory = small + big.type.nbytes / max(1, tasks) + node.type.nbytes / max(1, tasks)
    if touches_sparse(node):  # a sparse product is bound by memory, not flops
        compute = io_bytes(node) / K["local_stream_bytes_per_s"] / max(1, min(tasks, resources.cores))
    else:
        compute = flops / _parallel_rate(node, tasks, resources)
    seconds = (
        K["spark_job_seconds"]
        + compute
        + moved / K["peer_bytes_per_s"]
        + big.type.nbytes / K["jvm_python_bytes_per_s"] / max(1, min(tasks, resources.cores))
    )
    return Estimate(flops, float(moved), float(memory + K["task_overhead_bytes"]), seconds, stages=1)


# ---------------------------------------------------------------- mllib


def _mllib_memory(node: ir.Node, resources: Resources) -> float:
    m, k, n = _dims(node)
    # BlockMatrix.multiply gives each reducer a whole row strip of A and column strip of B.
    p = max(1, resources.slots)
    return float(8 * (m * k + k * n) / math.sqrt(p) + 8 * m * n / p + K["task_overhead_bytes"])


def _mllib_rejects(node: ir.Node, resources: Resources) -> str | None:
    if (why := _no_spark(resources, node)) is not None:
        return why
    need = _mllib_memory(node, resources)
    if need > resources.task_memory:
        return f"needs {_gib(need)} per task (row and column strips), a task has {_gib(resources.task_memory)}"
    return None


def _mllib_estimate(node: ir.Node, resources: Resources) -> Estimate:
    m, k, n = _dims(node)
    flops = node_flops(node)
    p = max(1, resources.slots)
    grid = max(1, math.isqrt(p))
    moved = 8 * (m * k + k * n) * grid + 8 * m * n  # blocks replicated across the grid, then dense output
    rate = _parallel_rate(node, p, resources, per_core=K["mllib_flops_per_core"])
    # Each executor shuffles its share: aggregate bandwidth grows with the executors.
    seconds = K["mllib_stage_seconds"] + flops / rate + moved / (K["shuffle_bytes_per_s"] * resources.executors)
    return Estimate(flops, float(moved), _mllib_memory(node, resources), seconds, stages=3)


# ---------------------------------------------------------------- spark (blockwise, non-product)


def _spark_rejects(node: ir.Node, resources: Resources) -> str | None:
    if (why := _no_spark(resources, None if _sparse_on_spark(node) else node)) is not None:
        return why
    if isinstance(node, ir.Literal):
        return "a driver-side array starts on the driver"
    if isinstance(node, ir.Where):
        return "where() has no distributed kernel yet: it runs on the driver"
    if isinstance(node, ir.Concat):
        return "hcat()/vcat() have no distributed kernel yet: they run on the driver"
    if isinstance(node, (ir.Index, ir.Update)):
        return "indexing has no distributed kernel yet: it runs on the driver"
    if isinstance(node, ir.Input) and node.type.is_scalar:
        return "a scalar lives on the driver"
    if isinstance(node, ir.Solve):
        return _distributed_solve_rejects(node, resources)
    if isinstance(node, ir.Factor) and node.operator in ("qr", "svd"):
        return _distributed_factor_rejects(node, resources)
    if isinstance(node, ir.LINALG_NODES):
        return f"{node.operator}() runs with LAPACK on the driver (no distributed kernel yet)"
    return None


def _distributed_factor_rejects(node: ir.Factor, resources: Resources) -> str | None:
    """qr and the thin svd by TSQR gather every row panel's n x n R on the driver; svd(A, k=)
    (randomized) only n x (k + 10) sketches."""
    m, n = node.x.type.shape
    if node.operator == "svd" and svd_is_randomized((m, n), node.k):
        width = min(m, n, node.k + node.sketching.oversample)
        if 8 * n * width * 4 > resources.broadcast_max:
            return f"randomized svd ships {_gib(8 * n * width)} sketches, over the broadcast limit"
        return None
    if m < n:
        return f"{node.operator}() on Spark needs a tall matrix (TSQR), got {m}x{n}; use svd(A.T) or k="
    gathered = 8 * n * n * max(1, resources.slots) * 4
    if gathered > resources.broadcast_max:
        return f"TSQR gathers {_gib(gathered)} of R factors on the driver (A has {n} columns)"
    return None


def _distributed_solve_rejects(node: ir.Node, resources: Resources) -> str | None:
    """solve(A, B) on Spark ships A's LU factors to every task (B's columns solved blockwise);
    lstsq(A, B) by TSQR sends each row block's n x n R and n x k Q.T @ B to the driver."""
    n = node.a.type.shape[1]
    if node.operator == "solve":
        if node.a.type.nbytes > resources.broadcast_max:
            return (f"solve(A, B) on Spark ships A to every task, and A is {_gib(node.a.type.nbytes)}, "
                    f"over the {_gib(resources.broadcast_max)} broadcast limit")
        return None
    k = node.b.type.shape[1]
    gathered = 8 * n * (n + k) * max(1, resources.slots) * 4
    if gathered > resources.broadcast_max:
        return f"lstsq by TSQR gathers {_gib(gathered)} of R factors on the driver (A has {n} columns)"
    return None


def _spark_estimate(node: ir.Node, resources: Resources) -> Estimate:
    moved = io_bytes(node)
    tasks = max(1, min(resources.slots, resources.cores))
    seconds = K["spark_job_seconds"] + moved / K["local_stream_bytes_per_s"] / tasks
    return Estimate(node_flops(node), 0.0, float(moved / max(1, resources.slots)), seconds, stages=1)


LOCAL = Method("local", _local_rejects, _local_estimate)
CANNON = Method("cannon", _cannon_rejects, _cannon_estimate, products_only=True, distributed=True)
BROADCAST = Method("broadcast", _broadcast_rejects, _broadcast_estimate, products_only=True, distributed=True)
MLLIB = Method("mllib", _mllib_rejects, _mllib_estimate, products_only=True, distributed=True)
SPARK = Method("spark", _spark_rejects, _spark_estimate, distributed=True)
PRODUCT_METHODS = (LOCAL, CANNON, BROADCAST, MLLIB)
ALL = (LOCAL, CANNON, BROADCAST, MLLIB, SPARK)
DISTRIBUTED = frozenset(m.name for m in ALL if m.distributed)
