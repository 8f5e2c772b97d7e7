"""A fault-injecting reverse proxy for S3 tests, on 127.0.0.1, standard library only.

Every request (any method, its body and headers unchanged; ``Host`` stays as the client sent it, because
SigV4 signs it) is forwarded to the upstream endpoint, except that a seeded RNG turns some into faults:
``slowdown``, an S3 ``503 SlowDown`` answered by the proxy (the request never reaches upstream); ``reset``,
the client's connection reset (a TCP RST) instead of an answer, half the time *after* upstream has done
the request (its answer is lost, so the retry meets the first attempt's effect); ``stall``, no answer for
``stall_seconds`` (longer than the client's read timeout), then a reset.

Faults are drawn from one ``random.Random(seed)`` in arrival order (``force`` injects chosen ones);
``counts`` has the requests, those forwarded, upstream's answers by status and the faults by kind.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOWDOWN_BODY = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
# Connection-level headers: they describe one hop, are never signed, and are set again for the next hop.
HOP_BY_HOP = set(
    "connection keep-alive proxy-connection te trailer upgrade transfer-encoding content-length expect".split()
)
KINDS = ("slowdown", "reset", "stall")


class FaultProxy:
    def __init__(self, upstream: str, *, seed: int = 0, stall_seconds: float = 3.0, **rates: float):
        """``rates``: ``slowdown=``, ``reset=``, ``stall=``, each a probability per request (default 0)."""
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.stall_seconds = stall_seconds
        assert set(rates) <= set(KINDS), rates
        self.rates = {**dict.fromkeys(KINDS, 0.0), **rates}
        self.counts: Counter[str] = Counter()  # "requests", "forwarded", "upstream <status>", each fault kind
        self.faults: list[tuple[str, str, str]] = []  # (kind, method, path) of every injected fault
        self._rng, self._lock, self._stopping = random.Random(seed), threading.Lock(), threading.Event()
        self._forced: list[list] = []  # [kind, after, path part, times left], from force()
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._thread.start()

    def set_rates(self, **rates: float) -> None:
        """Change fault rates, as in the constructor."""
        assert set(rates) <= set(KINDS), rates
        with self._lock:
            self.rates.update(rates)

    def faults_off(self) -> None:
        self.set_rates(**dict.fromkeys(KINDS, 0.0))

    def force(self, kind: str, *, path_contains: str = "", after: bool = False, times: int = 1) -> None:
        """Inject ``kind`` into the next ``times`` requests whose path contains ``path_contains``, whatever
        the rates (``after``: a reset once upstream has done the request)."""
        assert kind in KINDS, kind
        with self._lock:
            self._forced.append([kind, after, path_contains, times])

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled requests
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _draw(self, method: str, path: str) -> tuple[str | None, bool]:
        """The fault for the next request (or None), and for resets whether to forward it first."""
        with self._lock:
            self.counts["requests"] += 1
            forced = next((f for f in self._forced if f[3] > 0 and f[2] in path), None)
            if forced:
                forced[3] -= 1
                kind, after = forced[0], forced[1]
            else:  # [0, slowdown) -> slowdown, [slowdown, slowdown + reset) -> reset, and so on
                x, kind, after = self._rng.random(), None, False
                for k in KINDS:
                    x -= self.rates[k]
                    if x < 0:
                        kind, after = k, self._rng.random() < 0.5
                        break
            if kind:
                self.counts[kind] += 1
                self.faults.append((kind, method, path))
            return kind, after

    def _forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            # skip_host: the client's Host header is forwarded as it is (it is part of the signature).
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            if body or method in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()  # small test objects: buffered whole
            with self._lock:
                self.counts["forwarded"] += 1
                self.counts[f"upstream {resp.status}"] += 1
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that go away mid-answer (their own timeouts) are expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like S3: resets also hit reused connections
    proxy: FaultProxy
    log_message = lambda self, *args: None  # noqa: E731

    def _reset(self) -> None:
        """Abort the connection: with SO_LINGER 0, close() sends a TCP RST instead of a FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _send(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        head = self.command == "HEAD"  # a HEAD answer keeps upstream's Content-Length, and has no body
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP or (head and name.lower() == "content-length"):
                self.send_header(name, value)
        if not head:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(b"" if head else data)

    def _handle(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):  # botocore sends bytes with a length
            self.close_connection = True  # the body stays unread
            return self._send(501, [], b"FaultProxy does not take chunked request bodies")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind, after = self.proxy._draw(self.command, self.path)
        if kind == "slowdown":
            return self._send(503, [("Content-Type", "application/xml")], SLOWDOWN_BODY)
        if kind == "stall":
            self.proxy._stopping.wait(self.proxy.stall_seconds)
            return self._reset()
        if kind == "reset" and not after:
            return self._reset()
        status, headers, data = self.proxy._forward(self.command, self.path, self.headers, body)
        if kind == "reset":
            return self._reset()  # upstream did the request; its answer is lost
        self._send(status, headers, data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle  # noqa: N815
