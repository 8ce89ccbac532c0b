"""The input files of one prediction: fetched with limits, known as its own, removed when it ends.

Cog turns a URL or data-URI input into a deferred download (``cog.types.URLPath``), and
``predictors.common.boundary`` hands each one to ``PredictionFiles`` at the start of ``predict()``. Fetching
there, on the prediction's own thread, instead of in Cog's download pool before ``predict()`` (coglet 0.23.1,
``crates/coglet-python/src/input.rs``, ``download_url_paths_into_dict``) gives three things:

- Limits. Cog's own download has a per-read timeout only (``cog/types.py``, ``URLFile``), so a server that
  drips a byte every few seconds, or never ends its body, holds the predictor busy indefinitely and fills
  the disk. Here the transfers of one prediction share a deadline (``TRIPTYCH_INPUT_TIMEOUT_S``, default
  300 s), each file has a byte cap (``TRIPTYCH_INPUT_MAX_MB``, default 512), and a partial file is removed
  whatever ends the transfer.
- Cancels that land. Cog cancels a sync prediction by raising ``CancelationException`` in the prediction's
  thread (coglet ``crates/coglet-python/src/cancel.rs``), which receives it only while it runs Python code;
  Cog's own download parks that thread in ``concurrent.futures.wait`` until every transfer ends. Here the
  transfer runs on a helper thread while the prediction's thread polls every 50 ms, so a cancel lands within
  one poll and shuts the connection down.
- Sentences. A failure names the input and says what to do, instead of a raw ``requests`` error.

The files live in a private folder per prediction (``triptych-inputs-*`` in the temp directory), removed
when the prediction ends, successfully or not. ``is_prediction_file`` says whether a path is one of them:
``predictors.common.media.check_input_path`` accepts only those when local paths are refused, so a request
can never name a file fetched for another one. One prediction runs at a time per process (Cog's default
concurrency of 1), which is what the single ``current`` slot assumes.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests

from predictors.common.errors import InputError, ResourceError

TIMEOUT_ENV = "TRIPTYCH_INPUT_TIMEOUT_S"
MAX_MB_ENV = "TRIPTYCH_INPUT_MAX_MB"
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MAX_MB = 512.0
CONNECT_TIMEOUT_S = 10.0
# Seconds without a byte before the helper thread gives up on its own; the deadline usually ends it first.
READ_TIMEOUT_S = 30.0
POLL_S = 0.05
CHUNK = 1 << 16
MAX_REDIRECTS = 5
FOLDER_PREFIX = "triptych-inputs-"


@dataclass(frozen=True)
class Limits:
    """How long the transfers of one prediction may take together, and how large one file may be."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    max_bytes: int = int(DEFAULT_MAX_MB * 1e6)

    @classmethod
    def from_environment(cls) -> Limits:
        timeout_s = _positive_setting(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
        max_mb = _positive_setting(MAX_MB_ENV, DEFAULT_MAX_MB)
        return cls(timeout_s=timeout_s, max_bytes=int(max_mb * 1e6))


def _positive_setting(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {text!r}")
    return value


class PredictionFiles:
    """The input files of the prediction now running, in a private folder that ``close()`` removes."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
        self._deadline = time.monotonic() + limits.timeout_s
        self._paths: set[str] = set()

    def download(self, url: str, filename: str, what: str) -> Path:
        """Fetch an http(s) ``url`` into the folder within the limits; ``what`` names the input in errors."""
        dest = self._new_path(filename)
        transfer = _Transfer(url, dest, self.limits.max_bytes, what)
        thread = threading.Thread(target=transfer.run, name="triptych-input-download", daemon=True)
        thread.start()
        try:
            while not transfer.done.wait(POLL_S):
                if time.monotonic() >= self._deadline:
                    raise InputError(
                        f"The {what} did not finish downloading within {self.limits.timeout_s:g} s "
                        f"({transfer.received / 1e6:.1f} MB received). Host the file somewhere faster, "
                        "or send a smaller file."
                    )
            if transfer.error is not None:
                raise transfer.error
        except BaseException:
            # A deadline, a failed transfer, or Cog's cancel: stop the helper and drop the partial file.
            transfer.stop()
            dest.unlink(missing_ok=True)
            raise
        return self._keep(dest)

    def save(self, stream: BinaryIO, filename: str, what: str) -> Path:
        """Write an already decoded input (a data URI) into the folder, within the byte cap."""
        dest = self._new_path(filename)
        try:
            with dest.open("wb") as out:
                written = 0
                for block in iter(lambda: stream.read(CHUNK), b""):
                    written += len(block)
                    if written > self.limits.max_bytes:
                        raise _too_large(what, self.limits.max_bytes)
                    out.write(block)
        except OSError as error:
            dest.unlink(missing_ok=True)
            raise _storage_error(error, what) from error
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return self._keep(dest)

    def owns(self, path: str | os.PathLike[str]) -> bool:
        return os.path.realpath(path) in self._paths

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self._paths.clear()

    def _new_path(self, filename: str) -> Path:
        # The suffix is kept (decoders may use it as a hint); the rest of a user's file name is not needed.
        suffix = re.sub(r"[^A-Za-z0-9]", "", Path(filename).suffix)[:10]
        return self.folder / f"input-{len(self._paths) + 1}{'.' + suffix if suffix else ''}"

    def _keep(self, dest: Path) -> Path:
        self._paths.add(os.path.realpath(dest))
        return dest


class _Stopped(Exception):
    """The prediction's thread gave up on this transfer."""


class _Transfer:
    """One HTTP transfer on a helper thread; the prediction's thread waits for ``done``, may ``stop`` it."""

    def __init__(self, url: str, dest: Path, max_bytes: int, what: str) -> None:
        self.url, self.dest, self.max_bytes, self.what = url, dest, max_bytes, what
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.received = 0
        self._stopped = threading.Event()
        self._response: requests.Response | None = None

    def stop(self) -> None:
        self._stopped.set()
        response = self._response
        if response is not None:
            # Wakes a read blocked in the helper thread (urllib3's cross-thread shutdown of the socket).
            with contextlib.suppress(Exception):
                response.raw.shutdown()

    def run(self) -> None:
        try:
            self._receive()
        except Exception as error:
            # The helper removes its own file too: it may have created it after the waiting thread gave up.
            self.dest.unlink(missing_ok=True)
            self.error = (
                error if isinstance(error, InputError | ResourceError) else _explain(error, self.what)
            )
        finally:
            self.done.set()

    def _receive(self) -> None:
        with requests.Session() as session:
            session.max_redirects = MAX_REDIRECTS
            with session.get(
                self.url,
                stream=True,
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                headers={"Accept-Encoding": "identity"},
            ) as response:
                self._response = response
                self._check_response(response)
                with self.dest.open("wb") as out:
                    for chunk in response.iter_content(CHUNK):
                        if self._stopped.is_set():
                            raise _Stopped
                        self.received += len(chunk)
                        if self.received > self.max_bytes:
                            raise _too_large(self.what, self.max_bytes)
                        out.write(chunk)
        # A shut-down socket ends the body early without an error.
        if self._stopped.is_set():
            raise _Stopped

    def _check_response(self, response: requests.Response) -> None:
        if self._stopped.is_set():
            raise _Stopped
        if response.status_code >= 400:
            reason = (response.reason or "").strip()[:60]
            raise InputError(
                f"The {self.what} could not be downloaded: its URL answered HTTP {response.status_code}"
                f"{f' ({reason})' if reason else ''}. Check that the link is public and still valid."
            )
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            raise _too_large(self.what, self.max_bytes)


def _too_large(what: str, max_bytes: int) -> InputError:
    return InputError(
        f"The {what} is larger than the {max_bytes / 1e6:g} MB limit for an input file. "
        "Send a smaller or shorter file."
    )


def _storage_error(error: OSError, what: str) -> Exception:
    if error.errno == errno.ENOSPC:
        return ResourceError(f"The server ran out of disk space while storing the {what}. Try again later.")
    return error


def _explain(error: Exception, what: str) -> Exception:
    """A failed transfer as one sentence for the user; errors that are not about the transfer pass through."""
    if isinstance(error, _Stopped):
        return error
    if isinstance(error, OSError) and not isinstance(error, requests.RequestException):
        return _storage_error(error, what)
    if isinstance(error, requests.exceptions.ConnectTimeout):
        reason = f"its server did not accept a connection within {CONNECT_TIMEOUT_S:g} s"
    elif isinstance(error, requests.exceptions.ReadTimeout):
        reason = f"its server sent nothing for {READ_TIMEOUT_S:g} s"
    elif isinstance(error, requests.exceptions.SSLError):
        reason = "the secure connection to its server failed (TLS certificate or protocol error)"
    elif isinstance(error, requests.exceptions.TooManyRedirects):
        reason = f"its URL redirected more than {MAX_REDIRECTS} times"
    elif isinstance(error, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema):
        reason = "its URL is not a valid http(s) URL"
    elif isinstance(
        error, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
    ):
        reason = "the transfer broke off or was malformed"
    elif isinstance(error, requests.ConnectionError):
        reason = "its server could not be reached or closed the connection"
    elif isinstance(error, requests.RequestException):
        reason = "the request failed"
    else:
        return error
    return InputError(
        f"The {what} could not be downloaded: {reason}. Check the URL, or send the file itself."
    )


_current: PredictionFiles | None = None


@contextlib.contextmanager
def prediction_files(limits: Limits | None = None) -> Iterator[PredictionFiles]:
    """The input files of one prediction; the folder and everything in it is removed on the way out."""
    global _current
    files = PredictionFiles(limits or Limits.from_environment())
    _current = files
    try:
        yield files
    finally:
        if _current is files:
            _current = None
        files.close()


def is_prediction_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file fetched for the prediction now running."""
    current = _current
    return current is not None and current.owns(path)
