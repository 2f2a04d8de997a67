"""Misbehaving servers on 127.0.0.1 for dvc_pull's hostile-remote tests.

- ``GcsMediaServer``: enough of the GCS JSON API to serve objects of a local DVC
  remote directory (media GETs), with chosen objects cut off mid-stream.
- ``FrozenServer``: accepts TCP connections and never answers.
- ``TokenRefusingServer``: an OAuth token endpoint that refuses every grant.
- ``refused_port``: a port nothing listens on.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit


def refused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server:
    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []
        self.httpd.owner = self  # type: ignore[attr-defined]

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class GcsMediaServer(_Server):
    """Serves ``root`` (a local DVC remote directory) as ``gs://<bucket>/<prefix>``.

    ``truncated`` maps an object name (``<prefix>/files/md5/xx/yyyy``) to
    ``(declared, sent)``: the response announces ``declared`` bytes of zeros,
    sends ``sent`` of them and closes the connection. ``busy_once`` maps an object name to a
    size: its first media GET gets a 503 with a body of that size on a connection kept open.
    """

    def __init__(
        self,
        root: Path,
        bucket: str,
        prefix: str,
        truncated: dict[str, tuple[int, int]] | None = None,
        busy_once: dict[str, int] | None = None,
    ):
        self.root, self.bucket, self.prefix = Path(root), bucket, prefix.strip("/")
        self.truncated = dict(truncated or {})
        self.busy_once = dict(busy_once or {})
        super().__init__(_GcsHandler)

    def object_name(self, path: str) -> str | None:
        """The object name of a JSON API request path, or None for other requests."""
        for lead in (f"/download/storage/v1/b/{self.bucket}/o/", f"/storage/v1/b/{self.bucket}/o/"):
            if path.startswith(lead):
                return unquote(path[len(lead) :])
        return None

    def local_file(self, name: str) -> Path | None:
        if not name.startswith(self.prefix + "/"):
            return None
        relative = name[len(self.prefix) + 1 :]
        if ".." in relative.split("/"):
            return None
        candidate = self.root / relative
        return candidate if candidate.is_file() else None


class _GcsHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        server: GcsMediaServer = self.server.owner  # type: ignore[attr-defined]
        server.requests.append(self.path)
        parts = urlsplit(self.path)
        name = server.object_name(parts.path)
        if name is None:
            self._send(404, json.dumps({"error": {"code": 404, "message": "Not Found"}}).encode())
            return
        media = "alt=media" in parts.query or parts.path.startswith("/download/")
        if media and name in server.busy_once:
            size = server.busy_once.pop(name)
            self._send(503, (b'{"error": {"code": 503, "message": "busy"}}' + b" " * size)[:size] or b"{}")
            return
        if name in server.truncated:
            declared, sent = server.truncated[name]
            if not media:
                self._send(200, json.dumps({"name": name, "bucket": server.bucket, "size": str(declared)}).encode())
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            chunk = b"\0" * 65536
            left = sent
            try:
                while left > 0:
                    self.wfile.write(chunk[: min(left, len(chunk))])
                    left -= min(left, len(chunk))
                self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        local = server.local_file(name)
        if local is None:
            self._send(404, json.dumps({"error": {"code": 404, "message": f"No such object: {name}"}}).encode())
            return
        data = local.read_bytes()
        if media:
            self._send(200, data, "application/octet-stream")
        else:
            self._send(200, json.dumps({"name": name, "bucket": server.bucket, "size": str(len(data))}).encode())


class FrozenServer:
    """A listening socket that accepts connections and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []
        self._stop = threading.Event()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(connection)

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for connection in self.held:
            connection.close()
        self.sock.close()


class TokenRefusingServer(_Server):
    """An OAuth token endpoint answering every grant with 400 invalid_grant."""

    def __init__(self):
        super().__init__(_RefusingTokenHandler)
        self.token_uri = f"{self.url}/token"


class _RefusingTokenHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.owner.requests.append(self.path)  # type: ignore[attr-defined]
        body = json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
