"""DWPose decode against ../shared/golden/dwpose: the upstream post-processing's outputs on the golden
stand-in models, for both rule sets, with dynamic and fixed batch axes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from predictors.common.dwpose import Pose, Wholebody, render_pose, to_openpose
from predictors.common.dwpose.detector import decode, detect, letterbox
from predictors.common.dwpose.estimator import PoseEstimator, box_center_scale

pytestmark = pytest.mark.golden

SCENARIOS = ["canonical", "decoy_detector", "empty_detector", "probe_rgb_input", "probe_bgr_input"]
BOX_TOL = 1e-3
SCORE_TOL = 1e-6
KEYPOINT_TOL = 1e-3


@pytest.fixture(scope="module")
def golden(golden_dir):
    folder = golden_dir / "dwpose"
    expected = json.loads((folder / "expected.json").read_text())
    image = cv2.cvtColor(cv2.imread(str(folder / "test_image.png")), cv2.COLOR_BGR2RGB)
    return folder, expected, image


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _fixed_batch_copy(path, tmp_path) -> str:
    """The golden pose stand-in with its batch axis fixed to 1 (as an export without dynamic axes has)."""
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    out = tmp_path / "dw-ll_ucoco_384_fixed.onnx"
    onnx.save(model, str(out))
    return str(out)


def _scenario_input(name: str, image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[..., ::-1]) if name == "probe_bgr_input" else image


def _assert_detections(found, boxes, scores):
    assert found.boxes.shape == (len(boxes), 4)
    np.testing.assert_allclose(found.boxes, np.reshape(boxes, (-1, 4)), atol=BOX_TOL, rtol=0)
    np.testing.assert_allclose(found.scores, scores, atol=SCORE_TOL, rtol=0)


@pytest.mark.parametrize("name", SCENARIOS)
def test_detector_decode_and_both_rule_sets(golden, name):
    folder, expected, image = golden
    case = expected[name]
    session = _session(folder / "models" / case["detector"])
    tensor, ratio = letterbox(image)
    assert ratio == pytest.approx(case["letterbox_ratio"])
    anchors, boxes, scores = decode(session.run(None, {"images": tensor[None]})[0][0], ratio)
    assert anchors.tolist() == list(range(8400))

    nonzero = np.flatnonzero((scores > 0).any(axis=1))
    assert sorted(nonzero.tolist()) == sorted(c["anchor"] for c in case["candidates"])
    for candidate in case["candidates"]:
        anchor = candidate["anchor"]
        np.testing.assert_allclose(boxes[anchor], candidate["box_xyxy"], atol=BOX_TOL, rtol=0)
        for cls, value in candidate["scores_obj_x_cls"].items():
            assert scores[anchor, int(cls)] == pytest.approx(value, abs=SCORE_TOL)

    image_in = _scenario_input(name, image)
    onnx_rules = case["onnx_rules"]
    _assert_detections(
        detect(session, image_in, "controlnet"), onnx_rules["final_boxes"], onnx_rules["final_scores"]
    )
    muse = case["musepose_rules_derived"]
    _assert_detections(detect(session, image_in, "mmpose"), muse["final_boxes"], muse["final_scores"])


@pytest.mark.parametrize("batch", ["dynamic", "fixed"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_pose_decode(golden, name, batch, tmp_path):
    folder, expected, image = golden
    case = expected[name]
    pose_path = folder / "models" / case["pose_model"]
    if batch == "fixed":
        pose_path = _fixed_batch_copy(pose_path, tmp_path)
    model = Wholebody(folder / "models" / case["detector"], pose_path, rules="controlnet")
    assert model.estimator.dynamic is (batch == "dynamic")
    image_in = _scenario_input(name, image)
    result = model(image_in)
    want = case["pose_onnx_rules"]

    for box, center, scale in zip(
        want["boxes_used"], want["center"], want["scale_after_aspect_fix"], strict=True
    ):
        got_center, got_scale = box_center_scale(np.asarray(box), aspect=288 / 384)
        np.testing.assert_allclose(got_center, center, atol=BOX_TOL, rtol=0)
        np.testing.assert_allclose(got_scale, scale, atol=BOX_TOL, rtol=0)
    np.testing.assert_allclose(result.keypoints, want["keypoints_133_px"], atol=KEYPOINT_TOL, rtol=0)
    np.testing.assert_array_equal(result.scores, np.asarray(want["scores_133"], dtype=np.float32))

    keypoints, scores = result.openpose()
    np.testing.assert_allclose(keypoints, want["keypoints_134_openpose_px"], atol=KEYPOINT_TOL, rtol=0)
    np.testing.assert_array_equal(
        scores.astype(np.float32), np.asarray(want["scores_134_openpose"], np.float32)
    )

    pose = result.pose()
    height, width = image.shape[:2]
    expected_dict = want["pose_dict_normalised"]
    tol = KEYPOINT_TOL / max(width, height)
    np.testing.assert_allclose(pose.candidate, expected_dict["bodies"]["candidate"], atol=tol, rtol=0)
    np.testing.assert_array_equal(pose.subset, expected_dict["bodies"]["subset"])
    np.testing.assert_allclose(pose.hands, expected_dict["hands"], atol=tol, rtol=0)
    np.testing.assert_allclose(pose.faces, expected_dict["faces"], atol=tol, rtol=0)


@pytest.mark.parametrize("name", SCENARIOS)
def test_pose_decode_on_musepose_boxes(golden, name):
    folder, expected, image = golden
    case = expected[name]
    if "pose_musepose_rule_boxes_no_flip" not in case:
        pytest.skip(f"{name}: no box under MusePose's rules")
    want = case["pose_musepose_rule_boxes_no_flip"]
    image_in = _scenario_input(name, image)
    found = detect(_session(folder / "models" / case["detector"]), image_in, "mmpose")
    estimator = PoseEstimator(_session(folder / "models" / case["pose_model"]))
    [(keypoints, scores)] = estimator.estimate([(image_in, found.boxes)], flip=False)
    np.testing.assert_allclose(keypoints, want["keypoints_133_px"], atol=KEYPOINT_TOL, rtol=0)
    np.testing.assert_array_equal(scores, np.asarray(want["scores_133"], dtype=np.float32))


def test_probe_sees_rgb_channel_order(golden):
    """The probe's keypoints land on the brightest spot of normalised channel 0: with RGB input that is the
    red blob, with the channels reversed another one."""
    folder, expected, image = golden
    case = expected["probe_rgb_input"]
    model = Wholebody(
        folder / "models" / case["detector"], folder / "models" / case["pose_model"], rules="controlnet"
    )
    rgb = expected["probe_rgb_input"]["pose_onnx_rules"]["keypoints_133_px"][0][0]
    bgr = expected["probe_bgr_input"]["pose_onnx_rules"]["keypoints_133_px"][0][0]
    assert np.linalg.norm(np.subtract(rgb, bgr)) > 10
    assert np.linalg.norm(model(image).keypoints[0, 0] - rgb) < KEYPOINT_TOL
    assert np.linalg.norm(model(np.ascontiguousarray(image[..., ::-1])).keypoints[0, 0] - bgr) < KEYPOINT_TOL


@pytest.mark.parametrize("dynamic", [True, False])
def test_tiny_standins_have_the_real_io(golden, tmp_path, dynamic):
    from tools.tiny_weights import dwpose as part

    _, expected, _ = golden
    io = expected["canonical"]["io"]
    part.write(tmp_path, 0, dynamic_batch=dynamic)

    def signature(session, kind):
        values = session.get_inputs() if kind == "inputs" else session.get_outputs()
        return [[v.name, v.type, v.shape] for v in values]

    detector = _session(tmp_path / part.DETECTOR_DEST)
    pose = _session(tmp_path / part.POSE_DEST)
    assert signature(detector, "inputs") == io["detector"]["inputs"]
    assert signature(detector, "outputs") == io["detector"]["outputs"]
    want_pose = (
        io["pose"]
        if dynamic
        else {
            kind: [[n, t, [1, *shape[1:]]] for n, t, shape in values] for kind, values in io["pose"].items()
        }
    )
    assert signature(pose, "inputs") == want_pose["inputs"]
    assert signature(pose, "outputs") == want_pose["outputs"]


def test_openpose_conversion_matches_on_every_scenario(golden):
    _, expected, image = golden
    height, width = image.shape[:2]
    for name in SCENARIOS:
        want = expected[name]["pose_onnx_rules"]
        keypoints, scores = to_openpose(np.asarray(want["keypoints_133_px"]), np.asarray(want["scores_133"]))
        np.testing.assert_allclose(keypoints, want["keypoints_134_openpose_px"], atol=1e-9, rtol=0)
        np.testing.assert_allclose(scores, want["scores_134_openpose"], atol=1e-7, rtol=0)
        pose = Pose.from_openpose(keypoints, scores, width, height)
        np.testing.assert_array_equal(pose.subset, want["pose_dict_normalised"]["bodies"]["subset"])


@pytest.mark.parametrize("name", ["canonical", "decoy_detector"])
def test_controlnet_rendering(golden, name):
    """ControlNet's own canvas for the decoded pose: standard colours, stick width 4, face drawn."""
    folder, expected, image = golden
    pose = Pose.from_dict(expected[name]["pose_onnx_rules"]["pose_dict_normalised"])
    canvas = render_pose(pose, *image.shape[:2], style="controlnet")
    want = cv2.cvtColor(cv2.imread(str(folder / f"controlnet_canvas_{name}.png")), cv2.COLOR_BGR2RGB)
    assert canvas.shape == want.shape
    assert int((canvas != want).any(axis=-1).sum()) == 0
