"""Every bad input exits 2 with file:line:col, the source line and a caret, and
writes nothing; a fuzz run shows that nothing but a JampiError ever escapes."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jampi_dsl.cli import main
from jampi_dsl.errors import JampiError
from jampi_dsl.grammar.parser import parse
from jampi_dsl.planner.build import build

BAD_PROGRAMS = {
    "syntax": ("X = random(3, 3\nsave(X, \"out/x.npy\")\n", 1, 16, "syntax error"),
    "unknown_name": ("X = random(3, 3)\nY = X @ Z\nsave(Y, \"out/y.npy\")\n", 2, 9, "unknown name 'Z'"),
    "unknown_function": ("X = randon(3, 3)\nsave(X, \"out/x.npy\")\n", 1, 5, "unknown function 'randon'"),
    "argument_count": ("X = random(3)\nsave(X, \"out/x.npy\")\n", 1, 5, "takes 2 arguments"),
    "matmul_shape": ("A = random(3, 4)\nB = random(3, 4)\nC = A @ B\nsave(C, \"out/c.npy\")\n", 3, 5,
                     "left columns == right rows"),
    "elementwise_shape": ("A = random(3, 4)\nB = random(4, 3)\nC = A + B\nsave(C, \"out/c.npy\")\n", 3, 5,
                          "equal shapes"),
    "missing_file": ("A = load(\"nowhere.npy\")\nsave(A, \"out/a.npy\")\n", 1, 10, "file not found"),
    "three_d_npy": ("A = load(\"cube.npy\")\nsave(A, \"out/a.npy\")\n", 1, 10, "3-D"),
    "non_whole_size": ("param n = 10.5\nX = random(n, 3)\nsave(X, \"out/x.npy\")\n", 2, 12, "whole number"),
    # `param` is reserved (LANGUAGE.md), so it is no name anywhere, not only at a statement's start
    "param_as_name": ("X = random(3, 3)\nY = X @ param\nsave(Y, \"out/y.npy\")\n", 2, 9, "unexpected 'param'"),
}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _check(path, *extra):
    return main(["check", str(path), *extra])


@pytest.mark.parametrize("case", sorted(BAD_PROGRAMS))
def test_bad_program_exits_2_with_location_and_caret(case, workdir, capsys):
    text, line, column, message = BAD_PROGRAMS[case]
    path = workdir / f"{case}.lin"
    path.write_text(text)
    before = sorted(os.listdir(workdir))
    for command in ("check", "run", "explain"):
        code = main([command, str(path)])
        err = capsys.readouterr().err
        assert code == 2, f"{command}: {err}"
        assert f"{path}:{line}:{column}:" in err, err
        assert message in err, err
        assert re.search(r"\n    .+\n +\^+", err), f"no caret in:\n{err}"
    assert sorted(os.listdir(workdir)) == before, "a failed check/run wrote something"


def test_set_of_undeclared_parameter(workdir, capsys):
    path = workdir / "p.lin"
    path.write_text("param n = 4\nX = random(n, n)\nprint(X)\n")
    assert main(["check", str(path), "--set", "m=3"]) == 2
    err = capsys.readouterr().err
    assert "--set:1:1:" in err and "declares no parameter 'm'" in err
    assert re.search(r"\n    m=3\n    \^", err), err
    assert not (workdir / "out").exists()


def test_set_overrides_and_is_checked(workdir, capsys):
    path = workdir / "p.lin"
    path.write_text("param n = 4\nX = random(n, n)\nprint(trace(X @ X))\n")
    assert main(["check", str(path), "--set", "n=6.5"]) == 2
    assert "whole number" in capsys.readouterr().err
    assert main(["run", str(path), "--set", "n=6", "--quiet"]) == 0
    assert "trace(X @ X) = " in capsys.readouterr().out


def test_save_is_atomic_when_run_fails(workdir, capsys):
    np.save(workdir / "nan.npy", np.array([[1.0, np.nan]]))
    path = workdir / "p.lin"
    path.write_text('A = ones(2, 2)\nsave(A, "out/a.npy")\nB = load("nan.npy", finite=true)\nsave(B, "out/b.npy")\n')
    assert main(["run", str(path), "--quiet"]) == 2
    assert "non-finite" in capsys.readouterr().err
    leftovers = [p for p in os.listdir(workdir / "out") if p.startswith(".")] if (workdir / "out").exists() else []
    assert leftovers == []
    assert not (workdir / "out" / "b.npy").exists()


SEEDS = [
    'param n = 4\nX = random(n, 3, seed=1)\nG = X.T @ X\ns = norm(G) / trace(G)\nsave(G, "g.npy")\nprint(s)\n',
    'A = randn(3, 3)\nB = A @ A.T + 2.5 * eye(3) - A / 4\nprint(-B.T)\nprint(sum(abs(B)))\n',
    'param p = "w.npy"\nW = load(p, dtype="float32")\nY = exp(W) * sqrt(abs(W))\nprint(Y)\n',
]
SEEDS += [  # version 2 expressions and linear algebra
    'X = randn(6, 4, seed=1)\nmu = mean(X, axis=0)\nZ = (X - mu) / sqrt(sum((X - mu) ** 2, axis=0))\n'
    'print(argmax(Z, axis=1))\nprint(max(abs(Z)) > 1 and not 2 <= 3 or 0)\n',
    'A = randn(8, 3, seed=1)\nQ, R = qr(A)\nU, s, Vt = svd(A, k=2)\nw, V = eigh(A.T @ A)\n'
    'print(solve(R, Q.T @ ones(8, 1)))\nprint(hcat(A, ones(8, 1)))\nprint(where(A > 0, A, 0) * tanh(A))\n',
]
SEEDS += [  # sparse storage
    'S = random(40, 30, density=0.05, seed=2)\nT = sparse(S * 2) @ randn(30, 4, seed=3)\n'
    'print(nnz(S))\nprint(dense(S.T) @ T)\nsave(S, "s.mtx")\n',
]
ALPHABET = list("()=@*+-/.,#\"\n TXAB0123456789eyrandomloadsaveprint_") + ["param", ".T", "@", "(3, 3)", "true"]
ALPHABET += ["**", "<", ">=", "==", " and ", " or ", "not ", "axis=0", "k=2", "qr(", "hcat(", "Q, R = "]
ALPHABET += ["density=", "sparse(", "dense(", "nnz(", ".mtx", ".npz"]


@st.composite
def mutated_programs(draw):
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        piece = draw(st.sampled_from(ALPHABET))
        if action == "insert":
            text = text[:pos] + piece + text[pos:]
        elif action == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 4)) :]
        elif action == "replace":
            text = text[:pos] + piece + text[pos + 1 :]
        else:
            end = min(len(text), pos + draw(st.integers(1, 12)))
            text = text[:end] + text[pos:end] + text[end:]
    return text


def _compile(text: str, base: str) -> None:
    from jampi_dsl.planner.passes import optimize
    from jampi_dsl.planner.physical import lower

    try:
        lower(optimize(build(parse(text, "fuzz.lin"), base_dir=base)))
    except JampiError as err:
        rendered = err.render()  # rendering must not fail either
        assert rendered


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_programs())
def test_fuzz_mutations_only_raise_jampi_errors(tmp_path_factory, text):
    base = tmp_path_factory.getbasetemp() / "fuzzbase"
    base.mkdir(exist_ok=True)
    if not (base / "w.npy").exists():
        np.save(base / "w.npy", np.ones((3, 3)))
    _compile(text, str(base))


@settings(max_examples=700, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80))
def test_fuzz_arbitrary_text_only_raises_jampi_errors(tmp_path_factory, text):
    _compile(text, str(tmp_path_factory.getbasetemp()))
