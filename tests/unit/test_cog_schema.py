"""tools/cog_schema.py: the OpenAPI document the Cog CLI would write, from a predictor's signature."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest

from tools import cog_schema

REPO_ROOT = Path(__file__).resolve().parents[2]

SAMPLE = """
from collections.abc import Iterator

from cog import BasePredictor, Input, Path, Secret


class Predictor(BasePredictor):
    def predict(
        self,
        image: Path = Input(description="Content image."),
        steps: int = Input(description="Steps.", default=20, ge=1, le=500),
        strength: float = Input(description="Strength.", default=0.75, ge=0.0, le=1.5),
        scheduler: str = Input(description="Scheduler.", default="ddim", choices=["ddim", "euler"]),
        size: int = Input(description="Size.", default=512, choices=[512, 768]),
        refs: list[Path] = Input(description="References."),
        mask: Path | None = Input(description="Optional mask.", default=None),
        seed: int | None = Input(description="Seed; empty draws one.", default=None),
        token: Secret = Input(description="Token.", default=None),
        tidy: bool = Input(description="Tidy.", default=True),
        prompt: str = Input(description="Prompt.", default="", max_length=77),
    ) -> {output}:
        raise NotImplementedError


class Other(Predictor):
    def predict(self, n: int = Input(description="N.", ge=0)) -> str:
        return str(n)
"""


def write_sample(tmp_path: Path, output: str = "Path") -> Path:
    path = tmp_path / f"predict_{abs(hash(output))}.py"
    path.write_text(textwrap.dedent(SAMPLE).replace("{output}", output))
    return path


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict:
    return cog_schema.generate(write_sample(tmp_path_factory.mktemp("schema")))


def test_envelope_has_the_cli_components_and_paths(document):
    assert document["openapi"] == "3.0.2"
    schemas = document["components"]["schemas"]
    for name in (
        "Input",
        "Output",
        "PredictionRequest",
        "PredictionResponse",
        "Status",
        "HTTPValidationError",
    ):
        assert name in schemas
    assert schemas["Status"]["enum"] == ["starting", "processing", "succeeded", "canceled", "failed"]
    assert schemas["PredictionRequest"]["properties"]["input"] == {"$ref": "#/components/schemas/Input"}
    assert set(document["paths"]) == {
        "/",
        "/health-check",
        "/predictions",
        "/predictions/{prediction_id}/cancel",
    }
    assert "422" in document["paths"]["/predictions"]["post"]["responses"]


def test_inputs_keep_signature_order_types_and_ranges(document):
    props = document["components"]["schemas"]["Input"]["properties"]
    assert list(props) == [
        "image",
        "steps",
        "strength",
        "scheduler",
        "size",
        "refs",
        "mask",
        "seed",
        "token",
        "tidy",
        "prompt",
    ]
    assert [props[name]["x-order"] for name in props] == list(range(11))
    assert props["image"] == {
        "title": "Image",
        "type": "string",
        "format": "uri",
        "description": "Content image.",
        "x-order": 0,
    }
    assert props["steps"] == {
        "title": "Steps",
        "type": "integer",
        "default": 20,
        "minimum": 1,
        "maximum": 500,
        "description": "Steps.",
        "x-order": 1,
    }
    assert (props["strength"]["type"], props["strength"]["minimum"], props["strength"]["maximum"]) == (
        "number",
        0,
        1.5,
    )
    assert props["refs"]["type"] == "array" and props["refs"]["items"] == {"type": "string", "format": "uri"}
    assert props["mask"]["nullable"] is True and "default" not in props["mask"]
    assert props["seed"]["type"] == "integer" and props["seed"]["nullable"] is True
    assert props["token"]["format"] == "password" and props["token"]["x-cog-secret"] is True
    assert props["token"]["nullable"] is True
    assert props["tidy"]["default"] is True
    assert props["prompt"]["maxLength"] == 77


def test_choices_become_enum_components(document):
    schemas = document["components"]["schemas"]
    scheduler = schemas["Input"]["properties"]["scheduler"]
    assert scheduler["allOf"] == [{"$ref": "#/components/schemas/scheduler"}]
    assert scheduler["default"] == "ddim" and "type" not in scheduler
    assert schemas["scheduler"] == {
        "title": "scheduler",
        "description": "An enumeration.",
        "enum": ["ddim", "euler"],
        "type": "string",
    }
    assert schemas["size"]["enum"] == [512, 768] and schemas["size"]["type"] == "integer"


def test_required_lists_exactly_the_inputs_without_a_usable_default(document):
    # None is no default for a plain int or list, but a Secret defaulting to None is optional (as in the CLI).
    assert document["components"]["schemas"]["Input"]["required"] == ["image", "refs"]


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ("Path", {"title": "Output", "type": "string", "format": "uri"}),
        ("list[Path]", {"title": "Output", "type": "array", "items": {"type": "string", "format": "uri"}}),
        (
            "Iterator[Path]",
            {
                "title": "Output",
                "type": "array",
                "items": {"type": "string", "format": "uri"},
                "x-cog-array-type": "iterator",
            },
        ),
    ],
)
def test_output_types(tmp_path, annotation, expected):
    assert (
        cog_schema.generate(write_sample(tmp_path, annotation))["components"]["schemas"]["Output"] == expected
    )


def test_class_is_taken_from_the_reference(tmp_path):
    schemas = cog_schema.generate(f"{write_sample(tmp_path)}:Other")["components"]["schemas"]
    assert list(schemas["Input"]["properties"]) == ["n"]
    assert schemas["Input"]["required"] == ["n"]
    assert schemas["Output"] == {"title": "Output", "type": "string"}


def _input_validator(document: dict) -> jsonschema.Draft202012Validator:
    """The validator the server builds: the Input component, refs inlined, unknown fields refused."""
    schemas = document["components"]["schemas"]
    text = json.dumps(schemas["Input"])
    for name, schema in schemas.items():
        text = text.replace(json.dumps({"$ref": f"#/components/schemas/{name}"}), json.dumps(schema))
    return jsonschema.Draft202012Validator({**json.loads(text), "additionalProperties": False})


def test_the_input_component_accepts_good_and_rejects_bad_requests(document):
    validator = _input_validator(document)
    good = {"image": "data:,x", "refs": ["https://example.com/a.png"], "scheduler": "euler"}
    assert not list(validator.iter_errors(good))
    for bad in ({**good, "steps": 0}, {**good, "scheduler": "heun"}, {**good, "size": 640}, {"refs": []}):
        assert list(validator.iter_errors(bad)), bad


def test_cli_writes_the_file(tmp_path, capsys):
    target = tmp_path / ".cog" / "openapi_schema.json"
    assert cog_schema.main([str(write_sample(tmp_path)), "-o", str(target)]) == 0
    assert json.loads(target.read_text())["components"]["schemas"]["Input"]["required"] == ["image", "refs"]
    assert capsys.readouterr().out.strip() == str(target)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictor file not found"):
        cog_schema.generate(tmp_path / "absent.py")


@pytest.mark.parametrize("name", ["nst", "sd_style", "musepose"])
def test_real_predictor_schema_generates(name):
    path = REPO_ROOT / "predictors" / name / "predict.py"
    schemas = cog_schema.generate(path)["components"]["schemas"]
    properties = schemas["Input"]["properties"]
    assert properties, "predict() takes no inputs"
    undocumented = [field for field, prop in properties.items() if not prop.get("description")]
    assert not undocumented, f"inputs without a description: {undocumented}"
    assert "uri" in json.dumps(schemas["Output"]), "the output should be a file (Path) or files"
