"""Language version 2, blocks: loops, branches, break, user functions, indexing and
slice assignment, print of several values; run on the driver against NumPy, and
every static error of the contract with file:line:col before anything runs."""

from __future__ import annotations

import numpy as np
import pytest

import jampi_dsl
from jampi_dsl.api import plan_source
from jampi_dsl.cli import main
from jampi_dsl.executors.blockgen import generate
from jampi_dsl.planner.flow import FlowPlan, Loop


def run(text: str, executor: str = "local", params=None):
    return jampi_dsl.session(executor=executor).run_text(text, params=params)


def printed(text: str, executor: str = "local") -> list:
    js = jampi_dsl.session(executor=executor)
    plan = plan_source(text, "<t>", resources=js.resources, executor=executor)
    return [o.value for o in js.run_plan(plan).outputs if o.kind == "print"]


POWER = """
param n = 40
param iters = 30
A = randn(n, n, seed=3)
S = A.T @ A
v = ones(n, 1)
for i in range(iters) {
    w = S @ v
    v = w / norm(w)
}
lam = (v.T @ S @ v)[0, 0]
print(lam)
"""


def test_for_loop_is_numpy_power_iteration():
    A = generate("normal", (40, 40), "float64", seed=3)
    S = A.T @ A
    v = np.ones((40, 1))
    for _ in range(30):
        w = S @ v
        v = w / np.linalg.norm(w)
    assert run(POWER)["lam"] == pytest.approx(float((v.T @ S @ v)[0, 0]), rel=1e-12)


def test_a_loop_is_planned_once_not_unrolled():
    few = plan_source(POWER, "<p>", {"iters": jampi_dsl.api.ParamValue(3.0)})
    many = plan_source(POWER, "<p>", {"iters": jampi_dsl.api.ParamValue(1_000_000.0)})
    assert isinstance(many, FlowPlan) and len(many.steps) == len(few.steps)
    (loop,) = [item for item in many.flow.body if isinstance(item, Loop)]
    assert loop.bounds == (0.0, 1_000_000.0, 1.0)


def test_while_break_and_branches():
    text = """
i = 0
total = 0
while i < 100 {
    i = i + 1
    if i % 1 == 0 and i > 50 {
        break
    } else if i > 10 {
        total = total + 2
    } else {
        total = total + 1
    }
}
print(i)
print(total)
"""
    with pytest.raises(jampi_dsl.JampiError):  # there is no % operator
        run(text)
    values = run(text.replace("i % 1 == 0 and ", ""))
    assert values["i"] == 51.0 and values["total"] == 10 + 2 * 40


def test_range_forms_and_run_time_bounds():
    values = run("""
s = 0
for k in range(2, 11, 3) {
    s = s + k
}
print(s)
n = sum(ones(3, 4))
t = 0
for k in range(n) {
    t = t + 1
}
print(t)
c = 0
for k in range(5, 0, -2) {
    c = c + k
}
print(c)
""")
    assert values == {"s": 2 + 5 + 8.0, "t": 12.0, "c": 5 + 3 + 1.0}


def test_functions_several_values_and_locals():
    values = run("""
def scale(x, a) {
    y = x * a
    return y, sum(y)
}
def twice(x) {
    return 2 * x
}
M, s = scale(ones(2, 3), 4)
y = 5
print(twice(s) + y)
print(M)
""")
    assert values["twice(s) + y"] == 2 * 24.0 + 5
    np.testing.assert_array_equal(values["M"], np.full((2, 3), 4.0))


def test_function_with_a_loop_on_its_own_line():
    values = run("""
def geometric(x, k) {
    acc = x
    for i in range(k) {
        acc = acc * 0.5
    }
    return acc
}
r = geometric(ones(2, 2), 3)
print(sum(r))
""")
    assert values["sum(r)"] == 4 * 0.125


def test_indexing_and_slice_assignment():
    X = np.arange(20.0).reshape(4, 5)
    values = run("""
X = zeros(4, 5)
for i in range(4) {
    for j in range(5) {
        X[i, j] = i * 5 + j
    }
}
print(X[1:3, :])
print(X[-1, 2])
print(X[:, -2])
print(X[2, 1:])
Y = X
Y[0:2, 3:5] = ones(2, 2) * -1
print(Y)
print(X[0, 3])
""")
    np.testing.assert_array_equal(values["X[1:3, :]"], X[1:3, :])
    assert values["X[-1, 2]"] == X[-1, 2]
    np.testing.assert_array_equal(values["X[:, -2]"], X[:, -2:-1])
    np.testing.assert_array_equal(values["X[2, 1:]"], X[2:3, 1:])
    expected = X.copy()
    expected[0:2, 3:5] = -1
    np.testing.assert_array_equal(values["Y"], expected)
    assert values["X[0, 3]"] == 3.0  # Y's assignment made a copy: X kept its value


def test_dynamic_index_out_of_range_fails_naming_the_line(tmp_path, capsys):
    path = tmp_path / "p.lin"
    path.write_text("X = ones(3, 3)\nk = sum(X)\nprint(X[k, 0])\n")
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert "index 9 is out of range for 3" in err and f"{path}:3:" in err


def test_print_of_several_values():
    lines = printed('i = 3\nprint("iteration", i, "residual", 2.5e-9, ones(1, 2))\n')
    assert lines[0].splitlines()[0] == "iteration 3 residual 2.5e-09 [1x2]"


def test_static_if_is_decided_at_plan_time_but_both_branches_are_checked():
    text = 'param method = "cg"\nif method == "cg" {\n  x = ones(2, 2)\n} else {\n  x = ones(3, 3) @ ones(2, 2)\n}\nprint(x)\n'
    plan = plan_source(text.replace("@ ones(2, 2)", ""), "<t>")
    assert not isinstance(plan, FlowPlan)  # no branch left to decide at run time
    with pytest.raises(jampi_dsl.ShapeError):
        plan_source(text, "<t>")


def test_loop_invariant_product_is_hoisted():
    text = """
X = randn(50, 8, seed=1)
y = randn(50, 1, seed=2)
w = zeros(8, 1)
for i in range(20) {
    g = X.T @ (X @ w) - X.T @ y
    w = w - 0.005 * g
}
print(w)
"""
    plan = plan_source(text, "<t>")
    (loop,) = [item for item in plan.flow.body if isinstance(item, Loop)]
    assert any("matmul" in h for h in loop.hoisted)
    X, y = generate("normal", (50, 8), "float64", seed=1), generate("normal", (50, 1), "float64", seed=2)
    w = np.zeros((8, 1))
    for _ in range(20):
        w = w - 0.005 * (X.T @ (X @ w) - X.T @ y)
    np.testing.assert_allclose(run(text)["w"], w, rtol=1e-12)
    assert "hoisted before the loop" in jampi_dsl.api.explain_mod.to_text(plan, width=300)


@pytest.mark.parametrize(
    "program, message, where",
    [
        ("v = ones(3, 1)\nfor i in range(3) {\n    v = ones(3, 3) @ v @ ones(1, 2)\n}\nprint(v)\n",
         "keeps the shape", ":3:5"),
        ("x = 1\nif sum(ones(2, 2)) > 1 {\n    y = 2\n}\nprint(y)\n", "not bound on every path", ":5:7"),
        ("for i in range(3) {\n    t = i\n}\nprint(t)\n", "not bound on every path", ":4:7"),
        ("print(f(1))\ndef f(x) {\n    return x\n}\n", "called before its definition", ":1:7"),
        ("def f(x) {\n    return g(x)\n}\ndef g(x) {\n    return f(x)\n}\nprint(f(1))\n", "recursion", ""),
        ("def f(x) {\n    return x\n}\nprint(f(1, 2))\n", "takes 1 argument", ":4:7"),
        ("def f(x) {\n    return x, x\n}\na = f(1)\nprint(a)\n", "returns 2 values", ":4:5"),
        ("break\n", "break outside a loop", ":1:1"),
        ("while ones(2, 2) {\n    x = 1\n}\n", "must be a scalar", ":1:7"),
        ("for i in range(3) {\n    x = 1\n", "not closed", ""),
        ("X = ones(3, 3)\nprint(X[3, 0])\n", "out of range", ":2:9"),
        ("X = ones(3, 3)\nk = sum(X)\nprint(X[0:k, 0])\n", "known before the run", ":3:11"),
        ("x = 1\n} else {\n", "unexpected", ":2:1"),
    ],
)
def test_static_errors_exit_2_with_a_caret(tmp_path, capsys, program, message, where):
    path = tmp_path / "bad.lin"
    path.write_text(program)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and f"{path}{where}" in err, err


CG = """
param n = 400
param d = 48
param lam = 0.5
X = randn(n, d, seed=11)
y = randn(n, 1, seed=12)
w = zeros(d, 1)
r = X.T @ y
p = r
rr = sum(r * r)
k = 0
while k < 200 and rr > 1e-20 {
    q = X.T @ (X @ p) + lam * p
    alpha = rr / sum(p * q)
    w = w + alpha * p
    r = r - alpha * q
    new = sum(r * r)
    p = r + (new / rr) * p
    rr = new
    k = k + 1
}
print(w)
print(k)
"""


def _persistent_rdds(spark) -> set[int]:
    return {int(k) for k in spark.sparkContext._jsc.getPersistentRDDs().keySet()}


@pytest.mark.parametrize("executor", ["cannon", "broadcast"])
def test_cg_loop_on_spark_keeps_values_distributed_and_frees_them(spark, executor):
    X, y = generate("normal", (400, 48), "float64", seed=11), generate("normal", (400, 1), "float64", seed=12)
    expected = np.linalg.solve(X.T @ X + 0.5 * np.eye(48), X.T @ y)
    js = jampi_dsl.session(executor=executor)
    plan = plan_source(CG, "<cg>", resources=js.resources, executor=executor)
    (loop,) = [item for item in plan.flow.body if isinstance(item, Loop)]
    body_methods = {s.method for seg in loop.body for s in seg.plan.steps}
    assert executor in body_methods  # the products on the executors, their small vectors on the driver
    before = _persistent_rdds(spark)
    values = js.run_plan(plan).values
    np.testing.assert_allclose(values["w"], expected, rtol=1e-8, atol=1e-10)
    assert 5 < values["k"] < 200
    assert _persistent_rdds(spark) == before  # every iteration's copies released, and the last ones too


def test_lineage_does_not_grow_with_iterations(spark):
    """A carried distributed matrix is materialised and detached each iteration: the RDD the
    last iteration reads has a short lineage however many iterations ran."""
    from jampi_dsl.executors import flow

    depths = []
    original = flow.Slots.set

    def recording(self, slot, value, held=None):
        if slot == "v" and hasattr(value, "rdd"):
            depths.append(value.rdd.toDebugString().count(b"\n"))
        return original(self, slot, value, held)

    text = POWER.replace("param n = 40", "param n = 256")
    js = jampi_dsl.session(executor="cannon")
    flow.Slots.set = recording
    try:
        js.run_text(text, params={"iters": 12})
    finally:
        flow.Slots.set = original
    assert len(depths) >= 12 and max(depths) == min(depths), depths


def test_api_indexing_and_region_replacement():
    js = jampi_dsl.session(executor="local")
    A = np.arange(12.0).reshape(3, 4)
    X = js.matrix(A)
    np.testing.assert_array_equal(np.asarray(X[0:2, :]), A[0:2, :])
    np.testing.assert_array_equal(np.asarray(X[:, -1]), A[:, -1:])
    assert float(X[2, 3]) == 11.0
    j = X[0, 1] * 2  # a lazy scalar as an index, checked when it runs
    np.testing.assert_array_equal(np.asarray(X[:, j]), A[:, 2:3])
    Y = X.at[0, :].set(np.zeros((1, 4)))
    expected = A.copy()
    expected[0, :] = 0
    np.testing.assert_array_equal(np.asarray(Y), expected)
    np.testing.assert_array_equal(np.asarray(X), A)  # unchanged
    with pytest.raises(IndexError):
        X[3, 0]
    with pytest.raises(jampi_dsl.JampiError):
        np.asarray(X[:, X[0, 3] * 2])  # index 6 of 4 columns, found when it runs


def test_progress_sees_each_iteration_and_the_condition_scalars():
    from jampi_dsl.cli import loop_status
    from jampi_dsl.executors.base import RunContext
    from jampi_dsl.executors.flow import execute

    plan = plan_source("diff = 1\nk = 0\nwhile diff > 1e-3 {\n    diff = diff / 10\n    k = k + 1\n}\nprint(k)\n", "<p>")
    seen = []
    execute(plan, RunContext(), on_loop=lambda loop, i, values: seen.append(loop_status(loop, i, values)))
    assert seen == ["line 3 · iteration 0 · diff 1", "line 3 · iteration 1 · diff 0.1",
                    "line 3 · iteration 2 · diff 0.01"]


def test_a_big_carried_matrix_is_kept_in_shared_memory_and_removed(spark):
    """A matrix a loop reads every iteration is kept in a file the tasks map (no JVM copy per
    iteration) when the executors share this machine; the file goes when the value does."""
    import glob

    from jampi_dsl.executors.distributed import SHARED_MIN_BYTES

    n = int((SHARED_MIN_BYTES / 8) ** 0.5) + 8
    text = f"S = randn({n}, {n}, seed=5)\nv = ones({n}, 1)\nfor i in range(3) {{\n    v = S @ v\n    v = v / norm(v)\n}}\nprint(v)\n"
    kept = []
    from jampi_dsl.executors import flow

    original = flow.Slots.set

    def recording(self, slot, value, held=None):
        if slot == "S":
            kept.append(getattr(getattr(value, "source", None), "path", None))
        return original(self, slot, value, held)

    flow.Slots.set = recording
    try:
        values = jampi_dsl.session(executor="broadcast").run_text(text)
    finally:
        flow.Slots.set = original
    S = generate("normal", (n, n), "float64", seed=5)
    v = np.ones((n, 1))
    for _ in range(3):
        v = S @ v
        v = v / np.linalg.norm(v)
    np.testing.assert_allclose(values["v"], v, rtol=1e-10)
    assert kept and kept[0] is not None and ".jampi-" in kept[0]
    assert not glob.glob(kept[0]) and not glob.glob(f"/dev/shm/.kept.npy.jampi-{__import__('os').getpid()}-*")


def test_and_or_short_circuit_in_every_place_a_condition_goes():
    """The right side of and/or runs only when the left does not decide: a guarded index with
    the guard false never reads out of range, in if / else if, while, assignments, print,
    and the body of a user function with blocks (one without keeps its and/or eager, so it
    can still be called inside an expression)."""
    js = jampi_dsl.session(executor="local")
    text = (
        "X = ones(3, 2) * 2\ni = sum(X) / 2 + 2\n"                  # i = 8, known only at run time
        "a = i < 3 and X[i, 0] > 0\nb = i > 3 or X[i, 0] > 0\n"
        "if i > 9 {\n  c = 1\n} else if i < 3 and X[i, 0] > 0 {\n  c = 2\n} else {\n  c = 3\n}\n"
        "k = 0\nwhile k < 3 and X[k, 1] > 1 {\n  k = k + 1\n}\n"
        "def first_positive(M, j) {\n  ok = 0\n  if j < nrow(M) and M[j, 0] > 0 {\n    ok = 1\n  }\n"
        "  return ok\n}\n"
        "d = first_positive(X, i)\n"
        "print(a)\nprint(b)\nprint(c)\nprint(k)\nprint(d)\nprint(not (i < 3 and X[i, 0] > 0))\n"
    )
    values = js.run_text(text)
    assert (values["a"], values["b"], values["c"], values["k"], values["d"]) == (0.0, 1.0, 3.0, 3.0, 0.0)
    assert values["not (i < 3 and X[i, 0] > 0)"] == 1.0
    # and the right side decides when the left does not, at the top level as in loops and functions
    text = (
        "Z = zeros(3, 2)\nj = sum(Z)\n"                           # j = 0: the guard holds, Z[j, 0] is 0
        "e = j < 3 and Z[j, 0] > 0\nf = j > 3 or Z[j, 0] == 0\n"
        "if j < 3 and Z[j, 0] > 0 {\n  g = 1\n} else {\n  g = 2\n}\n"
        "def h(M, k) {\n  t = 0\n  if k < 3 and M[k, 0] == 0 {\n    t = 5\n  }\n  return t\n}\n"
        "u = h(Z, j)\nprint(e)\nprint(f)\nprint(g)\nprint(u)\nprint(j < 3 and Z[j, 1] + 1)\n"
    )
    values = js.run_text(text)
    assert (values["e"], values["f"], values["g"], values["u"]) == (0.0, 1.0, 2.0, 5.0)
    assert values["j < 3 and Z[j, 1] + 1"] == 1.0
    with pytest.raises(jampi_dsl.ShapeError, match="`or` combines scalar conditions"):
        js.run_text("X = ones(3, 2)\ni = sum(X)\nprint(i < 0 or X[0:2, 0])\n")
    # a function without blocks keeps its and/or, and may still be called inside an expression
    assert js.run_text("def p(M, k) {\n  return k < 3 and M[k, 0] > 0\n}\nX = ones(3, 2)\n"
                       "print(p(X, 1) + 1)\n")["p(X, 1) + 1"] == 2.0
