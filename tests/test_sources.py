"""Block sources: any region of a generator or a .npy file, without Spark."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jampi_dsl.errors import InputError
from jampi_dsl.executors import blockgen
from jampi_dsl.executors.distributed import MAX_BLOCK_BYTES, MIN_SPLIT, choose_block
from jampi_dsl.executors.sources import GeneratorSource, NpySource, TransposedSource


def padded(a: np.ndarray, rows, cols) -> np.ndarray:
    """What region(rows, cols) must return: the slice of ``a``, zero outside it."""
    out = np.zeros((rows[1] - rows[0], cols[1] - cols[0]), dtype=a.dtype)
    part = a[rows[0] : rows[1], cols[0] : cols[1]]
    out[: part.shape[0], : part.shape[1]] = part
    return out


regions = st.tuples(
    st.integers(0, 80), st.integers(1, 60), st.integers(0, 80), st.integers(1, 60)
).map(lambda t: ((t[0], t[0] + t[1]), (t[2], t[2] + t[3])))


@pytest.fixture(scope="module")
def npy_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("npy")
    a = np.random.default_rng(1).standard_normal((70, 53))
    files = {}
    for name, arr in {
        "c64": a,
        "f64": np.asfortranarray(a),
        "c32": a.astype(np.float32),
        "f32": np.asfortranarray(a.astype(np.float32)),
        "be64": a.astype(">f8"),
    }.items():
        files[name] = (str(d / f"{name}.npy"), arr)
        np.save(files[name][0], arr)
    return files


@pytest.mark.parametrize("name", ["c64", "f64", "c32", "f32", "be64"])
@settings(max_examples=25, deadline=None)
@given(region=regions)
def test_npy_region_matches_slice(npy_files, name, region):
    path, arr = npy_files[name]
    src = NpySource.open(path)
    assert src.shape == arr.shape and src.dtype == arr.dtype.newbyteorder("=")
    assert src.fortran_order == (name[0] == "f")
    got = src.region(*region)
    assert got.dtype == src.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, padded(arr, *region))


def test_npy_region_into_out_and_transposed(npy_files):
    path, arr = npy_files["c64"]
    src = NpySource.open(path)
    out = np.full((30, 30), 7.0)
    assert src.region((50, 80), (40, 70), out=out) is out
    np.testing.assert_array_equal(out, padded(arr, (50, 80), (40, 70)))
    t = src.transposed()
    assert isinstance(t, NpySource) and t.shape == (53, 70) and t.fortran_order
    np.testing.assert_array_equal(t.region((0, 60), (10, 75)), padded(arr.T, (0, 60), (10, 75)))
    assert t.transposed() == src
    assert pickle.loads(pickle.dumps(src)) == src


def test_npy_open_rejects_bad_files(tmp_path):
    cases = {
        "three_d.npy": np.zeros((2, 2, 2)),
        "ints.npy": np.zeros((3, 3), dtype=np.int64),
        "empty.npy": np.zeros((0, 3)),
    }
    for name, arr in cases.items():
        np.save(tmp_path / name, arr)
    (tmp_path / "garbage.npy").write_bytes(b"not an npy file at all")
    np.save(tmp_path / "cut.npy", np.ones((100, 100)))
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    messages = {
        "three_d.npy": "3-D",
        "ints.npy": "int64",
        "empty.npy": "empty",
        "garbage.npy": "not a valid .npy",
        "cut.npy": "truncated",
        "missing.npy": "cannot read",
    }
    for name, fragment in messages.items():
        with pytest.raises(InputError, match=fragment):
            NpySource.open(str(tmp_path / name))


@pytest.mark.parametrize("kind", blockgen.GENERATOR_KINDS)
@settings(max_examples=15, deadline=None)
@given(region=regions)
def test_generator_region_matches_generate(kind, region):
    shape = (70, 53)
    whole = blockgen.generate(kind, shape, np.float32, seed=5)
    src = GeneratorSource(kind, shape, np.float32, seed=5)
    np.testing.assert_array_equal(src.region(*region), padded(whole, *region))
    np.testing.assert_array_equal(src.transposed().region(*region), padded(whole.T, *region))


def test_transposed_generator_kinds():
    assert isinstance(GeneratorSource("uniform", (3, 4)).transposed(), TransposedSource)
    eye = GeneratorSource("eye", (3, 5)).transposed()
    assert isinstance(eye, GeneratorSource) and eye.shape == (5, 3)
    rnd = GeneratorSource("normal", (3, 4), seed=2)
    assert rnd.transposed().transposed() is rnd
    with pytest.raises(ValueError, match="unknown generator"):
        GeneratorSource("poisson", (3, 3))


def test_choose_block():
    assert choose_block((4096, 4096), 4) == (2048, 2048)  # the 2×2 Cannon grid
    assert choose_block((4096, 4096), 9) == (1366, 1366)
    assert choose_block((4096, 4096), 1) == (4096, 4096)
    assert choose_block((1, 1), 4) == (1, 1)
    assert choose_block((300, 300), 4) == (300, 300)  # not split under MIN_SPLIT
    assert choose_block((100_000, 8), 4) == (50_000, 8)  # skinny: only rows are split
    br, bc = choose_block((40_000, 40_000), 4)
    assert br * bc * 8 <= MAX_BLOCK_BYTES and 40_000 % br < br and (-(-40_000 // br)) % 2 == 0
    for shape in [(1, 10**7), (10**6, 3), (5000, 7000), (257, 513)]:
        br, bc = choose_block(shape, 4)
        assert 1 <= br <= shape[0] and 1 <= bc <= shape[1]
        assert br * bc * 8 <= MAX_BLOCK_BYTES or (br <= MIN_SPLIT and bc <= MIN_SPLIT)
