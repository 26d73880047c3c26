"""The Kubernetes manifests: valid against the Kubernetes schemas (offline, with
kubernetes-validate), consistent with each other, and with the service they run:
probes on real endpoints, settings that exist, grace periods that cover the drain."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli import ServeOptions
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SERVICE_MONITOR = K8S / "components" / "servicemonitor" / "servicemonitor.yaml"
# The oldest Kubernetes we promise to run on, and the newest the validator knows.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
EXIT_MARGIN_S = 3  # after the drain: close sockets, stop the batcher, exit

Manifest = dict[str, Any]


def load_all(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def kustomization() -> Manifest:
    data: Manifest = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


@pytest.fixture(scope="module")
def manifests(kustomization: Manifest) -> dict[str, Manifest]:
    """Every resource the kustomization lists, by kind."""
    found: dict[str, Manifest] = {}
    for name in kustomization["resources"]:
        for doc in load_all(K8S / name):
            assert doc["kind"] not in found, f"two {doc['kind']} objects"
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The MNIST_* settings the configMapGenerator turns into the pod's environment."""
    lines = (K8S / "mnist-serve.env").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key: value for key, value in pairs}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schema validation must work offline: any connection attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access during validation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def container(manifests: dict[str, Manifest]) -> Manifest:
    [only] = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    result: Manifest = only
    return result


def pod_labels(manifests: dict[str, Manifest]) -> dict[str, str]:
    labels: dict[str, str] = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_is_valid_for_kubernetes(
    manifests: dict[str, Manifest], version: str
) -> None:
    assert set(manifests) == {
        "Namespace",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for kind, manifest in manifests.items():
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(f"{kind} invalid for Kubernetes {version} at {path}: {error.message}")


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl (for its built-in kustomize) is not installed")
    return path


def kustomize(folder: Path) -> list[Manifest]:
    rendered = subprocess.run(
        [kubectl(), "kustomize", str(folder)], capture_output=True, text=True, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


@pytest.fixture
def with_service_monitor(tmp_path: Path) -> Path:
    """deploy/k8s with the ServiceMonitor component enabled, as its comment says to."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = copy / "kustomization.yaml"
    enabled = kustomization.read_text().replace(
        "# components:\n#   - components/servicemonitor",
        "components:\n  - components/servicemonitor",
    )
    assert enabled != kustomization.read_text(), "the commented components line moved"
    kustomization.write_text(enabled)
    return copy


@pytest.mark.usefixtures("no_network")
def test_kustomize_renders_valid_manifests(with_service_monitor: Path) -> None:
    rendered = kustomize(K8S)
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Namespace",
         "PodDisruptionBudget", "Service"]
    )  # fmt: skip
    for doc in rendered:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "mnist-serve"
    [deployment] = [doc for doc in rendered if doc["kind"] == "Deployment"]
    [config_map] = [doc for doc in rendered if doc["kind"] == "ConfigMap"]
    pod = deployment["spec"]["template"]["spec"]
    # The generated name carries a content hash, so a settings change rolls the pods.
    assert (
        pod["containers"][0]["envFrom"][0]["configMapRef"]["name"] == config_map["metadata"]["name"]
    )
    assert config_map["metadata"]["name"].startswith("mnist-serve-config-")

    monitored = kustomize(with_service_monitor)
    [monitor] = [doc for doc in monitored if doc["kind"] == "ServiceMonitor"]
    assert monitor["metadata"]["namespace"] == "mnist-serve"


def test_probes_and_scrape_path_hit_real_endpoints(manifests: dict[str, Manifest]) -> None:
    spec = container(manifests)
    port, grpc_port = spec["ports"]
    default_grpc = Settings.model_fields["grpc_port"].default
    assert (grpc_port["name"], grpc_port["containerPort"]) == ("grpc", default_grpc)
    probes = {kind: spec[kind]["httpGet"] for kind in
              ("startupProbe", "livenessProbe", "readinessProbe")}  # fmt: skip
    assert probes["readinessProbe"]["path"] == "/readyz", "readiness = model loaded and warm"
    assert probes["livenessProbe"]["path"] == "/healthz", "liveness must not depend on load"
    annotations = manifests["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port["containerPort"]
    paths = [probe["path"] for probe in probes.values()] + [annotations["prometheus.io/path"]]
    for probe in probes.values():
        assert probe["port"] in (port["name"], port["containerPort"])

    with TestClient(create_app(Settings(model_repository=ROOT / "models"))) as client:
        for path in paths:
            assert client.get(path).status_code == 200, path
    # The image listens where the probes knock.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f'"--port", "{port["containerPort"]}"' in dockerfile
    assert f"EXPOSE {port['containerPort']} {grpc_port['containerPort']}" in dockerfile


def test_grace_period_covers_prestop_and_drain(
    manifests: dict[str, Manifest], env: dict[str, str]
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    command = container(manifests)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    grace = float(env["MNIST_SHUTDOWN_GRACE_S"])
    drain_delay = float(env["MNIST_DRAIN_DELAY_S"])
    assert drain_delay <= grace, "the drain delay runs inside the shutdown grace"
    needed = pre_stop + max(grace, drain_delay) + EXIT_MARGIN_S
    assert pod["terminationGracePeriodSeconds"] >= needed, (
        f"SIGKILL would cut the drain: {pod['terminationGracePeriodSeconds']}s < {needed}s"
    )
    # Readiness fails within one period of the drain starting; the preStop sleep
    # gives endpoint controllers at least that long before SIGTERM.
    readiness = container(manifests)["readinessProbe"]
    assert readiness["failureThreshold"] * readiness["periodSeconds"] <= pre_stop


def test_environment_names_real_settings(env: dict[str, str]) -> None:
    known = {f"MNIST_{name.upper()}" for name in ServeOptions.model_fields}
    settings = {key: value for key, value in env.items() if key.startswith("MNIST_")}
    unknown = set(settings) - known
    assert not unknown, f"not settings of the service: {sorted(unknown)}"
    # The values parse as the service would parse them.
    parsed = Settings.model_validate(
        {key.removeprefix("MNIST_").lower(): value for key, value in settings.items()
         if key != "MNIST_WORKERS"}
    )  # fmt: skip
    assert parsed.max_batch_size > 0
    assert env["ORT_DISABLE_TELEMETRY"] == "1"


def test_resources_and_workers_fit(manifests: dict[str, Manifest], env: dict[str, str]) -> None:
    resources = container(manifests)["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[bound]), bound
    requested_cores = float(resources["requests"]["cpu"])
    workers = int(env["MNIST_WORKERS"])
    threads = int(env["MNIST_ORT_INTRA_OP_THREADS"])
    # One worker per core, one ORT thread per worker: no over-subscription.
    assert workers * threads <= requested_cores
    assert float(resources["limits"]["cpu"]) >= requested_cores


def test_pod_is_non_root_and_read_only(manifests: dict[str, Manifest]) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    security = container(manifests)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # The same uid the image's USER line sets.
    assert f"USER {pod['securityContext']['runAsUser']}:" in (ROOT / "Dockerfile").read_text()
    # A writable /tmp for multiprocess metrics when MNIST_WORKERS > 1.
    mounts = {mount["mountPath"]: mount["name"] for mount in container(manifests)["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_selectors_and_references_agree(manifests: dict[str, Manifest]) -> None:
    labels = pod_labels(manifests)
    deployment = manifests["Deployment"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    service = manifests["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    # Every Service port (http, grpc) targets a named container port.
    targets = [port["targetPort"] for port in service["spec"]["ports"]]
    assert targets == [port["name"] for port in container(manifests)["ports"]] == ["http", "grpc"]

    hpa = manifests["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["apiVersion"] == "autoscaling/v2"
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]

    pdb = manifests["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def test_service_monitor_scrapes_the_service(manifests: dict[str, Manifest]) -> None:
    # A CRD: kubernetes-validate has no schema for it, so check its shape here.
    [monitor] = load_all(SERVICE_MONITOR)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    service = manifests["Service"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    # The dashboard's queries use job="mnist-serve": the operator names the job after the Service.
    assert service["metadata"]["name"] == "mnist-serve"
