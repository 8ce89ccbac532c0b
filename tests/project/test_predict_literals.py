"""The predictors' Input(...) declarations as Cog's static schema reader sees them, and their agreement with
the cores' constants.

The Cog CLI reads predict() with tree-sitter and evaluates nothing (replicate/cog
pkg/schema/python/inputs.go, literals.go): ``ge``/``le`` must be number literals, ``default`` a literal,
``choices`` a literal list, and a string literal's text between its quotes is taken verbatim (escapes are not
decoded, implicitly concatenated pieces are not joined cleanly). So the declarations repeat the cores' values
as literals, and these tests keep the two in step. The literals are read from the source with ``ast`` and
``tokenize``, never by importing predict.py, which is exactly what Cog sees.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import tokenize

import pytest

from predictors.musepose.animate import Request
from predictors.musepose.models.config import MAX_WINDOW
from predictors.nst import transfer
from predictors.sd_style.ip_adapter_layers import STYLE_MODES
from predictors.sd_style.pipeline import SCHEDULERS, Job
from tests.conftest import REPO_ROOT

PREDICTORS = ("nst", "sd_style", "musepose")
NUMBER_KEYWORDS = ("ge", "le")


def source(name: str) -> str:
    return (REPO_ROOT / "predictors" / name / "predict.py").read_text()


def input_calls(name: str) -> dict[str, dict[str, ast.expr]]:
    """Parameter name -> the keyword arguments of its ``Input(...)`` in ``Predictor.predict``."""
    tree = ast.parse(source(name))
    (predictor,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Predictor"]
    (predict,) = [
        node for node in predictor.body if isinstance(node, ast.FunctionDef) and node.name == "predict"
    ]
    arguments = predict.args.args[-len(predict.args.defaults) :]
    calls = {}
    for argument, default in zip(arguments, predict.args.defaults, strict=True):
        assert isinstance(default, ast.Call) and ast.unparse(default.func) == "Input", argument.arg
        calls[argument.arg] = {keyword.arg: keyword.value for keyword in default.keywords}
    return calls


def module_scope(name: str) -> dict[str, ast.expr]:
    """Module-level ``NAME = <expression>`` bindings: Cog resolves a bare name through them when the bound
    expression is itself a literal (module_scope.go)."""
    return {
        node.targets[0].id: node.value
        for node in ast.parse(source(name)).body
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
    }


def literal(node: ast.expr, scope: dict[str, ast.expr]):
    """The value of a literal as Cog reads it: a constant, a negated number, a list of constants, or a
    module-level name bound to one of those."""
    if isinstance(node, ast.Name) and node.id in scope:
        return literal(scope[node.id], {})
    if isinstance(node, ast.List):
        return [literal(item, {}) for item in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = literal(node.operand, {})
        assert isinstance(value, int | float), ast.unparse(node)
        return -value
    assert isinstance(node, ast.Constant), f"{ast.unparse(node)} is not a literal"
    return node.value


def declared(name: str) -> dict[str, dict[str, object]]:
    """Parameter name -> its Input keywords as literal values (the assertion names any that is not)."""
    scope = module_scope(name)
    return {
        parameter: {key: literal(value, scope) for key, value in keywords.items()}
        for parameter, keywords in input_calls(name).items()
    }


def string_tokens(text: str, node: ast.expr) -> list[str]:
    segment = ast.get_source_segment(text, node)
    tokens = tokenize.generate_tokens(io.StringIO(segment).readline)
    return [token.string for token in tokens if token.type == tokenize.STRING]


@pytest.mark.parametrize("name", PREDICTORS)
def test_every_input_keyword_is_a_literal(name):
    for parameter, keywords in declared(name).items():
        for key in NUMBER_KEYWORDS:
            if key in keywords:
                assert isinstance(keywords[key], int | float), (parameter, key)
        if "choices" in keywords:
            choices = keywords["choices"]
            assert isinstance(choices, list) and choices, parameter
            assert keywords["default"] in choices, parameter


@pytest.mark.parametrize("name", PREDICTORS)
def test_every_description_is_one_plain_string_literal(name):
    text = source(name)
    for parameter, keywords in input_calls(name).items():
        node = keywords["description"]
        (token,) = string_tokens(text, node)  # several tokens: implicit concatenation
        # Cog keeps the text between the quotes as it is: no prefix, no escape sequence, no triple quotes.
        assert token[0] == token[-1] == '"' and not token.startswith('"""'), parameter
        assert token[1:-1] == node.value and "\\" not in token, parameter


def test_nst_quality_choices_are_the_iteration_presets():
    quality = declared("nst")["quality"]
    presets = transfer.QUALITY_ITERATIONS
    assert quality["choices"] == list(presets) == ["draft", "standard", "high"]
    assert quality["default"] == "standard"
    # The description spells out the presets' counts.
    for preset, count in presets.items():
        assert f"{preset} {count}" in quality["description"]


def test_nst_choices_are_the_cores():
    inputs = declared("nst")
    assert inputs["optimizer"]["choices"] == list(transfer.OPTIMIZERS)
    assert inputs["init"]["choices"] == list(transfer.INITS)
    assert inputs["color_preservation"]["choices"] == list(transfer.COLOR_PRESERVATIONS)
    assert inputs["pooling"]["choices"] == list(transfer.POOLINGS)
    assert inputs["padding"]["choices"] == list(transfer.PADDINGS)
    assert inputs["precision"]["choices"] == list(transfer.PRECISIONS)


def test_sd_style_choices_are_the_cores():
    inputs = declared("sd_style")
    assert inputs["style_mode"]["choices"] == list(STYLE_MODES)
    assert inputs["scheduler"]["choices"] == list(SCHEDULERS)
    assert inputs["scheduler"]["default"] == SCHEDULERS[0]


def test_musepose_request_takes_every_input_under_its_name_without_a_default_of_its_own():
    fields = dataclasses.fields(Request)
    assert [field.name for field in fields] == list(declared("musepose"))
    assert all(field.default is dataclasses.MISSING for field in fields)


def test_musepose_window_bounds_are_the_motion_modules_range():
    inputs = declared("musepose")
    assert inputs["window"]["le"] == MAX_WINDOW == 128
    assert inputs["overlap"]["le"] == MAX_WINDOW - 1


# Inputs handed to the core's request unchanged, under the same name (others are parsed or renamed first).
PASSED_THROUGH = {
    "sd_style": (
        Job,
        [
            "prompt",
            "negative_prompt",
            "style_strength",
            "structure_strength",
            "style_mode",
            "denoise_strength",
            "canny_low",
            "canny_high",
            "num_inference_steps",
            "guidance_scale",
            "scheduler",
            "num_outputs",
            "detail_pass",
            "turbo",
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(PASSED_THROUGH))
def test_defaults_agree_with_the_cores_request(name):
    request_type, names = PASSED_THROUGH[name]
    inputs = declared(name)
    core = {field.name: field.default for field in dataclasses.fields(request_type)}
    for parameter in names:
        # Defaults live once: a core field without one takes the Input's; one with a default must agree.
        assert parameter in core, parameter
        assert core[parameter] is dataclasses.MISSING or inputs[parameter]["default"] == core[parameter], (
            parameter
        )
