"""The early server: ``busguard run`` answers the DCIM from the restart image (the retained
register image, :mod:`busguard.northbound.restartimage`) within a few tens of milliseconds
of its start, while it imports pymodbus and the plugins, builds the site and starts the I/O
process; then it hands the *same* listening socket and every open connection to the real
server (:class:`busguard.northbound.server.NorthboundServer`), so no client sees a refused
connection or a dropped one and no port is bound twice.

Why a framed responder of its own and not pymodbus: pymodbus's import alone costs more than
the whole budget of a restart (0.3 s to a served retained map on a small machine), so this
module answers with the fast path's frames (:mod:`busguard.northbound.mbap`, shared with the
real server) and imports nothing heavy: the standard library, the site's TOML and
:mod:`busguard.northbound.access` for the allowlist.

What it answers, until the real server takes over:

- reads (functions 3 and 4) at the unit ids of the map, from the image: every value as
  restored (stale, RESTORED), latched trips, the alarm table; the same exceptions as the
  real server's fast path (0x02, 0x03, 0x0B);
- writes (6, 16, 23) and Read Device Identification (43): exception 0x06, server busy (the
  DCIM retries; nothing is written before the runtime runs);
- any other function 0x01, a malformed read 0x03, a frame of another protocol id dropped,
  an MBAP length over 254 (unframeable): the connection closed, as the real server does;
- connections from outside ``allow`` (empty: loopback only) and over ``max_connections``
  reset at accept.

With ``[scan] io = "process"`` the listening socket is inherited by the I/O process
(``--listen HOST:PORT:FD``); its server, once accepting, says so on a handover channel
(``--handover-fd``) and receives the open connections (SCM_RIGHTS, with any bytes of a
request not yet complete); with threads the runtime's own server takes them in this process.
No image, a damaged one, one of another site or of an older retained generation: no early
server (a log line says why) and the start goes on as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from busguard.northbound import access, mbap
from busguard.northbound import restartimage as ri

log = logging.getLogger("busguard.earlyserve")

# [paths] state_dir's default (busguard.config.model.PATHS_PARAMS, asserted equal in the
# tests): that module's import is what this one must not pay for
DEFAULT_STATE_DIR = "var/lib/busguard"
MAX_BUFFER = 16384  # bytes of requests not yet complete, per connection (the real server's)
MAX_UNSENT = 262144  # answers the client has not taken yet, per connection
HANDOVER_WAIT_S = 5.0  # the receiving side's bound on a handover
WRITE_FCS = frozenset({6, 16, 23})
BUSY_FCS = WRITE_FCS | {43}
KNOWN_FCS = frozenset({3, 4}) | BUSY_FCS
READY, CONN, END = b"R", b"C", b"E"  # the handover channel's messages

# listening sockets a server of this process may take instead of binding (host, port): set
# by the early server (threads) or from ``--listen`` (the I/O process)
_inherited: dict[tuple[str, int], socket.socket] = {}
_lock = threading.Lock()


def inherit(host: str, port: int, sock: socket.socket) -> None:
    with _lock:
        _inherited[(host, port)] = sock


def take_listener(host: str, port: int) -> socket.socket | None:
    """The listening socket inherited for ``host:port`` (once), or None: bind one."""
    with _lock:
        return _inherited.pop((host, port), None)


def drop_inherited() -> None:
    with _lock:
        socks = list(_inherited.values())
        _inherited.clear()
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


class _Conn:
    __slots__ = ("host", "inbuf", "outbuf", "sock")

    def __init__(self, sock: socket.socket, host: str) -> None:
        self.sock = sock
        self.host = host
        self.inbuf = b""
        self.outbuf = b""


class EarlyServer:
    """Serves one restart image on its listening sockets from a thread of its own."""

    def __init__(self, image: ri.RestartImage, socks: list[socket.socket]) -> None:
        self.ri = image
        self.socks = socks
        self.allow = access.parse_networks(image.allow) or access.LOOPBACK
        self.conns: dict[int, _Conn] = {}
        self.reads = 0
        self.refused = 0
        self.busy = 0
        self.started = time.monotonic()
        # the handover channel to the I/O process (with threads: unused)
        self.channel: socket.socket | None
        self._child_end: socket.socket | None
        self.channel, self._child_end = socket.socketpair(socket.AF_UNIX,
                                                          socket.SOCK_SEQPACKET)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._adopt: Callable[[socket.socket, bytes], None] | None = None
        self._stop = False
        self.done = threading.Event()
        self.handed_over = 0
        self._thread = threading.Thread(target=self._run, name="busguard-early", daemon=True)

    # -- set-up ------------------------------------------------------------------------------
    def endpoints(self) -> list[tuple[str, int, socket.socket]]:
        return [(h, p, s) for (h, p), s in zip(self.ri.listen, self.socks, strict=True)]

    def for_child(self) -> tuple[list[str], list[int]]:
        """(arguments, fds) that give the I/O process the listening sockets and the handover
        channel (``python -m busguard.ioproc ... --listen H:P:FD --handover-fd FD``)."""
        theirs = self._child_end
        assert theirs is not None
        args, fds = [], []
        for h, p, s in self.endpoints():
            args += ["--listen", f"{h}:{p}:{s.fileno()}"]
            fds.append(s.fileno())
        args += ["--handover-fd", str(theirs.fileno())]
        fds.append(theirs.fileno())
        return args, fds

    def child_started(self) -> None:
        """The I/O process has its copies: ours of its channel end is closed (so its exit
        reads as the channel's end here)."""
        if self._child_end is not None:
            self._child_end.close()
            self._child_end = None

    def inherit_here(self) -> None:
        """Threads: the runtime's own server takes copies of the listening sockets."""
        for h, p, s in self.endpoints():
            inherit(h, p, s.dup())

    def start(self) -> None:
        for s in self.socks:
            s.setblocking(False)
            self._sel.register(s, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        assert self.channel is not None
        self._sel.register(self.channel, selectors.EVENT_READ, "channel")
        self._thread.start()

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- ending ------------------------------------------------------------------------------
    def hand_over(self, adopt: Callable[[socket.socket, bytes], None],
                  wait_s: float = HANDOVER_WAIT_S) -> int:
        """Give every open connection to ``adopt`` (the real server of this process, with
        the bytes of a request not yet complete) and stop; the listening sockets are the
        real server's already (:func:`take_listener`). Returns the connections handed."""
        self._adopt = adopt
        self.wake()
        self.done.wait(wait_s)
        return self.handed_over

    def close(self) -> None:
        """Stop and close everything (the runtime did not come up, or took nothing)."""
        self._stop = True
        self.wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(2.0)
        self._close_all()

    def _close_all(self) -> None:
        for c in list(self.conns.values()):
            self._drop(c)
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()
        for s in (self.channel, self._child_end):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop and self._adopt is None:
                for key, ev in self._sel.select(0.5):
                    what = key.data
                    if what == "listen":
                        self._accept(key.fileobj)  # type: ignore[arg-type]
                    elif what == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    elif what == "channel":
                        self._channel()
                    elif isinstance(what, _Conn):
                        if ev & selectors.EVENT_WRITE:
                            self._flush(what)
                        if ev & selectors.EVENT_READ and what.sock.fileno() in self.conns:
                            self._read(what)
                    if self._stop or self._adopt is not None:
                        break
            if self._adopt is not None and not self._stop:
                self._give_all(self._adopt)
        except Exception:  # never the runtime's start: close, the real server binds anew
            log.exception("early server failed; its connections are closed")
            self._stop = True
        finally:
            for s in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    s.close()
            if self._stop:
                self._close_all()
            self.done.set()

    def _channel(self) -> None:
        """The I/O process: READY (its server accepts on the inherited sockets: hand the
        connections over), or the end of the channel (it died: close, it will bind anew)."""
        assert self.channel is not None
        try:
            msg = self.channel.recv(64)
        except OSError:
            msg = b""
        if msg[:1] == READY:
            self._adopt = self._send_to_child
            return
        if not msg:
            log.warning("early server: the I/O process ended before it took over; closing "
                        "the early listener (it binds its own when restarted)")
            self._stop = True

    def _send_to_child(self, sock: socket.socket, pending: bytes) -> None:
        assert self.channel is not None
        try:
            socket.send_fds(self.channel, [CONN + pending], [sock.fileno()])
        finally:
            sock.close()  # the I/O process has its own copy now

    def _give_all(self, adopt: Callable[[socket.socket, bytes], None]) -> None:
        n = 0
        for c in list(self.conns.values()):
            self._sel.unregister(c.sock)
            del self.conns[c.sock.fileno()]
            try:
                if c.outbuf:  # answers not taken yet: the client gets them first
                    c.sock.settimeout(1.0)
                    c.sock.sendall(c.outbuf)
                c.sock.setblocking(False)
                adopt(c.sock, c.inbuf)  # it owns the socket from here
                n += 1
            except Exception as exc:
                log.warning("early server: connection from %s not handed over (%s); closed",
                            c.host, exc)
                with contextlib.suppress(OSError):
                    c.sock.close()
        self.handed_over = n
        if adopt == self._send_to_child and self.channel is not None:
            with contextlib.suppress(OSError):
                self.channel.send(END)
        for s in (*self.socks, self.channel, self._child_end):  # the real server has its own
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        log.info("early server: handed the listener and %d connection(s) to the real server "
                 "after %.3f s (%d reads answered from the restart image, %d writes refused "
                 "as busy, %d connections refused)", n, time.monotonic() - self.started,
                 self.reads, self.busy, self.refused)

    def _accept(self, lsock: socket.socket) -> None:
        for _ in range(64):  # bounded per turn
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("early server: accept failed: %s", exc)
                return
            host = str(addr[0])
            if not access.contains(self.allow, host) or \
                    len(self.conns) >= self.ri.max_connections:
                self.refused += 1
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = _Conn(sock, host)
            self.conns[sock.fileno()] = c
            self._sel.register(sock, selectors.EVENT_READ, c)

    def _drop(self, c: _Conn) -> None:
        fd = c.sock.fileno()
        if fd in self.conns:
            del self.conns[fd]
            with contextlib.suppress(Exception):
                self._sel.unregister(c.sock)
        with contextlib.suppress(OSError):
            c.sock.close()

    def _read(self, c: _Conn) -> None:
        try:
            data = c.sock.recv(MAX_BUFFER // 2)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(c)
            return
        buf = c.inbuf + data
        if len(buf) > MAX_BUFFER:
            self._drop(c)
            return
        out, used, close = self.answer(buf)
        c.inbuf = buf[used:]
        if out:
            c.outbuf += out
            self._flush(c)
        if close or len(c.outbuf) > MAX_UNSENT:
            self._drop(c)

    def _flush(self, c: _Conn) -> None:
        try:
            n = c.sock.send(c.outbuf) if c.outbuf else 0
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._drop(c)
            return
        c.outbuf = c.outbuf[n:]
        with contextlib.suppress(Exception):
            self._sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.outbuf
                                                             else 0), c)

    # -- the protocol ----------------------------------------------------------------------
    def answer(self, data: bytes) -> tuple[bytes, int, bool]:
        """(answers, bytes used, close) for the complete frames at the start of ``data``."""
        img = self.ri.image
        out: list[bytes] = []
        used, end = 0, len(data)
        while end - used >= mbap.MBAP.size:
            if end - used >= mbap.READ_REQ.size:
                tid, pid, length, unit, fc, addr, count = mbap.READ_REQ.unpack_from(data, used)
                if pid == 0 and length == 6 and fc in (3, 4):
                    used += mbap.READ_REQ.size
                    reply, _exc = mbap.read_answer(img, self.ri.view(unit), tid, unit, fc,
                                                   addr, count)
                    self.reads += 1
                    out.append(reply)
                    continue
            tid, pid, length = mbap.MBAP.unpack_from(data, used)
            if length > mbap.MAX_MBAP_LENGTH:  # nothing says where a next frame starts
                return b"".join(out), end, True
            n = mbap.MBAP.size + length
            if end - used < n:
                break
            if pid == 0 and length >= 2:
                unit, fc = data[used + 6], data[used + 7]
                if fc in (3, 4):
                    code = mbap.ILLEGAL_VALUE  # a read the fast path could not take
                elif fc in BUSY_FCS:
                    self.busy += 1
                    code = mbap.DEVICE_BUSY if self.ri.view(unit) is not None else \
                        mbap.GATEWAY_NO_RESPONSE
                else:
                    code = mbap.ILLEGAL_FUNCTION
                out.append(mbap.exception_frame(tid, unit, fc, code))
            used += n  # another protocol id, or no function code: dropped
        return b"".join(out), used, False


def _state_dir(data: Mapping[str, Any], base_dir: Path) -> Path:
    paths = data.get("paths")
    raw = paths.get("state_dir") if isinstance(paths, Mapping) else None
    p = Path(raw if isinstance(raw, str) and raw else DEFAULT_STATE_DIR).expanduser()
    return p if p.is_absolute() else base_dir / p


def start(data: Mapping[str, Any], base_dir: Path, config_hash: str) -> EarlyServer | None:
    """Serve the site's restart image now, or None (logged) when there is none to trust."""
    if not isinstance(data.get("modbus_server"), Mapping):
        return None
    path = ri.path_in(_state_dir(data, base_dir))
    try:
        image = ri.read(path)
    except FileNotFoundError:
        log.info("early server: no restart image %s yet; serving once the runtime is built",
                 path)
        return None
    except (OSError, ri.BadImage) as exc:
        log.warning("early server: restart image %s unusable (%s); serving once the runtime "
                    "is built", path, exc)
        return None
    why = ""
    if image.config_hash != config_hash:
        why = "the site file changed since it was written"
    elif not image.listen:
        why = "no plain Modbus/TCP port with a fixed number to serve it on"
    else:
        newest = ri.newest_generation(image.retained)
        if newest != image.generation:
            why = (f"it shows retained generation {image.generation}, the newest valid one "
                   f"is {newest}")
    if why:
        log.info("early server: restart image %s not served: %s", path, why)
        return None
    socks: list[socket.socket] = []
    for host, port in image.listen:
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            socks.append(socket.create_server((host, port), family=family, backlog=128,
                                              dualstack_ipv6=host in ("::", "")))
        except OSError as exc:
            for s in socks:
                s.close()
            log.warning("early server: cannot listen on %s:%d (%s); the runtime's server "
                        "will try itself", host, port, exc.strerror or exc)
            return None
    srv = EarlyServer(image, socks)
    srv.start()
    log.info("early server: serving the restart image (retained generation %d, saved %.0f s "
             "ago, %d registers) on %s until the runtime is up", image.generation,
             max(0.0, time.time() - image.saved_utc), len(image.image) // 2,
             ", ".join(f"{h}:{p}" for h, p in image.listen))
    return srv


def receive(fd: int, adopt: Callable[[socket.socket, bytes], None] | None,
            wait_s: float = HANDOVER_WAIT_S) -> int:
    """The I/O process's side of the handover channel ``fd``: say READY (our server accepts
    on the inherited sockets), then adopt each connection until END (bounded by ``wait_s``).
    ``adopt`` None (no server here after all): the connections are closed."""
    chan = socket.socket(fileno=fd)
    n = 0
    try:
        chan.send(READY)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            chan.settimeout(left)
            msg, fds, _flags, _addr = socket.recv_fds(chan, MAX_BUFFER + 16, 4)
            if not msg or msg[:1] == END:
                break
            for k, cfd in enumerate(fds):
                sock = socket.socket(fileno=cfd)
                if adopt is None or k:
                    sock.close()
                    continue
                adopt(sock, msg[1:])
                n += 1
    except OSError as exc:
        log.warning("early server handover: %s", exc)
    finally:
        with contextlib.suppress(OSError):
            chan.close()
    return n


def end_with_parent() -> None:
    """SIGTERM this process when the process that started it ends (Linux
    ``PR_SET_PDEATHSIG``; elsewhere nothing), and now if it has ended already."""
    import signal

    parent = os.getppid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent or parent == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def parse_listen(spec: str) -> tuple[str, int, int]:
    """``HOST:PORT:FD`` (HOST may hold colons: IPv6) -> (host, port, fd)."""
    rest, _sep, fd = spec.rpartition(":")
    host, _sep, port = rest.rpartition(":")
    return host, int(port), int(fd)


def close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
