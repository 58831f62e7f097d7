"""Files in and out on the local executor: every format and dtype round-trips,
bad files are input errors (exit 2) that write nothing, outputs are atomic."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

import jampi_dsl
from jampi_dsl.cli import main

JS = jampi_dsl.session(executor="local")


def _matrix(dtype: str, rows: int = 70) -> np.ndarray:
    rng = np.random.default_rng(3)
    m = rng.standard_normal((rows, 9)).astype(dtype)
    m[5] = 0  # an empty row in the middle
    m[-3:] = 0  # and empty rows at the end: the shape must survive the coordinate form
    return m


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("target", ["m.npy", "m.csv", "m.parquet", "rows.parquet"])
def test_round_trip(tmp_path, dtype, target):
    original = _matrix(dtype)
    form = ', form="rows"' if target.startswith("rows") else ""
    np.save(tmp_path / "in.npy", original)
    (tmp_path / "w.lin").write_text(f'A = load("in.npy")\nsave(A, "{target}"{form})\n')
    JS.run_file(tmp_path / "w.lin")
    (tmp_path / "r.lin").write_text(f'B = load("{target}")\nprint(B)\n')
    back = JS.run_file(tmp_path / "r.lin")["B"]
    assert sp.issparse(back) == (target == "m.parquet")  # coordinate Parquet reads back sparse
    back = back.toarray() if sp.issparse(back) else back
    expected_dtype = "float64" if target.endswith(".csv") else dtype  # CSV has no dtype: read as float64
    assert back.dtype == np.dtype(expected_dtype)
    assert back.shape == original.shape
    np.testing.assert_array_equal(back.astype(dtype), original)


def test_foreign_parquet_coordinate_shape_from_indices_and_argument(tmp_path):
    table = pa.table({"i": [0, 2, 4], "j": [1, 0, 3], "v": [1.5, -2.0, 3.0]})
    pq.write_table(table, tmp_path / "c.parquet")
    (tmp_path / "p.lin").write_text('A = load("c.parquet")\nB = load("c.parquet", shape=(6, 5))\nprint(A)\nprint(B)\n')
    values = JS.run_file(tmp_path / "p.lin")
    expected = np.zeros((5, 4))
    expected[[0, 2, 4], [1, 0, 3]] = [1.5, -2.0, 3.0]
    assert sp.issparse(values["A"]) and sp.issparse(values["B"])  # coordinate Parquet is sparse
    np.testing.assert_array_equal(values["A"].toarray(), expected)
    assert values["B"].shape == (6, 5) and values["B"][4, 3] == 3.0


def _bad(tmp_path, capsys, program: str, message: str, setup=None):
    if setup:
        setup(tmp_path)
    (tmp_path / "bad.lin").write_text(program)
    before = sorted(os.listdir(tmp_path))
    code = main(["run", str(tmp_path / "bad.lin"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert f"{tmp_path / 'bad.lin'}:" in err
    assert sorted(os.listdir(tmp_path)) == before, "a failed run wrote something"


SAVE = '\nsave(A, "out.npy")\n'


def test_missing_and_unreadable(tmp_path, capsys):
    _bad(tmp_path, capsys, 'A = load("none.csv")' + SAVE, "file not found")
    _bad(tmp_path, capsys, 'A = load("junk.parquet")' + SAVE, "not a readable Parquet",
         lambda p: (p / "junk.parquet").write_bytes(b"not parquet at all"))
    _bad(tmp_path, capsys, 'A = load("junk.npy")' + SAVE, "not a valid .npy",
         lambda p: (p / "junk.npy").write_bytes(b"\x93NUMPY garbage"))


def test_wrong_columns_and_values(tmp_path, capsys):
    pq.write_table(pa.table({"x": [1], "y": [2]}), tmp_path / "cols.parquet")
    _bad(tmp_path, capsys, 'A = load("cols.parquet")' + SAVE, "expected i, j, v")
    pq.write_table(pa.table({"i": [0], "j": [0], "v": ["a"]}), tmp_path / "str.parquet")
    _bad(tmp_path, capsys, 'A = load("str.parquet", shape=(1, 1))' + SAVE, "must be numeric")
    pq.write_table(pa.table({"i": [0, -1], "j": [0, 0], "v": [1.0, 2.0]}), tmp_path / "neg.parquet")
    _bad(tmp_path, capsys, 'A = load("neg.parquet", shape=(2, 2))' + SAVE, "outside 0..1")
    pq.write_table(pa.table({"i": [0, 5], "j": [0, 0], "v": [1.0, 2.0]}), tmp_path / "big.parquet")
    _bad(tmp_path, capsys, 'A = load("big.parquet", shape=(2, 2))' + SAVE, "index i=5 is outside")
    pq.write_table(pa.table({"i": [1, 1], "j": [0, 0], "v": [1.0, 2.0]}), tmp_path / "dup.parquet")
    _bad(tmp_path, capsys, 'A = load("dup.parquet")' + SAVE, "duplicate entry at (1, 0)")


def test_csv_errors(tmp_path, capsys):
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    _bad(tmp_path, capsys, 'A = load("ragged.csv")' + SAVE, "ragged")
    (tmp_path / "word.csv").write_text("1,2\n3,x\n")
    _bad(tmp_path, capsys, 'A = load("word.csv")' + SAVE, "'x' is not a number")


def test_finite_check(tmp_path, capsys):
    np.save(tmp_path / "inf.npy", np.array([[1.0, 2.0], [np.inf, 0.0]]))
    _bad(tmp_path, capsys, 'A = load("inf.npy", finite=true)' + SAVE, "non-finite value inf at row 1, column 0")
    (tmp_path / "ok.lin").write_text('A = load("inf.npy")\nprint(A)\n')
    assert np.isinf(JS.run_file(tmp_path / "ok.lin")["A"][1, 0])


def test_failed_run_keeps_previous_outputs_and_writes_none(tmp_path, capsys):
    """A run that fails in a later node leaves every earlier output absent (staged, never renamed)
    and an existing output from a previous run untouched."""
    (tmp_path / "old.parquet").mkdir()
    pq.write_table(pa.table({"i": [0], "j": [0], "v": [7.0]}), tmp_path / "old.parquet" / "part-0.parquet")
    np.save(tmp_path / "nan.npy", np.array([[np.nan]]))
    program = (
        'A = ones(300, 300)\nsave(A, "first.npy")\nsave(A, "old.parquet")\n'
        'B = load("nan.npy", finite=true)\nsave(B, "second.csv")\n'
    )
    (tmp_path / "p.lin").write_text(program)
    assert main(["run", str(tmp_path / "p.lin"), "--quiet"]) == 2
    assert "non-finite" in capsys.readouterr().err
    names = sorted(os.listdir(tmp_path))
    assert names == ["nan.npy", "old.parquet", "p.lin"], names
    assert pq.read_table(tmp_path / "old.parquet").column("v").to_pylist() == [7.0]
    # the same program without the bad input replaces old.parquet completely
    (tmp_path / "p.lin").write_text(program.replace(', finite=true', '').replace("nan.npy", "nan.npy"))
    assert main(["run", str(tmp_path / "p.lin"), "--quiet"]) == 0
    back = JS.run_text(f'X = load("{tmp_path / "old.parquet"}")\nprint(X)\n')["X"]
    np.testing.assert_array_equal(back.toarray(), np.ones((300, 300)))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("target", ["m.npy", "m.csv", "m.parquet", "rows.parquet"])
def test_round_trip_distributed(spark, tmp_path, dtype, target):
    """The same round trip with every matrix distributed: the loads feed a Cannon product,
    so they are made by Spark tasks, and the saves write a distributed result."""
    original = _matrix(dtype, rows=600)  # 600 rows: two row blocks on the embedded default
    np.save(tmp_path / "in.npy", original)
    form = ', form="rows"' if target.startswith("rows") else ""
    js = jampi_dsl.session(executor="cannon")
    eye_dtype = ', dtype="float32"' if dtype == "float32" else ""
    (tmp_path / "w.lin").write_text(f'A = load("in.npy")\nI = eye(9{eye_dtype})\nsave(A @ I, "{target}"{form})\n')
    js.run_file(tmp_path / "w.lin")
    read_dtype = "" if target.endswith(".csv") else eye_dtype  # CSV reads back as float64
    (tmp_path / "r.lin").write_text(f'B = load("{target}")\nC = B @ eye(9{read_dtype})\nprint(C)\n')
    back = js.run_file(tmp_path / "r.lin")["C"]
    expected_dtype = "float64" if target.endswith(".csv") else dtype
    assert back.dtype == np.dtype(expected_dtype) and back.shape == original.shape
    np.testing.assert_allclose(back, original, rtol=1e-6 if dtype == "float32" else 0)
    from jampi_dsl.executors.distributed import choose_block
    from jampi_dsl.session import task_slots

    assert choose_block(original.shape, task_slots(spark))[0] < original.shape[0], "expected several blocks"
