"""Test helpers for the real Cog HTTP server (``python -m cog.server.http``) on 127.0.0.1.

A test module for a predictor looks like this (one server per module; the xdist group keeps the module's
tests on one worker so the server starts once)::

    import pytest

    from tests.http.harness import assert_validation_errors, data_uri, output_bytes, tiny_environment

    pytestmark = [pytest.mark.http, pytest.mark.xdist_group("http-nst")]

    @pytest.fixture(scope="module")
    def server(cog_server):
        return cog_server("predictors/nst/predict.py", env=tiny_environment(["vgg19"]))

    def test_sync(server, tmp_path):
        prediction = server.predict({"image": data_uri("examples/content.jpg"), "iterations": 2})
        assert prediction["status"] == "succeeded", prediction.get("error")
        png = output_bytes(prediction)[0]

    def test_bad_input(server):
        response = server.post_prediction({"iterations": -1})
        assert_validation_errors(response, {"iterations": "minimum", "image": "Field required"})

    def test_async(server, webhook):
        started = server.predict_async({"image": ...}, webhook.url)
        final = webhook.wait_completed(started["id"])

    def test_cancel(server, webhook):
        server.predict_async({...}, webhook.url, prediction_id="cancel-me")
        webhook.wait_for(lambda event: event["id"] == "cancel-me" and "step 2" in (event.get("logs") or ""))
        server.cancel("cancel-me")
        assert webhook.wait_completed("cancel-me")["status"] == "canceled"
        server.wait_ready()

Fixtures (``tests/http/conftest.py``): ``cog_server(predictor, env=None)`` starts a server (the schema comes
from ``tools.cog_schema``; the environment gets what the images set, ``TRIPTYCH_REJECT_LOCAL_PATHS=1``, plus
``env``, over the suite's own, which keeps ``HF_HUB_OFFLINE=1``) and stops it at the end of the module;
``predictor_server(predictor, env=None)`` is the same but shared by every module of the session that asks
for the same predictor and environment (a predictor's functional and hostile-input modules, one xdist
group), with a private temp directory and HOME; ``webhook`` is a ``WebhookReceiver`` for the module.

``CogServer`` methods: ``predict(inputs)`` (sync, retries 409, returns the prediction JSON whatever its
status), ``post_prediction(inputs, ...)`` (the raw response, for 422 checks), ``predict_async(inputs,
webhook_url, events=..., prediction_id=...)``, ``cancel(id)``, ``health()``, ``wait_ready()``, ``log_text()``.
Inputs are plain JSON values; files go as ``data_uri(path)``. ``output_bytes(prediction)`` decodes every
output file (data URIs or URLs) to bytes.
"""

from __future__ import annotations

import requests

from tools.cog_server import CogServer, ServerError, WebhookReceiver, data_uri, decode_output, output_bytes

__all__ = [
    "CogServer",
    "ServerError",
    "WebhookReceiver",
    "assert_validation_errors",
    "data_uri",
    "decode_output",
    "output_bytes",
    "tiny_environment",
]


def tiny_environment(parts: list[str], seed: int = 0) -> dict[str, str]:
    """Environment pointing the weights layer at a tiny root holding ``parts`` (built once, then cached)."""
    from tools.tiny_weights import build, environment

    return environment(build(parts, seed=seed))


def assert_validation_errors(response: requests.Response, expected: dict[str, str]) -> dict[str, str]:
    """Assert a 422 whose per-field messages name each field in ``expected`` and contain its text.

    Returns ``{field: message}`` (``detail[].loc`` ends with the input name).
    """
    assert response.status_code == 422, f"expected 422, got {response.status_code}: {response.text[:1000]}"
    errors = {str(item["loc"][-1]): item["msg"] for item in response.json()["detail"]}
    for field, fragment in expected.items():
        assert field in errors, f"no validation error for {field!r}: {errors}"
        assert fragment in errors[field], f"{field!r}: {errors[field]!r} lacks {fragment!r}"
    return errors
