"""The kustomize overlays: they build, validate against Kubernetes 1.31, and follow our policy."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

K8S_VERSION = "1.31.0"
OVERLAYS = ("dev", "test", "prod")
SERVICES = ("orchestrator", "ingestion", "personas", "competitors", "simulation", "analysis", "overwatch", "gateway")
STAGES = ("ingestion", "personas", "competitors", "simulation", "analysis", "overwatch")
PORTS = {"orchestrator": 50050, "ingestion": 50051, "personas": 50052, "competitors": 50053,
         "simulation": 50054, "analysis": 50055, "overwatch": 50056, "gateway": 8080}
SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|DATABASE_URL|_KEY$", re.I)
NAME = "app.kubernetes.io/name"


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def all_containers(deployment: dict) -> list[dict]:
    spec = pod_spec(deployment)
    return spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_service(rendered, overlay):
    objects = rendered[overlay]
    assert set(by_kind(objects, "Deployment")) == set(SERVICES)
    assert set(by_kind(objects, "Service")) == set(SERVICES)
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    assert namespaces == {by_kind(objects, "Namespace").popitem()[0]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_kubernetes_schema(rendered, overlay):
    for obj in rendered[overlay]:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_schema_validation_is_strict(rendered):
    deployment = dict(by_kind(rendered["prod"], "Deployment")["simulation"])
    deployment["spec"] = dict(deployment["spec"], replicaz=3)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_resources_and_hardened_security_context(rendered, overlay):
    for name, deployment in by_kind(rendered[overlay], "Deployment").items():
        spec = pod_spec(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in all_containers(deployment):
            where = f"{overlay}/{name}/{container['name']}"
            ctx = container["securityContext"]
            assert ctx["runAsNonRoot"] is True, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"] and "add" not in ctx["capabilities"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), where
            assert ":" in container["image"] and not container["image"].endswith(":latest"), where
        (main,) = spec["containers"]
        assert main["args"] == [f"services.{name}"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if name == "gateway":
                assert main[probe]["httpGet"]["port"] == "http", (name, probe)
            else:
                assert main[probe]["grpc"]["port"] == PORTS[name], (name, probe)
        assert main["readinessProbe"].get("httpGet", {}).get("path", "/readyz") == "/readyz"
        assert main["livenessProbe"].get("httpGet", {}).get("path", "/healthz") == "/healthz"
        # The process listens on all interfaces; peers reach it by Service name (smvm-env).
        own_addr = {e["name"]: e.get("value") for e in main["env"]}[f"SMVM_{name.upper()}_ADDR"]
        assert own_addr == f"0.0.0.0:{PORTS[name]}"


def startup_budget_s(deployment: dict) -> int:
    probe = pod_spec(deployment)["containers"][0]["startupProbe"]
    return probe["periodSeconds"] * probe["failureThreshold"]


def test_simulation_startup_probe_allows_numba_compilation(rendered):
    deployments = by_kind(rendered["prod"], "Deployment")
    assert startup_budget_s(deployments["simulation"]) >= 240
    assert startup_budget_s(deployments["simulation"]) > startup_budget_s(deployments["analysis"])
    spec = pod_spec(deployments["simulation"])
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    cache_mount = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}["numba-cache"]
    assert env["SMVM_NUMBA_CACHE_DIR"] == cache_mount  # writable (numba refuses a read-only cache dir)
    (seed,) = spec["initContainers"]
    assert seed["command"][-1].rstrip("/") == cache_mount  # seeded from the cache warmed at image build


def test_simulation_service_is_headless_and_orchestrator_resolves_it_by_dns(rendered):
    objects = rendered["prod"]
    assert by_kind(objects, "Service")["simulation"]["spec"]["clusterIP"] == "None"
    others = {n: s for n, s in by_kind(objects, "Service").items() if n != "simulation"}
    assert all("clusterIP" not in s["spec"] for s in others.values())
    orchestrator = pod_spec(by_kind(objects, "Deployment")["orchestrator"])["containers"][0]
    env = {e["name"]: e.get("value") for e in orchestrator["env"]}
    assert env["SMVM_SIMULATION_ADDR"].startswith("dns:///simulation.$(POD_NAMESPACE).svc")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_and_disruption_budgets(rendered, overlay):
    objects = rendered[overlay]
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    assert set(hpas) == {"simulation", "gateway"}
    deployments = by_kind(objects, "Deployment")
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert "replicas" not in deployments[name]["spec"], f"{name}: replicas belong to the HPA"
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdbs = by_kind(objects, "PodDisruptionBudget")
    assert {p["spec"]["selector"]["matchLabels"][NAME] for p in pdbs.values()} == set(SERVICES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_expose_only_the_gateway(rendered, overlay):
    policies = list(by_kind(rendered[overlay], "NetworkPolicy").values())
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny and "ingress" not in deny[0]["spec"] and deny[0]["spec"]["policyTypes"] == ["Ingress"]

    def sources(service: str) -> list:
        rules = [r for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).get(NAME) == service
                 for r in p["spec"]["ingress"]]
        assert rules, f"{service}: no ingress rule (unreachable)"
        return rules

    assert all("from" not in rule for rule in sources("gateway"))  # any source, gateway port only
    assert [p["port"] for rule in sources("gateway") for p in rule["ports"]] == [PORTS["gateway"]]
    for service, allowed in [("orchestrator", "gateway")] + [(stage, "orchestrator") for stage in STAGES]:
        for rule in sources(service):
            assert rule["from"] == [{"podSelector": {"matchLabels": {NAME: allowed}}}], service
            assert [p["port"] for p in rule["ports"]] == [PORTS[service]], service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_runs_volume_config_and_secret_references(rendered, overlay):
    objects = rendered[overlay]
    assert "smvm-runs" in by_kind(objects, "PersistentVolumeClaim")
    assert not by_kind(objects, "Secret"), "Secrets are created out of band, never committed"
    deployments = by_kind(objects, "Deployment")
    orchestrator = pod_spec(deployments["orchestrator"])
    claim = {v["name"]: v for v in orchestrator["volumes"]}["runs"]["persistentVolumeClaim"]["claimName"]
    assert claim == "smvm-runs"
    env_maps = [c for c in by_kind(objects, "ConfigMap") if c.startswith("smvm-env")]
    (env_map,) = env_maps
    settings = by_kind(objects, "ConfigMap")[env_map]["data"]
    assert settings["SMVM_PROFILE"] == overlay
    config_map = next(c for n, c in by_kind(objects, "ConfigMap").items() if n.startswith("smvm-config"))
    profile = yaml.safe_load(config_map["data"][f"{overlay}.yaml"])
    assert profile["profile"] == overlay
    assert not any(SECRET_ENV.search(key) for key in settings)
    secret_refs = set()
    for name, deployment in deployments.items():
        for container in all_containers(deployment):
            for env in container.get("env", []):
                if SECRET_ENV.search(env["name"]):
                    assert "value" not in env, f"{name}: {env['name']} has a literal value"
                    ref = env["valueFrom"]["secretKeyRef"]
                    secret_refs.add((env["name"], ref["name"]))
    assert {("SMVM_API_TOKENS", "smvm-api-tokens"), ("SMVM_DATABASE_URL", "smvm-database"),
            ("SMVM_WEBHOOK_SECRET", "smvm-webhook")} <= secret_refs
    tls = by_kind(objects, "Ingress")["gateway"]["spec"]["tls"][0]
    assert tls["secretName"] == "smvm-tls"


def test_prod_profile_file_carries_no_tokens(rendered):
    config_map = next(c for n, c in by_kind(rendered["prod"], "ConfigMap").items() if n.startswith("smvm-config"))
    assert "api_tokens" not in yaml.safe_load(config_map["data"]["prod.yaml"])


def replicas(objects: list[dict], name: str) -> int:
    return by_kind(objects, "Deployment")[name]["spec"].get("replicas", 1)


def limits(objects: list[dict], name: str) -> dict:
    return pod_spec(by_kind(objects, "Deployment")[name])["containers"][0]["resources"]["limits"]


def test_overlays_differ_as_intended(rendered):
    dev, test, prod = (rendered[o] for o in OVERLAYS)
    namespaces = {o: by_kind(rendered[o], "Namespace").popitem()[0] for o in OVERLAYS}
    assert len(set(namespaces.values())) == 3
    for stage in ("ingestion", "personas", "competitors", "analysis", "overwatch"):
        assert replicas(prod, stage) == 2 and replicas(dev, stage) == 1 and replicas(test, stage) == 1
    assert replicas(prod, "orchestrator") == 1  # single writer of the RWO/RWX run store (Recreate)
    hpa = {o: by_kind(rendered[o], "HorizontalPodAutoscaler")["simulation"]["spec"] for o in OVERLAYS}
    assert hpa["prod"]["minReplicas"] >= 3 and hpa["prod"]["maxReplicas"] > hpa["test"]["maxReplicas"] > hpa["dev"]["maxReplicas"]
    assert limits(prod, "simulation")["memory"] == "4Gi" and limits(dev, "simulation")["memory"] == "1Gi"
    assert by_kind(prod, "PersistentVolumeClaim")["smvm-runs"]["spec"]["accessModes"] == ["ReadWriteMany"]
    images = {o: pod_spec(by_kind(rendered[o], "Deployment")["gateway"])["containers"][0]["image"] for o in OVERLAYS}
    assert images["dev"].startswith("localhost:5000/") and images["prod"].startswith("registry.example.com/")
