"""SimCC whole-body pose estimator (``dw-ll_ucoco_384.onnx``: ``input`` [N,3,384,288] ->
``simcc_x`` [N,133,576], ``simcc_y`` [N,133,768]).

Each person box becomes a crop: centre and size of the box, size x1.25, widened or heightened to the
network's 3:4 aspect, then an affine warp to 288x384. Crops are RGB, normalised with the ImageNet mean and
std. A keypoint is the argmax of its x and y SimCC vectors divided by the split ratio 2, mapped back to
image pixels; its score is the smaller of the two maxima, and a keypoint whose score is <= 0 gets location
-1 (before the mapping back), as in DWPose.

The optional flip test (mmpose's RTMCC rule, used by MusePose) also runs the horizontally mirrored crop,
swaps left/right keypoints of its output, reverses its x vectors, and averages both outputs before decoding.

Crops of several people and several frames run as one batch when the network's batch axis is dynamic; with
a fixed batch axis they run in batches of exactly that size (one crop per call for the usual batch 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from predictors.common.dwpose.keypoints import FLIP_INDICES

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
PADDING = 1.25
SIMCC_SPLIT = 2.0
# (value - mean) / std for every uint8 value and channel, computed in float64 and rounded once to float32
# as DWPose does, so that a table lookup gives bit-identical inputs at a fraction of the cost.
NORMALISED = ((np.arange(256)[None, :] - MEAN[:, None]) / STD[:, None]).astype(np.float32)


@dataclass(frozen=True)
class Crop:
    """One network input and the box geometry that maps its output back to the image."""

    tensor: np.ndarray  # float32 [3, h, w]
    center: np.ndarray  # [2]
    scale: np.ndarray  # [2], after the aspect fix


def box_center_scale(box: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """xyxy box -> (centre, size x1.25 fixed to width/height = ``aspect``)."""
    box = np.asarray(box)
    x0, y0, x1, y1 = box
    center = np.array([x0 + x1, y0 + y1], dtype=box.dtype) * 0.5
    width, height = np.array([x1 - x0, y1 - y0], dtype=box.dtype) * PADDING
    if width > height * aspect:
        scale = np.array([width, width / aspect], dtype=center.dtype)
    else:
        scale = np.array([height * aspect, height], dtype=center.dtype)
    return center, scale


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=a.dtype)


def warp_matrix(center: np.ndarray, scale: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """2x3 affine matrix taking the box (centre, scale) onto an output of ``size`` = (w, h)."""
    out_w, out_h = size
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + np.array([0.0, scale[0] * -0.5])
    src[2] = _third_point(src[0], src[1])
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = dst[0] + np.array([0.0, out_w * -0.5], dtype=np.float32)
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def make_crop(image_rgb: np.ndarray, box: np.ndarray, size: tuple[int, int]) -> Crop:
    """Warp one box of an RGB uint8 image into a normalised float32 network input of ``size`` = (w, h)."""
    center, scale = box_center_scale(box, aspect=size[0] / size[1])
    warped = cv2.warpAffine(image_rgb, warp_matrix(center, scale, size), size, flags=cv2.INTER_LINEAR)
    tensor = np.stack([np.take(NORMALISED[channel], warped[..., channel]) for channel in range(3)])
    return Crop(tensor, center, scale)


def simcc_maximum(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N,K,Wx], [N,K,Wy] -> (bin locations [N,K,2] float32, -1 where the score <= 0; scores [N,K])."""
    x_locs = simcc_x.argmax(axis=-1)
    y_locs = simcc_y.argmax(axis=-1)
    locs = np.stack([x_locs, y_locs], axis=-1).astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1))
    locs[scores <= 0.0] = -1
    return locs, scores


def to_image(locs: np.ndarray, crop: Crop, size: tuple[int, int]) -> np.ndarray:
    """Decoded SimCC bins of one crop [K,2] -> image pixels [K,2]."""
    return locs / SIMCC_SPLIT / np.array(size) * crop.scale + crop.center - crop.scale / 2


def flip_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Output of a mirrored crop -> the output of the original crop: swap left/right, reverse x bins."""
    return simcc_x[:, FLIP_INDICES, ::-1], simcc_y[:, FLIP_INDICES]


class PoseEstimator:
    """Runs the pose network on crops, batching them as the network's batch axis allows."""

    def __init__(self, session, *, max_batch: int = 16) -> None:
        self.session = session
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        batch, _, height, width = model_input.shape
        self.size = (int(width), int(height))
        self.dynamic = not isinstance(batch, int) or batch <= 0
        self.batch = max_batch if self.dynamic else batch

    def run(self, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 [N,3,h,w] -> (simcc_x, simcc_y), in calls of ``self.batch`` crops (padded when fixed)."""
        outputs_x, outputs_y = [], []
        for start in range(0, len(tensors), self.batch):
            chunk = tensors[start : start + self.batch]
            count = len(chunk)
            if not self.dynamic and count < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - count, *chunk.shape[1:]), chunk.dtype)])
            simcc_x, simcc_y = self.session.run(None, {self.input_name: chunk})
            outputs_x.append(simcc_x[:count])
            outputs_y.append(simcc_y[:count])
        return np.concatenate(outputs_x), np.concatenate(outputs_y)

    def estimate(
        self, items: list[tuple[np.ndarray, np.ndarray]], *, flip: bool = False
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each (RGB image, [N,4] boxes): (keypoints [N,133,2] in pixels, scores [N,133]).
        All crops of all items share the network calls."""
        crops = [make_crop(image, box, self.size) for image, boxes in items for box in boxes]
        if not crops:
            return [(np.zeros((0, 133, 2)), np.zeros((0, 133), np.float32)) for _ in items]
        tensors = np.stack([crop.tensor for crop in crops])
        if flip:
            simcc_x, simcc_y = self.run(np.concatenate([tensors, np.ascontiguousarray(tensors[..., ::-1])]))
            count = len(crops)
            flipped_x, flipped_y = flip_simcc(simcc_x[count:], simcc_y[count:])
            simcc_x = (simcc_x[:count] + flipped_x) * 0.5
            simcc_y = (simcc_y[:count] + flipped_y) * 0.5
        else:
            simcc_x, simcc_y = self.run(tensors)
        locs, scores = simcc_maximum(simcc_x, simcc_y)
        keypoints = np.stack([to_image(locs[i], crop, self.size) for i, crop in enumerate(crops)])
        results, start = [], 0
        for _, boxes in items:
            end = start + len(boxes)
            results.append((keypoints[start:end], scores[start:end]))
            start = end
        return results
