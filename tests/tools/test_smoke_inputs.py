"""tools/smoke.py: its per-predictor inputs keep matching the predictors' predict() signatures."""

from __future__ import annotations

import pytest

from tools import smoke


@pytest.mark.parametrize("name", sorted(smoke.SMOKES))
def test_smoke_inputs_match_the_signature(name, tmp_path):
    case = smoke.SMOKES[name]
    smoke.check_inputs(case, case.inputs(tmp_path))


def test_a_stale_input_name_is_reported(tmp_path):
    case = smoke.SMOKES["nst"]
    inputs = {**case.inputs(tmp_path), "colour": "red"}
    del inputs["image"]
    with pytest.raises(smoke.StaleInputs, match=r"unknown: \['colour'\], missing required: \['image'\]"):
        smoke.check_inputs(case, inputs)


def test_unknown_predictor_names_are_refused(capsys):
    with pytest.raises(SystemExit):
        smoke.main(["nope"])
    assert "unknown predictor(s): nope" in capsys.readouterr().err
