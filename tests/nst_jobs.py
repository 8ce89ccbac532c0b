"""nst jobs for tests: the API's defaults (from the ``Input`` declarations), changed by keyword."""

from __future__ import annotations

import dataclasses
from typing import Any

from predictors.nst.optimize import Final, iterate
from predictors.nst.predict import Predictor
from predictors.nst.transfer import Job
from tools.cog_runtime import input_defaults


def make_job(**changes: Any) -> Job:
    """A Job as predict() builds it from the default inputs (one style, seed 0), with ``changes``."""
    defaults = input_defaults(Predictor)
    values = {field.name: defaults[field.name] for field in dataclasses.fields(Job) if field.name in defaults}
    return Job(**{**values, "style_weights": (1.0,), "seed": 0, **changes})


def run_to_end(vgg, content, styles, job: Job, **options: Any) -> Final:
    """``iterate`` run to its end: the Final (previews dropped)."""
    *_, final = iterate(vgg, content, styles, job, **options)
    return final
