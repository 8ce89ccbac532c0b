"""Command line for the weights manifest: fetch a predictor's files (or named entries) and check the manifest.

    python -m tools.weights fetch musepose          # or a tag, 'all', or entry names
    python -m tools.weights check [manifest.json]
    python -m tools.weights pin [names...]          # on a connected machine: revisions -> their commits

``fetch`` goes through ``predictors.common.weights.ensure`` as each predictor's ``setup()`` does, and hands
in the conversions the predictors own, so that a fetched root is what the predictors load.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
from pathlib import Path

import httpx2
import huggingface_hub

from predictors.common import download, weights
from predictors.common import manifest as manifests
from predictors.common.errors import WeightsError
from predictors.musepose import convert

CONVERSIONS = {"musepose_compact": convert.convert_release}
COMMIT = re.compile("[0-9a-f]{40}")
SHA256 = re.compile("[0-9a-f]{64}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.weights", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser(
        "fetch", help="download and verify the files of a predictor or of named entries"
    )
    fetch.add_argument(
        "targets",
        nargs="+",
        help="'all', a target of the manifest (nst, sd_style/sd15; sd_style takes both), or entry names",
    )
    check = commands.add_parser("check", help="validate the manifest")
    check.add_argument(
        "manifest", nargs="?", type=Path, help="default: $TRIPTYCH_MANIFEST or weights_manifest.json"
    )
    pin = commands.add_parser(
        "pin", help="replace the Hugging Face revisions (branches, tags) by the commits they point at now"
    )
    pin.add_argument("names", nargs="*", help="entry names (default: every Hugging Face file not yet pinned)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        if args.command == "pin":
            return pin_revisions(args.names)
        if args.command == "check":
            manifest = manifests.load(args.manifest, strict=True)
            counts = f"{len(manifest.files)} files, {len(manifest.conversions)} conversions"
            print(f"{manifest.path}: {counts}, valid")
            return 0
        for target in _targets(args.targets):
            found = weights.ensure(target, conversions=CONVERSIONS)
            label = target if isinstance(target, str) else " ".join(target)
            print(f"{label}: {len(found.files)} files verified under {found.root}")
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def pin_revisions(names: list[str]) -> int:
    """Pin each Hugging Face file to the commit its revision points at, if the file there is the one the
    manifest describes (size, and sha256 where the hub gives it: an LFS file's etag is its sha256)."""
    manifest = manifests.load(strict=True)
    files = dict(manifest.files)
    failed = False
    for name, entry in manifest.files.items():
        hf = entry.get("hf")
        if hf is None or COMMIT.fullmatch(hf["revision"]) or (names and name not in names):
            continue
        try:
            metadata = huggingface_hub.get_hf_file_metadata(download.hub_url(**hf))
        except (OSError, httpx2.HTTPError) as error:
            print(f"{name}: not pinned: {download.hub_failure_reason(error)}", file=sys.stderr)
            failed = True
            continue
        differs = [
            f"{what} {expected} in the manifest, {found} at {metadata.commit_hash}"
            for what, expected, found in (
                ("size", entry["size"], metadata.size),
                ("sha256", entry["sha256"], metadata.etag if SHA256.fullmatch(metadata.etag or "") else None),
            )
            if None not in (expected, found) and expected != found
        ]
        if differs:
            print(f"{name}: not pinned: {'; '.join(differs)}", file=sys.stderr)
            failed = True
            continue
        files[name] = {**entry, "hf": {**hf, "revision": metadata.commit_hash}}
        print(f"{name}: {hf['revision']} -> {metadata.commit_hash}")
    manifests.save(dataclasses.replace(manifest, files=files))
    return 1 if failed else 0


def _targets(targets: list[str]) -> list[str | list[str]]:
    """Tags first, one by one (each names its own remedy when offline), then the named entries together."""
    manifest = manifests.load()
    if targets == ["all"]:
        return list(manifest.targets)
    tags = [target for target in targets if weights.tags_for(target, manifest)]
    names = [target for target in targets if not weights.tags_for(target, manifest)]
    return [*tags, names] if names else tags


if __name__ == "__main__":
    sys.exit(main())
