"""A tiny HTTP file server on 127.0.0.1 for download tests: serves bytes from memory, honours
``Range: bytes=N-`` with 206 answers, can drop a connection half-way, and records every request.

Test-only. Use as a context manager; the server thread is stopped and joined on exit.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """``files`` maps a URL path (``/norb/x.mat.gz``) to its bytes.

    ``drop_after[path] = n``: the next full (non-Range) request of ``path`` announces the whole
    length but sends only ``n`` bytes and closes the connection (once per entry).
    ``requests`` lists ``(path, Range header or None, status)`` of every request answered.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.drop_after: dict[str, int] = {}
        self.requests: list[tuple[str, str | None, int]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server._answer(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def paths_requested(self, path: str) -> list[tuple[str | None, int]]:
        return [(rng, status) for p, rng, status in self.requests if p == path]

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        rng = handler.headers.get("Range")
        data = self.files.get(path)
        if data is None:
            self._record(path, rng, 404)
            handler.send_error(404)
            return
        start = 0
        if rng:
            start = int(rng.removeprefix("bytes=").split("-", 1)[0])
            if start >= len(data):
                self._record(path, rng, 416)
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
        body = data[start:]
        with self._lock:
            drop = None if rng else self.drop_after.pop(path, None)
        status = 206 if rng else 200
        self._record(path, rng, status)
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Accept-Ranges", "bytes")
        if rng:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if drop is not None:
            handler.wfile.write(body[:drop])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(body)

    def _record(self, path: str, rng: str | None, status: int) -> None:
        with self._lock:
            self.requests.append((path, rng, status))

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
