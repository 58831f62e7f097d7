"""DistMatrix against NumPy: construction, collection, blockwise ops, reductions, barrier results, cluster."""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import pytest
from pyspark import BarrierTaskContext

from jampi_dsl.executors import blockgen
from jampi_dsl.executors import distributed as dist
from jampi_dsl.executors.blocktasks import GridPartitioner, bounds, grid_of
from jampi_dsl.executors.distributed import DistMatrix
from jampi_dsl.executors.sources import GeneratorSource, NpySource

pytestmark = pytest.mark.spark

DTYPES = [np.float64, np.float32]
# (shape, block, dtype): ragged edges, blocks > 1, a single block, 1×1, non-square blocks.
# Few blocks each: every block is a Python task, and tasks cost tens of ms on 2 busy cores.
CASES = [
    ((257, 130), (100, 64), np.float64),
    ((64, 64), (64, 64), np.float32),
    ((1, 1), (1, 1), np.float64),
    ((5, 9), (2, 4), np.float32),
    ((40, 70), (40, 16), np.float64),
]


def data(shape, dtype, seed=0, low=0.5, high=1.5):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def check_layout(m: DistMatrix) -> None:
    """One block per partition, partition bi*gc+bj, exact C-contiguous blocks of the right dtype."""
    found = m.rdd.mapPartitionsWithIndex(
        lambda i, it: [(i, [(k, b.shape, b.dtype.str, b.flags.c_contiguous) for k, b in it])]
    ).collect()
    gc = m.grid[1]
    assert sorted(i for i, _ in found) == list(range(m.nblocks))
    for i, blocks in found:
        assert len(blocks) == 1, (i, blocks)
        key, shape, dtype, contiguous = blocks[0]
        assert key == divmod(i, gc)
        (r0, r1), (c0, c1) = bounds(key, m.shape, m.block)
        assert shape == (r1 - r0, c1 - c0) and dtype == m.dtype.str and contiguous


def _tag(i, kv):
    return i, kv


def to_numpy_all(*ms: DistMatrix) -> list[np.ndarray]:
    """Several matrices collected in one Spark job (a union): each job costs ~1 s on 2 busy cores.

    ``to_numpy`` itself is tested on its own; this is for checking the blocks many operations make.
    """
    sc = ms[0].rdd.ctx
    outs = [np.full(m.shape, np.nan, dtype=m.dtype) for m in ms]
    for i, (key, b) in sc.union([m.rdd.map(partial(_tag, i)) for i, m in enumerate(ms)]).collect():
        (r0, r1), (c0, c1) = bounds(key, ms[i].shape, ms[i].block)
        outs[i][r0:r1, c0:c1] = b
    return outs


@pytest.fixture(params=["shared", "spark"])
def transfer(request, monkeypatch):
    """Both ways arrays enter and leave: the shared scratch file (local mode) and Spark's parallelize/collect."""
    if request.param == "shared":
        monkeypatch.setattr(dist, "SHARED_MIN_BYTES", 0)
    else:
        monkeypatch.setattr(dist, "_shares_files", lambda sc: False)
    return request.param


# -- construction and collection ---------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_generators_bit_identical_to_blockgen(spark, dtype):
    # (700, 1030) in 300×600 blocks: blocks straddle the 512-entry generator tiles.
    cases = [(kind, (700, 1030), (300, 600)) for kind in blockgen.GENERATOR_KINDS] + [("normal", (1, 1), (1, 1))]
    ms = [DistMatrix.from_source(spark, GeneratorSource(kind, shape, dtype, seed=11), block) for kind, shape, block in cases]
    assert all(m.dtype == dtype and m.source is not None for m in ms)
    got = ms[0].to_numpy()
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, blockgen.generate("uniform", (700, 1030), dtype, seed=11))
    for (kind, shape, _), got in zip(cases, to_numpy_all(*ms), strict=True):
        np.testing.assert_array_equal(got, blockgen.generate(kind, shape, dtype, seed=11), err_msg=kind)


@pytest.mark.parametrize("shape,block,dtype", CASES)
def test_from_numpy_round_trip(spark, transfer, shape, block, dtype):
    a = data(shape, dtype)
    m = DistMatrix.from_numpy(spark, a, block)
    assert m.shape == shape and m.block == block and m.dtype == dtype and m.is_cached
    check_layout(m)
    got = m.to_numpy()
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(got, a)


def test_from_numpy_other_inputs(spark):
    m = DistMatrix.from_numpy(spark, np.arange(12).reshape(3, 4), (2, 2))  # ints become float64
    assert m.dtype == np.float64
    np.testing.assert_array_equal(m.to_numpy(), np.arange(12).reshape(3, 4))
    f = np.asfortranarray(data((9, 7), np.float32))
    np.testing.assert_array_equal(DistMatrix.from_numpy(spark, f[::2], (2, 3)).to_numpy(), f[::2])
    big = DistMatrix.from_numpy(spark, data((5, 5), np.float64), (10, 10))
    assert big.block == (5, 5) and big.grid == (1, 1)  # a block larger than the matrix is clipped
    with pytest.raises(ValueError, match="2-D"):
        DistMatrix.from_numpy(spark, np.zeros(3), (1, 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_source_read_by_tasks(spark, tmp_path, dtype, order):
    a = np.asarray(data((130, 97), dtype, seed=3), order=order)
    path = tmp_path / "a.npy"
    np.save(path, a)
    src = NpySource.open(str(path))
    assert src.fortran_order == (order == "F")
    m = DistMatrix.from_source(spark, src, (50, 40))
    check_layout(m)
    np.testing.assert_array_equal(m.to_numpy(), a)
    np.testing.assert_array_equal(m.transpose().to_numpy(), a.T)


def test_save_npy_is_atomic(spark, tmp_path):
    a = data((33, 21), np.float32)
    m = DistMatrix.from_numpy(spark, a, (20, 8))
    m.save_npy(str(tmp_path / "out.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), a)

    def boom(b):
        raise RuntimeError("task failure")

    with pytest.raises(Exception, match="task failure"):
        m.map_blocks(boom).save_npy(str(tmp_path / "bad.npy"))
    assert sorted(os.listdir(tmp_path)) == ["out.npy"]  # no partial file, no temporary left


# -- blockwise operations ----------------------------------------------------------------


def test_elementwise_same_and_different_layouts(spark):
    shape = (91, 67)
    a, b = data(shape, np.float64, 1), data(shape, np.float64, 2)
    A = DistMatrix.from_numpy(spark, a, (50, 40))
    B_same = DistMatrix.from_numpy(spark, b, (50, 40))
    ops = [("+", a + b), ("-", a - b), ("*", a * b), ("/", a / b)]
    results = [A.elementwise(op, B_same) for op, _ in ops]
    assert all(C.layout == A.layout and C.dtype == np.float64 for C in results)
    for (op, expected), got in zip(ops, to_numpy_all(*results), strict=True):
        np.testing.assert_array_equal(got, expected, err_msg=op)
    # Another layout is re-blocked to this one first; float32 stays float32.
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    A32 = DistMatrix.from_numpy(spark, a32, (91, 30))
    B_other = DistMatrix.from_numpy(spark, b32, (50, 67))
    C = A32.elementwise("/", B_other)
    assert C.layout == A32.layout and C.dtype == np.float32
    check_layout(C)
    np.testing.assert_array_equal(C.to_numpy(), a32 / b32)


def test_elementwise_with_source_operand_and_mixed_dtypes(spark):
    shape = (70, 45)
    g = GeneratorSource("normal", shape, np.float64, seed=4)
    gen = blockgen.generate("normal", shape, np.float64, seed=4)
    a = data(shape, np.float32, 5)
    A = DistMatrix.from_numpy(spark, a, (32, 32))
    G = DistMatrix.from_source(spark, g, (25, 30))  # still only a recipe: fused into A's tasks
    C = A.elementwise("-", G)
    assert C.dtype == np.float64 and C.layout == A.layout
    np.testing.assert_array_equal(C.to_numpy(), a - gen)
    D = G.elementwise("/", A)  # source on the left
    assert D.layout == A.layout
    np.testing.assert_array_equal(D.to_numpy(), gen / a)
    G.materialize()  # cached now: zipped (after re-blocking) instead of regenerated
    np.testing.assert_array_equal(G.elementwise("*", A).to_numpy(), gen * a)
    with pytest.raises(ValueError, match="equal shapes"):
        A.elementwise("+", DistMatrix.from_numpy(spark, a.T, (32, 32)))
    with pytest.raises(ValueError, match="operator"):
        A.elementwise("%", A)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scalar_and_unary(spark, dtype):
    a = data((53, 38), dtype, 6, low=-2.0, high=2.0)
    A = DistMatrix.from_numpy(spark, a, (20, 16))
    scalar_cases = [
        ("+", False, a + 2.5), ("-", False, a - 2.5), ("*", False, a * 2.5), ("/", False, a / 2.5),
        ("+", True, 2.5 + a), ("-", True, 2.5 - a), ("*", True, 2.5 * a), ("/", True, 2.5 / a),
    ]
    pos = A.unary("abs")
    unary_cases = [
        ("neg", -a, A), ("abs", np.abs(a), A), ("sqrt", np.sqrt(np.abs(a)), pos),
        ("exp", np.exp(a), A), ("log", np.log(np.abs(a)), pos),
    ]
    results = [A.scalar(op, 2.5, scalar_on_left=left) for op, left, _ in scalar_cases]
    results += [src.unary(name) for name, _, src in unary_cases]
    assert all(r.dtype == dtype for r in results)  # float32 stays float32, as in NumPy
    got = to_numpy_all(*results)
    for (op, left, expected), g in zip(scalar_cases, got[: len(scalar_cases)], strict=True):
        np.testing.assert_array_equal(g, expected, err_msg=f"{op} left={left}")
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    for (name, expected, _), g in zip(unary_cases, got[len(scalar_cases) :], strict=True):
        np.testing.assert_allclose(g, expected, rtol=rtol, err_msg=name)
    with pytest.raises(ValueError, match="unknown elementwise function"):
        A.unary("cosh")  # not in jampi_dsl.ops


@pytest.mark.parametrize("shape,block,dtype", [CASES[0], CASES[3], CASES[2]])
def test_transpose_by_shuffle(spark, shape, block, dtype):
    a = data(shape, dtype, 7)
    T = DistMatrix.from_numpy(spark, a, block).transpose()
    assert T.shape == shape[::-1] and T.block == block[::-1] and T.dtype == dtype
    check_layout(T)
    np.testing.assert_array_equal(T.to_numpy(), a.T)
    np.testing.assert_array_equal(T.transpose().to_numpy(), a)


def test_transpose_and_rechunk_from_source(spark):
    shape = (600, 530)
    g = GeneratorSource("uniform", shape, np.float32, seed=8)
    gen = blockgen.generate("uniform", shape, np.float32, seed=8)
    m = DistMatrix.from_source(spark, g, (256, 200))
    t = m.transpose()
    assert t.source is not None and t.block == (200, 256)
    np.testing.assert_array_equal(t.to_numpy(), gen.T)
    r = m.rechunk((100, 530))
    assert r.source is not None and r.grid == (6, 1)
    check_layout(r)
    np.testing.assert_array_equal(r.to_numpy(), gen)


@pytest.mark.parametrize("new_block", [(31, 45), (1000, 1000), (20, 130)])
def test_rechunk_by_shuffle(spark, new_block):
    a = data((93, 130), np.float64, 9)
    m = DistMatrix.from_numpy(spark, a, (40, 50))
    assert m.rechunk((40, 50)) is m
    r = m.rechunk(new_block)
    assert r.block == (min(new_block[0], 93), min(new_block[1], 130))
    check_layout(r)
    np.testing.assert_array_equal(r.to_numpy(), a)


def test_reductions(spark):
    for shape, block, dtype in [*CASES[::2], ((90, 120), (25, 35), np.float32), ((120, 90), (50, 30), np.float64)]:
        a = data(shape, dtype, 10, low=-1.0, high=1.0)
        m = DistMatrix.from_numpy(spark, a, block)
        ref = a.astype(np.float64)
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        for got, want in [(m.sum(), ref.sum()), (m.trace(), np.trace(ref)), (m.norm(), np.linalg.norm(ref))]:
            assert isinstance(got, float)
            assert got == pytest.approx(want, rel=rtol, abs=1e-9), (shape, block)


# -- layout, caching, barrier results ----------------------------------------------------


def test_layout_contract_and_partitioner(spark):
    a = data((50, 50), np.float64)
    A = DistMatrix.from_numpy(spark, a, (20, 20))
    B = DistMatrix.from_source(spark, GeneratorSource("ones", (50, 50)), (20, 20))
    assert A.rdd.partitioner == B.rdd.partitioner
    # Already on the grid: PySpark's partitionBy sees it and does not shuffle.
    assert A.rdd.partitionBy(9, GridPartitioner(3)) is A.rdd
    for m in (A, B, A.elementwise("+", B), A.scalar("*", 2.0), A.transpose(), B.unary("exp")):
        assert m.rdd.partitioner == A.rdd.partitioner
        check_layout(m)
    with pytest.raises(ValueError, match="partitions"):
        DistMatrix(spark.sparkContext.parallelize([], 3), (50, 50), (20, 20), np.float64)


def test_persist_materialize_unpersist(spark):
    sc = spark.sparkContext
    m = DistMatrix.from_source(spark, GeneratorSource("normal", (120, 80), seed=1), (50, 50))
    assert not m.is_cached
    assert m.materialize() is m and m.is_cached

    def cached_partitions():
        infos = sc._jsc.sc().getRDDStorageInfo()
        return sum(i.numCachedPartitions() for i in infos if i.id() == m.rdd._jrdd.id())

    assert cached_partitions() == m.nblocks
    np.testing.assert_array_equal(m.to_numpy(), blockgen.generate("normal", (120, 80), np.float64, seed=1))
    m.unpersist()
    assert not m.is_cached and cached_partitions() == 0


def _barrier_blocks(shape, block, gc, split, items):
    """A stand-in for a Cannon stage: each barrier task makes its own block after a global sync."""
    for _ in items:
        pass
    BarrierTaskContext.get().barrier()
    key = divmod(split, gc)
    yield key, GeneratorSource("uniform", shape, np.float64, seed=21).region(*bounds(key, shape, block))


def _barrier_rdd(sc, shape, block):
    grid = grid_of(shape, block)
    return (
        sc.parallelize([], grid[0] * grid[1])
        .barrier()
        .mapPartitionsWithIndex(partial(_barrier_blocks, shape, block, grid[1]))
    )


@pytest.mark.parametrize("detach", [True, False])
def test_barrier_result_supports_later_jobs(spark, monkeypatch, tmp_path, detach):
    if not detach:  # what happens where Spark's internals do not allow detaching
        monkeypatch.setattr(dist, "_detach", lambda rdd: rdd)
    sc = spark.sparkContext
    shape, block = (70, 90), (35, 45)  # a 2×2 grid: 4 barrier tasks on the 4 local slots
    expected = blockgen.generate("uniform", shape, np.float64, seed=21)
    m = DistMatrix.from_barrier_rdd(_barrier_rdd(sc, shape, block), shape, block, np.float64)
    assert m.is_cached
    assert m.rdd._jrdd.rdd().isBarrier() is (not detach)
    check_layout(m)
    np.testing.assert_array_equal(m._to_numpy_collect(), expected)
    np.testing.assert_array_equal(m._to_numpy_shared(str(tmp_path)), expected)
    assert m.sum() == pytest.approx(expected.sum(), rel=1e-12)
    other = DistMatrix.from_numpy(spark, np.ones(shape), block)
    np.testing.assert_array_equal(m.elementwise("+", other).to_numpy(), expected + 1)
    np.testing.assert_array_equal(other.elementwise("-", m).to_numpy(), 1 - expected)
    np.testing.assert_array_equal(m.transpose().to_numpy(), expected.T)
    if detach:  # ordinary stages now: even partial jobs work
        assert m.rdd.map(lambda kv: kv[0]).take(1) == [(0, 0)]
    m.unpersist()
    assert not m.is_cached


# -- a real standalone cluster -----------------------------------------------------------


def test_on_standalone_cluster(on_cluster, tmp_path):
    a = data((300, 200), np.float64, 12)
    np.save(tmp_path / "a.npy", a)
    out = on_cluster(
        f"""
        import numpy as np
        from jampi_dsl.session import get_spark, stop_spark, task_slots
        from jampi_dsl.executors import blockgen
        from jampi_dsl.executors.distributed import DistMatrix
        from jampi_dsl.executors.sources import GeneratorSource, NpySource

        spark = get_spark(MASTER)
        try:
            assert spark.sparkContext.master == MASTER
            slots = task_slots(spark)
            assert slots == 4, slots
            a = np.load({str(tmp_path / "a.npy")!r})
            g = blockgen.generate("normal", (300, 200), np.float64, seed=3)
            A = DistMatrix.from_numpy(spark, a, (128, 128))  # parallelized: not local mode
            G = DistMatrix.from_source(spark, GeneratorSource("normal", (300, 200), seed=3), (128, 128))
            F = DistMatrix.from_source(spark, NpySource.open({str(tmp_path / "a.npy")!r}), (100, 100))
            np.testing.assert_array_equal(G.to_numpy(), g)
            np.testing.assert_array_equal(F.to_numpy(), a)
            C = A.elementwise("*", G.materialize()).scalar("-", 1.0)
            np.testing.assert_array_equal(C.to_numpy(), a * g - 1.0)
            np.testing.assert_array_equal(A.transpose().to_numpy(), a.T)
            np.testing.assert_array_equal(F.elementwise("+", A).to_numpy(), a + a)
            assert abs(A.norm() - np.linalg.norm(a)) < 1e-9 * np.linalg.norm(a)
            hosts = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size()
            print("OK", slots, hosts)
        finally:
            stop_spark()
        """
    )
    assert out.split()[:2] == ["OK", "4"], out
