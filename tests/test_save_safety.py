"""Saves never lose data (hardening items 1-4): jampi replaces only outputs it can recognise,
checks every destination before computing, commits all outputs or none, cleans temporaries
of runs that died, and a load of a path the program saves reads the saved value."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jampi_dsl.cli import main
from jampi_dsl.executors.io import CommitError, StagedOutputs, write_npy
from jampi_dsl.tempfiles import remove_stale, temp_name


def _run(tmp_path, program: str, name: str = "p.lin") -> int:
    (tmp_path / name).write_text(program)
    return main(["run", str(tmp_path / name), "--quiet"])


def _tree(root) -> dict[str, bytes]:
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            p = os.path.join(folder, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


@pytest.mark.parametrize("target", ["..", ".", "sub", "sub/..", "../..", "/"])
def test_parquet_save_never_replaces_a_user_folder(tmp_path, capsys, target):
    work = tmp_path / "proj"
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "precious.txt").write_text("keep me")
    (tmp_path / "sibling.txt").write_text("keep me too")
    before = _tree(tmp_path)
    code = _run(work, f'A = ones(3, 3)\nsave(A, "{target}", format="parquet")\n')
    err = capsys.readouterr().err
    assert code == 2, err
    assert "cannot save to" in err and f"{work / 'p.lin'}:2:" in err
    after = _tree(tmp_path)
    after.pop(os.path.join("proj", "p.lin"))
    before.pop(os.path.join("proj", "p.lin"), None)
    assert after == before


def test_parquet_save_replaces_a_previous_parquet_output(tmp_path, capsys):
    out = tmp_path / "m.parquet"
    out.mkdir()
    pq.write_table(pa.table({"i": [0], "j": [0], "v": [7.0]}), out / "part-00000-abc-c000.snappy.parquet")
    (out / "_SUCCESS").write_bytes(b"")
    (out / "._SUCCESS.crc").write_bytes(b"crc")
    assert _run(tmp_path, 'A = ones(2, 2)\nsave(A, "m.parquet")\n') == 0
    assert sorted(os.listdir(out)) == ["part-00000.parquet"]
    # a folder that gained a file of the user's is not a Parquet output any more
    (out / "notes.txt").write_text("mine")
    assert _run(tmp_path, 'A = ones(2, 2)\nsave(A, "m.parquet")\n') == 2
    assert "holds files jampi did not write" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


def test_destinations_checked_before_any_output_is_replaced(tmp_path, capsys):
    np.save(tmp_path / "old.npy", np.full((2, 2), 5.0))
    (tmp_path / "dir.npy").mkdir()
    code = _run(tmp_path, 'A = ones(2, 2)\nsave(A, "old.npy")\nsave(A, "dir.npy")\n')
    err = capsys.readouterr().err
    assert code == 2 and "dir.npy: it is a folder" in err and ":3:" in err
    np.testing.assert_array_equal(np.load(tmp_path / "old.npy"), np.full((2, 2), 5.0))
    assert sorted(os.listdir(tmp_path)) == ["dir.npy", "old.npy", "p.lin"]


def test_unwritable_destinations_are_input_errors(tmp_path, capsys):
    assert _run(tmp_path, 'A = ones(2, 2)\nsave(A, "/proc/jampi-out.npy")\n') == 2
    assert "/proc is not writable" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert _run(tmp_path, 'A = ones(2, 2)\nsave(A, "afile/x/y.npy")\n') == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "f.parquet").write_bytes(b"PAR1")
    assert _run(tmp_path, 'A = ones(2, 2)\nsave(A, "f.parquet")\n') == 2
    assert "a Parquet output is a folder" in capsys.readouterr().err


def test_commit_failure_puts_back_what_it_replaced(tmp_path):
    """Outputs staged, then the second destination turns into a folder while the run computes:
    the commit fails and the first output, already replaced, is put back."""
    first, second = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(first, np.full((2, 2), 1.0))
    staged = StagedOutputs()
    staged.stage(str(first), lambda tmp: write_npy(tmp, np.full((2, 2), 2.0)))
    staged.stage(str(second), lambda tmp: write_npy(tmp, np.full((2, 2), 2.0)))
    (second).mkdir()
    (second / "user.txt").write_text("mine")
    with pytest.raises(CommitError, match="no output was changed"):
        staged.commit()
    np.testing.assert_array_equal(np.load(first), np.full((2, 2), 1.0))
    assert (second / "user.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["a.npy", "b.npy"]


def test_commit_rolls_back_when_a_rename_fails(tmp_path):
    """A rename that fails midway undoes the ones before it."""
    keep, gone = tmp_path / "keep", tmp_path / "gone"
    keep.mkdir()
    gone.mkdir()
    np.save(keep / "a.npy", np.zeros((1, 1)))
    staged = StagedOutputs()
    staged.stage(str(keep / "a.npy"), lambda tmp: write_npy(tmp, np.ones((1, 1))))
    tmp_b = staged.stage(str(gone / "b.npy"), lambda tmp: write_npy(tmp, np.ones((1, 1))))
    os.unlink(tmp_b)  # the second output's staged file vanishes: its rename fails
    with pytest.raises(CommitError):
        staged.commit()
    np.testing.assert_array_equal(np.load(keep / "a.npy"), np.zeros((1, 1)))
    assert os.listdir(keep) == ["a.npy"] and os.listdir(gone) == []


def test_stale_temporaries_of_dead_runs_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.npy.jampi-{dead_pid}-12345-0123456789ab.tmp"
    stale.write_bytes(b"x" * 100)
    stale_dir = tmp_path / f".out.parquet.jampi-{dead_pid}-12345-0123456789ab.tmp"
    stale_dir.mkdir()
    live = temp_name(str(tmp_path / "other.npy"))  # this process's: alive
    open(live, "wb").close()
    mine = tmp_path / ".out.npy.abcdefgh.tmp"  # not jampi's pattern: never touched
    mine.write_text("user")
    assert _run(tmp_path, 'A = ones(2, 2)\nsave(A, "out.npy")\n') == 0
    names = set(os.listdir(tmp_path))
    assert stale.name not in names and stale_dir.name not in names
    assert os.path.basename(live) in names and mine.name in names
    assert remove_stale(str(tmp_path)) == []


def test_sigterm_mid_write_leaves_nothing(tmp_path):
    """SIGTERM while an output is being written: exit 143, no temporary and no output left."""
    program = tmp_path / "slow.lin"
    program.write_text('A = random(3000, 3000, seed=1)\nB = A @ A @ A @ A @ A\nsave(B, "big.csv")\n')
    proc = subprocess.Popen([sys.executable, "-m", "jampi_dsl", "run", str(program), "--quiet",
                             "--executor", "local"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(n.endswith(".tmp") for n in os.listdir(tmp_path)):
        time.sleep(0.05)
    assert any(n.endswith(".tmp") for n in os.listdir(tmp_path)), "the run never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["slow.lin"]


def test_load_of_a_path_saved_earlier_reads_the_saved_value(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "s.npy", np.full((2, 2), -1.0))  # a previous run's file: must not be read
    program = 'X = random(2, 2, seed=3)\nsave(X, "out/s.npy")\nY = load("out/s.npy")\nprint(sum(Y) - sum(X))\n'
    (tmp_path / "p.lin").write_text(program)
    assert main(["run", str(tmp_path / "p.lin"), "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["outputs"][1]["value"] == 0.0
    assert np.load(out / "s.npy").min() >= 0.0
    # a load that asks for another dtype than the value saved is refused, not silently cast
    program = 'X = random(2, 2, seed=3)\nsave(X, "t.npy")\nY = load("t.npy", dtype="float32")\nprint(Y)\n'
    assert _run(tmp_path, program) == 2
    assert "saved above as float64" in capsys.readouterr().err


def test_review_findings_on_destinations(tmp_path, capsys):
    """A folder of files merely named part-*, the program file itself, a file of another kind,
    and one output inside another are all refused before anything runs."""
    book = tmp_path / "book"
    book.mkdir()
    (book / "part-1.txt").write_text("chapter one")
    (book / "part-2.md").write_text("chapter two")
    assert _run(tmp_path, 'X = random(3, 4, seed=1)\nsave(X, "book", format="parquet")\n') == 2
    assert "holds files jampi did not write" in capsys.readouterr().err
    assert sorted(os.listdir(book)) == ["part-1.txt", "part-2.md"]

    assert _run(tmp_path, 'X = random(2, 2, seed=1)\nsave(X, "p.lin", format="csv")\n') == 2
    assert "it is the program itself" in capsys.readouterr().err
    assert (tmp_path / "p.lin").read_text().startswith("X = random")

    (tmp_path / "notes.txt").write_text("mine")
    assert _run(tmp_path, 'X = random(2, 2, seed=1)\nsave(X, "notes.txt", format="csv")\n') == 2
    assert "not a .csv file" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"

    program = 'X = random(3, 4, seed=1)\nsave(X * 2, "a.parquet/part-9.npy")\nsave(X, "a.parquet")\n'
    assert _run(tmp_path, program) == 2
    assert "lies inside" in capsys.readouterr().err
    assert not (tmp_path / "a.parquet").exists()
