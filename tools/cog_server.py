"""Run a predictor behind the real Cog HTTP server on loopback, and talk to it as an API client would.

``CogServer`` writes the predictor's OpenAPI schema (``tools.cog_schema``) into ``.cog/openapi_schema.json``
of a private working directory, the place the server reads it from, then starts ``python -m cog.server.http``
there with ``COG_PREDICT_TYPE_STUB``, ``PORT`` and ``--host 127.0.0.1``, the interpreter's ``bin`` first on
``PATH`` and the repository root on ``PYTHONPATH`` (as ``/src`` is inside the image). Given ``source_dir`` (a
build context, see ``tools.cog_image``) it runs as the image does instead: from that folder, as the image's
``CMD`` runs from ``WORKDIR /src``, with nothing on ``PYTHONPATH``. ``WebhookReceiver`` collects the webhook
events of async predictions. ``tests/http/harness.py`` and ``tools/smoke.py`` both use this module.

    with CogServer("predictors/nst/predict.py", env=tiny_weights.environment(root)) as server:
        prediction = server.predict({"image": data_uri("a.jpg"), "style_image": data_uri("b.png")})
        images = output_bytes(prediction)
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import mimetypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests

from tools import cog_schema

REPO_ROOT = Path(__file__).resolve().parents[1]
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})
DEFAULT_EVENTS = ("start", "output", "logs", "completed")
# What the images set (cog.yaml ``environment``); a server started here behaves like the container.
IMAGE_ENVIRONMENT = {
    "TRIPTYCH_REJECT_LOCAL_PATHS": "1",
    "XDG_CACHE_HOME": "/tmp/triptych-cache",
}


class ServerError(RuntimeError):
    """The server died, failed its setup, or answered something a client cannot use; carries the log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_uri(path: str | Path, mime: str | None = None) -> str:
    """A file as a ``data:`` URI, the way to send a Path input inline."""
    path = Path(path)
    mime = mime or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def decode_output(value: str) -> bytes:
    """The bytes behind one output value: a ``data:`` URI, a ``file://`` URL or an http(s) URL."""
    scheme = urllib.parse.urlparse(value).scheme
    if scheme == "data":
        with urllib.request.urlopen(value) as response:
            return response.read()
    if scheme == "file":
        return Path(urllib.parse.unquote(urllib.parse.urlparse(value).path)).read_bytes()
    if scheme in ("http", "https"):
        response = requests.get(value, timeout=60)
        response.raise_for_status()
        return response.content
    raise ValueError(f"not a data URI or URL: {value[:80]!r}")


def output_bytes(prediction: dict[str, Any]) -> list[bytes]:
    """Every file of a prediction's output, in order: one for a Path, several for a list or iterator, the
    set fields of an object (a ``cog.BaseModel`` output) in field order."""
    output = prediction.get("output")
    if isinstance(output, dict):
        values = [value for value in output.values() if value is not None]
    else:
        values = output if isinstance(output, list) else [output]
    return [decode_output(value) for value in values]


class CogServer:
    """One ``python -m cog.server.http`` process for one predictor, on a free loopback port.

    ``predictor``: ``path/to/predict.py`` with an optional ``:ClassName`` (default ``Predictor``); relative to
    ``source_dir`` when that is given, as ``predict`` in a cog.yaml.
    ``env``: extra environment (for instance ``tools.tiny_weights.environment(root)``), applied over the
    current environment and ``IMAGE_ENVIRONMENT``.
    ``python``: the interpreter that runs the server (default: this one).
    ``source_dir``: the folder that stands for the image's ``/src``, where the server runs (module docstring).
    ``args``: more server options, as the serving kit passes them (``["--await-explicit-shutdown", "true"]``).
    ``conflicts`` counts the 409 answers retried.
    """

    def __init__(
        self,
        predictor: str | Path,
        env: dict[str, str] | None = None,
        *,
        python: str | Path | None = None,
        source_dir: str | Path | None = None,
        args: Iterable[str] = (),
        ready_timeout: float = 300.0,
        request_timeout: float = 600.0,
    ) -> None:
        self.python = Path(python or sys.executable)
        self.source_dir = None if source_dir is None else Path(source_dir).resolve()
        self.predictor_file, self.predictor_class = cog_schema.split_ref(
            predictor if self.source_dir is None else f"{self.source_dir}/{predictor}"
        )
        self.extra_env = dict(env or {})
        self.args = list(args)
        self.conflicts = 0
        self.ready_timeout = ready_timeout
        self.request_timeout = request_timeout
        self.workdir: Path | None = None
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self._log_handle = None
        self.session = requests.Session()

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log_text(self) -> str:
        if self.workdir is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    @property
    def cwd(self) -> Path:
        """Where the server runs and finds ``.cog/openapi_schema.json``: ``source_dir`` or its own folder."""
        return self.source_dir or self.workdir

    @property
    def predictor_ref(self) -> str:
        """``COG_PREDICT_TYPE_STUB``; relative to ``source_dir`` when given, as ``cog build`` sets it."""
        file = (
            self.predictor_file
            if self.source_dir is None
            else self.predictor_file.relative_to(self.source_dir)
        )
        return f"{file}:{self.predictor_class}"

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, **IMAGE_ENVIRONMENT, **self.extra_env}
        env["PATH"] = os.pathsep.join([str(self.python.parent), env.get("PATH", "")])
        if self.source_dir is None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p)
        else:
            # The image sets no PYTHONPATH: ``python -m`` puts the working directory first on sys.path.
            env.pop("PYTHONPATH", None)
        env["COG_PREDICT_TYPE_STUB"] = self.predictor_ref
        env["PORT"] = str(self.port)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self) -> CogServer:
        """Write the schema, start the server and wait until it is READY."""
        self.workdir = Path(tempfile.mkdtemp(prefix="cog-server-"))
        try:
            cog_schema.write(
                f"{self.predictor_file}:{self.predictor_class}", self.cwd / cog_schema.DEFAULT_OUTPUT
            )
            self.port = free_port()
            self._log_handle = self.log_path.open("wb")
            self.process = subprocess.Popen(
                [str(self.python), "-m", "cog.server.http", "--host", "127.0.0.1", *self.args],
                cwd=self.cwd,
                env=self._environment(),
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                # Its own process group, so stopping it also stops the worker it spawns.
                start_new_session=True,
            )
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and its worker, and remove the working directory."""
        if self.process is not None and self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.process is not None:
            # The worker may outlive a server that died on its own; the group id is the server's pid.
            self._signal_group(signal.SIGKILL)
        self.process = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        self.session.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def __enter__(self) -> CogServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def fail(self, message: str) -> ServerError:
        tail = "\n".join(self.log_text().splitlines()[-60:])
        return ServerError(f"{message}\n--- cog server log ({self.predictor_file.name}) ---\n{tail}")

    # -- health ----------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /health-check`` as JSON (``status``: STARTING, READY, BUSY, SETUP_FAILED, DEFUNCT...)."""
        return self.session.get(f"{self.url}/health-check", timeout=10).json()

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Poll the health-check until READY; raise with the server log if it dies or its setup fails."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | str = "no answer"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise self.fail(f"the Cog server exited (code {code}) before it was ready")
            try:
                last = self.health()
            except requests.RequestException as error:
                last = repr(error)
            else:
                status = last.get("status")
                if status == "READY":
                    return last
                if status in ("SETUP_FAILED", "DEFUNCT", "UNHEALTHY"):
                    # UNHEALTHY: the worker died, or the predictor's healthcheck() failed (and says why).
                    reason = last.get("user_healthcheck_error") or ""
                    setup_logs = (last.get("setup") or {}).get("logs", "")
                    raise self.fail(f"the Cog server reports {status} {reason}; setup logs:\n{setup_logs}")
            time.sleep(0.1)
        raise self.fail(f"the Cog server was not READY after {timeout:.0f} s (last health-check: {last})")

    # -- predictions -----------------------------------------------------------------------------------------

    def post_prediction(
        self,
        inputs: dict[str, Any],
        *,
        prediction_id: str | None = None,
        webhook: str | None = None,
        webhook_events_filter: Iterable[str] | None = None,
        respond_async: bool = False,
        busy_timeout: float = 120.0,
    ) -> requests.Response:
        """``POST /predictions`` and return the raw response (200, 202, 422...), retrying while it is 409.

        Cog answers 409 (busy) while a prediction runs, and to a share of back-to-back requests while the
        previous one is being finished; a client waits and tries again, with a growing delay (see
        docs/serving.md).
        """
        body: dict[str, Any] = {"input": inputs}
        if prediction_id is not None:
            body["id"] = prediction_id
        if webhook is not None:
            body["webhook"] = webhook
            if webhook_events_filter is not None:
                body["webhook_events_filter"] = list(webhook_events_filter)
        headers = {"Prefer": "respond-async"} if respond_async else {}
        deadline = time.monotonic() + busy_timeout
        delay = 0.05
        while True:
            response = self.session.post(
                f"{self.url}/predictions", json=body, headers=headers, timeout=self.request_timeout
            )
            if response.status_code != 409 or time.monotonic() > deadline:
                return response
            self.conflicts += 1
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def predict(self, inputs: dict[str, Any], **options: Any) -> dict[str, Any]:
        """A synchronous prediction: the final prediction JSON, whatever its status (succeeded, failed...).

        Raises ``ServerError`` (with the log) when the server does not answer 200, e.g. 422 for bad inputs:
        use ``post_prediction`` to look at those answers.
        """
        response = self.post_prediction(inputs, **options)
        if response.status_code != 200:
            raise self.fail(f"POST /predictions answered {response.status_code}: {response.text[:2000]}")
        return response.json()

    def predict_async(
        self,
        inputs: dict[str, Any],
        webhook: str,
        *,
        events: Iterable[str] = DEFAULT_EVENTS,
        prediction_id: str | None = None,
    ) -> dict[str, Any]:
        """Start a ``Prefer: respond-async`` prediction (events go to ``webhook``); returns the 202 JSON."""
        response = self.post_prediction(
            inputs,
            prediction_id=prediction_id,
            webhook=webhook,
            webhook_events_filter=events,
            respond_async=True,
        )
        if response.status_code != 202:
            raise self.fail(
                f"async POST /predictions answered {response.status_code}: {response.text[:2000]}"
            )
        return response.json()

    def cancel(self, prediction_id: str) -> requests.Response:
        """``POST /predictions/<id>/cancel``."""
        return self.session.post(f"{self.url}/predictions/{prediction_id}/cancel", timeout=30)


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every webhook POST (the prediction JSON) in arrival order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"null")
                with receiver._changed:
                    receiver.events.append(payload)
                    receiver._changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhook"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120.0) -> dict[str, Any]:
        """The first event (already received or arriving within ``timeout``) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching webhook event within {timeout:.0f} s; got {self.events}")
                self._changed.wait(remaining)

    def wait_completed(self, prediction_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """The final event of a prediction (status succeeded, failed or canceled)."""
        return self.wait_for(
            lambda event: event.get("id") == prediction_id and event.get("status") in TERMINAL_STATUSES,
            timeout,
        )
