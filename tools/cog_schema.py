"""Write the OpenAPI schema that ``cog build`` bakes into an image as ``.cog/openapi_schema.json``.

The Cog CLI no longer imports ``predict.py`` to learn its inputs: it reads the source (tree-sitter) and
applies fixed rules. A ``choices=`` it cannot resolve stops the build; a ``ge=``/``le=`` that is not a number
literal, a ``default=`` it cannot resolve, an implicitly concatenated description are silently dropped,
nulled or garbled. This module produces the same file from the source by the same rules
(``tools.cog_source`` and ``tools.cog_types`` port them), so that the tests, the smoke run and
``make predict`` see the schema users get, and fail where ``cog build`` fails, with its message.

The HTTP server (coglet) validates every request against the ``Input`` component of that file (422, one
message per field), and nothing else checks ranges or choices at run time.

    python -m tools.cog_schema predictors/nst/predict.py[:Predictor] [-o .cog/openapi_schema.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tools.cog_source import InputField, PredictorInfo, parse_predictor
from tools.cog_types import (
    NotMirrored,
    OrderedMap,
    Primitive,
    Repetition,
    SchemaError,
    go_float,
    input_type_json,
    title_case,
)

__all__ = ["DEFAULT_OUTPUT", "NotMirrored", "SchemaError", "encode", "generate", "main", "split_ref", "write"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = Path(".cog/openapi_schema.json")
# The CLI writes its own version in info.version; the images pin the SDK of the same release.
CLI_VERSION = version("cog")


def split_ref(ref: str | Path) -> tuple[Path, str]:
    """``"predictors/nst/predict.py:Predictor"`` -> (absolute file, class name) (default class: Predictor)."""
    text = str(ref)
    file_part, _, class_name = text.partition(":")
    path = Path(file_part)
    if not path.is_absolute():
        path = path.resolve() if path.exists() else (REPO_ROOT / path).resolve()
    return path, class_name or "Predictor"


def parse(ref: str | Path) -> PredictorInfo:
    """The predictor as the CLI reads it; raises ``SchemaError`` with the CLI's message where it refuses."""
    path, class_name = split_ref(ref)
    if not path.is_file():
        raise FileNotFoundError(f"predictor file not found: {path}")
    # The project root (where cog.yaml lives) is where the CLI looks for the project's own modules.
    source_dir = REPO_ROOT if path.is_relative_to(REPO_ROOT) else path.parent
    return parse_predictor(path, class_name, source_dir)


# -- the document (openapi_spec.go) --------------------------------------------------------------------------


def _nullable(field: InputField) -> bool:
    """``buildInputSchema``: optional types are nullable, and so is a Secret whose default is None."""
    field_type, default = field.field_type, field.info.default
    return (
        field_type.repetition in (Repetition.OPTIONAL, Repetition.OPTIONAL_REPEATED)
        or field.input_type.nullable
        or (
            field_type.primitive is Primitive.SECRET
            and field_type.repetition is Repetition.REQUIRED
            and default is not None
            and default.kind == "none"
        )
    )


def input_component(info: PredictorInfo) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """``buildInputSchema`` (openapi_spec.go): the ``Input`` component and one enum per input with choices."""
    properties = OrderedMap()
    required: list[str] = []
    enums: list[tuple[str, dict[str, Any]]] = []
    for name, field in info.inputs.items():
        prop: dict[str, Any] = {"x-order": field.order}
        details = field.info
        if details.choices:
            enum_type = field.field_type.primitive.json_type().get("type") or "string"
            enum = [choice.to_json() for choice in details.choices]
            enums.append(
                (name, {"title": name, "description": "An enumeration.", "enum": enum, "type": enum_type})
            )
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = title_case(name)
            prop.update(input_type_json(field.input_type))
        nullable = _nullable(field)
        # None on a type that cannot hold it is no default: the input stays required (a seed drawn later).
        has_default = details.default is not None and (details.default.kind != "none" or nullable)
        if not has_default and (
            field.input_type.kind == "union"
            or field.field_type.repetition in (Repetition.REQUIRED, Repetition.REPEATED)
        ):
            required.append(name)
        if has_default:
            prop["default"] = details.default.to_json()
        if nullable:
            prop["nullable"] = True
        if details.description is not None:
            prop["description"] = details.description
        for key, value in (
            ("minimum", details.ge),
            ("maximum", details.le),
            ("minLength", details.min_length),
            ("maxLength", details.max_length),
            ("pattern", details.regex),
        ):
            if value is not None:
                prop[key] = value
        if details.deprecated:
            prop["deprecated"] = True
        if details.accept is not None:
            prop["x-cog-accept"] = details.accept
        properties[name] = prop
    schema: dict[str, Any] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def _response(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "Successful Response", "content": {"application/json": {"schema": schema}}}


def _validation_error_response() -> dict[str, Any]:
    return {
        "description": "Validation Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
    }


def openapi_document(info: PredictorInfo) -> dict[str, Any]:
    """``buildOpenAPISpec`` (openapi_spec.go), predict mode.

    The CLI's two post-passes (``removeTitleNextToRef``, ``fixNullableAnyOf``) change nothing in what this
    builds: no title stands beside a ``$ref`` and no ``anyOf`` holds a ``null`` type.
    """
    input_schema, enums = input_component(info)
    date_time = {"type": "string", "format": "date-time"}
    components = OrderedMap(Input=input_schema, Output=info.output.json_schema())
    components.update(enums)
    components["PredictionRequest"] = {
        "title": "PredictionRequest",
        "type": "object",
        "properties": {
            "id": {"title": "Id", "type": "string"},
            "input": {"$ref": "#/components/schemas/Input"},
        },
    }
    components["PredictionResponse"] = {
        "title": "PredictionResponse",
        "type": "object",
        "properties": {
            "input": {"$ref": "#/components/schemas/Input"},
            "output": {"$ref": "#/components/schemas/Output"},
            "id": {"title": "Id", "type": "string"},
            "version": {"title": "Version", "type": "string"},
            "created_at": {"title": "Created At", **date_time},
            "started_at": {"title": "Started At", **date_time},
            "completed_at": {"title": "Completed At", **date_time},
            "status": {"title": "Status", "type": "string"},
            "error": {"title": "Error", "type": "string"},
            "logs": {"title": "Logs", "type": "string"},
            "metrics": {"title": "Metrics", "type": "object"},
        },
    }
    components["Status"] = {
        "title": "Status",
        "description": "An enumeration.",
        "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
        "type": "string",
    }
    components["HTTPValidationError"] = {
        "title": "HTTPValidationError",
        "type": "object",
        "properties": {
            "detail": {
                "title": "Detail",
                "type": "array",
                "items": {"$ref": "#/components/schemas/ValidationError"},
            }
        },
    }
    components["ValidationError"] = {
        "title": "ValidationError",
        "required": ["loc", "msg", "type"],
        "type": "object",
        "properties": {
            "loc": {
                "title": "Location",
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
        },
    }
    predict = {
        "summary": "Predict",
        "description": "Run a single prediction on the model",
        "operationId": "predict_predictions_post",
        "requestBody": {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictionRequest"}}}
        },
        "responses": {
            "200": _response({"$ref": "#/components/schemas/PredictionResponse"}),
            "422": _validation_error_response(),
        },
    }
    if info.supports_streaming:
        predict["x-cog-streaming"] = True
    paths = OrderedMap()
    paths["/"] = {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": _response({})}}}
    paths["/health-check"] = {
        "get": {
            "summary": "Healthcheck",
            "operationId": "healthcheck_health_check_get",
            "responses": {"200": _response({})},
        }
    }
    paths["/predictions"] = {"post": predict}
    paths["/predictions/{prediction_id}/cancel"] = {
        "post": {
            "summary": "Cancel",
            "operationId": "cancel_predictions__prediction_id__cancel_post",
            "parameters": [
                {
                    "required": True,
                    "schema": {"title": "Prediction Id", "type": "string"},
                    "name": "prediction_id",
                    "in": "path",
                }
            ],
            "responses": {"200": _response({}), "422": _validation_error_response()},
        }
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": CLI_VERSION},
        "paths": paths,
        "components": {"schemas": components},
    }


# -- the bytes (Go encoding/json) ----------------------------------------------------------------------------

# encoding/json escapes these inside strings so that the JSON is safe to embed in HTML.
_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _encode_string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    for char, escape in _HTML_ESCAPES.items():
        encoded = encoded.replace(char, escape)
    return encoded


def encode(value: Any) -> str:
    """``json.Marshal`` (Go) of the document: compact, plain maps with sorted keys, ``OrderedMap`` in
    insertion order, floats in Go's shortest form (``1``, not ``1.0``), HTML characters escaped."""
    if isinstance(value, dict):
        items = value.items() if isinstance(value, OrderedMap) else sorted(value.items())
        return "{" + ",".join(f"{_encode_string(key)}:{encode(item)}" for key, item in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(encode(item) for item in value) + "]"
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return go_float(value, "json")
    return str(value)


def generate_text(ref: str | Path) -> str:
    """The file ``cog build`` would write for ``predictors/<name>/predict.py[:Class]``."""
    return encode(openapi_document(parse(ref)))


def generate(ref: str | Path) -> dict[str, Any]:
    """The OpenAPI document for ``ref``, as the server reads it from the file."""
    return json.loads(generate_text(ref))


def write(ref: str | Path, output: Path = DEFAULT_OUTPUT) -> Path:
    """Write the schema for ``ref`` to ``output`` (parents created), byte for byte as the CLI writes it."""
    output = Path(output)
    text = generate_text(ref)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.cog_schema", description=__doc__.splitlines()[0])
    parser.add_argument("predictor", help="predictors/<name>/predict.py, optionally with :ClassName")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        info = parse(args.predictor)
        text = encode(openapi_document(info))
    except SchemaError as error:
        # As `cog build` reports it (pkg/image/build.go, resolveBuildSchema).
        print(f"image build failed: {error.message}", file=sys.stderr)
        return 1
    for warning in info.warnings:
        print(warning, file=sys.stderr)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
