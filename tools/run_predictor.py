"""Run a predictor once, without the Cog server, the way ``cog predict`` would inside the image.

    python -m tools.run_predictor predictors/nst/predict.py -i content=@examples/content.jpg \\
        -i style=@examples/style.png -i max_side=384 -o outputs/

The predictor is imported by file path, ``setup()`` runs (with ``COG_WEIGHTS`` when it takes ``weights``),
then ``predict()`` with the given inputs: ``@file`` is a file input, numbers and booleans are converted per
the signature, omitted inputs take their ``Input(default=...)``, and ranges and choices are checked as Cog
checks them. Output files (a Path, a list or an iterator of Paths) are copied into the output directory and
their paths printed. A ``TriptychError`` prints its message alone and exits with status 1.

``--fallback path/predict.py:Class`` names a lesser predictor taking the same inputs, run instead when
``setup()`` finds a weights file missing that cannot be downloaded (``MissingWeightsError``, typically
offline): its outputs are saved as usual, then one line is printed, the class's ``NOTICE`` followed by the
reason, and the exit status is 0. Only this local runner falls back; a Cog image fails its setup instead.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cog import _adt, _inspector, types
from cog.predictor import extract_setup_weights, has_setup_weights

from predictors.common.errors import MissingWeightsError, TriptychError
from tools import cog_schema

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_REPEATED = (_adt.Repetition.REPEATED, _adt.Repetition.OPTIONAL_REPEATED)


class UsageError(ValueError):
    """The command line names an unknown input or gives a value its type cannot take."""


def parse_value(name: str, text: str, field_type: _adt.FieldType) -> Any:
    """One ``-i name=value`` value as the input's type: ``@file`` -> Path, "true" -> True, "3" -> 3."""
    primitive = field_type.primitive
    if primitive in (_adt.PrimitiveType.PATH, _adt.PrimitiveType.FILE):
        if text.startswith("@"):
            path = Path(text[1:]).expanduser()
            if not path.is_file():
                raise UsageError(f"{name}: file not found: {path}")
            return types.Path(path.resolve())
        return text
    if primitive is _adt.PrimitiveType.BOOL:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise UsageError(f"{name}: expected true or false, got {text!r}")
    if primitive is _adt.PrimitiveType.INTEGER:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{name}: expected an integer, got {text!r}") from None
    if primitive is _adt.PrimitiveType.FLOAT:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{name}: expected a number, got {text!r}") from None
    return text


def parse_inputs(pairs: Iterable[str], info: _adt.PredictorInfo) -> dict[str, Any]:
    """``["a=1", "img=@x.png", "refs=@1.png", "refs=@2.png"]`` -> typed values (a repeated name: a list)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise UsageError(f"inputs look like name=value, got {pair!r}")
        field = info.inputs.get(name)
        if field is None:
            raise UsageError(f"unknown input {name!r}; this predictor takes: {', '.join(info.inputs)}")
        value = parse_value(name, text, field.type)
        if field.type.repetition in _REPEATED:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values


def _local(value: Any) -> Any:
    """Download URL inputs (Cog defers them as URLPath) so that predict() gets a local file."""
    if isinstance(value, types.URLPath):
        return value.convert()
    if isinstance(value, list):
        return [_local(item) for item in value]
    return value


def _results(output: Any) -> Iterator[Any]:
    if isinstance(output, (Iterator, list, tuple)):
        yield from output
    else:
        yield output


def save_output(value: Any, out_dir: Path) -> str:
    """Copy one output file into ``out_dir`` (never overwriting) and return what to print."""
    if not isinstance(value, Path):
        return str(value)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / value.name
    counter = 1
    while target.exists():
        target = out_dir / f"{value.stem}-{counter}{value.suffix}"
        counter += 1
    shutil.copyfile(value, target)
    return str(target)


def set_up(predictor_class: type) -> Any:
    """An instance of ``predictor_class`` after its ``setup()``."""
    predictor = predictor_class()
    if has_setup_weights(predictor):
        predictor.setup(weights=extract_setup_weights(predictor))
    else:
        predictor.setup()
    return predictor


def run(ref: str, pairs: list[str], out_dir: Path, fallback: str | None = None) -> list[str]:
    """setup() then predict(); returns what was printed (output paths, or values that are not files)."""
    predictor_class = cog_schema.import_predictor(ref)
    info, _ = cog_schema.inspect_predictor(predictor_class)
    try:
        kwargs = _inspector.check_input(info.inputs, parse_inputs(pairs, info))
    except ValueError as error:
        raise UsageError(str(error)) from None
    notice = None
    try:
        predictor = set_up(predictor_class)
    except MissingWeightsError as error:
        if fallback is None:
            raise
        fallback_class = cog_schema.import_predictor(fallback)
        predictor = set_up(fallback_class)
        notice = f"{fallback_class.NOTICE} {error}"
    printed = []
    for value in _results(predictor.predict(**{name: _local(value) for name, value in kwargs.items()})):
        line = save_output(value, out_dir)
        print(line, flush=True)
        printed.append(line)
    if notice is not None:
        print(notice, file=sys.stderr)
    return printed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.run_predictor", description=__doc__.splitlines()[0]
    )
    parser.add_argument("predictor", help="predictors/<name>/predict.py, optionally with :ClassName")
    parser.add_argument(
        "-i",
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an input; @path for a file; repeat a name for a list input",
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("outputs"), help="default: %(default)s")
    parser.add_argument(
        "--fallback",
        metavar="PREDICTOR",
        help="path/predict.py:Class to run instead when a weights file is missing and cannot be downloaded",
    )
    args = parser.parse_args(argv)
    try:
        run(args.predictor, args.inputs, args.output, args.fallback)
    except UsageError as error:
        parser.error(str(error))
    except TriptychError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
