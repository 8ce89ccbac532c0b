"""mp4 comparisons without a tolerance tuned to one clip.

An H.264 file cannot be compared pixel for pixel with another encoder's file: the lossy encode moves pixels by
up to tens of levels, by amounts that depend on the content. So a test checks (1) the container facts exactly
and (2) that the decoded frames are as close to the frames handed to our encoder as the same frames come back
from an encode with the reference settings (upstream's codec, pixel format and rate control), measured in the
test on those very frames.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def read(path: Path) -> tuple[np.ndarray, dict]:
    """Decoded RGB frames [n, H, W, 3] and the container facts a comparison checks exactly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        facts = {
            "size": (stream.codec_context.width, stream.codec_context.height),
            "frames": len(frames),
            "fps": Fraction(stream.average_rate),
            "codec": (stream.codec_context.name, stream.codec_context.pix_fmt),
            "audio": bool(container.streams.audio),
        }
    return frames, facts


def reencode(
    frames: np.ndarray, fps: Fraction, path: Path, options: dict[str, str], bit_rate: int | None = None
) -> np.ndarray:
    """``frames`` through libx264 / yuv420p with ``options`` (such as ``{"crf": "23"}``), decoded again."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        stream.options = options
        for image in frames:
            container.mux(
                stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"))
            )
        container.mux(stream.encode())
    return read(path)[0]


def codec_error(decoded: np.ndarray, handed: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-frame mean and overall max absolute difference, in levels."""
    difference = np.abs(decoded.astype(np.int16) - handed.astype(np.int16))
    return difference.reshape(len(difference), -1).mean(axis=1), int(difference.max())


def assert_within_reencoding(decoded: np.ndarray, handed: np.ndarray, reference: np.ndarray) -> None:
    """``decoded`` (our file) is no further from ``handed`` than ``reference`` (the same frames encoded with
    the reference settings), frame by frame on average and at the worst pixel."""
    assert decoded.shape == handed.shape == reference.shape
    ours_mean, ours_max = codec_error(decoded, handed)
    bound_mean, bound_max = codec_error(reference, handed)
    assert (ours_mean <= bound_mean).all(), f"mean error per frame {ours_mean} above {bound_mean}"
    assert ours_max <= bound_max, f"worst pixel {ours_max} levels off, re-encoding gives {bound_max}"
