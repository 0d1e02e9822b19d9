"""A small fault-injecting HTTP proxy for tests: put it between an S3 client and moto's server on 127.0.0.1.

Each `Fault` matches requests by method and path (a regular expression) and answers a bounded number of them
(`times`, or every one with `times=None`) with an error status and an S3-style XML body, or drops the connection
without answering. Everything else is forwarded unchanged. `log` records what happened to every request.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
_CODES = {
    403: ("AccessDenied", "Access Denied"),
    500: ("InternalError", "We encountered an internal error."),
    503: ("ServiceUnavailable", "Please reduce your request rate."),
}


@dataclass
class Fault:
    """Answer matching requests with `status` (or drop them, `drop=True`) `times` times (None: always)."""

    status: int = 503
    method: str | None = None
    path: str = ".*"
    times: int | None = 1
    drop: bool = False
    injected: int = 0

    def take(self, method: str, path: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if re.search(self.path, path) is None:
            return False
        if self.times is not None and self.injected >= self.times:
            return False
        self.injected += 1
        return True


@dataclass
class FaultProxy:
    upstream: str  # "host:port" of the real server
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, int | str]] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                fault = proxy._match(self.command, self.path)
                if fault is not None and fault.drop:
                    proxy._record(self.command, self.path, "dropped")
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None:
                    code, message = _CODES.get(fault.status, ("InternalError", "injected"))
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><Resource>{self.path}</Resource>"
                        "<RequestId>fault-proxy</RequestId></Error>"
                    ).encode()
                    proxy._record(self.command, self.path, fault.status)
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    proxy._record(self.command, self.path, response.status)
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP_BY_HOP and (
                            key.lower() != "content-length" or self.command == "HEAD"
                        ):
                            self.send_header(key, value)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _match(self, method: str, path: str) -> Fault | None:
        with self._lock:
            return next((fault for fault in self.faults if fault.take(method, path)), None)

    def _record(self, method: str, path: str, outcome: int | str) -> None:
        with self._lock:
            self.log.append((method, path, outcome))

    def injected(self) -> int:
        return sum(fault.injected for fault in self.faults)

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
