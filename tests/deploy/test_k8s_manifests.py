"""deploy/k8s: every manifest is valid against the Kubernetes schemas, the kit's promises hold (probes, drain,
grace, upload URL, GPU, shared weights, queue-depth scaling, network policy), and the edge passes only the
three prediction routes with safe ids."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy import edge

KIT = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
PREDICTORS = ("nst", "sd-style", "musepose")
K8S_VERSION = "1.30"


def documents() -> list[tuple[str, dict]]:
    return [
        (path.name, doc)
        for path in sorted(KIT.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]


def by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


@pytest.mark.parametrize(
    ("name", "doc"), documents(), ids=lambda value: value if isinstance(value, str) else None
)
def test_every_manifest_is_valid(name, doc):
    if doc["apiVersion"].startswith("keda.sh/"):
        # KEDA's CRD is not among the bundled schemas: the fields KEDA requires are checked by hand.
        spec = doc["spec"]
        assert doc["kind"] == "ScaledObject" and spec["scaleTargetRef"]["name"]
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            assert trigger["type"] and all(isinstance(value, str) for value in trigger["metadata"].values())
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def container(name: str) -> dict:
    (cog,) = by_kind("Deployment")[f"triptych-{name}"]["spec"]["template"]["spec"]["containers"]
    return cog


def probe_args(probe: dict) -> list[str]:
    command = probe["exec"]["command"]
    assert command[:2] == ["python", "/src/deploy/probe.py"]
    return command[2:]


def option(args: list[str], name: str) -> float:
    return float(args[args.index(name) + 1])


@pytest.mark.parametrize("name", PREDICTORS)
def test_each_predictor_drains_before_it_stops_and_is_restarted_when_stuck(name):
    deployment = by_kind("Deployment")[f"triptych-{name}"]
    pod = deployment["spec"]["template"]["spec"]
    cog = container(name)
    assert cog["args"][:3] == ["python", "-m", "cog.server.http"]
    assert cog["args"][3:5] == ["--await-explicit-shutdown", "true"]
    assert cog["args"][5:] == ["--upload-url", "$(UPLOAD_URL)"]
    assert probe_args(cog["readinessProbe"]) == ["ready"]
    assert probe_args(cog["startupProbe"]) == ["ready"]
    live = probe_args(cog["livenessProbe"])
    drain = probe_args(cog["lifecycle"]["preStop"])
    assert live[0] == "live" and drain[0] == "drain"
    longest = option(drain, "--timeout") - 60
    # Stuck means not READY for longer than the longest prediction; the grace period outlasts the drain.
    assert option(live, "--stuck-after") > longest
    assert pod["terminationGracePeriodSeconds"] > option(drain, "--timeout")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # The first weights download fits in the startup budget (at least 10 minutes).
    startup = cog["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


@pytest.mark.parametrize("name", PREDICTORS)
def test_each_predictor_has_a_gpu_shared_weights_and_a_private_scratch(name):
    pod = by_kind("Deployment")[f"triptych-{name}"]["spec"]["template"]["spec"]
    cog = container(name)
    assert cog["resources"]["limits"]["nvidia.com/gpu"] == "1"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["weights"]["persistentVolumeClaim"]["claimName"] == "triptych-weights"
    assert by_kind("PersistentVolumeClaim")["triptych-weights"]["spec"]["accessModes"] == ["ReadWriteMany"]
    env = {item["name"]: item for item in cog["env"]}
    assert env["WEIGHTS_DIR"]["value"] == "/weights"
    assert cog["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"] for mount in cog["volumeMounts"]}
    assert {"/weights", "/tmp"} <= mounts


@pytest.mark.parametrize("name", PREDICTORS)
def test_each_predictor_scales_on_its_queue_not_on_cpu(name):
    scaled = by_kind("ScaledObject")[f"triptych-{name}"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == f"triptych-{name}"
    assert [trigger["type"] for trigger in scaled["spec"]["triggers"]] == ["redis"]
    assert scaled["spec"]["triggers"][0]["metadata"]["listName"] == f"triptych:{name}:queue"
    assert "HorizontalPodAutoscaler" not in {doc["kind"] for _, doc in documents()}


def test_only_the_edge_reaches_the_predictors():
    policy = by_kind("NetworkPolicy")["triptych-predictors"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"triptych.dev/role": "predictor"}
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"triptych.dev/role": "edge"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    for name in PREDICTORS:
        labels = by_kind("Deployment")[f"triptych-{name}"]["spec"]["template"]["metadata"]["labels"]
        assert labels["triptych.dev/role"] == "predictor"
    edge_labels = by_kind("Deployment")["triptych-edge"]["spec"]["template"]["metadata"]["labels"]
    assert edge_labels["triptych.dev/role"] == "edge"
    # URL inputs cannot reach the cluster's networks or the cloud metadata endpoint.
    blocked = {
        cidr
        for rule in policy["egress"]
        for peer in rule["to"]
        for cidr in peer.get("ipBlock", {}).get("except", [])
    }
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= blocked


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/nst/predictions", "proxy"),
        ("POST", "/sd-style/predictions", "proxy"),
        ("PUT", "/musepose/predictions/job_42-a", "proxy"),
        ("POST", "/musepose/predictions/job_42-a/cancel", "proxy"),
        ("PUT", "/nst/predictions/" + "a" * 64, "proxy"),
        ("PUT", "/nst/predictions/" + "a" * 65, "404"),
        ("PUT", "/nst/predictions/" + "w" * 300, "404"),
        ("PUT", "/nst/predictions/../../etc", "404"),
        ("PUT", "/nst/predictions/a.b", "404"),
        ("POST", "/nst/predictions/..%2F..%2Fx/cancel", "404"),
        ("POST", "/nst/shutdown", "404"),
        ("POST", "/shutdown", "404"),
        ("GET", "/nst/health-check", "404"),
        ("GET", "/nst/openapi.json", "404"),
        ("POST", "/nst/trainings", "404"),
        ("POST", "/other/predictions", "404"),
        ("GET", "/nst/predictions", "deny"),
        ("DELETE", "/nst/predictions/abc", "deny"),
        ("GET", "/nst/predictions/abc/cancel", "deny"),
        ("POST", "/nst/predictions/abc", "deny"),
    ],
)
def test_the_edge_passes_only_the_prediction_routes_with_safe_ids(method, path, expected):
    assert edge.route(edge.nginx_conf(), method, path) == expected
