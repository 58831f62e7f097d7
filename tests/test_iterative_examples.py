"""The iterative examples (loops with early exits, branches, functions, broadcasting and
slicing) run end to end and give what the same algorithm gives in NumPy, on the same data
(regenerated with ``blockgen.generate``), and what scikit-learn gives where it has the
algorithm: locally, with the planner choosing (``auto``), and with the products forced
onto Spark for the programs with the most work per iteration."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import jampi_dsl
from jampi_dsl.api import ParamValue, plan_file
from jampi_dsl.executors.blockgen import generate

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROGRAMS = ["power_iteration", "cg_ridge", "pagerank", "kmeans", "nmf", "logistic", "newton_schulz"]
EXECUTORS = ["local", "auto"]


def normal(shape, seed):
    return generate("normal", shape, "float64", seed=seed)


def uniform(shape, seed):
    return generate("uniform", shape, "float64", seed=seed)


@pytest.fixture
def examples(tmp_path):
    target = tmp_path / "examples"
    target.mkdir()
    for name in PROGRAMS:
        shutil.copy(EXAMPLES / f"{name}.lin", target)
    return target


def run(examples: Path, name: str, params: dict, executor: str) -> dict:
    """Plan and run ``name``.lin; its printed values by label and its saves by file name."""
    js = jampi_dsl.session(executor=executor)
    overrides = {key: ParamValue(float(value)) for key, value in params.items()}
    plan = plan_file(examples / f"{name}.lin", overrides, js.resources, executor)
    if executor not in ("local", "auto"):  # the forced method really does the products
        assert executor in plan.methods_used, plan.methods_used
    values = js.run_plan(plan).values
    out = {label: value for label, value in values.items() if not label.startswith("/")}
    for label, value in values.items():
        if label.startswith("/"):  # a save: the file holds what the run returned (None if
            saved = np.load(label)  # the tasks wrote it without bringing it to the driver)
            if value is not None:
                np.testing.assert_array_equal(saved, value)
            out[Path(label).name] = saved
    return out


# ---------------------------------------------------------------- NumPy references


def power_iteration(n, d, maxit=500, tol=1e-10):
    X = normal((n, 3), 1) @ normal((3, d), 2) + 0.5 * normal((n, d), 3)
    Xc = X - X.mean(axis=0)
    S = Xc.T @ Xc / (n - 1)
    v = np.ones((d, 1)) / np.sqrt(d)
    lam, res, k = 0.0, 1.0, 0
    while k < maxit and res > tol * abs(lam):
        w = S @ v
        lam = float(np.sum(v * w))
        res = np.linalg.norm(w - lam * v)
        v = w / np.linalg.norm(w)
        k += 1
    return X, S, lam, v, k


def cg_ridge(n, d, lam=1.0, maxit=500, tol=1e-8):
    X = normal((n, d), 1)
    y = X @ normal((d, 1), 2) + 0.1 * normal((n, 1), 3)
    w = np.zeros((d, 1))
    r = X.T @ y
    p = r
    rr = float(np.sum(r * r))
    k = 0
    while k < maxit and rr > tol * tol:
        q = X.T @ (X @ p) + lam * p
        alpha = rr / np.sum(p * q)
        w = w + alpha * p
        r = r - alpha * q
        rr_new = float(np.sum(r * r))
        p = r + (rr_new / rr) * p
        rr = rr_new
        k += 1
    return X, y, w, rr, k


def pagerank(n, p, damping=0.85, maxit=200, tol=1e-12):
    L = (uniform((n, n), 1) < p) * (1 - np.eye(n))
    outdeg = L.sum(axis=0, keepdims=True)
    M = np.where(outdeg > 0, L / np.maximum(outdeg, 1), 1 / n)
    r = np.ones((n, 1)) / n
    delta, k = 1.0, 0
    while k < maxit and delta > tol:
        r_new = damping * (M @ r) + (1 - damping) / n
        delta = np.abs(r_new - r).sum()
        r = r_new
        k += 1
    return M, outdeg, r, k


def kmeans(n, d, k, spread=4.0, maxit=100, tol=0.0):
    G = uniform((n, k), 1)
    truth = (G == G.max(axis=1, keepdims=True)).astype(float)
    X = truth @ (spread * normal((k, d), 2)) + normal((n, d), 3)
    C = X[:k].copy()
    xx = (X**2).sum(axis=1, keepdims=True)
    shift, it = tol + 1, 0
    while it < maxit and shift > tol:
        D = xx - 2 * (X @ C.T) + (C**2).sum(axis=1, keepdims=True).T
        Z = (D == D.min(axis=1, keepdims=True)).astype(float)
        counts = Z.sum(axis=0, keepdims=True)
        C_new = np.where(counts.T > 0, (Z.T @ X) / np.maximum(counts.T, 1), C)
        shift = np.sqrt(((C_new - C) ** 2).sum(axis=1)).max()
        C = C_new
        it += 1
    D = xx - 2 * (X @ C.T) + (C**2).sum(axis=1, keepdims=True).T
    return X, C, D.argmin(axis=1), np.maximum(D.min(axis=1), 0).sum(), it


def nmf(n, m, r, iters, eps=1e-12):
    V = uniform((n, r), 1) @ uniform((r, m), 2) + 0.01 * uniform((n, m), 3)
    W0, H0 = uniform((n, r), 4), uniform((r, m), 5)
    W, H = W0, H0
    for _ in range(iters):
        W = W * (V @ H.T) / (W @ (H @ H.T) + eps)
        H = H * (W.T @ V) / ((W.T @ W) @ H + eps)
    return V, W0, H0, W, H


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def logistic(n, d, maxit=50, tol=1e-10):
    X = normal((n, d), 1)
    y = (uniform((n, 1), 3) < sigmoid(X @ normal((d, 1), 2) + 0.5)).astype(float)
    X1 = np.hstack([X, np.ones((n, 1))])
    w = np.zeros((d + 1, 1))
    step, k = 1.0, 0
    while k < maxit and step > tol:
        p = sigmoid(X1 @ w)
        delta = np.linalg.solve(X1.T @ (X1 * (p * (1 - p))), X1.T @ (p - y))
        w = w - delta
        step = np.linalg.norm(delta)
        k += 1
    p = sigmoid(X1 @ w)
    loss = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) / n
    return X, y, w, loss, k


def newton_schulz(m, n, steps, a=3.4445, b=-4.7750, c=2.0315):
    G = normal((m, n), 5)
    X = G / (np.linalg.norm(G) + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X


# ---------------------------------------------------------------- the programs


@pytest.mark.parametrize("executor", EXECUTORS)
def test_power_iteration(examples, executor):
    from sklearn.decomposition import PCA

    n, d = 400, 30
    values = run(examples, "power_iteration", {"n": n, "d": d}, executor)
    X, S, lam, v, k = power_iteration(n, d)
    assert values["k"] == k and 10 < k < 500  # converged by the tolerance, not the cap
    assert values["lam"] == pytest.approx(lam, rel=1e-12)
    np.testing.assert_allclose(values["power_vector.npy"], v, rtol=1e-9, atol=1e-12)
    # The largest eigenvalue and its eigenvector, as LAPACK and PCA give them (sign-free).
    eigenvalues, vectors = np.linalg.eigh(S)
    assert values["lam"] == pytest.approx(eigenvalues[-1], rel=1e-12)
    assert values["lam"] > 1.2 * eigenvalues[-2]
    vec = values["power_vector.npy"].ravel()
    assert abs(vec @ vectors[:, -1]) == pytest.approx(1.0, abs=1e-12)
    pca = PCA(n_components=1, svd_solver="full").fit(X)
    assert values["lam"] == pytest.approx(pca.explained_variance_[0], rel=1e-10)
    np.testing.assert_allclose(np.abs(vec), np.abs(pca.components_[0]), atol=1e-8)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_cg_ridge(examples, executor):
    from sklearn.linear_model import Ridge

    n, d, lam = 300, 40, 2.5
    values = run(examples, "cg_ridge", {"n": n, "d": d, "lam": lam}, executor)
    X, y, w, rr, k = cg_ridge(n, d, lam)
    assert values["k"] == k and k < d + 5  # CG on a well-conditioned d x d system: about d steps
    assert values["sqrt(rr)"] <= 1e-8 and values["sqrt(rr)"] == pytest.approx(np.sqrt(rr), rel=1e-3)
    np.testing.assert_allclose(values["ridge_w.npy"], w, rtol=1e-10, atol=1e-12)
    direct = np.linalg.solve(X.T @ X + lam * np.eye(d), X.T @ y)
    np.testing.assert_allclose(values["ridge_w.npy"], direct, rtol=1e-8, atol=1e-10)
    ridge = Ridge(alpha=lam, fit_intercept=False, solver="cholesky").fit(X, y.ravel())
    np.testing.assert_allclose(values["ridge_w.npy"].ravel(), ridge.coef_, rtol=1e-8, atol=1e-10)
    fit = y - X @ w
    assert values["norm(fit) / sqrt(n)"] == pytest.approx(np.linalg.norm(fit) / np.sqrt(n), rel=1e-10)


def test_cg_ridge_stops_at_the_iteration_cap(examples):
    values = run(examples, "cg_ridge", {"n": 200, "d": 30, "maxit": 4}, "local")
    _, _, w, rr, k = cg_ridge(200, 30, maxit=4)
    assert values["k"] == k == 4 and values["sqrt(rr)"] > 1e-8
    assert values["sqrt(rr)"] == pytest.approx(np.sqrt(rr), rel=1e-10)
    np.testing.assert_allclose(values["ridge_w.npy"], w, rtol=1e-10)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_pagerank(examples, executor):
    n, p = 300, 0.01
    values = run(examples, "pagerank", {"n": n, "p": p}, executor)
    M, outdeg, r, k = pagerank(n, p)
    assert values["sum(outdeg == 0)"] == np.sum(outdeg == 0) > 0  # dangling pages exercise where()
    np.testing.assert_allclose(M.sum(axis=0), 1.0, rtol=1e-12)  # the reference is column-stochastic
    assert values["k"] == k and k < 200
    np.testing.assert_allclose(values["pagerank.npy"], r, rtol=1e-12, atol=1e-15)
    # The fixed point solves (I - d M) r = (1 - d) / n, and sums to 1.
    exact = np.linalg.solve(np.eye(n) - 0.85 * M, np.full((n, 1), 0.15 / n))
    np.testing.assert_allclose(values["pagerank.npy"], exact, rtol=1e-9)
    assert values["pagerank.npy"].sum() == pytest.approx(1.0, abs=1e-12)
    assert values["max(r) * n"] == pytest.approx(r.max() * n, rel=1e-12)
    assert values["argmax(r, axis=0)"][0, 0] == np.argmax(exact)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_kmeans(examples, executor):
    from sklearn.cluster import KMeans

    n, d, k = 400, 5, 4
    values = run(examples, "kmeans", {"n": n, "d": d, "k": k}, executor)
    X, C, labels, inertia, it = kmeans(n, d, k)
    assert values["it"] == it and 1 < it < 100  # stopped because no centroid moved
    np.testing.assert_allclose(values["kmeans_centroids.npy"], C, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(values["kmeans_labels.npy"].ravel(), labels)
    assert values["inertia"] == pytest.approx(inertia, rel=1e-12)
    # scikit-learn's Lloyd from the same initial centroids, run to strict convergence.
    km = KMeans(n_clusters=k, init=X[:k], n_init=1, algorithm="lloyd", tol=0, max_iter=100).fit(X)
    np.testing.assert_allclose(values["kmeans_centroids.npy"], km.cluster_centers_, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(values["kmeans_labels.npy"].ravel(), km.labels_)
    assert values["inertia"] == pytest.approx(km.inertia_, rel=1e-9)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_nmf(examples, executor):
    from sklearn.decomposition import NMF

    n, m, r, iters = 60, 40, 4, 150
    values = run(examples, "nmf", {"n": n, "m": m, "r": r, "iters": iters}, executor)
    V, W0, H0, W, H = nmf(n, m, r, iters)
    np.testing.assert_allclose(values["nmf_W.npy"], W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(values["nmf_H.npy"], H, rtol=1e-9, atol=1e-12)
    err = np.linalg.norm(V - W @ H) / np.linalg.norm(V)
    assert values["err"] == pytest.approx(err, rel=1e-9)
    assert values["err"] < 0.5 * np.linalg.norm(V - W0 @ H0) / np.linalg.norm(V)  # the updates fit V
    assert values["nmf_W.npy"].min() >= 0 and values["nmf_H.npy"].min() >= 0
    # scikit-learn's multiplicative-update solver (W, then H, every step) from the same start.
    model = NMF(n_components=r, init="custom", solver="mu", beta_loss="frobenius", max_iter=iters, tol=0)
    W_sk = model.fit_transform(V, W=W0.copy(), H=H0.copy())
    np.testing.assert_allclose(values["nmf_W.npy"], W_sk, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(values["nmf_H.npy"], model.components_, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_logistic(examples, executor):
    from sklearn.linear_model import LogisticRegression

    n, d = 500, 5
    values = run(examples, "logistic", {"n": n, "d": d}, executor)
    X, y, w, loss, k = logistic(n, d)
    assert values["k"] == k and 3 < k < 50  # Newton converges quadratically: a handful of steps
    np.testing.assert_allclose(values["logistic_w.npy"], w, rtol=1e-10, atol=1e-12)
    assert values["loss"] == pytest.approx(loss, rel=1e-12)
    # No penalty (C = inf; scikit-learn 1.8 deprecated penalty=None for it).
    sk = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=100).fit(X, y.ravel())
    np.testing.assert_allclose(values["logistic_w.npy"][:d].ravel(), sk.coef_.ravel(), rtol=1e-7, atol=1e-9)
    assert values["logistic_w.npy"][d, 0] == pytest.approx(sk.intercept_[0], rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("steps", [0, 1, 5])
def test_newton_schulz(examples, executor, steps):
    m, n = 24, 72
    values = run(examples, "newton_schulz", {"m": m, "n": n, "steps": steps}, executor)
    X = newton_schulz(m, n, steps)
    np.testing.assert_allclose(values["orthogonalised.npy"], X, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(values["X"], X, rtol=1e-10, atol=1e-14)
    dev = np.linalg.norm(X @ X.T - np.eye(m)) / np.sqrt(m)
    assert values["norm(X @ X.T - eye(m)) / norm(eye(m))"] == pytest.approx(dev, rel=1e-10)
    if steps == 5:  # in Muon's band around 1, far from where the singular values started
        s = np.linalg.svd(values["X"], compute_uv=False)
        assert 0.5 < s.min() and s.max() < 1.3


# ---------------------------------------------------------------- products forced onto Spark


@pytest.mark.parametrize("executor", ["cannon", "broadcast"])
def test_cg_ridge_on_spark(examples, spark, executor):
    n, d = 300, 5  # d CG steps: a few Spark jobs per step, so few steps
    values = run(examples, "cg_ridge", {"n": n, "d": d}, executor)
    X, y, w, rr, k = cg_ridge(n, d)
    assert values["k"] == k
    np.testing.assert_allclose(values["ridge_w.npy"], w, rtol=1e-9, atol=1e-12)
    direct = np.linalg.solve(X.T @ X + np.eye(d), X.T @ y)
    np.testing.assert_allclose(values["ridge_w.npy"], direct, rtol=1e-8, atol=1e-10)


def test_kmeans_on_spark(examples, spark):
    from sklearn.cluster import KMeans

    n, d, k, spread = 200, 3, 3, 6.0  # well-separated blobs: Lloyd converges in 3 steps
    values = run(examples, "kmeans", {"n": n, "d": d, "k": k, "spread": spread}, "broadcast")
    X, C, labels, inertia, it = kmeans(n, d, k, spread)
    assert values["it"] == it
    np.testing.assert_allclose(values["kmeans_centroids.npy"], C, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(values["kmeans_labels.npy"].ravel(), labels)
    km = KMeans(n_clusters=k, init=X[:k], n_init=1, algorithm="lloyd", tol=0, max_iter=100).fit(X)
    np.testing.assert_allclose(values["kmeans_centroids.npy"], km.cluster_centers_, rtol=1e-10, atol=1e-10)
    assert values["inertia"] == pytest.approx(km.inertia_, rel=1e-9)


@pytest.mark.parametrize("executor", ["broadcast", "cannon"])
def test_newton_schulz_on_spark(examples, spark, executor):
    """X + A @ X with a distributed X: the addend is read when the result is, so it lives until then."""
    values = run(examples, "newton_schulz", {"m": 24, "n": 72, "steps": 3}, executor)
    np.testing.assert_allclose(values["orthogonalised.npy"], newton_schulz(24, 72, 3), rtol=1e-10, atol=1e-14)
