"""tools/cog_compat.py: the private parts of Cog the tools rely on, as cog 0.23.1 has them.

When Cog is upgraded the first test fails by name; the others say which piece moved.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import cog
import pytest

from tools import cog_compat
from tools.cog_runtime import import_predictor

PREDICTORS = Path(__file__).resolve().parents[1] / "predictors_for_tests"
ECHO = PREDICTORS / "echo_predict.py"
LITERAL = PREDICTORS / "schema_literal_predict.py"


class SecretEcho(cog.BasePredictor):
    def predict(self, token: cog.Secret = cog.Input(description="A credential.", default=None)) -> str:
        return "hidden" if token else "none"


def test_written_for_cog_0_23_1():
    assert cog_compat.COG_VERSION == "0.23.1"
    assert cog.__version__ == cog_compat.COG_VERSION, (
        f"tools/cog_compat.py was written for cog {cog_compat.COG_VERSION}, cog {cog.__version__} is "
        "installed: check each function against the new SDK's _inspector/_adt/predictor, then update it"
    )


def test_predict_method_is_what_the_server_calls():
    echo = import_predictor(ECHO)
    assert cog_compat.predict_method(echo) is echo.predict

    class Runner(cog.BaseRunner):
        def run(self, text: str = cog.Input(description="t")) -> str:
            return text

    assert cog_compat.predict_method(Runner) is Runner.run


def test_unwrapped_is_the_function_under_the_boundary_decorator():
    echo = import_predictor(ECHO)
    original = cog_compat.unwrapped(echo.predict)
    assert original is not echo.predict
    assert inspect.signature(original) == inspect.signature(echo.predict)
    assert not hasattr(original, "__wrapped__")


def test_predictor_info_types_the_inputs_in_order():
    info = cog_compat.predictor_info(import_predictor(LITERAL))
    fields = info.inputs
    assert list(fields) == ["image", "scheduler", "quality", "sampler", "window", "strength", "seed", "mask"]
    assert [fields[name].order for name in fields] == list(range(8))
    assert {name: cog_compat.json_type(field.type) for name, field in fields.items()} == {
        "image": "string",
        "scheduler": "string",
        "quality": "string",
        "sampler": "string",
        "window": "integer",
        "strength": "number",
        "seed": "integer",
        "mask": "string",
    }
    assert [name for name, field in fields.items() if cog_compat.is_optional(field.type)] == ["seed", "mask"]
    assert (fields["window"].default, fields["window"].ge, fields["window"].le) == (48, 2, 128)
    assert fields["scheduler"].choices == ["ddim", "euler"]
    assert not any(cog_compat.is_secret(field.type) for field in fields.values())


def test_a_secret_input_is_recognised():
    token = cog_compat.predictor_info(SecretEcho).inputs["token"]
    assert cog_compat.is_secret(token.type)
    # Not optional by its type: the CLI makes it nullable for its None default (tools/cog_runtime.py).
    assert not cog_compat.is_optional(token.type)


@pytest.mark.parametrize(("weights", "expected"), [(None, None), ("/src/weights", "/src/weights")])
def test_set_up_hands_cog_weights_to_a_setup_that_takes_them(monkeypatch, weights, expected):
    if weights is None:
        monkeypatch.delenv("COG_WEIGHTS", raising=False)
    else:
        monkeypatch.setenv("COG_WEIGHTS", weights)

    class TakesWeights(cog.BasePredictor):
        def setup(self, weights: str | None = None) -> None:
            self.weights = weights

    class Plain(cog.BasePredictor):
        def setup(self) -> None:
            self.weights = "plain"

    taking, plain = TakesWeights(), Plain()
    cog_compat.set_up(taking)
    cog_compat.set_up(plain)
    assert (taking.weights, plain.weights) == (expected, "plain")
