"""Bad input gives exit code 2 and a message naming ``file:line:col``, never a traceback.

Each case runs ``jampi run --executor local`` on a program that also saves a matrix,
and checks that nothing was written: a refused input stops the run before any output.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from jampi_dsl.cli import main
from jampi_dsl.planner import build as build_module

SAVE = 'save(ones(2, 2), "out/a.npy")\n'


def _run(path, *extra) -> int:
    return main(["run", str(path), "--quiet", "--executor", "local", *extra])


def _refused(tmp_path, capsys, program: str, *fragments: str, extra=(), line: int = 1) -> str:
    path = tmp_path / "prog.lin"
    path.write_text(SAVE + program)
    before = sorted(os.listdir(tmp_path))
    code = _run(path, *extra)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    if not extra:
        assert f"{path}:{line + 1}:" in err, err  # the program's save() is line 1
    for fragment in fragments:
        assert fragment in err, err
    assert sorted(os.listdir(tmp_path)) == before, "a refused run wrote something"
    return err


# ---------------------------------------------------------------- 1. corrupt .npy headers


def _npy_with_header(path, header: bytes, version: int = 1) -> None:
    length = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    path.write_bytes(b"\x93NUMPY" + bytes([version, 0]) + length + header + b"\0" * 64)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(
    "header",
    [
        b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2",  # unterminated: tokenize's TokenError
        b"\xff\xfe{'descr'",
    ],
    ids=["unterminated", "binary"],
)
def test_corrupt_npy_header(tmp_path, capsys, header, version):
    _npy_with_header(tmp_path / "bad.npy", header, version)
    _refused(tmp_path, capsys, 'A = load("bad.npy")\nprint(sum(A))\n', "bad.npy", "not a valid .npy file")


def test_npy_header_with_a_negative_shape(tmp_path, capsys):
    _npy_with_header(tmp_path / "bad.npy", b"{'descr': '<f8', 'fortran_order': False, 'shape': (-2, 2), }")
    _refused(tmp_path, capsys, 'A = load("bad.npy")\nprint(sum(A))\n', "bad.npy", "shape (-2, 2)")


def test_npy_header_with_an_absurd_shape(tmp_path, capsys):
    # The byte count of 2**40 x 2**40 float64 wrapped around in int64 and passed for small.
    _npy_with_header(tmp_path / "big.npy",
                     b"{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }")
    _refused(tmp_path, capsys, 'A = load("big.npy")\nprint(sum(A))\n', "big.npy", "truncated")


def test_corrupt_npy_at_run_time_is_an_input_error(tmp_path):
    from jampi_dsl.errors import InputError
    from jampi_dsl.executors.io import load_npy

    _npy_with_header(tmp_path / "bad.npy", b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2")
    with pytest.raises(InputError, match="bad.npy"):
        load_npy(str(tmp_path / "bad.npy"), "float64")


# ---------------------------------------------------------------- 2. Parquet index columns


def _parquet(folder, *tables) -> None:
    import pyarrow.parquet as pq

    folder.mkdir()
    for k, table in enumerate(tables):
        pq.write_table(table, folder / f"part-{k:05d}.parquet")


def _coordinates(i, j=(0, 1), v=(1.0, 2.0), i_type=None, j_type=None, shape: bytes | None = None):
    import pyarrow as pa

    table = pa.table({"i": pa.array(list(i), i_type), "j": pa.array(list(j), j_type), "v": list(v)})
    return table.replace_schema_metadata({b"jampi.shape": shape}) if shape is not None else table


LOAD_M = 'A = load("m.parquet")\nprint(sum(A))\n'


def test_parquet_string_index_column(tmp_path, capsys):
    _parquet(tmp_path / "m.parquet", _coordinates(["a", "b"]))
    _refused(tmp_path, capsys, LOAD_M, "m.parquet", "column 'i' must hold integers, got string")


@pytest.mark.parametrize("column", ["i", "j"])
@pytest.mark.parametrize("stored_shape", [None, b"2,2"], ids=["from-indices", "stored-shape"])
def test_parquet_missing_index(tmp_path, capsys, column, stored_shape):
    import pyarrow as pa

    i, j = ([0, None], [0, 1]) if column == "i" else ([0, 1], [0, None])
    _parquet(tmp_path / "m.parquet", _coordinates(i, j, i_type=pa.int64(), j_type=pa.int64(), shape=stored_shape))
    _refused(tmp_path, capsys, LOAD_M, "m.parquet", f"column {column!r} has missing values")


@pytest.mark.parametrize("order", ["int-first", "string-first"])
def test_parquet_parts_with_mixed_schemas(tmp_path, capsys, order):
    good, bad = _coordinates([0, 1]), _coordinates(["x", "y"])
    parts = (good, bad) if order == "int-first" else (bad, good)
    _parquet(tmp_path / "m.parquet", *parts)
    err = _refused(tmp_path, capsys, LOAD_M, "column 'i' must hold integers, got string")
    assert f"part-0000{1 if order == 'int-first' else 0}.parquet" in err  # names the offending part


def test_parquet_rows_form_with_a_missing_row(tmp_path, capsys):
    import pyarrow as pa

    _parquet(tmp_path / "m.parquet", pa.table({"i": [0, 1], "row": pa.array([[1.0, 2.0], None])}))
    _refused(tmp_path, capsys, LOAD_M, "m.parquet", "column 'row' has missing values")


def test_parquet_absurd_index(tmp_path, capsys):
    _parquet(tmp_path / "m.parquet", _coordinates([0, 2**40]))
    _refused(tmp_path, capsys, LOAD_M, "m.parquet", "1099511627777x2", "at most 2147483647")


# ---------------------------------------------------------------- 3. jampi.shape metadata


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        (b"abc", "'abc'"),
        (b"7", "'7'"),
        (b"\xff\xfe", r"b'\xff\xfe'"),
        (b"-5,-5", "'-5,-5'"),
        (b"1e11,1e11", "'1e11,1e11'"),
        (b"2,2,2", "'2,2,2'"),
        (b"0,2", "'0,2'"),
        (b"99999999999,2", "'99999999999,2'"),
        pytest.param(b"9" * 5000 + b",2", "'999", id="5000-digits"),
    ],
)
def test_parquet_bad_shape_metadata(tmp_path, capsys, stored, shown):
    _parquet(tmp_path / "m.parquet", _coordinates([0, 1], shape=stored))
    _refused(tmp_path, capsys, LOAD_M, "m.parquet", "jampi.shape", shown)


def test_parquet_good_shape_metadata_still_loads(tmp_path, capsys):
    _parquet(tmp_path / "m.parquet", _coordinates([0, 1], shape=b"3,4"))
    path = tmp_path / "prog.lin"
    path.write_text('A = load("m.parquet")\nprint(A)\n')
    assert _run(path) == 0, capsys.readouterr().err
    assert "3x4" in capsys.readouterr().out


# ---------------------------------------------------------------- 4. sizes


SIZED = "param n = 4\nA = ones(n, n)\nprint(sum(A))\n"


@pytest.mark.parametrize("value", ["1e400", "nan", "inf", "-inf", "1e10", "2.5", "0"])
def test_set_size_that_is_not_a_sane_whole_number(tmp_path, capsys, value):
    err = _refused(tmp_path, capsys, SIZED, "--set n", "matrix size", extra=("--set", f"n={value}"))
    assert "--set:1:3:" in err, err  # points at the value typed after --set
    assert f"    n={value}\n      ^" in err, err


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1e308", "at most 2147483647"),
        ("1e400", "a finite whole number"),
        ("2147483648", "at most 2147483647"),
        ("1e300 * 1e300", "a finite whole number"),
    ],
)
def test_program_size_that_is_not_a_sane_whole_number(tmp_path, capsys, expression, message):
    program = f"A = ones({expression}, 2)\nprint(sum(A))\n"
    err = _refused(tmp_path, capsys, program, message)
    assert f"prog.lin:2:10: argument error: a matrix size must be {message}" in err
    path = tmp_path / "prog.lin"
    assert main(["check", str(path)]) == 2  # check, too, refuses what run would
    assert message in capsys.readouterr().err


def test_non_finite_seed(tmp_path, capsys):
    _refused(tmp_path, capsys, "A = random(2, 2, seed=1e400)\nprint(sum(A))\n", "seed must be a finite whole number")


def test_largest_size_is_accepted_by_the_builder():
    from jampi_dsl.grammar.parser import parse

    program = build_module.build(parse("A = zeros(2147483647, 1)\nprint(A)\n"))
    assert program.outputs[0].x.type.shape == (2147483647, 1)


# ---------------------------------------------------------------- 5. deep expressions


def _sum_of(tmp_path, capsys, expression: str) -> float:
    path = tmp_path / "deep.lin"
    path.write_text(f"A = ones(3, 3)\nB = {expression}\nprint(sum(B))\n")
    code = _run(path)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    line = next(x for x in captured.out.splitlines() if x.startswith("sum(B) = "))
    return float(line.split("=", 1)[1])


@pytest.mark.parametrize("terms", [500, 2000])
def test_long_sum(tmp_path, capsys, terms):
    assert _sum_of(tmp_path, capsys, " + ".join(["A"] * terms)) == terms * 9


def test_long_mixed_chain(tmp_path, capsys):
    # ((A - A) + A) * 1 ... : left-leaning, every operator kind the grammar has at this level
    expression = "A" + " - A + A" * 700 + " * 1 / 1" * 300
    assert _sum_of(tmp_path, capsys, expression) == 9


def test_right_nested_sum(tmp_path, capsys):
    assert _sum_of(tmp_path, capsys, "A + (" * 1000 + "A" + ")" * 1000) == 1001 * 9


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 5000 + "A" + ")" * 5000,
        "-" * 2000 + "A",
        "A" + ".T" * 2000,
        "abs(" * 2000 + "A" + ")" * 2000,
    ],
    ids=["parentheses", "negations", "transposes", "calls"],
)
def test_deep_nesting(tmp_path, capsys, expression):
    assert _sum_of(tmp_path, capsys, expression) == 9


def test_long_scalar_size_expression(tmp_path, capsys):
    path = tmp_path / "deep.lin"
    path.write_text("A = ones(" + " + ".join(["1"] * 2000) + ", 2)\nprint(sum(A))\n")
    assert _run(path) == 0, capsys.readouterr().err[-2000:]
    assert "sum(A) = 4000" in capsys.readouterr().out


def test_recursion_limit_is_a_clear_error(tmp_path, capsys, monkeypatch):
    # Nothing in parsing or building recurses on an expression any more; should a Python
    # recursion limit still be hit, it is reported at the statement, not as a traceback.
    call = build_module.Builder._call

    def too_deep(self, node, args):
        if node.name == "abs":
            raise RecursionError("maximum recursion depth exceeded")
        return call(self, node, args)

    monkeypatch.setattr(build_module.Builder, "_call", too_deep)
    _refused(tmp_path, capsys, "A = abs(ones(2, 2))\nprint(sum(A))\n", "expression nested too deeply", line=1)


def test_deep_program_saves_the_right_matrix(tmp_path, capsys):
    path = tmp_path / "deep.lin"
    path.write_text("A = ones(3, 3)\nB = " + " + ".join(["A"] * 600) + '\nsave(B, "b.npy")\n')
    assert _run(path) == 0, capsys.readouterr().err[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.full((3, 3), 600.0))


def test_api_parameter_that_is_not_a_size():
    from jampi_dsl.api import _param_values, plan_source
    from jampi_dsl.errors import ResolveError

    with pytest.raises(ResolveError, match="parameter 'n': a matrix size must be a finite whole number"):
        plan_source(SIZED, "sized.lin", _param_values({"n": float("inf")}), executor="local")
