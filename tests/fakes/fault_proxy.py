"""A loopback HTTP proxy that fails requests and cuts connections, for fault tests.

One request per connection (it forces ``Connection: close`` upstream), so each
request is judged on its own, with a seeded RNG:

* ``fail_ratio``: answer 503 without forwarding;
* ``cut_ratio``: for requests with a body, forward part of it, then reset both
  connections (a connection cut mid-upload);
* ``cut_after``: cut every request with a body after this many requests
  (an outage that only a rerun survives).
"""

from __future__ import annotations

import random
import socket
import socketserver
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class ProxyStats:
    forwarded: int = 0
    failed: int = 0
    cut: int = 0
    methods: list[str] = field(default_factory=list)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            return b"", b""
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close with RST, as a dying middlebox would.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    def __init__(
        self,
        upstream_port: int,
        *,
        fail_ratio: float = 0.0,
        cut_ratio: float = 0.0,
        cut_after: int | None = None,
        seed: int = 1234,
    ) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.fail_ratio = fail_ratio
        self.cut_ratio = cut_ratio
        self.cut_after = cut_after
        self.rng = random.Random(seed)
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, has_body: bool) -> str:
        with self._lock:
            body_requests = sum(1 for m in self.stats.methods if m in ("PATCH", "PUT", "POST"))
            if has_body and self.cut_after is not None and body_requests > self.cut_after:
                return "cut"
            roll = self.rng.random()
            if roll < self.fail_ratio:
                return "fail"
            if has_body and roll < self.fail_ratio + self.cut_ratio:
                return "cut"
            return "forward"

    def _handle(self, client: socket.socket) -> None:
        head, rest = _read_head(client)
        if not head:
            client.close()
            return
        lines = head.split(b"\r\n")
        method = lines[0].split(b" ", 1)[0].decode()
        length = 0
        kept = [lines[0]]
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
            if name.strip().lower() in (b"connection", b"keep-alive"):
                continue
            kept.append(line)
        kept.append(b"Connection: close")
        with self._lock:
            self.stats.methods.append(method)
        decision = self._decide(length > 0)
        if decision == "fail":
            with self._lock:
                self.stats.failed += 1
            client.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                b"Retry-After: 0\r\nConnection: close\r\n\r\n"
            )
            client.close()
            return
        upstream = socket.create_connection(self.upstream, timeout=30)
        try:
            upstream.sendall(b"\r\n".join(kept) + b"\r\n\r\n")
            body_sent = 0
            limit = length // 2 if decision == "cut" else length
            pending = rest
            while body_sent < limit:
                if not pending:
                    pending = client.recv(min(65536, limit - body_sent))
                    if not pending:
                        break
                take = pending[: limit - body_sent]
                upstream.sendall(take)
                body_sent += len(take)
                pending = pending[len(take) :]
            if decision == "cut":
                with self._lock:
                    self.stats.cut += 1
                _reset(upstream)
                _reset(client)
                return
            with self._lock:
                self.stats.forwarded += 1
            while True:
                piece = upstream.recv(65536)
                if not piece:
                    break
                client.sendall(piece)
        except OSError:
            pass
        finally:
            upstream.close()
            client.close()
