"""An HTTP server on 127.0.0.1 that serves input files the way hostile or broken hosts do.

    with HostileServer({"photo.png": png_bytes}) as server:
        server.url("photo.png")          # the file, with its length
        server.url("drip/photo.png")     # the file one byte every DRIP_S seconds
        server.url("endless")            # a chunked body that never ends
        server.url("status/404")         # an HTTP error
        server.url("redirect-loop")      # redirects to itself
        server.url("huge-length")        # declares 10 GB, sends a little, then hangs
        server.url("stall")              # headers, then nothing

Every connection handler stops when the server is stopped, so no test leaves a thread behind.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time

DRIP_S = 0.2


class HostileServer:
    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = dict(files or {})
        self.stopping = threading.Event()
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.requests.append(self.path)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    owner._serve(self)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{path}"

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path = handler.path.lstrip("/")
        if path.startswith("status/"):
            self._head(handler, int(path.split("/")[1]), b"no such file\n")
            handler.wfile.write(b"no such file\n")
        elif path == "redirect-loop":
            handler.send_response(302)
            handler.send_header("Location", "/redirect-loop")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif path == "endless":
            handler.send_response(200)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            block = b"x" * 4096
            while not self.stopping.is_set():
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                handler.wfile.flush()
                time.sleep(0.001)
        elif path == "huge-length":
            self._head(handler, 200, None, length=10_000_000_000)
            handler.wfile.write(b"x" * 1000)
            handler.wfile.flush()
            self.stopping.wait()
        elif path == "stall":
            self._head(handler, 200, None, length=1000)
            self.stopping.wait()
        elif path.startswith("drip/") and path[5:] in self.files:
            body = self.files[path[5:]]
            self._head(handler, 200, body)
            for index in range(len(body)):
                if self.stopping.wait(DRIP_S):
                    return
                handler.wfile.write(body[index : index + 1])
                handler.wfile.flush()
        elif path in self.files:
            self._head(handler, 200, self.files[path])
            handler.wfile.write(self.files[path])
        else:
            self._head(handler, 404, b"")

    @staticmethod
    def _head(handler, status: int, body: bytes | None, length: int | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(length if length is not None else len(body or b"")))
        handler.end_headers()
