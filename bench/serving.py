"""Serving figures through the real Cog server on tiny weights: how fast a cancel lands, and how often a
back-to-back sync request is answered 409. Prints a table; asserts nothing.

- Cancel latency: a prediction whose URL input drips one byte every 0.2 s (it would take minutes) is
  cancelled once the transfer has started; the figure is the time from sending the cancel to the webhook
  that reports ``canceled``. With ``--nst``, the same for a cancel during nst's optimisation loop.
- 409 rate: ``--requests`` sync predictions sent one after another, each as soon as the previous answer
  arrived, without retrying; the share answered 409 (busy) on the first try, per predictor.

    python -m bench.serving [--cancels 10] [--requests 50] [--predictors echo nst sd_style musepose]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image

from tools.cog_server import CogServer, WebhookReceiver, data_uri
from tools.hostile_hosts import HostileServer
from tools.tiny_weights import build, environment

ECHO = "tests/predictors_for_tests/echo_predict.py"


def write_inputs(folder: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(folder / "content.png")
    Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(folder / "ref.png")
    with av.open(str(folder / "dance.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(4):
            frame = av.VideoFrame.from_ndarray(
                np.full((48, 64, 3), 60 + 10 * index, np.uint8), format="rgb24"
            )
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return {name: data_uri(folder / name) for name in ("content.png", "ref.png", "dance.mp4")}


def cases(files: dict[str, str]) -> dict[str, tuple[str, list[str], dict]]:
    """predictor -> (predict.py, tiny weights parts, one small prediction's inputs)."""
    return {
        "echo": (ECHO, [], {"text": "x"}),
        "nst": (
            "predictors/nst/predict.py",
            ["vgg19"],
            {
                "image": files["content.png"],
                "style_image": files["content.png"],
                "max_side": 64,
                "iterations": 1,
            },
        ),
        "sd_style": (
            "predictors/sd_style/predict.py",
            ["sd15"],
            {
                "image": files["content.png"],
                "style_image": files["content.png"],
                "num_inference_steps": 1,
                "max_side": 256,
            },
        ),
        "musepose": (
            "predictors/musepose/predict.py",
            ["dwpose", "musepose"],
            {
                "reference_image": files["ref.png"],
                "dance_video": files["dance.mp4"],
                "resolution": 64,
                "max_frames": 4,
                "num_inference_steps": 1,
                "window": 4,
                "overlap": 1,
            },
        ),
    }


def cancel_latencies(server: CogServer, webhook: WebhookReceiver, inputs_for, count: int) -> list[float]:
    latencies = []
    for index in range(count):
        prediction_id = f"cancel-{index}-{time.monotonic_ns()}"
        inputs, started = inputs_for(index)
        server.predict_async(inputs, webhook.url, prediction_id=prediction_id)
        started()
        sent = time.monotonic()
        server.cancel(prediction_id)
        final = webhook.wait_completed(prediction_id, timeout=120)
        latencies.append(time.monotonic() - sent)
        assert final["status"] == "canceled", final.get("error")
        server.wait_ready(60)
    return latencies


def conflict_rate(server: CogServer, inputs: dict, count: int) -> tuple[int, int]:
    """(409 answers, requests): each request sent as soon as the previous answer arrived, no retry."""
    conflicts = 0
    for _ in range(count):
        response = server.session.post(f"{server.url}/predictions", json={"input": inputs}, timeout=600)
        if response.status_code == 409:
            conflicts += 1
        elif response.status_code != 200 or response.json()["status"] != "succeeded":
            raise RuntimeError(f"prediction failed: {response.status_code} {response.text[:300]}")
    return conflicts, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cancels", type=int, default=10)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--predictors", nargs="+", default=["echo", "nst", "sd_style", "musepose"])
    parser.add_argument("--nst", action="store_true", help="also time cancels inside nst's loop")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder, HostileServer({"photo.png": b"p" * 4096}) as hosts:
        files = write_inputs(Path(folder))
        with WebhookReceiver() as webhook, CogServer(ECHO) as server:

            def dripping(index: int):
                before = len(hosts.requests)

                def transfer_started() -> None:
                    while len(hosts.requests) == before:
                        time.sleep(0.01)

                return {"text": "c", "image": hosts.url("drip/photo.png")}, transfer_started

            latencies = cancel_latencies(server, webhook, dripping, args.cancels)
            rows.append(("cancel during a dripping download", latencies))
        if args.nst:
            env = environment(build(["vgg19"]))
            with WebhookReceiver() as webhook, CogServer("predictors/nst/predict.py", env=env) as server:

                def optimising(index: int):
                    inputs = {
                        **cases(files)["nst"][2],
                        "iterations": 5000,
                        "preview_every": 0,
                        "max_side": 256,
                    }

                    seen = server.log_text().count("iteration 2/")

                    def loop_started() -> None:
                        while server.log_text().count("iteration 2/") == seen:
                            time.sleep(0.01)

                    return inputs, loop_started

                rows.append(
                    (
                        "cancel during nst iterations",
                        cancel_latencies(server, webhook, optimising, args.cancels),
                    )
                )
        print(f"{'cancel':40} {'n':>4} {'median s':>9} {'max s':>7}")
        for label, values in rows:
            if values:
                print(f"{label:40} {len(values):4d} {statistics.median(values):9.3f} {max(values):7.3f}")
        print(f"\n{'409 on back-to-back sync requests':40} {'409':>5} {'n':>5} {'rate':>6}")
        for name in args.predictors:
            predictor, parts, inputs = cases(files)[name]
            env = environment(build(parts)) if parts else {}
            with CogServer(predictor, env=env) as server:
                conflicts, count = conflict_rate(server, inputs, args.requests)
            print(f"{name:40} {conflicts:5d} {count:5d} {conflicts / count:6.1%}")


if __name__ == "__main__":
    main()
