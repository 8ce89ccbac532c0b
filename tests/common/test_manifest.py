"""The real weights_manifest.json: valid, complete, and in agreement with the reference facts about the files,
so that a typo in a hash or a size fails here rather than at download time."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from collections import defaultdict
from pathlib import Path

import jsonschema
import pytest

from predictors.common import manifest as manifests

MANIFEST = Path(__file__).resolve().parents[2] / "weights_manifest.json"
# Groups of reference/sd/weights_manifest.json whose keys are paths inside these repositories
# (the other groups name the repository in their keys).
REFERENCE_REPOS = {
    "sd15_base": ("runwayml/stable-diffusion-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    "sdxl_base": ("stabilityai/stable-diffusion-xl-base-1.0",),
    "ip_adapter_h94": ("h94/IP-Adapter",),
}
DEV_PINS = dict(
    line.split("==", 1)
    for line in (MANIFEST.parent / "requirements" / "dev.txt").read_text().splitlines()
    if "==" in line and not line.lstrip().startswith("#")
)


@pytest.fixture(scope="module")
def manifest() -> manifests.Manifest:
    return manifests.load(MANIFEST, strict=True)


def test_the_schema_is_a_valid_json_schema_and_the_manifest_names_the_targets(manifest):
    jsonschema.Draft202012Validator.check_schema(manifests.SCHEMA)
    assert manifest.targets == ("nst", "sd_style/sd15", "sd_style/sdxl", "musepose")


def test_manifest_is_valid_with_every_conversion_input_listed():
    loaded = manifests.load(MANIFEST, strict=True)
    assert loaded.files


def test_every_destination_is_unique(manifest):
    dests = [entry["dest"] for entry in manifest.files.values()]
    dests += [out["dest"] for step in manifest.conversions.values() for out in step["outputs"].values()]
    assert sorted(dest for dest in set(dests) if dests.count(dest) > 1) == []


def test_every_predictor_tag_is_used(manifest):
    used = {
        tag
        for item in [*manifest.files.values(), *manifest.conversions.values()]
        for tag in item["needed_by"]
    }
    assert used == set(manifest.targets)


def test_conversion_inputs_name_existing_entries(manifest):
    for name, step in manifest.conversions.items():
        assert set(step["inputs"]) <= set(manifest.files), name


def _reference_sd_facts(reference: dict) -> dict[str, dict]:
    """``"<owner>/<repo>/<path>" -> {"sha256": ..., "size": ...}`` for each exact fact of the sd reference."""
    facts = {}

    def walk(node: dict, keys: list[str], repos: tuple[str, ...]) -> None:
        for key, value in node.items():
            if not isinstance(value, dict):
                continue
            path = [*keys, key] if key != "files" else keys
            if "sha256" in value or "size" in value:
                exact = {fact: value[fact] for fact in ("sha256", "size") if fact in value}
                for repo in repos or ("",):
                    facts["/".join(filter(None, [repo, *path]))] = exact
            else:
                walk(value, path, repos)

    for group, content in reference.items():
        if not isinstance(content, dict):
            continue
        if {"repo", "files", "_src"} & content.keys():
            assert group in REFERENCE_REPOS, (
                f"reference group {group} needs its repositories in REFERENCE_REPOS"
            )
        walk(content, [], REFERENCE_REPOS.get(group, ()))
    return facts


def test_sd_entries_match_the_reference_sha256_and_size(manifest, reference_dir):
    facts = _reference_sd_facts(json.loads((reference_dir / "sd/weights_manifest.json").read_text()))
    checked = []
    for name, entry in manifest.files.items():
        hf = entry.get("hf")
        fact = facts.get(f"{hf['repo_id']}/{hf['filename']}") if hf else None
        if fact is None:
            continue
        checked.append(name)
        for key, value in fact.items():
            assert entry[key] == value, f"{name}.{key}"
    sd_entries = [name for name, entry in manifest.files.items() if "sd_style" in str(entry["needed_by"])]
    assert checked or not sd_entries, "no sd_style entry could be matched to the reference"


def test_pose_and_musepose_sizes_match_the_reference(manifest, shared_dir, reference_dir):
    texts = [(reference_dir / "README.md").read_text(), (shared_dir / "golden/README.md").read_text()]
    sizes = defaultdict(set)
    for text in texts:
        for file, size in re.findall(r"`([\w.-]+\.(?:pth|onnx))`[^\n]*?(\d{1,3}(?:,\d{3}){2,})", text):
            sizes[file].add(int(size.replace(",", "")))
    checked = set()
    for name, entry in manifest.files.items():
        file = entry["dest"].rsplit("/", 1)[-1]
        if entry["dest"].startswith(("dwpose/", "musepose/")) and file in sizes:
            assert len(sizes[file]) == 1, f"the reference gives {file} several sizes"
            assert entry["size"] == next(iter(sizes[file])), f"{name}.size"
            checked.add(entry["dest"])
    assert {"dwpose/yolox_l.onnx", "dwpose/dw-ll_ucoco_384.onnx"} <= checked


def test_vgg19_sha256_carries_the_prefix_in_its_file_name(manifest, reference_dir):
    facts = json.loads((reference_dir / "nst/vgg19_torchvision.json").read_text())
    (entry,) = [entry for entry in manifest.files.values() if entry["dest"].endswith("/" + facts["file"])]
    assert entry["url"] == facts["url"]
    if entry["sha256"] is not None:
        assert entry["sha256"].startswith(facts["sha256_prefix"])


def test_package_entries_match_the_installed_wheel_files(manifest):
    packaged = {name: entry for name, entry in manifest.files.items() if "package" in entry}
    assert {entry["dest"] for entry in packaged.values()} >= {
        "nst/magenta/arbitrary_predict.onnx",
        "nst/magenta/arbitrary_transform.onnx",
    }
    for name, entry in packaged.items():
        package = entry["package"]
        wheel = entry["url"].rsplit("/", 1)[-1]
        assert wheel.startswith(f"{package['name'].replace('-', '_')}-{package['version']}-"), name
        assert wheel.endswith(".whl"), name
        # requirements/dev.txt pins the wheel the tests read: the manifest's, or nothing would be compared.
        assert DEV_PINS.get(package["name"]) == package["version"], (name, DEV_PINS.get(package["name"]))
        distribution = importlib.metadata.distribution(package["name"])
        assert distribution.version == package["version"], f"{name}: install requirements/dev.txt"
        data = Path(distribution.locate_file(package["path"])).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["size"]), name


def test_hugging_face_files_come_from_the_hub_at_a_revision(manifest):
    hub = {name: entry["hf"] for name, entry in manifest.files.items() if "hf" in entry}
    assert len(hub) == 57 and len(manifest.files) == 60
    assert {hf["revision"] for hf in hub.values()} == {"main"}  # docs/weights.md: pin on a connected machine
    assert hub["dwpose_yolox_l"] == {
        "repo_id": "yzd-v/DWPose",
        "filename": "yolox_l.onnx",
        "revision": "main",
    }
    urls = [
        url for entry in manifest.files.values() for url in (entry.get("url", ""), *entry.get("mirrors", ()))
    ]
    assert not [url for url in urls if "huggingface.co" in url]


def test_the_base_role_marks_the_base_weights_a_custom_checkpoint_replaces(manifest):
    base = sorted(name for name, entry in manifest.files.items() if entry.get("role") == "base")
    assert base == [
        "sd15_base/text_encoder/model.fp16.safetensors",
        "sd15_base/unet/diffusion_pytorch_model.fp16.safetensors",
        "sd15_base/vae/diffusion_pytorch_model.fp16.safetensors",
        "sdxl_base/text_encoder/model.fp16.safetensors",
        "sdxl_base/text_encoder_2/model.fp16.safetensors",
        "sdxl_base/unet/diffusion_pytorch_model.fp16.safetensors",
        "sdxl_base/vae/diffusion_pytorch_model.fp16.safetensors",
    ]
