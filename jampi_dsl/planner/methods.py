"""Every method the planner can choose, with its cost model. The executors that
implement them live in ``jampi_dsl.executors``; the planner never imports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import ir
from .cost import CALIBRATION, Estimate, Resources, io_bytes, node_flops


@dataclass(frozen=True)
class Method:
    name: str
    # (node, resources) -> None if the method can run the node, else why not
    rejects: Callable[[ir.Node, Resources], str | None]
    estimate: Callable[[ir.Node, Resources], Estimate]
    products_only: bool = False  # a product-only method (cannon, broadcast, mllib) never runs other nodes


def _local_rejects(node: ir.Node, resources: Resources) -> str | None:
    need = io_bytes(node)
    if need > resources.driver_budget:
        return f"needs {need / 2**30:.1f} GiB on the driver, budget {resources.driver_budget / 2**30:.1f} GiB"
    return None


def _local_estimate(node: ir.Node, resources: Resources) -> Estimate:
    flops = node_flops(node)
    moved = io_bytes(node)
    if isinstance(node, ir.PRODUCT_NODES):
        rate = CALIBRATION["local_gemm_flops"] * (2 if node.type.dtype == "float32" else 1)
        seconds = flops / rate
    else:
        seconds = moved / CALIBRATION["local_stream_bytes_per_s"]
    return Estimate(flops=flops, bytes_moved=0.0, task_memory=float(moved), seconds=seconds)


LOCAL = Method("local", _local_rejects, _local_estimate)
ALL = (LOCAL,)
