"""Envoy front proxy: rendered configs parse strictly against Envoy's API types, carry the resilience
settings we rely on, and reference a descriptor set that matches the protos."""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
import warnings
from pathlib import Path

import betterproto2
import pytest
import yaml
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[2]
VALUES = sorted((REPO / "k8s" / "envoy" / "values").glob("*.yaml"))
DESCRIPTOR = REPO / "build" / "smvm_descriptor.pb"
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"

# Importing the extension modules registers their types for google.protobuf.Any ("@type") parsing.
# (envoy_data_plane's generated code trips pydantic deprecation warnings at import; they are not ours.)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap
    import envoy_data_plane.envoy.extensions.filters.http.grpc_json_transcoder.v3  # noqa: F401
    import envoy_data_plane.envoy.extensions.filters.http.router.v3  # noqa: F401
    import envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3  # noqa: F401
    import envoy_data_plane.envoy.extensions.transport_sockets.tls.v3  # noqa: F401
    import envoy_data_plane.envoy.extensions.upstreams.http.v3  # noqa: F401


def load_renderer():
    spec = importlib.util.spec_from_file_location("smvm_envoy_render", REPO / "k8s" / "envoy" / "render.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render = load_renderer()


def values_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def parse_strict(config: dict, monkeypatch) -> Bootstrap:
    # betterproto2 re-cases keys ("consecutive_5xx" -> "consecutive_5_xx"); our configs use Envoy's
    # snake_case field names exactly, so compare them verbatim (camelCase keys then fail: stricter).
    monkeypatch.setattr(betterproto2, "safe_snake_case", lambda key: key)
    return Bootstrap.from_dict(config)


def http_manager(config: dict) -> dict:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    return hcm["typed_config"]


@pytest.mark.parametrize("values_path", VALUES, ids=lambda p: p.stem)
def test_rendered_config_parses_strictly_as_envoy_bootstrap(values_path, monkeypatch):
    config = render.render(values_of(values_path))
    bootstrap = parse_strict(config, monkeypatch)
    clusters = {c.name: c for c in bootstrap.static_resources.clusters}
    assert set(clusters) == {"gateway", "orchestrator"}
    values = values_of(values_path)
    assert clusters["orchestrator"].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == values["orchestrator_port"]
    filters = [f["name"] for f in http_manager(config)["http_filters"]]
    assert filters[-1] == "envoy.filters.http.router"
    assert (TRANSCODER in filters) == values["grpc_json_transcoder"]


@pytest.mark.parametrize("mutation", ["listener", "route", "cluster", "typed_config"])
def test_unknown_fields_fail_strict_parsing(mutation, monkeypatch):
    config = render.render(values_of(VALUES[0]))
    bad = copy.deepcopy(config)
    if mutation == "listener":
        bad["static_resources"]["listeners"][0]["bogus"] = 1
    elif mutation == "route":
        http_manager(bad)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["retry_polcy"] = {}
    elif mutation == "cluster":
        bad["static_resources"]["clusters"][0]["outlier_detection"]["consecutive_500"] = 5
    else:
        http_manager(bad)["stat_prefixx"] = "x"
    parse_strict(config, monkeypatch)
    with pytest.raises((KeyError, TypeError, ValueError)):
        parse_strict(bad, monkeypatch)


@pytest.mark.parametrize("values_path", VALUES, ids=lambda p: p.stem)
def test_routes_have_timeouts_retries_and_clusters_resilience(values_path):
    config = render.render(values_of(values_path))
    routes = http_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    assert routes, "no routes"
    for route in routes:
        action = route["route"]
        assert re.fullmatch(r"\d+(\.\d+)?s", str(action["timeout"])), route["name"]
        assert action["retry_policy"]["num_retries"] >= 1, route["name"]
    grpc_routes = [r for r in routes if "grpc" in r["match"]]
    assert grpc_routes and all(r["route"]["cluster"] == "orchestrator" for r in grpc_routes)
    writes = next(r for r in routes if r["name"] == "rest_writes")["route"]["retry_policy"]["retry_on"]
    assert "5xx" not in writes and "reset" not in writes  # a POST that reached the gateway is not replayed
    for cluster in config["static_resources"]["clusters"]:
        assert cluster["outlier_detection"]["consecutive_5xx"] >= 1, cluster["name"]
        thresholds = cluster["circuit_breakers"]["thresholds"][0]
        assert {"max_connections", "max_pending_requests", "max_requests", "max_retries"} <= set(thresholds)
    orchestrator = next(c for c in config["static_resources"]["clusters"] if c["name"] == "orchestrator")
    options = orchestrator["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]  # gRPC upstream needs HTTP/2


def test_transcoder_references_descriptor_set_with_validation_service():
    config = render.render(values_of(REPO / "k8s" / "envoy" / "values" / "dev.yaml"))
    (transcoder,) = [f for f in http_manager(config)["http_filters"] if f["name"] == TRANSCODER]
    typed = transcoder["typed_config"]
    assert typed["services"] == ["smvm.v1.ValidationService"]
    assert Path(typed["proto_descriptor"]).name == DESCRIPTOR.name


def test_renderer_rejects_missing_and_unused_values():
    values = values_of(VALUES[0])
    with pytest.raises(render.RenderError, match="grpc_timeout"):
        render.render({k: v for k, v in values.items() if k != "grpc_timeout"})
    with pytest.raises(render.RenderError, match="grpc_timout"):
        render.render({**values, "grpc_timout": "5s"})
    with pytest.raises(render.RenderError, match="grpc_json_transcoder"):
        render.render({**values, "grpc_json_transcoder": "yes"})


def test_renderer_cli_writes_one_file_per_values_file(tmp_path):
    assert render.main([str(p) for p in VALUES] + ["--out-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in VALUES)
    assert yaml.safe_load((tmp_path / VALUES[0].name).read_text()) == render.render(values_of(VALUES[0]))


def declared_rpcs() -> dict[str, set[str]]:
    """service -> rpc names, read from the .proto sources."""
    services: dict[str, set[str]] = {}
    for proto in (REPO / "protos" / "smvm" / "v1").glob("*.proto"):
        text = proto.read_text()
        for name, body in re.findall(r"service\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
            services[f"smvm.v1.{name}"] = set(re.findall(r"rpc\s+(\w+)\s*\(", body))
    return services


def described_rpcs(data: bytes) -> tuple[dict[str, set[str]], dict[str, str]]:
    """service -> rpc names and 'Service.Method' -> HTTP path (from google.api.http) in a descriptor set."""
    from google.api import annotations_pb2  # registers the google.api.http extension

    fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    services, http = {}, {}
    for file in fds.file:
        for service in file.service:
            full = f"{file.package}.{service.name}"
            services[full] = {m.name for m in service.method}
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                path = getattr(rule, rule.WhichOneof("pattern")) if rule.WhichOneof("pattern") else ""
                if path:
                    http[f"{full}.{method.name}"] = path
    return services, http


def test_descriptor_set_matches_the_protos(tmp_path):
    if not DESCRIPTOR.exists():
        pytest.fail(f"{DESCRIPTOR.relative_to(REPO)} missing: run `make proto` (it writes the descriptor set)")
    built, http = described_rpcs(DESCRIPTOR.read_bytes())
    declared = declared_rpcs()
    assert {k: v for k, v in built.items() if k.startswith("smvm.")} == declared
    assert "smvm.v1.ValidationService" in built and len(built["smvm.v1.ValidationService"]) >= 5
    assert http["smvm.v1.ValidationService.SubmitRun"] == "/api/v1/validation/runs"
    # And it is current: a fresh protoc run over protos/ describes the same services and routes.
    fresh = tmp_path / "fresh.pb"
    protos = sorted(str(p.relative_to(REPO / "protos")) for p in (REPO / "protos" / "smvm").rglob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(["protoc", f"-I{REPO / 'protos'}", f"-I{well_known}", "--include_imports", f"--descriptor_set_out={fresh}", *protos])
    assert rc == 0
    assert described_rpcs(fresh.read_bytes()) == (built, http)


def orchestrator_cluster(config: dict) -> dict:
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "orchestrator"]
    return cluster


def test_prod_envoy_dials_the_orchestrator_with_the_mesh_certificate(monkeypatch):
    """The prod overlay runs mTLS (k8s/components/mtls): Envoy must present the mesh certificate and
    check the same name the services check; dev stays plaintext like its overlay."""
    prod = render.render(values_of(REPO / "k8s" / "envoy" / "values" / "prod.yaml"))
    parse_strict(prod, monkeypatch)
    socket = orchestrator_cluster(prod)["transport_socket"]["typed_config"]
    assert socket["@type"].endswith("tls.v3.UpstreamTlsContext")
    component = (REPO / "k8s" / "components" / "mtls" / "kustomization.yaml").read_text()
    server_name = re.search(r"SMVM_TLS_SERVER_NAME, value: (\S+)\}", component).group(1)
    assert socket["sni"] == server_name
    context = socket["common_tls_context"]
    assert context["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": server_name}}]
    (pair,) = context["tls_certificates"]
    files = [pair["certificate_chain"]["filename"], pair["private_key"]["filename"],
             context["validation_context"]["trusted_ca"]["filename"]]
    assert [Path(f).name for f in files] == ["tls.crt", "tls.key", "ca.crt"]  # Secret smvm-mesh-tls's keys
    dev = render.render(values_of(REPO / "k8s" / "envoy" / "values" / "dev.yaml"))
    assert "transport_socket" not in orchestrator_cluster(dev)


def test_renderer_rejects_a_malformed_mtls_mapping():
    values = values_of(REPO / "k8s" / "envoy" / "values" / "prod.yaml")
    for bad in (True, {}, {**values["orchestrator_mtls"], "ca_path": ""},
                {k: v for k, v in values["orchestrator_mtls"].items() if k != "server_name"}):
        with pytest.raises(render.RenderError, match="orchestrator_mtls"):
            render.render({**values, "orchestrator_mtls": bad})
    with pytest.raises(render.RenderError, match="orchestrator_mtls"):
        render.render({k: v for k, v in values.items() if k != "orchestrator_mtls"})
