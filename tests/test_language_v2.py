"""Language version 2, expressions: ** and comparisons, and/or/not, where, maximum/minimum,
tanh/sign, nrow/ncol, broadcasting and reductions with axis=, as .lin programs on the
driver and on Spark, against NumPy; and their static errors, with file:line:col."""

from __future__ import annotations

import numpy as np
import pytest

import jampi_dsl
from jampi_dsl.cli import main
from jampi_dsl.executors.blockgen import generate

STANDARDISE = """
param n = 600
X = randn(n, 40, seed=1) @ randn(40, 300, seed=2)
mu = mean(X, axis=0)
sd = sqrt(sum((X - mu) ** 2, axis=0) / (nrow(X) - 1))
Z = (X - mu) / sd
print(sum(Z, axis=0))
print(max(abs(Z)))
print(argmax(X, axis=1))
R = where(X > 0, X, 0) + maximum(X, -0.5) * tanh(X) - sign(X) ** 2
print(sum(R))
print(min(R, axis=1))
print(ncol(X) == 300 and not nrow(X) < 600 or 0)
"""


def _expected():
    X = generate("normal", (600, 40), "float64", seed=1) @ generate("normal", (40, 300), "float64", seed=2)
    mu = X.mean(axis=0, keepdims=True)
    sd = np.sqrt(((X - mu) ** 2).sum(axis=0, keepdims=True) / (X.shape[0] - 1))
    Z = (X - mu) / sd
    R = np.where(X > 0, X, 0) + np.maximum(X, -0.5) * np.tanh(X) - np.sign(X) ** 2
    return {
        "sum(Z, axis=0)": Z.sum(axis=0, keepdims=True),
        "max(abs(Z))": float(np.abs(Z).max()),
        "argmax(X, axis=1)": X.argmax(axis=1)[:, None].astype(float),
        "sum(R)": float(R.sum()),
        "min(R, axis=1)": R.min(axis=1, keepdims=True),
        "ncol(X) == 300 and not nrow(X) < 600 or 0": 1.0,
    }


@pytest.mark.parametrize("executor", ["local", "auto"])
def test_v2_expressions_on_the_driver(executor):
    _compare(jampi_dsl.session(executor=executor).run_text(STANDARDISE), _expected())


def test_v2_expressions_on_spark(spark):
    """The product is a Cannon stage, so every elementwise step and reduction after it is distributed."""
    js = jampi_dsl.session(executor="cannon")
    plan = jampi_dsl.api.plan_source(STANDARDISE, "<v2>", resources=js.resources, executor="cannon")
    assert sum(1 for s in plan.steps if s.method == "spark") > 10
    _compare(js.run_text(STANDARDISE), _expected())


def _compare(values, expected):
    assert set(values) == set(expected)
    for label, want in expected.items():
        got = values[label]
        if isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-10, abs=1e-9), label
        else:
            assert got.shape == want.shape, label
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9, err_msg=label)


@pytest.mark.parametrize("program,message,where", [
    ("A = ones(3, 4)\nB = ones(4, 3)\nprint(A + B)\n", "needs equal shapes or shapes that broadcast", ":3:7"),
    ("A = ones(3, 4)\nprint(A * ones(1, 3))\n", "got 3x4 and 1x3", ":2:7"),
    ("A = ones(3, 4)\nprint(argmax(A))\n", "needs axis=0 or axis=1", ":2:7"),
    ("A = ones(3, 4)\nprint(sum(A, axis=2))\n", "axis must be 0 or 1", ":2:7"),
    ("A = ones(3, 4)\nprint(A and A)\n", "combines scalar conditions", ":2:7"),
    ("and = 3\n", "unexpected 'and'", ":1:1"),
    ("A = ones(2, 2)\nprint(nrow(2))\n", "nrow() needs a matrix", ":2:12"),
    ("A = ones(2, 2)\nprint(where(A, A))\n", "where() takes 3 arguments", ":2:7"),
])
def test_static_errors(tmp_path, capsys, program, message, where):
    path = tmp_path / "bad.lin"
    path.write_text(program)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and f"{path}{where}" in err, err


def test_precedence_matches_the_contract():
    values = jampi_dsl.session(executor="local").run_text(
        "a = -2 ** 2\nb = 2 ** 3 ** 2\nc = 2 * 3 ** 2\nd = 1 + 2 < 4 and 0 or 1 - 1\ne = not 0 == 1\n"
        "print(a)\nprint(b)\nprint(c)\nprint(d)\nprint(e)\n")
    assert values == {"a": -4.0, "b": 512.0, "c": 18.0, "d": 0.0, "e": 1.0}


def test_where_keeps_the_planned_dtype_and_names_are_not_bound_twice(tmp_path, capsys):
    js = jampi_dsl.session(executor="local")
    F = js.random(3, 4, seed=1, dtype="float32")
    W = js.where(F > 0.5, 1, 2)
    assert W.dtype == np.float32 and W.to_numpy().dtype == np.float32
    path = tmp_path / "q.lin"
    path.write_text("A = randn(4, 3, seed=1)\nQ, Q = qr(A)\nprint(Q)\n")
    assert main(["check", str(path)]) == 2
    assert "'Q' is named twice on the left" in capsys.readouterr().err


CALLS_IN_EXPRESSIONS = """def halve(x) {
    for j in range(2) {
        x = x * 0.5
    }
    return x
}
def row(X, i) {
    r = X[i, :]
    if sum(r) > 100 {
        r = r * 0
    }
    return r
}
X = ones(3, 2)
print(sum(halve(ones(2, 2))) + 1)
A = halve(halve(X) + row(X, 0))
print(A)
i = 0
while sum(halve(ones(1, 1) * i)) < 2 {
    i = i + 1
}
print(i)
k = 0
if k > 5 {
    print(-1)
} else if sum(row(X, 2)) > 1 {
    k = 7
}
print(k)
c = 0
for t in range(nrow(halve(ones(4, 1)))) {
    if t < 3 and sum(row(X, t)) > 0 {
        c = c + 1
    }
}
print(c)
"""


@pytest.mark.parametrize("executor", ["local", "auto"])
def test_functions_with_blocks_are_called_inside_expressions(executor):
    """A user function with a loop or a branch, called inside expressions, nested in its own
    arguments, in a while condition (recomputed each iteration), an else-if condition, a
    range, and on the right of an and whose left side guards an index (t = 3 never reads X[3, :])."""
    values = jampi_dsl.session(executor=executor).run_text(CALLS_IN_EXPRESSIONS)
    assert values["sum(halve(ones(2, 2))) + 1"] == 2.0
    np.testing.assert_array_equal(values["A"], np.full((3, 2), (0.25 + 1.0) * 0.25))
    assert values["i"] == 8 and values["k"] == 7 and values["c"] == 3


def test_an_error_inside_a_hoisted_call_points_at_the_call(tmp_path, capsys):
    program = tmp_path / "p.lin"
    program.write_text("def f(x) {\n    for j in range(2) {\n        x = x @ ones(3, 3)\n    }\n    return x\n}\n"
                       "print(sum(f(ones(2, 2))) + 1)\n")
    assert main(["check", str(program)]) == 2
    err = capsys.readouterr().err
    assert f"{program}:3:" in err and "3x3" in err  # the product inside f, as for a call on its own line


WRAPPED_CALLS = """def halve(x) {
    for j in range(2) {
        x = x * 0.5
    }
    return x
}
def h(x) {
    y = halve(x)
    return y
}
def g(X, i) {
    r = X[i, :]
    for j in range(1) {
        r = r * 1
    }
    return r
}
def guarded(X, i) {
    return i < nrow(X) and sum(g(X, i)) > 0
}
i = 0
while (sum(h(ones(1, 1) * i)) < 2) * (i < 20) {
    i = i + 1
}
print(i)
k = 0
if sum(h(ones(1, 1))) > 5 {
    k = 1
} else if sum(h(ones(1, 1))) > 0.2 {
    k = k + 2
}
print(k)
X = ones(3, 2)
t = 0
for j in range(4) {
    t = t + guarded(X, j)
}
print(t)
"""


def test_a_function_calling_a_function_with_blocks_is_hoisted_too():
    """h has no loop of its own but calls one, so its calls inside expressions become statements
    as well (else the while condition would read h's value from before the loop); and guarded's
    and short-circuits, so g never reads X[3, :]."""
    values = jampi_dsl.session(executor="local").run_text(WRAPPED_CALLS)
    assert values["i"] == 8 and values["k"] == 2 and values["t"] == 3
