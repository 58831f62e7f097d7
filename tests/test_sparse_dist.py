"""Sparse matrices on the executors: CSR blocks in raw frames, read from coordinate Parquet by
the tasks, transposed, scaled, reduced, and multiplied by broadcast, against SciPy."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

import jampi_dsl
from jampi_dsl.api import plan_source
from jampi_dsl.errors import InputError
from jampi_dsl.executors.blockframes import RawBlockSerializer, RawPairDeserializer
from jampi_dsl.executors.distributed import DistMatrix
from jampi_dsl.executors.formats import write_parquet
from jampi_dsl.planner import ir

TOL = {"float64": 1e-12, "float32": 2e-5}


def _sparse(rows, cols, density, seed, dtype="float64"):
    out = sp.random_array((rows, cols), density=density, format="csr", rng=np.random.default_rng(seed), dtype=dtype)
    out.data -= np.asarray(0.5, dtype=dtype)
    return out


def _close(got, want, dtype="float64"):
    got = got.toarray() if sp.issparse(got) else np.asarray(got)
    want = want.toarray() if sp.issparse(want) else np.asarray(want)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=TOL[dtype] * 100, atol=TOL[dtype] * 100 * scale)


# ---------------------------------------------------------------- the wire (no Spark)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_csr_blocks_travel_as_raw_frames(dtype):
    blocks = [((0, 0), _sparse(300, 200, 0.1, 1, dtype)), ((0, 1), sp.csr_array((40, 7), dtype=dtype)),
              ((1, 0), np.arange(12.0, dtype=dtype).reshape(3, 4)),
              ((1, 1), sp.csr_array(_sparse(50, 60, 0.2, 2, dtype), dtype=dtype))]
    wide = sp.csr_array(blocks[3][1])
    wide.indices, wide.indptr = wide.indices.astype(np.int64), wide.indptr.astype(np.int64)
    blocks.append(((2, 2), wide))
    buf = io.BytesIO()
    RawBlockSerializer().dump_stream(blocks, buf)
    assert b"pickle" not in buf.getvalue() and b"\x80\x05" not in buf.getvalue()[:8]
    buf.seek(0)
    got = list(RawBlockSerializer().load_stream(buf))
    assert [k for k, _ in got] == [k for k, _ in blocks]
    for (_, want), (_, block) in zip(blocks, got, strict=True):
        assert sp.issparse(block) == sp.issparse(want) and block.dtype == np.dtype(dtype)
        _close(block, want, dtype)
    assert got[4][1].indices.dtype == np.int64


def test_zipped_sparse_and_dense_frames_pair_up():
    """A JVM zip interleaves the frames of two blocks; a sparse block has as many as a dense one."""
    a, b = _sparse(30, 20, 0.2, 3), np.ones((30, 20))
    one, two = io.BytesIO(), io.BytesIO()
    RawBlockSerializer().dump_stream([((0, 0), a)], one)
    RawBlockSerializer().dump_stream([((0, 0), b)], two)
    frames = []
    for stream in (io.BytesIO(one.getvalue()), io.BytesIO(two.getvalue())):
        out = []
        while (head := stream.read(4)):
            n = int.from_bytes(head, "big", signed=True)
            out.append(head + stream.read(n))
        frames.append(out)
    assert len(frames[0]) == len(frames[1])
    zipped = frames[0][:1] + frames[1][:1] + [f for pair in zip(frames[0][1:], frames[1][1:], strict=True) for f in pair]
    ((_, x), (_, y)), = RawPairDeserializer().load_stream(io.BytesIO(b"".join(zipped)))
    _close(x, a)
    _close(y, b)


def test_corrupt_sparse_frames_are_refused():
    buf = io.BytesIO()
    RawBlockSerializer().dump_stream([((0, 0), _sparse(20, 10, 0.3, 4))], buf)
    data = bytearray(buf.getvalue())
    data[4:8] = b"XXXX"  # the magic, after the frame length
    with pytest.raises(ValueError, match="corrupt sparse block header"):
        list(RawBlockSerializer().load_stream(io.BytesIO(bytes(data))))


# ---------------------------------------------------------------- DistMatrix with CSR blocks


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sparse_dist_matrix_operations_match_scipy(spark, dtype):
    A = _sparse(1000, 300, 0.02, 5, dtype)
    d = DistMatrix.from_scipy(spark, A, (130, 300))
    assert d.sparse and d.grid == (8, 1) and d.is_cached
    back = d.to_driver()
    assert sp.issparse(back) and back.dtype == np.dtype(dtype)
    _close(back, A, dtype)
    t = d.transpose()
    assert t.sparse and t.grid == (1, 8)
    _close(t.to_driver(), A.T, dtype)
    _close(d.scalar("*", 3.0).to_driver(), 3 * A, dtype)
    _close(d.scalar("/", 4.0).to_driver(), A / 4, dtype)
    assert d.count_nonzero() == A.nnz
    assert d.sum() == pytest.approx(float(A.sum(dtype=np.float64)), rel=1e-12)
    assert d.norm() == pytest.approx(float(sp.linalg.norm(A.astype(np.float64))), rel=1e-12)
    _close(d.to_numpy(), A.toarray(), dtype)


def _coordinate_parts(tmp_path, A, parts, shuffle):
    """``A`` as coordinate Parquet in ``parts`` files of two row groups each, entries shuffled or by row."""
    coo = sp.coo_array(A)
    order = np.random.default_rng(0).permutation(coo.nnz) if shuffle else np.arange(coo.nnz)
    folder = tmp_path / "r.parquet"
    folder.mkdir()
    for p, chunk in enumerate(np.array_split(order, parts)):
        table = pa.table({"i": coo.row[chunk].astype(np.int64), "j": coo.col[chunk].astype(np.int64),
                          "v": coo.data[chunk]})
        pq.write_table(table, folder / f"part-{p:03d}.parquet", row_group_size=max(1, len(chunk) // 2 + 1))
    return str(folder)


@pytest.mark.parametrize("shuffle", [False, True])
def test_coordinate_parquet_read_by_the_tasks(spark, tmp_path, shuffle):
    A = _sparse(2000, 700, 0.01, 6)
    path = _coordinate_parts(tmp_path, A, 3, shuffle)
    d = DistMatrix.from_coordinate_parquet(spark, path, A.shape, "float64", (300, 700))
    assert d.sparse and d.grid == (7, 1)
    got = d.to_driver()
    assert got.nnz == A.nnz
    _close(got, A)
    f32 = DistMatrix.from_coordinate_parquet(spark, path, A.shape, "float32", (300, 700)).to_driver()
    assert f32.dtype == np.float32


def test_bad_coordinate_parquet_fails_on_the_driver_naming_the_entry(spark, tmp_path):
    dup = tmp_path / "dup.parquet"
    pq.write_table(pa.table({"i": [0, 7, 7], "j": [1, 2, 2], "v": [1.0, 2.0, 3.0]}), dup)
    with pytest.raises(InputError, match=r"duplicate entry at \(7, 2\)"):
        DistMatrix.from_coordinate_parquet(spark, str(dup), (10, 10), "float64", (5, 10))
    out = tmp_path / "out.parquet"
    pq.write_table(pa.table({"i": [0, 50], "j": [1, 2], "v": [1.0, 2.0]}), out)
    with pytest.raises(InputError, match="i=50 is outside 0..9"):
        DistMatrix.from_coordinate_parquet(spark, str(out), (10, 10), "float64", (5, 10))


# ---------------------------------------------------------------- programs


def _plan_and_run(js, text, folder):
    plan = plan_source(text, "p.lin", None, js.resources, js.executor, base_dir=str(folder))
    methods = {}
    for step in plan.steps:
        if isinstance(step.node, (ir.Load, ir.MatMul, ir.Binary, ir.Reduce)):
            methods.setdefault(type(step.node).__name__, set()).add(step.method)
    return methods, js.run_plan(plan).values


def _program(tmp_path, R, F, G):
    write_parquet(str(tmp_path / "r.parquet"), R, "coordinate")
    np.save(tmp_path / "f.npy", F)
    np.save(tmp_path / "g.npy", G)
    return (
        'R = load("r.parquet", sparse=true)\nF = load("f.npy")\nG = load("g.npy")\n'
        "X = (2 * R) @ F\n"          # sparse big operand on the left, F shipped
        "Y = R.T @ X\n"              # transposed sparse operand (a shuffle of CSR blocks)
        "Z = G @ (R / 4)\n"          # sparse big operand on the right
        'print(sum(Y))\nprint(nnz(R))\nprint(norm(R))\nsave(Y, "y.npy")\nsave(Z, "z.npy")\n'
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_programs_with_forced_broadcast_run_sparse_on_the_executors(spark, tmp_path, dtype, monkeypatch):
    R = _sparse(3000, 500, 0.01, 7, dtype)
    F = np.random.default_rng(8).standard_normal((500, 12)).astype(dtype)
    G = np.random.default_rng(9).standard_normal((6, 3000)).astype(dtype)
    text = _program(tmp_path, R, F, G)
    monkeypatch.chdir(tmp_path)
    js = jampi_dsl.session(executor="broadcast")
    methods, values = _plan_and_run(js, text, tmp_path)
    # R is read by the tasks (every consumer of it runs there), scaled there, multiplied by broadcast.
    assert methods["MatMul"] == {"broadcast"} and "spark" in methods["Load"] and methods["Binary"] == {"spark"}
    Rd = R.astype(np.float64).toarray()
    Y = Rd.T @ (2 * Rd @ F.astype(np.float64))
    _close(np.load(tmp_path / "y.npy"), Y, dtype)
    _close(np.load(tmp_path / "z.npy"), G.astype(np.float64) @ (Rd / 4), dtype)
    assert values["sum(Y)"] == pytest.approx(Y.sum(), rel=TOL[dtype] * 100, abs=TOL[dtype] * 100 * abs(Y).max())
    assert values["nnz(R)"] == R.nnz
    assert values["norm(R)"] == pytest.approx(np.linalg.norm(Rd), rel=TOL[dtype] * 10)


def test_plan_places_a_sparse_input_too_big_for_the_driver_on_the_executors(spark, tmp_path, monkeypatch):
    """A sparse ratings matrix over the driver budget is read by the tasks, its products run by
    broadcast, and explain says so; the numbers are SciPy's."""
    R = _sparse(4000, 600, 0.02, 10)
    F = np.random.default_rng(11).standard_normal((600, 8))
    G = np.random.default_rng(12).standard_normal((4, 4000))
    text = _program(tmp_path, R, F, G)
    monkeypatch.chdir(tmp_path)
    js = jampi_dsl.session(conf={"jampi.local.maxBytes": str(200_000)})  # R's CSR is ~580 kB
    methods, values = _plan_and_run(js, text, tmp_path)
    assert methods["MatMul"] == {"broadcast"} and "spark" in methods["Load"]
    Rd = R.toarray()
    _close(np.load(tmp_path / "y.npy"), Rd.T @ (2 * Rd @ F))
    _close(np.load(tmp_path / "z.npy"), G @ (Rd / 4))
    assert values["nnz(R)"] == R.nnz


PAGERANK = """param iterations = 15
A = load("graph.parquet", shape=(3000, 3000), sparse=true)
n = nrow(A)
P = A * (1 / maximum(sum(A, axis=0), 1))
r = ones(n, 1) / n
for k in range(iterations) {
    r = 0.85 * (P @ r) + 0.15 / n
}
print(sum(abs(P)))
save(r, "r.npy")
"""


def test_pagerank_of_a_graph_over_the_driver_budget_runs_on_the_executors(spark, tmp_path, monkeypatch):
    """The graph is read by the tasks, its column sums (an axis reduction) come to the driver as one
    row, the scaling by that row keeps the CSR blocks where they are, and every iteration's
    product is a broadcast of r: the driver never holds A (its budget is a fifth of A's CSR)."""
    rng = np.random.default_rng(13)
    n, edges = 3000, 30000
    pairs = np.unique(rng.integers(0, n, size=(edges, 2)), axis=0)
    A = sp.csr_array((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    write_parquet(str(tmp_path / "graph.parquet"), A, "coordinate")
    monkeypatch.chdir(tmp_path)
    budget = (A.data.nbytes + A.indices.nbytes + A.indptr.nbytes) // 5
    js = jampi_dsl.session(conf={"jampi.local.maxBytes": str(budget)})
    methods, values = _plan_and_run(js, PAGERANK, tmp_path)
    assert "spark" in methods["Load"] and "spark" in methods["Reduce"] and "spark" in methods["Binary"]
    assert methods["MatMul"] == {"broadcast"}
    P = A.multiply(1 / np.maximum(A.sum(axis=0), 1).reshape(1, -1)).tocsr()
    r = np.full((n, 1), 1 / n)
    for _ in range(15):
        r = 0.85 * (P @ r) + 0.15 / n
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), r, rtol=1e-12)
    assert values["sum(abs(P))"] == pytest.approx(float(abs(P).sum()), rel=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sparse_blockwise_operations_on_the_executors_match_scipy(spark, dtype):
    A = _sparse(900, 300, 0.03, 14, dtype)
    B = _sparse(900, 300, 0.03, 15, dtype)
    d, e = DistMatrix.from_scipy(spark, A, (130, 300)), DistMatrix.from_scipy(spark, B, (130, 300))
    row = np.random.default_rng(1).standard_normal((1, 300)).astype(dtype)
    col = np.random.default_rng(2).standard_normal((900, 1)).astype(dtype)
    cases = [(d.elementwise("+", e), A + B), (d.elementwise("*", e), A.multiply(B)),
             (d.with_vector("*", row), A.multiply(row)), (d.with_vector("*", col, True), A.multiply(col)),
             (d.unary("abs"), abs(A)), (d.scalar("**", 2.0), A.power(2)),
             (d.rechunk((200, 100)), A), (d.transpose().rechunk((100, 900)), A.T)]
    for got, want in cases:
        assert got.sparse
        _close(got.to_driver(), want, dtype)
    for kind in ("sum", "mean", "max", "min"):
        for axis in (0, 1):
            want = getattr(A, kind)(axis=axis)
            want = want.toarray() if sp.issparse(want) else np.asarray(want)
            _close(d.reduce_axis(kind, axis).ravel(), want.ravel(), dtype)
    D = np.random.default_rng(5).standard_normal((900, 300)).astype(dtype)
    dense = DistMatrix.from_numpy(spark, D, (300, 100))
    mixed = dense.elementwise("*", d.rechunk(dense.block))  # a dense and a sparse operand, zipped
    assert mixed.sparse
    _close(mixed.to_driver(), A.multiply(D), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sparse_times_sparse_by_broadcast_stays_sparse(spark, tmp_path, dtype, monkeypatch):
    """Both operands sparse: the smaller is shipped as CSR, the partials are CSR, and where the
    big operand's strips run across the product (G.T @ S) CSR partials are summed by a shuffle."""
    G = _sparse(2000, 400, 0.01, 16, dtype)
    S = _sparse(400, 300, 0.02, 17, dtype)
    T = _sparse(2000, 300, 0.01, 18, dtype)
    for name, m in (("g", G), ("s", S), ("t", T)):
        write_parquet(str(tmp_path / f"{name}.parquet"), m, "coordinate")
    monkeypatch.chdir(tmp_path)
    text = ('G = load("g.parquet", sparse=true)\nS = load("s.parquet", sparse=true)\n'
            'T = load("t.parquet", sparse=true)\nA = G @ S\nB = G.T @ T\nprint(nnz(A))\nprint(nnz(B))\n'
            'save(A, "a.npz")\nsave(B, "b.npz")\n')
    methods, values = _plan_and_run(jampi_dsl.session(executor="broadcast"), text, tmp_path)
    assert methods["MatMul"] == {"broadcast"}
    want_a, want_b = (G @ S).tocsr(), (G.T @ T).tocsr()
    got_a, got_b = sp.load_npz(tmp_path / "a.npz"), sp.load_npz(tmp_path / "b.npz")
    _close(got_a, want_a, dtype)
    _close(got_b, want_b, dtype)
    assert values["nnz(A)"] == want_a.count_nonzero() and values["nnz(B)"] == want_b.count_nonzero()


def test_driver_blocks_reach_the_jvm_as_raw_frames_in_grid_order(spark):
    """Blocks shipped from the driver (dense or CSR) are written as raw frames, not pickled, and
    block i lands in partition i."""
    from jampi_dsl import spark_internals

    blocks = [((i, j), _sparse(30, 20, 0.2, 10 * i + j)) for i, j in np.ndindex(3, 2)]
    blocks += [((3, j), np.full((30, 20), float(j))) for j in range(2)]
    rdd = spark_internals.parallelize_raw(spark.sparkContext, blocks, RawBlockSerializer(), len(blocks))
    assert isinstance(spark_internals.deserializer(rdd), RawBlockSerializer)
    placed = rdd.mapPartitionsWithIndex(lambda i, items: [(i, key, sp.issparse(b)) for key, b in items]).collect()
    assert [(i, divmod(i, 2)) for i in range(8)] == [(i, tuple(key)) for i, key, _ in placed]
    assert [s for *_, s in placed] == [True] * 6 + [False] * 2


def test_empty_blocks_and_empty_files_move_and_read(spark, tmp_path):
    """A block with no entries cut into pieces (rechunk, transpose), and coordinate Parquet whose
    only row group is empty (jampi's own save of an all-zero sparse matrix)."""
    A = sp.csr_array(([1.5, -2.0], ([5, 590], [3, 39])), shape=(600, 40))  # the middle strips hold nothing
    d = DistMatrix.from_scipy(spark, A, (100, 40))
    _close(d.rechunk((150, 20)).to_driver(), A)
    _close(d.transpose().to_driver(), A.T)
    zero = tmp_path / "zero.parquet"
    write_parquet(str(zero), sp.csr_array((30, 8)), "coordinate")
    got = DistMatrix.from_coordinate_parquet(spark, str(zero), (30, 8), "float64", (10, 8)).to_driver()
    assert got.shape == (30, 8) and got.nnz == 0


def test_mixed_sparse_and_dense_operands_meet_on_the_dense_blocks(spark, tmp_path, monkeypatch):
    """S * D with S on the executors as full-width strips and D dense: S moves to D's blocks (not
    D to S's strips, which could exceed a frame); a sparse value kept on the driver (it is also
    printed) times a distributed product; results equal SciPy's."""
    S = _sparse(3000, 400, 0.01, 21)
    write_parquet(str(tmp_path / "s.parquet"), S, "coordinate")
    monkeypatch.chdir(tmp_path)
    text = ('S = load("s.parquet", sparse=true)\nA = randn(3000, 30, seed=1)\nB = randn(30, 400, seed=2)\n'
            'P = S * (A @ B)\nQ = (A @ B) * S\nprint(S[0:2, 0:2])\nsave(P, "p.npz")\nsave(Q, "q.npz")\n')
    js = jampi_dsl.session(executor="cannon")
    methods, _ = _plan_and_run(js, text, tmp_path)
    assert "spark" in methods["Binary"] and methods["Load"] == {"local"}  # S[0:2, 0:2] keeps S on the driver
    from jampi_dsl.executors.blockgen import generate

    ab = generate("normal", (3000, 30), "float64", seed=1) @ generate("normal", (30, 400), "float64", seed=2)
    _close(sp.load_npz(tmp_path / "p.npz"), S.multiply(ab))
    _close(sp.load_npz(tmp_path / "q.npz"), S.multiply(ab))


def test_sparse_frames_with_bad_row_pointers_are_refused():
    block = sp.csr_array(([1.0, 2.0, 3.0], [0, 1, 2], [0, 2, 1, 3]), shape=(3, 3), copy=False)  # pointers go back
    buf = io.BytesIO()
    RawBlockSerializer().dump_stream([((0, 0), block)], buf)
    with pytest.raises(ValueError, match="corrupt sparse block"):
        list(RawBlockSerializer().load_stream(io.BytesIO(buf.getvalue())))
