"""A model of time and memory vs p (tasks) and n for Cannon and for MLlib's replication scheme,
calibrated on and checked against the suite's own measurements.

**Cannon** (p = q² tasks, one (n/q)² block of A, B and C each): q rounds of a block product
(2(n/q)³ flops) while the next A and B blocks move to the neighbours (2 blocks per round, hidden
when the link outruns the product); a fixed barrier-stage cost; inputs in and C out between the
JVM and the Python task. Memory per task: A, B, their next blocks and C = 5 blocks, O(n²/p).
Peer bytes per product: p(q−1)·2 blocks ≈ 2n²w√p.

**MLlib** ``BlockMatrix.multiply`` (blocks of b, N = n/b per side, result ``GridPartitioner``
over max(input partitions) partitions of r×c blocks): every A block is sent to each of the N/c
column groups, every B block to the N/r row groups (the replication), each reducer multiplies
its whole row strip by its whole column strip, then the partial products are shuffled once more
(``reduceByKey``). Shuffle bytes: n²w(N/r + N/c) + n²w. Memory per reducer: the two strips,
(r + c)·N·b²w, plus its C blocks: O(n²/√p) when there is one C block per task (b = n/√p).

So both move about 2n²w√p bytes per product; they differ in *how*: Cannon overlaps the moves with
the products over direct sockets and holds 5 blocks per task, MLlib serialises everything through
shuffle files before any product starts and holds whole strips. Cannon pays a fixed stage cost
(a barrier stage, Python workers) that MLlib does not.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, replace

import numpy as np

from .common import SHORT_DTYPE, MiB, Record


@dataclass(frozen=True)
class Machine:
    cores: int  # cores doing arithmetic
    gemm_flops_core: float  # one core's rate in Cannon's block products
    mllib_flops_core: float  # one core's rate in MLlib's products (its JVM BLAS)
    link_bytes_s: float  # one task's peer-link rate
    jvm_python_bytes_s: float  # a task reading blocks from the JVM cache or handing C back
    shuffle_bytes_s: float  # MLlib shuffle (write + fetch + deserialise) per busy core
    cannon_stage_s: float  # fixed cost of Cannon's barrier stage
    mllib_stage_s: float  # fixed cost of MLlib's simulate + stages
    mllib_product_s: float = 0.0  # per block product: allocating it, merging it in reduceByKey
    f32_factor: float = 2.0  # float32 block products run this much faster than float64
    worker_base_bytes: float = 90 * MiB  # a Python worker's RSS when a Cannon task starts
    cores_per_node: int = 0  # 0: one machine (loopback); else the network is shared per node
    nic_bytes_s: float = 1.25e9  # per node (10 Gbit/s)


# Used where this run measured nothing to calibrate on (figures from BACKGROUND.md, this VM).
DEFAULT = Machine(cores=os.cpu_count() or 2, gemm_flops_core=5e10, mllib_flops_core=1.4e9, link_bytes_s=2e9,
                  jvm_python_bytes_s=2e8, shuffle_bytes_s=3e8, cannon_stage_s=1.3, mllib_stage_s=0.6)


def cannon(n: int, p: int, w: int, m: Machine, python: bool = True) -> dict[str, float]:
    """Seconds by part, memory per task and peer bytes; ``python``: tasks are Python workers that
    read their blocks from the JVM and hand C back (jampi), else JVM tasks (the paper's JAMPI)."""
    q = max(1, math.isqrt(p))
    p = q * q
    bs = -(-n // q)
    blk = bs * bs * w
    share = min(1.0, m.cores / p)  # tasks sharing the cores there are
    link = m.link_bytes_s if not m.cores_per_node else min(m.link_bytes_s, m.nic_bytes_s / m.cores_per_node)
    gemm_round = 2.0 * bs**3 / (m.gemm_flops_core * (m.f32_factor if w == 4 else 1.0) * share)
    comm_round = 2.0 * blk / link
    t = {
        "fixed": m.cannon_stage_s,
        "inputs": 2 * blk / m.jvm_python_bytes_s if python else 0.0,
        "compute": q * gemm_round,
        "communication": (q - 1) * max(0.0, comm_round - gemm_round),
        "output": blk / m.jvm_python_bytes_s if python else 0.0,
    }
    t["total"] = sum(t.values())
    t["memory_per_task"] = 5 * blk + (m.worker_base_bytes if python else 0.0)
    t["peer_bytes"] = p * (q - 1) * 2 * blk
    return t


def _grid(n: int, b: int, partitions: int | None) -> tuple[int, int, int, int]:
    """(N, rows per partition, cols per partition, partitions) of MLlib's result GridPartitioner."""
    big_n = -(-n // b)
    parts = partitions or big_n * big_n  # the suite's JVM inputs: one block per partition
    scale = 1.0 / math.sqrt(parts)
    per = max(1, round(max(scale * big_n, 1.0)))
    groups = -(-big_n // per)
    return big_n, per, per, groups * groups


def mllib_shuffle_bytes(n: int, b: int, w: int, partitions: int | None = None) -> float:
    big_n, r, c, _ = _grid(n, b, partitions)
    return n * n * w * (-(-big_n // c) + -(-big_n // r)) + n * n * w


def mllib(n: int, p: int, b: int, w: int, m: Machine, partitions: int | None = None) -> dict[str, float]:
    big_n, r, c, tasks = _grid(n, b, partitions)
    busy = min(tasks, p) * min(1.0, m.cores / p)  # cores kept busy
    volume = mllib_shuffle_bytes(n, b, w, partitions)
    shuffle_rate = busy * m.shuffle_bytes_s
    if m.cores_per_node:
        shuffle_rate = min(shuffle_rate, m.nic_bytes_s * max(1, p // m.cores_per_node))
    t = {"fixed": m.mllib_stage_s, "shuffle": volume / shuffle_rate,
         "compute": 2.0 * n**3 / (busy * m.mllib_flops_core),
         "per_block": big_n**3 / busy * m.mllib_product_s}
    t["total"] = sum(t.values())
    t["memory_per_task"] = ((r + c) * big_n + r * c + 1) * b * b * w
    t["shuffle_bytes"] = volume
    return t


# --- calibration on this run ----------------------------------------------------------------------


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with coefficients ≥ 0 (relative residuals), by trying every column subset."""
    wts = 1.0 / np.maximum(y, 1e-9)
    best, best_err = np.zeros(x.shape[1]), math.inf
    for k in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), k):
            sol, *_ = np.linalg.lstsq(x[:, cols] * wts[:, None], y * wts, rcond=None)
            if np.all(sol >= 0):
                coef = np.zeros(x.shape[1])
                coef[list(cols)] = sol
                err = float(np.sum(((x @ coef - y) * wts) ** 2))
                if err < best_err:
                    best, best_err = coef, err
    return best


def _ok(records, system):
    return [r for r in records if r.system == system and r.status == "ok" and r.seconds and r.correct is not False]


def calibrate(records: list[Record], slots: int, exclude_n: int | None = None) -> Machine:
    """Constants from this run's Cannon stage splits (leaving out ``exclude_n``); DEFAULT where
    the run has nothing to go on."""
    m = replace(DEFAULT, cores=os.cpu_count() or 2)
    stages = [r for r in _ok(records, "cannon-stage") if "split" in r.extra and r.n != exclude_n]
    if not stages:
        return m
    share = min(1.0, m.cores / max(1, math.isqrt(slots)) ** 2)
    q = max(1, math.isqrt(slots))
    # Block products: the rate at the largest float64 n (small blocks measure call overhead).
    f64 = [r for r in stages if r.dtype == "float64" and r.extra["split"]["compute"] > 0]
    if f64:
        big = max(f64, key=lambda r: r.n)
        bs = math.sqrt(big.extra["block_bytes"] / 8)
        m = replace(m, gemm_flops_core=q * 2 * bs**3 / big.extra["split"]["compute"] / share)
        f32 = [r for r in stages if r.dtype == "float32" and r.n == big.n and r.extra["split"]["compute"] > 0]
        if f32:
            m = replace(m, f32_factor=big.extra["split"]["compute"] / f32[0].extra["split"]["compute"])
    # Moving blocks between the JVM and the task: a fixed part plus 3 blocks at a rate.
    x = np.array([[1.0, 3 * r.extra["block_bytes"]] for r in stages])
    y = np.array([r.extra["split"]["inputs"] + r.extra["split"]["task_other"] for r in stages])
    c0, per_byte = _nnls(x, y) if len(stages) > 1 else (float(y[0]), 0.0)
    if per_byte > 0:
        m = replace(m, jvm_python_bytes_s=1.0 / per_byte)
    fixed = [r.extra["split"]["spark_overhead"] + r.extra["split"]["communication"] for r in stages]
    m = replace(m, cannon_stage_s=float(np.median(fixed)) + float(c0))
    worker = [r.task_rss - r.extra["rss_growth"] for r in stages if r.task_rss]
    if worker:
        m = replace(m, worker_base_bytes=float(np.median(worker)))
    return m


def _product_rate(r: Record) -> float | None:
    """One core's rate in MLlib's products at this record's block size, measured by the suite."""
    rate, threads = r.extra.get("jvm_gemm_flops"), r.extra.get("jvm_gemm_threads") or 1
    return rate / threads if rate else None


def calibrate_mllib(records: list[Record], system: str, slots: int, base: Machine,
                    exclude_n: int | None = None) -> Machine | None:
    """MLlib's fixed cost, shuffle rate and per-product cost fitted on this run's block sizes,
    with the product rate at each block size taken from the suite's JVM gemm measurement (it
    falls for large blocks with Java BLAS); None with fewer than 3 points."""
    pts = [r for r in _ok(records, system) if r.extra.get("block") and r.n != exclude_n]
    if len(pts) < 3:
        return None
    rates = [_product_rate(r) for r in pts]
    known = [x for x in rates if x]
    typical = float(np.median(known)) if known else None
    unit = replace(base, mllib_stage_s=1.0, shuffle_bytes_s=1.0, mllib_flops_core=1.0, mllib_product_s=1.0)
    parts = [mllib(r.n, slots, r.extra["block"], 8, unit) for r in pts]
    if typical is None:  # no JVM gemm figures (an older results.json): fit the rate too
        x = np.array([[1.0, t["shuffle"], t["compute"], t["per_block"]] for t in parts])
        coef = _nnls(x, np.array([r.seconds for r in pts]))
        typical = 1.0 / coef[2] if coef[2] > 0 else base.gemm_flops_core
    else:
        x = np.array([[1.0, t["shuffle"], t["per_block"]] for t in parts])
        y = np.array([r.seconds - t["compute"] / (rate or typical) for r, t, rate in zip(pts, parts, rates, strict=True)])
        c = _nnls(x, np.maximum(y, 1e-3))
        coef = np.array([c[0], c[1], 0.0, c[2]])
    # A zero shuffle coefficient: the shuffle's cost is not visible beside the rest here.
    return replace(base, mllib_stage_s=float(coef[0]), shuffle_bytes_s=1.0 / coef[1] if coef[1] > 0 else math.inf,
                   mllib_flops_core=float(typical), mllib_product_s=float(coef[3]))


# --- the report section -----------------------------------------------------------------------------


def _check_rows(records: list[Record], slots: int) -> list[str]:
    """Each measurement against the model calibrated on the *other* sizes (leave one n out)."""
    rows = ["| measured | n | dtype | variant | measured | model (fitted without this n) | model / measured |",
            "|---|---|---|---|---|---|---|"]
    for r in sorted(_ok(records, "cannon-stage"), key=lambda r: (r.dtype, r.n)):
        m = calibrate(records, slots, exclude_n=r.n)
        pred = cannon(r.n, slots, np.dtype(r.dtype).itemsize, m)["total"]
        rows.append(f"| Cannon stage | {r.n} | {SHORT_DTYPE[r.dtype]} | {r.variant} | {r.seconds:.2f} s "
                    f"| {pred:.2f} s | {pred / r.seconds:.2f} |")
    for system in ("mllib-java", "mllib-native"):
        for r in sorted(_ok(records, system), key=lambda r: (r.n, r.extra.get("block", 0))):
            fitted = calibrate_mllib(records, system, slots, calibrate(records, slots), exclude_n=r.n)
            if fitted is None:
                continue
            rate = _product_rate(r) or fitted.mllib_flops_core
            pred = mllib(r.n, slots, r.extra["block"], 8, replace(fitted, mllib_flops_core=rate))["total"]
            rows.append(f"| {system} | {r.n} | f64 | {r.variant} | {r.seconds:.2f} s | {pred:.2f} s "
                        f"| {pred / r.seconds:.2f} |")
    for r in sorted((r for r in records if r.system == "cannon-stage" and r.status == "ok" and r.task_rss),
                    key=lambda r: (r.dtype, r.n)):
        rows.append(f"| Cannon task RSS growth | {r.n} | {SHORT_DTYPE[r.dtype]} | | "
                    f"{r.extra['rss_growth'] / MiB:.0f} MiB | {5 * r.extra['block_bytes'] / MiB:.0f} MiB (5 blocks) "
                    f"| {5 * r.extra['block_bytes'] / max(1.0, r.extra['rss_growth']):.2f} |")
    for r in sorted((r for r in records if r.system.startswith("mllib-") and r.shuffle_bytes and r.extra.get("block")),
                    key=lambda r: (r.n, r.extra["block"])):
        model = mllib_shuffle_bytes(r.n, r.extra["block"], 8)
        rows.append(f"| {r.system} shuffle bytes | {r.n} | f64 | {r.variant} | {r.shuffle_bytes / MiB:.0f} MiB "
                    f"| {model / MiB:.0f} MiB | {model / r.shuffle_bytes:.2f} |")
    return rows


def java_rate(records: list[Record]) -> tuple[float, int] | None:
    """This run's one-core Java-BLAS gemm rate at the block size nearest 1024 (the paper's blocks
    are 1024–1920), and that block size."""
    pts = [r for r in _ok(records, "mllib-java") if _product_rate(r) and r.blas.startswith("Java")]
    if not pts:
        return None
    best = min(pts, key=lambda r: (abs(math.log2(r.extra["block"] / 1024)), -r.n))
    return _product_rate(best), best.extra["block"]


def paper_machine(local: Machine, java: Machine | None, rate: float | None) -> Machine:
    """The JAMPI paper's cluster as the model sees it: JVM arithmetic for both systems (JAMPI's
    vectorised Java loop, MLlib's netlib) at this run's Java-BLAS rate, this run's MLlib
    constants, and a 10 Gbit/s network shared by 8 cores per node (assumed: the paper's figures
    do not pin these down)."""
    src = java or DEFAULT
    flops = rate or src.mllib_flops_core
    return replace(local, cores=10**6, gemm_flops_core=flops, mllib_flops_core=flops,
                   cannon_stage_s=17.0, mllib_stage_s=max(src.mllib_stage_s, 1.0), cores_per_node=8,
                   link_bytes_s=1.25e9,
                   shuffle_bytes_s=src.shuffle_bytes_s if math.isfinite(src.shuffle_bytes_s) else DEFAULT.shuffle_bytes_s)


def crossover(p: int, m: Machine, python: bool) -> int | None:
    """Smallest n (multiple of 1024) from which Cannon beats MLlib with one C block per task."""
    q = math.isqrt(p)
    for n in range(1024, 131073, 1024):
        if cannon(n, p, 8, m, python)["total"] < mllib(n, p, -(-n // q), 8, m, partitions=p)["total"]:
            return n
    return None


def predictions(m: Machine, label: str, python: bool) -> list[str]:
    rows = [f"| cores | n | {label} | MLlib (b = n/√p) | faster | memory per task: Cannon | MLlib | MLlib / Cannon |",
            "|---|---|---|---|---|---|---|---|"]
    for p in (16, 64, 256):
        q = math.isqrt(p)
        for n in (4096, 10240, 30720):
            c, ml = cannon(n, p, 8, m, python), mllib(n, p, -(-n // q), 8, m, partitions=p)
            faster = (f"Cannon by {ml['total'] / c['total'] - 1:.0%}" if c["total"] < ml["total"]
                      else f"MLlib by {c['total'] / ml['total'] - 1:.0%}")
            rows.append(f"| {p} | {n} | {c['total']:.1f} s | {ml['total']:.1f} s | {faster} "
                        f"| {c['memory_per_task'] / MiB:.0f} MiB | {ml['memory_per_task'] / MiB:.0f} MiB "
                        f"| {ml['memory_per_task'] / c['memory_per_task']:.1f}× |")
    rows.append("")
    rows.append("Crossover (smallest n where Cannon is faster): " + "; ".join(
        f"{p} cores: n ≈ {crossover(p, m, python) or '> 131072'}" for p in (16, 64, 256)) + ".")
    return rows


def _implied_mllib_rate(m: Machine, p: int, n: int, lead: float) -> float | None:
    """MLlib's per-core product rate at which the JAMPI-like Cannon leads by ``lead`` (bisection)."""
    target = (1 + lead) * cannon(n, p, 8, m, python=False)["total"]
    lo, hi = 1e6, 1e13
    if mllib(n, p, n // math.isqrt(p), 8, replace(m, mllib_flops_core=hi), partitions=p)["total"] > target:
        return None
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if mllib(n, p, n // math.isqrt(p), 8, replace(m, mllib_flops_core=mid), partitions=p)["total"] > target:
            lo = mid
        else:
            hi = mid
    return hi


def paper_claims(m: Machine) -> list[str]:
    """The paper's published crossovers beside what the model says for the same points."""

    def both(p, n):
        return cannon(n, p, 8, m, python=False), mllib(n, p, n // math.isqrt(p), 8, m, partitions=p)

    rows = ["| the paper | the model (JAMPI-like Cannon vs MLlib) | agrees? |", "|---|---|---|"]
    verdicts = []
    for p in (16, 64):
        c, ml = both(p, 4096)
        verdicts.append((p, c["total"], ml["total"]))
    text = "; ".join(f"{p} cores: {c:.1f} s vs {ml:.1f} s" for p, c, ml in verdicts)
    rows.append(f"| MLlib ahead at n=4096 on 16 and 64 cores | {text} | "
                f"{'yes' if all(ml < c for _, c, ml in verdicts) else 'no'} |")
    c, ml = both(64, 10240)
    implied = _implied_mllib_rate(m, 64, 10240, 0.24)
    lead = ml["total"] / c["total"] - 1
    rows.append(f"| JAMPI 24% ahead at n=10240 on 64 cores | {c['total']:.1f} s vs {ml['total']:.1f} s: "
                f"{'Cannon' if lead > 0 else 'MLlib'} ahead by {abs(lead) if lead > 0 else c['total'] / ml['total'] - 1:.0%}"
                + (f"; 24% needs MLlib's products at {implied / m.gemm_flops_core:.2f}× JAMPI's per-core rate"
                   if implied else "") + f" | {'yes' if 0.1 < lead < 0.4 else 'no'} |")
    c, ml = both(256, 30720)
    rows.append(f"| MLlib out of memory at n=30720 on 256 cores; JAMPI uses 4.0–4.8× less memory | per task "
                f"MLlib holds {ml['memory_per_task'] / 2**30:.2f} GiB of strips (before any copy made while "
                f"deserialising them), Cannon {c['memory_per_task'] / MiB:.0f} MiB: "
                f"{ml['memory_per_task'] / c['memory_per_task']:.1f}× | yes if the executors had less than "
                f"~{ml['memory_per_task'] / 2**30:.1f} GiB of execution memory per core; the ratio is per task, the "
                "paper's is of whole executors (fixed JVM memory narrows it) |")
    return rows


def section(meta: dict, records: list[Record]) -> str:
    slots = int(meta.get("slots") or 4)
    local = calibrate(records, slots)
    java = calibrate_mllib(records, "mllib-java", slots, local)
    native = calibrate_mllib(records, "mllib-native", slots, local)
    measured_rate = java_rate(records)
    paper = paper_machine(local, java, measured_rate[0] if measured_rate else None)
    g = 1e9

    def consts(m: Machine | None, what: str) -> str:
        if m is None:
            return f"{what}: not enough MLlib points in this run to fit"
        return (f"{what}: fixed {m.mllib_stage_s:.2f} s, shuffle {m.shuffle_bytes_s / 1e6:.0f} MB/s per busy core, "
                f"products {m.mllib_flops_core / g:.2f} GFLOP/s per core (median of the JVM gemm measurements) "
                f"plus {m.mllib_product_s * 1e3:.1f} ms per block product")

    lines = [
        "### The model (`benchmarks/model.py`) against this run", "",
        "Constants calibrated on this run: Cannon block products "
        f"{local.gemm_flops_core / g:.1f} GFLOP/s per core in float64 (float32 {local.f32_factor:.1f}× that), JVM ↔ task {local.jvm_python_bytes_s / 1e6:.0f} MB/s, "
        f"fixed stage cost {local.cannon_stage_s:.2f} s, Python worker at task start "
        f"{local.worker_base_bytes / MiB:.0f} MiB; {consts(java, 'MLlib, Java BLAS')}; "
        f"{consts(native, 'MLlib, native BLAS')}. Each time below is predicted by the model fitted on the "
        "*other* sizes of the run (leave one n out); memory and shuffle bytes need no fitting.", "",
        *_check_rows(records, slots), "",
        "### What the model predicts for the JAMPI paper's clusters", "",
        "Assumed cluster (the paper's figures do not pin these down): 8 cores per node sharing a 10 Gbit/s "
        "network; JVM arithmetic for both systems at " + (
            f"this run's one-core Java-BLAS gemm rate at b={measured_rate[1]}" if measured_rate
            else "BACKGROUND.md's Java-BLAS rate") + f" ({paper.gemm_flops_core / g:.2f} GFLOP/s); MLlib's shuffle rate and fixed cost from this run; "
        "JAMPI's 17 s barrier-stage floor (the paper's figure) and JVM tasks (no Python worker); MLlib with one "
        "C block per task (b = n/√p, p partitions). float64.", "",
        *predictions(paper, "JAMPI-like Cannon", python=False), "",
        *paper_claims(paper), "",
        "The same clusters with jampi's own constants (NumPy's BLAS in the tasks, this run's stage cost):", "",
        *predictions(replace(paper, gemm_flops_core=local.gemm_flops_core, cannon_stage_s=local.cannon_stage_s),
                     "jampi Cannon", python=True), "",
    ]
    return "\n".join(lines)
