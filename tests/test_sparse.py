"""Sparse matrices: every operation with each input sparse and dense (and mixed) gives
NumPy's numbers, with the storage the contract gives its result; sparse files in and out;
non-zero counts in plans and memory verdicts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.io
import scipy.sparse as sp

import jampi_dsl
from jampi_dsl.errors import InputError, PlanError

LOCAL = jampi_dsl.session(executor="local")
BROADCAST = jampi_dsl.session(executor="broadcast")
TOL = {"float64": 1e-12, "float32": 2e-5}


def _sparse(rows, cols, density, seed, dtype, positive=False):
    rng = np.random.default_rng(seed)
    out = sp.random_array((rows, cols), density=density, format="csr", rng=rng, dtype=dtype)
    if not positive:
        out.data -= np.asarray(0.5, dtype=dtype)
    return out


def _operands(dtype):
    """Named operands: X, Y 12x9 (sparse, ~30% filled), R a 1x9 row, Q a 9x9 square, B 9x4 dense."""
    X = _sparse(12, 9, 0.3, 1, dtype)
    Y = _sparse(12, 9, 0.3, 2, dtype)
    R = _sparse(1, 9, 0.6, 3, dtype)
    Q = _sparse(9, 9, 0.3, 4, dtype) + sp.eye_array(9, dtype=dtype) * 3
    B = np.random.default_rng(5).standard_normal((9, 4)).astype(dtype)
    return {"X": X, "Y": Y, "R": R, "Q": Q.tocsr(), "B": B}


def _dense(v):
    return v.toarray() if sp.issparse(v) else v


# (name, operands it uses, the expression (jampi and NumPy spell it alike through `m`),
#  the result's storage when every operand it uses is sparse)
CASES = [
    ("neg", "X", lambda m, X: -X, "sparse"),
    ("abs", "X", lambda m, X: abs(X), "sparse"),
    ("sqrt", "X", lambda m, X: abs(X).sqrt(), "sparse"),
    ("sign", "X", lambda m, X: X.sign(), "sparse"),
    ("tanh", "X", lambda m, X: X.tanh(), "sparse"),
    ("exp", "X", lambda m, X: X.exp(), "dense"),
    ("scale", "X", lambda m, X: 2.5 * X, "sparse"),
    ("divide", "X", lambda m, X: X / 4, "sparse"),
    ("shift", "X", lambda m, X: X + 1, "dense"),
    ("square", "X", lambda m, X: X ** 2, "sparse"),
    ("greater", "X", lambda m, X: X > 0.1, "sparse"),
    ("equal zero", "X", lambda m, X: X.eq(0), "dense"),
    ("relu", "X", lambda m, X: m.maximum(X, 0), "sparse"),
    ("add", "XY", lambda m, X, Y: X + Y, "sparse"),
    ("subtract", "XY", lambda m, X, Y: X - Y, "sparse"),
    ("multiply", "XY", lambda m, X, Y: X * Y, "sparse"),
    ("maximum", "XY", lambda m, X, Y: m.maximum(X, Y), "sparse"),
    ("minimum", "XY", lambda m, X, Y: m.minimum(X, Y), "sparse"),
    ("row scale", "XR", lambda m, X, R: X * R, "sparse"),
    ("row add", "XR", lambda m, X, R: X + R, "dense"),
    ("matmul dense", "XB", lambda m, X, B: X @ B, "dense"),
    ("gram", "X", lambda m, X: X.T @ X, "sparse"),
    ("outer", "XY", lambda m, X, Y: X @ Y.T, "sparse"),
    ("chain", "XB", lambda m, X, B: X.T @ (X @ B), "dense"),
    ("gemm", "XB", lambda m, X, B: X @ B + 1.5 * (X @ B), "dense"),
    ("transpose", "X", lambda m, X: X.T, "sparse"),
    ("slice", "X", lambda m, X: X[2:7, 1:5], "sparse"),
    ("hcat", "XY", lambda m, X, Y: m.hcat(X, Y), "sparse"),
    ("vcat", "XY", lambda m, X, Y: m.vcat(X, Y), "sparse"),
    ("sum rows", "X", lambda m, X: X.sum(axis=1), "dense"),
    ("mean cols", "X", lambda m, X: X.mean(axis=0), "dense"),
    ("max cols", "X", lambda m, X: X.max(axis=0), "dense"),
    ("min rows", "X", lambda m, X: X.min(axis=1), "dense"),
    ("argmax rows", "X", lambda m, X: X.argmax(axis=1), "dense"),
    ("argmin cols", "X", lambda m, X: X.argmin(axis=0), "dense"),
    ("solve", "QB", lambda m, Q, B: m.solve(Q, B), "dense"),
    ("where", "XY", lambda m, X, Y: m.where(X > 0, X, Y), "dense"),
]
SCALARS = [
    ("sum", lambda m, X: X.sum()),
    ("mean", lambda m, X: X.mean()),
    ("max", lambda m, X: X.max()),
    ("min", lambda m, X: X.min()),
    ("norm", lambda m, X: X.norm()),
]


class _NumPyValue:
    """A NumPy array spelled as jampi's lazy values are (reductions keep dimensions, predicates
    give the operand's dtype), so one expression serves both."""

    def __init__(self, value):
        self.value = value

    @staticmethod
    def wrap(v):
        return _NumPyValue(v) if isinstance(v, np.ndarray) else v

    def __array__(self, dtype=None, copy=None):
        return self.value

    @property
    def T(self):  # noqa: N802
        return _NumPyValue(self.value.T)

    def eq(self, other):
        return _NumPyValue((self.value == other).astype(self.value.dtype))

    def norm(self):
        return float(np.linalg.norm(self.value))


def _plain(v):
    return v.value if isinstance(v, _NumPyValue) else v


def _lift(op):
    def method(self, *others):
        out = getattr(self.value, op)(*[_plain(o) for o in others])
        if op in ("__gt__", "__lt__"):
            out = out.astype(self.value.dtype)
        return _NumPyValue.wrap(out)
    return method


for _op in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__pow__",
            "__neg__", "__abs__", "__matmul__", "__gt__", "__lt__", "__getitem__"):
    setattr(_NumPyValue, _op, _lift(_op))
for _name in ("sqrt", "sign", "tanh", "exp"):
    setattr(_NumPyValue, _name, (lambda f: lambda self: _NumPyValue(f(self.value)))(getattr(np, _name)))
for _name in ("sum", "mean", "max", "min"):
    setattr(_NumPyValue, _name, (lambda f: lambda self, axis=None: _NumPyValue.wrap(
        f(self.value, axis=axis, keepdims=axis is not None)))(getattr(np, _name)))
for _name in ("argmax", "argmin"):
    setattr(_NumPyValue, _name, (lambda f: lambda self, axis: _NumPyValue(
        f(self.value, axis=axis, keepdims=True).astype(np.float64)))(getattr(np, _name)))


class _NumPy:
    """The session's functions, in NumPy."""

    maximum = staticmethod(lambda a, b: _NumPyValue(np.maximum(_plain(a), _plain(b))))
    minimum = staticmethod(lambda a, b: _NumPyValue(np.minimum(_plain(a), _plain(b))))
    where = staticmethod(lambda c, a, b: _NumPyValue(np.where(_plain(c) != 0, _plain(a), _plain(b))))
    hcat = staticmethod(lambda *p: _NumPyValue(np.hstack([_plain(x) for x in p])))
    vcat = staticmethod(lambda *p: _NumPyValue(np.vstack([_plain(x) for x in p])))
    solve = staticmethod(lambda a, b: _NumPyValue(np.linalg.solve(_plain(a), _plain(b))))


def _numpy_value(expression, arrays):
    return _plain(expression(_NumPy, *[_NumPyValue(a) for a in arrays]))


def _check(js, name, used, expression, sparse_storage, storages, dtype):
    operands = _operands(dtype)
    values = [operands[u] if storage == "sparse" else _dense(operands[u])
              for u, storage in zip(used, storages, strict=True)]
    lazy = [js.matrix(v) for v in values]
    result = expression(js, *lazy)
    expected = _numpy_value(expression, [_dense(v) for v in values])
    want = sparse_storage if all(s == "sparse" for s in storages) else None
    if want is not None and name not in ("matmul dense",):
        assert result.storage == want, f"{name}: storage {result.storage}, contract says {want}"
    if all(s == "dense" for s in storages):
        assert result.storage == "dense"
    (got,) = js.compute(result)
    assert sp.issparse(got) == (result.storage == "sparse"), f"{name}: the value's storage is not the plan's"
    got = _dense(got)
    assert got.dtype == np.dtype(dtype if name not in ("argmax rows", "argmin cols") else "float64")
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(got, expected, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10 * scale, err_msg=name)


def _storage_variants(used):
    n = len(used)
    variants = [("sparse",) * n, ("dense",) * n]
    if n == 2:
        variants += [("sparse", "dense"), ("dense", "sparse")]
    return variants


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,used,expression,storage", CASES, ids=[c[0] for c in CASES])
def test_operation_matches_numpy_for_every_storage(name, used, expression, storage, dtype):
    for storages in _storage_variants(used):
        _check(LOCAL, name, used, expression, storage, storages, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,used,expression,storage", CASES, ids=[c[0] for c in CASES])
def test_operation_matches_numpy_for_every_storage_on_spark(spark, name, used, expression, storage, dtype):
    """The same differential cases under a forced broadcast on local[4]: a product with a sparse
    operand runs on the executors (its sparse side as CSR blocks); what has no sparse kernel
    there (sparse results, the rest) runs on the driver, and every number is NumPy's."""
    for storages in _storage_variants(used):
        _check(BROADCAST, name, used, expression, storage, storages, dtype)


@pytest.mark.parametrize("name,expression", SCALARS, ids=[c[0] for c in SCALARS])
def test_scalar_reductions_of_sparse_match_numpy(name, expression):
    X = _operands("float64")["X"]
    got = float(LOCAL.compute(expression(LOCAL, LOCAL.matrix(X)))[0])
    assert got == pytest.approx(float(_numpy_value(expression, [X.toarray()])), rel=1e-12, abs=1e-12)


def test_nnz_sparse_and_dense_conversions():
    X = _operands("float64")["X"]
    lazy = LOCAL.matrix(X)
    dense = LOCAL.dense(lazy)
    assert dense.storage == "dense" and LOCAL.sparse(dense).storage == "sparse"
    assert LOCAL.sparse(lazy).node is lazy.node  # already sparse: no conversion step
    assert float(lazy.nnz()) == X.nnz
    assert float(dense.nnz()) == np.count_nonzero(X.toarray())
    values = LOCAL.run_text("S = random(300, 200, density=0.01, seed=4)\nprint(nnz(S))\nprint(nnz(dense(S)))")
    assert values["nnz(S)"] == 600 and values["nnz(dense(S))"] == 600


def test_sparse_random_is_reproducible_and_placed_uniformly():
    a = LOCAL.random(5000, 300, density=0.02, seed=9).to_scipy()
    b = LOCAL.random(5000, 300, density=0.02, seed=9).to_scipy()
    c = LOCAL.random(5000, 300, density=0.02, seed=10).to_scipy()
    assert (a != b).nnz == 0 and (a != c).nnz > 0
    assert a.nnz == pytest.approx(0.02 * 5000 * 300, rel=0.01)
    assert 0 <= a.data.min() and a.data.max() < 1
    per_row_band = np.add.reduceat(np.diff(a.indptr), [0, 2500])
    assert abs(per_row_band[0] - per_row_band[1]) < 0.1 * a.nnz  # both halves get their share
    normal = LOCAL.randn(4000, 100, density=0.05, seed=1).to_scipy()
    assert abs(normal.data.mean()) < 0.05 and normal.data.std() == pytest.approx(1.0, abs=0.05)


def test_sparse_files_round_trip_and_stay_sparse(tmp_path):
    X = _operands("float64")["X"]
    program = tmp_path / "io.lin"
    program.write_text(
        f'S = load("{tmp_path}/in.npz")\n'
        f'save(S, "{tmp_path}/out.npz")\nsave(S, "{tmp_path}/out.mtx")\nsave(S, "{tmp_path}/out.parquet")\n'
        f'save(S, "{tmp_path}/out.npy")\nsave(S * 2, "{tmp_path}/twice.parquet", form="rows")\n'
    )
    sp.save_npz(tmp_path / "in.npz", X)
    LOCAL.run_file(program)
    np.testing.assert_array_equal(sp.load_npz(tmp_path / "out.npz").toarray(), X.toarray())
    np.testing.assert_array_equal(scipy.io.mmread(tmp_path / "out.mtx").toarray(), X.toarray())
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), X.toarray())
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == X.nnz  # the non-zeros only
    assert table.schema.metadata[b"jampi.shape"] == b"12,9"
    back = jampi_dsl.session(executor="local")
    for name in ("out.npz", "out.mtx", "out.parquet"):
        loaded = back.load(tmp_path / name)
        assert loaded.storage == "sparse", name
        assert loaded.node.type.nnz == X.nnz, name
        np.testing.assert_array_equal(loaded.to_numpy(), X.toarray(), err_msg=name)
    assert back.load(tmp_path / "out.parquet", sparse=False).storage == "dense"
    assert back.load(tmp_path / "out.npy", sparse=True).storage == "sparse"
    np.testing.assert_array_equal(back.load(tmp_path / "twice.parquet").to_numpy(), 2 * X.toarray())


def test_coordinate_parquet_builds_csr_without_a_dense_intermediate(tmp_path):
    import pyarrow as pa

    i = np.array([0, 999_999, 5], dtype=np.int64)
    j = np.array([3, 499_999, 7], dtype=np.int64)
    pq.write_table(pa.table({"i": i, "j": j, "v": [1.0, 2.0, 3.0]}), tmp_path / "big.parquet")
    # 1,000,000 x 500,000 dense would be 4 TB: the plan and the run only see 3 entries.
    values = LOCAL.run_text(f'A = load("{tmp_path}/big.parquet")\nprint(sum(A))\nprint(nnz(A))\n'
                            f'print(sum(A @ ones(500000, 1)))')
    assert values["sum(A)"] == 6.0 and values["nnz(A)"] == 3.0
    pq.write_table(pa.table({"i": [0, 0], "j": [1, 1], "v": [1.0, 2.0]}), tmp_path / "dup.parquet")
    with pytest.raises(InputError, match=r"duplicate entry at \(0, 1\)"):
        LOCAL.run_text(f'A = load("{tmp_path}/dup.parquet", shape=(2, 2))\nprint(sum(A))')


def test_plans_and_memory_verdicts_count_non_zeros():
    # 1e6 x 1e6 with 1e6 non-zeros: 12 MB sparse, 8 TB dense.
    from jampi_dsl.api import plan_source
    from jampi_dsl.planner.explain import to_text

    plan = to_text(plan_source(
        "S = random(1000000, 1000000, density=0.000001, seed=1)\nx = ones(1000000, 1)\nprint(sum(S @ x))", "<t>"))
    assert "sparse nnz~1,000,000" in plan
    with pytest.raises(PlanError, match="driver"):
        LOCAL.run_text("S = random(1000000, 1000000, density=0.000001, seed=1)\nprint(sum(dense(S)))")


def test_storage_rules_are_static_and_checked_in_loops():
    with pytest.raises(jampi_dsl.ShapeError, match="storage"):
        LOCAL.run_text("S = random(5, 5, density=0.2)\nfor i in range(3) {\n  S = S + 1\n}\nprint(S)")
    values = LOCAL.run_text("S = random(50, 50, density=0.1, seed=2)\nfor i in range(3) {\n"
                            "  S = 0.5 * S\n}\nprint(nnz(S))")
    assert values["nnz(S)"] == 250


def test_forced_spark_methods_leave_sparse_products_on_the_driver(spark):
    js = jampi_dsl.session(executor="cannon")
    X = _operands("float64")["X"]
    B = _operands("float64")["B"]
    text = " ".join((js.matrix(X) @ js.matrix(B)).explain().split())
    assert "does not apply: no distributed kernel for sparse matrices here yet" in text
    np.testing.assert_allclose((js.matrix(X) @ js.matrix(B)).to_numpy(), X @ B, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mixed_programs_on_spark_match_scipy(spark, dtype):
    """A dense product on local[4] by a forced broadcast, then the sparse X (shipped as CSR blocks)
    times it by broadcast too: same numbers."""
    js = jampi_dsl.session(executor="broadcast")
    X = _sparse(600, 300, 0.05, 7, dtype)
    D = np.random.default_rng(8).standard_normal((300, 40)).astype(dtype)
    W = np.random.default_rng(9).standard_normal((40, 300)).astype(dtype)
    lazy = js.matrix(X) @ (js.matrix(D) @ js.matrix(W))
    got = lazy.to_numpy()
    np.testing.assert_allclose(got, X @ (D @ W), rtol=TOL[dtype] * 100, atol=TOL[dtype] * 100)
    assert float(js.matrix(X).nnz()) == X.nnz


def test_cli_json_and_print_show_sparse_values(tmp_path):
    program = tmp_path / "p.lin"
    program.write_text("S = random(4, 3, density=0.5, seed=1)\nprint(S)\n")
    out = subprocess.run([sys.executable, "-m", "jampi_dsl", "run", "--json", "--executor", "local", str(program)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    value = next(o["value"] for o in doc["outputs"] if o["label"] == "S")
    assert value["storage"] == "sparse" and value["nnz"] == 6
    S = jampi_dsl.session(executor="local").random(4, 3, density=0.5, seed=1).to_scipy().tocoo()
    assert sorted(map(tuple, value["entries"])) == sorted(zip(S.row.tolist(), S.col.tolist(), S.data.tolist(),
                                                              strict=True))


def test_saving_a_huge_sparse_matrix_dense_is_refused_before_the_run(tmp_path):
    program = tmp_path / "p.lin"
    program.write_text('S = random(1000000, 1000000, density=0.000001, seed=1)\n'
                       'save(S, "s.npz")\nsave(S, "s.npy")\n')
    with pytest.raises(PlanError, match="driver"):
        LOCAL.run_file(program)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.lin"]
    program.write_text('S = random(1000000, 1000000, density=0.000001, seed=1)\nsave(S, "s.npz")\n')
    LOCAL.run_file(program)
    assert sp.load_npz(tmp_path / "s.npz").nnz == 1_000_000


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_coordinate_parquet_in_any_order_and_row_groups(tmp_path, order):
    import pyarrow as pa

    X = _sparse(300, 200, 0.05, 11, "float64").tocoo()
    i, j, v = X.row.astype(np.int64), X.col.astype(np.int64), X.data
    keys = np.lexsort((j, i)) if order == "sorted" else np.random.default_rng(1).permutation(i.size)
    table = pa.table({"i": i[keys], "j": j[keys], "v": v[keys]})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=700)  # several row groups, read in batches
    from jampi_dsl.executors import sparse_io

    batch, sparse_io.BATCH_ROWS = sparse_io.BATCH_ROWS, 500
    try:
        got = LOCAL.load(tmp_path / "x.parquet").to_scipy()
    finally:
        sparse_io.BATCH_ROWS = batch
    shape = (int(i.max()) + 1, int(j.max()) + 1)  # a foreign file: the largest indices give the shape
    assert got.shape == shape
    np.testing.assert_array_equal(got.toarray(), X.toarray()[: shape[0], : shape[1]])
    twice = pa.table({"i": np.r_[i[keys], i[keys][:1]], "j": np.r_[j[keys], j[keys][:1]],
                      "v": np.r_[v[keys], v[keys][:1]]})
    if order == "sorted":
        twice = twice.sort_by([("i", "ascending"), ("j", "ascending")])
    pq.write_table(twice, tmp_path / "twice.parquet")
    with pytest.raises(InputError, match="duplicate entry"):
        LOCAL.load(tmp_path / "twice.parquet").to_scipy()


def test_from_spark_coordinates_stay_sparse_and_to_spark_writes_non_zeros(spark):
    js = jampi_dsl.session()
    X = _sparse(40, 30, 0.1, 12, "float64").tocoo()
    rows = [(int(a), int(b), float(c)) for a, b, c in zip(X.row, X.col, X.data, strict=True)]
    df = spark.createDataFrame(rows, "i long, j long, v double")
    A = js.from_spark(df, shape=(40, 30))
    assert A.storage == "sparse" and A.node.type.nnz == X.nnz
    np.testing.assert_array_equal(A.to_numpy(), X.toarray())
    assert js.from_spark(df, shape=(40, 30), sparse=False).storage == "dense"
    out = (A * 2).to_spark(form="coordinate")
    assert out.count() == X.nnz
    back = np.zeros((40, 30))
    for row in out.collect():
        back[row.i, row.j] = row.v
    np.testing.assert_array_equal(back, 2 * X.toarray())


def test_etl_example_runs_sparse_on_the_standalone_cluster(standalone_cluster, tmp_path):
    """The ETL example under spark-submit on the real cluster: the ratings stay sparse from the
    Parquet file on (the plan says so), and the outputs match SciPy's."""
    import os
    import shutil
    from pathlib import Path

    import pyspark

    from jampi_dsl.api import plan_file

    etl = Path(__file__).resolve().parent.parent / "examples" / "etl"
    work = tmp_path / "etl"
    shutil.copytree(etl, work, ignore=shutil.ignore_patterns("data", "out"))
    subprocess.run([sys.executable, str(work / "make_data.py"), "--users", "3000", "--items", "700",
                    "--ratings", "40000", "--features", "16"], check=True, capture_output=True, timeout=120)
    plan = plan_file(work / "etl.lin")
    ratings = next(s.node for s in plan.steps if s.node.op == "load" and "ratings" in s.node.path)
    assert ratings.type.is_sparse and ratings.type.nnz == 40000
    submit = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    entry = Path(jampi_dsl.__file__).with_name("__main__.py")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP="127.0.0.1", SPARK_HOME=os.path.dirname(pyspark.__file__))
    result = subprocess.run(
        [submit, "--master", standalone_cluster, "--conf", "spark.driver.host=127.0.0.1",
         "--conf", "spark.driver.bindAddress=127.0.0.1", str(entry), "run", str(work / "etl.lin"),
         "--executor", "cannon", "--quiet"],
        env=env, capture_output=True, text=True, timeout=300, cwd=work)
    assert result.returncode == 0, result.stderr[-4000:]
    table = pq.read_table(work / "data" / "ratings.parquet")
    R = sp.csr_array((table.column("v").to_numpy(), (table.column("i").to_numpy(), table.column("j").to_numpy())),
                     shape=(3000, 700))
    F = np.stack(pq.read_table(work / "data" / "item_features.parquet").column("row").to_pylist())
    P = R @ F / 5
    rows = pq.read_table(work / "out" / "profiles.parquet")
    got = np.zeros_like(P)
    got[rows.column("i").to_numpy()] = np.stack(rows.column("row").to_pylist())
    np.testing.assert_allclose(got, P, rtol=1e-12, atol=1e-12)
    gram = pq.read_table(work / "out" / "feature_gram.parquet")
    S = np.zeros((16, 16))
    S[gram.column("i").to_numpy(), gram.column("j").to_numpy()] = gram.column("v").to_numpy()
    np.testing.assert_allclose(S, P.T @ P, rtol=1e-10, atol=1e-9)
    printed = float(result.stdout.split("s = ")[1].split()[0])
    assert printed == pytest.approx(np.linalg.norm(P) / np.abs(R).sum(), rel=1e-12)


def test_review_findings_stay_fixed(tmp_path):
    """S * S of one object, values handed out are copies, S * 0 stores nothing, and malformed
    sparse files are input errors."""
    S = _operands("float64")["X"]
    values = LOCAL.run_text("S = random(6, 6, density=0.3, seed=1)\nprint(sum(S * S))\nprint(sum(dense(S) * dense(S)))\n"
                            "Z = S * 0\nprint(Z)\nprint(nnz(Z))\n")
    assert values["sum(S * S)"] == pytest.approx(values["sum(dense(S) * dense(S))"], rel=1e-14)
    assert values["Z"].nnz == 0 and values["nnz(Z)"] == 0
    js = jampi_dsl.session(executor="local")
    doubled = js.matrix(S) * 2
    handed = js.compute(doubled)[0]
    handed.data[:] = 100.0
    assert float(doubled.sum()) == pytest.approx(2 * S.sum(), rel=1e-14)
    bad = sp.csr_array((np.array([1.0, 2.0]), np.array([0, 5]), np.array([0, 1, 2])), shape=(2, 2))
    sp.save_npz(tmp_path / "bad.npz", bad, compressed=False)
    with pytest.raises(InputError, match="cannot read"):
        LOCAL.run_text(f'A = load("{tmp_path}/bad.npz")\nprint(sum(A))\n')
    (tmp_path / "dup.mtx").write_text("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 1.0\n1 1 2.0\n")
    with pytest.raises(InputError, match="twice"):
        LOCAL.run_text(f'A = load("{tmp_path}/dup.mtx")\nprint(sum(A))\n')
    (tmp_path / "big.mtx").write_text("%%MatrixMarket matrix coordinate real general\n2 2 1\n99999999999 1 1.0\n")
    with pytest.raises(InputError):
        LOCAL.run_text(f'A = load("{tmp_path}/big.mtx")\nprint(sum(A))\n')
