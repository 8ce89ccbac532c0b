"""Fixtures that start the real Cog HTTP server; see ``tests/http/harness.py`` for how to use them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from predictors.common.runtime import PROGRESS_INTERVAL_ENV
from tests.http import hostile
from tests.http.harness import CogServer, WebhookReceiver


@pytest.fixture(scope="module")
def cog_server() -> Iterator:
    """``cog_server("predictors/<name>/predict.py", env={...})`` -> a READY ``CogServer``, stopped later.

    Its predictions print a progress line at every step (TRIPTYCH_PROGRESS_INTERVAL=0) unless ``env`` says
    otherwise."""
    servers: list[CogServer] = []

    def start(predictor: str | Path, env: dict[str, str] | None = None, **options) -> CogServer:
        # A progress line after every step, so tests can follow a prediction step by step.
        env = {PROGRESS_INTERVAL_ENV: "0", **(env or {})}
        server = CogServer(predictor, env=env, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    """A webhook receiver on 127.0.0.1 for the module's async predictions."""
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def predictor_server(tmp_path_factory) -> Iterator:
    """``predictor_server("predictors/<name>/predict.py", env={...})`` -> a READY server shared by every
    module of the session (of one xdist worker) that asks for the same predictor and environment.

    A predictor's functional tests and its hostile-input cases use one xdist group, so the server starts once
    for both. Its temp directory and HOME are private folders (``tests/http/hostile.py``); it prints a
    progress line at every step, as ``cog_server``'s do.
    """
    servers: dict[tuple, CogServer] = {}

    def get(predictor: str | Path, env: dict[str, str] | None = None) -> CogServer:
        env = {PROGRESS_INTERVAL_ENV: "0", **(env or {})}
        key = (str(predictor), tuple(sorted(env.items())))
        if key not in servers:
            servers[key] = hostile.start(predictor, tmp_path_factory.mktemp("server"), env)
        return servers[key]

    yield get
    for server in servers.values():
        server.stop()
