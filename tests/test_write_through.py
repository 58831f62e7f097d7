"""A Cannon product whose only use is a ``.npy`` save is written by its tasks.

The plan says so (``writes``, shown by explain), the file equals the ordinary
path's bit for bit, the tasks (not the driver, not a second job) wrote it,
and saves stay staged: a failure anywhere in the run leaves no new file and
the old one untouched.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import jampi_dsl
from jampi_dsl.api import build_file, plan_program, resources_for
from jampi_dsl.cli import main
from jampi_dsl.executors import io
from jampi_dsl.executors import spark as spark_executors
from jampi_dsl.executors.base import RunContext
from jampi_dsl.executors.blockgen import generate
from jampi_dsl.executors.cannon import CannonConfig, cannon_matmul
from jampi_dsl.executors.distributed import DistMatrix
from jampi_dsl.executors.flow import execute
from jampi_dsl.executors.sources import GeneratorSource

FAST = CannonConfig(timeout=20, handshake_timeout=5)


def _plan(path, executor="cannon"):
    return plan_program(build_file(path), resources_for(None, None), executor)


def _run(path, stats=None, executor="cannon"):
    plan = _plan(path, executor)
    config = CannonConfig(timeout=20, handshake_timeout=5, stats=stats)
    ctx = RunContext(options={"cannon_config": config})
    return plan, execute(plan, ctx)


def _no_driver_round_trip(monkeypatch):
    """Fail any save that would move the product through the driver or a second Spark job."""

    def refuse(*args, **kwargs):
        raise AssertionError("the product went through an ordinary save")

    monkeypatch.setattr(DistMatrix, "save_npy", refuse)
    monkeypatch.setattr(DistMatrix, "to_numpy", refuse)
    monkeypatch.setattr(io, "save_local", refuse)
    monkeypatch.setattr(spark_executors.io, "save_local", refuse)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_product_written_by_its_tasks_equals_the_ordinary_path(spark, tmp_path, monkeypatch, dtype):
    d = f', dtype="{dtype}"'
    head = f"A = random(301, 203, seed=1{d})\nB = randn(203, 299, seed=2{d})\n"
    (tmp_path / "wt.lin").write_text(head + 'save(A @ B, "c.npy")\n')
    # A second use of the product: no write-through, the Save writes a distributed result.
    (tmp_path / "ref.lin").write_text(head + 'C = A @ B\nsave(C, "ref.npy")\nprint(sum(C))\n')
    plan = _plan(tmp_path / "wt.lin")
    product = next(s for s in plan.steps if s.node.op == "matmul")
    assert product.writes == str(tmp_path / "c.npy") and "writes c.npy from its tasks" in product.reason
    assert all(s.writes is None for s in _plan(tmp_path / "ref.lin").steps)

    stats: list = []
    with monkeypatch.context() as m:
        _no_driver_round_trip(m)
        _, result = _run(tmp_path / "wt.lin", stats)
    assert [o.text for o in result.outputs] == [f"saved {tmp_path / 'c.npy'} (written by the Cannon tasks)"]
    assert len(stats) == 4 and all(s.get("wrote_npy") for s in stats)  # each task wrote its block
    _run(tmp_path / "ref.lin")

    got, ref = np.load(tmp_path / "c.npy"), np.load(tmp_path / "ref.npy")
    assert got.dtype == np.dtype(dtype) and got.shape == (301, 299)
    np.testing.assert_array_equal(got, ref)  # bit for bit
    a = generate("uniform", (301, 203), dtype, seed=1).astype(np.float64)
    b = generate("normal", (203, 299), dtype, seed=2).astype(np.float64)
    np.testing.assert_allclose(got, a @ b, rtol=1e-4 if dtype == "float32" else 1e-10, atol=1e-4)
    assert sorted(os.listdir(tmp_path)) == ["c.npy", "ref.lin", "ref.npy", "wt.lin"]


def test_gemm_written_by_its_tasks(spark, tmp_path, monkeypatch):
    np.save(tmp_path / "d.npy", generate("normal", (150, 131), "float64", seed=3))
    head = 'A = random(150, 97, seed=1)\nB = random(97, 131, seed=2)\nD = load("d.npy")\n'
    (tmp_path / "g.lin").write_text(head + 'save(0.5 * (A @ B) - 2 * D, "g.npy")\n')
    plan = _plan(tmp_path / "g.lin")
    gemm = next(s for s in plan.steps if s.node.op == "gemm")
    assert gemm.writes == str(tmp_path / "g.npy")
    with monkeypatch.context() as m:
        _no_driver_round_trip(m)
        _run(tmp_path / "g.lin")
    a, b = generate("uniform", (150, 97), "float64", seed=1), generate("uniform", (97, 131), "float64", seed=2)
    want = 0.5 * (a @ b) - 2 * np.load(tmp_path / "d.npy")
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (-1.5, -1.0), (0.5, 3.0), (2.0, 0.0)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gemm_epilogue_in_the_tasks_rounds_like_blockwise_ops(spark, alpha, beta, dtype):
    """The tasks' ``alpha * P + beta * D`` is bit-identical to the product followed by DistMatrix ops."""
    sa = GeneratorSource("uniform", (61, 45), dtype, 4)
    sb = GeneratorSource("normal", (45, 39), dtype, 5)
    sd = GeneratorSource("normal", (61, 39), dtype, 6)
    fused = cannon_matmul(spark, sa, sb, config=FAST, alpha=alpha, beta=beta, addend=sd).to_numpy()
    product = cannon_matmul(spark, sa, sb, config=FAST)
    node = type("G", (), {"alpha": alpha, "beta": beta})()
    ctx = RunContext(spark=spark)
    addend = DistMatrix.from_source(spark, sd, product.block)
    expected = spark_executors.combine_gemm(node, product, addend, ctx).to_numpy()
    assert fused.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(fused, expected)


def test_failed_run_leaves_no_new_output_and_keeps_the_old(spark, tmp_path, capsys):
    old = np.arange(6.0).reshape(2, 3)
    np.save(tmp_path / "c.npy", old)
    np.save(tmp_path / "nan.npy", np.array([[np.nan]]))
    program = (
        'A = random(300, 200, seed=1)\nB = random(200, 310, seed=2)\nsave(A @ B, "c.npy")\n'
        'N = load("nan.npy", finite=true)\nsave(N, "n.csv")\n'
    )
    (tmp_path / "p.lin").write_text(program)
    plan = _plan(tmp_path / "p.lin")
    order = [s.node.op for s in plan.steps]
    assert order.index("matmul") < order.index("load"), order  # the product runs before the failure
    assert main(["run", str(tmp_path / "p.lin"), "--quiet", "--executor", "cannon"]) == 2
    assert "non-finite" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["c.npy", "nan.npy", "p.lin"]  # no temporary left
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), old)
    # Without the bad input the same run replaces c.npy.
    (tmp_path / "p.lin").write_text(program.replace(", finite=true", ""))
    assert main(["run", str(tmp_path / "p.lin"), "--quiet", "--executor", "cannon"]) == 0
    a, b = generate("uniform", (300, 200), "float64", seed=1), generate("uniform", (200, 310), "float64", seed=2)
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), a @ b, rtol=1e-10)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_failed_stage_leaves_the_old_output(spark, tmp_path):
    np.save(tmp_path / "c.npy", np.ones((2, 2)))
    (tmp_path / "p.lin").write_text('A = random(64, 48, seed=1)\nB = random(48, 40, seed=2)\nsave(A @ B, "c.npy")\n')
    plan = _plan(tmp_path / "p.lin")
    config = CannonConfig(timeout=5, handshake_timeout=2, retries=0, fail_task=(1, None, "before-output"))
    with pytest.raises(jampi_dsl.ExecutionError):
        execute(plan, RunContext(options={"cannon_config": config}))
    assert sorted(os.listdir(tmp_path)) == ["c.npy", "p.lin"]
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.ones((2, 2)))


def test_no_shared_files_falls_back_to_the_ordinary_save(spark, tmp_path, monkeypatch):
    (tmp_path / "p.lin").write_text('A = random(70, 50, seed=1)\nB = random(50, 60, seed=2)\nsave(A @ B, "c.npy")\n')
    monkeypatch.setattr(spark_executors, "shares_files", lambda ctx: False)
    _, result = _run(tmp_path / "p.lin")
    assert result.outputs[0].text == f"saved {tmp_path / 'c.npy'}"
    a, b = generate("uniform", (70, 50), "float64", seed=1), generate("uniform", (50, 60), "float64", seed=2)
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), a @ b, rtol=1e-10)


def test_only_a_sole_npy_save_is_written_through(tmp_path):
    cases = {
        'save(A @ B, "c.csv")\n': False,  # another format
        'C = A @ B\nsave(C, "c.npy")\nsave(C, "d.npy")\n': False,  # two consumers
        'save(exp(A @ B), "c.npy")\n': False,  # the save's input is another node
        'save((A @ B).T, "c.npy")\n': True,  # rewritten to B.T @ A.T: still a product
        'save(A @ B + A @ B, "c.npy")\n': False,
        'save(A @ B, "c.npy")\n': True,
    }
    for tail, expected in cases.items():
        (tmp_path / "p.lin").write_text("A = random(40, 40, seed=1)\nB = random(40, 40, seed=2)\n" + tail)
        plan = _plan(tmp_path / "p.lin")
        assert any(s.writes for s in plan.steps) == expected, tail
        assert not any(s.writes for s in _plan(tmp_path / "p.lin", executor="local").steps)
