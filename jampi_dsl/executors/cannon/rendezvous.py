"""Peer discovery through the driver: each task registers its listener address and
gets every task's once all have registered.

This replaces ``BarrierTaskContext.allGather``, which Spark answers on a polling
tick: every task but the last to arrive waits until the next whole second
(measured here: 1.0 s for each call, local[4]). That second was the largest
fixed cost of a stage, and at n=4096 it still showed as time spent waiting for
the first blocks. The driver is reachable from every executor by definition,
so a small TCP service there answers as soon as the last task registers.

Protocol, per task (no Spark)::

    driver -> task   nonce (16 random bytes)
    task -> driver   REGISTER header, its "host:port", HMAC (32 bytes)
    driver -> task   LIST header, the JSON list of addresses, HMAC (32 bytes)

Both MACs use the stage's secret and bind the stage, attempt, task and the
driver's nonce, so neither a forged registration nor a forged or replayed list
is accepted.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import struct
import threading
import time

from .channel import (
    MAC_LEN,
    NONCE_LEN,
    VERSION,
    AuthError,
    ChannelError,
    Credentials,
    PeerTimeout,
    ProtocolError,
    _family,
    _recv_exact,
)

REGISTER = struct.Struct("<4sHIIH")  # magic, version, attempt, task, address length
LIST = struct.Struct("<4sI")  # magic, payload length
_DRIVER = 0xFFFFFFFF  # the driver's "task id" in MACs, so a token is never valid for a peer link
_REGISTER_CHANNEL, _LIST_CHANNEL = 255, 254
MAX_ADDRESS = 300


class Rendezvous:
    """The driver side for one stage attempt of ``tasks`` tasks."""

    def __init__(self, bind: str, advertise: str, creds: Credentials, tasks: int, handshake_timeout: float):
        self.creds = creds
        self.tasks = tasks
        self.handshake_timeout = handshake_timeout
        self._addrs: dict[int, str] = {}
        self._conns: dict[int, tuple[socket.socket, bytes]] = {}
        self._lock = threading.Lock()
        self._closed = False
        # Each handshake is a thread for at most handshake_timeout; a flood of idle connections
        # gets this many, and the rest are closed at once.
        self.max_handshakes = max(16, 4 * tasks)
        self._handshakes = threading.BoundedSemaphore(self.max_handshakes)
        self.sock = socket.socket(_family(bind), socket.SOCK_STREAM)
        try:
            self.sock.bind((bind, 0))
            self.sock.listen(max(64, 2 * tasks))
        except OSError:
            self.sock.close()
            raise
        self.address = (advertise, self.sock.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name="cannon-rendezvous", daemon=True)

    def start(self) -> Rendezvous:
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        backoff = 0.01
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self._closed or self.sock.fileno() < 0:
                    return
                # Out of descriptors (EMFILE), memory, or an aborted connection: the listener is
                # fine, so wait for descriptors to come back instead of giving up for good.
                time.sleep(backoff)
                backoff = min(0.5, backoff * 2)
                continue
            backoff = 0.01
            if not self._handshakes.acquire(blocking=False):
                conn.close()  # more handshakes at once than tasks could need: bounded threads
                continue
            threading.Thread(target=self._register_bounded, args=(conn,), daemon=True).start()

    def _register_bounded(self, conn: socket.socket) -> None:
        try:
            self._register(conn)
        finally:
            self._handshakes.release()

    def _register(self, conn: socket.socket) -> None:
        try:
            deadline = time.monotonic() + self.handshake_timeout
            nonce = os.urandom(NONCE_LEN)
            conn.settimeout(self.handshake_timeout)
            conn.sendall(nonce)
            magic, version, attempt, t, length = REGISTER.unpack(
                _recv_exact(conn, REGISTER.size, deadline, "rendezvous"))
            if magic != b"JMPR" or version != VERSION or length > MAX_ADDRESS:
                raise ProtocolError("bad registration header")
            address = _recv_exact(conn, length, deadline, "rendezvous")
            mac = _recv_exact(conn, MAC_LEN, deadline, "rendezvous")
            want = self.creds.mac(t, _DRIVER, _REGISTER_CHANNEL, nonce + address)
            if not hmac.compare_digest(mac, want) or not 0 <= t < self.tasks:
                raise AuthError("bad registration")
            with self._lock:
                if self._closed or t in self._conns:
                    raise AuthError(f"duplicate registration of task {t}")
                self._addrs[t] = address.decode()
                self._conns[t] = (conn, nonce)
                complete = len(self._conns) == self.tasks
            if complete:
                self._answer()
        except (ChannelError, OSError, UnicodeDecodeError, struct.error):
            conn.close()

    def _answer(self) -> None:
        payload = json.dumps([self._addrs[t] for t in range(self.tasks)]).encode()
        for t, (conn, nonce) in self._conns.items():
            try:
                mac = self.creds.mac(_DRIVER, t, _LIST_CHANNEL, nonce + payload)
                conn.sendall(LIST.pack(b"JMPL", len(payload)) + payload + mac)
            except OSError:
                pass  # that task is gone; Spark fails the stage
            finally:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = [c for c, _ in self._conns.values()]
        for conn in [self.sock, *conns]:
            try:
                conn.close()
            except OSError:
                pass


def discover(driver: tuple[str, int], creds: Credentials, t: int, address: str, *, timeout: float,
             connect_timeout: float) -> list[str]:
    """The task side: register ``address`` and return every task's, in task order."""
    host, port = driver
    what = f"task {t}: rendezvous with the driver at {host}:{port}"
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except OSError as exc:
        raise ChannelError(f"{what}: cannot connect: {exc}") from exc
    with sock:
        sock.settimeout(timeout)
        nonce = _recv_exact(sock, NONCE_LEN, deadline, what)
        raw = address.encode()
        sock.sendall(REGISTER.pack(b"JMPR", VERSION, creds.attempt, t, len(raw)) + raw
                     + creds.mac(t, _DRIVER, _REGISTER_CHANNEL, nonce + raw))
        try:
            magic, length = LIST.unpack(_recv_exact(sock, LIST.size, deadline, what))
        except PeerTimeout:
            raise PeerTimeout(f"{what}: not every task registered within {timeout:g}s") from None
        if magic != b"JMPL" or length > 64 * (MAX_ADDRESS + 4) * 1024:
            raise ProtocolError(f"{what}: bad reply header")
        payload = _recv_exact(sock, length, deadline, what)
        mac = _recv_exact(sock, MAC_LEN, deadline, what)
    if not hmac.compare_digest(mac, creds.mac(_DRIVER, t, _LIST_CHANNEL, nonce + payload)):
        raise AuthError(f"{what}: the address list is not signed with this stage's secret")
    return [str(a) for a in json.loads(payload)]
