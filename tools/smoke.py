"""Run every predictor end to end through the real Cog HTTP server, on tiny weights in the real layout.

    python -m tools.smoke [nst sd_style musepose]

For each predictor: build its tiny weights root (``tools.tiny_weights``), start ``python -m cog.server.http``
with the generated schema (``tools.cog_server``), send one small synchronous prediction with the example
images as data URIs, and check that every output file comes back non-empty. Exits 1 when any predictor
fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools import cog_schema
from tools.cog_server import CogServer, ServerError, data_uri, output_bytes

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"


class StaleInputs(ValueError):
    """The smoke inputs of a predictor no longer match its predict() signature."""


def _tiny_video(workdir: Path) -> Path:
    """A two-second 64x64 clip of a moving square, written with PyAV."""
    import av
    import numpy as np

    path = workdir / "motion.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(16):
            frame = np.zeros((64, 64, 3), dtype=np.uint8)
            frame[16:48, 2 * index : 2 * index + 24] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@dataclass(frozen=True)
class Smoke:
    """One predictor's smoke run: its tiny weights parts, environment, and a small set of inputs."""

    name: str
    parts: list[str]
    inputs: Callable[[Path], dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def predict_file(self) -> Path:
        return REPO_ROOT / "predictors" / self.name / "predict.py"


SMOKES = {
    "nst": Smoke(
        "nst",
        ["vgg19"],
        lambda _: {
            "image": data_uri(EXAMPLES / "content.jpg"),
            "style_image": data_uri(EXAMPLES / "style.png"),
            "max_side": 64,
            "iterations": 2,
            "preview_every": 0,
            "seed": 0,
        },
    ),
    "sd_style": Smoke(
        "sd_style",
        ["sd15"],
        lambda _: {
            "image": data_uri(EXAMPLES / "content.jpg"),
            "style_image": data_uri(EXAMPLES / "style.png"),
            "num_inference_steps": 2,
            "max_side": 256,
            "seed": 0,
        },
        env={"TRIPTYCH_SD_FAMILY": "sd15"},
    ),
    "musepose": Smoke(
        "musepose",
        ["dwpose", "musepose"],
        lambda workdir: {
            "reference_image": data_uri(EXAMPLES / "content.jpg"),
            "dance_video": data_uri(_tiny_video(workdir)),
            "resolution": 64,
            "num_inference_steps": 2,
            "window": 4,
            "overlap": 1,
            "seed": 0,
        },
    ),
}


def check_inputs(smoke: Smoke, inputs: dict[str, Any]) -> None:
    """Fail with a clear sentence when the smoke inputs no longer match the predictor's signature."""
    schema = cog_schema.generate(smoke.predict_file)["components"]["schemas"]["Input"]
    unknown = sorted(set(inputs) - set(schema["properties"]))
    missing = sorted(set(schema.get("required", [])) - set(inputs))
    if unknown or missing:
        raise StaleInputs(
            f"the smoke inputs of {smoke.name} do not match its predict() signature "
            f"(unknown: {unknown or 'none'}, missing required: {missing or 'none'}); update tools/smoke.py"
        )


def run_one(smoke: Smoke) -> str:
    """One sync prediction through the server; returns a one-line summary, raises on failure."""
    from tools.tiny_weights import build, environment

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"smoke-{smoke.name}-") as workdir:
        inputs = smoke.inputs(Path(workdir))
        check_inputs(smoke, inputs)
        env = {**environment(build(smoke.parts)), **smoke.env}
        with CogServer(smoke.predict_file, env=env) as server:
            prediction = server.predict(inputs)
            if prediction.get("status") != "succeeded":
                raise server.fail(
                    f"{smoke.name}: prediction {prediction.get('status')}: {prediction.get('error')}"
                )
            files = output_bytes(prediction)
            if not files or not all(files):
                raise server.fail(f"{smoke.name}: empty output {prediction.get('output')!r:.200}")
    sizes = ", ".join(f"{len(blob)} B" for blob in files)
    return f"{len(files)} file(s) ({sizes}) in {time.monotonic() - started:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.smoke", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(SMOKES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(SMOKES))
    if unknown:
        parser.error(f"unknown predictor(s): {', '.join(unknown)}")
    failed = []
    for name in args.names or list(SMOKES):
        smoke = SMOKES[name]
        print(f"{name}: running ...", flush=True)
        try:
            print(f"{name}: ok, {run_one(smoke)}", flush=True)
        except (StaleInputs, ServerError, OSError) as error:
            failed.append(name)
            print(f"{name}: FAILED\n{error}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
