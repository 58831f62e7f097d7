"""Cannon's product as a Spark barrier stage, checked against NumPy.

Each product is one barrier stage (at least about a second: Spark answers
``allGather`` only after polling for one), so the cases are chosen to cover
every input path (source, cached/placed, aligned with the skew over the peer
links, shuffled pieces), transposes, dtypes and shapes with few stages.
"""

from __future__ import annotations

import glob
import io
import os
import socket
import threading
import time

import numpy as np
import pytest

from jampi_dsl.errors import ExecutionError, ShapeError
from jampi_dsl.executors.blockframes import (
    ELEMENTS_PER_BLOCK,
    RawBlockSerializer,
    RawPairDeserializer,
)
from jampi_dsl.executors.blockgen import generate
from jampi_dsl.executors.cannon import CannonConfig, cannon_matmul
from jampi_dsl.executors.cannon.channel import (
    BLOCK_HEADER,
    BLOCK_MAGIC,
    HELLO,
    HELLO_MAGIC,
    VERSION,
)
from jampi_dsl.executors.cannon.layout import Geometry, choose_grid, grid_fits
from jampi_dsl.executors.distributed import DistMatrix
from jampi_dsl.executors.sources import GeneratorSource, NpySource

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
FAST = CannonConfig(
    timeout=20, handshake_timeout=5, panels=4
)  # panels: exercise the pipeline on small blocks


def rel_err(got, want):
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


def check(result, want, dtype):
    got = result.to_numpy() if isinstance(result, DistMatrix) else result
    assert got.shape == want.shape
    assert got.dtype == np.dtype(dtype)
    assert rel_err(got.astype(np.float64), want) <= TOL[np.dtype(dtype)]


def gen(shape, seed, dtype=np.float64, kind="normal"):
    src = GeneratorSource(kind, shape, dtype, seed)
    return src, src.region((0, shape[0]), (0, shape[1])).astype(np.float64)


def check_grid_layout(result, m, n, q):
    assert result.shape == (m, n)
    assert result.grid == (q, q)
    assert result.block == (-(-m // q), -(-n // q))
    assert result.rdd.getNumPartitions() == q * q


# --- pure geometry (no Spark) ----------------------------------------------------------------


def test_grid_choice():
    assert choose_grid(4096, 4096, 2) == 2
    assert choose_grid(1, 1, 2) == 1
    assert choose_grid(300, 1, 2) == 1
    assert choose_grid(5, 7, 4) == 3  # 5 rows split into 4 would leave an empty block
    assert grid_fits(5, 3) and not grid_fits(5, 4)


@pytest.mark.parametrize("q", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True), (True, True)])
def test_schedule_is_a_permutation(q, ta, tb):
    geo = Geometry.make(q, 7 * q, 5 * q, 3 * q, ta, tb, "float64")
    for t in range(q * q):
        assert geo.a_owner(geo.a_home(t)) == t
        assert geo.b_owner(geo.b_home(t)) == t
        i, j = geo.coords(t)
        # After r shifts the task holds A(i, i+j+r) and B(i+j+r, j): the inner indices agree.
        for r in range(q):
            inner = geo.inner(t, r)
            holder_a = geo.task(i, j + r)  # A moved left r times
            holder_b = geo.task(i + r, j)  # B moved up r times
            assert geo.a_home(holder_a) == geo.a_stored_index(i, inner)
            assert geo.b_home(holder_b) == geo.b_stored_index(inner, j)
    homes = {geo.a_home(t) for t in range(q * q)}
    assert len(homes) == q * q


def _frames(data: bytes) -> list[bytes]:
    """Split a stream of length-prefixed frames (as the JVM stores them, one element each)."""
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big", signed=True)
        out.append(data[pos : pos + 4 + n])
        pos += 4 + n
    return out


def test_raw_pair_deserializer_reads_a_jvm_zip():
    """A JVM zip of two block RDDs pairs frame with frame: headers first, then payloads alternate."""
    ser = RawBlockSerializer()
    a = [((0, 0), np.arange(600 * 500.0).reshape(600, 500)), ((0, 1), np.ones((3, 4)))]
    b = [((0, 0), np.ones((2, 2), np.float32)), ((0, 1), np.arange(900 * 400.0).reshape(900, 400))]
    streams = []
    for blocks in (a, b):
        buf = io.BytesIO()
        ser.dump_stream(iter(blocks), buf)
        streams.append(_frames(buf.getvalue()))
    assert len(streams[0]) == len(streams[1]) == 2 * ELEMENTS_PER_BLOCK
    zipped = b"".join(fa + fb for fa, fb in zip(*streams, strict=True))
    back = list(RawPairDeserializer().load_stream(io.BytesIO(zipped)))
    assert len(back) == 2
    for pair, want_a, want_b in zip(back, a, b, strict=True):
        for (key, got), (want_key, want) in zip(pair, (want_a, want_b), strict=True):
            assert key == want_key and got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_raw_block_serializer_rejects_a_bad_frame():
    ser = RawBlockSerializer()
    buf = io.BytesIO()
    ser.dump_stream(iter([((0, 0), np.ones((600, 600)))]), buf)
    frames = _frames(buf.getvalue())
    frames[2] = (100).to_bytes(4, "big") + b"x" * 100  # a payload frame of the wrong length
    with pytest.raises(ValueError, match="corrupt block frame"):
        list(ser.load_stream(io.BytesIO(b"".join(frames))))


def test_raw_block_serializer_round_trip():
    ser = RawBlockSerializer()
    blocks = [
        ((0, 1), np.arange(12.0).reshape(3, 4)),
        ((2, 0), np.ones((2, 5), np.float32)),
        ((1, 1), np.asfortranarray(np.eye(3))),
        ((0, 0), np.zeros((0, 3))),
        ((3, 2), np.arange(700 * 600, dtype=np.float64).reshape(700, 600)),  # spans many frames
    ]
    buf = io.BytesIO()
    ser.dump_stream(iter(blocks), buf)
    buf.seek(0)
    back = list(ser.load_stream(buf))
    assert [k for k, _ in back] == [k for k, _ in blocks]
    for (_, a), (_, b) in zip(back, blocks, strict=True):
        assert a.dtype == b.dtype and a.flags.c_contiguous and a.flags.writeable
        np.testing.assert_array_equal(a, b)


# --- products against NumPy -------------------------------------------------------------------


@pytest.mark.parametrize(
    "m, k, n, dtype",
    [
        (64, 64, 64, np.float64),  # square, divisible
        (37, 23, 41, np.float64),  # rectangular, nothing divides
        (300, 1, 200, np.float64),  # inner dimension 1: padded to the grid
        (500, 3, 1, np.float64),  # one output column: a 1x1 grid
        (1, 1, 1, np.float64),
        (50, 70, 30, np.float32),
    ],
)
def test_shapes_from_generators(spark, m, k, n, dtype):
    sa, a = gen((m, k), 1, dtype)
    sb, b = gen((k, n), 2, dtype)
    c = cannon_matmul(spark, sa, sb, config=FAST)
    check(c, a @ b, dtype)
    check_grid_layout(c, m, n, choose_grid(m, n, 2))


def test_transposes_from_sources_float32(spark):
    sa, a = gen((40, 30), 3, np.float32)  # used as A.T: 30x40
    sb, b = gen((50, 40), 4, np.float32)  # used as B.T: 40x50
    check(
        cannon_matmul(spark, sa, sb, trans_a=True, trans_b=True, config=FAST), a.T @ b.T, np.float32
    )


def test_cached_inputs_are_read_pre_skewed(spark):
    _, a = gen((33, 45), 5)
    _, b = gen((33, 29), 6)
    da = DistMatrix.from_numpy(spark, a, (17, 23))  # the 2x2 layout of a 33x45 matrix
    db = DistMatrix.from_numpy(spark, b, (17, 15))
    check(cannon_matmul(spark, da, db, trans_a=True, config=FAST), a.T @ b, np.float64)


@pytest.mark.parametrize("ta, tb", [(False, True), (True, True)])
def test_skew_over_peer_links(spark, ta, tb):
    _, a = gen((26, 31), 7)
    _, b = gen((19, 31), 8)
    if ta:
        a = np.ascontiguousarray(a.T)  # 31x26, used transposed: 26x31
    da = DistMatrix.from_numpy(spark, a, (-(-a.shape[0] // 2), -(-a.shape[1] // 2)))
    db = DistMatrix.from_numpy(spark, b, (10, 16))
    cfg = CannonConfig(timeout=20, skew="channel")
    want = (a.T if ta else a) @ b.T
    check(cannon_matmul(spark, da, db, trans_a=ta, trans_b=tb, config=cfg), want, np.float64)


def test_other_block_layouts_are_shuffled_into_place(spark):
    _, a = gen((40, 24), 9, np.float32)
    _, b = gen((40, 18), 10)
    da = DistMatrix.from_numpy(
        spark, a.astype(np.float32), (16, 13)
    )  # 3x2 blocks, not the 2x2 grid
    db = DistMatrix.from_numpy(spark, b, (40, 18))  # one block
    # float32 @ float64 promotes to float64, as in NumPy.
    check(cannon_matmul(spark, da, db, trans_a=True, config=FAST), a.T @ b, np.float64)


def test_shuffled_pieces_land_in_column_panels(spark):
    """Pieces from the shuffle that straddle panel edges are written straight into the panel
    stacks of A and of a transposed B (float32 pieces into float64 panels)."""
    _, a = gen((42, 36), 33, np.float32)
    _, b = gen((30, 36), 34)
    da = DistMatrix.from_numpy(spark, a.astype(np.float32), (11, 7))
    db = DistMatrix.from_numpy(spark, b, (13, 36))
    stats: list = []
    cfg = CannonConfig(timeout=20, handshake_timeout=5, panels=3, stats=stats)
    check(cannon_matmul(spark, da, db, trans_b=True, config=cfg), a @ b.T, np.float64)
    assert {s["panel_stacks"] for s in stats} == {2}


def test_chained_products_stay_distributed(spark):
    sa, a = gen((45, 38), 11)
    sb, b = gen((38, 52), 12)
    sc_, c = gen((52, 27), 13, kind="uniform")
    ab = cannon_matmul(spark, sa, sb, config=FAST)
    check_grid_layout(ab, 45, 52, 2)
    abc = cannon_matmul(spark, ab, sc_, config=FAST)  # reads ab's cached blocks, already skewed
    gram = cannon_matmul(spark, abc, abc, trans_a=True, config=FAST)
    check(abc, a @ b @ c, np.float64)
    check(gram, (a @ b @ c).T @ (a @ b @ c), np.float64)
    check_grid_layout(gram, 27, 27, 2)


def test_result_supports_ordinary_jobs(spark):
    sa, a = gen((30, 20), 14)
    sb, b = gen((20, 34), 15)
    c = cannon_matmul(spark, sa, sb, config=FAST)
    want = a @ b
    # Jobs a barrier RDD refuses: fewer tasks than partitions, or another partition count.
    key, block = c.rdd.first()
    assert key == (0, 0) and np.allclose(block, want[:15, :17])
    assert len(c.rdd.take(2)) == 2
    assert c.rdd.coalesce(1).count() == 4
    assert abs(c.sum() - want.sum()) < 1e-9 * np.abs(want).sum()
    other = DistMatrix.from_numpy(spark, np.ones((30, 34)), c.block)
    check(c.elementwise("+", other), want + 1, np.float64)


def test_npy_inputs_and_npy_output(spark, tmp_path):
    _, a = gen((70, 90), 16, np.float32)
    a = a.astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "bt.npy", np.asfortranarray(a[:, :50].T))  # a Fortran-order file, 50x70
    sb, b = gen((90, 60), 17, np.float32)
    out = tmp_path / "c.npy"
    res = cannon_matmul(
        spark, NpySource.open(str(tmp_path / "a.npy")), sb, config=FAST, output_npy=str(out)
    )
    assert res is None
    check(np.load(out), a.astype(np.float64) @ b, np.float32)
    assert sorted(os.listdir(tmp_path)) == ["a.npy", "bt.npy", "c.npy"]  # no temporary left
    src = NpySource.open(str(tmp_path / "bt.npy"))
    check(
        cannon_matmul(spark, src, src, trans_b=True, config=FAST),
        a[:, :50].T.astype(np.float64) @ a[:, :50],
        np.float32,
    )


def test_explicit_grid_and_errors(spark):
    sa, a = gen((20, 20), 18)
    da = DistMatrix.from_numpy(spark, a, (10, 10))  # 2x2 layout, consumed by a 1x1 grid
    check(cannon_matmul(spark, da, da, grid=1, config=FAST), a @ a, np.float64)
    with pytest.raises(ShapeError, match="inner dimensions"):
        cannon_matmul(spark, sa, GeneratorSource("ones", (21, 3)), config=FAST)
    with pytest.raises(ExecutionError, match="needs 9 task slots"):
        cannon_matmul(spark, sa, sa, grid=3, config=FAST)


# --- faults -------------------------------------------------------------------------------------


def test_task_killed_mid_exchange_is_retried(spark):
    sa, a = gen((64, 48), 19)
    sb, b = gen((48, 40), 20)
    stats: list = []
    cfg = CannonConfig(
        timeout=10, handshake_timeout=5, fail_task=(1, 0, "mid-exchange"), stats=stats
    )
    t0 = time.monotonic()
    c = cannon_matmul(spark, sa, sb, config=cfg)
    check(c, a @ b, np.float64)
    assert {s["attempt"] for s in stats} == {1}  # attempt 0 died, attempt 1 made the result
    assert time.monotonic() - t0 < 60


def test_task_stopped_after_its_exchange_is_bounded_and_retried(spark):
    """A task frozen (SIGSTOP) after the exchange, before its output: its peers are done and
    cannot notice; Spark would wait forever. The watchdog cancels it after the timeout, the
    retry says why in one line, and the product is right."""
    import psutil

    sa, a = gen((64, 48), 23)
    sb, b = gen((48, 40), 24)
    notices: list[str] = []
    stats: list = []
    cfg = CannonConfig(timeout=4, handshake_timeout=2, retries=1, stats=stats, notify=notices.append,
                       fail_task=(1, 0, "before-output", "stop"))
    t0 = time.monotonic()
    c = cannon_matmul(spark, sa, sb, config=cfg)
    check(c, a @ b, np.float64)
    assert time.monotonic() - t0 < 60
    assert {s["attempt"] for s in stats} == {1}
    assert len(notices) == 1 and notices[0].startswith("Cannon stage retried (1/1): 1 of 4 tasks still running")
    time.sleep(1)
    stopped = [p for p in psutil.Process().children(recursive=True) if p.status() == psutil.STATUS_STOPPED]
    assert not stopped, "the frozen worker was left behind"


def test_task_that_always_dies_fails_cleanly(spark, tmp_path):
    sa, _ = gen((64, 48), 21)
    sb, _ = gen((48, 40), 22)
    cfg = CannonConfig(
        timeout=5, handshake_timeout=2, retries=1, fail_task=(2, None, "mid-exchange")
    )
    out = tmp_path / "never.npy"
    t0 = time.monotonic()
    with pytest.raises(ExecutionError) as info:
        cannon_matmul(spark, sa, sb, config=cfg, output_npy=str(out))
    assert time.monotonic() - t0 < 90
    message = str(info.value)
    assert "failed 2 times" in message and "task 2" in message
    assert info.value.exit_code == 1
    assert os.listdir(tmp_path) == []  # the atomic output left nothing behind


def _rogue_clients(folder: str, expected: int, results: list, stop: threading.Event) -> None:
    """Hit every announced peer port with garbage, a forged token and a huge length."""
    seen: set[str] = set()
    while not stop.is_set() and len(seen) < expected:
        for path in glob.glob(os.path.join(folder, "task-*")):
            if path in seen or path.endswith(".tmp"):  # a .tmp is renamed while we look
                continue
            seen.add(path)
            host, port = open(path).read().rsplit(":", 1)
            for kind in ("garbage", "token", "huge"):
                try:
                    s = socket.create_connection((host, int(port)), timeout=3)
                    s.recv(16)  # the listener's nonce
                    if kind == "garbage":
                        s.sendall(os.urandom(300))
                    elif kind == "token":
                        s.sendall(
                            HELLO.pack(HELLO_MAGIC, VERSION, 0, 0, 1, 0, 4)
                            + b"fake"
                            + os.urandom(32)
                        )
                    else:
                        s.sendall(
                            BLOCK_HEADER.pack(BLOCK_MAGIC, VERSION, 0, 1 << 40, 1 << 40, 2, 1 << 62)
                        )
                    s.settimeout(3)
                    try:
                        reply = s.recv(16)
                    except OSError:
                        reply = b""
                    results.append((kind, reply))
                    s.close()
                except OSError as exc:
                    results.append((kind, repr(exc)))
        time.sleep(0.01)


def test_rogue_clients_are_rejected(spark, tmp_path):
    sa, a = gen((48, 40), 23)
    sb, b = gen((40, 36), 24)
    results: list = []
    stop = threading.Event()
    rogue = threading.Thread(
        target=_rogue_clients, args=(str(tmp_path), 4, results, stop), daemon=True
    )
    rogue.start()
    cfg = CannonConfig(
        timeout=20, handshake_timeout=3, announce_dir=str(tmp_path), connect_delay=1.0
    )
    try:
        c = cannon_matmul(spark, sa, sb, config=cfg)
    finally:
        stop.set()
        rogue.join(10)
    check(c, a @ b, np.float64)
    assert len(results) == 12
    assert all(reply == b"" for _, reply in results), (
        results
    )  # every rogue was cut off, none accepted


# --- the real standalone cluster ------------------------------------------------------------------


def test_on_standalone_cluster(on_cluster):
    out = on_cluster(
        """
        import numpy as np
        from jampi_dsl.session import get_spark, stop_spark, task_slots
        from jampi_dsl.executors.cannon import CannonConfig, cannon_matmul
        from jampi_dsl.executors.distributed import DistMatrix
        from jampi_dsl.executors.sources import GeneratorSource

        spark = get_spark(MASTER)
        try:
            assert task_slots(spark) == 4
            cfg = CannonConfig(timeout=30)
            sa, sb = GeneratorSource("normal", (61, 47), "float64", 1), GeneratorSource("normal", (47, 53), "float32", 2)
            a, b = sa.region((0, 61), (0, 47)), sb.region((0, 47), (0, 53)).astype(np.float64)
            ab = cannon_matmul(spark, sa, sb, config=cfg)
            assert ab.grid == (2, 2)
            got = ab.to_numpy()
            assert np.linalg.norm(got - a @ b) <= 1e-10 * np.linalg.norm(a @ b)
            gram = cannon_matmul(spark, ab, ab, trans_a=True, config=cfg)  # pre-skewed from the cache
            g = gram.to_numpy()
            want = (a @ b).T @ (a @ b)
            assert np.linalg.norm(g - want) <= 1e-10 * np.linalg.norm(want)
            execs = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size()
            print("OK", execs)
        finally:
            stop_spark()
        """
    )
    assert "OK 3" in out  # the driver and two executors took part


# --- peer discovery -------------------------------------------------------------------------------


def test_rendezvous_answers_registered_tasks_and_rejects_forgeries():
    from jampi_dsl.executors.cannon.channel import AuthError, ChannelError, Credentials
    from jampi_dsl.executors.cannon.rendezvous import Rendezvous, discover

    creds = Credentials(os.urandom(32), "stage-1.0", 0)
    forged = Credentials(os.urandom(32), "stage-1.0", 0)
    rdv = Rendezvous("127.0.0.1", "127.0.0.1", creds, 2, handshake_timeout=2).start()
    results: dict = {}

    def register(t, who):
        try:
            results[(t, who is creds)] = discover(rdv.address, who, t, f"10.0.0.{t}:{t + 1}",
                                                  timeout=5, connect_timeout=2)
        except ChannelError as exc:
            results[(t, who is creds)] = exc

    try:
        register(1, forged)  # a wrong secret is cut off before any list is sent
        threads = [threading.Thread(target=register, args=(t, creds)) for t in (0, 1)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
    finally:
        rdv.close()
    assert isinstance(results[(1, False)], ChannelError)
    assert results[(0, True)] == results[(1, True)] == ["10.0.0.0:1", "10.0.0.1:2"]

    # A list signed with another secret is refused by the task.
    class Forger(Rendezvous):
        def _answer(self):
            self.creds = forged
            super()._answer()

    fake = Forger("127.0.0.1", "127.0.0.1", creds, 1, handshake_timeout=2).start()
    try:
        with pytest.raises(AuthError, match="not signed"):
            discover(fake.address, creds, 0, "h:1", timeout=3, connect_timeout=2)
    finally:
        fake.close()


def test_discovery_through_spark_allgather(spark):
    sa, a = gen((40, 30), 25)
    sb, b = gen((30, 20), 26)
    stats: list = []
    cfg = CannonConfig(timeout=20, handshake_timeout=5, discovery="spark", stats=stats)
    check(cannon_matmul(spark, sa, sb, config=cfg), a @ b, np.float64)
    assert len(stats) == 4
    # Every block a task sent, a peer received; each of the 4 tasks shifted its A (20x15)
    # and B (15x10) blocks once: bytes counted on the wire, headers included.
    sent = sum(s["peer_bytes_sent"] for s in stats)
    assert sent == sum(s["peer_bytes_received"] for s in stats)
    assert sent == 4 * ((20 * 15 + 15 * 10) * 8 + 2 * BLOCK_HEADER.size)


@pytest.mark.parametrize("trans", [False, True])
def test_blocks_move_in_panels(spark, trans):
    """Blocks cut into 3 inner-dimension panels: the same product, the same payload on the
    wire (in 3 messages per block), and the buffers recycled (no deadlock around the ring)."""
    sa, a = gen((30, 42) if trans else (42, 30), 27)
    sb, b = gen((18, 30) if trans else (30, 18), 28)
    stats: list = []
    cfg = CannonConfig(timeout=20, handshake_timeout=5, panels=3, stats=stats)
    got = cannon_matmul(spark, sa, sb, trans_a=trans, trans_b=trans, config=cfg)
    check(got, (a.T @ b.T) if trans else (a @ b), np.float64)
    assert {s["panels"] for s in stats} == {3}
    sent = sum(s["peer_bytes_sent"] for s in stats)
    assert sent == sum(s["peer_bytes_received"] for s in stats)
    assert sent == 4 * ((21 * 15 + 15 * 9) * 8 + 2 * 3 * BLOCK_HEADER.size)


def test_unreachable_driver_rendezvous_falls_back_to_allgather(spark, monkeypatch):
    from jampi_dsl.executors.cannon import stage as stage_mod

    real = stage_mod._start_rendezvous

    class Nowhere:  # a closed port: the tasks cannot register
        address = ("127.0.0.1", _closed_port())

        def close(self):
            pass

    monkeypatch.setattr(stage_mod, "_start_rendezvous", lambda *a: Nowhere())
    sa, a = gen((30, 30), 27)
    cfg = CannonConfig(timeout=10, handshake_timeout=2, retries=1)
    with pytest.raises(ExecutionError, match="rendezvous with the driver"):
        cannon_matmul(spark, sa, sa, config=CannonConfig(timeout=10, handshake_timeout=2, retries=0))
    check(cannon_matmul(spark, sa, sa, config=cfg), a @ a, np.float64)  # attempt 1 uses allGather
    monkeypatch.setattr(stage_mod, "_start_rendezvous", real)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dumped(blocks) -> bytes:
    buf = io.BytesIO()
    RawBlockSerializer().dump_stream(iter(blocks), buf)
    return buf.getvalue()


def _stack(arr: np.ndarray, k: int) -> np.ndarray:
    return np.stack([np.ascontiguousarray(p) for p in np.split(arr, k, axis=1)])


@pytest.mark.parametrize("rows, cols, k", [(700, 600, 4), (3, 8, 2), (1500, 90, 3)])
def test_blocks_of_the_expected_shape_are_read_as_column_panels(rows, cols, k, monkeypatch):
    """A reader that asks for (rows, cols, k) gets such blocks as k C-contiguous column
    panels, whatever the frame and staging boundaries; other blocks stay row-major."""
    from jampi_dsl.executors import blockframes

    monkeypatch.setattr(blockframes, "_STAGING", 7 * cols * 8 + 5)  # 7 rows per scatter, frames cut rows
    want = np.arange(rows * cols, dtype=np.float64).reshape(rows, cols)
    other = np.ones((rows, cols + k))
    reader = RawBlockSerializer(panels=(rows, cols, k))
    back = list(reader.load_stream(io.BytesIO(_dumped([((1, 0), want), ((0, 0), other)]))))
    (key, got), (_, kept) = back
    assert key == (1, 0) and got.shape == (k, rows, cols // k) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _stack(want, k))
    assert kept.shape == other.shape
    np.testing.assert_array_equal(kept, other)


def test_pair_reader_cuts_only_the_slot_asked_for():
    a, b = np.arange(600 * 500.0).reshape(600, 500), np.arange(400 * 900.0).reshape(400, 900)
    streams = [_frames(_dumped([((0, 0), x)])) for x in (a, b)]
    zipped = b"".join(fa + fb for fa, fb in zip(*streams, strict=True))
    reader = RawPairDeserializer(panels=(None, (400, 900, 3)))
    (((_, got_a), (_, got_b)),) = reader.load_stream(io.BytesIO(zipped))
    np.testing.assert_array_equal(got_a, a)
    np.testing.assert_array_equal(got_b, _stack(b, 3))


@pytest.mark.parametrize("tb, a_dtype", [(False, np.float64), (True, np.float64), (False, np.float32)])
def test_cached_operands_arrive_as_column_panels(spark, tb, a_dtype):
    """Placed (cached) blocks whose panels are column slices (A; B when transposed) are read
    straight into panel stacks, with no copy in the task, and the product is unchanged
    (a float32 A is promoted stack and all)."""
    _, a = gen((40, 48), 31, a_dtype)
    _, b = gen((36, 48) if tb else (48, 36), 32)
    bb = b.shape[0] // 2, b.shape[1] // 2
    da = DistMatrix.from_numpy(spark, a.astype(a_dtype), (20, 24)).materialize()
    db = DistMatrix.from_numpy(spark, b, bb).materialize()
    stats: list = []
    cfg = CannonConfig(timeout=20, handshake_timeout=5, panels=4, stats=stats)
    check(cannon_matmul(spark, da, db, trans_b=tb, config=cfg), a @ (b.T if tb else b), np.float64)
    assert {s["panel_stacks"] for s in stats} == {2 if tb else 1}


def test_sources_are_read_as_column_panels(spark, tmp_path):
    """A ``.npy`` operand is read panel by panel; a random one too, a few panels at a time,
    when the reads can cover whole generator tiles (else it is made whole and cut)."""
    path = str(tmp_path / "a.npy")
    np.save(path, np.random.default_rng(3).random((40, 64)))
    a = np.load(path)
    stats: list = []
    cfg = CannonConfig(timeout=20, handshake_timeout=5, panels=2, stats=stats)
    src = NpySource.open(path)
    check(cannon_matmul(spark, src, src, trans_b=True, config=cfg), a @ a.T, np.float64)
    assert {s["panel_stacks"] for s in stats} == {2}
    for cols, panels, stacked in ((2048, 2, 1), (2048, 4, 1), (2000, 2, 0)):
        # 2048 columns: blocks 1024 wide; panels of 512 are whole tiles, panels of 256 are
        # read two at a time; 2000: panels 500 wide, no group of them ends on a tile edge.
        stats.clear()
        ga, gb = GeneratorSource("uniform", (8, cols), np.float64, 4), GeneratorSource("normal", (cols, 8), np.float64, 5)
        got = cannon_matmul(spark, ga, gb, config=CannonConfig(timeout=20, handshake_timeout=5, panels=panels, stats=stats))
        want = generate("uniform", (8, cols), np.float64, seed=4) @ generate("normal", (cols, 8), np.float64, seed=5)
        check(got, want, np.float64)
        assert {s["panel_stacks"] for s in stats} == {stacked}, (cols, panels)


def _frozen_objects(_):
    import gc

    yield gc.get_freeze_count()


def test_cannon_tasks_freeze_the_worker_heap(spark):
    """After a Cannon stage its workers have frozen their long-lived objects, so PySpark's
    gc.collect() after each task no longer rescans every module of the worker."""
    sa, a = gen((40, 40), 35)
    check(cannon_matmul(spark, sa, sa, config=FAST), a @ a, np.float64)
    frozen = spark.sparkContext.parallelize(range(16), 16).mapPartitions(_frozen_objects).collect()
    assert max(frozen) > 10_000  # at least one probe ran in a worker that ran a Cannon task


def test_lost_slots_fail_within_the_timeout_with_a_verdict():
    """A worker lost for good: the retry does not wait in Spark's 10-minute slot check, it fails
    after the configured timeout saying how many slots the grid needs and has."""
    from jampi_dsl.executors.cannon.stage import _free_slots_wait

    class Profiles:
        def defaultResourceProfile(self):  # noqa: N802 - Spark's spelling
            return None

    class ScalaContext:  # what the JVM reports once a worker of two is gone
        def maxNumConcurrentTasks(self, profile):  # noqa: N802
            return 2

        def resourceProfileManager(self):  # noqa: N802
            return Profiles()

    class Context:
        master = "spark://127.0.0.1:7077"
        _jsc = type("J", (), {"sc": lambda self: ScalaContext()})()

    t0 = time.monotonic()
    with pytest.raises(ExecutionError, match="needs 4 task slots at once, the cluster now has 2"):
        _free_slots_wait(Context(), 4, timeout=1.5)
    assert 1.5 <= time.monotonic() - t0 < 5


_KILL_CHILD = """
import sys, time
import numpy as np
from jampi_dsl.errors import ExecutionError
from jampi_dsl.session import get_spark, stop_spark
from jampi_dsl.executors.cannon import CannonConfig, cannon_matmul
from jampi_dsl.executors.sources import GeneratorSource

spark = get_spark(sys.argv[1])
try:
    deadline = time.monotonic() + 60  # both executors registered, so the grid is 2x2
    while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    sa, sb = GeneratorSource("normal", (64, 48), "float64", 1), GeneratorSource("normal", (48, 40), "float64", 2)
    # Each task announces itself, then holds 30 s before its first peer connection:
    # the parent kills a worker while the whole grid is mid-stage.
    cfg = CannonConfig(timeout=float(sys.argv[3]), handshake_timeout=5, retries=2, announce_dir=sys.argv[2],
                       connect_delay=30, notify=lambda line: print("NOTICE", line, flush=True))
    try:
        cannon_matmul(spark, sa, sb, config=cfg)
        print("FINISHED", flush=True)
    except ExecutionError as exc:
        print("VERDICT", exc, flush=True)
finally:
    stop_spark()
"""


@pytest.mark.cluster
def test_worker_killed_mid_stage_fails_with_a_verdict_in_bounded_time(tmp_path):
    """Issue 20 item 6 on a real standalone cluster of its own (2 workers, 2 cores each):
    one worker JVM and its executor are SIGKILLed while all four Cannon tasks wait mid-stage.
    The product fails within about twice the timeout, saying what the grid needs and what is
    left, instead of Spark's silent half hour of slot checks."""
    import subprocess
    import sys

    from .conftest import Cluster

    timeout = 10.0
    cluster = Cluster(tmp_path / "logs")
    try:
        announce = tmp_path / "announce"
        announce.mkdir()
        child = subprocess.Popen(
            [sys.executable, "-c", _KILL_CHILD, cluster.url, str(announce), str(timeout)],
            env=dict(os.environ, SPARK_LOCAL_IP="127.0.0.1"), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while len(glob.glob(str(announce / "task-*-attempt-0"))) < 4:
                assert child.poll() is None, child.communicate()
                assert time.monotonic() < deadline, "the four tasks never started"
                time.sleep(0.2)
            cluster.kill_worker(1)
            killed_at = time.monotonic()
            out, err = child.communicate(timeout=6 * timeout + 60)
            took = time.monotonic() - killed_at
        finally:
            if child.poll() is None:
                os.killpg(child.pid, 9)
                child.communicate()
        verdicts = [line for line in out.splitlines() if line.startswith("VERDICT")]
        assert verdicts, f"no verdict\nstdout:\n{out}\nstderr:\n{err[-3000:]}"
        assert "needs 4 task slots at once, the cluster now has 2" in verdicts[0], verdicts[0]
        assert took < 2 * timeout + 25, (took, out)
    finally:
        cluster.stop()
