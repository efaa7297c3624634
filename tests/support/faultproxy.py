"""A misbehaving network between boto3 and a real S3 server, for fault tests.

``FaultProxy`` listens on 127.0.0.1 (free port) and forwards HTTP/1.1 to the
upstream (SeaweedFS), request by request: it parses just enough HTTP
(request line, headers, ``Content-Length`` or chunked bodies; responses
likewise, with HEAD/1xx/204/304 bodiless) to know where each request and
response ends. Faults are queued with :meth:`FaultProxy.add` and consumed in
order by the requests (or connections) they match:

=================  ==========================================================
``reset``          request: RST the client after its headers, before the body
                   reaches the server (connection dies mid-upload; the server
                   never sees the request). connection: RST right after accept.
``reset_after``    forward the request, let the server act on it, then RST
                   the client instead of answering (a lost response).
``stall``          forward the request, then hold the answer for ``stall_s``
                   (longer than the client's read timeout) and close.
                   connection: accept and never answer for ``stall_s``.
``truncate``       forward, then send only the first half of the response
                   bytes and close (a cut-off answer or download).
``slowdown``       answer ``503 SlowDown`` (canned S3 XML error) without
                   forwarding.
=================  ==========================================================

Everything is bounded: sockets have timeouts, stalls wake up on ``stop()``,
and the proxy stops by itself after ``lifetime_s``. ``log`` records every
request (method, target, fault applied) so tests can prove a fault fired.
``Expect: 100-continue`` is answered by the proxy itself (the header is not
signed) so bodies flow without the client's one-second wait.
"""

from __future__ import annotations

import random
import re
import socket
import struct
import threading
from dataclasses import dataclass, field

HOST = "127.0.0.1"
KINDS = ("reset", "reset_after", "stall", "truncate", "slowdown")

SLOWDOWN_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    "<Resource>{resource}</Resource><RequestId>faultproxy</RequestId></Error>"
)


@dataclass
class Fault:
    kind: str
    count: int = 1  # how many matching requests (or connections) it applies to
    method: str | None = None  # e.g. "PUT"; None: any
    match: str | None = None  # regex searched in the request target (path?query)
    min_body: int = 0  # only requests with at least this many body bytes
    stall_s: float = 5.0
    per: str = "request"  # or "connection"
    chance: float = 1.0  # apply to a matching request with this probability (seeded RNG)
    fired: int = 0

    def wants(self, method: str, target: str, body_len: int, rng: random.Random) -> bool:
        return (self.fired < self.count
                and (self.method is None or self.method == method)
                and (self.match is None or re.search(self.match, target) is not None)
                and body_len >= self.min_body
                and (self.chance >= 1.0 or rng.random() < self.chance))


@dataclass
class Request:
    method: str
    target: str
    head: bytes  # request line + headers as forwarded (Expect removed)
    headers: dict[str, str]
    body: bytes = b""
    fault: str | None = None
    status: int | None = field(default=None)


class _Closed(Exception):
    pass


def _read_head(rf) -> list[bytes] | None:
    lines = []
    while True:
        line = rf.readline(65537)
        if not line:
            if lines:
                raise _Closed("eof in headers")
            return None
        if line in (b"\r\n", b"\n"):
            if not lines:
                continue  # tolerate stray CRLF between requests
            return lines
        lines.append(line)
        if len(lines) > 200:
            raise _Closed("too many header lines")


def _headers(lines: list[bytes]) -> dict[str, str]:
    out = {}
    for ln in lines[1:]:
        k, _, v = ln.decode("latin-1").partition(":")
        out[k.strip().lower()] = v.strip()
    return out


def _read_body(rf, headers: dict[str, str], *, until_eof: bool = False) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raw = bytearray()
        while True:
            line = rf.readline(65537)
            if not line:
                raise _Closed("eof in chunk size")
            raw += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers up to the empty line
                    t = rf.readline(65537)
                    if not t:
                        raise _Closed("eof in trailers")
                    raw += t
                    if t in (b"\r\n", b"\n"):
                        return bytes(raw)
            data = rf.read(size + 2)
            if len(data) != size + 2:
                raise _Closed("eof in chunk")
            raw += data
    if "content-length" in headers:
        n = int(headers["content-length"])
        data = rf.read(n)
        if len(data) != n:
            raise _Closed("eof in body")
        return data
    return rf.read() if until_eof else b""


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = HOST, *, lifetime_s: float = 300.0,
                 io_timeout: float = 60.0, seed: int = 0):
        self.rng = random.Random(seed)
        self.upstream = (upstream_host, upstream_port)
        self.lifetime_s, self.io_timeout = lifetime_s, io_timeout
        self.faults: list[Fault] = []
        self.log: list[Request] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock: socket.socket | None = None
        self.port = 0
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._timer: threading.Timer | None = None

    # -- control

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def add(self, kind: str, count: int = 1, **kw) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        f = Fault(kind, count, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()

    def fired(self, kind: str | None = None) -> int:
        with self.lock:
            return sum(f.fired for f in self.faults if kind is None or f.kind == kind)

    def requests(self, fault: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.log if fault is None or r.fault == fault]

    def _pick(self, per: str, method: str = "", target: str = "", body_len: int = 0) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.per == per and f.wants(method, target, body_len, self.rng):
                    f.fired += 1
                    return f
        return None

    # -- life

    def start(self) -> FaultProxy:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, 0))
        s.listen(64)
        s.settimeout(0.2)
        self.sock, self.port = s, s.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        t.start()
        self._threads.append(t)
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._timer:
            self._timer.cancel()
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            self._close(c)
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self.sock
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            c.settimeout(self.io_timeout)
            with self.lock:
                self._conns.add(c)
                self._threads = [t for t in self._threads if t.is_alive()]
            t = threading.Thread(target=self._serve, args=(c,), name="faultproxy-conn", daemon=True)
            self._threads.append(t)
            t.start()

    # -- one client connection

    @staticmethod
    def _rst(c: socket.socket) -> None:
        try:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    def _close(self, c: socket.socket) -> None:
        with self.lock:
            self._conns.discard(c)
        try:
            c.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it
        except OSError:
            pass
        try:
            c.close()
        except OSError:
            pass

    def _serve(self, c: socket.socket) -> None:
        try:
            cf = self._pick("connection")
            if cf is not None:
                with self.lock:
                    self.log.append(Request("-", "-", b"", {}, fault=f"connection-{cf.kind}"))
                if cf.kind == "stall":
                    self.stopping.wait(cf.stall_s)
                else:
                    self._rst(c)
                return
            rf = c.makefile("rb")
            while not self.stopping.is_set():
                if not self._one(c, rf):
                    return
        except (OSError, _Closed, ValueError):
            pass
        finally:
            self._close(c)

    def _one(self, c: socket.socket, rf) -> bool:
        """Serve one request; False when the client connection is finished."""
        lines = _read_head(rf)
        if lines is None:
            return False
        method, target = lines[0].decode("latin-1").split()[:2]
        headers = _headers(lines)
        expect = headers.get("expect", "").lower() == "100-continue"
        kept = [lines[0]] + [ln for ln in lines[1:] if not ln.lower().startswith(b"expect:")]
        req = Request(method, target, b"".join(kept) + b"\r\n", headers)
        body_len = int(headers.get("content-length", "0") or 0)
        fault = self._pick("request", method, target, body_len)
        req.fault = fault.kind if fault else None
        with self.lock:
            self.log.append(req)
        if fault and fault.kind == "reset":
            self._rst(c)
            return False
        if expect:
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        req.body = _read_body(rf, headers)
        if fault and fault.kind == "slowdown":
            body = SLOWDOWN_XML.format(resource=target.split("?")[0]).encode()
            req.status = 503
            c.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                      + f"Content-Length: {len(body)}\r\nRetry-After: 1\r\n\r\n".encode()
                      + (b"" if method == "HEAD" else body))
            return True
        resp, status, keep = self._forward(req)
        req.status = status
        if fault and fault.kind == "reset_after":
            self._rst(c)
            return False
        if fault and fault.kind == "stall":
            self.stopping.wait(fault.stall_s)
            return False
        if fault and fault.kind == "truncate":
            c.sendall(resp[: max(1, len(resp) // 2)])
            return False
        c.sendall(resp)
        return keep and "close" not in req.headers.get("connection", "").lower()

    def _forward(self, req: Request) -> tuple[bytes, int, bool]:
        u = socket.create_connection(self.upstream, timeout=self.io_timeout)
        try:
            u.sendall(req.head + req.body)
            uf = u.makefile("rb")
            while True:
                lines = _read_head(uf)
                if lines is None:
                    raise _Closed("upstream closed without answering")
                status = int(lines[0].split()[1])
                if not 100 <= status < 200:
                    break
            headers = _headers(lines)
            bodiless = req.method == "HEAD" or status in (204, 304)
            body = b"" if bodiless else _read_body(uf, headers, until_eof=True)
            keep = "close" not in headers.get("connection", "").lower() and (
                bodiless or "content-length" in headers or "chunked" in headers.get("transfer-encoding", ""))
            return b"".join(lines) + b"\r\n" + body, status, keep
        finally:
            u.close()
