"""tools/cog_schema.py: the OpenAPI document the Cog CLI writes, from the predictor's source, by its rules.

The CLI (replicate/cog ``pkg/schema``) parses ``predict.py`` without importing it. The cases named after a
Go test (``TestChoicesUndefinedVarErrors``, ...) come from ``pkg/schema/python/parser_test.go`` or
``pkg/schema/openapi_spec_test.go`` at the mirrored commit; the others pin what its text rules do to values
it cannot read (dropped, nulled or garbled), and the static-vs-runtime comparison that catches them.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tools import cog_runtime, cog_schema, run_predictor
from tools.cog_server import CogServer
from tools.cog_source import go_parse_float, go_parse_int
from tools.cog_types import ErrorKind, go_float

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_PREDICTORS = REPO_ROOT / "tests" / "predictors_for_tests"
LITERAL = TEST_PREDICTORS / "schema_literal_predict.py"
COMPUTED_CHOICES = TEST_PREDICTORS / "schema_computed_choices_predict.py"
NAMED_BOUND = TEST_PREDICTORS / "schema_named_bound_predict.py"
CONCATENATED_DESCRIPTION = TEST_PREDICTORS / "schema_concatenated_description_predict.py"
ECHO = TEST_PREDICTORS / "echo_predict.py"

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


def write_source(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "predict.py"
    path.write_text(textwrap.dedent(source))
    return path


def predict_with(tmp_path: Path, parameters: str, prelude: str = "", output: str = "str") -> Path:
    """A predictor whose predict() takes ``parameters``, after ``prelude`` at module level."""
    source = (
        "from cog import BasePredictor, Input, Path, Secret\n"
        + textwrap.dedent(prelude)
        + "\n\nclass Predictor(BasePredictor):\n"
        + f"    def predict(self, {parameters}) -> {output}:\n        pass\n"
    )
    path = tmp_path / "predict.py"
    path.write_text(source)
    return path


def schemas_of(path: Path | str) -> dict:
    return cog_schema.generate(path)["components"]["schemas"]


def refusal(path: Path | str) -> cog_schema.SchemaError:
    with pytest.raises(cog_schema.SchemaError) as error_info:
        cog_schema.generate(path)
    return error_info.value


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict:
    return cog_schema.generate(write_sample(tmp_path_factory.mktemp("schema")))


# -- the document --------------------------------------------------------------------------------------------


def test_envelope_has_the_cli_components_and_paths(document):
    assert document["openapi"] == "3.0.2"
    assert document["info"] == {"title": "Cog", "version": cog_schema.CLI_VERSION}
    schemas = document["components"]["schemas"]
    assert list(schemas) == [
        "Input",
        "Output",
        "scheduler",
        "size",
        "PredictionRequest",
        "PredictionResponse",
        "Status",
        "HTTPValidationError",
        "ValidationError",
    ]
    assert schemas["Status"]["enum"] == ["starting", "processing", "succeeded", "canceled", "failed"]
    assert schemas["PredictionRequest"]["properties"]["input"] == {"$ref": "#/components/schemas/Input"}
    assert list(document["paths"]) == [
        "/",
        "/health-check",
        "/predictions",
        "/predictions/{prediction_id}/cancel",
    ]
    assert "422" in document["paths"]["/predictions"]["post"]["responses"]
    assert "x-cog-streaming" not in document["paths"]["/predictions"]["post"]


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
    # TestNoneDefaultOnOptionalTypeEmitsNull: None is a real default of an optional input.
    assert (
        props["mask"]["nullable"] is True and "default" in props["mask"] and props["mask"]["default"] is None
    )
    assert props["seed"]["type"] == "integer" and props["seed"]["nullable"] is True
    assert props["token"]["format"] == "password" and props["token"]["x-cog-secret"] is True
    assert props["token"]["writeOnly"] is True and props["token"]["nullable"] is True
    assert props["tidy"]["default"] is True
    assert props["prompt"]["maxLength"] == 77


def test_choices_become_enum_components(document):
    schemas = document["components"]["schemas"]
    scheduler = schemas["Input"]["properties"]["scheduler"]
    assert scheduler["allOf"] == [{"$ref": "#/components/schemas/scheduler"}]
    assert scheduler["default"] == "ddim" and "type" not in scheduler and "title" not in scheduler
    assert schemas["scheduler"] == {
        "title": "scheduler",
        "description": "An enumeration.",
        "enum": ["ddim", "euler"],
        "type": "string",
    }
    assert schemas["size"]["enum"] == [512, 768] and schemas["size"]["type"] == "integer"


def test_required_lists_exactly_the_inputs_without_a_usable_default(document):
    # TestNoneDefaultOnBareSecretIsOptional: a Secret defaulting to None is optional, an int or list is not.
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
    assert schemas_of(write_sample(tmp_path, annotation))["Output"] == expected


def test_base_model_output_lists_its_named_fields():
    assert schemas_of(LITERAL)["Output"] == {
        "title": "Output",
        "type": "object",
        "properties": {
            "video": {"title": "Video", "type": "string", "format": "uri"},
            "pose_video": {"title": "Pose Video", "type": "string", "format": "uri"},
            "comparison": {"title": "Comparison", "type": "string", "format": "uri"},
            "pose_preview": {"title": "Pose Preview", "type": "string", "format": "uri", "nullable": True},
        },
        "required": ["video", "pose_video", "comparison"],
    }


def test_class_is_taken_from_the_reference(tmp_path):
    schemas = schemas_of(f"{write_sample(tmp_path)}:Other")
    assert list(schemas["Input"]["properties"]) == ["n"]
    assert schemas["Input"]["required"] == ["n"]
    assert schemas["Output"] == {"title": "Output", "type": "string"}


def test_the_file_is_byte_for_byte_what_go_json_marshal_writes(tmp_path):
    """Compact; map keys sorted, ordered maps (components, paths, properties) in order; ``1`` not ``1.0``;
    ``<``, ``>``, ``&`` escaped; non-ASCII kept (Go encoding/json, pkg/schema/openapi_spec.go)."""
    path = predict_with(
        tmp_path,
        'b: float = Input(description="a < b & c > d, é", default=1.0, ge=0, le=2.5), a: int = Input(ge=-3)',
    )
    text = cog_schema.generate_text(path)
    assert "\n" not in text and text.startswith('{"components":{"schemas":{"Input":{"properties":{"b":')
    assert (
        '"info":{"title":"Cog","version":"'
        + cog_schema.CLI_VERSION
        + '"},"openapi":"3.0.2","paths":{"/":{"get":'
        '{"operationId":"root__get","responses":{"200":{"content":{"application/json":{"schema":{}}},'
        '"description":"Successful Response"}},"summary":"Root"}},"/health-check":'
    ) in text
    assert (
        '"properties":{"b":{"default":1,"description":"a \\u003c b \\u0026 c \\u003e d, é","maximum":2.5,'
        '"minimum":0,"title":"B","type":"number","x-order":0},"a":{"minimum":-3,"title":"A","type":"integer",'
        '"x-order":1}},"required":["a"],"title":"Input","type":"object"},"Output":{"title":"Output","type":"string"}'
    ) in text
    target = tmp_path / ".cog" / "openapi_schema.json"
    assert cog_schema.write(path, target) == target
    assert target.read_text(encoding="utf-8") == text


INTEGRATION_CASES = {
    "static_schema_gen": (
        """
        from cog import BasePredictor, Input, Path


        class Predictor(BasePredictor):
            def predict(
                self,
                text: str,
                image: Path,
                count: int = Input(description="Number of iterations", default=5, ge=1, le=100),
                mode: str = Input(
                    description="Quality mode", default="fast", choices=["fast", "balanced", "quality"]
                ),
            ) -> str:
                return text
        """,
        [
            '"openapi":"3.0.2"',
            '"default":5',
            '"enum":["fast","balanced","quality"]',
            '"required":["text","image"]',
        ],
    ),
    "build_openapi_schema": (
        """
        from cog import BasePredictor, Path


        class Predictor(BasePredictor):
            def predict(self, text: str, path: Path) -> Path:
                return path
        """,
        ['"title":"Input"', '"required":["text","path"]', '"format":"uri"'],
    ),
    "build_openapi_schema_complex": (
        """
        from typing import Optional

        from cog import BaseModel, BasePredictor, Input, Path, Secret


        class Output(BaseModel):
            text: str
            score: float


        class Predictor(BasePredictor):
            def predict(
                self,
                prompt: str = Input(description="The prompt", default="hello"),
                temperature: float = Input(description="Sampling temp", ge=0, le=2, default=0.7),
                style: str = Input(
                    description="Style", choices=["fast", "balanced", "quality"], default="balanced"
                ),
                api_key: Secret = Input(description="API key"),
                image: Optional[Path] = Input(description="Optional image", default=None),
            ) -> Output:
                return Output(text=prompt, score=temperature)
        """,
        [
            '"minimum":0',
            '"maximum":2',
            '"enum":["fast","balanced","quality"]',
            '"x-cog-secret":true',
            '"default":"hello"',
        ],
    ),
    "static_schema_secret_optional": (
        """
        from cog import BasePredictor, Input, Secret


        class Predictor(BasePredictor):
            def predict(
                self,
                prompt: str = Input(description="Text prompt"),
                api_key: Secret = Input(description="Your API key (optional)", default=None),
                api_key_required: Secret = Input(description="Required API key"),
                seed: int = Input(description="Random seed", default=None),
            ) -> str:
                return prompt
        """,
        [
            '"format":"password"',
            '"default":null',
            '"nullable":true',
            '"required":["prompt","api_key_required","seed"]',
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(INTEGRATION_CASES))
def test_cli_integration_cases(tmp_path, case):
    """integration-tests/tests/<case>.txtar of the CLI: the substrings its own tests expect in the file."""
    source, expected = INTEGRATION_CASES[case]
    text = cog_schema.generate_text(write_source(tmp_path, source))
    missing = [substring for substring in expected if substring not in text]
    assert not missing, text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.5, "0.5"),
        (-3.0, "-3"),
        (123456789.0, "123456789"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-10, "1.5e-10"),
    ],
)
def test_floats_are_written_as_go_writes_float64(value, text):
    assert go_float(value, "json") == text


@pytest.mark.parametrize(
    ("text", "as_int", "as_float"),
    [
        ("1_000", 1000, 1000.0),
        ("0x10", 16, None),
        ("-0o17", -15, None),
        ("1e-3", None, 0.001),
        ("- 1", None, None),
        ("MAX_WINDOW", None, None),
        ("1e400", None, None),
        ("9223372036854775808", None, 9223372036854775808.0),
    ],
)
def test_number_text_is_read_as_go_strconv_reads_it(text, as_int, as_float):
    assert (go_parse_int(text), go_parse_float(text)) == (as_int, as_float)


def test_cli_writes_the_file(tmp_path, capsys):
    target = tmp_path / ".cog" / "openapi_schema.json"
    assert cog_schema.main([str(write_sample(tmp_path)), "-o", str(target)]) == 0
    assert json.loads(target.read_text())["components"]["schemas"]["Input"]["required"] == ["image", "refs"]
    captured = capsys.readouterr()
    assert captured.out.strip() == str(target)
    assert captured.err.strip() == "cog: warning: Predictor.predict() is deprecated; use run() instead"


def test_cli_reports_a_refusal_as_cog_build_does(tmp_path, capsys):
    target = tmp_path / "schema.json"
    assert cog_schema.main([str(COMPUTED_CHOICES), "-o", str(target)]) == 1
    assert capsys.readouterr().err == (
        "image build failed: parameter 'style': choices expression cannot be statically resolved\n"
    )
    assert not target.exists()


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictor file not found"):
        cog_schema.generate(tmp_path / "absent.py")


# -- what the CLI refuses, with its messages -----------------------------------------------------------------

CHOICES_REFUSED = "parameter 'x': choices expression cannot be statically resolved"


@pytest.mark.parametrize(
    ("parameters", "prelude"),
    [
        ("x: str = Input(choices=NOT_A_LIST)", 'NOT_A_LIST = "oops"'),  # TestChoicesVarNotAListErrors
        ("x: str = Input(choices=DOES_NOT_EXIST)", ""),  # TestChoicesUndefinedVarErrors
        ("x: str = Input(choices=get_choices())", ""),  # TestChoicesArbitraryCallErrors
        ('x: str = Input(choices=[f"{i}x" for i in range(5)])', ""),  # TestChoicesListComprehensionErrors
        (
            "x: str = Input(choices=NESTED)",
            'def helper():\n    NESTED = ["a", "b"]',
        ),  # ...NestedVarNotInScope
        ("x: str = Input(choices=sorted(STYLES))", 'STYLES = {"oil": 1}'),
        ("x: str = Input(choices=list(STYLES))", 'STYLES = {"oil": 1}'),
        ("x: str = Input(choices=TAGS)", 'TAGS = {"a", "b"}'),
        ("x: str = Input(choices=[NAME])", 'NAME = "a"'),
        # A comment between the items is one more child of the list node in tree-sitter: no literal list.
        ('x: str = Input(choices=[\n        "a",  # the first\n        "b",\n    ])', ""),
    ],
)
def test_choices_the_cli_cannot_resolve_stop_the_build(tmp_path, parameters, prelude):
    error = refusal(predict_with(tmp_path, parameters, prelude))
    assert (error.kind, error.message) == (ErrorKind.CHOICES_NOT_RESOLVABLE, CHOICES_REFUSED)


def test_the_computed_choices_predictor_is_refused():
    error = refusal(COMPUTED_CHOICES)
    assert (error.kind, error.message) == (
        ErrorKind.CHOICES_NOT_RESOLVABLE,
        "parameter 'style': choices expression cannot be statically resolved",
    )


@pytest.mark.parametrize(
    ("parameters", "output", "kind", "message"),
    [
        (  # TestDefaultFactoryError
            "x: list[str] = Input(default_factory=list)",
            "str",
            ErrorKind.DEFAULT_FACTORY_NOT_SUPPORTED,
            "parameter 'x': default_factory is not supported in static schema generation",
        ),
        (  # TestDefaultUndefinedVarPlainErrors
            "x: int = compute()",
            "str",
            ErrorKind.DEFAULT_NOT_RESOLVABLE,
            "parameter 'x': default `compute()` cannot be statically resolved",
        ),
        (  # TestMissingTypeAnnotation
            "x=1",
            "str",
            ErrorKind.MISSING_TYPE_ANNOTATION,
            "parameter 'x' on predict has no type annotation",
        ),
        (  # TestOptionalOutputPipeNoneErrors
            "x: str",
            "Path | None",
            ErrorKind.OPTIONAL_OUTPUT,
            "unsupported output type: Optional is not allowed as a return type",
        ),
        (  # TestAcceptOnNonFileTypeErrors
            'x: str = Input(accept="image/*")',
            "str",
            ErrorKind.ACCEPT_ON_NON_FILE_TYPE,
            "accept is only valid on Path or File inputs (parameter 'x')",
        ),
        (  # TestUnresolvableUndefinedTypeError
            "x: Tensor",
            "str",
            ErrorKind.UNSUPPORTED_TYPE,
            "unsupported type: Tensor",
        ),
        (
            "x: list[str | None]",
            "str",
            ErrorKind.UNSUPPORTED_TYPE,
            "unsupported type: nested generics like List[Optional[X]] are not supported",
        ),
    ],
)
def test_other_refusals_carry_the_cli_messages(tmp_path, parameters, output, kind, message):
    error = refusal(predict_with(tmp_path, parameters, output=output))
    assert (error.kind, error.message) == (kind, message)


def test_an_imported_type_is_refused_with_the_opaque_hint(tmp_path):
    """TestUnresolvableImportedTypeError."""
    error = refusal(predict_with(tmp_path, "x: str", "from torch import Tensor", output="Tensor"))
    assert error.kind is ErrorKind.UNRESOLVABLE_TYPE
    assert error.message.startswith("cannot resolve type 'Tensor' (imported from 'torch') - external types")
    assert "`field: Annotated[Tensor, Opaque]`" in error.message


def test_target_lookup_errors(tmp_path):
    path = write_source(
        tmp_path, "from cog import BasePredictor\n\nclass Predictor(BasePredictor):\n    pass\n"
    )
    assert refusal(f"{path}:Missing").message == "Missing"  # TestPredictorNotFound
    assert (
        refusal(path).message == "Predictor must define run() or predict()"
    )  # TestRunnerWithNoRunOrPredictErrors
    no_return = predict_with(tmp_path, "x: str").read_text().replace(" -> str:", ":")
    assert refusal(write_source(tmp_path, no_return)).message == "predict"  # TestMissingReturnType


@pytest.mark.parametrize(
    ("output", "prelude", "feature"),
    [
        ("Result", "from helpers import Result", "cross-file types"),
        ("Result", "from typing import TypedDict\n\nclass Result(TypedDict):\n    a: int", "TypedDict types"),
        ("Annotated[dict, Opaque]", "from typing import Annotated\nfrom cog import Opaque", "Opaque"),
    ],
)
def test_what_the_port_does_not_copy_is_refused_not_guessed(tmp_path, output, prelude, feature):
    """The CLI reads the project's other files, TypedDicts and Opaque types; this port says so and stops."""
    (tmp_path / "helpers.py").write_text(
        "from cog import BaseModel\n\nclass Result(BaseModel):\n    a: int\n"
    )
    with pytest.raises(cog_schema.NotMirrored, match=feature):
        cog_schema.generate(predict_with(tmp_path, "x: str", prelude, output=output))


# -- what the CLI accepts, and what it drops or garbles without a word ---------------------------------------


@pytest.mark.parametrize(
    ("choices", "prelude", "expected"),
    [
        ("LEVELS", 'LEVELS = ["a", "b"]', ["a", "b"]),  # TestChoicesModuleLevelListVar
        ("LEVELS", 'LEVELS = ("a", "b")', ["a", "b"]),
        ("list(RATIOS.keys())", 'RATIOS = {"1:1": 1, "16:9": 2}', ["1:1", "16:9"]),  # TestChoicesListDictKeys
        ("list(LABELS.values())", 'LABELS = {"fast": "Fast", "slow": "Slow"}', ["Fast", "Slow"]),
        ('list(SIZES.keys()) + ["custom"]', 'SIZES = {"s": 1, "l": 2}', ["s", "l", "custom"]),
        ("BASE + EXTRA", 'BASE = ["a", "b"]\nEXTRA = ["c"]', ["a", "b", "c"]),  # TestChoicesConcatTwoVars
    ],
)
def test_choices_the_cli_resolves(tmp_path, choices, prelude, expected):
    schemas = schemas_of(predict_with(tmp_path, f"x: str = Input(choices={choices})", prelude))
    assert schemas["x"]["enum"] == expected


def test_integer_dict_keys_make_integer_choices(tmp_path):
    """TestChoicesIntegerDictKeys."""
    path = predict_with(
        tmp_path, "x: int = Input(choices=list(STEPS.keys()), default=1)", 'STEPS = {1: "one", 4: "four"}'
    )
    assert schemas_of(path)["x"] == {
        "title": "x",
        "description": "An enumeration.",
        "enum": [1, 4],
        "type": "integer",
    }


def test_the_literal_predictor_resolves_module_level_and_dict_key_choices():
    schemas = schemas_of(LITERAL)
    assert schemas["scheduler"]["enum"] == ["ddim", "euler"]
    assert schemas["quality"]["enum"] == ["draft", "standard", "high"]
    assert schemas["sampler"]["enum"] == ["ddim", "euler", "draft"]


def test_a_named_bound_is_dropped_but_a_named_default_is_read(tmp_path):
    props = schemas_of(
        predict_with(tmp_path, "x: int = Input(default=LOW, ge=LOW, le=HIGH)", "LOW = 2\nHIGH = 128")
    )["Input"]["properties"]
    assert props["x"]["default"] == 2
    assert "minimum" not in props["x"] and "maximum" not in props["x"]
    assert "maximum" not in schemas_of(NAMED_BOUND)["Input"]["properties"]["window"]


def test_an_unreadable_default_becomes_null_and_the_input_required(tmp_path):
    schemas = schemas_of(
        predict_with(tmp_path, 'x: int = Input(default=int("4")), y: int = Input(default=None)')
    )
    assert "default" not in schemas["Input"]["properties"]["x"]
    # TestNoneDefaultOnRequiredTypeIsRequired: the same for an explicit None.
    assert schemas["Input"]["required"] == ["x", "y"]


@pytest.mark.parametrize(
    ("description", "prelude", "expected"),
    [
        ('"a " "b"', "", 'a " "b'),
        ('"it\\\'s"', "", "it\\'s"),
        ('"line\\nbreak"', "", "line\\nbreak"),
        ('"""triple"""', "", "triple"),
        ('"a" + "b"', "", 'a" + "b'),
        (
            "DESCRIPTION",
            'DESCRIPTION = "From the module."',
            "From the module.",
        ),  # TestDescriptionFromModuleLevelVar
    ],
)
def test_descriptions_are_the_raw_text_between_the_outer_quotes(tmp_path, description, prelude, expected):
    props = schemas_of(predict_with(tmp_path, f"x: str = Input(description={description})", prelude))
    assert props["Input"]["properties"]["x"]["description"] == expected


@pytest.mark.parametrize("description", ['("a " "b")', 'f"{1}"', 'b"x"', "NOT_DEFINED"])
def test_descriptions_the_cli_cannot_read_are_dropped(tmp_path, description):
    props = schemas_of(predict_with(tmp_path, f"x: str = Input(description={description})"))
    assert props["Input"]["properties"] == {"x": {"title": "X", "type": "string", "x-order": 0}}


def test_the_concatenated_description_predictor_is_garbled():
    prop = schemas_of(CONCATENATED_DESCRIPTION)["Input"]["properties"]["prompt"]
    assert prop["description"] == (
        'What to draw: one sentence naming the subject, the setting and the light; "\n'
        '            "the style comes from the style image.'
    )


def test_run_wins_over_predict_and_parents_in_the_file_count(tmp_path):
    """TestRunnerWithBothRunAndPredictUsesRun, TestRunnerWithInheritedRun."""
    path = write_source(
        tmp_path,
        """
        from cog import BasePredictor, Input


        class Base(BasePredictor):
            def run(self, a: int = Input(default=1)) -> str:
                return ""


        class Predictor(Base):
            def predict(self, b: int = Input(default=2)) -> str:
                return ""
        """,
    )
    assert list(schemas_of(path)["Input"]["properties"]) == ["a"]


def test_streaming_decorator_marks_the_operation(tmp_path):
    """TestStreamingDecoratorImportedOptIn, TestPredictionOperationIncludesStreamingExtensionWhenEnabled."""
    path = write_source(
        tmp_path,
        """
        from collections.abc import Iterator

        from cog import BasePredictor, streaming


        class Predictor(BasePredictor):
            @streaming
            def predict(self) -> Iterator[str]:
                yield ""
        """,
    )
    assert cog_schema.generate(path)["paths"]["/predictions"]["post"]["x-cog-streaming"] is True


# -- the static schema against the imported signature --------------------------------------------------------

_ABSENT = object()


def _canonical(value):
    """JSON numbers compare by value (the CLI writes 0.0 as 0), booleans stay booleans."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return {key: _canonical(item) for key, item in value.items()}


def _comparable(prop: dict | None) -> dict:
    """A property; a null default on a nullable input is the same as none (coglet injects null)."""
    prop = dict(prop or {})
    if prop.get("nullable") and prop.get("default", _ABSENT) is None:
        del prop["default"]
    return _canonical(prop)


def schema_differences(ref: Path | str) -> list[str]:
    """Every field on which the static schema (what users get) and the imported signature disagree."""
    static = schemas_of(ref)
    runtime = cog_runtime.runtime_schemas(ref)
    differences = []
    static_props, runtime_props = static["Input"]["properties"], runtime["Input"]["properties"]
    for name in dict.fromkeys([*runtime_props, *static_props]):
        mine, theirs = _comparable(static_props.get(name)), _comparable(runtime_props.get(name))
        for key in dict.fromkeys([*theirs, *mine]):
            if mine.get(key, _ABSENT) != theirs.get(key, _ABSENT):
                differences.append(
                    f"input {name!r}: {key} is {mine.get(key, 'absent')!r} in the static schema, "
                    f"{theirs.get(key, 'absent')!r} in the code"
                )
        if "allOf" in theirs and _canonical(static.get(name)) != _canonical(runtime.get(name)):
            differences.append(
                f"input {name!r}: choices {static.get(name)} in the static schema, {runtime[name]}"
            )
    for key in ("required",):
        if static["Input"].get(key) != runtime["Input"].get(key):
            differences.append(f"Input {key}: {static['Input'].get(key)} vs {runtime['Input'].get(key)}")
    if _canonical(static["Output"]) != _canonical(runtime["Output"]):
        differences.append(
            f"Output: {static['Output']} in the static schema, {runtime['Output']} in the code"
        )
    return differences


@pytest.mark.parametrize("path", [LITERAL, ECHO], ids=["literal", "echo"])
def test_static_schema_matches_the_signature_of_literal_predictors(path):
    assert schema_differences(path) == []


def test_a_named_bound_is_caught_as_a_difference():
    assert schema_differences(NAMED_BOUND) == [
        "input 'window': maximum is 'absent' in the static schema, 128.0 in the code"
    ]


def test_a_concatenated_description_is_caught_as_a_difference():
    written = schemas_of(CONCATENATED_DESCRIPTION)["Input"]["properties"]["prompt"]["description"]
    meant = "What to draw: one sentence naming the subject, the setting and the light; " + (
        "the style comes from the style image."
    )
    assert schema_differences(CONCATENATED_DESCRIPTION) == [
        f"input 'prompt': description is {written!r} in the static schema, {meant!r} in the code"
    ]


# -- the real predictors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nst", "sd_style", "musepose"])
def test_real_predictor_passes_the_cli_rules(name):
    schemas = schemas_of(REPO_ROOT / "predictors" / name / "predict.py")
    properties = schemas["Input"]["properties"]
    assert properties, "predict() takes no inputs"
    undocumented = [field for field, prop in properties.items() if not prop.get("description")]
    assert not undocumented, f"inputs without a description: {undocumented}"
    assert "uri" in json.dumps(schemas["Output"]), "the output should be a file (Path) or files"


@pytest.mark.parametrize("name", ["nst", "sd_style", "musepose"])
def test_real_predictor_static_schema_matches_its_signature(name):
    assert schema_differences(REPO_ROOT / "predictors" / name / "predict.py") == []


# -- the tools that run predictors use the static schema -----------------------------------------------------


def test_make_predict_refuses_what_cog_build_refuses(tmp_path, capsys):
    assert run_predictor.main([str(COMPUTED_CHOICES), "-o", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "parameter 'style': choices expression cannot be statically resolved\n"


def test_make_predict_enforces_only_what_the_schema_holds(tmp_path, capsys):
    """A bound the CLI drops is no bound in production: the server lets 500 through, and so does this."""
    assert run_predictor.main([str(NAMED_BOUND), "-i", "window=500", "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "500"


def test_the_server_harness_refuses_before_starting_a_server():
    with pytest.raises(cog_schema.SchemaError, match="choices expression cannot be statically resolved"):
        CogServer(COMPUTED_CHOICES).start()


def test_input_validation_matches_the_server(document, tmp_path):
    component = run_predictor.input_component(document)
    good = {"image": "data:,x", "refs": ["https://example.com/a.png"], "scheduler": "euler"}
    assert run_predictor.check_inputs(component, good) == good
    # Only an optional input without any default is sent as null (coglet inject_missing_optionals).
    bare_document = cog_schema.generate(predict_with(tmp_path, "x: str | None, y: int = 1"))
    bare = run_predictor.input_component(bare_document)
    assert run_predictor.check_inputs(bare, {}) == {"x": None}
    for bad, message in (
        ({**good, "steps": 0}, "steps: 0 is less than the minimum of 1"),
        ({**good, "scheduler": "heun"}, "scheduler: 'heun' is not one of ['ddim', 'euler']"),
        ({**good, "size": 640}, "size: 640 is not one of [512, 768]"),
        ({"refs": []}, "image: Field required"),
    ):
        with pytest.raises(
            run_predictor.UsageError, match="^" + message.replace("[", r"\[").replace("]", r"\]")
        ):
            run_predictor.check_inputs(component, bad)


def test_make_predict_saves_each_file_of_a_named_output(tmp_path, capsys):
    image = tmp_path / "image.png"
    image.write_bytes(b"png")
    assert run_predictor.main([str(LITERAL), "-i", f"image=@{image}", "-o", str(tmp_path / "out")]) == 0
    printed = [Path(line) for line in capsys.readouterr().out.split()]
    assert [path.name for path in printed] == ["video.txt", "pose_video.txt", "comparison.txt"]
    assert printed[0].read_text() == "video ddim standard 48"
