"""A predictor as Python sees it at run time: imported, with its ``predict()`` signature read by cog's own
inspector (through ``tools.cog_compat``), the way the schema was made before the CLI went static.

Two users: ``tools.run_predictor`` (it runs the predictor, as the server's worker does), and the test that
holds the static schema (``tools.cog_schema``) against what the code really declares, field by field, so
that a bound, a default or a choice the CLI would drop or garble fails a test instead of reaching users.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from cog import FieldInfo

from tools import cog_compat
from tools.cog_compat import predict_method
from tools.cog_schema import REPO_ROOT, split_ref
from tools.cog_types import title_case

__all__ = ["import_predictor", "input_defaults", "predict_method", "runtime_schemas"]


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


def input_defaults(predictor: type) -> dict[str, Any]:
    """The value each omitted input takes in the worker: ``Input(default=...)`` unwrapped, as coglet does
    (crates/coglet-python/src/predictor.rs, ``unwrap_field_info_defaults``); plain defaults as they are."""
    defaults = {}
    for name, param in inspect.signature(predict_method(predictor)).parameters.items():
        if param.default is inspect.Parameter.empty:
            continue
        defaults[name] = param.default.default if isinstance(param.default, FieldInfo) else param.default
    return defaults


def _inspect(predictor: type) -> tuple[cog_compat.PredictorInfo, dict[str, FieldInfo]]:
    """The cog inspector's view of ``predict()`` and the raw ``Input(...)`` objects (for ``accept``)."""
    info = cog_compat.predictor_info(predictor)
    raw = {
        name: param.default
        for name, param in inspect.signature(predict_method(predictor)).parameters.items()
        if isinstance(param.default, FieldInfo)
    }
    return info, raw


def _number(value: float | int) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _json_value(field_type: cog_compat.FieldType, value: Any) -> Any:
    encoded = field_type.json_encode(value)
    return str(encoded) if isinstance(encoded, Path) else encoded


def runtime_schemas(ref: str | Path) -> dict[str, Any]:
    """The ``Input`` component, one enum component per input with choices, and the ``Output`` component,
    from the imported signature, laid out by the CLI's rules (pkg/schema/openapi_spec.go): what the static
    schema must say when nothing is dropped or garbled."""
    info, raw = _inspect(import_predictor(ref))
    properties: dict[str, Any] = {}
    required: list[str] = []
    schemas: dict[str, Any] = {}
    for name, field in sorted(info.inputs.items(), key=lambda item: item[1].order):
        prop: dict[str, Any] = {"x-order": field.order}
        if field.choices:
            schemas[name] = {
                "title": name,
                "description": "An enumeration.",
                "enum": list(field.choices),
                "type": cog_compat.json_type(field.type),
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = title_case(name)
            prop.update(field.type.json_type())
        # A Secret defaulting to None means "no credential given", so the CLI makes it optional and nullable.
        nullable = cog_compat.is_optional(field.type) or (
            cog_compat.is_secret(field.type) and field.default is None
        )
        # Input(default=None) and no default are one FieldInfo here; on a nullable input both end as null
        # in the worker (coglet injects it), so a null default is left out and compared as absent.
        if field.default is not None:
            prop["default"] = _json_value(field.type, field.default)
        elif not nullable:
            required.append(name)
        if nullable:
            prop["nullable"] = True
        for key, value in (
            ("description", field.description),
            ("minimum", None if field.ge is None else _number(field.ge)),
            ("maximum", None if field.le is None else _number(field.le)),
            ("minLength", field.min_length),
            ("maxLength", field.max_length),
            ("pattern", field.regex),
            ("x-cog-accept", raw[name].accept if name in raw else None),
        ):
            if value is not None:
                prop[key] = value
        if field.deprecated:
            prop["deprecated"] = True
        properties[name] = prop
    schemas["Input"] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schemas["Input"]["required"] = required
    schemas["Output"] = info.output.json_type()
    return schemas
