"""A small predictor that exercises every part of the Cog HTTP contract the harness tests rely on.

``mode`` picks the branch: ``echo`` writes the inputs to a text file, ``frames`` yields ``count`` files one by
one (iterator output), ``slow`` loops ``count`` times with a short sleep so a cancel can land mid-loop, and
``fail`` raises ``ValueError`` with a message the client must see. ``predict`` goes through the shared Cog
boundary and ``image`` through the shared local-path check, as every predictor's do. The subclasses fail their
setup, or stand in for the predictor when ``tools/run_predictor.py --fallback`` needs one.
"""

import json
import tempfile
import time
from collections.abc import Iterator

from cog import BasePredictor, Input, Path

from predictors.common import boundary
from predictors.common.errors import MissingWeightsError, WeightsError, excerpt
from predictors.common.media import check_input_path


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.out_dir = Path(tempfile.mkdtemp(prefix="echo-predictor-"))

    @boundary.prediction
    def predict(
        self,
        text: str = Input(description="Text to echo; required."),
        mode: str = Input(
            description="Which branch to run.", default="echo", choices=["echo", "frames", "slow", "fail"]
        ),
        count: int = Input(description="Frames to yield or loop steps to run.", default=2, ge=1, le=50),
        scale: float = Input(description="A number copied into the echo.", default=0.5, ge=0.0, le=1.0),
        shout: bool = Input(description="Upper-case the text.", default=False),
        image: Path | None = Input(description="An optional file whose size is echoed.", default=None),
    ) -> Iterator[Path]:
        image_bytes = check_input_path(image, "image").stat().st_size if image is not None else None
        if mode == "fail":
            raise ValueError(f"The echo predictor was asked to fail for {excerpt(text)}.")
        if mode == "slow":
            for step in range(count):
                print(f"slow step {step + 1}/{count}", flush=True)
                time.sleep(0.1)
        frames = count if mode == "frames" else 1
        for index in range(frames):
            record = {
                "text": text.upper() if shout else text,
                "mode": mode,
                "count": count,
                "scale": scale,
                "index": index,
                "image_bytes": image_bytes,
            }
            path = self.out_dir / f"echo-{time.monotonic_ns()}-{index}.json"
            path.write_text(json.dumps(record))
            yield path


class BrokenSetup(Predictor):
    """Fails in ``setup()``, as a predictor does when its weights are unusable."""

    def setup(self) -> None:
        raise WeightsError("The echo weights are missing: run the weights step first.")


class OfflineSetup(Predictor):
    """Fails in ``setup()`` as a predictor does offline: a weights file is missing and not downloadable."""

    def setup(self) -> None:
        raise MissingWeightsError("The echo weights could not be downloaded: fetch them when online.")


class ShoutingFallback(Predictor):
    """A lesser echo for ``--fallback``: it shouts whatever ``shout`` says."""

    NOTICE = "This is the shouted echo."

    def predict(self, **inputs) -> Iterator[Path]:
        return super().predict(**{**inputs, "shout": True})


class BrokenDevice(Predictor):
    """Its ``healthcheck()`` fails, as a real predictor's does once its GPU context is broken."""

    def healthcheck(self) -> bool:
        return False
