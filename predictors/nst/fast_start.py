"""Feed-forward arbitrary style transfer (Ghiasi et al. 2017, Magenta) with onnxruntime.

Two networks: ``arbitrary_predict.onnx`` maps a 256x256 style image to a 100-number style vector, and
``arbitrary_transform.onnx`` maps a 384x384 content image plus that vector to the stylised image. Both take
NHWC float RGB in 0..1. The result serves as a preview in well under a second on a CPU, and as the starting
image of the optimisation (init "fast").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from predictors.common.media import resize
from predictors.common.onnx import create_session
from predictors.nst.color import match_histogram, recombine_luminance
from predictors.nst.optimize import to_image, to_tensor

STYLE_SIDE = 256
CONTENT_SIDE = 384


def _as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)[None] / 255.0


class FastStylizer:
    """The two Magenta networks; ``stylize`` blends several styles by their style vectors."""

    def __init__(self, predict_path: str | Path, transform_path: str | Path, threads: int | None = None):
        self.predict = create_session(predict_path, threads=threads)
        self.transform = create_session(transform_path, threads=threads)
        self._style_input = self.predict.get_inputs()[0].name
        content_input, vector_input = (node.name for node in self.transform.get_inputs())
        self._content_input, self._vector_input = content_input, vector_input

    def style_vector(self, style: Image.Image) -> np.ndarray:
        """The (1, 1, 1, 100) style vector of the centre square of ``style``."""
        side = min(style.size)
        left, top = (style.width - side) // 2, (style.height - side) // 2
        square = resize(style.crop((left, top, left + side, top + side)), (STYLE_SIDE, STYLE_SIDE))
        return self.predict.run(None, {self._style_input: _as_array(square)})[0]

    def stylize(
        self,
        content: Image.Image,
        styles: Sequence[Image.Image],
        style_weights: Sequence[float],
        size: tuple[int, int] | None = None,
        color_preservation: str = "none",
    ) -> Image.Image:
        """Stylize ``content`` at 384 px (long side), then resize to ``size`` (default: the content size).

        ``style_weights`` (checked by the job's check()) blend the style vectors. ``color_preservation`` as in
        the optimization: "histogram" gives the styles the content's colors first, "luminance" keeps the
        result's luminance with the content's chrominance.
        """
        if color_preservation == "histogram":
            styles = [to_image(match_histogram(to_tensor(style), to_tensor(content))) for style in styles]
        blend = np.asarray(style_weights, dtype=np.float32)
        blend = blend / blend.sum()
        vector = sum(w * self.style_vector(style) for w, style in zip(blend, styles, strict=True))
        scale = CONTENT_SIDE / max(content.size)
        width = max(1, min(CONTENT_SIDE, round(content.width * scale)))
        height = max(1, min(CONTENT_SIDE, round(content.height * scale)))
        pixels = _as_array(resize(content, (width, height)))
        # The network takes a fixed 384x384 input; mirror padding keeps the border statistics natural.
        pixels = np.pad(
            pixels, ((0, 0), (0, CONTENT_SIDE - height), (0, CONTENT_SIDE - width), (0, 0)), "symmetric"
        )
        output = self.transform.run(
            None, {self._content_input: pixels, self._vector_input: vector.astype(np.float32)}
        )[0][0, :height, :width]
        image = resize(
            Image.fromarray((np.clip(output, 0, 1) * 255 + 0.5).astype(np.uint8)), size or content.size
        )
        if color_preservation == "luminance":
            original = to_tensor(resize(content, image.size))
            image = to_image(recombine_luminance(to_tensor(image), original))
        return image
