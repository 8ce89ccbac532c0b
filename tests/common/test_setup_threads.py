"""Every predictor's setup() applies TRIPTYCH_TORCH_THREADS itself (select_device only picks the device)."""

from __future__ import annotations

import pytest
import torch

from predictors.common import runtime


@pytest.mark.parametrize(
    ("module", "parts", "env"),
    [
        ("predictors.nst.predict", ["vgg19"], {}),
        ("predictors.sd_style.predict", ["sd15"], {"TRIPTYCH_SD_FAMILY": "sd15"}),
        ("predictors.musepose.predict", ["dwpose", "musepose"], {}),
    ],
    ids=["nst", "sd_style", "musepose"],
)
def test_setup_applies_the_thread_setting(tiny_predictor, monkeypatch, module, parts, env):
    before = torch.get_num_threads()
    monkeypatch.setenv(runtime.THREADS_ENV, "2")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        torch.set_num_threads(1)
        with tiny_predictor(module, parts):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
