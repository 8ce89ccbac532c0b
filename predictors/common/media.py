"""Images in and out: safe decoding, size rules, and output files with unique names.

Decoding is defensive because every image comes from a user: the declared size is checked before any pixel
is decoded, every PIL mode becomes 8-bit RGB, EXIF orientation is applied, and each failure becomes one
`InputError` sentence that names the input.

Local paths. Cog (0.23.1, coglet) passes a Path input to `predict()` as a string unless it starts with
`http://`, `https://` or `data:` (the schema's `"format": "uri"` is not enforced), so `/etc/passwd`,
`file:///...` or `weights/x.pth` would reach `predict()` and open a file inside the container (checked
against a running coglet server). URL and data-URI inputs are fetched for the running prediction by
`predictors.common.input_files`. `check_input_path` accepts only those files when
`TRIPTYCH_REJECT_LOCAL_PATHS=1` (set by the cog yamls), never another file in the temp directory, which
could belong to another request; direct library use keeps local paths working.

Limits. Every image has at most `max_pixels` pixels, a short side of at least `min_side` and an aspect ratio
of at most `max_aspect`, checked from the header before any pixel is decoded: thin or huge images otherwise
end deep inside a model as a bare MemoryError, an OpenCV assertion or a giant allocation. Pillow opens only
the formats listed in `DECODE_FORMATS` (never EPS, which would start Ghostscript, nor any other plugin).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import struct
import tempfile
import uuid
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from predictors.common import input_files
from predictors.common.errors import InputError, excerpt

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIDE = 16
DEFAULT_MAX_ASPECT = 10.0
REJECT_LOCAL_PATHS_ENV = "TRIPTYCH_REJECT_LOCAL_PATHS"
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
# What load_image decodes. The JPEG opener also takes the multi-picture JPEGs many phones write (MPO).
DECODE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

# What PIL raises for damaged data, depending on the format plugin. MemoryError is deliberately absent.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
_ALPHA_MODES = {"LA", "PA", "RGBA", "RGBa"}


def _reject_local_paths() -> bool:
    return os.environ.get(REJECT_LOCAL_PATHS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def check_input_path(path: str | os.PathLike[str], what: str = "input") -> Path:
    """Return `path` as a Path, refusing container-local files when TRIPTYCH_REJECT_LOCAL_PATHS is on.

    Only files fetched for the running prediction are accepted then (see the module docstring).
    """
    candidate = Path(path)
    if _reject_local_paths() and not input_files.is_prediction_file(candidate):
        raise InputError(
            f"The {what} must be given as an http(s) URL or a data URI; a path on the server "
            f"({excerpt(os.fspath(path))}) is not accepted."
        )
    return candidate


def check_size(
    width: int,
    height: int,
    what: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    max_aspect: float = DEFAULT_MAX_ASPECT,
) -> None:
    """Raise InputError, naming the limit and the fix, when a picture's size is outside the limits."""
    if width * height > max_pixels:
        raise InputError(
            f"The {what} is {width}x{height} pixels ({width * height / 1e6:.1f} MP), more than the "
            f"{max_pixels / 1e6:.1f} MP limit. Downscale it and try again."
        )
    if min(width, height) < min_side:
        raise InputError(
            f"The {what} is {width}x{height} pixels; each side must be at least {min_side} pixels. "
            "Use a larger picture."
        )
    if max(width, height) > max_aspect * min(width, height):
        raise InputError(
            f"The {what} is {width}x{height} pixels: its long side is more than {max_aspect:g} times its "
            "short side. Crop it to a less elongated shape and try again."
        )


def load_image(
    source: str | os.PathLike[str],
    *,
    what: str = "image",
    max_pixels: int | None = None,
    min_side: int = DEFAULT_MIN_SIDE,
    max_aspect: float = DEFAULT_MAX_ASPECT,
) -> Image.Image:
    """Decode an image file into 8-bit RGB with its EXIF orientation applied.

    The size declared in the header is checked (`check_size`: `max_pixels`, default DEFAULT_MAX_PIXELS,
    `min_side`, `max_aspect`) before the pixels are decoded, so a decompression bomb never gets its buffer
    allocated and a sliver of a picture never reaches a model.
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    path = check_input_path(source, what)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"The {what} was not found ({os.fspath(source)}).") from None
    except OSError as exc:
        raise InputError(f"The {what} could not be read ({exc.strerror or exc}).") from None
    if not path.is_file():
        raise InputError(f"The {what} is not a file ({os.fspath(source)}).")
    if size == 0:
        raise InputError(f"The {what} is empty (0 bytes). Check its URL, or upload the file again.")

    with warnings.catch_warnings():
        # PIL's own bomb warning is superseded by the explicit limit below; its hard error still applies.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path, formats=DECODE_FORMATS)
        except Image.DecompressionBombError as exc:
            raise InputError(
                f"The {what} is too large to decode safely ({exc}). Downscale it and try again."
            ) from None
        except UnidentifiedImageError:
            raise InputError(
                f"The {what} is not a picture file we can read (expected PNG, JPEG, WebP, GIF, BMP or TIFF)."
            ) from None
        except _DECODE_ERRORS as exc:
            raise InputError(
                f"The {what} is corrupt and could not be decoded ({exc}). Upload the complete file again."
            ) from None

        with image:
            check_size(*image.size, what, max_pixels=limit, min_side=min_side, max_aspect=max_aspect)
            try:
                # Multi-frame files (GIF, APNG, TIFF) keep their first frame, the one Image.open points at.
                image.load()
                oriented = ImageOps.exif_transpose(image)
                return to_rgb(oriented)
            except _DECODE_ERRORS as exc:
                raise InputError(
                    f"The {what} is truncated or corrupt and could not be decoded ({exc}). "
                    "Upload the complete file again."
                ) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, scaling high bit depths and flattening alpha onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        # Integer images decoded from files hold 16-bit samples; PIL's own convert() clips them at 255.
        values = np.asarray(image, dtype=np.float64)
        return _grey_to_rgb(np.clip(values, 0, 65535) / 257.0)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        # Float images are either normalised to [0, 1] or already on the 0..255 scale.
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        return _grey_to_rgb(np.clip(values * scale, 0, 255))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode == "La":
        image = image.convert("LA")  # PIL has no direct premultiplied-grey to RGBA conversion
    if image.mode in _ALPHA_MODES:
        # The models take three channels. The colour under fully transparent pixels is arbitrary (often
        # black), so it is composited onto white, which is how viewers and web pages show such images.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_rgb(values: np.ndarray) -> Image.Image:
    grey = Image.fromarray(np.rint(values).astype(np.uint8), mode="L")
    return grey.convert("RGB")


def fit_size(
    width: int,
    height: int,
    *,
    max_side: int | None = None,
    max_pixels: int | None = None,
    multiple: int = 8,
) -> tuple[int, int]:
    """Size that keeps the aspect ratio, fits the limits and has both sides a multiple of `multiple`.

    The image is scaled down (never up) until it fits `max_side` and `max_pixels`; each side is then rounded
    to the nearest multiple, or down when rounding to the nearest would break a limit. A side never drops
    below one multiple, even for very thin images.
    """
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    if multiple < 1:
        raise ValueError(f"multiple must be at least 1, got {multiple}")
    scale = 1.0
    if max_side is not None:
        scale = min(scale, max_side / max(width, height))
    if max_pixels is not None:
        scale = min(scale, math.sqrt(max_pixels / (width * height)))
    exact = (width * scale, height * scale)

    def snap(rounding) -> tuple[int, int]:
        w, h = (max(multiple, int(rounding(side / multiple)) * multiple) for side in exact)
        return w, h

    w, h = snap(lambda x: math.floor(x + 0.5))  # halves round up, unlike round()'s banker's rounding
    over_side = max_side is not None and max(w, h) > max_side
    over_pixels = max_pixels is not None and w * h > max_pixels
    if over_side or over_pixels:
        w, h = snap(math.floor)
    return w, h


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Lanczos resize to exactly `size` (width, height); the same image back when it already has that size."""
    size = (int(size[0]), int(size[1]))
    if image.size == size:
        return image
    # reducing_gap lets PIL shrink big downscales in a cheap first pass with no visible difference.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


class Outputs:
    """Output files of one predictor: unique names, and the previous prediction's files removed.

    Cog uploads outputs by basename, so every file gets a unique name. Cog reads the files after predict()
    returns and never deletes them, so they are removed when the next prediction calls `start()`.
    One instance serves one prediction at a time.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="triptych-outputs-"))
        else:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True)
        self._files: list[Path] = []

    def start(self) -> None:
        """Delete the files written for the previous prediction."""
        for path in self._files:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self._files = []

    def new_path(self, stem: str, suffix: str) -> Path:
        """A fresh path `<root>/<stem>-<random><suffix>` that `start()` will delete later."""
        clean_stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "output"
        if suffix and not suffix.startswith("."):
            suffix = "." + suffix
        path = self.root / f"{clean_stem}-{uuid.uuid4().hex[:12]}{suffix}"
        self._files.append(path)
        return path

    def save_image(self, image: Image.Image, stem: str, fmt: str = "png", quality: int = 95) -> Path:
        """Encode `image` as png, jpg or webp (quality 1-100 for the lossy two) and return its path."""
        key = fmt.lower().lstrip(".")
        if key not in IMAGE_FORMATS:
            raise ValueError(f"unsupported image format {fmt!r}; choose one of png, jpg, webp")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be between 1 and 100, got {quality}")
        pil_format = IMAGE_FORMATS[key]
        path = self.new_path(stem, ".jpg" if pil_format == "JPEG" else f".{key}")
        if pil_format == "PNG":
            image.save(path, format="PNG")
        else:
            image = image if image.mode == "RGB" else to_rgb(image)
            image.save(path, format=pil_format, quality=quality)
        return path
