"""The MusePose predictor on tiny weights in the real layout: the whole chain (DWPose, pose alignment,
generation, encoding with audio), every input, the failure messages, cancellation, and upstream parity of the
pose-video mode on the golden set."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from PIL import Image

from predictors.common.dwpose import Pose
from predictors.common.errors import InputError
from predictors.musepose.pose_align import align_poses
from tests import mp4
from tests.call_predict import call_predict
from tests.canvas import assert_equal_off_clipped_primitives, clipped_primitives, resized_footprint
from tests.musepose.test_musepose_allocator import PAGES, block_faults
from tests.replicate_progress import progress_lines
from tools.tiny_weights import write_manifest

VIDEO_SIZE = (64, 48)
VIDEO_FPS = 12
VIDEO_FRAMES = 12
# Small, fast settings over the Input defaults; tests override what they check.
FAST = {"resolution": 64, "max_frames": 8, "num_inference_steps": 2, "seed": 1, "window": 4, "overlap": 1}


def write_video(
    path: Path, frames: list[np.ndarray], fps: int | Fraction = VIDEO_FPS, audio_seconds: float = 0.0
) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=22050, layout="mono") if audio_seconds else None
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if audio is not None:
            samples = int(22050 * audio_seconds)
            tone = (0.3 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 22050)).astype(np.float32)[None]
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(
                    tone[:, start : start + 1024], format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = 22050, start
                container.mux(audio.encode(chunk))
            container.mux(audio.encode())
    return path


def grey_frames(count: int = VIDEO_FRAMES, blank: tuple[int, ...] = ()) -> list[np.ndarray]:
    """Uniform grey frames, black at the ``blank`` indices, where the tiny detector finds nobody."""
    width, height = VIDEO_SIZE
    return [np.full((height, width, 3), 0 if i in blank else 60 + 10 * i, np.uint8) for i in range(count)]


def read_video(path: Path) -> tuple[np.ndarray, dict]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        facts = {
            "fps": Fraction(stream.average_rate),
            "audio": bool(container.streams.audio),
            "codec": (stream.codec_context.name, stream.codec_context.pix_fmt),
        }
    return frames, facts


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("musepose-inputs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (128, 96, 3), dtype=np.uint8)).save(folder / "ref.png")
    Image.fromarray(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(np.zeros((128, 96, 3), np.uint8)).save(folder / "empty.png")
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return {
        "ref": folder / "ref.png",
        "wide": folder / "wide.png",
        "empty": folder / "empty.png",
        "dance": write_video(folder / "dance.mp4", grey_frames(), audio_seconds=1.0),
        "gap": write_video(folder / "gap.mp4", grey_frames(blank=(2, 3))),
        "nobody": write_video(folder / "nobody.mp4", grey_frames(4, blank=(0, 1, 2, 3))),
        "short": write_video(folder / "short.mp4", grey_frames(1)),
        "corrupt": folder / "corrupt.mp4",
    }


@pytest.fixture(scope="module")
def predictor(tiny_predictor):
    with tiny_predictor("predictors.musepose.predict", ["dwpose", "musepose"]) as instance:
        yield instance


def run(predictor, reference: Path, video: Path, **changes):
    return call_predict(predictor, reference_image=reference, dance_video=video, **{**FAST, **changes})


def test_setup_on_the_cpu_keeps_freed_conv_buffers_mapped(predictor):
    """The allocator settings are in force after setup: a freed 128 MB block (a 2560 -> 1280 conv's
    reordered weight is 118 MB) is reused without faulting its pages in again. (Other threads share them
    where the process starts with one arena, as the image does: tests/musepose/test_musepose_allocator.py.)"""
    block_faults()
    assert block_faults() < PAGES // 100


def files_of(output) -> dict[str, Path | None]:
    return {name: getattr(output, name) for name in ("video", "pose_video", "pose_preview", "comparison")}


def test_end_to_end_with_every_output(predictor, inputs, capsys):
    output = run(predictor, inputs["ref"], inputs["dance"], save_aligned_pose=True, save_comparison=True)
    files = files_of(output)
    assert {name: path.name.split("-")[0] for name, path in files.items()} == {
        "video": "musepose",
        "pose_video": "aligned",
        "pose_preview": "pose",
        "comparison": "comparison",
    }
    result, facts = read_video(output.video)
    # 8 source frames, one in 2 -> 4 frames at 12 // 2 = 6 fps, at the reference's aspect (3:4), 768 high.
    assert result.shape == (4, 768, 576, 3) and facts["fps"] == 6
    assert facts["audio"]
    pose, _ = read_video(output.pose_video)
    assert pose.shape == result.shape and pose.max() > 100  # the skeleton is drawn
    preview = np.asarray(Image.open(output.pose_preview))
    assert Image.open(output.pose_preview).format == "PNG" and preview.shape == pose.shape[1:]
    comparison, comparison_facts = read_video(output.comparison)
    assert comparison.shape == (4, 768, 3 * 576, 3) and comparison_facts["audio"]
    logs = capsys.readouterr().out
    assert "Using seed 1" in logs and "Detected the dancer's pose in 4 frames." in logs
    assert "4 frames in 1 window(s) of 4 (overlap 1), 2 steps: 2 UNet calls." in logs
    # One bar for the pose detection (4 frames) and one for denoising (2 steps x 1 window), each to 100%.
    lines = progress_lines(logs)
    assert (100, 4, 4) in lines and lines[-1] == (100, 2, 2)
    # The previous prediction's files are removed when the next one starts.
    plain = run(predictor, inputs["ref"], inputs["dance"], keep_audio=False)
    assert not any(path.exists() for path in files.values())
    assert plain.video.exists() and plain.pose_video is plain.pose_preview is plain.comparison is None


def test_an_ntsc_video_with_sound_keeps_its_exact_rate(predictor, inputs, tmp_path):
    """29.97 fps with skip 1 is 14.985 fps exactly; upstream's floor (14) would let the sound drift."""
    dance = write_video(tmp_path / "ntsc.mp4", grey_frames(), fps=Fraction(30000, 1001), audio_seconds=1.0)
    output = run(predictor, inputs["ref"], dance, max_frames=4, save_aligned_pose=True, save_comparison=True)
    for path in (output.video, output.pose_video, output.comparison):
        frames, facts = read_video(path)
        assert facts["fps"] == Fraction(15000, 1001) and len(frames) == 2, path.name
    assert read_video(output.video)[1]["audio"] and read_video(output.comparison)[1]["audio"]


def test_the_reference_aspect_is_kept_and_square_mode_squares(predictor, inputs, capsys):
    wide, _ = read_video(run(predictor, inputs["wide"], inputs["dance"], max_frames=2).video)
    assert wide.shape[1:3] == (768, 1364)  # 160:90 at 768 high, even width
    assert "Generating 64x40" in capsys.readouterr().out
    run(predictor, inputs["wide"], inputs["dance"], max_frames=2, aspect="square")
    assert "Generating 64x64" in capsys.readouterr().out
    run(predictor, inputs["wide"], inputs["dance"], max_frames=2, width=48, height=32)
    assert "Generating 48x32" in capsys.readouterr().out


def test_same_seed_same_video_other_seed_other_video(predictor, inputs):
    first, _ = read_video(run(predictor, inputs["ref"], inputs["dance"], keep_audio=False).video)
    again, _ = read_video(run(predictor, inputs["ref"], inputs["dance"], keep_audio=False).video)
    other, _ = read_video(run(predictor, inputs["ref"], inputs["dance"], keep_audio=False, seed=2).video)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1


def test_remaining_inputs(predictor, inputs, capsys):
    silent, facts = read_video(
        run(predictor, inputs["ref"], inputs["dance"], keep_audio=False, skip=0, max_seconds=0.25).video
    )
    assert not facts["audio"] and len(silent) == 3 and facts["fps"] == 12  # 0.25 s of 12 fps, every frame
    unaligned, _ = read_video(
        run(
            predictor, inputs["ref"], inputs["dance"], align_pose=False, guidance_scale=1.0, max_frames=4
        ).video
    )
    assert unaligned.shape == (2, 768, 1024, 3)  # the video's own framing (4:3)
    posed, _ = read_video(run(predictor, inputs["ref"], inputs["dance"], pose_video=True, max_frames=4).video)
    assert posed.shape == (2, 48, 64, 3)  # the pose video's own size
    resampled, resampled_facts = read_video(
        run(predictor, inputs["ref"], inputs["dance"], target_fps=4.0).video
    )
    assert resampled_facts["fps"] == 4 and len(resampled) in (3, 4)  # 1 s of video at 4 fps
    logs = capsys.readouterr().out
    assert "Pose alignment scales" in logs


GENERATION_MODELS = ("vae", "image_encoder", "reference_unet", "denoising_unet", "pose_guider")


@contextlib.contextmanager
def forward_calls(models):
    """Forward calls inside each generation network (any of its layers), counted by observing hooks."""
    calls = dict.fromkeys(GENERATION_MODELS, 0)

    def count(name, module, args):
        calls[name] += 1

    hooks = [
        layer.register_forward_pre_hook(functools.partial(count, name))
        for name in GENERATION_MODELS
        for layer in getattr(models, name).modules()
    ]
    try:
        yield calls
    finally:
        for hook in hooks:
            hook.remove()


def test_pose_only_returns_the_poses_without_generating(predictor, inputs, capsys):
    models = predictor.animator.pipeline.models
    with forward_calls(models) as calls:
        full = run(predictor, inputs["ref"], inputs["dance"], save_aligned_pose=True, keep_audio=False)
    assert all(calls.values()), calls  # the counting sees every network of a generation
    full_pose, _ = read_video(full.pose_video)
    full_preview = np.asarray(Image.open(full.pose_preview))
    capsys.readouterr()
    with forward_calls(models) as calls:
        output = run(predictor, inputs["ref"], inputs["dance"], pose_only=True, keep_audio=False)
    assert calls == dict.fromkeys(GENERATION_MODELS, 0)
    assert output.video is None and output.comparison is None
    logs = capsys.readouterr().out
    assert "Pose only: 4 pose frames written, nothing generated." in logs
    assert "step " not in logs and "Generating" not in logs  # the denoising progress never started
    # The poses are the ones a generation is driven by, frame for frame.
    pose, facts = read_video(output.pose_video)
    assert pose.shape == (4, 768, 576, 3) and facts["fps"] == 6
    np.testing.assert_array_equal(pose, full_pose)
    preview = np.asarray(Image.open(output.pose_preview))
    np.testing.assert_array_equal(preview, full_preview)
    assert preview.shape == pose.shape[1:] and preview.max() > 100  # a pose frame, skeleton drawn


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pose_video": True}, "pose_video says it already is one"),
        ({"save_comparison": True}, "save_comparison needs a generated video"),
    ],
)
def test_pose_only_refuses_what_needs_generation_or_detection(predictor, inputs, changes, message):
    with pytest.raises(InputError, match=message):
        run(predictor, inputs["ref"], inputs["dance"], pose_only=True, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"overlap": 4}, "must be smaller than the window"),
        ({"width": 64}, "Give both width and height"),
        ({"width": 60, "height": 64}, "multiples of 8"),
        ({"video": "short"}, "too short"),
        ({"video": "corrupt"}, "could not be"),
    ],
)
def test_clear_input_errors(predictor, inputs, changes, message):
    video = inputs[changes.pop("video", "dance")]
    with pytest.raises(InputError, match=message):
        run(predictor, inputs["ref"], video, **changes)


def test_no_person_in_the_reference(predictor, inputs):
    with pytest.raises(InputError, match="No person was found in the reference image"):
        run(predictor, inputs["empty"], inputs["dance"])


def test_no_person_in_the_video(predictor, inputs):
    with pytest.raises(InputError, match="No person was found in the dance video"):
        run(predictor, inputs["ref"], inputs["nobody"])


def test_a_dancer_who_leaves_the_frame(predictor, inputs, capsys):
    frames, _ = read_video(
        run(predictor, inputs["ref"], inputs["gap"], skip=0, max_frames=6, keep_audio=False).video
    )
    assert len(frames) == 6
    assert "No dancer found in 2 of 6 frames (2-3)" in capsys.readouterr().out


def test_cancel_lands_within_one_unet_call(predictor, inputs):
    from cog import CancelationException

    unet = predictor.animator.pipeline.models.denoising_unet
    calls = []

    def cancel_midway(module, args):
        calls.append(1)
        raise CancelationException()

    hook = unet.mid_block.resnets[0].register_forward_pre_hook(cancel_midway)
    try:
        with pytest.raises(CancelationException):
            run(predictor, inputs["ref"], inputs["dance"], num_inference_steps=3)
    finally:
        hook.remove()
    assert calls == [1]
    assert predictor.animator.pipeline.bank.features == {}  # the reference features were released
    assert run(predictor, inputs["ref"], inputs["dance"], max_frames=2).video.exists()


def test_out_of_memory_in_the_unet_is_one_sentence_and_the_next_run_works(predictor, inputs, monkeypatch):
    """The GPU recovery path on the CPU: an allocation in the UNet fails as CUDA's allocator fails."""
    from predictors.common.errors import ResourceError

    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))

    def allocate(module, args):
        torch.empty(1 << 16)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    unet = predictor.animator.pipeline.models.denoising_unet
    hook = unet.mid_block.resnets[0].register_forward_pre_hook(allocate)
    try:
        with pytest.raises(ResourceError) as caught:
            run(predictor, inputs["ref"], inputs["dance"], max_frames=2)
    finally:
        hook.remove()
    assert str(caught.value) == (
        "The GPU ran out of memory. Lower the resolution, the window (for example 24) or max_frames, and try "
        "again."
    )
    assert emptied == [True] and predictor.animator.pipeline.bank.features == {}
    assert run(predictor, inputs["ref"], inputs["dance"], max_frames=2).video.exists()


@pytest.fixture
def golden_root(golden_dir, tiny_weights, tmp_path) -> Path:
    """A weights root holding the golden MusePose files (plus the tiny DWPose stand-ins)."""
    golden = golden_dir / "musepose_tiny" / "weights"
    root = tmp_path / "weights"
    files = [
        "MusePose/denoising_unet.pth",
        "MusePose/reference_unet.pth",
        "MusePose/pose_guider.pth",
        "MusePose/motion_module.pth",
        "sd-image-variations-diffusers/unet/config.json",
        "sd-vae-ft-mse/config.json",
        "sd-vae-ft-mse/diffusion_pytorch_model.bin",
        "image_encoder/config.json",
        "image_encoder/pytorch_model.bin",
    ]
    for name in files:
        (root / "musepose" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "musepose" / name).symlink_to(golden / name)
    shutil.copytree(tiny_weights(["dwpose"]) / "dwpose", root / "dwpose")
    write_manifest(root)
    return root


@pytest.fixture
def handed_frames(monkeypatch) -> dict[Path, list[np.ndarray]]:
    """The uint8 frames each VideoWriter was handed, by output path (the writer itself runs unchanged)."""
    from predictors.common.video import VideoWriter

    handed: dict[Path, list[np.ndarray]] = {}
    write = VideoWriter.write

    def recording(self, frame):
        handed.setdefault(Path(self.path), []).append(np.array(frame))
        return write(self, frame)

    monkeypatch.setattr(VideoWriter, "write", recording)
    return handed


@pytest.mark.golden
def test_pose_video_mode_matches_upstreams_output(
    golden_dir, golden_root, weights_env, handed_frames, tmp_path
):
    """Upstream's arguments, explicit W and H, a pose video: the frames handed to the encoder equal upstream's
    (one level at most, the truncation of float noise), the mp4's facts equal upstream's, and its frames are
    as close to the handed ones as upstream's encode settings bring them back."""
    from predictors.musepose.predict import Predictor

    weights_env(golden_root)
    folder = golden_dir / "musepose_tiny"
    args = json.loads((folder / "args.json").read_text())
    predictor = Predictor()
    predictor.setup()
    output = call_predict(
        predictor,
        reference_image=folder / "inputs/ref.png",
        dance_video=folder / "inputs/pose.mp4",
        **{
            **FAST,
            "width": args["W"],
            "height": args["H"],
            "max_frames": args["L"],
            "skip": args["skip"],
            "num_inference_steps": args["steps"],
            "guidance_scale": args["cfg"],
            "seed": args["seed"],
            "window": args["S"],
            "overlap": args["O"],
            "pose_video": True,
        },
    )
    decoded, facts = mp4.read(output.video)
    _, theirs = mp4.read(folder / "expected/output.mp4")
    assert {key: facts[key] for key in ("size", "frames", "fps", "codec")} == {
        key: theirs[key] for key in ("size", "frames", "fps", "codec")
    }
    handed = np.stack(handed_frames[Path(output.video)])
    for index, name in ((0, "output_frame_first.png"), (-1, "output_frame_last.png")):
        png = np.asarray(Image.open(folder / "expected" / name).convert("RGB"))
        assert np.abs(handed[index].astype(int) - png.astype(int)).max() <= 1, name
    # test_stage_2.py writes with PyAV: libx264, yuv420p, bit_rate 10 Mb/s, crf 18.
    reference = mp4.reencode(
        handed, facts["fps"], tmp_path / "upstream_settings.mp4", {"crf": "18"}, 10_000_000
    )
    mp4.assert_within_reencoding(decoded, handed, reference)


@dataclass
class StandInResult:
    """What the animator reads of a detection: the boxes (one per person) and the normalised pose."""

    found: Pose

    @property
    def detections(self):
        return SimpleNamespace(boxes=np.zeros((self.found.people, 4)))

    def pose(self, *, first_person_only: bool = False) -> Pose:
        return self.found


class StandInDetector:
    """The stand-in of upstream's pose_align reference run, in place of DWPose: it returns upstream's own
    DWPose dicts, the reference's for the reference and frame t's for a frame of grey level 20 + 8t."""

    def __init__(self, dicts: dict):
        self.reference = Pose.from_dict(dicts["reference"])
        self.frames = [Pose.from_dict(frame) for frame in dicts["frames"]]

    def __call__(self, image: np.ndarray) -> StandInResult:
        return StandInResult(self.reference)

    def batch(self, images: list[np.ndarray]) -> list[StandInResult]:
        return [StandInResult(self.frames[round((float(image.mean()) - 20) / 8)]) for image in images]


@pytest.fixture
def recorded_alignments(monkeypatch) -> list:
    """Every AlignResult the animator computes (align_poses itself runs unchanged)."""
    from predictors.musepose import animate

    results = []
    align = animate.align_poses

    def recording(*args, **kwargs):
        results.append(align(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(animate, "align_poses", recording)
    return results


@pytest.mark.golden
def test_upstream_pose_align_mode_gives_upstreams_pose_align(
    predictor, golden_dir, monkeypatch, recorded_alignments, handed_frames
):
    """pose_align_mode=upstream through the predictor, on upstream's DWPose results: upstream's scales,
    offset and aligned keypoints, and its rendered pose frames (pixels differ only where OpenCV 5 clips a
    primitive that leaves the canvas), in a pose video with its facts."""
    folder = golden_dir / "pose_align"
    meta = json.loads((folder / "inputs/meta.json").read_text())
    summary = json.loads((folder / "expected/summary.json").read_text())
    monkeypatch.setattr(
        predictor.animator,
        "pose_model",
        StandInDetector(json.loads((folder / "inputs/pose_dicts.json").read_text())),
    )
    output = run(
        predictor,
        folder / "inputs/ref.png",
        folder / "inputs/dance.mp4",
        pose_align_mode="upstream",
        skip=0,
        max_frames=meta["pose_align_args"]["max_frame"],
        save_aligned_pose=True,
        keep_audio=False,
    )
    (result,) = recorded_alignments
    assert result.scales == pytest.approx(summary["scales"], rel=1e-9)
    np.testing.assert_allclose(result.offset, summary["offset_height_normalised"], atol=1e-12)
    expected = {
        name: np.load(folder / f"expected/aligned_{name}.npy")
        for name in ("body", "subset", "hands", "faces")
    }
    np.testing.assert_array_equal(np.stack([pose.subset for pose in result.poses]), expected["subset"])
    for name, field in (("body", "candidate"), ("hands", "hands"), ("faces", "faces")):
        got = np.stack([getattr(pose, field) for pose in result.poses])
        np.testing.assert_allclose(got, expected[name], atol=1e-6, rtol=0)

    handed = handed_frames[Path(output.pose_video)]
    height, width = summary["draw_canvas_hw"]
    size = tuple(summary["output_frame_wh"])
    assert len(handed) == summary["output_video"]["frames"]
    for index, frame in enumerate(handed):
        theirs = np.asarray(Image.open(folder / f"expected/video_frames/{index:03d}.png").convert("RGB"))
        upstream_pose = Pose(
            expected["body"][index],
            expected["subset"][index],
            expected["hands"][index],
            expected["faces"][index],
            np.full((1, 6, 2), -1.0),
        )
        allowed = resized_footprint(clipped_primitives(upstream_pose, height, width), size)
        assert_equal_off_clipped_primitives(frame, theirs, allowed)
    _, facts = mp4.read(output.pose_video)
    _, their_facts = mp4.read(folder / "expected/aligned_pose.mp4")
    assert {key: facts[key] for key in ("size", "frames", "fps", "codec")} == {
        key: their_facts[key] for key in ("size", "frames", "fps", "codec")
    }


@pytest.mark.golden
def test_pose_align_mode_reaches_the_alignment(predictor, golden_dir, monkeypatch, recorded_alignments):
    """With a reference whose ear is hidden, the two modes differ (upstream measures the face from the hidden
    ear's raw coordinates) and each gives what align_poses gives in that mode."""
    folder = golden_dir / "pose_align"
    dicts = json.loads((folder / "inputs/pose_dicts.json").read_text())
    dicts["reference"]["bodies"]["subset"][0][17] = -1
    detector = StandInDetector(dicts)
    monkeypatch.setattr(predictor.animator, "pose_model", detector)
    for mode in ("fixed", "upstream"):
        run(
            predictor,
            folder / "inputs/ref.png",
            folder / "inputs/dance.mp4",
            pose_align_mode=mode,
            skip=0,
            max_frames=2,
            keep_audio=False,
        )
    fixed, upstream = recorded_alignments
    assert fixed.scales["scale_face"] != upstream.scales["scale_face"]
    sizes = (fixed.ref_size, fixed.video_size)
    for result, parity in ((fixed, False), (upstream, True)):
        assert (
            result.scales
            == align_poses(detector.reference, detector.frames[:2], *sizes, parity=parity).scales
        )
