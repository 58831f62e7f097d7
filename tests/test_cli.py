"""The command line: run, explain (text/json/dot), check; exit codes; the plan it shows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jampi_dsl.cli import main


@pytest.fixture
def chain_program(tmp_path):
    path = tmp_path / "chain.lin"
    path.write_text(
        "param n = 300\nA = random(n, n, seed=1)\nB = random(n, n, seed=2)\nv = random(n, 1, seed=3)\n"
        "y = A @ B @ v\nprint(y)\n"
    )
    return path


def test_chain_planner_picks_right_association(chain_program, capsys):
    assert main(["explain", str(chain_program), "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert "matrix_chain" in plan["rewrites"]
    products = [n for n in plan["nodes"] if n["op"] in ("matmul", "gemm")]
    shapes = sorted(tuple(n["shape"]) for n in products)
    assert shapes == [(300, 1), (300, 1)], "expected A @ (B @ v): two matrix-vector products, no n x n product"
    assert main(["explain", str(chain_program)]) == 0
    text = capsys.readouterr().out
    assert "y = matmul(A, %" in text and "matmul(B, v)" in text


def test_run_prints_values_and_summary(chain_program, capsys):
    assert main(["run", str(chain_program)]) == 0
    captured = capsys.readouterr()
    assert "y: 300x1 float64" in captured.out
    assert "ran " in captured.err and "local" in captured.err


def test_run_json(chain_program, capsys):
    assert main(["run", str(chain_program), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["outputs"][0]["label"] == "y"
    value = doc["outputs"][0]["value"]
    assert (value["shape"], value["dtype"], len(value["values"]), len(value["values"][0])) == ([300, 1], "float64", 300, 1)
    assert all(t["method"] == "local" for t in doc["timings"])


def test_explain_dot(chain_program, capsys):
    assert main(["explain", str(chain_program), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph plan {") and "->" in dot and "fillcolor" in dot


def test_program_without_outputs(tmp_path, capsys):
    path = tmp_path / "empty.lin"
    path.write_text("# nothing here\nX = random(3, 3)\n")
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "nothing is saved or printed" in out and "unused (dropped): X" in out
    assert main(["run", str(path)]) == 0
    assert "nothing to compute" in capsys.readouterr().err


def test_console_script_and_module(chain_program, tmp_path):
    out = subprocess.run([sys.executable, "-m", "jampi_dsl", "check", str(chain_program)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    bad = tmp_path / "bad.lin"
    bad.write_text("X = (1 +\n")
    out = subprocess.run([sys.executable, "-m", "jampi_dsl", "run", str(bad)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert f"{bad}:1:" in out.stderr and "^" in out.stderr
