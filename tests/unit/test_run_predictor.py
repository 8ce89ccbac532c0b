"""tools/run_predictor.py: one prediction without the server, as `make predict` runs it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tools import run_predictor

REPO_ROOT = Path(__file__).resolve().parents[2]
ECHO = REPO_ROOT / "tests" / "predictors_for_tests" / "echo_predict.py"


def test_inputs_are_typed_defaults_applied_and_outputs_copied(tmp_path, capsys):
    image = tmp_path / "seven.bin"
    image.write_bytes(b"1234567")
    out = tmp_path / "out"
    code = run_predictor.main(
        [
            str(ECHO),
            "-i",
            "text=hi",
            "-i",
            "mode=frames",
            "-i",
            "count=2",
            "-i",
            "shout=yes",
            "-i",
            f"image=@{image}",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 2 and all(Path(line).parent == out for line in printed)
    records = [json.loads(Path(line).read_text()) for line in printed]
    assert records == [
        {"text": "HI", "mode": "frames", "count": 2, "scale": 0.5, "index": index, "image_bytes": 7}
        for index in (0, 1)
    ]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["count=3"], "text: Field required"),
        (["text=a", "count=51"], "count: 51 is greater than the maximum of 50"),
        (["text=a", "mode=loud"], "mode: 'loud' is not one of ['echo', 'frames', 'slow', 'fail']"),
        (["text=a", "shout=maybe"], "shout: expected true or false"),
        (["text=a", "count=two"], "count: expected an integer"),
        (["text=a", "colour=red"], "unknown input 'colour'"),
        (["text=a", "image=@/no/such/file.png"], "image: file not found"),
    ],
)
def test_bad_inputs_are_usage_errors(tmp_path, capsys, pairs, message):
    argv = [str(ECHO), "-o", str(tmp_path)]
    for pair in pairs:
        argv += ["-i", pair]
    with pytest.raises(SystemExit) as exit_info:
        run_predictor.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_value_errors_of_the_predictor_are_not_swallowed(tmp_path):
    with pytest.raises(ValueError, match="asked to fail"):
        run_predictor.main([str(ECHO), "-i", "text=a", "-i", "mode=fail", "-o", str(tmp_path)])


def test_triptych_error_prints_its_message_alone(tmp_path, capsys):
    code = run_predictor.main([f"{ECHO}:BrokenSetup", "-i", "text=a", "-o", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip() == "The echo weights are missing: run the weights step first."
    assert "Traceback" not in captured.err + captured.out


def test_existing_outputs_are_never_overwritten(tmp_path):
    source = tmp_path / "frame.png"
    source.write_bytes(b"new")
    out = tmp_path / "out"
    out.mkdir()
    (out / "frame.png").write_bytes(b"old")
    saved = Path(run_predictor.save_output(source, out))
    assert saved.name == "frame-1.png" and saved.read_bytes() == b"new"
    assert (out / "frame.png").read_bytes() == b"old"


def test_make_predict_offline_ends_with_the_weights_sentence(tmp_path):
    """The command `make predict` runs, with no weights and every connection refused (the proxy is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = {
        **os.environ,
        "WEIGHTS_DIR": str(tmp_path / "weights"),
        "HTTPS_PROXY": dead_proxy,
        "HTTP_PROXY": dead_proxy,
        "NO_PROXY": "",
        "TRIPTYCH_WEIGHTS_BACKOFF": "0",
    }
    for name in ("TRIPTYCH_MANIFEST", "TRIPTYCH_WEIGHTS_MIRROR", "HF_ENDPOINT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "tools.run_predictor", "predictors/nst/predict.py"]
    command += [
        "-i",
        "image=@examples/content.jpg",
        "-i",
        "style_image=@examples/style.png",
        "-o",
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)

    vgg = "nst/vgg19-dcbb9e9d.pth"
    assert result.returncode == 1
    assert result.stderr == (
        f"The weights file {vgg} is missing and could not be downloaded from "
        f"https://download.pytorch.org/models/vgg19-dcbb9e9d.pth; run `make weights PREDICTOR=nst` on a "
        f"connected machine, or copy the file to {tmp_path / 'weights' / vgg}.\n"
    )
    assert "Traceback" not in result.stdout
