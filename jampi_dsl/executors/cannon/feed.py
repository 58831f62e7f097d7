"""Driver side: the RDD a Cannon barrier stage runs over, and where each task finds its operands.

Per operand, cheapest first:

- a ``BlockSource`` (generator, ``.npy`` file), or a ``DistMatrix`` that is
  still only a recipe (``source`` set, not cached): nothing goes through
  Spark; the task reads or generates its round-0 block itself (``source``).
- a ``DistMatrix`` in the q×q grid layout whose blocks are all in Spark's
  block manager (a previous Cannon result, a persisted matrix): a ``BlockRDD``
  over those blocks *in skewed order*, so partition t already holds the block
  task t starts with, without a shuffle or any exchange (``placed``).
- a ``DistMatrix`` in the q×q grid layout, not materialised: its own
  partitions, and the initial skew moves over the peer links (``aligned``).
- anything else (another block size): one Spark shuffle cuts its blocks into
  pieces of the Cannon tiles and delivers them already skewed (``pieces``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import spark_internals
from ..blockframes import RawBlockSerializer
from ..distributed import block_rdd as distributed_block_rdd
from ..distributed import zip_block_rdds
from .layout import Geometry, stored_layout_is_grid
from .task import OperandFeed


def is_distributed(x: Any) -> bool:
    return hasattr(x, "rdd") and hasattr(x, "block") and hasattr(x, "shape")


def is_source(x: Any) -> bool:
    return hasattr(x, "region") and hasattr(x, "shape") and not is_distributed(x)


def _all_cached(sc, rdd) -> int | None:
    if rdd is None or not getattr(rdd, "is_cached", False):
        return None
    rid = spark_internals.jvm_rdd_id(rdd)
    for info in spark_internals.rdd_storage_info(sc):
        if info.id() == rid:
            return rid if info.numCachedPartitions() == info.numPartitions() else None
    return None


def cached_blocks(sc, x) -> int | None:
    """JVM id of the cached RDD whose block p is partition p of DistMatrix ``x``, when all are stored.

    That is the matrix's own RDD when it is persisted, or the cached barrier
    RDD a detached matrix (``base_rdd``, e.g. a previous Cannon result) reads.
    """
    base = getattr(x, "base_rdd", None)
    if base is not None and base.getNumPartitions() == x.rdd.getNumPartitions():
        rid = _all_cached(sc, base)
        if rid is not None:
            return rid
    return _all_cached(sc, x.rdd)


def _uncached_source(x):
    """The BlockSource a DistMatrix was made from, if its blocks are not cached (tasks remake them)."""
    source = getattr(x, "source", None)
    if source is None:
        return None
    cached = getattr(x, "is_cached", None)
    if cached is None:
        cached = getattr(x.rdd, "is_cached", False)
    return None if cached else source


def block_rdd(sc, rdd_id: int, partitions: list[int], deserializer, keepalive=None):
    """A non-barrier Python RDD whose partition p reads stored block ``(rdd_id, partitions[p])``.

    It carries no lineage, so it is free of the barrier RDD's restrictions
    (take, coalesce, zip all work).
    """
    out = distributed_block_rdd(sc, rdd_id, partitions, deserializer)
    out._jampi_keepalive = keepalive  # keeps the cached parent (and its blocks) alive
    return out


def _pieces_fn(operand: str, geo: Geometry, block: tuple[int, int]):
    """flatMap function: a stored block -> (owner task, (operand, row, col in tile, piece))."""
    th, tw = geo.a_stored_shape() if operand == "A" else geo.b_stored_shape()
    owner = geo.a_owner if operand == "A" else geo.b_owner
    bh, bw = block

    def split(kv):
        (bi, bj), arr = kv
        r0, c0 = bi * bh, bj * bw
        r1, c1 = r0 + arr.shape[0], c0 + arr.shape[1]
        for tr in range(r0 // th, (r1 - 1) // th + 1):
            for tc in range(c0 // tw, (c1 - 1) // tw + 1):
                gr0, gr1 = max(r0, tr * th), min(r1, (tr + 1) * th)
                gc0, gc1 = max(c0, tc * tw), min(c1, (tc + 1) * tw)
                piece = np.ascontiguousarray(arr[gr0 - r0 : gr1 - r0, gc0 - c0 : gc1 - c0])
                yield owner((tr, tc)), (operand, gr0 - tr * th, gc0 - tc * tw, piece)

    return split


@dataclass
class Feed:
    rdd: Any  # None: the stage runs over a plain range RDD
    stream: str
    a: OperandFeed
    b: OperandFeed
    modes: dict[str, str]


def plan_feed(sc, geo: Geometry, a: Any, b: Any, skew: str = "auto", panels: dict | None = None) -> Feed:
    """``panels``: ``{operand: (rows, cols, k)}`` (see :func:`.rounds.column_panel_layouts`);
    placed blocks of those operands are read straight into column panels."""
    q = geo.q
    panels = panels or {}
    ops = {"A": a, "B": b}
    modes: dict[str, str] = {}
    for name, x in list(ops.items()):
        if is_distributed(x) and _uncached_source(x) is not None:
            ops[name] = x = _uncached_source(x)
        if not is_distributed(x):
            modes[name] = "source"
            continue
        in_grid = (
            stored_layout_is_grid(tuple(x.shape), tuple(x.block), q)
            and x.rdd.getNumPartitions() == q * q
        )
        if skew == "shuffle" or not in_grid:
            modes[name] = "pieces"
        elif skew == "channel":
            modes[name] = "aligned"
        else:
            modes[name] = "placed" if cached_blocks(sc, x) is not None else "aligned"
    if "pieces" in modes.values():
        # One shuffle for every distributed operand; each partition gets its tiles' pieces.
        parts = []
        for name, x in ops.items():
            if modes[name] != "source":
                modes[name] = "pieces"
                parts.append(x.rdd.flatMap(_pieces_fn(name, geo, tuple(x.block))))
        merged = parts[0] if len(parts) == 1 else sc.union(parts)
        rdd = merged.partitionBy(q * q, lambda task: task)
        feeds = {
            n: OperandFeed("pieces") if m == "pieces" else OperandFeed("source", ops[n])
            for n, m in modes.items()
        }
        return Feed(rdd, "pieces", feeds["A"], feeds["B"], modes)
    rdds: dict[str, Any] = {}
    for name, x in ops.items():
        if modes[name] == "placed":
            home = geo.a_home if name == "A" else geo.b_home
            order = [r * q + c for r, c in (home(t) for t in range(q * q))]
            keep = (x.rdd, getattr(x, "base_rdd", None))
            reader = spark_internals.deserializer(x.rdd)
            if isinstance(reader, RawBlockSerializer) and name in panels:
                reader = RawBlockSerializer(panels=panels[name])
            rdds[name] = block_rdd(sc, cached_blocks(sc, x), order, reader, keepalive=keep)
        elif modes[name] == "aligned":
            rdds[name] = x.rdd
    if len(rdds) == 2:
        stacks = tuple(panels.get(n) if modes[n] == "placed" else None for n in ("A", "B"))
        rdd, stream, slots = zip_block_rdds(rdds["A"], rdds["B"], stacks), "pair", {"A": 0, "B": 1}
    elif len(rdds) == 1:
        rdd, stream, slots = next(iter(rdds.values())), "single", {}
    else:
        rdd, stream, slots = None, "none", {}
    feeds = {
        n: OperandFeed("source", ops[n]) if m == "source" else OperandFeed(m, slot=slots.get(n))
        for n, m in modes.items()
    }
    return Feed(rdd, stream, feeds["A"], feeds["B"], modes)
