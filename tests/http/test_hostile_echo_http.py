"""Hostile inputs against the shared Cog boundary, through the real server with the small echo predictor:
URLs served from 127.0.0.1 by hosts that fail, drip or never end, paths on the server, numbers, and
protocol abuse. Every case: one clear sentence, READY again, the next prediction succeeds, nothing left in
the temp directory (``tests/http/hostile.py``)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.http import hostile
from tests.http.harness import data_uri, output_bytes
from tools.hostile_hosts import HostileServer

pytestmark = [pytest.mark.http, pytest.mark.xdist_group("http-hostile-echo")]

ECHO = "tests/predictors_for_tests/echo_predict.py"
PHOTO = bytes(range(256)) * 8
# The deadline bounds URL transfers only; the cases' good predictions send data URIs.
LIMITS = {"TRIPTYCH_INPUT_TIMEOUT_S": "1", "TRIPTYCH_INPUT_MAX_MB": "1"}


@pytest.fixture(scope="module")
def hosts():
    with HostileServer({"photo.png": PHOTO}) as running:
        yield running


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("echo-photo") / "photo.png"
    path.write_bytes(PHOTO)
    return data_uri(path)


@pytest.fixture(scope="module")
def ok(photo):
    return {"text": "ok", "image": photo}


@pytest.fixture(scope="module")
def server(predictor_server):
    return predictor_server(ECHO, env=LIMITS)


@pytest.fixture(scope="module")
def patient_server(predictor_server):
    """Default download limits, so that only a cancel can end a slow transfer within the test."""
    return predictor_server(ECHO)


def echoed(prediction: dict) -> dict:
    return json.loads(output_bytes(prediction)[0])


# ---- URLs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "fragment"),
    [
        ("status/404", "could not be downloaded: its URL answered HTTP 404 (Not Found)"),
        ("status/500", "could not be downloaded: its URL answered HTTP 500"),
        ("redirect-loop", "could not be downloaded: its URL redirected more than 5 times"),
        ("drip/photo.png", "did not finish downloading within 1 s"),
        ("stall", "did not finish downloading within 1 s"),
        ("endless", "is larger than the 1 MB limit for an input file"),
        ("huge-length", "is larger than the 1 MB limit for an input file"),
    ],
)
def test_a_hostile_host_ends_in_a_sentence(server, hosts, ok, route, fragment):
    hostile.refused(server, {"text": "u", "image": hosts.url(route)}, f"The input image {fragment}", ok=ok)


def test_an_unreachable_host_ends_in_a_sentence(server, ok):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/photo.png"
    hostile.refused(server, {"text": "u", "image": closed}, "its server could not be reached", ok=ok)


def test_a_data_uri_over_the_byte_cap_is_refused(server, ok, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 1_100_000)
    hostile.refused(server, {"text": "u", "image": data_uri(big)}, "larger than the 1 MB limit", ok=ok)


def test_a_cancel_lands_during_a_download_that_would_take_minutes(patient_server, hosts, webhook, ok):
    server = patient_server
    requests_before = len(hosts.requests)
    server.predict_async(
        {"text": "c", "image": hosts.url("drip/photo.png")}, webhook.url, prediction_id="dl-c"
    )
    while len(hosts.requests) == requests_before:
        time.sleep(0.05)
    assert server.cancel("dl-c").status_code == 200
    # 2048 bytes at one per 0.2 s: only the cancel can end this prediction within the wait.
    assert webhook.wait_completed("dl-c", timeout=60)["status"] == "canceled"
    hostile.recovered(server, ok)


# ---- paths on the server ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "file:///etc/passwd", "weights/nst/vgg19.pth", "/proc/self/environ"]
)
def test_a_path_on_the_server_is_refused(server, ok, path):
    hostile.refused(
        server, {"text": "p", "image": path}, "The image must be given as an http(s) URL or a data URI", ok=ok
    )


def test_a_file_named_like_a_cog_download_in_the_temp_directory_is_refused(server, ok):
    # Cog names its downloads tmp<random><name> directly in the temp directory; such a file, left behind
    # by anything, must not be readable by naming it.
    planted = server.temp_dir / "tmpk2x9a1b0photo.png"
    planted.write_bytes(PHOTO)
    try:
        prediction = server.predict({"text": "p", "image": str(planted)})
        assert prediction["status"] == "failed"
        hostile.assert_sentence(prediction["error"], "a path on the server")
    finally:
        planted.unlink()
    hostile.recovered(server, ok)


def test_the_file_fetched_for_an_earlier_request_is_gone_and_refused(server, webhook, photo, ok):
    server.predict_async(
        {"text": "a", "mode": "slow", "count": 10, "image": photo}, webhook.url, prediction_id="early"
    )
    fetched = []
    while not fetched:
        fetched = list(server.temp_dir.glob("triptych-inputs-*/input-*"))
        time.sleep(0.02)
    assert webhook.wait_completed("early")["status"] == "succeeded"
    assert not fetched[0].exists()
    hostile.refused(server, {"text": "b", "image": str(fetched[0])}, "a path on the server", ok=ok)


# ---- values ----------------------------------------------------------------------------------------------


def test_json_integers_and_integral_floats_arrive_as_the_declared_types(server, ok):
    prediction = hostile.accepted(server, {"text": "n", "scale": 1, "count": 2.0}, ok=ok)
    record = echoed(prediction)
    assert record["scale"] == 1.0 and isinstance(record["scale"], float)
    assert record["count"] == 2 and isinstance(record["count"], int)


def test_a_megabyte_of_text_is_not_echoed_back(server, ok):
    prediction = server.predict({"text": "x" * 1_000_000, "mode": "fail"})
    assert prediction["status"] == "failed"
    hostile.assert_sentence(prediction["error"], "(1000002 characters)")
    hostile.recovered(server, ok)


# ---- protocol abuse --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"{not json", {"Content-Type": "application/json"}),
        (b'{"input": [1, 2]}', {"Content-Type": "application/json"}),
        (b'{"input": {"text": "a", "count": "3"}}', {"Content-Type": "application/json"}),
        (b'{"input": {"text": "a"}}', {"Content-Type": "text/plain"}),
        (b"\xff\xfe\x00garbage", {"Content-Type": "application/json"}),
    ],
    ids=["not-json", "input-not-object", "wrong-type", "wrong-content-type", "binary"],
)
def test_malformed_requests_are_refused_without_harm(server, ok, body, headers):
    response = server.session.post(f"{server.url}/predictions", data=body, headers=headers, timeout=30)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    hostile.recovered(server, ok)


def test_unknown_inputs_are_dropped(server, ok):
    record = echoed(hostile.accepted(server, {"text": "a", "bogus": "x" * 1000}, ok=ok))
    assert record["text"] == "a"


def test_cancelling_an_unknown_prediction_and_a_mismatched_put_do_no_harm(server, ok):
    assert server.cancel("no-such-prediction").status_code == 404
    put = server.session.put(
        f"{server.url}/predictions/one-id", json={"id": "another-id", "input": {"text": "a"}}, timeout=30
    )
    assert 400 <= put.status_code < 500, put.text[:300]
    hostile.recovered(server, ok)


def test_a_request_while_busy_gets_409_and_the_server_carries_on(server, webhook, ok):
    server.predict_async({"text": "b", "mode": "slow", "count": 10}, webhook.url, prediction_id="busy-1")
    response = server.session.post(f"{server.url}/predictions", json={"input": {"text": "x"}}, timeout=30)
    assert response.status_code == 409
    assert webhook.wait_completed("busy-1")["status"] == "succeeded"
    hostile.recovered(server, ok)
