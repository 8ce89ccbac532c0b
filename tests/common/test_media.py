"""predictors.common.media: the bad-image catalogue, mode conversion, size rules, outputs, local paths."""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from predictors.common import input_files, media
from predictors.common.errors import InputError
from predictors.common.media import Outputs, check_input_path, fit_size, load_image, resize, to_rgb


@pytest.fixture(autouse=True)
def _local_paths_allowed(monkeypatch):
    monkeypatch.delenv(media.REJECT_LOCAL_PATHS_ENV, raising=False)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bytes(width: int, height: int, bit_depth: int, color_type: int, idat: bytes | None) -> bytes:
    """A PNG written by hand, so headers can claim sizes no encoder would produce."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", header)
    if idat is not None:
        chunks += _png_chunk(b"IDAT", idat)
    return b"\x89PNG\r\n\x1a\n" + chunks + _png_chunk(b"IEND", b"")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _asymmetric_rgb(width: int = 5, height: int = 3) -> np.ndarray:
    """Every pixel a different colour, so any flip or rotation changes the array."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 40 + 10, ys * 70 + 20, (xs + ys * width) * 13], axis=-1).astype(np.uint8)


# ---- the bad-image catalogue ---------------------------------------------------------------------------


def test_truncated_png_is_refused_as_truncated(tmp_path):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path = _write(tmp_path / "cut.png", buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(InputError, match=r"^The content image is truncated or corrupt"):
        load_image(path, what="content image")


def test_zero_bytes_is_refused_as_empty(tmp_path):
    path = _write(tmp_path / "empty.png", b"")
    with pytest.raises(InputError) as info:
        load_image(path, what="content image")
    assert str(info.value) == "The content image is empty (0 bytes). Check its URL, or upload the file again."


def test_text_file_named_jpg_is_not_a_picture(tmp_path):
    path = _write(tmp_path / "notes.jpg", b"this is a shopping list, not a photo\n")
    with pytest.raises(InputError, match=r"^The style image is not a picture file we can read \("):
        load_image(path, what="style image")


def test_bomb_header_50000_square_is_refused_before_decoding(tmp_path):
    # Header only, no pixel data: had the decoder run, the answer would be "truncated", not "too large".
    path = _write(tmp_path / "bomb.png", _png_bytes(50000, 50000, 8, 2, idat=None))
    with pytest.raises(InputError, match=r"^The image is too large") as info:
        load_image(path)
    assert "2500000000" in str(info.value)
    # A caller raising its own limit does not switch off the hard guard either.
    with pytest.raises(InputError, match="too large"):
        load_image(path, max_pixels=10**10)


def test_header_over_the_default_limit_names_size_and_limit(tmp_path):
    path = _write(tmp_path / "big.png", _png_bytes(8000, 6000, 8, 2, idat=None))
    with pytest.raises(InputError) as info:
        load_image(path, what="content image")
    message = str(info.value)
    assert message.startswith("The content image is 8000x6000 pixels (48.0 MP)")
    assert "40.0 MP limit" in message


def test_max_pixels_argument_is_enforced_at_the_boundary(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 50), (1, 2, 3)).save(path)
    assert load_image(path, max_pixels=5000).size == (100, 50)
    with pytest.raises(InputError, match="100x50 pixels"):
        load_image(path, max_pixels=4999)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"^The style image was not found"):
        load_image(tmp_path / "nope.png", what="style image")


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = np.zeros((16, 48, 4), dtype=np.uint8)
    cmyk[:, :16, 0] = 255  # cyan
    cmyk[:, 16:32, 1] = 255  # magenta
    cmyk[:, 32:, 3] = 255  # black
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(cmyk, mode="CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    image = load_image(path)
    assert image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    np.testing.assert_allclose(pixels[8, 8], [0, 255, 255], atol=6)
    np.testing.assert_allclose(pixels[8, 24], [255, 0, 255], atol=6)
    np.testing.assert_allclose(pixels[8, 40], [0, 0, 0], atol=6)


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    pixels = np.asarray(load_image(path, min_side=1))
    # 65535 -> 255 and 257*k -> k; clipping would have turned 1000 into 255.
    np.testing.assert_array_equal(pixels[0, :, 0], [0, 4, 128, 255])
    assert (pixels == pixels[..., :1]).all()


def test_16bit_rgb_png_is_scaled(tmp_path):
    samples = np.array([[[1000, 40000, 257], [0, 32896, 65535]]], dtype=">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in samples)
    path = _write(tmp_path / "rgb48.png", _png_bytes(2, 1, 16, 2, zlib.compress(raw)))
    pixels = np.asarray(load_image(path, min_side=1)).astype(float)
    np.testing.assert_allclose(pixels, samples.astype(float) / 257.0, atol=1.0)


def test_rgba_is_composited_onto_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]  # opaque red
    rgba[0, 1] = [255, 0, 0, 128]  # half-transparent red
    rgba[1, 0] = [0, 0, 0, 0]  # transparent black
    rgba[1, 1] = [0, 0, 255, 255]
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    pixels = np.asarray(load_image(path, min_side=1)).astype(int)
    np.testing.assert_array_equal(pixels[0, 0], [255, 0, 0])
    np.testing.assert_allclose(pixels[0, 1], [255, 127, 127], atol=1)
    np.testing.assert_array_equal(pixels[1, 0], [255, 255, 255])
    np.testing.assert_array_equal(pixels[1, 1], [0, 0, 255])


def test_palette_with_transparency_is_composited_onto_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 200, 30, 40] + [0, 0, 0] * 254)
    image.putdata([0, 1])
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    assert Image.open(path).mode == "P"
    pixels = np.asarray(load_image(path, min_side=1))
    np.testing.assert_array_equal(pixels[0], [[255, 255, 255], [200, 30, 40]])


EXIF_DISPLAY = {
    # What a viewer shows for each EXIF orientation, written out from the EXIF definitions.
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(np.fliplr(a), -1),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(EXIF_DISPLAY))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = _asymmetric_rgb()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"orientation{orientation}.png"
    Image.fromarray(stored).save(path, exif=exif)
    np.testing.assert_array_equal(np.asarray(load_image(path, min_side=1)), EXIF_DISPLAY[orientation](stored))


def test_exif_orientation_in_a_camera_jpeg(tmp_path):
    stored = np.kron(_asymmetric_rgb(3, 2), np.ones((16, 16, 1))).astype(np.uint8)  # 16-px blocks
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "camera.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=98)
    decoded = np.asarray(load_image(path)).astype(int)
    assert decoded.shape == (48, 32, 3)
    expected = np.rot90(stored, -1).astype(int)
    np.testing.assert_allclose(decoded[8::16, 8::16], expected[8::16, 8::16], atol=8)


# ---- every other mode ------------------------------------------------------------------------------------


def test_to_rgb_converts_the_remaining_modes():
    grey = Image.fromarray(np.array([[0, 128, 255]], dtype=np.uint8))
    assert np.asarray(to_rgb(grey))[0, :, 1].tolist() == [0, 128, 255]

    grey_alpha = Image.merge("LA", [grey, Image.fromarray(np.array([[0, 255, 255]], dtype=np.uint8))])
    assert np.asarray(to_rgb(grey_alpha))[0, :, 0].tolist() == [255, 128, 255]

    premultiplied = Image.new("La", (1, 1), (0, 0))
    assert to_rgb(premultiplied).getpixel((0, 0)) == (255, 255, 255)

    lab = Image.new("LAB", (1, 1), (255, 128, 128))  # L=100, a=b=0: white
    assert all(channel >= 250 for channel in to_rgb(lab).getpixel((0, 0)))

    bilevel = Image.fromarray(np.array([[False, True]]))
    assert bilevel.mode == "1"
    assert np.asarray(to_rgb(bilevel))[0, :, 2].tolist() == [0, 255]

    int32 = Image.fromarray(np.array([[0, 1000, 65535, 70000]], dtype=np.int32))
    assert int32.mode == "I"
    assert np.asarray(to_rgb(int32))[0, :, 0].tolist() == [0, 4, 255, 255]

    unit_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(unit_float))[0, :, 0].tolist() == [0, 128, 255]

    big_endian = Image.frombytes("I;16B", (2, 1), np.array([257, 65535], dtype=">u2").tobytes())
    assert np.asarray(to_rgb(big_endian))[0, :, 0].tolist() == [1, 255]

    for image in (grey, grey_alpha, premultiplied, lab, bilevel, int32, unit_float, big_endian):
        assert to_rgb(image).mode == "RGB"


# ---- size rules ------------------------------------------------------------------------------------------


def test_fit_size_rounds_to_the_nearest_multiple_without_limits():
    assert fit_size(1000, 750) == (1000, 752)
    assert fit_size(640, 480, multiple=64) == (640, 512)  # 7.5 multiples round up


def test_fit_size_respects_max_side_and_keeps_aspect():
    assert fit_size(1000, 750, max_side=512, multiple=64) == (512, 384)
    # Rounding 500 to the nearest multiple of 64 would give 512 > 500, so it rounds down.
    assert fit_size(1000, 750, max_side=500, multiple=64) == (448, 320)
    assert fit_size(3000, 4000, max_side=1024) == (768, 1024)


def test_fit_size_respects_max_pixels():
    w, h = fit_size(4000, 3000, max_pixels=1_000_000)
    assert (w, h) == (1152, 864)
    assert w * h <= 1_000_000
    w, h = fit_size(4000, 3000, max_pixels=1_000_000, multiple=64)
    assert w * h <= 1_000_000 and w % 64 == 0 and h % 64 == 0
    assert abs(w / h - 4 / 3) < 0.1


def test_fit_size_never_enlarges_and_never_goes_below_one_multiple():
    assert fit_size(200, 100, max_side=4096) == (200, 104)
    assert fit_size(10000, 10, max_side=1000, multiple=64) == (960, 64)
    assert fit_size(3, 5) == (8, 8)


def test_fit_size_rejects_nonsense_arguments():
    with pytest.raises(ValueError):
        fit_size(0, 10)
    with pytest.raises(ValueError):
        fit_size(10, 10, multiple=0)


def test_resize_gives_the_exact_size_and_skips_a_no_op():
    image = Image.fromarray(_asymmetric_rgb(40, 30))
    assert resize(image, (24, 16)).size == (24, 16)
    assert resize(image, (40, 30)) is image


# ---- outputs ---------------------------------------------------------------------------------------------


def test_outputs_names_are_unique_and_sanitised(tmp_path):
    outputs = Outputs(tmp_path)
    paths = [outputs.new_path("styled image/../x", ".mp4") for _ in range(50)]
    assert len({p.name for p in paths}) == 50
    assert all(p.parent == tmp_path and p.suffix == ".mp4" for p in paths)
    assert all(p.name.startswith("styled-image-x-") for p in paths)
    assert outputs.new_path("frames", "png").suffix == ".png"


def test_outputs_start_removes_only_the_previous_predictions_files(tmp_path):
    outputs = Outputs(tmp_path)
    unrelated = _write(tmp_path / "keep.txt", b"not ours")
    first = outputs.save_image(Image.new("RGB", (8, 8)), "out")
    video = outputs.new_path("video", ".mp4")
    video.write_bytes(b"\x00")
    outputs.start()
    assert not first.exists() and not video.exists()
    assert unrelated.exists()
    second = outputs.save_image(Image.new("RGB", (8, 8)), "out")
    assert second.exists() and second.name != first.name


def test_save_image_formats_and_quality(tmp_path):
    outputs = Outputs(tmp_path)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)

    png = outputs.save_image(image, "out", "png")
    assert png.suffix == ".png"
    np.testing.assert_array_equal(np.asarray(Image.open(png)), pixels)

    low = outputs.save_image(image, "out", "jpg", quality=20)
    high = outputs.save_image(image, "out", "jpg", quality=95)
    assert low.suffix == high.suffix == ".jpg"
    assert Image.open(high).format == "JPEG"
    assert low.stat().st_size < high.stat().st_size

    webp = outputs.save_image(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "out", "webp", quality=80)
    with Image.open(webp) as decoded:
        assert decoded.format == "WEBP"
        assert decoded.convert("RGB").getpixel((0, 0)) == (255, 255, 255)

    with pytest.raises(ValueError):
        outputs.save_image(image, "out", "gif")
    with pytest.raises(ValueError):
        outputs.save_image(image, "out", "jpg", quality=0)


def test_default_outputs_root_is_private_and_not_a_download(monkeypatch):
    outputs = Outputs()
    try:
        path = outputs.save_image(Image.new("RGB", (8, 8)), "out")
        assert path.exists()
        monkeypatch.setenv(media.REJECT_LOCAL_PATHS_ENV, "1")
        with pytest.raises(InputError):
            check_input_path(path, "image")
    finally:
        outputs.start()
        outputs.root.rmdir()


# ---- local-path refusal ----------------------------------------------------------------------------------


def test_local_paths_are_allowed_when_the_setting_is_off(tmp_path):
    path = tmp_path / "local.png"
    Image.new("RGB", (8, 8), (9, 9, 9)).save(path)
    assert check_input_path(str(path), "image") == path
    assert load_image(path, min_side=1).getpixel((0, 0)) == (9, 9, 9)


@pytest.mark.parametrize("value", ["/etc/passwd", "weights/nst/vgg19.pth", "file:///etc/passwd"])
def test_local_paths_are_refused_when_the_setting_is_on(monkeypatch, value):
    monkeypatch.setenv(media.REJECT_LOCAL_PATHS_ENV, "1")
    with pytest.raises(
        InputError, match=r"^The content image must be given as an http\(s\) URL or a data URI"
    ):
        check_input_path(value, "content image")
    with pytest.raises(InputError, match="data URI"):
        load_image(value, what="content image")


def test_refusal_sees_through_links_and_subdirectories(monkeypatch, tmp_path):
    monkeypatch.setenv(media.REJECT_LOCAL_PATHS_ENV, "1")
    tmpdir = Path(tempfile.gettempdir())
    link = tmpdir / f"tmp{os.getpid()}link.png"
    link.symlink_to("/etc/passwd")
    try:
        with pytest.raises(InputError):
            check_input_path(link, "image")
    finally:
        link.unlink()
    nested = tmp_path / "tmpnested.png"
    nested.write_bytes(b"x")
    with pytest.raises(InputError):
        check_input_path(nested, "image")


def test_only_files_fetched_for_the_running_prediction_are_accepted(monkeypatch):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 200, 30)).save(buffer, "PNG")
    monkeypatch.setenv(media.REJECT_LOCAL_PATHS_ENV, "1")
    with input_files.prediction_files() as files:
        mine = files.save(io.BytesIO(buffer.getvalue()), "photo.png", "input image")
        assert check_input_path(mine, "image") == mine
        assert load_image(mine, min_side=1).getpixel((0, 0)) == (10, 200, 30)
    # Once the prediction is over its file is gone and its path names nothing the next one may read.
    assert not mine.exists()
    with pytest.raises(InputError, match="a path on the server"):
        check_input_path(mine, "image")


def test_another_requests_download_left_in_the_temp_directory_is_refused(monkeypatch):
    # Cog names its downloads tmp<random><name> directly in the temp directory; one left behind by another
    # request must not be readable by naming it, even while a prediction of our own is running.
    monkeypatch.setenv(media.REJECT_LOCAL_PATHS_ENV, "1")
    with tempfile.NamedTemporaryFile(suffix="file.png", delete=False) as handle:
        Image.new("RGB", (16, 16), (1, 2, 3)).save(handle, "PNG")
    try:
        with input_files.prediction_files(), pytest.raises(InputError, match="a path on the server"):
            load_image(handle.name)
    finally:
        os.unlink(handle.name)


def test_a_huge_path_is_not_echoed_back(monkeypatch):
    monkeypatch.setenv(media.REJECT_LOCAL_PATHS_ENV, "1")
    with pytest.raises(InputError) as info:
        check_input_path("/x" * 500_000, "image")
    assert len(str(info.value)) < 200 and "(1000002 characters)" in str(info.value)


# ---- size limits and formats ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((40000, 1), "each side must be at least 16 pixels"),
        ((4000, 300), "long side is more than 10 times its short side"),
        ((20, 20000), "long side is more than 10 times its short side"),
        ((12, 64), "each side must be at least 16 pixels"),
        ((9000, 5000), "more than the 40.0 MP limit"),
    ],
)
def test_sizes_outside_the_limits_are_refused_from_the_header(tmp_path, size, message):
    path = _write(tmp_path / "odd.png", _png_bytes(*size, 8, 2, idat=None))
    with pytest.raises(InputError, match=message) as info:
        load_image(path, what="style image 3")
    assert str(info.value).startswith(f"The style image 3 is {size[0]}x{size[1]} pixels")


def test_the_limits_are_inclusive(tmp_path):
    path = tmp_path / "edge.png"
    Image.new("RGB", (160, 16)).save(path)
    assert load_image(path).size == (160, 16)


def test_formats_outside_the_list_are_not_opened(tmp_path):
    # A valid EPS (which Pillow would hand to Ghostscript) and a valid PPM are both refused unread.
    eps = _write(tmp_path / "a.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n")
    ppm = tmp_path / "a.ppm"
    Image.new("RGB", (16, 16)).save(ppm)
    for path in (eps, ppm):
        with pytest.raises(InputError, match="not a picture file we can read"):
            load_image(path)
