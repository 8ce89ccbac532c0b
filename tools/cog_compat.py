"""The one door to what Cog does not publish: its private modules (``cog._adt``, ``cog._inspector``) and
the unexported helpers of ``cog.predictor``, as cog 0.23.1 has them (``COG_VERSION``).

The tools need three things the worker knows and the SDK does not export: which method serves predictions,
the inspector's typed view of the inputs (what the schema was made from before the CLI went static), and how
``setup()`` receives ``COG_WEIGHTS``. A Cog release that moves them breaks this module alone;
``tests/tools/test_cog_compat.py`` names the version and fails first.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from cog import _adt, _inspector
from cog.predictor import extract_setup_weights, has_setup_weights

# The Cog SDK these functions were written against (pinned in requirements/ and in the test).
COG_VERSION = "0.23.1"

PredictorInfo = _adt.PredictorInfo
InputField = _adt.InputField
FieldType = _adt.FieldType


def predict_method(predictor: type) -> Callable[..., Any]:
    """The method the server calls (run() or, for older predictors, predict())."""
    with warnings.catch_warnings():
        # BasePredictor/predict() are deprecated aliases in this SDK; they still serve, so stay quiet.
        warnings.simplefilter("ignore", DeprecationWarning)
        return _inspector._selected_predict_method(predictor, predictor.__name__)[1]


def unwrapped(method: Callable[..., Any]) -> Callable[..., Any]:
    """The function the inspector reads a signature from, under any decorators (``__wrapped__``)."""
    return _inspector._unwrap(method)


def predictor_info(predictor: type) -> PredictorInfo:
    """The inspector's typed view of ``predictor`` (inputs in order, output type), as the worker builds it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _inspector.create_predictor(predictor.__module__, predictor.__name__)


def is_optional(field_type: FieldType) -> bool:
    """``X | None`` or ``list[X] | None``: the input may be null."""
    return field_type.repetition in (_adt.Repetition.OPTIONAL, _adt.Repetition.OPTIONAL_REPEATED)


def is_secret(field_type: FieldType) -> bool:
    return field_type.primitive is _adt.PrimitiveType.SECRET


def json_type(field_type: FieldType) -> str:
    """The JSON type of one value (``"string"``, ``"integer"``...), as an enum of choices is typed."""
    return field_type.primitive.json_type()["type"]


def set_up(predictor: Any) -> None:
    """``predictor.setup()``, given ``COG_WEIGHTS`` as ``weights`` when it takes them, as the worker does."""
    if has_setup_weights(predictor):
        predictor.setup(weights=extract_setup_weights(predictor))
    else:
        predictor.setup()
