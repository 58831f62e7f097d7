"""The command line's rough edges (hardening issue, items 12, 15, 19 and the one-line
failures of the multi-step issue): each reproduction fails without its fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jampi_dsl import __version__
from jampi_dsl.cli import main
from jampi_dsl.executors.local import LocalExecutor


def test_check_runs_the_planner_and_refuses_what_run_refuses(tmp_path, capsys):
    program = tmp_path / "big.lin"
    program.write_text("A = random(1000000, 1000000, seed=1)\nB = A @ A\nprint(sum(B))\n")
    assert main(["check", str(program)]) == 2
    err = capsys.readouterr().err
    assert f"{program}:2:5: plan error: no method can run this matmul" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"jampi {__version__}"


def test_explain_never_cuts_lines_when_piped(tmp_path):
    program = tmp_path / "p.lin"
    program.write_text("param n = 300\nA = random(n, n, seed=1)\nB = random(n, n, seed=2)\nprint(sum(A @ B))\n")
    out = subprocess.run([sys.executable, "-m", "jampi_dsl", "explain", str(program)], capture_output=True,
                         text=True, check=True, env={"COLUMNS": "40", "PATH": ""}).stdout
    line = next(line for line in out.splitlines() if "matmul(A, B)" in line)
    assert len(line) > 120 and "runner-up" in line and line.rstrip().endswith(("task", "moved", ")")), line


def test_run_piped_into_head_stops_quietly(tmp_path):
    program = tmp_path / "p.lin"
    program.write_text("\n".join(f"print(sum(ones({i + 1}, 2)))" for i in range(3000))
                       + '\nsave(ones(2, 2), "kept.npy")\n')
    shell = f"{sys.executable} -m jampi_dsl run {program} --quiet | head -1; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "sum(ones(1, 2)) = 2.0"
    assert done.returncode == 0 and (tmp_path / "kept.npy").exists()  # the run finished and saved
    assert "BrokenPipeError" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_failure_is_one_line_and_verbose_adds_the_causes(tmp_path, capsys, monkeypatch):
    def broken(self, node, inputs, ctx):
        raise RuntimeError("kernel exploded\nsecond line of a long message")

    monkeypatch.setitem(LocalExecutor._handlers, __import__("jampi_dsl.planner.ir").planner.ir.Binary, broken)
    program = tmp_path / "p.lin"
    program.write_text("A = ones(2, 2)\nB = A * A\nprint(B)\n")
    assert main(["run", str(program), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{program}:2:5: execution error: RuntimeError: kernel exploded (plan node B = " in err
    assert "Traceback" not in err and "second line" not in err
    assert main(["run", str(program), "--quiet", "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: kernel exploded" in err


@pytest.mark.parametrize("program,argv,expected", [
    ("param n = 20\nA = ones(n, 2)\nprint(sum(A))\n", ["--set", "n=abc"],
     "--set:1:3: argument error: --set n=abc: not a number (the program declares n = 20)"),
    ("param n = 20\nparam k = 2\nprint(n + k)\n", ["--set", "m=3"],
     "--set m: the program declares no parameter 'm' (it declares k, n)"),
    ("A = ones(2)\nprint(A)\n", [], ":1:5: argument error: ones() takes 2 arguments (r, c), got 1"),
    ("A = ones(2, 2); B = A\n", [], "unexpected character ';'; one statement per line, with no ';'"),
])
def test_messages_say_what_is_wrong(tmp_path, capsys, program, argv, expected):
    path = tmp_path / "p.lin"
    path.write_text(program)
    assert main(["check", str(path), *argv]) == 2
    assert expected in capsys.readouterr().err


def test_csv_header_row_hint(tmp_path, capsys):
    (tmp_path / "h.csv").write_text("a,b\n1,2\n")
    (tmp_path / "p.lin").write_text('A = load("h.csv")\nprint(A)\n')
    assert main(["run", str(tmp_path / "p.lin"), "--quiet"]) == 2
    assert "'a' is not a number (a header row?" in capsys.readouterr().err


def test_ctrl_c_during_a_spark_run_is_one_line(tmp_path):
    """Ctrl-C while Cannon stages run: exit 130, one line, no Python or Java traces, nothing saved."""
    import os
    import signal
    import time

    import psutil

    program = tmp_path / "long.lin"
    program.write_text('A = random(3000, 3000, seed=1)\nB = A @ A @ A @ A @ A @ A @ A @ A\nsave(B, "b.npy")\n')
    proc = subprocess.Popen([sys.executable, "-m", "jampi_dsl", "run", str(program), "--executor", "cannon"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the first tasks run
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "pyspark.daemon" in " ".join(_cmdline(p))]
        if workers or proc.poll() is not None:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["interrupted: nothing was saved"], err[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["long.lin"]


def _cmdline(proc) -> list[str]:
    try:
        return proc.cmdline()
    except Exception:  # noqa: BLE001 - gone or a zombie
        return []


def test_json_carries_small_matrices_values_exactly(tmp_path, capsys):
    import json

    import numpy as np

    program = tmp_path / "p.lin"
    program.write_text("A = randn(3, 2, seed=4)\nprint(A)\nprint(ones(200, 100))\n")
    assert main(["run", str(program), "--json"]) == 0
    small, large = (o["value"] for o in json.loads(capsys.readouterr().out)["outputs"])
    from jampi_dsl.executors.blockgen import generate

    assert np.array_equal(np.array(small["values"]), generate("normal", (3, 2), "float64", seed=4))
    assert large == {"shape": [200, 100], "dtype": "float64"}  # 20,000 entries: shape only


def test_progress_shows_the_running_step_its_clock_and_the_time_left(tmp_path):
    import io

    from rich.console import Console

    from jampi_dsl import api
    from jampi_dsl.cli import _execute_with_progress
    from jampi_dsl.executors.base import RunContext

    program = tmp_path / "p.lin"
    program.write_text("A = random(1500, 1500, seed=1)\nB = A @ A @ A\nprint(sum(B))\n")
    plan = api.plan_file(program, {}, api.resources_for(None, {}), "local")
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)
    result = _execute_with_progress(plan, RunContext(), console)
    assert result.values["sum(B)"] > 0
    frames = screen.getvalue()
    assert "[local]" in frames and " / ~" in frames and "left" in frames and "100%" in frames
