"""The kit's edge (nginx, deploy/k8s/edge.yaml) in front of a real Cog server: the prediction routes pass,
ids outside [A-Za-z0-9_-]{1,64}, /shutdown and everything else stop at the edge, and the server behind it
stays READY. Skipped where nginx is not installed; tests/deploy checks the same routes on the config."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time

import pytest
import requests

from tests.deploy import edge

pytestmark = [
    pytest.mark.http,
    pytest.mark.xdist_group("http-edge"),
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]

ECHO = "tests/predictors_for_tests/echo_predict.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cog(cog_server):
    return cog_server(ECHO)


@pytest.fixture(scope="module")
def proxy(cog, tmp_path_factory):
    """nginx with the kit's configuration; every upstream points at the echo server, the port is free."""
    folder = tmp_path_factory.mktemp("edge")
    folder.chmod(0o777)
    port = free_port()
    conf = edge.nginx_conf()
    conf = re.sub(r"server triptych-[a-z-]+:5000;", f"server 127.0.0.1:{cog.port};", conf)
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};").replace("/tmp/", f"{folder}/")
    (folder / "nginx.conf").write_text(conf)
    process = subprocess.Popen(
        ["nginx", "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", "stderr", "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                break
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_the_prediction_routes_pass(proxy, cog):
    created = requests.post(f"{proxy}/nst/predictions", json={"input": {"text": "via edge"}}, timeout=60)
    assert created.status_code == 200 and created.json()["status"] == "succeeded", created.text[:300]
    put = requests.put(
        f"{proxy}/sd-style/predictions/job_1-a",
        json={"id": "job_1-a", "input": {"text": "idempotent"}},
        headers={"Prefer": "respond-async"},
        timeout=60,
    )
    assert put.status_code == 202 and put.json()["id"] == "job_1-a", put.text[:300]
    cancel = requests.post(f"{proxy}/musepose/predictions/job_1-a/cancel", timeout=60)
    assert cancel.status_code in (200, 404) and cancel.headers["Content-Type"].startswith("application/json")
    cog.wait_ready(30)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/nst/shutdown"),
        ("POST", "/shutdown"),
        ("GET", "/nst/health-check"),
        ("GET", "/nst/openapi.json"),
        ("PUT", "/nst/predictions/" + "w" * 300),
        ("PUT", "/nst/predictions/..%2F..%2Fescape"),
        ("POST", "/nst/predictions/..%2F..%2Fescape/cancel"),
        ("GET", "/nst/predictions"),
        ("POST", "/nst/trainings"),
    ],
)
def test_everything_else_stops_at_the_edge(proxy, cog, method, path):
    response = requests.request(method, f"{proxy}{path}", json={"input": {"text": "x"}}, timeout=60)
    assert response.status_code in (403, 404), (response.status_code, response.text[:200])
    assert "nginx" in response.text  # nginx's own page: the request never reached Cog
    assert cog.process.poll() is None and cog.health()["status"] == "READY"
