"""predictors.common.boundary: what ``@boundary.prediction`` does between Cog and ``predict()``."""

from __future__ import annotations

import base64
import inspect
from collections.abc import Iterator

import pytest
from cog import BasePredictor, Input, Path, URLPath

from predictors.common import boundary, input_files
from predictors.common.errors import InputError
from tools.cog_compat import unwrapped

PNG_URI = "data:image/png;base64," + base64.b64encode(b"\x89PNG not really").decode()


class Recorder(BasePredictor):
    @boundary.prediction
    def predict(
        self,
        strength: float = Input(description="A float.", default=0.5),
        steps: int = Input(description="An int.", default=3),
        scale: float | None = Input(description="An optional float.", default=None),
        image: Path | None = Input(description="A file.", default=None),
    ) -> str:
        seen = {"strength": strength, "steps": steps, "scale": scale}
        if image is not None:
            seen["image"] = (image.read_bytes(), input_files.is_prediction_file(image))
            self.image_path = image
        self.seen = seen
        return "done"


class Frames(BasePredictor):
    @boundary.prediction
    def predict(self, image: Path = Input(description="A file.")) -> Iterator[str]:
        for index in range(2):
            yield f"{index}:{image.exists()}"


def test_numbers_become_their_declared_types():
    recorder = Recorder()
    recorder.predict(strength=1, steps=2.0, scale=0)
    assert recorder.seen == {"strength": 1.0, "steps": 2, "scale": 0.0}
    assert [type(recorder.seen[name]) for name in ("strength", "steps", "scale")] == [float, int, float]


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"steps": 2.5}, "steps must be a whole number, got 2.5."), ({"strength": float("inf")}, "finite")],
)
def test_numbers_that_cannot_be_their_type_are_sentences(changes, message):
    with pytest.raises(InputError, match=message):
        Recorder().predict(**changes)


def test_input_defaults_are_resolved_when_cog_cannot_patch_them():
    recorder = Recorder()
    recorder.predict()
    assert recorder.seen == {"strength": 0.5, "steps": 3, "scale": None}


def test_cog_defers_a_url_input_and_the_prediction_fetches_it_and_removes_it():
    deferred = Path.validate(PNG_URI)  # what coglet does with a data URI or URL string
    assert isinstance(deferred, URLPath)
    assert deferred.convert() is deferred  # coglet's pre-predict download is now a no-op
    recorder = Recorder()
    recorder.predict(image=deferred)
    content, owned = recorder.seen["image"]
    assert content == b"\x89PNG not really" and owned is True
    assert not recorder.image_path.exists()


def test_an_iterator_keeps_its_file_until_the_iteration_ends():
    outputs = list(Frames().predict(image=Path.validate(PNG_URI)))
    assert outputs == ["0:True", "1:True"]
    assert input_files._current is None


def test_the_signature_stays_visible_to_cog():
    original = inspect.unwrap(Recorder.predict)
    assert inspect.signature(Recorder.predict) == inspect.signature(original)
    assert unwrapped(Recorder.predict) is original
    assert inspect.isgeneratorfunction(Frames.predict)
