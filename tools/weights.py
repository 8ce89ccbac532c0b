"""Command line for the weights manifest: fetch a predictor's files (or named entries) and check the manifest.

    python -m tools.weights fetch musepose          # or a tag, 'all', or entry names
    python -m tools.weights check [manifest.json]

``fetch`` goes through ``predictors.common.weights.ensure`` as each predictor's ``setup()`` does, and hands
in the conversions the predictors own, so that a fetched root is what the predictors load.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from predictors.common import weights
from predictors.common.errors import WeightsError
from predictors.musepose import convert

CONVERSIONS = {"musepose_compact": convert.convert_release}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.weights", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser(
        "fetch", help="download and verify the files of a predictor or of named entries"
    )
    fetch.add_argument(
        "targets", nargs="+", help=f"'all', a tag ({', '.join(weights.TAGS)}; or 'sd_style'), or entry names"
    )
    check = commands.add_parser("check", help="validate the manifest")
    check.add_argument(
        "manifest", nargs="?", type=Path, help="default: $TRIPTYCH_MANIFEST or weights_manifest.json"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        if args.command == "check":
            manifest = weights.load_manifest(args.manifest, strict=True)
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


def _targets(targets: list[str]) -> list[str | list[str]]:
    """Tags first, one by one (each names its own remedy when offline), then the named entries together."""
    if targets == ["all"]:
        return list(weights.TAGS)
    tags = [target for target in targets if weights.tags_for(target)]
    names = [target for target in targets if not weights.tags_for(target)]
    return [*tags, names] if names else tags


if __name__ == "__main__":
    sys.exit(main())
