"""Write the OpenAPI schema that ``cog build`` bakes into an image as ``.cog/openapi_schema.json``.

The Cog HTTP server (coglet) validates every request against the ``Input`` component of that file and answers
422 with one message per field; without the file it accepts anything. This module produces the same document
as the Cog CLI (OpenAPI 3.0.2: ``Input``, ``Output``, one enum component per ``choices`` input,
``PredictionRequest``, ``PredictionResponse``, ``Status``, the validation-error components and the paths),
from the predictor's ``predict()`` signature as read by the cog wheel's own inspector.

    python -m tools.cog_schema predictors/nst/predict.py[:Predictor] [-o .cog/openapi_schema.json]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from cog import _adt, _inspector
from cog.input import FieldInfo

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = Path(".cog/openapi_schema.json")

_NULLABLE = (_adt.Repetition.OPTIONAL, _adt.Repetition.OPTIONAL_REPEATED)
_MUST_HAVE_VALUE = (_adt.Repetition.REQUIRED, _adt.Repetition.REPEATED)


def split_ref(ref: str | Path) -> tuple[Path, str]:
    """``"predictors/nst/predict.py:Predictor"`` -> (absolute file, class name) (default class: Predictor)."""
    text = str(ref)
    file_part, _, class_name = text.partition(":")
    path = Path(file_part)
    if not path.is_absolute():
        path = path.resolve() if path.exists() else (REPO_ROOT / path).resolve()
    return path, class_name or "Predictor"


def import_predictor(ref: str | Path) -> type:
    """Import ``predict.py`` by file path, as Cog does, and return the predictor class named by ``ref``."""
    path, class_name = split_ref(ref)
    if not path.is_file():
        raise FileNotFoundError(f"predictor file not found: {path}")
    # Predictors import the shared package absolutely from the repository root, as inside the image.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    module_name = f"_cog_predictor_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    if not hasattr(module, class_name):
        raise AttributeError(f"{path} defines no {class_name}")
    return getattr(module, class_name)


def inspect_predictor(predictor: type) -> tuple[_adt.PredictorInfo, dict[str, FieldInfo]]:
    """The cog inspector's view of ``predict()`` and the raw ``Input(...)`` objects (for ``accept``)."""
    with warnings.catch_warnings():
        # BasePredictor/predict() are deprecated aliases in this SDK; they still serve, so stay quiet.
        warnings.simplefilter("ignore", DeprecationWarning)
        info = _inspector.create_predictor(predictor.__module__, predictor.__name__)
        _, method = _inspector._selected_predict_method(predictor, predictor.__name__)
    raw = {
        name: param.default
        for name, param in inspect.signature(method).parameters.items()
        if isinstance(param.default, FieldInfo)
    }
    return info, raw


def _number(value: float | int) -> float | int:
    """The CLI writes integral bounds as integers (``1``, not ``1.0``)."""
    return int(value) if float(value).is_integer() else float(value)


def _title(name: str) -> str:
    return " ".join(word.capitalize() for word in name.split("_"))


def _json_value(field_type: _adt.FieldType, value: Any) -> Any:
    encoded = field_type.json_encode(value)
    if isinstance(encoded, Path):
        return str(encoded)
    return encoded


def input_schemas(
    info: _adt.PredictorInfo, raw: dict[str, FieldInfo]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The ``Input`` component and one enum component per input with choices, as the CLI builds them."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    enums: dict[str, dict[str, Any]] = {}
    for name, field in sorted(info.inputs.items(), key=lambda item: item[1].order):
        prop: dict[str, Any] = {"x-order": field.order}
        if field.choices:
            enums[name] = {
                "title": name,
                "description": "An enumeration.",
                "enum": list(field.choices),
                "type": field.type.primitive.json_type()["type"],
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = _title(name)
            prop.update(field.type.json_type())

        # A Secret defaulting to None means "no credential given", so the CLI makes it optional and nullable.
        nullable = field.type.repetition in _NULLABLE or (
            field.type.primitive is _adt.PrimitiveType.SECRET and field.default is None
        )
        if field.default is not None:
            prop["default"] = _json_value(field.type, field.default)
        elif field.type.repetition in _MUST_HAVE_VALUE and not nullable:
            required.append(name)
        if nullable:
            prop["nullable"] = True
        if field.description is not None:
            prop["description"] = field.description
        if field.ge is not None:
            prop["minimum"] = _number(field.ge)
        if field.le is not None:
            prop["maximum"] = _number(field.le)
        if field.min_length is not None:
            prop["minLength"] = field.min_length
        if field.max_length is not None:
            prop["maxLength"] = field.max_length
        if field.regex is not None:
            prop["pattern"] = field.regex
        if field.deprecated:
            prop["deprecated"] = True
        accept = raw[name].accept if name in raw else None
        if accept is not None:
            prop["x-cog-accept"] = accept
        properties[name] = dict(sorted(prop.items()))

    schema: dict[str, Any] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def _json_response(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "Successful Response", "content": {"application/json": {"schema": schema}}}


_VALIDATION_ERROR_RESPONSE = {
    "description": "Validation Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
}


def openapi_schema(info: _adt.PredictorInfo, raw: dict[str, FieldInfo]) -> dict[str, Any]:
    """The full OpenAPI 3.0.2 document for a predictor, component for component as the Cog CLI writes it."""
    input_schema, enums = input_schemas(info, raw)
    date_time = {"type": "string", "format": "date-time"}
    components: dict[str, Any] = {
        "Input": input_schema,
        "Output": info.output.json_type(),
        **enums,
        "PredictionRequest": {
            "title": "PredictionRequest",
            "type": "object",
            "properties": {
                "id": {"title": "Id", "type": "string"},
                "input": {"$ref": "#/components/schemas/Input"},
            },
        },
        "PredictionResponse": {
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
        },
        "Status": {
            "title": "Status",
            "description": "An enumeration.",
            "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
            "type": "string",
        },
        "HTTPValidationError": {
            "title": "HTTPValidationError",
            "type": "object",
            "properties": {
                "detail": {
                    "title": "Detail",
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/ValidationError"},
                }
            },
        },
        "ValidationError": {
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
        },
    }
    paths = {
        "/": {
            "get": {"summary": "Root", "operationId": "root__get", "responses": {"200": _json_response({})}}
        },
        "/health-check": {
            "get": {
                "summary": "Healthcheck",
                "operationId": "healthcheck_health_check_get",
                "responses": {"200": _json_response({})},
            }
        },
        "/predictions": {
            "post": {
                "summary": "Predict",
                "description": "Run a single prediction on the model",
                "operationId": "predict_predictions_post",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/PredictionRequest"}}
                    }
                },
                "responses": {
                    "200": _json_response({"$ref": "#/components/schemas/PredictionResponse"}),
                    "422": _VALIDATION_ERROR_RESPONSE,
                },
            }
        },
        "/predictions/{prediction_id}/cancel": {
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
                "responses": {"200": _json_response({}), "422": _VALIDATION_ERROR_RESPONSE},
            }
        },
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": paths,
        "components": {"schemas": components},
    }


def generate(ref: str | Path) -> dict[str, Any]:
    """The OpenAPI document for ``predictors/<name>/predict.py[:Class]``."""
    return openapi_schema(*inspect_predictor(import_predictor(ref)))


def write(ref: str | Path, output: Path = DEFAULT_OUTPUT) -> Path:
    """Generate the schema for ``ref`` and write it to ``output`` (parents created)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(generate(ref), indent=2) + "\n")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictor", help="predictors/<name>/predict.py, optionally with :ClassName")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    print(write(args.predictor, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
