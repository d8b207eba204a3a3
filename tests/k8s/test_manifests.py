"""The kustomize overlays: they build, validate against Kubernetes 1.31, and follow our policy."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from smvm import config

K8S_VERSION = "1.31.0"
OVERLAYS = ("dev", "test", "prod")
SERVICES = ("orchestrator", "ingestion", "personas", "competitors", "simulation", "analysis", "overwatch", "memory",
            "gateway")
STAGES = ("ingestion", "personas", "competitors", "simulation", "analysis", "overwatch")
PORTS = {"orchestrator": 50050, "ingestion": 50051, "personas": 50052, "competitors": 50053,
         "simulation": 50054, "analysis": 50055, "overwatch": 50056, "memory": 50058, "gateway": 8080}
SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|DATABASE_URL|_KEY$", re.I)
# Settings that name a file holding secrets: the file must come from a Secret volume, never the image.
SECRET_FILE_ENV = ("SMVM_TOKENS_FILE", "SMVM_TLS_CERT", "SMVM_TLS_KEY", "SMVM_TLS_CA")
GRPC_SERVERS = tuple(s for s in SERVICES if s != "gateway")
PROBE_IN_IMAGE = "/app/k8s/probe/grpc_health_probe.py"  # k8s/probe/ copied to /app by the Dockerfile
REPO = Path(__file__).resolve().parents[2]
NAME = "app.kubernetes.io/name"


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def all_containers(deployment: dict) -> list[dict]:
    spec = pod_spec(deployment)
    return spec.get("initContainers", []) + spec["containers"]


def test_the_manifests_deploy_every_service_the_code_has_at_its_port():
    assert set(SERVICES) == set(config.SERVICES)
    assert PORTS == {name: int(addr.rsplit(":", 1)[1]) for name, addr in config.DEFAULT_ADDRS.items()}


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
        mtls = "SMVM_TLS_CERT" in {e["name"] for e in main["env"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if name == "gateway":
                assert main[probe]["httpGet"]["port"] == "http", (name, probe)
            elif mtls:  # kubelet's grpc probe cannot present a client certificate
                assert main[probe]["exec"]["command"][:3] == ["python", PROBE_IN_IMAGE, name], (name, probe)
                assert "grpc" not in main[probe] and main[probe]["timeoutSeconds"] >= 5, (name, probe)
                if probe != "startupProbe":  # a Python process per probe: keep its CPU cost small
                    assert main[probe]["periodSeconds"] >= 10, (name, probe)
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


# Who opens a channel to whom (services/gateway/app.py, services/orchestrator/pipeline.py), as the
# pod labels a NetworkPolicy admits. memory also admits operators' pods labelled smvm.io/memory-client.
CALLERS = {
    "orchestrator": {(NAME, "gateway")},
    "ingestion": {(NAME, "orchestrator"), (NAME, "gateway")},  # grounding imports through the gateway
    "personas": {(NAME, "orchestrator")},
    "competitors": {(NAME, "orchestrator")},
    "simulation": {(NAME, "orchestrator")},
    "analysis": {(NAME, "orchestrator")},
    "overwatch": {(NAME, "orchestrator"), (NAME, "gateway")},  # the audit trail
    "memory": {(NAME, "orchestrator"), ("smvm.io/memory-client", "true")},
}


def ingress_rules(policies: list[dict], service: str) -> list[dict]:
    return [r for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).get(NAME) == service
            for r in p["spec"].get("ingress", [])]


def callers(rule: dict) -> set[tuple[str, str]]:
    admitted = set()
    for peer in rule["from"]:
        assert set(peer) == {"podSelector"}, f"only pods of this namespace, by label: {peer}"
        ((label, value),) = peer["podSelector"]["matchLabels"].items()
        admitted.add((label, value))
    return admitted


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_expose_only_the_gateway_and_follow_the_call_graph(rendered, overlay):
    policies = list(by_kind(rendered[overlay], "NetworkPolicy").values())
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny and "ingress" not in deny[0]["spec"] and deny[0]["spec"]["policyTypes"] == ["Ingress"]

    gateway = ingress_rules(policies, "gateway")
    assert gateway and all("from" not in rule for rule in gateway)  # any source, gateway port only
    assert [p["port"] for rule in gateway for p in rule["ports"]] == [PORTS["gateway"]]
    assert set(CALLERS) | {"gateway"} == set(SERVICES)
    for service, expected in CALLERS.items():
        rules = ingress_rules(policies, service)
        assert rules, f"{service}: no ingress rule (unreachable)"
        admitted = set()
        for rule in rules:
            admitted |= callers(rule)
            assert [p["port"] for p in rule["ports"]] == [PORTS[service]], service
        assert admitted == expected, service


def egress_allows(policies: list[dict], labels: dict[str, str], port: int) -> bool:
    """Whether pods with `labels` may open TCP connections to `port` outside the cluster: true when no
    policy selecting them restricts egress, or when one of those policies has a rule admitting it."""
    selecting = [p for p in policies if "Egress" in p["spec"].get("policyTypes", [])
                 and p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()]
    if not selecting:
        return True
    for rule in (r for p in selecting for r in p["spec"].get("egress", [])):
        ports_ok = "ports" not in rule or any(q.get("port") in (port, None) for q in rule["ports"])
        to_ok = "to" not in rule or any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for peer in rule["to"])
        if ports_ok and to_ok:
            return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_orchestrator_can_reach_tractionbuild_and_the_database(rendered, overlay):
    """Callbacks to TractionBuild leave the orchestrator over HTTPS; PostgreSQL is outside the cluster."""
    policies = list(by_kind(rendered[overlay], "NetworkPolicy").values())
    assert egress_allows(policies, {NAME: "orchestrator"}, 443)
    for service in ("orchestrator", "memory", "overwatch"):
        assert egress_allows(policies, {NAME: service}, 5432), service
    # The check can fail: a default-deny egress policy without an exception blocks the callbacks.
    deny_egress = {"spec": {"podSelector": {}, "policyTypes": ["Egress"]}}
    assert not egress_allows(policies + [deny_egress], {NAME: "orchestrator"}, 443)
    https_out = {"spec": {"podSelector": {"matchLabels": {NAME: "orchestrator"}}, "policyTypes": ["Egress"],
                          "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}]}}
    assert egress_allows(policies + [deny_egress, https_out], {NAME: "orchestrator"}, 443)


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
                if env["name"] in SECRET_FILE_ENV:
                    secret_refs.add((env["name"], secret_volume_of(deployment, container, env["value"])))
                elif SECRET_ENV.search(env["name"]):
                    assert "value" not in env, f"{name}: {env['name']} has a literal value"
                    ref = env["valueFrom"]["secretKeyRef"]
                    secret_refs.add((env["name"], ref["name"]))
    assert {("SMVM_API_TOKENS", "smvm-api-tokens"), ("SMVM_DATABASE_URL", "smvm-database"),
            ("SMVM_WEBHOOK_SECRETS", "smvm-webhook"), ("SMVM_SERVICE_TOKEN", "smvm-service-token"),
            ("SMVM_TOKENS_FILE", "smvm-tokens")} <= secret_refs
    tls = by_kind(objects, "Ingress")["gateway"]["spec"]["tls"][0]
    assert tls["secretName"] == "smvm-tls"


def secret_volume_of(deployment: dict, container: dict, path: str) -> str:
    """The Secret whose volume `container` mounts at the directory holding `path` (fails otherwise)."""
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    for mount in container.get("volumeMounts", []):
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            assert mount.get("readOnly") is True and "subPath" not in mount, (container["name"], mount)
            return volumes[mount["name"]]["secret"]["secretName"]
    raise AssertionError(f"{container['name']}: {path} is not on a mounted volume")


def env_of(deployment: dict) -> dict[str, dict]:
    return {e["name"]: e for e in pod_spec(deployment)["containers"][0].get("env", [])}


def secret_key_ref(deployment: dict, variable: str) -> tuple[str, str] | None:
    ref = env_of(deployment).get(variable, {}).get("valueFrom", {}).get("secretKeyRef")
    return (ref["name"], ref["key"]) if ref else None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_reach_exactly_the_processes_that_need_them(rendered, overlay):
    deployments = by_kind(rendered[overlay], "Deployment")
    # Every gRPC server requires the service token and every caller (gateway, orchestrator) sends it.
    for name in SERVICES:
        assert secret_key_ref(deployments[name], "SMVM_SERVICE_TOKEN") == ("smvm-service-token", "token"), name
        assert env_of(deployments[name])["SMVM_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"].get("optional") is not True
    # The store: the orchestrator replicas, the memory service and overwatch (ledger, audit trail)
    # share one database; nobody else holds its credentials (the gateway reaches runs only through
    # the orchestrator, the audit trail only through overwatch).
    holders = {n for n, d in deployments.items() if "SMVM_DATABASE_URL" in env_of(d)}
    assert holders == {"orchestrator", "memory", "overwatch"}
    for name in holders:
        assert secret_key_ref(deployments[name], "SMVM_DATABASE_URL") == ("smvm-database", "url"), name
    # Scoped tokens are checked at the REST gateway, from a Secret mounted as a directory (no subPath),
    # so that a rotated Secret reaches the running pod and the gateway re-reads the file.
    gateway = deployments["gateway"]
    tokens_file = env_of(gateway)["SMVM_TOKENS_FILE"]["value"]
    assert secret_volume_of(gateway, pod_spec(gateway)["containers"][0], tokens_file) == "smvm-tokens"
    assert {n for n, d in deployments.items() if "SMVM_TOKENS_FILE" in env_of(d)} == {"gateway"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overwatch_keeps_its_ledger_in_the_database_and_no_volume(rendered, overlay):
    """Its ledger and audit trail are in the shared database: no volume of its own, any replica count,
    rolled one at a time, and a disruption budget that keeps one pod serving without blocking drains."""
    objects = rendered[overlay]
    overwatch = by_kind(objects, "Deployment")["overwatch"]
    assert overwatch["spec"]["strategy"] == {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    spec = pod_spec(overwatch)
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    runs_dir = env_map(objects)["SMVM_RUNS_DIR"]
    assert not [m for m in container["volumeMounts"] if m["mountPath"] == runs_dir]
    assert "smvm-overwatch" not in by_kind(objects, "PersistentVolumeClaim")
    assert secret_key_ref(overwatch, "SMVM_DATABASE_URL") == ("smvm-database", "url")
    (pdb,) = [p for p in by_kind(objects, "PodDisruptionBudget").values()
              if p["spec"]["selector"]["matchLabels"] == {NAME: "overwatch"}]
    assert "minAvailable" not in pdb["spec"] and pdb["spec"]["maxUnavailable"] == 1  # a drain may evict one


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_writers_of_the_run_volume_mount_it_at_the_runs_dir(rendered, overlay):
    """Run directories (orchestrator) and grounding imports under runs/imports (ingestion)."""
    objects = rendered[overlay]
    runs_dir = env_map(objects)["SMVM_RUNS_DIR"]
    for name in ("orchestrator", "ingestion"):
        deployment = by_kind(objects, "Deployment")[name]
        (container,) = pod_spec(deployment)["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == runs_dir]
        assert not mount.get("readOnly"), name
        volume = {v["name"]: v for v in pod_spec(deployment)["volumes"]}[mount["name"]]
        assert volume["persistentVolumeClaim"]["claimName"] == "smvm-runs", name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_memory_service_is_wired_like_every_service(rendered, overlay):
    objects = rendered[overlay]
    assert env_map(objects)["SMVM_MEMORY_ADDR"] == f"memory:{PORTS['memory']}"
    memory = by_kind(objects, "Deployment")["memory"]
    assert memory["spec"]["replicas"] == (2 if overlay == "prod" else 1)  # its state is the shared database
    assert by_kind(objects, "Service")["memory"]["spec"]["ports"][0]["port"] == PORTS["memory"]
    assert any(p["spec"]["selector"]["matchLabels"] == {NAME: "memory"}
               for p in by_kind(objects, "PodDisruptionBudget").values())


TLS_FILES = {"SMVM_TLS_CERT": "tls.crt", "SMVM_TLS_KEY": "tls.key", "SMVM_TLS_CA": "ca.crt"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mtls_is_on_in_prod_for_every_process_and_off_elsewhere(rendered, overlay):
    for name, deployment in by_kind(rendered[overlay], "Deployment").items():
        env = env_of(deployment)
        if overlay != "prod":
            assert not any(k.startswith("SMVM_TLS_") for k in env), (overlay, name)
            continue
        container = pod_spec(deployment)["containers"][0]
        for variable, key in TLS_FILES.items():  # servers and callers alike (the gateway only dials)
            path = env[variable]["value"]
            assert secret_volume_of(deployment, container, path) == "smvm-mesh-tls", (name, variable)
            assert Path(path).name == key, (name, variable)  # the keys cert-manager writes
        assert env["SMVM_TLS_SERVER_NAME"]["value"] == "smvm-mesh", name


def test_the_exec_probe_ships_in_the_image():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY k8s/probe/ k8s/probe/" in dockerfile and "WORKDIR /app" in dockerfile
    assert "!k8s/probe/" in (REPO / ".dockerignore").read_text().splitlines()
    assert (REPO / "k8s" / "probe" / Path(PROBE_IN_IMAGE).name).is_file()


def env_map(objects: list[dict]) -> dict[str, str]:
    (data,) = [c["data"] for n, c in by_kind(objects, "ConfigMap").items() if n.startswith("smvm-env")]
    return data


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
    for stage in ("ingestion", "personas", "competitors", "analysis"):
        assert replicas(prod, stage) == 2 and replicas(dev, stage) == 1 and replicas(test, stage) == 1
    assert replicas(prod, "overwatch") == 2 and replicas(dev, "overwatch") == replicas(test, "overwatch") == 1
    # Several orchestrator replicas share PostgreSQL and the ReadWriteMany run volume in prod, rolled
    # one at a time; elsewhere one replica on a ReadWriteOnce volume, replaced by Recreate.
    orchestrators = {o: by_kind(rendered[o], "Deployment")["orchestrator"]["spec"] for o in OVERLAYS}
    assert replicas(prod, "orchestrator") == 2 and orchestrators["prod"]["strategy"]["type"] == "RollingUpdate"
    for overlay in ("dev", "test"):
        assert replicas(rendered[overlay], "orchestrator") == 1
        assert orchestrators[overlay]["strategy"] == {"type": "Recreate"}
    hpa = {o: by_kind(rendered[o], "HorizontalPodAutoscaler")["simulation"]["spec"] for o in OVERLAYS}
    assert hpa["prod"]["minReplicas"] >= 3 and hpa["prod"]["maxReplicas"] > hpa["test"]["maxReplicas"] > hpa["dev"]["maxReplicas"]
    assert limits(prod, "simulation")["memory"] == "4Gi" and limits(dev, "simulation")["memory"] == "1Gi"
    assert by_kind(prod, "PersistentVolumeClaim")["smvm-runs"]["spec"]["accessModes"] == ["ReadWriteMany"]
    images = {o: pod_spec(by_kind(rendered[o], "Deployment")["gateway"])["containers"][0]["image"] for o in OVERLAYS}
    assert images["dev"].startswith("localhost:5000/") and images["prod"].startswith("registry.example.com/")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_webhook_keys_reach_only_the_orchestrator_that_sends_callbacks(rendered, overlay):
    deployments = by_kind(rendered[overlay], "Deployment")
    holders = {name for name, d in deployments.items() if "SMVM_WEBHOOK_SECRETS" in env_of(d)}
    assert holders == {"orchestrator"}
    assert secret_key_ref(deployments["orchestrator"], "SMVM_WEBHOOK_SECRETS") == ("smvm-webhook", "signing-keys")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_grpc_service_serves_metrics_to_monitoring_only(rendered, overlay):
    objects = rendered[overlay]
    for name, deployment in by_kind(objects, "Deployment").items():
        if name == "gateway":  # /metrics on its HTTP port
            continue
        container = pod_spec(deployment)["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports.get("metrics") == 9090, name
        assert env_of(deployment)[f"SMVM_{name.upper()}_METRICS_ADDR"]["value"] == "0.0.0.0:9090", name
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9090", name
    (policy,) = [p for p in by_kind(objects, "NetworkPolicy").values() if p["metadata"]["name"].endswith("metrics-from-monitoring")]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9090}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"smvm.io/monitoring": "true"}}}]
    selected = set(policy["spec"]["podSelector"]["matchExpressions"][0]["values"])
    assert selected == set(SERVICES) - {"gateway"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateways_and_orchestrators_share_one_status_cache_staleness_bound(rendered, overlay):
    # A gateway caching longer than the orchestrators' callback barrier waits would let a client
    # read a state older than a callback it received: the bound comes from the shared env map only.
    objects = rendered[overlay]
    assert int(env_map(objects)["SMVM_STATUS_CACHE_STALENESS_MS"]) > 0
    deployments = by_kind(objects, "Deployment")
    for name in ("gateway", "orchestrator"):
        for container in all_containers(deployments[name]):
            maps = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
            assert any(m.startswith("smvm-env") for m in maps), name
            assert "SMVM_STATUS_CACHE_STALENESS_MS" not in {e["name"] for e in container.get("env", [])}, name
