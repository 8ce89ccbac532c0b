"""Tiny DWPose stand-ins: ``dwpose/yolox_l.onnx`` and ``dwpose/dw-ll_ucoco_384.onnx`` with exactly the real
input/output names, dtypes and shapes, a few KB each.

The detector outputs a constant anchor table holding one standing person when the image holds anything
visible, and an all-zero table (objectness 0) when every image pixel is dark: the graph itself decides that
a black frame holds nobody (so does a frame of exactly the padding grey, 114). The pose network outputs
constant SimCC vectors with one peak per keypoint, laid out as a standing person inside the crop; it reads
its input (times zero) so that ONNX Runtime runs a real graph on it. It comes with a dynamic batch axis
(``batch``, the default) or a fixed batch of 1; ``extra_gflops`` adds a convolution pyramid of about that
cost per crop whose result is multiplied by zero, to benchmark batching at a realistic network cost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from predictors.common.dwpose import DETECTOR_WEIGHTS, POSE_WEIGHTS
from predictors.common.dwpose.keypoints import FLIP_INDICES
from tools.tiny_weights import dest

OPSET = 17
# The IR version onnx 1.12 wrote with opset 17. ``helper.make_model`` stamps the installed onnx's newest IR
# instead (14 for onnx 1.23), which the images' onnxruntime-gpu 1.31 refuses ("Unsupported model IR
# version"); the real files, exported in 2023, carry IR 9 at most.
IR_VERSION = 8
DETECTOR_DEST = dest(DETECTOR_WEIGHTS)
POSE_DEST = dest(POSE_WEIGHTS)
ANCHORS = 80 * 80 + 40 * 40 + 20 * 20
CROP_WIDTH = 288

# The person in letterbox pixels: centre x, centre y, width, height, objectness, class-0 probability.
PERSON = (320.0, 320.0, 192.0, 544.0, 0.95, 0.9)
# The letterbox's padding value, and the brightest channel value (0-255) that still counts as black.
PAD_VALUE = 114.0
DARK = 10.0

# Body keypoints (COCO order) in crop coordinates, x in [0, 288), y in [0, 384): a person facing the camera,
# arms slightly out. "Left" is the person's left, which appears on the image's right.
_BODY = [
    (144, 70), (152, 62), (136, 62), (162, 66), (126, 66), (172, 104), (116, 104), (186, 150),
    (102, 150), (194, 194), (94, 194), (162, 200), (126, 200), (164, 262), (124, 262), (166, 322),
    (122, 322),
]  # fmt: skip


def _keypoints_133() -> np.ndarray:
    """The stand-in skeleton in crop pixels, exactly mirror-symmetric (every point's left/right partner
    at 288 - x, same y), so that the flip test reproduces the same peaks."""
    points = np.zeros((133, 2))
    points[:17] = _BODY
    points[17:20] = [(176, 336), (168, 338), (164, 326)]
    angles = np.linspace(0.0, 2.0 * np.pi, 68, endpoint=False)
    points[23:91] = np.stack([144 + 16 * np.cos(angles), 66 + 20 * np.sin(angles)], axis=1).round()
    fingers = np.array([(dx, dy) for dx in (-8, -4, 0, 4, 8) for dy in (6, 10, 14, 18)])
    points[91] = _BODY[9]
    points[92:112] = np.asarray(_BODY[9]) + fingers
    for point, partner in enumerate(FLIP_INDICES):
        if partner == point:
            points[point, 0] = CROP_WIDTH / 2
        elif partner > point:
            points[partner] = (CROP_WIDTH - points[point, 0], points[point, 1])
    return points


def _graph_input(name: str, batch) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, 3, *_INPUT_HW[name]])


_INPUT_HW = {"images": (640, 640), "input": (384, 288)}


def _zero_of(input_name: str, prefix: str, nodes: list, inits: list, rank: int) -> str:
    """Nodes computing ``0 * mean(input)`` shaped [N, 1, ..., 1] of ``rank`` dims (keeps the input used)."""
    nodes.append(helper.make_node("ReduceMean", [input_name], [f"{prefix}_mean"], axes=[1, 2, 3], keepdims=1))
    inits.append(
        numpy_helper.from_array(np.array([-1] + [1] * (rank - 1), dtype=np.int64), f"{prefix}_shape")
    )
    nodes.append(helper.make_node("Reshape", [f"{prefix}_mean", f"{prefix}_shape"], [f"{prefix}_flat"]))
    inits.append(numpy_helper.from_array(np.zeros((), dtype=np.float32), f"{prefix}_zero"))
    nodes.append(helper.make_node("Mul", [f"{prefix}_flat", f"{prefix}_zero"], [f"{prefix}_out"]))
    return f"{prefix}_out"


def _save(model: onnx.ModelProto, path: Path) -> None:
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def detector_table(people=(PERSON,)) -> np.ndarray:
    """[1, 8400, 85] output rows: each person on the stride-32 anchor nearest its centre."""
    table = np.zeros((1, ANCHORS, 85), dtype=np.float32)
    for cx, cy, width, height, obj, cls in people:
        gx, gy = int(cx // 32), int(cy // 32)
        anchor = 80 * 80 + 40 * 40 + gy * 20 + gx
        table[0, anchor, :4] = [cx / 32 - gx, cy / 32 - gy, np.log(width / 32), np.log(height / 32)]
        table[0, anchor, 4] = obj
        table[0, anchor, 5] = cls
    return table


def _visible_gate(nodes: list, inits: list) -> str:
    """Nodes computing 1.0 when some image pixel is brighter than ``DARK``, else 0.0.

    The letterbox pads with 114 in every channel, so a black image still reaches the network with grey
    padding; pixels exactly 114 in all three channels count as padding and are left out."""
    inits.append(numpy_helper.from_array(np.array(PAD_VALUE, dtype=np.float32), "det_pad"))
    inits.append(numpy_helper.from_array(np.array(DARK, dtype=np.float32), "det_dark"))
    inits.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), "det_one"))
    nodes += [
        helper.make_node("Equal", ["images", "det_pad"], ["det_pad_channel"]),
        helper.make_node("Cast", ["det_pad_channel"], ["det_pad_channel_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMin", ["det_pad_channel_f"], ["det_padding"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["det_one", "det_padding"], ["det_content"]),
        helper.make_node("Mul", ["images", "det_content"], ["det_content_pixels"]),
        helper.make_node("ReduceMax", ["det_content_pixels"], ["det_brightest"], keepdims=0),
        helper.make_node("Greater", ["det_brightest", "det_dark"], ["det_visible"]),
        helper.make_node("Cast", ["det_visible"], ["det_gate"], to=TensorProto.FLOAT),
    ]
    return "det_gate"


def write_detector(path: Path, people=(PERSON,)) -> None:
    nodes, inits = [], [numpy_helper.from_array(detector_table(people), "table")]
    gate = _visible_gate(nodes, inits)
    nodes.append(helper.make_node("Mul", ["table", gate], ["output"]))
    graph = helper.make_graph(
        nodes,
        "yolox_l_standin",
        [_graph_input("images", 1)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, ANCHORS, 85])],
        inits,
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def simcc_tables(peak_x: float = 0.9, peak_y: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Constant SimCC outputs [1,133,576] and [1,133,768] peaking at the stand-in skeleton (2 bins/px)."""
    points = np.round(_keypoints_133() * 2).astype(int)
    simcc_x = np.zeros((1, 133, 576), dtype=np.float32)
    simcc_y = np.zeros((1, 133, 768), dtype=np.float32)
    rows = np.arange(133)
    # Two-bin x peaks {2x - 1, 2x}: mirroring maps them onto their partner's pair of bins exactly.
    simcc_x[0, rows, points[:, 0] - 1] = peak_x
    simcc_x[0, rows, points[:, 0]] = peak_x
    simcc_y[0, rows, points[:, 1]] = peak_y
    return simcc_x, simcc_y


def _cost_stack(nodes: list, inits: list, gflops: float, rng: np.random.Generator) -> str:
    """A backbone-shaped convolution pyramid of about ``gflops`` per crop; -> [N,1,1] zeros.

    Like the real CSPNeXt backbone, width doubles as resolution halves: 3x3 convs at stride 4, 8, 16 and 32
    with 64, 128, 256 and 512 channels (about 0.5 GFLOPs each at every stage), so late stages work on few
    pixels with many channels, where a batch of one keeps the hardware least busy."""
    per_conv = 2 * 64 * 64 * 9 * 96 * 72 / 1e9
    per_stage = max(1, round(gflops / per_conv / 4))

    def conv(name: str, source: str, c_in: int, c_out: int, stride: int, kernel: int = 3) -> str:
        weight = rng.normal(0, (2.0 / (c_in * kernel * kernel)) ** 0.5, (c_out, c_in, kernel, kernel))
        inits.append(numpy_helper.from_array(weight.astype(np.float32), f"{name}_w"))
        pad = (kernel - 1) // 2
        nodes.append(
            helper.make_node("Conv", [source, f"{name}_w"], [name], strides=[stride, stride], pads=[pad] * 4)
        )
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"]))
        return f"{name}_relu"

    features = conv("stem", "input", 3, 64, stride=4, kernel=5)
    channels = 64
    for stage in range(4):
        if stage:
            features = conv(f"down{stage}", features, channels, channels * 2, stride=2)
            channels *= 2
        for i in range(per_stage):
            features = conv(f"stage{stage}_{i}", features, channels, channels, stride=1)
    return _zero_of(features, "cost", nodes, inits, rank=3)


def write_pose_model(
    path: Path, *, dynamic_batch: bool = True, extra_gflops: float = 0.0, seed: int = 0
) -> None:
    batch = "batch" if dynamic_batch else 1
    simcc_x, simcc_y = simcc_tables()
    nodes = []
    inits = [numpy_helper.from_array(simcc_x, "table_x"), numpy_helper.from_array(simcc_y, "table_y")]
    zero = _zero_of("input", "pose", nodes, inits, rank=3)
    if extra_gflops > 0:
        cost = _cost_stack(nodes, inits, extra_gflops, np.random.default_rng(seed))
        nodes.append(helper.make_node("Add", [zero, cost], ["pose_sum"]))
        zero = "pose_sum"
    nodes.append(helper.make_node("Add", [zero, "table_x"], ["simcc_x"]))
    nodes.append(helper.make_node("Add", [zero, "table_y"], ["simcc_y"]))
    graph = helper.make_graph(
        nodes,
        "dw_ll_ucoco_384_standin",
        [_graph_input("input", batch)],
        [
            helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [batch, 133, 576]),
            helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [batch, 133, 768]),
        ],
        inits,
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def write(root: Path, seed: int, *, dynamic_batch: bool = True) -> None:
    """Write both stand-ins under ``root`` (the part ``dwpose`` of ``tools.tiny_weights.build``)."""
    root = Path(root)
    write_detector(root / DETECTOR_DEST)
    write_pose_model(root / POSE_DEST, dynamic_batch=dynamic_batch, seed=seed)
