"""predictors.common.download: a weights transfer has timeouts and never grows past its size cap."""

from __future__ import annotations

import os

import pytest

from predictors.common import download
from tools.hostile_hosts import HostileServer


@pytest.fixture(scope="module")
def server():
    with HostileServer({"model.bin": b"w" * 5000}) as running:
        yield running


def test_transfers_have_connect_and_read_timeouts():
    connect, read = download.TIMEOUT
    assert 0 < connect <= 30 and 0 < read <= 120


def test_an_endless_body_of_unknown_size_stops_at_the_cap(server, tmp_path, monkeypatch):
    monkeypatch.setenv(download.MAX_GB_ENV, "0.0001")  # 100 kB
    dest = tmp_path / "custom.safetensors"
    with pytest.raises(download.TransferError, match="more than the 100000 bytes allowed"):
        download.fetch(server.url("endless"), dest, sha256=None, size=None)
    assert list(tmp_path.iterdir()) == []


def test_an_announced_length_over_the_cap_is_refused_before_the_body(server, tmp_path):
    with pytest.raises(download.TransferError, match="announces 10000000000 bytes, more than the 4096"):
        download.fetch(server.url("huge-length"), tmp_path / "x.bin", sha256=None, size=4096)
    assert list(tmp_path.iterdir()) == []


def test_a_file_larger_than_its_manifest_size_is_cut_off(server, tmp_path):
    with pytest.raises(download.TransferError, match="announces 5000 bytes, more than the 4000"):
        download.fetch(server.url("model.bin"), tmp_path / "m.bin", sha256=None, size=4000)
    assert download.fetch(server.url("model.bin"), tmp_path / "m.bin", sha256=None, size=5000)
    assert (tmp_path / "m.bin").stat().st_size == 5000


def test_the_default_cap_for_unknown_sizes(monkeypatch):
    monkeypatch.delenv(download.MAX_GB_ENV, raising=False)
    assert download.byte_cap(None) == 40_000_000_000
    assert download.byte_cap(123) == 123


def test_pget_never_fetches_a_file_of_unknown_size(server, tmp_path, monkeypatch):
    # pget has no byte cap: with it on PATH, an unknown-size file still goes through the capped transfer.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pget").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "pget.log"}\nexit 1\n')
    (bin_dir / "pget").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv(download.MAX_GB_ENV, "0.0001")
    with pytest.raises(download.TransferError, match="more than the 100000 bytes allowed"):
        download.fetch(server.url("endless"), tmp_path / "custom.bin", sha256=None, size=None)
    assert not (tmp_path / "pget.log").exists()
