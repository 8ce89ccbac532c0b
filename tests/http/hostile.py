"""What every case of the hostile-input suite checks, whatever the predictor.

A case sends something broken, extreme or malicious through the real Cog server and then asserts four
things: the answer is one clear sentence (our words, the expected fragment, no traceback, no echo of a large
input), the server is READY again, the next ordinary prediction succeeds, and nothing is left in the server's
temp directory (no input file, no partial download, no output of the failed prediction).

    server = predictor_server("predictors/nst/predict.py", env=...)   # the fixture, which calls start()
    refused(server, {...bad inputs...}, "each side must be at least 16 pixels", ok={...good inputs...})
"""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import Any

from tests.http.harness import CogServer

# Folders a server process keeps for itself, not for a request: torch's compile cache (made on first use)
# and the echo test predictor's output folder.
PROCESS_FOLDERS = ("torchinductor_", "echo-predictor-")

MAX_ERROR_CHARS = 600


def bytes_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixels: a size check must refuse it unread."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = (
        struct.pack(">I", len(header)) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    )
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + end


def start(predictor: str | Path, folder: Path, env: dict[str, str] | None = None) -> CogServer:
    """A READY server whose temp directory (TMPDIR) and HOME are empty folders under ``folder``.

    What the process itself leaves in the temp directory while starting (ONNX Runtime writes a 51-byte
    ``.ses`` file on import) is the baseline; a prediction adds nothing to it.
    """
    (folder / "tmp").mkdir()
    (folder / "home").mkdir()
    server = CogServer(
        predictor, env={**(env or {}), "TMPDIR": str(folder / "tmp"), "HOME": str(folder / "home")}
    )
    server.start()
    server.temp_dir = folder / "tmp"
    server.home_dir = folder / "home"
    server.baseline = {path.name for path in server.temp_dir.iterdir() if not _kept(path.name)}
    return server


def _kept(name: str) -> bool:
    return name.startswith(("triptych-outputs-", *PROCESS_FOLDERS))


def leftovers(server: CogServer, *, outputs_allowed: bool) -> list[str]:
    """Files and folders in the server's temp directory that should not be there.

    Allowed: the baseline, the echo test predictor's output folder, and the predictor's outputs folder,
    which holds the last good prediction's files (Cog reads them after ``predict()`` returns) until the next
    prediction starts, so it is empty after a failed one.
    """
    found = []
    for path in sorted(server.temp_dir.rglob("*")):
        relative = path.relative_to(server.temp_dir)
        top = relative.parts[0]
        if top in server.baseline or top.startswith(PROCESS_FOLDERS):
            continue
        if top.startswith("triptych-outputs-"):
            if path.is_file() and not outputs_allowed:
                found.append(str(relative))
            continue
        found.append(str(relative))
    return found


def assert_sentence(error: str, fragment: str) -> None:
    assert fragment in error, error[:MAX_ERROR_CHARS]
    assert "Traceback" not in error and 'File "' not in error, error[:MAX_ERROR_CHARS]
    assert len(error) < MAX_ERROR_CHARS, f"{len(error)} characters: {error[:MAX_ERROR_CHARS]}"


def recovered(server: CogServer, ok: dict[str, Any], *, succeeded: bool = False) -> None:
    """Alive, READY, nothing left behind, and the next ordinary prediction succeeds.

    ``succeeded``: the case itself was a good prediction, whose outputs may still be there.
    """
    assert server.process.poll() is None, server.fail("the server died").args[0]
    assert server.wait_ready(30)["status"] == "READY"
    left = leftovers(server, outputs_allowed=succeeded)
    assert left == [], f"left in the temp directory after the case: {left}"
    after = server.predict(ok)
    assert after["status"] == "succeeded", after.get("error")
    left = leftovers(server, outputs_allowed=True)
    assert left == [], f"left in the temp directory after a good prediction: {left}"


def refused(server: CogServer, inputs: dict[str, Any], fragment: str, *, ok: dict[str, Any]) -> str:
    """A prediction that must fail with ``fragment`` in one clear sentence, then the recovery checks."""
    prediction = server.predict(inputs)
    assert prediction["status"] == "failed", prediction.get("output")
    assert_sentence(prediction["error"], fragment)
    recovered(server, ok)
    return prediction["error"]


def accepted(server: CogServer, inputs: dict[str, Any], *, ok: dict[str, Any]) -> dict[str, Any]:
    """A legal but unusual prediction that must succeed, then the recovery checks."""
    prediction = server.predict(inputs)
    assert prediction["status"] == "succeeded", prediction.get("error")
    recovered(server, ok, succeeded=True)
    return prediction
