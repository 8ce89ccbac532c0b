"""The weights manifest: reading it and validating it against ``manifest.schema.json`` (JSON Schema).

The schema says what each entry holds; the few rules a schema cannot state (a URL or a Hugging Face file,
unique destinations, ``needed_by`` names among the targets, conversion inputs that the files list, folders
that hold files) are checked here. Every departure becomes one short phrase naming the field, so a typo in the
manifest reads
``files.a.sha256 must be 64 hex digits or null``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from predictors.common.errors import WeightsError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).with_name("manifest.schema.json")).read_text())
SCHEMA_VERSION = SCHEMA["properties"]["schema_version"]["const"]
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: ``targets`` names what ``needed_by`` may name (the predictors, and their variants
    after a slash), ``files`` and ``conversions`` hold the JSON entries by name, ``folders`` the folders
    (relative to the weights root) by name."""

    path: Path
    targets: tuple[str, ...]
    files: dict[str, dict]
    conversions: dict[str, dict]
    folders: dict[str, str]


def manifest_path() -> Path:
    return Path(os.environ.get("TRIPTYCH_MANIFEST") or REPO_ROOT / "weights_manifest.json")


def load(path: Path | None = None, *, strict: bool = False) -> Manifest:
    """Read and validate the manifest. ``strict`` also requires every conversion input to be listed and every
    folder to hold a listed file (a tiny root's manifest lists only the files it holds, so those checks are
    left to ``check`` and the tests)."""
    path = Path(path or manifest_path())
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"The weights manifest {path} could not be read: {error}.") from error
    errors = schema_errors(data, strict=strict)
    if errors:
        raise WeightsError(f"The weights manifest {path} is invalid: {'; '.join(errors)}.")
    return Manifest(
        path, tuple(data["targets"]), data["files"], data.get("conversions", {}), data.get("folders", {})
    )


def save(manifest: Manifest) -> None:
    """Write ``manifest`` to its path, checked first (a tiny root's manifest, revisions pinned by a tool)."""
    data = {
        "schema_version": SCHEMA_VERSION,
        "targets": list(manifest.targets),
        "folders": manifest.folders,
        "files": manifest.files,
        "conversions": manifest.conversions,
    }
    errors = schema_errors(data)
    if errors:
        raise WeightsError(f"The weights manifest for {manifest.path} would be invalid: {'; '.join(errors)}.")
    manifest.path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def schema_errors(data: object, *, strict: bool = False) -> list[str]:
    """Every way ``data`` departs from the manifest format, as short phrases naming the field."""
    # dict.fromkeys: jsonschema reports each missing key of an object separately; one phrase names them all.
    phrases = (phrase for error in _VALIDATOR.iter_errors(data) for phrase in _phrases(error))
    errors = list(dict.fromkeys(phrases))
    return errors or _rule_errors(data, strict)


def _phrases(error: jsonschema.ValidationError) -> list[str]:
    where = ".".join(map(str, error.absolute_path)) or "manifest"
    if error.validator == "required":
        return [f"{where} lacks {key!r}" for key in error.validator_value if key not in error.instance]
    if error.validator == "additionalProperties" and error.validator_value is False:
        allowed = error.schema.get("properties", {})
        return [
            f"{where} has unknown key {key!r} (allowed: {', '.join(allowed)})"
            for key in error.instance
            if key not in allowed
        ]
    expected = error.schema.get("description")
    if expected is None:
        return [f"{where}: {error.message}"]
    return [f"{where} must be {expected}, got {error.instance!r}"]


def _rule_errors(data: dict, strict: bool) -> list[str]:
    """What the schema cannot say: one source per file, destinations repeated, names that refer to nothing."""
    items = [("files", data["files"]), ("conversions", data.get("conversions", {}))]
    errors = [
        f"{kind}.{name}.needed_by names {target!r}, which targets lacks"
        for kind, entries in items
        for name, entry in entries.items()
        for target in entry["needed_by"]
        if target not in data["targets"]
    ]
    errors += [
        f"files.{name} lacks 'url' (or 'hf', for a Hugging Face file)"
        if "url" not in entry
        else f"files.{name} has both 'url' and 'hf'"
        for name, entry in data["files"].items()
        if ("url" in entry) == ("hf" in entry)
    ]
    dests: dict[str, str] = {}
    places = [(f"files.{name}", entry["dest"]) for name, entry in data["files"].items()]
    for name, step in data.get("conversions", {}).items():
        places += [(f"conversions.{name}.outputs.{o}", spec["dest"]) for o, spec in step["outputs"].items()]
        if strict:
            errors += [
                f"conversions.{name}.inputs names {i!r}, which files lacks"
                for i in step["inputs"]
                if i not in data["files"]
            ]
        errors += [
            f"conversions.{name}.kept_inputs names {i!r}, which inputs lacks"
            for i in step.get("kept_inputs", [])
            if i not in step["inputs"]
        ]
    for where, dest in places:
        if dests.setdefault(dest, where) != where:
            errors.append(f"{where}.dest {dest!r} repeats {dests[dest]}.dest")
    if strict:
        errors += [
            f"folders.{name} {folder!r} holds no listed file"
            for name, folder in data.get("folders", {}).items()
            if not any(dest.startswith(folder + "/") for dest in dests)
        ]
    return errors
