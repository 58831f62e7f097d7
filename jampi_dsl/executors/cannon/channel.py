"""The peer wire between Cannon tasks: authenticated TCP links carrying raw blocks.

No Spark here, so the wire is testable with threads on 127.0.0.1.

Handshake (every connection, before any data)::

    listener -> connector   nonce (16 random bytes)
    connector -> listener   HELLO header, stage id bytes, HMAC-SHA256 (32 bytes)
    listener -> connector   b"JMOK"  (or the listener closes the connection)

The MAC covers the stage id, the stage attempt, the source task, the destination
task, the channel number and the listener's nonce, keyed with a per-stage secret
the driver made; so a token is useless to another stage, attempt, task pair or
connection. Block frames after it are a fixed header (magic, version, step,
rows, cols, dtype code, byte count) followed by the raw C-order bytes: never
pickle. The receiver checks every header field against the block it expects
(shape and dtype are known in advance) before it touches the payload, and reads
the payload with ``recv_into`` straight into a preallocated array; the sender
hands the array's own memory to ``sendall``.

Every connect, accept and receive is bounded by a timeout, and every error names
the local task, the peer task and its address.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass

import numpy as np

VERSION = 1
HELLO_MAGIC = b"JMPH"
BLOCK_MAGIC = b"JMPB"
ACCEPT = b"JMOK"
NONCE_LEN = 16
MAC_LEN = 32
MAX_STAGE_ID = 64

# magic, version, attempt, source task, destination task, channel, stage-id length
HELLO = struct.Struct("<4sHIIIBH")
# magic, version, step, rows, cols, dtype code, byte count
BLOCK_HEADER = struct.Struct("<4sHIQQHQ")

DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2}
CODE_DTYPES = {code: dt for dt, code in DTYPE_CODES.items()}

CHANNEL_NAMES = {0: "A shift", 1: "B shift", 2: "A skew", 3: "B skew"}


class ChannelError(RuntimeError):
    """A peer link failed; the message names the local task and the peer."""


class AuthError(ChannelError):
    """A handshake failed: wrong token, wrong stage, unexpected peer."""


class ProtocolError(ChannelError):
    """Bytes on the wire that are not what the protocol allows."""


class PeerTimeout(ChannelError, TimeoutError):
    """A connect, accept or receive took longer than the configured timeout."""


@dataclass(frozen=True)
class Credentials:
    """What both ends of a link must agree on; the secret comes from the driver."""

    secret: bytes
    stage: str
    attempt: int

    def __post_init__(self):
        if len(self.stage.encode()) > MAX_STAGE_ID:
            raise ValueError(f"stage id longer than {MAX_STAGE_ID} bytes")

    def mac(self, src: int, dst: int, channel: int, nonce: bytes) -> bytes:
        msg = b"jampi-cannon-link|%s|%d|%d|%d|%d|" % (
            self.stage.encode(),
            self.attempt,
            src,
            dst,
            channel,
        )
        return hmac.new(self.secret, msg + nonce, hashlib.sha256).digest()


def channel_name(channel: int) -> str:
    return CHANNEL_NAMES.get(channel, f"channel {channel}")


def _recv_exact_into(sock: socket.socket, view: memoryview, deadline: float, what: str) -> None:
    """Fill ``view`` from ``sock`` before ``deadline`` (time.monotonic) or raise."""
    got, total = 0, len(view)
    while got < total:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerTimeout(f"{what}: timed out after {got} of {total} bytes")
        sock.settimeout(remaining)
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError as exc:  # socket.timeout is TimeoutError since 3.10
            raise PeerTimeout(f"{what}: timed out after {got} of {total} bytes") from exc
        except OSError as exc:
            raise ChannelError(
                f"{what}: {exc.strerror or exc} after {got} of {total} bytes"
            ) from exc
        if n == 0:
            raise ChannelError(
                f"{what}: connection closed by the peer after {got} of {total} bytes"
            )
        got += n


def _recv_exact(sock: socket.socket, n: int, deadline: float, what: str) -> bytes:
    buf = bytearray(n)
    _recv_exact_into(sock, memoryview(buf), deadline, what)
    return bytes(buf)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class Link:
    """One authenticated, one-directional block stream between two tasks."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        local: int,
        peer: int,
        address: str,
        channel: int,
        sending: bool,
    ):
        self.sock = sock
        self.local = local
        self.peer = peer
        self.address = address
        self.channel = channel
        arrow = "->" if sending else "<-"
        self.describe = f"task {local} {arrow} task {peer} at {address} ({channel_name(channel)})"

    def send(
        self, arr: np.ndarray, step: int, timeout: float, *, abort_after: int | None = None
    ) -> int:
        """Header then the array's own bytes (zero copy); returns the bytes written.
        ``abort_after`` is a fault-injection hook."""
        if not arr.flags.c_contiguous:
            raise ValueError(f"{self.describe}: only C-contiguous blocks are sent")
        code = DTYPE_CODES.get(arr.dtype)
        if code is None or arr.ndim != 2:
            raise ValueError(f"{self.describe}: cannot send a {arr.ndim}-D {arr.dtype} array")
        header = BLOCK_HEADER.pack(
            BLOCK_MAGIC, VERSION, step, arr.shape[0], arr.shape[1], code, arr.nbytes
        )
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(header)
            if arr.nbytes:
                payload = memoryview(arr).cast("B")
                if abort_after is not None:
                    self.sock.sendall(payload[:abort_after])
                    os._exit(1)  # fault injection: die in the middle of a block
                self.sock.sendall(payload)
        except TimeoutError as exc:
            raise PeerTimeout(
                f"{self.describe}: send of step {step} timed out after {timeout:g}s"
            ) from exc
        except OSError as exc:
            raise ChannelError(f"{self.describe}: send of step {step} failed: {exc}") from exc
        return len(header) + arr.nbytes

    def recv_header(
        self, step: int, shape: tuple[int, int], dtype: np.dtype, deadline: float
    ) -> None:
        """Read and check one header against the expected block; raise before any allocation."""
        what = f"{self.describe}: step {step}"
        raw = _recv_exact(self.sock, BLOCK_HEADER.size, deadline, what + " header")
        magic, version, got_step, rows, cols, code, nbytes = BLOCK_HEADER.unpack(raw)
        if magic != BLOCK_MAGIC:
            raise ProtocolError(f"{what}: bad block magic {magic!r}")
        if version != VERSION:
            raise ProtocolError(f"{what}: protocol version {version}, expected {VERSION}")
        dtype = np.dtype(dtype)
        expected_bytes = shape[0] * shape[1] * dtype.itemsize
        if nbytes != expected_bytes:
            raise ProtocolError(f"{what}: announced {nbytes} bytes, expected {expected_bytes}")
        if got_step != step or (rows, cols) != tuple(shape) or CODE_DTYPES.get(code) != dtype:
            raise ProtocolError(
                f"{what}: got step {got_step} block {rows}x{cols} dtype code {code}, "
                f"expected step {step} block {shape[0]}x{shape[1]} {dtype}"
            )

    def recv(self, step: int, out: np.ndarray, timeout: float) -> np.ndarray:
        """Receive the step's block into ``out`` (preallocated, C-contiguous)."""
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ValueError(f"{self.describe}: receive buffer must be writable and C-contiguous")
        deadline = time.monotonic() + timeout
        self.recv_header(step, out.shape, out.dtype, deadline)
        if out.nbytes:
            _recv_exact_into(
                self.sock, memoryview(out).cast("B"), deadline, f"{self.describe}: step {step}"
            )
        return out

    def recv_new(self, step: int, shape: tuple[int, int], dtype, timeout: float) -> np.ndarray:
        """Like :meth:`recv`, allocating the buffer only after the header checked out."""
        deadline = time.monotonic() + timeout
        self.recv_header(step, shape, np.dtype(dtype), deadline)
        out = np.empty(shape, dtype)
        if out.nbytes:
            _recv_exact_into(
                self.sock, memoryview(out).cast("B"), deadline, f"{self.describe}: step {step}"
            )
        return out

    def close(self) -> None:
        # shutdown first: close() alone does not wake a thread of this process blocked in
        # a send or receive on the socket (nor tell the peer), so an abort would wait out the timeout.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def connect(
    host: str,
    port: int,
    creds: Credentials,
    *,
    local: int,
    peer: int,
    channel: int,
    timeout: float,
) -> Link:
    """Open an authenticated link from task ``local`` to the listener of task ``peer``."""
    address = f"{host}:{port}"
    link_name = f"task {local} -> task {peer} at {address} ({channel_name(channel)})"
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        # Retry while the listener is not up yet, or closes us before its nonce (it
        # sheds load when many unauthenticated clients are pending): both are transient.
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerTimeout(f"{link_name}: connect timed out after {timeout:g}s")
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        sock.settimeout(remaining)
        try:
            sock.connect((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nonce = _recv_exact(sock, NONCE_LEN, deadline, link_name + " handshake")
            break
        except (ConnectionRefusedError, ConnectionResetError, TimeoutError, ChannelError) as exc:
            sock.close()
            if isinstance(exc, PeerTimeout) or time.monotonic() + delay >= deadline:
                raise PeerTimeout(
                    f"{link_name}: connect failed within {timeout:g}s: {exc}"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        except OSError as exc:
            sock.close()
            raise ChannelError(f"{link_name}: connect failed: {exc}") from exc
    try:
        stage = creds.stage.encode()
        hello = HELLO.pack(HELLO_MAGIC, VERSION, creds.attempt, local, peer, channel, len(stage))
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(hello + stage + creds.mac(local, peer, channel, nonce))
        try:
            reply = _recv_exact(sock, len(ACCEPT), deadline, link_name + " handshake")
        except PeerTimeout:
            raise
        except ChannelError as exc:
            raise AuthError(f"{link_name}: the peer rejected the handshake") from exc
        if reply != ACCEPT:
            raise AuthError(f"{link_name}: unexpected handshake reply {reply!r}")
    except BaseException:
        sock.close()
        raise
    return Link(sock, local=local, peer=peer, address=address, channel=channel, sending=True)


class Listener:
    """Accepts and authenticates the links a task expects; rejects everything else.

    Handshakes run in their own short-lived threads so a client that connects and
    stalls cannot hold up the real peers; rejected clients are closed and
    recorded in :attr:`rejected`, and the listener keeps accepting until every
    expected ``(source task, channel)`` pair has connected or it is closed.
    """

    def __init__(
        self,
        host: str,
        creds: Credentials,
        *,
        local: int,
        expected: set[tuple[int, int]],
        handshake_timeout: float = 5.0,
        max_pending: int = 32,
    ):
        self.host = host
        self.creds = creds
        self.local = local
        self.expected = set(expected)
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending
        self.rejected: list[str] = []
        self._links: dict[tuple[int, int], Link] = {}
        self._cond = threading.Condition()
        self._pending = 0
        self._closed = False
        self.sock = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            self.sock.bind((host, 0))
            self.sock.listen(64)
        except OSError:
            self.sock.close()
            raise
        self.port = self.sock.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"cannon-listen-{local}", daemon=True
        )

    def start(self) -> Listener:
        self._thread.start()
        return self

    def _done(self) -> bool:
        return self._closed or self.expected.issubset(self._links)

    def _accept_loop(self) -> None:
        self.sock.settimeout(0.2)
        while True:
            with self._cond:
                if self._done():
                    break
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            with self._cond:
                if self._pending >= self.max_pending:
                    self.rejected.append(f"{addr}: too many pending handshakes")
                    conn.close()
                    continue
                self._pending += 1
            threading.Thread(target=self._handshake, args=(conn, addr), daemon=True).start()
        try:
            self.sock.close()
        except OSError:
            pass

    def _handshake(self, conn: socket.socket, addr) -> None:
        who = f"task {self.local} listener at {self.address}, client {addr[0]}:{addr[1]}"
        key = None
        try:
            deadline = time.monotonic() + self.handshake_timeout
            nonce = os.urandom(NONCE_LEN)
            conn.settimeout(self.handshake_timeout)
            conn.sendall(nonce)
            head = _recv_exact(conn, HELLO.size, deadline, who)
            magic, version, attempt, src, dst, channel, stage_len = HELLO.unpack(head)
            if magic != HELLO_MAGIC:
                raise ProtocolError(f"{who}: bad hello magic {magic!r}")
            if version != VERSION:
                raise ProtocolError(f"{who}: protocol version {version}, expected {VERSION}")
            if stage_len > MAX_STAGE_ID:
                raise ProtocolError(f"{who}: stage id length {stage_len} exceeds {MAX_STAGE_ID}")
            stage = _recv_exact(conn, stage_len, deadline, who)
            mac = _recv_exact(conn, MAC_LEN, deadline, who)
            # The MAC is recomputed over *our* stage, attempt and task id: a hello
            # meant for another stage, attempt or task fails here like a bad token.
            want = self.creds.mac(src, self.local, channel, nonce)
            if not hmac.compare_digest(mac, want):
                detail = (
                    ""
                    if (
                        stage == self.creds.stage.encode()
                        and attempt == self.creds.attempt
                        and dst == self.local
                    )
                    else " (stage, attempt or destination mismatch)"
                )
                raise AuthError(f"{who}: bad authentication token from claimed task {src}{detail}")
            key = (src, channel)
            with self._cond:
                if key not in self.expected:
                    raise AuthError(f"{who}: task {src} is not expected on {channel_name(channel)}")
                if key in self._links:
                    raise AuthError(
                        f"{who}: duplicate link from task {src} on {channel_name(channel)}"
                    )
            conn.sendall(ACCEPT)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = Link(
                conn,
                local=self.local,
                peer=src,
                address=f"{addr[0]}:{addr[1]}",
                channel=channel,
                sending=False,
            )
            with self._cond:
                self._links[key] = link
                self._cond.notify_all()
        except (ChannelError, OSError) as exc:
            with self._cond:
                self.rejected.append(str(exc))
                self._cond.notify_all()
            try:
                conn.close()
            except OSError:
                pass
        finally:
            with self._cond:
                self._pending -= 1

    def wait(self, src: int, channel: int, timeout: float) -> Link:
        """The authenticated link from task ``src`` on ``channel``, waiting up to ``timeout``."""
        key = (src, channel)
        with self._cond:
            ok = self._cond.wait_for(lambda: key in self._links or self._closed, timeout)
            if key in self._links:
                return self._links[key]
        rejected = f"; rejected meanwhile: {self.rejected[-3:]}" if self.rejected else ""
        if not ok:
            raise PeerTimeout(
                f"task {self.local}: no authenticated link from task {src} ({channel_name(channel)}) "
                f"on {self.address} within {timeout:g}s{rejected}"
            )
        raise ChannelError(
            f"task {self.local}: listener on {self.address} closed while waiting for task {src}"
        )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            links = list(self._links.values())
            self._cond.notify_all()
        for link in links:
            link.close()
        try:
            self.sock.close()
        except OSError:
            pass
