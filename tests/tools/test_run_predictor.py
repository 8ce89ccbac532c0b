"""tools/run_predictor.py: one prediction without the server, as `make predict` runs it."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from predictors.nst.fast_start import FastStylizer
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


@pytest.mark.parametrize(
    ("setup", "fallback", "code", "err"),
    [
        (
            "OfflineSetup",
            "ShoutingFallback",
            0,
            "This is the shouted echo. The echo weights could not be downloaded",
        ),
        ("OfflineSetup", None, 1, "The echo weights could not be downloaded"),
        # Weights that are there but unusable are no reason to fall back: the user must replace them.
        ("BrokenSetup", "ShoutingFallback", 1, "The echo weights are missing"),
    ],
)
def test_fallback_only_when_weights_cannot_be_downloaded(tmp_path, capsys, setup, fallback, code, err):
    argv = [f"{ECHO}:{setup}", "-i", "text=hi", "-o", str(tmp_path)]
    argv += ["--fallback", f"{ECHO}:{fallback}"] if fallback else []
    assert run_predictor.main(argv) == code
    captured = capsys.readouterr()
    assert captured.err.startswith(err) and captured.err.count("\n") == 1
    printed = captured.out.split()
    assert [json.loads(Path(line).read_text())["text"] for line in printed] == (["HI"] if code == 0 else [])


def make_recipe(target: str, out_dir: Path) -> list[str]:
    """The command `make <target>` runs, read from the Makefile, with this interpreter and ``out_dir``."""
    lines = (REPO_ROOT / "Makefile").read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(f"{target}:")) + 1
    recipe = []
    for line in lines[start:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().removesuffix("\\"))
    command = shlex.split(" ".join(recipe).replace("$(PY)", sys.executable))
    command[command.index("-o") + 1] = str(out_dir)
    return command


def test_make_predict_offline_writes_the_fast_result_and_says_how_to_get_the_full_one(tmp_path):
    """`make predict` with no weights and every connection refused (the proxy is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{probe.getsockname()[1]}"
    root = tmp_path / "weights"
    env = {
        **os.environ,
        "WEIGHTS_DIR": str(root),
        "HTTPS_PROXY": dead_proxy,
        "HTTP_PROXY": dead_proxy,
        "NO_PROXY": "",
        "TRIPTYCH_WEIGHTS_BACKOFF": "0",
    }
    unset = ("TRIPTYCH_MANIFEST", "TRIPTYCH_WEIGHTS_MIRROR", "TRIPTYCH_WEIGHTS_RETRIES", "HF_ENDPOINT")
    for name in (*unset, "https_proxy", "http_proxy"):
        env.pop(name, None)
    command = make_recipe("predict", tmp_path / "outputs")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)

    vgg = "nst/vgg19-dcbb9e9d.pth"
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "This is the fast result (the feed-forward Magenta stylisation), not the full Gatys one. "
        f"The weights file {vgg} is missing and could not be downloaded from "
        f"https://download.pytorch.org/models/vgg19-dcbb9e9d.pth; run `make weights PREDICTOR=nst` on a "
        f"connected machine, or copy the file to {root / vgg}.\n"
    )
    assert "Traceback" not in result.stdout
    # One short line per retry of VGG19: tries 2, 3 and 4 of 4 (the default TRIPTYCH_WEIGHTS_RETRIES).
    retries = [line for line in result.stdout.splitlines() if "predictors.common.download" in line]
    assert [line.split(": ", 1)[1] for line in retries] == [
        f"Download of https://download.pytorch.org/models/{vgg.split('/')[1]} failed "
        f"(proxy: Connection refused); try {attempt} of 4 in 0.0 s"
        for attempt in (2, 3, 4)
    ]
    (printed,) = [line for line in result.stdout.splitlines() if line.startswith(str(tmp_path / "outputs"))]
    written = Image.open(printed)
    # The networks came from the installed wheel; the same networks here give the same picture.
    fast = FastStylizer(
        root / "nst/magenta/arbitrary_predict.onnx", root / "nst/magenta/arbitrary_transform.onnx", threads=1
    )
    content = Image.open(REPO_ROOT / "examples/content.jpg").convert("RGB")
    style = Image.open(REPO_ROOT / "examples/style.png").convert("RGB")
    expected = fast.stylize(content, [style], [1.0], size=written.size)
    assert written.format == "PNG" and max(written.size) == 512
    assert np.array_equal(np.asarray(written), np.asarray(expected))
    assert not np.array_equal(np.asarray(written), np.asarray(content.resize(written.size)))
    assert sorted(path.name for path in root.rglob("*") if path.suffix in (".lock", ".part")) == []
