"""Run a predictor once, without the Cog server, the way ``cog predict`` would inside the image.

    python -m tools.run_predictor predictors/nst/predict.py -i image=@examples/content.jpg \\
        -i style_image=@examples/style.png -i max_side=384 -o outputs/

As ``cog predict`` does, this first makes the OpenAPI schema from the source by the CLI's static rules
(``tools.cog_schema``; a predictor the CLI refuses is refused here, with its message) and types the inputs
by it: ``@file`` is a file input, numbers and booleans are converted, a repeated name makes a list. The
inputs are then checked against the schema's ``Input`` component as the server (coglet) checks them, and
that is the only check: ranges and choices the schema lacks are not enforced at all, as in production.
The predictor is imported by file path, ``setup()`` runs (with ``COG_WEIGHTS`` when it takes ``weights``),
then ``predict()`` with the given inputs; omitted ones take their ``Input(default=...)``. Output files (a
Path, a list or an iterator of Paths) are copied into the output directory and their paths printed. A
``TriptychError`` or a schema refusal prints its message alone and exits with status 1.

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

import cog
import jsonschema

from predictors.common.errors import MissingWeightsError, TriptychError
from tools import cog_compat, cog_runtime, cog_schema

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class UsageError(ValueError):
    """The command line names an unknown input or gives a value its type cannot take."""


def input_component(document: dict) -> dict[str, Any]:
    """The ``Input`` component with its ``$ref``s inlined, as coglet compiles it (input_validation.rs)."""
    schemas = document["components"]["schemas"]

    def inline(value: Any) -> Any:
        if isinstance(value, dict):
            ref = value.get("$ref", "")
            if ref.startswith("#/components/schemas/"):
                return inline(schemas[ref.rpartition("/")[2]])
            return {key: inline(item) for key, item in value.items()}
        if isinstance(value, list):
            return [inline(item) for item in value]
        return value

    return inline(schemas["Input"])


def _scalar_type(prop: dict[str, Any]) -> tuple[str, str | None]:
    """(JSON type, format) of one value of an input (the items of an array input)."""
    if prop.get("type") == "array":
        prop = prop.get("items", {})
    for part in prop.get("allOf", []):
        prop = {**part, **prop}
    return prop.get("type", "string"), prop.get("format")


def parse_value(name: str, text: str, prop: dict[str, Any]) -> Any:
    """One ``-i name=value`` value as the schema types it: ``@file`` -> its path, "true" -> True, "3" -> 3."""
    json_type, json_format = _scalar_type(prop)
    if json_format == "uri" and text.startswith("@"):
        path = Path(text[1:]).expanduser()
        if not path.is_file():
            raise UsageError(f"{name}: file not found: {path}")
        return str(path.resolve())
    if json_type == "boolean":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise UsageError(f"{name}: expected true or false, got {text!r}")
    if json_type == "integer":
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{name}: expected an integer, got {text!r}") from None
    if json_type == "number":
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{name}: expected a number, got {text!r}") from None
    return text


def parse_inputs(pairs: Iterable[str], component: dict[str, Any]) -> dict[str, Any]:
    """``["a=1", "img=@x.png", "refs=@1.png", "refs=@2.png"]`` -> JSON values (a repeated name: a list)."""
    properties = component["properties"]
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise UsageError(f"inputs look like name=value, got {pair!r}")
        prop = properties.get(name)
        if prop is None:
            raise UsageError(f"unknown input {name!r}; this predictor takes: {', '.join(properties)}")
        value = parse_value(name, text, prop)
        if prop.get("type") == "array":
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values


def check_inputs(component: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The server's check (coglet input_validation.rs): one "name: message" per failing field, "Field
    required" for each missing one; then null for every optional input that has no default."""
    validator = jsonschema.Draft202012Validator(component)
    problems = []
    for error in validator.iter_errors(values):
        if error.validator == "required":
            problems += [f"{name}: Field required" for name in component["required"] if name not in values]
        else:
            problems.append(f"{error.path[0] if error.path else '__root__'}: {error.message}")
    if problems:
        raise UsageError("; ".join(dict.fromkeys(problems)))
    required = set(component.get("required", []))
    missing_optional = {
        name: None
        for name, prop in component["properties"].items()
        if prop.get("nullable") and "default" not in prop and name not in required and name not in values
    }
    return {**values, **missing_optional}


def _file_inputs(component: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """File inputs as the worker gets them: a local Path, or a URL downloaded to one."""

    def as_path(value: Any) -> Any:
        if value is None:
            return None
        path = cog.Path.validate(value)
        return path.convert() if isinstance(path, cog.URLPath) else path

    converted = {}
    for name, value in values.items():
        is_file = _scalar_type(component["properties"][name])[1] == "uri"
        if is_file and isinstance(value, list):
            converted[name] = [as_path(item) for item in value]
        else:
            converted[name] = as_path(value) if is_file else value
    return converted


def _results(output: Any) -> Iterator[Any]:
    """The values of an output: each item of a list or iterator, each set field of a ``cog.BaseModel``."""
    if isinstance(output, (Iterator, list, tuple)):
        yield from output
    elif isinstance(output, cog.BaseModel):
        yield from (value for value in vars(output).values() if value is not None)
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
    cog_compat.set_up(predictor)
    return predictor


def run(ref: str, pairs: list[str], out_dir: Path, fallback: str | None = None) -> list[str]:
    """setup() then predict(); returns what was printed (output paths, or values that are not files)."""
    component = input_component(cog_schema.generate(ref))
    values = _file_inputs(component, check_inputs(component, parse_inputs(pairs, component)))
    predictor_class = cog_runtime.import_predictor(ref)
    notice = None
    try:
        predictor = set_up(predictor_class)
    except MissingWeightsError as error:
        if fallback is None:
            raise
        fallback_class = cog_runtime.import_predictor(fallback)
        predictor = set_up(fallback_class)
        notice = f"{fallback_class.NOTICE} {error}"
    # The fallback takes the same inputs, so the predictor's own method name and defaults serve for both.
    method = getattr(predictor, cog_runtime.predict_method(predictor_class).__name__)
    printed = []
    for value in _results(method(**{**cog_runtime.input_defaults(predictor_class), **values})):
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
    except (TriptychError, cog_schema.SchemaError) as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
