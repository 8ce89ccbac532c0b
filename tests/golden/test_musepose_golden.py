"""Parity with upstream MusePose stage 2 on ../shared/golden/musepose_tiny (README §1; fp32 on CPU).

Every quantity comes from the folder's own args.json, so the same test runs on any golden set of that layout
(other sizes, windows, overlaps, steps, seeds and skips).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from PIL import Image

from predictors.musepose.animate import DECODE_CHUNK, frame_plan, output_fps
from predictors.musepose.convert import CHECKPOINTS, CONFIG_INPUT, convert_release
from predictors.musepose.models.config import SCHEDULER_KWARGS
from predictors.musepose.models.loading import load_models
from predictors.musepose.pipeline import (
    MusePosePipeline,
    ReferenceEncoding,
    context_windows,
    pad_poses,
    padding_repeats,
    resize_horizontal_first,
    resize_poses,
    to_output_frames,
)

pytestmark = pytest.mark.golden

# README §1.6: videos.npy within 1e-4 of upstream's, fp32 on CPU.
VIDEOS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def golden(golden_dir) -> Path:
    folder = golden_dir / "musepose_tiny"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


@pytest.fixture(scope="module")
def args(golden) -> dict:
    return json.loads((golden / "args.json").read_text())


def expected(golden: Path, name: str) -> np.ndarray:
    path = golden / "expected" / name
    return np.load(path) if path.suffix == ".npy" else dict(np.load(path))


def intermediate(golden: Path, name: str):
    return expected(golden, f"intermediates/{name}")


@pytest.fixture(scope="module")
def pipe(golden, tmp_path_factory) -> MusePosePipeline:
    weights = golden / "weights"
    compact = tmp_path_factory.mktemp("musepose-compact")
    outputs = {spec.output: compact / spec.filename.replace(".pth", ".safetensors") for spec in CHECKPOINTS}
    inputs = {spec.source: weights / "MusePose" / spec.filename for spec in CHECKPOINTS}
    inputs[CONFIG_INPUT] = weights / "sd-image-variations-diffusers/unet/config.json"
    convert_release(inputs, outputs)
    models = load_models(
        unet_config=weights / "sd-image-variations-diffusers/unet/config.json",
        denoising_unet=outputs["musepose_denoising_unet_compact"],
        motion_module=outputs["musepose_motion_module_compact"],
        reference_unet=outputs["musepose_reference_unet_compact"],
        pose_guider=outputs["musepose_pose_guider_compact"],
        vae=weights / "sd-vae-ft-mse",
        image_encoder=weights / "image_encoder",
    )
    return MusePosePipeline(models.to(torch.device("cpu"), torch.float32), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def reference_image(golden) -> Image.Image:
    return Image.open(golden / "inputs/ref.png").convert("RGB")


@pytest.fixture(scope="module")
def poses(golden, args) -> np.ndarray:
    """Decoded pose frames after skip, L-cut, Lanczos resize and padding: uint8 [N, H, W, 3]."""
    frames = np.load(golden / "inputs/pose_frames_decoded.npz")["frames"]
    used = frame_plan(len(frames), args["L"], args["skip"])
    return pad_poses(resize_poses([frames[i] for i in used], args["W"], args["H"]), args["S"], args["O"])


def assert_relative(actual, wanted, tolerance=1e-4):
    actual, wanted = np.asarray(actual, np.float64), np.asarray(wanted, np.float64)
    assert actual.shape == wanted.shape
    error = np.abs(actual - wanted).max() / max(np.abs(wanted).max(), 1e-12)
    assert error < tolerance, f"relative error {error:.3g}"


def golden_encoding(golden) -> ReferenceEncoding:
    embeds = torch.from_numpy(intermediate(golden, "clip_image_embeds.npy"))
    return ReferenceEncoding(
        clip_embeds=embeds[:, None], latents=torch.from_numpy(intermediate(golden, "ref_latents.npy"))
    )


def test_frame_bookkeeping_matches_the_trace(golden, args, poses):
    """Lengths, padding, windows and timesteps as upstream's run recorded them in trace.json."""
    trace = json.loads((golden / "expected/trace.json").read_text())
    lengths = trace["lengths"]
    used = frame_plan(lengths["source_frames_in_pose_mp4"], args["L"], args["skip"])
    assert len(used) == lengths["L_after_skip"] == lengths["frames_written_to_output_mp4"]
    assert padding_repeats(len(used), args["S"], args["O"]) == lengths["padding_repeats_of_last_frame"]
    assert len(poses) == lengths["N_frames_generated"]
    assert output_fps(Fraction(lengths["pose_mp4"]["average_rate"]), args["skip"]) == Fraction(
        trace["outputs"]["output_mp4"]["average_rate"]
    )
    scheduler = DDIMScheduler(**SCHEDULER_KWARGS)
    scheduler.set_timesteps(args["steps"])
    steps = trace["context_windows_per_step"]
    assert [step["t"] for step in steps] == scheduler.timesteps.tolist() == trace["scheduler"]["timesteps"]
    for step in steps:
        assert context_windows(len(poses), args["S"], args["O"]) == step["windows"]


def test_recomputed_position_tables_equal_the_checkpoints(golden, pipe):
    """The pe tables are dropped at conversion and rebuilt: they equal the ones the release file carries."""
    stored = torch.load(golden / "weights/MusePose/motion_module.pth", map_location="cpu", weights_only=True)
    tables = dict(pipe.models.denoising_unet.named_buffers())
    stored = {key: value for key, value in stored.items() if key.endswith(".pe")}
    assert stored.keys() == {key for key in tables if key.endswith(".pe")}
    for key, value in stored.items():
        np.testing.assert_array_equal(tables[key].to(value.dtype).numpy(), value.numpy())


def test_preprocessing_matches(pipe, golden, args, reference_image, poses):
    """Same uint8 pixels (Pillow 10.4's resizes) through the same float32 operations: equal bit for bit."""
    clip = pipe.clip_pixels(reference_image).numpy()
    np.testing.assert_array_equal(clip, intermediate(golden, "clip_pixel_values.npy"))
    ref = pipe.reference_pixels(reference_image, args["W"], args["H"]).numpy()
    np.testing.assert_array_equal(ref, intermediate(golden, "ref_image_tensor.npy"))
    cond = torch.from_numpy(poses).permute(3, 0, 1, 2)[None].float() / 255
    np.testing.assert_array_equal(cond.numpy(), intermediate(golden, "pose_cond_tensor.npy"))


def test_initial_noise_is_bit_exact(pipe, golden, args, poses):
    noise = pipe.initial_noise(len(poses), args["W"], args["H"], torch.Generator().manual_seed(args["seed"]))
    np.testing.assert_array_equal(noise.numpy(), expected(golden, "initial_noise.npy"))


def test_encoders_and_pose_guider(pipe, golden, args, reference_image, poses):
    encoding = pipe.encode_reference(reference_image, args["W"], args["H"])
    assert_relative(encoding.clip_embeds[:, 0], intermediate(golden, "clip_image_embeds.npy"))
    assert_relative(encoding.latents, intermediate(golden, "ref_latents.npy"))
    assert_relative(pipe.pose_features(poses), intermediate(golden, "pose_fea.npy"))


def bank_pairs(golden) -> list[tuple[str, str]]:
    """(key in the golden npz files, writer block name) in upstream's pairing order."""
    pairs = json.loads((golden / "expected/trace.json").read_text())["reference_attention"]
    return [(f"{pair['index']:02d}", pair["writer"]) for pair in pairs["pairs_sorted_by_minus_channels"]]


def test_reference_net_reproduces_upstreams_call(pipe, golden):
    """Upstream's own ReferenceNet call (a [uncond, cond] batch, timestep 0) at the set's thread count gives
    upstream's writer features to 1e-5 (README §1.6); on the oracle's kind of machine, bit for bit."""
    encoding = golden_encoding(golden)
    writer_fp32 = intermediate(golden, "reference_bank_writer_fp32.npz")
    threads = torch.get_num_threads()
    torch.set_num_threads(
        json.loads((golden / "expected/trace.json").read_text())["runtime"]["torch_threads"]
    )
    try:
        pipe.recorded.clear()
        with torch.no_grad():
            pipe.models.reference_unet(
                encoding.latents.repeat(2, 1, 1, 1),
                torch.zeros((), dtype=torch.long),
                encoder_hidden_states=torch.cat(
                    [torch.zeros_like(encoding.clip_embeds), encoding.clip_embeds]
                ),
            )
        recorded = dict(pipe.recorded)
    finally:
        pipe.recorded.clear()
        torch.set_num_threads(threads)
    for key, name in bank_pairs(golden):
        assert_relative(recorded[name], writer_fp32[key], 1e-5)


def test_reference_bank_and_its_float16_rounding(pipe, golden):
    """The product records the conditional row alone, at any thread count: other reduction orders in the
    kernels, so the README's rule for intermediates applies (docs/musepose.md says which ops), and the bank
    is that recording rounded to float16."""
    writer_fp32 = intermediate(golden, "reference_bank_writer_fp32.npz")
    reader_fp16 = intermediate(golden, "reference_bank_fp16.npz")
    recorded = pipe.record_reference(golden_encoding(golden))
    pipe.bank.load(recorded, first_half_unconditional=True)
    try:
        for key, name in bank_pairs(golden):
            # The last row is the conditional one, the only one upstream's reader uses; we record only it.
            assert_relative(recorded[name][0], writer_fp32[key][-1])
            ours = pipe.bank.features[name]
            assert ours.dtype == torch.float16
            np.testing.assert_array_equal(ours.numpy(), recorded[name].to(torch.float16).numpy())
            theirs = reader_fp16[key][-1]
            step = np.abs(ours[0].float().numpy() - theirs.astype(np.float32))
            # A float32 difference may move a value across a float16 rounding boundary: one float16 step at
            # most, and only where the float32 values differ.
            noise = np.abs(recorded[name][0].numpy() - writer_fp32[key][-1])
            assert (step <= noise + np.abs(np.spacing(theirs)).astype(np.float32)).all()
            assert (step[noise == 0] == 0).all()
    finally:
        pipe.bank.clear()


def test_unet_calls_match_window_by_window(pipe, golden, args, poses):
    inputs = intermediate(golden, "unet_window_inputs.npy")
    preds = intermediate(golden, "unet_window_preds.npy")
    timesteps = json.loads((golden / "expected/trace.json").read_text())["scheduler"]["timesteps"]
    encoding = golden_encoding(golden)
    windows = context_windows(len(poses), args["S"], args["O"])
    guided = args["cfg"] > 1.0
    rows = 2 if guided else 1
    context = encoding.clip_embeds
    if guided:
        context = torch.cat([torch.zeros_like(context), context])
    pose_fea = torch.from_numpy(intermediate(golden, "pose_fea.npy"))
    assert len(inputs) == len(timesteps) * len(windows)
    pipe.bank.load(pipe.record_reference(encoding), first_half_unconditional=guided)
    try:
        for call in (0, len(inputs) - 1):
            frame_ids = windows[call % len(windows)]
            with torch.no_grad():
                pred = pipe.models.denoising_unet(
                    torch.from_numpy(inputs[call]),
                    torch.tensor(timesteps[call // len(windows)]),
                    context,
                    pose_fea[:, :, frame_ids].repeat(rows, 1, 1, 1, 1),
                )
            assert_relative(pred, preds[call])
    finally:
        pipe.bank.clear()


def test_videos_and_output_frames_end_to_end(pipe, golden, args, reference_image, poses):
    encoding = pipe.encode_reference(reference_image, args["W"], args["H"])
    latents = pipe.denoise(
        poses,
        encoding,
        steps=args["steps"],
        guidance=args["cfg"],
        window=args["S"],
        overlap=args["O"],
        generator=torch.Generator().manual_seed(args["seed"]),
    )
    assert_relative(latents, intermediate(golden, "step_latents_out.npy")[-1])
    videos = torch.cat(list(pipe.decode(latents, DECODE_CHUNK)))
    wanted = expected(golden, "videos.npy")
    assert np.abs(videos.permute(1, 0, 2, 3)[None].numpy() - wanted).max() < VIDEOS_TOLERANCE

    length = len(
        frame_plan(len(np.load(golden / "inputs/pose_frames_decoded.npz")["frames"]), args["L"], args["skip"])
    )
    width, height = Image.open(golden / "expected/output_frame_first.png").size
    frames = to_output_frames(videos[:length], (width, height))
    # The value before truncation, by the same float32 operations: bilinear weights sum to one, so it is
    # within VIDEOS_TOLERANCE * 255 of upstream's, and the truncation can differ only that close to a level.
    scaled = F.interpolate(videos[:length], size=(height, width), mode="bilinear", align_corners=False)
    scaled = (scaled.permute(0, 2, 3, 1).float() * 255).numpy()
    for index, name in ((0, "output_frame_first.png"), (length - 1, "output_frame_last.png")):
        png = np.asarray(Image.open(golden / "expected" / name).convert("RGB"))
        difference = frames[index].astype(int) - png.astype(int)
        assert np.abs(difference).max() <= 1
        flipped = difference != 0
        boundary = np.maximum(frames[index], png)[flipped]
        assert (np.abs(scaled[index][flipped] - boundary) <= 255 * VIDEOS_TOLERANCE).all()


def test_non_square_sizes_keep_width_and_height_apart(pipe, golden, args, reference_image):
    """W x H with W != H: every resize takes (width, height), every tensor is [..., height, width]."""
    width, height = args["W"], args["H"] + 2 * 8
    pixels = pipe.reference_pixels(reference_image, width, height)
    lanczos = resize_horizontal_first(reference_image, (width, height), Image.LANCZOS)
    lanczos = np.asarray(lanczos, np.float32) / 127.5 - 1
    assert np.abs(pixels[0].permute(1, 2, 0).numpy() - lanczos).max() < 1e-6
    frames = np.load(golden / "inputs/pose_frames_decoded.npz")["frames"][:3]
    poses = pad_poses(resize_poses(frames, width, height), window=2, overlap=0)
    assert poses.shape == (4, height, width, 3)
    lanczos = resize_horizontal_first(Image.fromarray(frames[0]), (width, height), Image.LANCZOS)
    np.testing.assert_array_equal(poses[0], np.asarray(lanczos))
    latents = pipe.denoise(
        poses,
        pipe.encode_reference(reference_image, width, height),
        steps=1,
        guidance=args["cfg"],
        window=2,
        overlap=0,
        generator=torch.Generator().manual_seed(args["seed"]),
    )
    assert latents.shape == (1, 4, 4, height // 8, width // 8)
    decoded = next(pipe.decode(latents, chunk=1))
    assert decoded.shape == (1, 3, height, width)
    size = (frames.shape[2], frames.shape[1])
    assert to_output_frames(decoded, size).shape == (1, *frames.shape[1:])
