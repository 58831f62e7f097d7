"""The ETL example end to end: generated Parquet in, .lin, Parquet out, checked against NumPy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from jampi_dsl.cli import main

ETL = Path(__file__).resolve().parent.parent / "examples" / "etl"


def _dense_coordinate(path: Path, shape) -> np.ndarray:
    t = pq.read_table(path)
    out = np.zeros(shape)
    out[t.column("i").to_numpy(), t.column("j").to_numpy()] = t.column("v").to_numpy()
    return out


def test_etl_example(tmp_path, capsys):
    work = tmp_path / "etl"
    shutil.copytree(ETL, work, ignore=shutil.ignore_patterns("data", "out"))
    subprocess.run([sys.executable, str(work / "make_data.py"), "--users", "300", "--items", "80",
                    "--features", "8"], check=True, capture_output=True, timeout=120)
    assert main(["run", str(work / "etl.lin"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    R = _dense_coordinate(work / "data" / "ratings.parquet", (300, 80))
    F = np.stack(pq.read_table(work / "data" / "item_features.parquet").column("row").to_pylist())
    P = R @ F / 5
    S = P.T @ P
    rows = pq.read_table(work / "out" / "profiles.parquet")
    got_p = np.stack(rows.column("row").to_pylist())[np.argsort(rows.column("i").to_numpy())]
    np.testing.assert_allclose(got_p, P, rtol=1e-12, atol=1e-13)  # SciPy's sparse product sums in its own order
    np.testing.assert_allclose(_dense_coordinate(work / "out" / "feature_gram.parquet", (8, 8)), S, rtol=1e-12)
    s = np.linalg.norm(P) / np.abs(R).sum()
    assert f"s = {s!r}" in printed or abs(float(printed.split("=")[1]) - s) < 1e-12 * s
