"""The Cannon peer wire, with threads on 127.0.0.1 (no Spark)."""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import pytest

from jampi_dsl.executors.cannon.channel import (
    BLOCK_HEADER,
    BLOCK_MAGIC,
    HELLO,
    HELLO_MAGIC,
    NONCE_LEN,
    VERSION,
    AuthError,
    ChannelError,
    Credentials,
    Listener,
    PeerTimeout,
    ProtocolError,
    connect,
)

HOST = "127.0.0.1"
CREDS = Credentials(secret=b"s" * 32, stage="stage-1", attempt=0)


def make_listener(expected=((1, 0),), creds=CREDS, **kw):
    return Listener(
        HOST,
        creds,
        local=0,
        expected=set(expected),
        handshake_timeout=kw.pop("handshake_timeout", 2.0),
        **kw,
    ).start()


def wait_rejected(listener, count=1, timeout=5.0):
    deadline = time.monotonic() + timeout
    while len(listener.rejected) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(listener.rejected)


def closed_by_peer(sock, timeout=3.0):
    """True when the other end closed the connection (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5), (64, 33), (1, 1), (0, 4)])
def test_round_trip(dtype, shape):
    listener = make_listener()
    try:
        rng = np.random.default_rng(1)
        blocks = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]
        out = connect(HOST, listener.port, CREDS, local=1, peer=0, channel=0, timeout=5)
        link = listener.wait(1, 0, timeout=5)
        sender = threading.Thread(
            target=lambda: [out.send(b, step, 5) for step, b in enumerate(blocks)]
        )
        sender.start()
        buf = np.empty(shape, dtype)
        for step, b in enumerate(blocks):
            got = link.recv(step, buf, timeout=5)
            assert got is buf
            np.testing.assert_array_equal(got, b)
        sender.join()
        fresh = None
        t = threading.Thread(target=out.send, args=(blocks[0], 9, 5))
        t.start()
        fresh = link.recv_new(9, shape, dtype, timeout=5)
        t.join()
        np.testing.assert_array_equal(fresh, blocks[0])
        assert listener.rejected == []
    finally:
        listener.close()


def test_large_block_zero_copy_send():
    listener = make_listener()
    try:
        a = np.arange(1024 * 1024, dtype=np.float64).reshape(1024, 1024)
        out = connect(HOST, listener.port, CREDS, local=1, peer=0, channel=0, timeout=5)
        link = listener.wait(1, 0, timeout=5)
        t = threading.Thread(target=out.send, args=(a, 0, 10))
        t.start()
        buf = np.empty_like(a)
        link.recv(0, buf, timeout=10)
        t.join()
        assert np.array_equal(buf, a)
    finally:
        listener.close()


def test_wrong_token_rejected_and_listener_keeps_accepting():
    listener = make_listener()
    try:
        bad = Credentials(secret=b"x" * 32, stage="stage-1", attempt=0)
        with pytest.raises(AuthError, match=r"task 1 -> task 0 .*rejected"):
            connect(HOST, listener.port, bad, local=1, peer=0, channel=0, timeout=3)
        assert any("bad authentication token" in r for r in wait_rejected(listener))
        # Another stage or attempt with the right secret is rejected too.
        with pytest.raises(AuthError):
            connect(
                HOST,
                listener.port,
                Credentials(CREDS.secret, "stage-1", 1),
                local=1,
                peer=0,
                channel=0,
                timeout=3,
            )
        # A real peer on an unexpected channel is refused.
        with pytest.raises(AuthError):
            connect(HOST, listener.port, CREDS, local=1, peer=0, channel=3, timeout=3)
        good = connect(HOST, listener.port, CREDS, local=1, peer=0, channel=0, timeout=3)
        link = listener.wait(1, 0, timeout=3)
        a = np.ones((4, 4))
        threading.Thread(target=good.send, args=(a, 0, 3)).start()
        assert np.array_equal(link.recv(0, np.empty((4, 4)), timeout=3), a)
        # Once the expected peer is in, a duplicate is refused.
        with pytest.raises((AuthError, ChannelError, PeerTimeout)):
            connect(HOST, listener.port, CREDS, local=1, peer=0, channel=0, timeout=1)
    finally:
        listener.close()


def test_garbage_and_huge_lengths_rejected():
    listener = make_listener()
    try:
        rogue = socket.create_connection((HOST, listener.port), timeout=3)
        rogue.recv(NONCE_LEN)
        rogue.sendall(os.urandom(HELLO.size + 100))
        assert closed_by_peer(rogue)
        rogue.close()
        # A hello that announces an enormous stage id: refused before reading it.
        rogue = socket.create_connection((HOST, listener.port), timeout=3)
        rogue.recv(NONCE_LEN)
        rogue.sendall(HELLO.pack(HELLO_MAGIC, VERSION, 0, 1, 0, 0, 65535))
        assert closed_by_peer(rogue)
        rogue.close()
        # A block header (huge byte count) instead of a hello.
        rogue = socket.create_connection((HOST, listener.port), timeout=3)
        rogue.recv(NONCE_LEN)
        rogue.sendall(BLOCK_HEADER.pack(BLOCK_MAGIC, VERSION, 0, 1 << 30, 1 << 30, 2, 1 << 63))
        assert closed_by_peer(rogue)
        rogue.close()
        reasons = wait_rejected(listener, 3)
        assert any("bad hello magic" in r for r in reasons)
        assert any("stage id length 65535" in r for r in reasons)
        good = connect(HOST, listener.port, CREDS, local=1, peer=0, channel=0, timeout=3)
        assert listener.wait(1, 0, timeout=3).peer == 1
        good.close()
    finally:
        listener.close()


def test_stalled_client_does_not_block_real_peer():
    listener = make_listener(handshake_timeout=2.0)
    try:
        stalled = socket.create_connection((HOST, listener.port), timeout=3)
        t0 = time.monotonic()
        good = connect(HOST, listener.port, CREDS, local=1, peer=0, channel=0, timeout=3)
        listener.wait(1, 0, timeout=3)
        assert time.monotonic() - t0 < 1.0
        assert closed_by_peer(stalled, timeout=5)  # handshake timeout closes it
        stalled.close()
        good.close()
    finally:
        listener.close()


def test_header_checked_before_allocation():
    listener = make_listener()
    try:
        out = connect(HOST, listener.port, CREDS, local=1, peer=0, channel=0, timeout=3)
        link = listener.wait(1, 0, timeout=3)
        # An authenticated peer announcing a huge block: refused from the header alone.
        out.sock.sendall(BLOCK_HEADER.pack(BLOCK_MAGIC, VERSION, 0, 1 << 31, 1 << 31, 2, 1 << 62))
        with pytest.raises(
            ProtocolError, match=r"task 0 <- task 1 .*announced \d+ bytes, expected 128"
        ):
            link.recv_new(0, (4, 4), np.float64, timeout=3)
    finally:
        listener.close()


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(step=1), "expected step 0"),
        (dict(rows=8, cols=2), "expected step 0 block 4x4"),
        (dict(code=1, nbytes=64), "announced 64 bytes"),
        (dict(code=1), "dtype code 1"),
        (dict(magic=b"XXXX"), "bad block magic"),
    ],
)
def test_header_mismatch(fields, match):
    listener = make_listener()
    try:
        out = connect(HOST, listener.port, CREDS, local=1, peer=0, channel=0, timeout=3)
        link = listener.wait(1, 0, timeout=3)
        h = dict(magic=BLOCK_MAGIC, version=VERSION, step=0, rows=4, cols=4, code=2, nbytes=128)
        h.update(fields)
        out.sock.sendall(BLOCK_HEADER.pack(*h.values()))
        with pytest.raises(ProtocolError, match=match):
            link.recv(0, np.empty((4, 4)), timeout=3)
    finally:
        listener.close()


def test_timeouts_name_task_and_peer():
    listener = make_listener()
    try:
        t0 = time.monotonic()
        with pytest.raises(PeerTimeout, match=r"task 0: no authenticated link from task 1"):
            listener.wait(1, 0, timeout=0.3)
        out = connect(HOST, listener.port, CREDS, local=1, peer=0, channel=0, timeout=3)
        link = listener.wait(1, 0, timeout=3)
        with pytest.raises(
            PeerTimeout, match=r"task 0 <- task 1 at 127\.0\.0\.1:\d+ \(A shift\): step 0"
        ):
            link.recv(0, np.empty((4, 4)), timeout=0.3)
        # A peer that dies half-way through a block.
        out.sock.sendall(BLOCK_HEADER.pack(BLOCK_MAGIC, VERSION, 0, 4, 4, 2, 128) + b"\0" * 50)
        out.close()
        with pytest.raises(ChannelError, match="closed by the peer after 50 of 128"):
            link.recv(0, np.empty((4, 4)), timeout=3)
        assert time.monotonic() - t0 < 3
    finally:
        listener.close()
    # Nobody listening: connect gives up within its timeout.
    port = listener.port
    t0 = time.monotonic()
    with pytest.raises(PeerTimeout, match=rf"task 2 -> task 0 at 127\.0\.0\.1:{port}"):
        connect(HOST, port, CREDS, local=2, peer=0, channel=1, timeout=0.5)
    assert time.monotonic() - t0 < 2


def test_credentials_bind_every_field():
    nonce = b"n" * NONCE_LEN
    base = CREDS.mac(1, 0, 0, nonce)
    assert base != CREDS.mac(2, 0, 0, nonce)
    assert base != CREDS.mac(1, 2, 0, nonce)
    assert base != CREDS.mac(1, 0, 1, nonce)
    assert base != CREDS.mac(1, 0, 0, b"m" * NONCE_LEN)
    assert base != Credentials(CREDS.secret, "stage-2", 0).mac(1, 0, 0, nonce)
    assert base != Credentials(CREDS.secret, "stage-1", 1).mac(1, 0, 0, nonce)
    with pytest.raises(ValueError):
        Credentials(b"k", "x" * 100, 0)


def test_flood_of_stalled_clients_only_delays_the_real_peer():
    listener = make_listener(handshake_timeout=1.0, max_pending=2)
    try:
        stalled = [socket.create_connection((HOST, listener.port), timeout=3) for _ in range(4)]
        time.sleep(0.2)  # the first two hold both handshake slots; the rest are shed
        good = connect(HOST, listener.port, CREDS, local=1, peer=0, channel=0, timeout=5)
        assert listener.wait(1, 0, timeout=5).peer == 1
        assert any("too many pending" in r for r in listener.rejected)
        good.close()
        for s in stalled:
            s.close()
    finally:
        listener.close()


def _discover_all(rv, creds, tasks, results):
    from jampi_dsl.executors.cannon.rendezvous import discover

    def one(t):
        results[t] = discover(rv.address, creds, t, f"127.0.0.1:{5000 + t}", timeout=10, connect_timeout=5)

    threads = [threading.Thread(target=one, args=(t,)) for t in range(tasks)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(20)


def test_rendezvous_survives_descriptor_exhaustion():
    """accept() failing with EMFILE (out of file descriptors) used to end the accept loop for
    good; now it backs off and accepts again once descriptors are back."""
    import errno

    from jampi_dsl.executors.cannon.rendezvous import Rendezvous

    creds = Credentials(os.urandom(32), "stage-emfile", 0)
    rv = Rendezvous("127.0.0.1", "127.0.0.1", creds, 2, handshake_timeout=5)
    real_accept, failures = rv.sock.accept, [3]

    class Sock:  # the listening socket, whose accept fails as a process out of descriptors sees
        def __getattr__(self, name):
            return getattr(rv_sock, name)

        def accept(self):
            if failures[0]:
                failures[0] -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return real_accept()

    rv_sock = rv.sock
    rv.sock = Sock()
    rv.start()
    results: dict = {}
    try:
        _discover_all(rv, creds, 2, results)
    finally:
        rv.close()
        rv_sock.close()
    assert failures[0] == 0
    assert results == {0: ["127.0.0.1:5000", "127.0.0.1:5001"], 1: ["127.0.0.1:5000", "127.0.0.1:5001"]}


def test_rendezvous_threads_are_bounded_under_a_flood():
    from jampi_dsl.executors.cannon.rendezvous import Rendezvous

    creds = Credentials(os.urandom(32), "stage-flood", 0)
    rv = Rendezvous("127.0.0.1", "127.0.0.1", creds, 2, handshake_timeout=1.0).start()
    before = threading.active_count()
    idle = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection(rv.address, timeout=5))
        time.sleep(0.3)
        assert threading.active_count() - before <= rv.max_handshakes
        for sock in idle:
            sock.close()
        time.sleep(1.5)  # the stalled handshakes time out
        results: dict = {}
        _discover_all(rv, creds, 2, results)
        assert results[0] == results[1] == ["127.0.0.1:5000", "127.0.0.1:5001"]
    finally:
        rv.close()
