"""The shipped examples run end to end and match NumPy to 1e-10 (float64)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import jampi_dsl
from jampi_dsl.cli import main
from jampi_dsl.executors.blockgen import generate

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RTOL = 1e-10


def rel_err(actual, expected) -> float:
    return float(np.linalg.norm(np.asarray(actual) - expected) / max(np.linalg.norm(expected), 1e-300))


@pytest.fixture
def examples(tmp_path):
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns("out", "etl"))
    return target


def test_quickstart(examples):
    values = jampi_dsl.session(executor="local").run_file(examples / "quickstart.lin", params={"n": 300, "d": 64})
    X = generate("uniform", (300, 64), "float64", seed=1)
    G = X.T @ X
    assert rel_err(values[str(examples / "out" / "gram.npy")], G) < RTOL
    assert rel_err(np.load(examples / "out" / "gram.npy"), G) < RTOL
    assert abs(values["s"] - np.linalg.norm(G) / np.trace(G)) < RTOL
    C = G / np.trace(G) - np.eye(64) / 64
    assert abs(values["norm(C)"] - np.linalg.norm(C)) < RTOL * np.linalg.norm(C)


def test_gram(examples):
    values = jampi_dsl.session(executor="local").run_file(examples / "gram.lin", params={"n": 200})
    X = generate("uniform", (200, 512), "float64", seed=7)
    W = np.load(examples / "weights.npy")
    G = X.T @ X
    A = generate("normal", (512, 512), "float64", seed=1)
    B = generate("normal", (512, 512), "float64", seed=2)
    C = A @ B.T + 2.5 * np.ones((512, 512)) - np.eye(512) / 4
    s = np.linalg.norm(G) / np.trace(G)
    assert rel_err(np.load(examples / "out" / "gram.npy"), G) < RTOL
    assert rel_err(np.load(examples / "out" / "c.npy"), C) < RTOL
    assert abs(values["s"] - s) < RTOL * s
    expected = ((X / s) @ W).sum()
    assert abs(values["sum(P)"] - expected) < RTOL * np.abs((X / s) @ W).sum()


def test_pipeline(examples):
    values = jampi_dsl.session(executor="local").run_file(examples / "pipeline.lin", params={"n": 300, "k": 40})
    A = generate("normal", (300, 40), "float64", seed=11)
    B = generate("normal", (300, 40), "float64", seed=12)
    D = generate("uniform", (300, 300), "float64", seed=13)
    v = generate("uniform", (300, 1), "float64", seed=14)
    C = A @ B.T + D
    y = A @ B.T @ v
    assert rel_err(np.load(examples / "out" / "pipeline_c.npy"), C) < RTOL
    assert abs(values["norm(F)"] - np.linalg.norm(0.5 * (A @ B.T) - 2 * D)) < RTOL * np.linalg.norm(D) * 10
    assert rel_err(values["y"], y) < RTOL
    assert abs(values["sum(z)"] - (C.T @ y).sum()) < RTOL * np.abs(C.T @ y).sum()


def test_newton_schulz(examples):
    values = jampi_dsl.session(executor="local").run_file(examples / "newton_schulz.lin", params={"m": 32, "n": 96})
    a, b, c = 3.4445, -4.7750, 2.0315
    G = generate("normal", (32, 96), "float64", seed=5)
    X = G / (np.linalg.norm(G) + 1e-7)
    for _ in range(5):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    assert rel_err(np.load(examples / "out" / "orthogonalised.npy"), X) < RTOL
    dev = np.linalg.norm(X @ X.T - np.eye(32)) / np.linalg.norm(np.eye(32))
    assert abs(values["norm(X @ X.T - eye(m)) / norm(eye(m))"] - dev) < 1e-9
    # Five quintic steps leave singular values in Muon's band around 1, far from the start.
    s = np.linalg.svd(X, compute_uv=False)
    assert 0.5 < s.min() and s.max() < 1.3


@pytest.mark.parametrize("name", ["quickstart", "gram", "pipeline", "newton_schulz"])
def test_examples_check_and_explain(examples, name, capsys):
    path = examples / f"{name}.lin"
    assert main(["check", str(path)]) == 0
    assert main(["explain", str(path), "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"nodes"' in out
