"""``python -m tools.weights`` (``make weights``): fetch, check and pin, against the local hub of
tests/weights_server.py."""

from __future__ import annotations

import json

from predictors.common import manifest as manifests
from predictors.common import weights
from tests import weights_server
from tests.weights_server import (
    PAYLOAD,
    closed_port_url,
    entry,
    hf_file,
    hub_commit,
    sha256,
    use_hub,
    use_manifest,
)
from tools import weights as weights_cli

# The fixtures, under their names for pytest.
server, root = weights_server.server, weights_server.root


def test_fetch_offline_ends_with_the_sentence_not_a_traceback(root, tmp_path, monkeypatch, capsys):
    url = closed_port_url("a.bin")
    use_manifest(tmp_path, monkeypatch, {"a": entry(url, "nst/a.bin", PAYLOAD)})

    assert weights_cli.main(["fetch", "nst"]) == 1

    assert capsys.readouterr().err == (
        f"error: The weights file nst/a.bin is missing and could not be downloaded from {url}; run "
        f"`make weights PREDICTOR=nst` on a connected machine, or copy the file to {root}/nst/a.bin.\n"
    )


def test_fetch_names_what_it_verified(server, root, tmp_path, monkeypatch, capsys):
    use_hub(server, monkeypatch, tmp_path, {"a.bin": PAYLOAD, "b.bin": b"b"})

    assert weights_cli.main(["fetch", "nst"]) == 0

    assert capsys.readouterr().out.splitlines()[-1] == f"nst: 2 files verified under {root}"
    assert (root / "x/a.bin").read_bytes() == PAYLOAD


def test_check_reports_conversion_inputs_missing_from_files(tmp_path, capsys):
    manifest = {
        "schema_version": 1,
        "targets": ["nst"],
        "files": {},
        "conversions": {
            "c": {
                "inputs": ["a"],
                "outputs": {"o": {"dest": "o", "license": "MIT"}},
                "needed_by": ["nst"],
            }
        },
    }
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))

    assert weights_cli.main(["check", str(path)]) == 1
    assert "conversions.c.inputs names 'a', which files lacks" in capsys.readouterr().err
    path.write_text(json.dumps({**manifest, "folders": {"f": "elsewhere"}}))
    assert weights_cli.main(["check", str(path)]) == 1
    assert "folders.f 'elsewhere' holds no listed file" in capsys.readouterr().err
    manifests.load(path)  # a tiny root's manifest may omit conversion inputs


def test_pin_replaces_revisions_by_the_commits_of_the_files_the_manifest_describes(
    server, root, tmp_path, monkeypatch, capsys
):
    entries = use_hub(server, monkeypatch, tmp_path, {"a.bin": PAYLOAD, "b.bin": b"bb", "c.bin": b"c"})
    entries["b.bin"]["sha256"] = sha256(b"xx")  # the hub's b.bin is another file now
    del server.files["hub/org/models/resolve/main/c.bin"]
    path = use_manifest(tmp_path, monkeypatch, entries)
    commit = hub_commit("main")

    assert weights_cli.main(["pin"]) == 1

    pinned = manifests.load(path).files
    assert [pinned[name]["hf"]["revision"] for name in ("a.bin", "b.bin", "c.bin")] == [
        commit,
        "main",
        "main",
    ]
    assert pinned["a.bin"] == {**entries["a.bin"], "hf": hf_file("org/models", "a.bin", commit)}
    out, err = capsys.readouterr()
    assert f"a.bin: main -> {commit}" in out
    assert f"b.bin: not pinned: sha256 {sha256(b'xx')} in the manifest, {sha256(b'bb')} at {commit}" in err
    assert "c.bin: not pinned: HTTP 404" in err
    # The pinned file now comes from that commit.
    server.files[f"hub/org/models/resolve/{commit}/a.bin"] = PAYLOAD
    assert weights.ensure(["a.bin"])["a.bin"].read_bytes() == PAYLOAD
    assert server.heads[-1][0] == f"hub/org/models/resolve/{commit}/a.bin"
