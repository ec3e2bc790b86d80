"""Agent runtime: rendezvous, TCP connections between ranks, one clock, records, timeouts.

Stage: workload run (inside each host; standard library only).

How a run comes together
- Rank 0 listens for rendezvous on the port the runner chose. Every rank binds a
  data listener on an ephemeral port, connects to rank 0 and says who it is
  (rank, host, site, address, data port). Rank 0 answers with the table of all
  ranks, then a few clock ping-pongs give each rank the offset of its
  ``time.monotonic`` to rank 0's (minimum-RTT sample, the NTP estimate), so
  timestamps from different hosts line up.
- Ranks then connect to each other: rank i opens ``streams`` TCP connections to
  every rank j > i. Congestion control is set per socket (``TCP_CONGESTION``);
  socket buffers are either left to the kernel's autotuning or pinned.
- The rendezvous connections stay open as a control channel (barriers, and a
  way for rank 0 to see a rank vanish).

Data movement
- One I/O thread owns every data socket (``selectors``). Callers post
  ``send(peer, n)`` / ``recv(peer, n)`` operations and wait on the returned
  handle. Bytes are zeros; nothing is reduced. An operation of n bytes is split
  deterministically over the peer's streams, so both ends agree on what each
  stream carries without any framing. Incoming bytes are drained eagerly and
  credited to the stream, so a fast peer never blocks a slow one.
- Failure: a peer whose connection closes while bytes are still owed, or that
  sends nothing for ``stall_timeout_s``, raises :class:`AgentFailure` naming that
  peer's rank; a watchdog ends the whole process after ``timeout_s``. The agent
  then writes an ``agent_error`` record and exits non-zero; it never hangs.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import os
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corridor.agent import lifecycle
from corridor.agent.lifecycle import EXIT_FAILURE, EXIT_STOPPED, raise_priority, start_watchdog

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_ZEROS = memoryview(bytes(CHUNK_BYTES))
_HELLO = struct.Struct("!II")  # rank, stream index
_MAC_BYTES = 32  # HMAC-SHA256 of the hello under the run's secret, sent after it


def hello_mac(secret: str, what: str) -> str:
    """The HMAC (hex) a peer shows for ``what`` (e.g. ``"rendezvous:3:rem-gpu2"``) under the run's secret."""
    return hmac.new(bytes.fromhex(secret) if secret else b"", what.encode(), hashlib.sha256).hexdigest()


def _mesh_mac(secret: str, src: int, dst: int, stream: int) -> bytes:
    return bytes.fromhex(hello_mac(secret, f"mesh:{src}:{dst}:{stream}"))


class AgentFailure(Exception):
    """A rank could not continue; ``peer`` is the rank it blames (None: itself)."""

    def __init__(self, message: str, *, peer: int | None = None) -> None:
        super().__init__(message)
        self.peer = peer


@dataclass(frozen=True)
class AgentConfig:
    """What the runner tells one agent (JSON on the command line)."""

    rank: int
    n_ranks: int
    host: str
    site: str
    ip: str
    rendezvous_ip: str
    rendezvous_port: int
    timeout_s: float = 120.0
    stall_timeout_s: float = 30.0
    cc: str | None = None
    streams: int = 1
    sock_buf_bytes: int | None = None
    time_scale: float = 1.0
    nice: int = 0
    job: dict[str, Any] = field(default_factory=dict)
    #: The run's shared secret (hex): every rendezvous and mesh hello carries an HMAC of it, and a peer
    #: that cannot show one is turned away. Empty only for a standalone agent started by hand.
    secret: str = ""

    @classmethod
    def from_json(cls, text: str) -> AgentConfig:
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise AgentFailure(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Peer:
    rank: int
    host: str
    site: str
    ip: str
    port: int


# ---------------------------------------------------------------------------
# sockets


def tune_socket(sock: socket.socket, cfg: AgentConfig) -> None:
    """Apply the experiment's congestion control and buffer sizes to a data socket."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if cfg.cc:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cfg.cc.encode())
        except OSError as exc:
            raise AgentFailure(
                f"congestion control {cfg.cc!r} is not available here ({exc.strerror}); "
                f"see /proc/sys/net/ipv4/tcp_allowed_congestion_control"
            ) from exc
    if cfg.sock_buf_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, cfg.sock_buf_bytes)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, cfg.sock_buf_bytes)


def socket_cc(sock: socket.socket) -> str:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    return raw.split(b"\0", 1)[0].decode()


def _connect_retry(ip: str, port: int, deadline: float, what: str) -> socket.socket:
    last: OSError | None = None
    delay = 0.02
    while time.monotonic() < deadline:
        try:
            return socket.create_connection((ip, port), timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        except OSError as exc:
            last = exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
    raise AgentFailure(f"could not connect to {what} at {ip}:{port}: {last}")


#: Longest control line (rendezvous, clock probe, barrier) an agent reads; real ones are under 10 KiB.
MAX_LINE_BYTES = 1 << 20


class _Lines:
    """Newline-delimited JSON over a blocking socket; a line over :data:`MAX_LINE_BYTES` is a failure."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def send(self, obj: Any) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self, what: str, peer: int | None) -> Any:
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except TimeoutError as exc:
                raise AgentFailure(f"timed out waiting for {what}", peer=peer) from exc
            except OSError as exc:
                raise AgentFailure(f"lost {what} ({exc})", peer=peer) from exc
            if not data:
                raise AgentFailure(f"connection closed while waiting for {what}", peer=peer)
            self.buf += data
            if b"\n" not in self.buf and len(self.buf) > MAX_LINE_BYTES:
                raise AgentFailure(f"{what} is longer than {MAX_LINE_BYTES // 1024} KiB without a line end; "
                                   "the peer is not a corridor agent", peer=peer)
        line, self.buf = self.buf.split(b"\n", 1)
        if len(line) > MAX_LINE_BYTES:
            raise AgentFailure(f"{what} is longer than {MAX_LINE_BYTES // 1024} KiB", peer=peer)
        try:
            return json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise AgentFailure(f"{what} is not a JSON line ({type(exc).__name__})", peer=peer) from None


# ---------------------------------------------------------------------------
# the I/O engine


class Op:
    """A posted send or receive; ``wait`` blocks until done or failed."""

    def __init__(self, kind: str, peer: int, size_bytes: int, parts: int) -> None:
        self.kind = kind
        self.peer = peer
        self.size_bytes = size_bytes
        self.pending_parts = parts
        self.done = threading.Event()
        self.error: AgentFailure | None = None
        self.last_progress = time.monotonic()
        if parts == 0:
            self.done.set()


class _Stream:
    def __init__(self, peer: int, index: int, sock: socket.socket) -> None:
        self.peer = peer
        self.index = index
        self.sock = sock
        self.tx: collections.deque[list[Any]] = collections.deque()  # [remaining, op]
        self.rx: collections.deque[list[Any]] = collections.deque()
        self.rx_credit = 0
        self.closed = False
        self.want_write = False


class MeshMover:
    """Moves zero bytes over the mesh's sockets on one background thread."""

    def __init__(self, streams: dict[int, list[socket.socket]], stall_timeout_s: float) -> None:
        self.stall_timeout_s = stall_timeout_s
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.streams: dict[int, list[_Stream]] = {}
        self.tx_bytes: dict[int, int] = collections.defaultdict(int)
        self.rx_bytes: dict[int, int] = collections.defaultdict(int)
        self.error: AgentFailure | None = None
        self._scratch = bytearray(CHUNK_BYTES)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = False
        self._changed: set[_Stream] = set()
        for peer, socks in streams.items():
            self.streams[peer] = []
            for i, sock in enumerate(socks):
                sock.setblocking(False)
                st = _Stream(peer, i, sock)
                self.streams[peer].append(st)
                self.sel.register(sock, selectors.EVENT_READ, st)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self._loop, name="corridor-io", daemon=True)
        self.thread.start()

    # -- posting ---------------------------------------------------------
    def _split(self, peer: int, size_bytes: int) -> list[tuple[_Stream, int]]:
        streams = self.streams.get(peer)
        if not streams:
            raise AgentFailure(f"no connection to rank {peer}", peer=peer)
        base, extra = divmod(size_bytes, len(streams))
        parts = [(st, base + (1 if i < extra else 0)) for i, st in enumerate(streams)]
        return [(st, n) for st, n in parts if n > 0]

    def send(self, peer: int, size_bytes: int) -> Op:
        parts = self._split(peer, size_bytes)
        op = Op("send", peer, size_bytes, len(parts))
        with self.lock:
            self._raise_if_failed()
            for st, n in parts:
                st.tx.append([n, op])
                self._changed.add(st)
        self._wake()
        return op

    def recv(self, peer: int, size_bytes: int) -> Op:
        parts = self._split(peer, size_bytes)
        op = Op("recv", peer, size_bytes, len(parts))
        with self.lock:
            self._raise_if_failed()
            for st, n in parts:
                st.rx.append([n, op])
                self._settle_rx(st)
                if st.closed and st.rx:
                    self._fail_stream(st, "closed its connection")
        return op

    def wait(self, ops: list[Op], deadline: float | None = None) -> None:
        """Block until every op is done; raise AgentFailure naming the peer that stalled or failed."""
        for op in ops:
            while not op.done.wait(0.2):
                now = time.monotonic()
                if self.error is not None:
                    raise self.error
                if now - op.last_progress > self.stall_timeout_s:
                    raise AgentFailure(
                        f"no progress for {self.stall_timeout_s:g}s on a {op.size_bytes}-byte {op.kind} "
                        f"{'to' if op.kind == 'send' else 'from'} rank {op.peer}",
                        peer=op.peer,
                    )
                if deadline is not None and now > deadline:
                    raise AgentFailure(f"deadline passed during a {op.kind} with rank {op.peer}", peer=op.peer)
            if op.error is not None:
                raise op.error

    def exchange(self, sends: list[tuple[int, int]], recvs: list[tuple[int, int]]) -> None:
        """Post all sends and receives of one algorithm step and wait for them."""
        ops = [self.recv(p, n) for p, n in recvs] + [self.send(p, n) for p, n in sends]
        self.wait(ops)

    def close(self) -> None:
        self._stop = True
        self._wake()
        self.thread.join(timeout=0.5 if self.error is not None else 2.0)
        for streams in self.streams.values():
            for st in streams:
                try:
                    st.sock.close()
                except OSError:
                    pass
        self._wake_r.close()
        self._wake_w.close()

    # -- I/O thread --------------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def _settle_rx(self, st: _Stream) -> None:
        now = time.monotonic()
        while st.rx and st.rx_credit > 0:
            item = st.rx[0]
            take = min(item[0], st.rx_credit)
            item[0] -= take
            st.rx_credit -= take
            op: Op = item[1]
            op.last_progress = now
            if item[0] == 0:
                st.rx.popleft()
                op.pending_parts -= 1
                if op.pending_parts == 0:
                    op.done.set()

    def _fail_stream(self, st: _Stream, why: str) -> None:
        err = AgentFailure(f"rank {st.peer} {why} (stream {st.index})", peer=st.peer)
        if self.error is None:
            self.error = err
        for queue in (st.tx, st.rx):
            for item in queue:
                item[1].error = err
                item[1].done.set()
            queue.clear()

    def _update_interest(self, st: _Stream) -> None:
        want = bool(st.tx) and not st.closed
        if want != st.want_write:
            st.want_write = want
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            try:
                self.sel.modify(st.sock, events, st)
            except (KeyError, ValueError, OSError):
                pass

    def _loop(self) -> None:
        try:
            while not self._stop:
                with self.lock:
                    changed, self._changed = self._changed, set()
                    for st in changed:
                        self._update_interest(st)
                for key, mask in self.sel.select(timeout=0.5):
                    st = key.data
                    if st is None:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except BlockingIOError:
                            pass
                        continue
                    if mask & selectors.EVENT_READ:
                        self._on_read(st)
                    if mask & selectors.EVENT_WRITE:
                        self._on_write(st)
        except Exception as exc:  # noqa: BLE001 - the I/O thread must report, never die silently
            self.error = AgentFailure(f"I/O thread failed: {exc!r}")

    def _on_read(self, st: _Stream) -> None:
        if st.closed:
            return
        try:
            n = st.sock.recv_into(self._scratch)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            n = 0
            why = f"reset its connection ({exc.strerror})"
        else:
            why = "closed its connection"
        with self.lock:
            if n == 0:
                st.closed = True
                try:
                    self.sel.unregister(st.sock)
                except (KeyError, ValueError):
                    pass
                if st.rx or st.tx:
                    self._fail_stream(st, why)
                return
            st.rx_credit += n
            self.rx_bytes[st.peer] += n
            self._settle_rx(st)

    def _on_write(self, st: _Stream) -> None:
        with self.lock:
            if not st.tx:
                self._update_interest(st)
                return
            item = st.tx[0]
            n_want = min(item[0], CHUNK_BYTES)
        try:
            n = st.sock.send(_ZEROS[:n_want])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            with self.lock:
                st.closed = True
                self._fail_stream(st, f"dropped its connection ({exc.strerror})")
            return
        with self.lock:
            item[0] -= n
            self.tx_bytes[st.peer] += n
            op: Op = item[1]
            op.last_progress = time.monotonic()
            if item[0] == 0:
                st.tx.popleft()
                op.pending_parts -= 1
                if op.pending_parts == 0:
                    op.done.set()
            if not st.tx:
                self._update_interest(st)


# ---------------------------------------------------------------------------
# the agent context


class Agent:
    """One rank: its peers, connections, clock offset, control channel and record sink."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.rank = cfg.rank
        self.n = cfg.n_ranks
        self.peers: dict[int, Peer] = {}
        self.clock_offset_s = 0.0  # add to local monotonic to get rank 0's clock
        self.clock_rtt_s = 0.0
        self.engine: MeshMover | None = None
        self.cc_in_use: str | None = None
        self._ctrl: dict[int, _Lines] = {}  # rank 0: one per other rank; others: {0: ...}
        self._deadline = time.monotonic() + cfg.timeout_s
        # setup gives up before the watchdog does, so the error names the missing rank
        self._setup_deadline = time.monotonic() + min(0.8 * cfg.timeout_s, max(cfg.stall_timeout_s, 10.0))

    # -- records -------------------------------------------------------------
    def emit(self, record: dict[str, Any]) -> None:
        """One record on the agent channel (stdout), tagged with this rank."""
        lifecycle.emit({"rank": self.rank, "host": self.cfg.host, "site": self.cfg.site, **record})

    def now(self) -> float:
        """Seconds on rank 0's monotonic clock."""
        return time.monotonic() + self.clock_offset_s

    # -- setup ---------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tune_socket(listener, cfg)  # accepted sockets inherit cc and buffers
        listener.bind((cfg.ip, 0))  # this host's emulated address only, never every interface
        listener.listen(max(16, self.n * max(1, cfg.streams)))
        me = Peer(cfg.rank, cfg.host, cfg.site, cfg.ip, listener.getsockname()[1])
        lifecycle.say_ready(me.port)
        if cfg.rank == 0:
            self._rendezvous_server(me)
        else:
            self._rendezvous_client(me)
        self._mesh(listener)
        listener.close()
        self.barrier("mesh")

    def _rendezvous_server(self, me: Peer) -> None:
        cfg = self.cfg
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind((cfg.ip, cfg.rendezvous_port))  # rank 0's own address is the rendezvous address
        except OSError as exc:
            raise AgentFailure(f"rank 0 cannot listen on rendezvous port {cfg.rendezvous_port}: {exc}") from exc
        srv.listen(self.n + 4)
        self.peers[0] = me
        while len(self.peers) < self.n:
            remaining = self._setup_deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(range(self.n)) - set(self.peers))
                names = ", ".join(f"rank {r}" for r in missing)
                raise AgentFailure(f"rendezvous: {names} never arrived", peer=missing[0] if missing else None)
            srv.settimeout(min(remaining, 1.0))
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            conn.settimeout(cfg.stall_timeout_s)
            lines = _Lines(conn)
            try:
                hello = lines.recv("a rendezvous hello", None)
                mac = str(hello.pop("mac", ""))
                peer = Peer(**hello)
            except (AgentFailure, TypeError, ValueError) as exc:
                log.warning("rendezvous: dropped a connection that sent no valid hello: %s", exc)
                conn.close()
                continue
            if not hmac.compare_digest(mac, hello_mac(cfg.secret, f"rendezvous:{peer.rank}:{peer.host}")):
                # someone who does not hold the run's secret: never give it the peer table
                log.warning("rendezvous: refused a hello for rank %s that does not carry the run's secret", peer.rank)
                conn.close()
                continue
            if peer.rank in self.peers or not 0 < peer.rank < self.n:
                raise AgentFailure(f"rendezvous: unexpected or duplicate rank {peer.rank} from {peer.host}")
            self.peers[peer.rank] = peer
            self._ctrl[peer.rank] = lines
        srv.close()
        table = [vars(self.peers[r]) for r in range(self.n)]
        for r, lines in self._ctrl.items():
            lines.send({"peers": table})
            # clock ping-pong: answer each probe with our clock
            while True:
                msg = lines.recv("a clock probe", r)
                if msg.get("done"):
                    break
                lines.send({"t": time.monotonic()})

    def _rendezvous_client(self, me: Peer) -> None:
        cfg = self.cfg
        sock = _connect_retry(cfg.rendezvous_ip, cfg.rendezvous_port, self._setup_deadline, "rank 0's rendezvous")
        sock.settimeout(max(cfg.stall_timeout_s, cfg.timeout_s))
        lines = _Lines(sock)
        lines.send({**vars(me), "mac": hello_mac(cfg.secret, f"rendezvous:{me.rank}:{me.host}")})
        table = lines.recv("the peer table from rank 0", 0)["peers"]
        for row in table:
            peer = Peer(**row)
            self.peers[peer.rank] = peer
        best: tuple[float, float] | None = None
        for _ in range(7):
            t0 = time.monotonic()
            lines.send({"probe": True})
            t_server = lines.recv("a clock reply", 0)["t"]
            t1 = time.monotonic()
            sample = (t1 - t0, t_server - (t0 + t1) / 2)
            if best is None or sample[0] < best[0]:
                best = sample
        lines.send({"done": True})
        assert best is not None
        self.clock_rtt_s, self.clock_offset_s = best
        self._ctrl[0] = lines

    def _mesh(self, listener: socket.socket) -> None:
        cfg = self.cfg
        n_streams = max(1, cfg.streams)
        socks: dict[int, list[socket.socket | None]] = {r: [None] * n_streams for r in range(self.n) if r != self.rank}
        expected = self.rank * n_streams  # every lower rank connects to us
        accepted: list[socket.socket] = []
        errors: list[BaseException] = []

        def accept_all() -> None:
            try:
                while len(accepted) < expected:
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        raise AgentFailure("timed out accepting connections from lower ranks")
                    listener.settimeout(min(remaining, 1.0))
                    try:
                        conn, _ = listener.accept()
                    except TimeoutError:
                        continue
                    accepted.append(conn)
            except BaseException as exc:  # noqa: BLE001 - reported by the joining thread
                errors.append(exc)

        acceptor = threading.Thread(target=accept_all, daemon=True)
        acceptor.start()
        for r in range(self.rank + 1, self.n):
            peer = self.peers[r]
            for s in range(n_streams):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                tune_socket(sock, cfg)
                sock.settimeout(cfg.stall_timeout_s)
                t_end = self._deadline
                while True:
                    try:
                        sock.connect((peer.ip, peer.port))
                        break
                    except OSError as exc:
                        if time.monotonic() > t_end:
                            raise AgentFailure(
                                f"cannot connect to rank {r} at {peer.ip}:{peer.port}: {exc}", peer=r
                            ) from exc
                        sock.close()
                        time.sleep(0.05)
                        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                        tune_socket(sock, cfg)
                        sock.settimeout(cfg.stall_timeout_s)
                sock.sendall(_HELLO.pack(self.rank, s) + _mesh_mac(cfg.secret, self.rank, r, s))
                socks[r][s] = sock
        acceptor.join(timeout=max(0.0, self._deadline - time.monotonic()))
        if errors:
            raise errors[0]
        if acceptor.is_alive():
            raise AgentFailure("timed out accepting connections from lower ranks")
        for conn in accepted:
            conn.settimeout(cfg.stall_timeout_s)
            hdr = b""
            while len(hdr) < _HELLO.size + _MAC_BYTES:
                chunk = conn.recv(_HELLO.size + _MAC_BYTES - len(hdr))
                if not chunk:
                    raise AgentFailure("a peer closed its connection during the mesh handshake")
                hdr += chunk
            r, s = _HELLO.unpack(hdr[:_HELLO.size])
            if r >= self.rank or s >= n_streams or socks[r][s] is not None:
                raise AgentFailure(f"unexpected mesh handshake from rank {r} stream {s}")
            if not hmac.compare_digest(hdr[_HELLO.size:], _mesh_mac(cfg.secret, r, self.rank, s)):
                raise AgentFailure(f"a mesh connection claiming rank {r} does not carry the run's secret", peer=r)
            if cfg.sock_buf_bytes:
                tune_socket(conn, cfg)
            socks[r][s] = conn
        full = {r: [s for s in lst if s is not None] for r, lst in socks.items()}
        any_sock = next((s for lst in full.values() for s in lst), None)
        self.cc_in_use = socket_cc(any_sock) if any_sock is not None else cfg.cc
        self.engine = MeshMover(full, cfg.stall_timeout_s)  # type: ignore[arg-type]

    # -- control -------------------------------------------------------------
    def barrier(self, name: str, *, start_margin_s: float = 0.0) -> float:
        """All ranks meet here (through rank 0's control connections).

        Returns a common start time on this rank's monotonic clock: rank 0's
        release time plus ``start_margin_s``; callers that need every rank to
        start together sleep until it (see :meth:`synced_start`).
        """
        if self.n == 1:
            return time.monotonic() + start_margin_s
        if self.rank == 0:
            for r, lines in self._ctrl.items():
                msg = lines.recv(f"barrier {name!r}", r)
                if msg.get("barrier") != name:
                    raise AgentFailure(f"rank {r} reached barrier {msg.get('barrier')!r}, expected {name!r}", peer=r)
            t_go = time.monotonic() + start_margin_s
            for lines in self._ctrl.values():
                lines.send({"go": name, "t": t_go})
            return t_go
        self._ctrl[0].send({"barrier": name})
        msg = self._ctrl[0].recv(f"barrier {name!r} release", 0)
        return float(msg["t"]) - self.clock_offset_s

    def agree_int(self, value: int) -> int:
        """Every rank learns rank 0's ``value`` (rank 0 decides, e.g. how many runs to time)."""
        if self.n == 1:
            return value
        if self.rank == 0:
            for lines in self._ctrl.values():
                lines.send({"agree": value})
            return value
        msg = self._ctrl[0].recv("rank 0's decision", 0)
        return int(msg["agree"])

    def synced_start(self, name: str) -> float:
        """Barrier, then sleep until the common start time; returns it (local clock).

        The margin covers the release message's trip to the farthest rank, so
        every rank starts at the same instant of rank 0's clock and a collective's
        time is not inflated by the barrier's own WAN crossing.
        """
        t_start = self.barrier(name, start_margin_s=float(self.cfg.job.get("start_margin_s", 0.05)))
        delay = t_start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return t_start

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        for lines in self._ctrl.values():
            try:
                lines.sock.close()
            except OSError:
                pass

    @property
    def wan_peers(self) -> set[int]:
        return {r for r, p in self.peers.items() if p.site != self.cfg.site}

    def wan_tx_bytes(self) -> int:
        """Bytes this rank has sent so far to ranks at other sites."""
        assert self.engine is not None
        wan = self.wan_peers
        return sum(n for r, n in self.engine.tx_bytes.items() if r in wan)


RoleFn = Callable[[Agent], None]


def run_role(role: RoleFn, cfg: AgentConfig) -> int:
    """Run one role to completion; returns the process exit status."""
    # ahead of ordinary load, so a step's wake-ups do not queue behind other work on a busy machine
    # (the delay lines run above this, as SCHED_FIFO)
    raise_priority(nice=cfg.nice)
    agent = Agent(cfg)

    def timed_out() -> None:
        agent.emit({"kind": "agent_error", "error": f"rank {agent.rank} exceeded its timeout of "
                    f"{agent.cfg.timeout_s:g}s", "peer": None})

    def stopped() -> None:
        agent.emit({"kind": "agent_error", "error": f"rank {agent.rank} ({cfg.host}) was stopped by its runner "
                    "(stdin closed) before the job ended", "peer": None})
        os._exit(EXIT_STOPPED)

    start_watchdog(agent._deadline - time.monotonic(), f"rank {agent.rank}", last_words=timed_out)
    lifecycle.on_stdin_closed(stopped)
    try:
        agent.start()
        role(agent)
        agent.barrier("end")
        lifecycle.say_done()
    except AgentFailure as exc:
        agent.emit({"kind": "agent_error", "error": f"rank {agent.rank} ({cfg.host}): {exc}", "peer": exc.peer})
        print(f"corridor agent rank {agent.rank}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - turned into a record the runner reads
        agent.emit({"kind": "agent_error", "error": f"rank {agent.rank} ({cfg.host}): {exc!r}", "peer": None})
        print(f"corridor agent rank {agent.rank}: {exc!r}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        agent.close()
    return 0
