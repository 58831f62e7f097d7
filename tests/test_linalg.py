"""Linear algebra with LAPACK on the driver (issue #18, its driver part): every function
against NumPy/SciPy, locally and with distributed inputs, float32 and float64, with
sign-free checks; lstsq's minimum-norm answer on rank-deficient input; static misuse and
run-time failures with file:line:col; the regression and PCA examples against scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

import jampi_dsl
from jampi_dsl.cli import main
from jampi_dsl.executors.blockgen import generate

ROOT = Path(__file__).resolve().parent.parent

PROGRAM = """
A = randn(600, 40, seed=1) @ randn(40, 30, seed=2){cast}
G = A.T @ A + eye(30{dtype})
B = randn(30, 4, seed=3{dtype})
X = solve(G, B)
print(norm(G @ X - B))
Y = lstsq(A, A @ B)
print(norm(Y - B))
print(norm(inv(G) @ G - eye(30{dtype})))
L = cholesky(G)
print(norm(L @ L.T - G))
Q, R = qr(A)
print(norm(Q @ R - A))
print(norm(Q.T @ Q - eye(30{dtype})))
U, s, Vt = svd(A)
print(norm(U @ diag(s) @ Vt - A))
w, V = eigh(G)
print(norm(G @ V - V * w.T))
print(s)
print(w)
U3, s3, Vt3 = svd(A, k=3)
print(s3)
print(diag(G))
"""


def _reference(dtype):
    a = generate("normal", (600, 40), dtype, seed=1) @ generate("normal", (40, 30), dtype, seed=2)
    g = a.T @ a + np.eye(30, dtype=dtype)
    return np.linalg.svd(a, compute_uv=False), np.linalg.eigvalsh(g), np.diag(g)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("executor", ["local", "cannon"])
def test_every_function_against_numpy(request, executor, dtype):
    if executor == "cannon":
        request.getfixturevalue("spark")  # A is a Cannon product: the factorisations read a distributed input
    suffix = ', dtype="float32"' if dtype == "float32" else ""
    program = PROGRAM.format(cast="", dtype=suffix)
    if dtype == "float32":
        program = program.replace("randn(600, 40, seed=1)", 'randn(600, 40, seed=1, dtype="float32")')
        program = program.replace("randn(40, 30, seed=2)", 'randn(40, 30, seed=2, dtype="float32")')
    values = jampi_dsl.session(executor=executor).run_text(program)
    tol = 1e-3 if dtype == "float32" else 1e-9
    scale = {"norm(G @ X - B)": 1e3, "norm(Y - B)": 1, f"norm(inv(G) @ G - eye(30{suffix})": 1}
    for label, value in values.items():
        if label.startswith("norm("):
            assert value <= tol * scale.get(label, 1e3), (label, value)
    s, w, d = _reference(dtype)
    for label in ("s", "w", "s3", "diag(G)"):
        assert values[label].dtype == np.dtype(dtype), label
    np.testing.assert_allclose(values["s"].ravel(), s, rtol=tol)
    np.testing.assert_allclose(values["s3"].ravel(), s[:3], rtol=tol)
    np.testing.assert_allclose(values["w"].ravel(), w, rtol=tol)
    np.testing.assert_allclose(values["diag(G)"].ravel(), d, rtol=tol)


def test_lstsq_rank_deficient_and_ill_conditioned_gives_numpys_minimum_norm_answer():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((80, 6))
    a[:, 5] = a[:, 0] + a[:, 1]  # rank 5
    b = rng.standard_normal((80, 2))
    js = jampi_dsl.session(executor="local")
    got = js.lstsq(js.matrix(a), js.matrix(b)).to_numpy()
    np.testing.assert_allclose(got, np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-9, atol=1e-12)
    hilbert = scipy.linalg.hilbert(8)
    rhs = hilbert @ np.ones((8, 1))
    got = js.lstsq(js.matrix(hilbert), js.matrix(rhs)).to_numpy()
    np.testing.assert_allclose(got, np.linalg.lstsq(hilbert, rhs, rcond=None)[0], rtol=1e-6)


def test_python_api():
    js = jampi_dsl.session(executor="local")
    a = generate("normal", (50, 5), "float64", seed=9)
    A = js.matrix(a)
    Q, R = A.qr()
    np.testing.assert_allclose((Q @ R).to_numpy(), a, atol=1e-12)
    U, s, Vt = A.svd(k=2)
    assert s.shape == (2, 1) and U.shape == (50, 2) and Vt.shape == (2, 5)
    w, V = (A.T @ A).eigh()
    np.testing.assert_allclose(w.to_numpy().ravel(), np.linalg.eigvalsh(a.T @ a), rtol=1e-12)
    G = A.T @ A
    np.testing.assert_allclose((G @ js.solve(G, js.ones(5, 1))).to_numpy(), np.ones((5, 1)), atol=1e-10)
    np.testing.assert_allclose(js.hcat(A, js.ones(50, 1)).to_numpy(), np.hstack([a, np.ones((50, 1))]))


@pytest.mark.parametrize("program,message,where", [
    ("A = ones(3, 4)\nprint(inv(A))\n", "inv() needs a square matrix, got 3x4", ":2:7"),
    ("A = ones(3, 4)\nprint(solve(A, ones(3, 1)))\n", "solve() needs a square A", ":2:7"),
    ("A = ones(3, 3)\nprint(solve(A, ones(4, 1)))\n", "needs B with 3 rows", ":2:7"),
    ("A = ones(3, 4)\nprint(lstsq(A, ones(3, 1)))\n", "lstsq() needs a tall A", ":2:7"),
    ("A = ones(3, 4)\nQ, R = qr(A)\nprint(R)\n", "qr() needs a tall A", ":2:8"),
    ("A = ones(3, 4)\nU, s, Vt = svd(A, k=4)\nprint(s)\n", "needs 1 <= k <= 3", ":2:12"),
    ("A = ones(3, 3)\nQ, R, Z = qr(A)\nprint(R)\n", "qr() gives 2 values", ":2:1"),
    ("A = ones(3, 3)\nQ = qr(A)\nprint(Q)\n", "write Q, R = qr(...)", ":2:5"),
    ("A = ones(3, 3)\na, b = inv(A)\nprint(a)\n", "only qr, svd, eigh and user functions give several values", ":2:8"),
    ("A = ones(3, 3)\nprint(hcat(A, ones(2, 2)))\n", "hcat() needs the same number of rows", ":2:7"),
    ("A = random(200000, 200000, seed=1)\nprint(sum(inv(A)))\n", "a system needs no inverse", ":2:11"),
])
def test_static_misuse(tmp_path, capsys, program, message, where):
    path = tmp_path / "bad.lin"
    path.write_text(program)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and f"{path}{where}" in err, err


@pytest.mark.parametrize("program,line", [
    ("A = ones(4, 4)\nB = randn(4, 2, seed=1)\nX = solve(A, B)\nprint(X)\n", ":3:5"),
    ("A = ones(4, 4) - 2 * eye(4)\nL = cholesky(A)\nprint(L)\n", ":2:5"),
])
def test_singular_and_indefinite_inputs_fail_naming_the_line(tmp_path, capsys, program, line):
    path = tmp_path / "p.lin"
    path.write_text(program)
    assert main(["run", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{path}{line}: execution error: LinAlgError" in err and "Traceback" not in err


def test_lm_normal_example_against_scikit_learn(tmp_path):
    from sklearn.linear_model import Ridge

    values = jampi_dsl.session(executor="local").run_file(ROOT / "examples" / "lm_normal.lin",
                                                          params={"n": 500, "d": 8})
    n, d = 500, 8
    X = generate("normal", (n, d), "float64", seed=1)
    y = X @ generate("normal", (d, 1), "float64", seed=2) + 0.5 + 0.01 * generate("normal", (n, 1), "float64", seed=3)
    # The program's penalty covers the intercept too: fit the same problem, intercept as a column.
    model = Ridge(alpha=0.001, fit_intercept=False, solver="cholesky").fit(np.hstack([X, np.ones((n, 1))]), y)
    np.testing.assert_allclose(values["beta"].ravel(), model.coef_.ravel(), rtol=1e-8)
    assert abs(values["beta"][-1, 0] - 0.5) < 0.01


def test_pca_example_against_scikit_learn():
    from sklearn.decomposition import PCA

    values = jampi_dsl.session(executor="local").run_file(ROOT / "examples" / "pca.lin",
                                                          params={"n": 800, "d": 12, "k": 3})
    X = generate("normal", (800, 10), "float64", seed=1) @ generate("normal", (10, 12), "float64", seed=2)
    X = X + 0.1 * generate("normal", (800, 12), "float64", seed=3)
    pca = PCA(n_components=3, svd_solver="full").fit(X)
    np.testing.assert_allclose(values["explained"].ravel(), pca.explained_variance_, rtol=1e-9)
    assert values["sum(explained) / (sum(Xc ** 2) / (n - 1))"] == pytest.approx(
        pca.explained_variance_ratio_.sum(), rel=1e-9)


def test_solve_and_lstsq_on_spark(spark):
    """solve(A, B) with B of many columns on the executors (A's LU factors broadcast, B solved
    blockwise) and lstsq(A, B) of a tall distributed A by TSQR, against NumPy."""
    program = (
        "A = randn(3000, 30, seed=1) @ randn(30, 20, seed=2)\n"
        "Y = randn(3000, 40, seed=3) @ randn(40, 3, seed=4)\n"
        "X = lstsq(A, Y)\n"
        "G = A.T @ A + eye(20)\n"
        "B = randn(20, 30, seed=5) @ randn(30, 5000, seed=6)\n"
        "Z = solve(G, B)\n"
        "print(X)\nprint(sum(Z))\n"
    )
    js = jampi_dsl.session(executor="cannon")
    plan = jampi_dsl.api.plan_source(program, "<la>", resources=js.resources, executor="cannon")
    solves = {s.node.operator: s for s in plan.steps if s.node.op == "solve"}
    assert solves["solve"].method == "spark" and solves["lstsq"].method == "spark", \
        {k: (v.method, v.reason) for k, v in solves.items()}
    values = js.run_text(program)
    g = lambda *a: generate("normal", a[:2], "float64", seed=a[2])  # noqa: E731
    a = g(3000, 30, 1) @ g(30, 20, 2)
    y = g(3000, 40, 3) @ g(40, 3, 4)
    b = g(20, 30, 5) @ g(30, 5000, 6)
    np.testing.assert_allclose(values["X"], np.linalg.lstsq(a, y, rcond=None)[0], rtol=1e-8, atol=1e-10)
    assert values["sum(Z)"] == pytest.approx(np.linalg.solve(a.T @ a + np.eye(20), b).sum(), rel=1e-9)


def test_qr_and_svd_of_a_distributed_matrix_on_spark(spark):
    """qr and the thin svd of a tall distributed A by TSQR (only n x n pieces reach the driver),
    and svd(A, k=) of a wide one by the randomized range finder, against NumPy up to signs."""
    program = """
A = randn(4000, 24, seed=1) @ randn(24, 24, seed=2)
Q, R = qr(A)
U, s, Vt = svd(A)
U2, s2, Vt2 = svd(A, k=4)
w = ones(1, 30)
for j in range(30) {
    w[0, j] = 0.5 ** j
}
W = (randn(2000, 30, seed=3) * w) @ randn(30, 1200, seed=4)
Uk, sk, Vtk = svd(W, k=5)
print(Q)
print(R)
print(U @ diag(s) @ Vt)
print(s2)
print(Uk)
print(sk)
print(Vtk)
"""
    js = jampi_dsl.session(executor="cannon")
    plan = jampi_dsl.api.plan_source(program, "<qr>", resources=js.resources, executor="cannon")
    factor_steps = [s for p in plan.plans() for s in p.steps if getattr(s.node, "operator", "") in ("qr", "svd")]
    assert factor_steps and all(s.method == "spark" for s in factor_steps), [(s.node, s.method) for s in factor_steps]
    assert any("randomized" in s.reason for s in factor_steps) and any("TSQR" in s.reason for s in factor_steps)
    values = js.run_text(program)
    g = lambda *a: generate("normal", a[:2], "float64", seed=a[2])  # noqa: E731
    a = g(4000, 24, 1) @ g(24, 24, 2)
    q, r = values["Q"], values["R"]
    np.testing.assert_allclose(q @ r, a, atol=1e-9 * np.abs(a).max())
    np.testing.assert_allclose(q.T @ q, np.eye(24), atol=1e-12)
    np.testing.assert_allclose(np.abs(r), np.abs(np.linalg.qr(a)[1]), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(values["U @ diag(s) @ Vt"], a, atol=1e-9 * np.abs(a).max())
    s = np.linalg.svd(a, compute_uv=False)
    np.testing.assert_allclose(values["s2"].ravel(), s[:4], rtol=1e-10)
    w = g(2000, 30, 3) * 0.5 ** np.arange(30) @ g(30, 1200, 4)
    u, sw, vt = np.linalg.svd(w, full_matrices=False)
    np.testing.assert_allclose(values["sk"].ravel(), sw[:5], rtol=1e-9)
    # the same subspaces: |U_k.T @ U_numpy| is the identity up to signs
    np.testing.assert_allclose(np.abs(values["Uk"].T @ u[:, :5]), np.eye(5), atol=1e-8)
    np.testing.assert_allclose(np.abs(values["Vtk"] @ vt[:5].T), np.eye(5), atol=1e-8)


def _decaying(m: int, n: int, seed: int = 0) -> np.ndarray:
    """A matrix whose singular values fall from 1 to 1e-3 over 80, then a noise floor."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, 80)) * np.logspace(0, -3, 80)) @ rng.standard_normal((80, n)) \
        + 1e-5 * rng.standard_normal((m, n))


def test_randomized_svd_keywords_match_sklearn_accuracy_and_are_reproducible():
    from sklearn.utils.extmath import randomized_svd

    a = _decaying(3000, 1500)
    exact = np.linalg.svd(a, compute_uv=False)[:20]
    js = jampi_dsl.session(executor="local")
    u, s, vt = js.matrix(a).svd(k=20, oversample=10, iters=4, seed=7)
    assert "randomized SVD: an n x (k+10) sketch (seed 7), 4 power iterations" in " ".join(s.explain().split())
    got_u, got_s, got_vt = (x.to_numpy() for x in (u, s, vt))
    ours = np.max(np.abs(got_s.ravel() - exact) / exact)
    _, theirs_s, _ = randomized_svd(a, 20, n_oversamples=10, n_iter=4, random_state=7)
    theirs = np.max(np.abs(theirs_s - exact) / exact)
    assert ours <= max(theirs, 1e-12) * 1.01, (ours, theirs)
    np.testing.assert_allclose(got_u.T @ got_u, np.eye(20), atol=1e-10)
    full = np.linalg.svd(a, compute_uv=False)
    best = np.sqrt(np.sum(full[20:] ** 2))  # the error of the best rank-20 approximation
    assert np.linalg.norm(a - got_u @ np.diag(got_s.ravel()) @ got_vt) <= 1.01 * best
    again = js.matrix(a).svd(k=20, oversample=10, iters=4, seed=7)[1].to_numpy()
    other = js.matrix(a).svd(k=20, oversample=2, iters=0, seed=8)[1].to_numpy()
    np.testing.assert_array_equal(again, got_s)
    assert not np.array_equal(other, got_s)
    with pytest.raises(jampi_dsl.JampiError, match="give k too"):
        js.matrix(a).svd(iters=2)
    with pytest.raises(jampi_dsl.JampiError, match="give k too"):
        js.run_text("A = randn(30, 1200, seed=1)\nU, s, Vt = svd(A, seed=3)\nprint(s)")


def test_randomized_svd_on_spark_agrees_with_the_driver(spark):
    text = "A = randn(1200, 1100, seed=4)\nU, s, Vt = svd(A, k=8, oversample=6, iters=2, seed=5)\nprint(s)\n"
    local = jampi_dsl.session(executor="local").run_text(text)["s"]
    js = jampi_dsl.session(conf={"jampi.local.maxBytes": str(1200 * 1100 * 8 // 4)})  # A is made by the tasks
    from jampi_dsl.api import plan_source

    plan = plan_source(text, "<t>", None, js.resources)
    assert any(getattr(step.node, "operator", None) == "svd" and step.method == "spark" for step in plan.steps)
    np.testing.assert_allclose(js.run_text(text)["s"], local, rtol=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distributed_qr_takes_cholesky_qr2_only_when_a_is_well_conditioned(spark, dtype):
    """CholeskyQR2 (three passes of products) for A of condition 1 and 1e4, its Q orthogonal to
    rounding in both; an A of condition 1e10 is refused by it and factored by Householder TSQR.
    Every path gives Q R = A."""
    from jampi_dsl.executors import factorize
    from jampi_dsl.executors.distributed import DistMatrix

    rng = np.random.default_rng(3)
    u, _, vt = np.linalg.svd(rng.standard_normal((3000, 20)), full_matrices=False)
    cases = [(rng.standard_normal((3000, 20)), True), ((u * np.logspace(0, -4, 20)) @ vt, True),
             ((u * np.logspace(0, -10, 20)) @ vt, False)]
    tol = {"float64": 1e-12, "float32": 1e-5}[dtype]
    orthogonal = {"float64": 5e-14, "float32": 2e-6}[dtype]
    for a, fast in cases:
        a = a.astype(dtype)
        p = factorize.panels(DistMatrix.from_numpy(spark, a, (500, 20)))
        assert (factorize.cholesky_factors(p) is not None) == fast
        q_dist, r = factorize.qr(p, np.dtype(dtype))
        q = q_dist.to_numpy()
        assert q.dtype == np.dtype(dtype) and r.dtype == np.dtype(dtype)
        np.testing.assert_allclose(q @ r, a, atol=10 * tol * np.abs(a).max())
        np.testing.assert_allclose(q.T.astype(np.float64) @ q, np.eye(20), atol=orthogonal if fast else 10 * tol)
        if fast:  # R as LAPACK's up to the signs of its rows
            np.testing.assert_allclose(np.abs(r), np.abs(np.linalg.qr(a.astype(np.float64))[1]),
                                       rtol=100 * tol, atol=100 * tol * np.abs(a).max())
