"""tests/conftest.py's xdist hook: under ``--dist loadgroup`` every test of an ``xdist_group`` runs on one
worker, so a module-scoped server starts once (pytest 9.2 ignores the node-id suffix xdist 3.8 writes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

MODULE = """
import os

import pytest

pytestmark = pytest.mark.xdist_group("{group}")


@pytest.fixture(scope="module")
def server():
    with open(os.environ["STARTS"], "a") as log:
        log.write(f"{{os.environ['PYTEST_XDIST_WORKER']}} {{__name__}}\\n")


@pytest.mark.parametrize("index", range(4))
def test_request(server, index):
    pass
"""


def test_a_group_runs_on_one_worker_and_its_module_fixtures_start_once(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    # The suite's own conftest is the project's hook and nothing else.
    (suite / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
    )
    (suite / "test_first.py").write_text(MODULE.format(group="server-a"))
    (suite / "test_second.py").write_text(MODULE.format(group="server-a"))
    (suite / "test_other.py").write_text(MODULE.format(group="server-b"))
    starts = tmp_path / "starts.log"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider"],
        cwd=suite,
        env={**os.environ, "STARTS": str(starts), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "12 passed" in result.stdout
    assert "test_first.py::test_request[0]@server-a" in result.stdout
    assert "test_other.py::test_request[3]@server-b" in result.stdout
    lines = starts.read_text().split()
    workers = dict(zip(lines[1::2], lines[0::2], strict=True))
    # One start per module (module-scoped fixture), both server-a modules on the same worker.
    assert sorted(workers) == ["test_first", "test_other", "test_second"]
    assert len(lines) == 6
    assert workers["test_first"] == workers["test_second"]
