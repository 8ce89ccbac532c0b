"""Fixtures that start the real Cog HTTP server; see ``tests/http/harness.py`` for how to use them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http import hostile
from tests.http.harness import CogServer, WebhookReceiver


@pytest.fixture(scope="module")
def cog_server() -> Iterator:
    """``cog_server("predictors/<name>/predict.py", env={...})`` -> a READY ``CogServer``, stopped later."""
    servers: list[CogServer] = []

    def start(predictor: str | Path, env: dict[str, str] | None = None, **options) -> CogServer:
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
    for both. Its temp directory and HOME are private folders (``tests/http/hostile.py``).
    """
    servers: dict[tuple, CogServer] = {}

    def get(predictor: str | Path, env: dict[str, str] | None = None) -> CogServer:
        key = (str(predictor), tuple(sorted((env or {}).items())))
        if key not in servers:
            servers[key] = hostile.start(predictor, tmp_path_factory.mktemp("server"), env)
        return servers[key]

    yield get
    for server in servers.values():
        server.stop()
