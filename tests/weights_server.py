"""A local HTTP server for the weights tests, also speaking the Hugging Face Hub's download protocol, and the
fixtures and manifest helpers around it (tests/common/test_weights.py, tests/tools/test_weights_cli.py).

Test modules bind the fixtures ``server`` and ``root`` to those names, so that pytest finds them.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest

from predictors.common import weights

TARGETS = [
    "nst",
    "sd_style/sd15",
    "sd_style/sdxl",
    "musepose",
]  # the real manifest's, which tests' entries name
PAYLOAD = bytes(range(256)) * 1200  # 307,200 bytes: several chunks, so a transfer can be cut mid-way


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileServer:
    """A threaded HTTP server with Range support and switches to cut, slow down and count transfers.

    Paths of the form ``<repo_id>/resolve/<revision>/<filename>`` also answer HEAD as the Hugging Face Hub
    does, with the headers huggingface_hub reads (huggingface_hub/file_download.py, ``get_hf_file_metadata``;
    names in huggingface_hub/constants.py): the commit the revision points at (``X-Repo-Commit``) and the
    file's etag and size; with ``hub_redirect`` a file answers as an LFS file does, by a redirect to a
    content-addressed URL (``Location``) with ``X-Linked-Etag`` and ``X-Linked-Size``.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.heads: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self.hub_redirect = False
        self.cut_after: dict[str, int] = {}  # path -> bytes sent before the next transfer is cut
        self.ignore_range = False
        self.chunk_delay_s = 0.0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def gets(self, path: str) -> list[str | None]:
        return [header for name, header in self.requests if name == path]

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path.lstrip("/")
                server.requests.append((path, self.headers.get("Range")))
                if path not in server.files:
                    self.send_error(404)
                    return
                body = server.files[path]
                start = 0
                if self.headers.get("Range") and not server.ignore_range:
                    start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                send = body[start:]
                cut = server.cut_after.pop(path, None)
                for offset in range(0, len(send) if cut is None else cut, 16384):
                    self.wfile.write(send[offset : min(offset + 16384, cut or len(send))])
                    time.sleep(server.chunk_delay_s)
                self.close_connection = True

            def do_HEAD(self):
                path = urllib.parse.urlsplit(self.path).path.lstrip("/")
                server.heads.append((path, self.headers.get("Authorization")))
                if "/resolve/" not in path or path not in server.files:
                    self.send_error(404)
                    return
                body = server.files[path]
                revision = path.split("/resolve/", 1)[1].split("/", 1)[0]
                etag = sha256(body)
                self.send_response(302 if server.hub_redirect else 200)
                self.send_header("X-Repo-Commit", hub_commit(revision))
                if server.hub_redirect:
                    server.files[f"cdn/{etag}"] = body
                    # Another host, as the hub's CDN is: huggingface_hub follows redirects within the hub.
                    self.send_header("Location", server.url(f"cdn/{etag}").replace("127.0.0.1", "localhost"))
                    self.send_header("X-Linked-Etag", f'"{etag}"')
                    self.send_header("X-Linked-Size", str(len(body)))
                    self.send_header("Content-Length", "0")
                else:
                    self.send_header("ETag", f'"{etag}"')
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()

            def log_message(self, *args):
                pass

        return Handler


def hub_commit(revision: str) -> str:
    """The commit a revision points at on the test hub: a commit is itself, a branch some fixed commit."""
    return revision if len(revision) == 40 else hashlib.sha1(revision.encode()).hexdigest()


@pytest.fixture
def server():
    files = FileServer()
    files.thread.start()
    yield files
    files.httpd.shutdown()
    files.httpd.server_close()


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty weights root; downloads retry without waiting; loopback never goes through a proxy."""
    path = tmp_path / "weights"
    monkeypatch.setenv("WEIGHTS_DIR", str(path))
    monkeypatch.setenv("TRIPTYCH_WEIGHTS_BACKOFF", "0")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv(weights.MIRROR_ENV, raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # The suite sets HF_HUB_OFFLINE=1 (tests/conftest.py) and huggingface_hub reads it once, at import.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return path


def entry(url: str | None, dest: str, data: bytes | None = None, needed_by=("nst",), **extra) -> dict:
    """A file entry; without ``url`` give ``hf`` in ``extra`` (see ``hf_file``)."""
    return {
        "dest": dest,
        **({"url": url} if url is not None else {}),
        "sha256": sha256(data) if data is not None else None,
        "size": len(data) if data is not None else None,
        "license": "MIT",
        "needed_by": list(needed_by),
        "source": "test",
        **extra,
    }


def hf_file(repo_id: str, filename: str, revision: str = "main") -> dict:
    return {"repo_id": repo_id, "filename": filename, "revision": revision}


def use_manifest(tmp_path, monkeypatch, files: dict, conversions: dict | None = None) -> Path:
    path = tmp_path / "weights_manifest.json"
    path.write_text(
        json.dumps(
            {"schema_version": 1, "targets": TARGETS, "files": files, "conversions": conversions or {}}
        )
    )
    monkeypatch.setenv("TRIPTYCH_MANIFEST", str(path))
    return path


def closed_port_url(path: str) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


def leftovers(root: Path) -> list[str]:
    """Partial downloads and lock files: none may remain once ``ensure`` returns or raises."""
    names = (path.name for path in root.rglob("*"))
    return sorted(name for name in names if name.endswith((".part", ".lock")) or ".part." in name)


def use_hub(server, monkeypatch, tmp_path, files: dict[str, bytes], revision: str = "main") -> dict:
    """Serve ``files`` from the test hub as repository org/models at ``revision``; one entry per file."""
    monkeypatch.setenv("HF_ENDPOINT", server.url("hub"))
    entries = {}
    for filename, data in files.items():
        server.files[f"hub/org/models/resolve/{revision}/{filename}"] = data
        hf = hf_file("org/models", filename, revision)
        entries[filename] = {**entry(None, f"x/{filename}", data), "hf": hf}
    use_manifest(tmp_path, monkeypatch, entries)
    return entries
