"""The plan owns the lifetime of every distributed value (issue: multi-step plans).

A 40-odd-step program (conjugate gradient for ridge regression, unrolled) runs
under every method, also with Python's and the JVM's garbage collectors forced
between every step: correctness must not depend on either. Every cached RDD
and broadcast a run creates is released by the run itself, and a block lost
mid-run ends in a clear error naming the step, never a hang or a wrong answer.
"""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest

import jampi_dsl
from benchmarks.pipeline import cg_numpy, cg_program
from jampi_dsl.api import plan_source, resources_for
from jampi_dsl.cli import main
from jampi_dsl.errors import ExecutionError
from jampi_dsl.executors.base import RunContext
from jampi_dsl.executors.blockgen import generate
from jampi_dsl.executors.flow import execute


def _persistent_rdds(spark) -> set[int]:
    return {int(k) for k in spark.sparkContext._jsc.getPersistentRDDs().keySet()}


def _run(spark, executor: str, on_done=None):
    plan = plan_source(cg_program(), "<cg>", resources=resources_for("local[4]", {}), executor=executor)
    result = execute(plan, RunContext(spark_factory=lambda: spark), on_done=on_done)
    return plan, result.values


def test_plan_marks_shared_distributed_values_and_their_release():
    plan = plan_source(cg_program(), "<cg>", resources=resources_for("local[4]", {}), executor="cannon")
    steps = plan.steps
    assert sum(1 for s in plan.program.outputs) == 2 and len(steps) > 40
    for i, step in enumerate(steps):
        life = step.lifetime
        readers = [j for j, s in enumerate(steps) if step.node in s.node.children]
        assert life.release_after >= max(readers, default=i)
        if life.materialize:  # shared by several steps, or a lazy chain cut (w = w + alpha * p)
            assert step.method != "local" and (len(readers) >= 2 or step.method == "spark")
    # the vectors shared by several later steps are kept; cannon products and their blockwise
    # followers are distributed, and nothing local is materialised
    assert any(s.lifetime.materialize and s.method == "spark" for s in steps)
    assert not any(s.lifetime.materialize for s in steps if s.method == "local")


def test_explain_json_shows_materialise_and_release_points(tmp_path, capsys):
    (tmp_path / "cg.lin").write_text(cg_program())
    assert main(["explain", str(tmp_path / "cg.lin"), "--format", "json", "--executor", "cannon"]) == 0
    nodes = json.loads(capsys.readouterr().out)["nodes"]
    for node in nodes:
        assert node["lifetime"]["release_after"] >= node["id"]
        assert all(node["lifetime"]["release_after"] >= 0 for _ in node["inputs"])
    assert any(n["lifetime"]["materialize"] for n in nodes)
    products = [n for n in nodes if n["method"] == "cannon"]
    assert products and all(n["physical"]["grid"] >= 1 and len(n["physical"]["block"]) == 2 for n in products)


@pytest.mark.parametrize("force_gc", [False, True], ids=["plain", "gc-between-steps"])
@pytest.mark.parametrize("executor", ["local", "auto", "cannon", "broadcast", "mllib"])
def test_cg_gives_numpys_answer_under_every_method(spark, executor, force_gc):
    def collect(step, seconds):
        gc.collect()
        spark.sparkContext._jvm.System.gc()

    before = _persistent_rdds(spark)
    _, values = _run(spark, executor, on_done=collect if force_gc else None)
    w, rs = cg_numpy()
    assert np.linalg.norm(values["w"] - w) <= 1e-9 * np.linalg.norm(w)
    assert abs(values["rs"] - rs) <= 1e-9 * abs(rs)
    assert _persistent_rdds(spark) <= before, "a run left cached RDDs behind"


def test_lost_block_fails_naming_the_step(spark):
    """A shared value's cached blocks vanish after its step (as when its executor dies):
    the next reader fails at once with one line naming itself and the cause."""
    state = {}

    def drop_first_kept(step, seconds):
        if step.lifetime.materialize and step.method == "spark" and "dropped" not in state:
            state["dropped"] = step
            for rdd in spark.sparkContext._jsc.getPersistentRDDs().values():
                rdd.unpersist(True)

    with pytest.raises(ExecutionError) as info:
        _run(spark, "cannon", on_done=drop_first_kept)
    assert "cached block" in info.value.message and "is gone" in info.value.message
    assert info.value.node and "\n" not in info.value.message


def test_api_loop_computes_each_value_once(spark):
    """Python loops over lazy values: each float() runs only the new step, not the history."""
    js = jampi_dsl.session(executor="local")
    A = js.randn(300, 300, seed=4)
    v = js.ones(300, 1)
    expected = np.ones((300, 1))
    a = generate("normal", (300, 300), "float64", seed=4)
    steps_run = []
    original = js.run_plan

    def counting(plan, on_print=None):
        steps_run.append(sum(1 for s in plan.steps if s.node.op == "matmul"))
        return original(plan, on_print)

    js.run_plan = counting
    for _ in range(12):
        w = A @ v
        s = float(w.norm())
        v = w / s
        expected = a @ expected
        expected = expected / np.linalg.norm(expected)
    np.testing.assert_allclose(v.to_numpy(), expected, rtol=1e-12)
    assert max(steps_run) == 1, steps_run  # one product per run: earlier iterations are never re-run


def test_cannon_stage_takes_its_grid_from_the_plan(spark):
    """The grid is decided by lowering and carried by the step: change it in the plan and the
    stage runs on that grid (no re-deriving on the executor side)."""
    from dataclasses import replace

    from jampi_dsl.executors.cannon import CannonConfig
    from jampi_dsl.planner.physical import PhysicalPlan

    program = "A = random(600, 400, seed=1)\nB = random(400, 500, seed=2)\nprint(A @ B)\n"
    plan = plan_source(program, "<g>", resources=resources_for("local[4]", {}), executor="cannon")
    (product,) = [s for s in plan.steps if s.method == "cannon"]
    assert product.grid == 2 and product.block == (300, 250)
    expected = generate("uniform", (600, 400), "float64", seed=1) @ generate("uniform", (400, 500), "float64", seed=2)
    for grid in (2, 1):
        steps = tuple(replace(s, grid=grid) if s is product else s for s in plan.steps)
        config = CannonConfig(stats=[])
        values = execute(PhysicalPlan(plan.program, steps, plan.resources),
                         RunContext(spark_factory=lambda: spark, options={"cannon_config": config})).values
        np.testing.assert_allclose(values["A @ B"], expected, rtol=1e-12)
        assert {row["q"] for row in config.stats} == {grid} and len(config.stats) == grid * grid


_KILL_CHILD = """
import json, os, signal, sys
import numpy as np, psutil
from benchmarks.pipeline import cg_numpy, cg_program
from jampi_dsl.api import plan_source, resources_for
from jampi_dsl.errors import ExecutionError
from jampi_dsl.executors.base import RunContext
from jampi_dsl.executors.flow import execute
from jampi_dsl.session import spark_for_plans

killed = []

def kill_workers(step, seconds):
    if step.lifetime.materialize and not killed:
        for proc in psutil.Process().children(recursive=True):
            try:
                if "pyspark.daemon" in " ".join(proc.cmdline()):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
            except psutil.Error:
                pass

spark = spark_for_plans("local[4]", {})
plan = plan_source(cg_program(), "<cg>", resources=resources_for("local[4]", {}), executor="cannon")
try:
    w = execute(plan, RunContext(spark_factory=lambda: spark), on_done=kill_workers).values["w"]
    ref, _ = cg_numpy()
    out = {"error": None, "rel": float(np.linalg.norm(w - ref) / np.linalg.norm(ref))}
except ExecutionError as err:
    out = {"error": err.message, "node": err.node}
out["killed"] = len(killed)
print("RESULT " + json.dumps(out))
"""


def test_killing_the_python_workers_between_steps():
    """SIGKILL every Python worker after a shared value is materialised (its own Spark, in a
    child: a crashed worker would disturb the shared session): NumPy's answer or one line
    naming a step, within a bounded time, never a hang."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", _KILL_CHILD], capture_output=True, text=True, timeout=300,
                          cwd=root, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, done.stderr[-3000:]
    out = json.loads(line[len("RESULT "):])
    assert out["killed"] > 0
    if out["error"] is None:
        assert out["rel"] <= 1e-9
    else:
        assert out["node"] and "\n" not in out["error"]
