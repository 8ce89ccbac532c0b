"""deploy/probe.py against the real Cog server (echo predictor): readiness only when READY, liveness that
fails on a dead worker and on a server wedged BUSY, and the drain sequence of the Kubernetes kit
(``--await-explicit-shutdown``, SIGTERM ignored, preStop waits for the prediction, then /shutdown)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import REPO_ROOT
from tests.http.harness import CogServer, ServerError

pytestmark = [pytest.mark.http, pytest.mark.xdist_group("http-probe")]

ECHO = "tests/predictors_for_tests/echo_predict.py"
PROBE = REPO_ROOT / "deploy" / "probe.py"


def probe(server, *args: str) -> tuple[int, str]:
    """Run the probe as the kubelet's exec probe would: a fresh process, exit status and one line."""
    done = subprocess.run(
        [sys.executable, str(PROBE), *args, "--url", server.url], capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stdout.strip()


def wait_status(server, status: str) -> None:
    while server.health()["status"] != status:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def draining(cog_server):
    return cog_server(ECHO, args=["--await-explicit-shutdown", "true"])


def test_ready_and_busy(draining, webhook, tmp_path):
    state = str(tmp_path / "live.json")
    assert probe(draining, "ready") == (0, "ready: pass: READY")
    assert probe(draining, "live", "--state", state)[0] == 0
    # The longest slow run (50 x 0.1 s), cancelled once both probes have run: two probe processes fit inside
    # it even on a loaded machine, and the test does not wait for it to end.
    draining.predict_async(
        {"text": "b", "mode": "slow", "count": 50}, webhook.url, prediction_id="probe-busy"
    )
    wait_status(draining, "BUSY")
    assert probe(draining, "ready") == (1, "ready: fail: BUSY")
    # A prediction shorter than --stuck-after keeps the pod alive.
    code, line = probe(draining, "live", "--state", state, "--stuck-after", "600")
    assert code == 0 and line.startswith("live: pass: BUSY for"), line
    draining.cancel("probe-busy")
    assert webhook.wait_completed("probe-busy")["status"] == "canceled"


def test_a_server_wedged_by_a_long_prediction_id_fails_liveness(cog_server, tmp_path):
    """A 300-character id wedges coglet 0.23.1 BUSY for good (the edge of the kit refuses such ids); the
    liveness probe fails once it has not been READY for longer than --stuck-after, so the pod restarts."""
    server = cog_server(ECHO)
    state = str(tmp_path / "live.json")
    assert probe(server, "live", "--state", state, "--stuck-after", "1")[0] == 0
    response = server.session.post(
        f"{server.url}/predictions",
        json={"id": "w" * 300, "input": {"text": "w"}},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202
    time.sleep(1.5)
    assert server.health()["status"] == "BUSY"
    code, line = probe(server, "live", "--state", state, "--stuck-after", "1")
    assert code == 1 and "BUSY for" in line and "more than 1 s" in line, line
    assert probe(server, "ready")[0] == 1


def test_a_dead_worker_fails_readiness_and_liveness(cog_server, tmp_path):
    server = cog_server(ECHO)
    for worker in psutil.Process(server.process.pid).children(recursive=True):
        worker.kill()
    wait_status(server, "UNHEALTHY")
    assert probe(server, "ready") == (1, "ready: fail: UNHEALTHY")
    assert probe(server, "live", "--state", str(tmp_path / "live.json")) == (1, "live: fail: UNHEALTHY")


def test_a_failing_predictor_healthcheck_makes_the_server_unhealthy():
    """coglet 0.23.1 runs the predictor's healthcheck() on GET /health-check while idle; a False answer is
    UNHEALTHY (which both probes fail, as the dead-worker case shows). Each predictor's healthcheck() is
    runtime.device_works."""
    with pytest.raises(
        ServerError, match="reports UNHEALTHY Healthcheck failed: user-defined healthcheck returned"
    ):
        CogServer(f"{ECHO}:BrokenDevice", ready_timeout=120).start()


def test_no_server_fails_both(tmp_path):
    class Gone:
        url = "http://127.0.0.1:9"

    assert probe(Gone, "ready")[0] == 1
    assert probe(Gone, "live", "--state", str(tmp_path / "live.json"))[0] == 1


def test_drain_lets_the_running_prediction_finish_then_shuts_down(draining, webhook):
    """The kit's termination: SIGTERM is ignored (--await-explicit-shutdown), the preStop drain waits until
    the server is not BUSY, then asks it to shut down."""
    draining.predict_async(
        {"text": "d", "mode": "slow", "count": 20}, webhook.url, prediction_id="probe-drain"
    )
    wait_status(draining, "BUSY")
    draining.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert draining.process.poll() is None, "SIGTERM stopped a server that must wait for /shutdown"
    code, line = probe(draining, "drain", "--timeout", "120")
    assert code == 0 and line.endswith("shutdown requested"), line
    assert webhook.wait_completed("probe-drain")["status"] == "succeeded"
    draining.process.wait(timeout=60)
