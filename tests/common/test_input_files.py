"""predictors.common.input_files: input downloads with a deadline, a byte cap and a cancel that lands, each
failure a sentence, the partial file removed, the prediction's folder removed at its end."""

from __future__ import annotations

import ctypes
import io
import re
import tempfile
import threading
from pathlib import Path

import pytest

from predictors.common import input_files
from predictors.common.errors import InputError
from predictors.common.input_files import Limits, prediction_files
from tools.hostile_hosts import HostileServer

BODY = bytes(range(256)) * 4


@pytest.fixture(scope="module")
def server():
    with HostileServer({"photo.png": BODY}) as running:
        yield running


def test_a_download_lands_in_the_predictions_folder_and_leaves_with_it(server):
    with prediction_files(Limits(timeout_s=10, max_bytes=10_000)) as files:
        path = files.download(server.url("photo.png"), "photo.png", "input image")
        assert path.read_bytes() == BODY and path.suffix == ".png" and path.parent == files.folder
        assert input_files.is_prediction_file(path)
    assert not path.exists() and not files.folder.exists()
    assert files.folder.name.startswith(input_files.FOLDER_PREFIX) and files.folder.parent == Path(
        tempfile.gettempdir()
    )
    assert not input_files.is_prediction_file(path)


@pytest.mark.parametrize(
    ("route", "limits", "message"),
    [
        ("drip/photo.png", Limits(timeout_s=0.5), "did not finish downloading within 0.5 s"),
        ("endless", Limits(timeout_s=30, max_bytes=200_000), "larger than the 0.2 MB limit"),
        ("huge-length", Limits(timeout_s=30, max_bytes=200_000), "larger than the 0.2 MB limit"),
        ("stall", Limits(timeout_s=0.5), "did not finish downloading within 0.5 s"),
        ("status/404", Limits(), "answered HTTP 404 (Not Found)"),
        ("status/503", Limits(), "answered HTTP 503"),
        ("redirect-loop", Limits(), "redirected more than 5 times"),
    ],
)
def test_hostile_hosts_end_in_a_sentence_and_leave_no_file(server, route, limits, message):
    with prediction_files(limits) as files:
        with pytest.raises(InputError, match=re.escape(message)) as info:
            files.download(server.url(route), "photo.png", "input style_image_3")
        assert str(info.value).startswith("The input style_image_3 ")
        assert list(files.folder.iterdir()) == []


def test_unreachable_and_malformed_urls_are_sentences(server):
    with prediction_files(Limits(timeout_s=10)) as files:
        closed_port = server.url("x").replace(str(server._server.server_address[1]), "9")
        with pytest.raises(InputError, match="could not be reached"):
            files.download(closed_port, "x.png", "input image")
        with pytest.raises(InputError, match="not a valid http"):
            files.download("http://", "x.png", "input image")


def test_a_data_uri_larger_than_the_cap_is_refused(server):
    with prediction_files(Limits(max_bytes=100)) as files:
        with pytest.raises(InputError, match=re.escape("larger than the 0.0001 MB limit")):
            files.save(io.BytesIO(BODY), "file.png", "input image")
        assert list(files.folder.iterdir()) == []


def test_a_cancel_lands_during_a_transfer_that_would_take_minutes(server):
    """Cog cancels a prediction by raising an exception in its thread (PyThreadState_SetAsyncExc); it must
    land while the body is still dripping, and take the partial file with it."""

    class Cancel(BaseException):
        pass

    outcome: dict[str, object] = {}
    started = threading.Event()

    def predict() -> None:
        with prediction_files(Limits(timeout_s=600)) as files:
            outcome["folder"] = files.folder
            started.set()
            try:
                files.download(server.url("drip/photo.png"), "photo.png", "input image")  # 1024 x 0.2 s
            except Cancel:
                outcome["cancelled"] = True
                outcome["left"] = list(files.folder.iterdir())

    requests_before = len(server.requests)
    thread = threading.Thread(target=predict)
    thread.start()
    started.wait(10)
    while len(server.requests) == requests_before:  # the transfer has reached the host
        thread.join(0.05)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(Cancel))
    thread.join(30)
    assert not thread.is_alive(), "the cancel did not land"
    assert outcome["cancelled"] is True and outcome["left"] == []
    assert not Path(outcome["folder"]).exists()


def test_settings_must_be_positive_numbers(monkeypatch):
    monkeypatch.setenv(input_files.TIMEOUT_ENV, "2.5")
    monkeypatch.setenv(input_files.MAX_MB_ENV, "3")
    assert Limits.from_environment() == Limits(timeout_s=2.5, max_bytes=3_000_000)
    for bad in ("0", "-1", "lots", "nan"):
        monkeypatch.setenv(input_files.MAX_MB_ENV, bad)
        with pytest.raises(ValueError, match="TRIPTYCH_INPUT_MAX_MB must be a positive number"):
            Limits.from_environment()
