"""Call a Predictor's ``predict()`` the way Cog does: every input not given takes its ``Input`` default."""

from __future__ import annotations

from typing import Any

from tools.cog_runtime import input_defaults


def call_predict(predictor: Any, **inputs: Any) -> Any:
    """``predictor.predict(**inputs)`` with the omitted inputs at their declared defaults (as the worker
    fills them), so a test names only what it changes."""
    return predictor.predict(**{**input_defaults(type(predictor)), **inputs})
