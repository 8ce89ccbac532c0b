#!/usr/bin/env python3
"""Kubernetes probes and the graceful drain for a Cog server, with Python's standard library only.

Cog's ``GET /health-check`` answers 200 whatever the state, with the state in the body (``status``: STARTING,
READY, BUSY, SETUP_FAILED, DEFUNCT, UNHEALTHY), so an ``httpGet`` probe cannot tell a busy or broken server
from a ready one. These commands read the body instead; each exits 0 (pass) or 1 (fail) and prints one line.

    probe.py ready                  READY, and only READY: the pod gets traffic only when it can take it.
    probe.py live --stuck-after S   fails on SETUP_FAILED, DEFUNCT or UNHEALTHY (a dead worker, a broken GPU
                                    context seen by the predictor's healthcheck()), on no answer, and on a
                                    server that has not been READY for S seconds in a row (a wedged state;
                                    S must exceed the longest prediction). The time since the server was
                                    last READY is kept in --state between runs.
    probe.py drain --timeout S      the preStop hook: wait up to S seconds until the server is not BUSY, then
                                    POST /shutdown, which a server started with --await-explicit-shutdown
                                    needs to exit (it ignores SIGTERM so that a prediction is never cut).

Options: --url (default http://127.0.0.1:$PORT or :5000), --http-timeout (seconds per request, default 5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

READY = "READY"
BUSY = "BUSY"
BROKEN = ("SETUP_FAILED", "DEFUNCT", "UNHEALTHY")


def health(url: str, timeout: float) -> str:
    """The ``status`` of ``GET /health-check``; raises OSError when the server does not answer."""
    with urllib.request.urlopen(f"{url}/health-check", timeout=timeout) as response:
        body = json.loads(response.read() or b"{}")
    return str(body.get("status", "UNKNOWN"))


def ready(url: str, timeout: float) -> tuple[bool, str]:
    try:
        status = health(url, timeout)
    except (OSError, ValueError) as error:
        return False, f"no answer from {url}: {error}"
    return status == READY, status


def live(url: str, timeout: float, stuck_after: float, state: Path) -> tuple[bool, str]:
    try:
        status = health(url, timeout)
    except (OSError, ValueError) as error:
        return False, f"no answer from {url}: {error}"
    if status in BROKEN:
        return False, status
    now = time.time()
    if status == READY:
        state.write_text(json.dumps({"ready_at": now}))
        return True, status
    try:
        last_ready = float(json.loads(state.read_text())["ready_at"])
    except (OSError, ValueError, KeyError, TypeError):
        # First sight of this server (or a restarted probe folder): start counting from now.
        state.write_text(json.dumps({"ready_at": now}))
        return True, f"{status} (first seen)"
    waited = now - last_ready
    if waited > stuck_after:
        return False, f"{status} for {waited:.0f} s, more than {stuck_after:g} s"
    return True, f"{status} for {waited:.0f} s"


def drain(url: str, timeout: float, drain_timeout: float) -> tuple[bool, str]:
    deadline = time.monotonic() + drain_timeout
    status = "UNKNOWN"
    while time.monotonic() < deadline:
        try:
            status = health(url, timeout)
        except (OSError, ValueError):
            return True, "no answer: nothing to drain"
        if status != BUSY:
            break
        time.sleep(1.0)
    try:
        request = urllib.request.Request(f"{url}/shutdown", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=timeout).close()
    except (OSError, urllib.error.HTTPError) as error:
        return True, f"{status}; shutdown request failed ({error})"
    return True, f"{status}; shutdown requested"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["ready", "live", "drain"])
    parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('PORT', '5000')}")
    parser.add_argument("--http-timeout", type=float, default=5.0)
    parser.add_argument("--stuck-after", type=float, default=3600.0)
    parser.add_argument("--state", type=Path, default=Path("/tmp/cog-liveness.json"))
    parser.add_argument("--timeout", type=float, default=3600.0, help="drain: longest wait for BUSY to end")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    if args.command == "ready":
        passed, detail = ready(url, args.http_timeout)
    elif args.command == "live":
        passed, detail = live(url, args.http_timeout, args.stuck_after, args.state)
    else:
        passed, detail = drain(url, args.http_timeout, args.timeout)
    print(f"{args.command}: {'pass' if passed else 'fail'}: {detail}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
