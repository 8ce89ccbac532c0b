"""The schema generator and the harness against the real Cog server, with the small echo predictor."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from tests.http.harness import CogServer, ServerError, assert_validation_errors, data_uri, output_bytes

pytestmark = [pytest.mark.http, pytest.mark.xdist_group("http-cog-harness")]

ECHO = Path(__file__).resolve().parents[1] / "predictors_for_tests" / "echo_predict.py"


@pytest.fixture(scope="module")
def server(cog_server):
    return cog_server(ECHO)


def records(prediction: dict) -> list[dict]:
    assert prediction["status"] == "succeeded", prediction.get("error")
    return [json.loads(blob) for blob in output_bytes(prediction)]


def test_schema_makes_the_server_reject_bad_inputs_per_field(server):
    response = server.post_prediction({"count": 51, "mode": "shout"})
    errors = assert_validation_errors(
        response,
        {"count": "maximum of 50", "mode": "is not one of", "text": "Field required"},
    )
    assert set(errors) == {"count", "mode", "text"}
    assert_validation_errors(server.post_prediction({"text": "a", "scale": -0.5}), {"scale": "minimum of 0"})
    assert_validation_errors(server.post_prediction({"text": "a", "count": "3"}), {"count": "integer"})


def test_sync_prediction_passes_inputs_and_defaults(server, tmp_path):
    image = tmp_path / "four.bin"
    image.write_bytes(b"1234")
    prediction = server.predict({"text": "hi", "shout": True, "image": data_uri(image)})
    assert records(prediction) == [
        {"text": "HI", "mode": "echo", "count": 2, "scale": 0.5, "index": 0, "image_bytes": 4}
    ]


def test_a_path_inside_the_container_is_refused_as_the_images_are_configured(server):
    prediction = server.predict({"text": "a", "image": "/etc/passwd"})
    assert prediction["status"] == "failed"
    assert "The image must be given as an http(s) URL or a data URI" in prediction["error"]


def test_iterator_output_comes_back_as_a_list(server):
    prediction = server.predict({"text": "f", "mode": "frames", "count": 3})
    assert isinstance(prediction["output"], list)
    assert [record["index"] for record in records(prediction)] == [0, 1, 2]


def test_async_prediction_delivers_start_output_and_completed_events(server, webhook):
    started = server.predict_async(
        {"text": "a", "mode": "frames", "count": 2}, webhook.url, events=["start", "output", "completed"]
    )
    assert started["status"] == "starting"
    final = webhook.wait_completed(started["id"])
    assert final["status"] == "succeeded"
    assert [record["index"] for record in records(final)] == [0, 1]
    # Events are posted concurrently, so the completed one may arrive before the others.
    mine = started["id"]
    webhook.wait_for(lambda e: e["id"] == mine and e["status"] == "processing" and not e.get("output"))
    webhook.wait_for(lambda e: e["id"] == mine and e["status"] == "processing" and e.get("output"))


def test_cancel_lands_mid_loop_and_the_server_recovers(server, webhook):
    server.predict_async({"text": "c", "mode": "slow", "count": 50}, webhook.url, prediction_id="cancel-me")
    webhook.wait_for(lambda event: event["id"] == "cancel-me" and "slow step 2/" in (event.get("logs") or ""))
    assert server.cancel("cancel-me").status_code == 200
    final = webhook.wait_completed("cancel-me")
    assert final["status"] == "canceled"
    assert "slow step 50/" not in final.get("logs", "")
    assert server.wait_ready(30)["status"] == "READY"
    assert records(server.predict({"text": "after"}))[0]["text"] == "after"


def test_a_busy_server_answers_409_and_predict_retries_until_it_is_free(server, webhook):
    server.predict_async({"text": "b", "mode": "slow", "count": 20}, webhook.url, prediction_id="busy")
    webhook.wait_for(lambda event: event["id"] == "busy" and event["status"] == "processing")
    assert server.post_prediction({"text": "now"}, busy_timeout=0).status_code == 409
    assert records(server.predict({"text": "later"}))[0]["text"] == "later"
    assert webhook.wait_completed("busy")["status"] == "succeeded"


def test_value_error_fails_the_prediction_with_its_message(server):
    prediction = server.predict({"text": "boom", "mode": "fail"})
    assert prediction["status"] == "failed"
    assert "asked to fail for 'boom'" in prediction["error"]
    assert server.wait_ready(30)["status"] == "READY"
    assert records(server.predict({"text": "again"}))[0]["text"] == "again"


def test_a_failed_setup_fails_fast_with_the_log():
    broken = CogServer(f"{ECHO}:BrokenSetup", ready_timeout=60)
    with pytest.raises(ServerError, match="The echo weights are missing"):
        broken.start()
    assert broken.process is None and broken.workdir is None


def test_stop_ends_the_server_and_its_worker_and_removes_its_directory():
    server = CogServer(ECHO).start()
    workdir = server.workdir
    assert (workdir / ".cog" / "openapi_schema.json").is_file()
    group = [server.process.pid, *(child.pid for child in psutil.Process(server.process.pid).children(True))]
    assert len(group) >= 2, "the server should run its predictor in a worker process"
    server.stop()
    assert not workdir.exists()
    assert not [pid for pid in group if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
