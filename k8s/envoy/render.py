"""Render the Envoy front-proxy template with one values file (`make envoy`).

string.Template keeps the template readable as YAML; strictness lives here: a placeholder without a
value, or a value no placeholder uses, is an error (a typo must not silently fall back to a default).
`grpc_json_transcoder: false` removes the transcoder filter from the rendered config.
`orchestrator_mtls` is `false` (plaintext to the orchestrator: dev, test) or a mapping {cert_path,
key_path, ca_path, server_name} that gives the orchestrator cluster an upstream TLS context presenting
the mesh certificate (prod: the orchestrator requires a client certificate, k8s/components/mtls).

Usage: python k8s/envoy/render.py VALUES.yaml [...] --out-dir build/envoy
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "front-proxy.yaml.tmpl"
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
SWITCHES = ("grpc_json_transcoder",)  # values that select structure instead of filling a placeholder
MTLS = "orchestrator_mtls"
MTLS_KEYS = ("cert_path", "key_path", "ca_path", "server_name")
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


class RenderError(ValueError):
    """A values file that does not fit the template."""


def placeholders(template: string.Template) -> set[str]:
    return {m.group("named") or m.group("braced") for m in template.pattern.finditer(template.template)} - {None}


def render(values: dict, template_text: str | None = None) -> dict:
    """The Envoy bootstrap (as a dict) for `values`."""
    template = string.Template(template_text if template_text is not None else TEMPLATE.read_text())
    needed = placeholders(template)
    given = set(values) - set(SWITCHES) - {MTLS}
    if missing := sorted(needed - given):
        raise RenderError(f"values missing for placeholders: {', '.join(missing)}")
    if unused := sorted(given - needed):
        raise RenderError(f"values not used by the template: {', '.join(unused)}")
    for switch in SWITCHES:
        if not isinstance(values.get(switch), bool):
            raise RenderError(f"{switch}: expected true or false")
    mtls = values.get(MTLS)
    if mtls is not False and not (isinstance(mtls, dict) and sorted(mtls) == sorted(MTLS_KEYS)
                                  and all(isinstance(v, str) and v for v in mtls.values())):
        raise RenderError(f"{MTLS}: expected false or a mapping of {', '.join(MTLS_KEYS)} (non-empty strings)")
    bootstrap = yaml.safe_load(template.substitute({k: v for k, v in values.items() if k in needed}))
    if not values["grpc_json_transcoder"]:
        for listener in bootstrap["static_resources"]["listeners"]:
            for chain in listener["filter_chains"]:
                for network_filter in chain["filters"]:
                    config = network_filter["typed_config"]
                    config["http_filters"] = [f for f in config.get("http_filters", []) if f["name"] != TRANSCODER]
    if mtls:
        (orchestrator,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "orchestrator"]
        orchestrator["transport_socket"] = upstream_mtls(mtls)
    return bootstrap


def upstream_mtls(mtls: dict) -> dict:
    """Envoy presents the mesh certificate and checks the orchestrator's by the mesh name (smvm/tls.py)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS,
            "sni": mtls["server_name"],
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [{"certificate_chain": {"filename": mtls["cert_path"]},
                                      "private_key": {"filename": mtls["key_path"]}}],
                "validation_context": {
                    "trusted_ca": {"filename": mtls["ca_path"]},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": mtls["server_name"]}}],
                },
            },
        },
    }


def render_file(values_path: Path, out_dir: Path) -> Path:
    values = yaml.safe_load(values_path.read_text())
    if not isinstance(values, dict):
        raise RenderError(f"{values_path}: expected a mapping of values")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{values_path.stem}.yaml"
    header = f"# Rendered by k8s/envoy/render.py from {TEMPLATE.name} and {values_path.name}; do not edit.\n"
    out.write_text(header + yaml.safe_dump(render(values), sort_keys=False))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("values", nargs="+", type=Path)
    parser.add_argument("--out-dir", type=Path, default=Path("build/envoy"))
    args = parser.parse_args(argv)
    try:
        for values_path in args.values:
            print(render_file(values_path, args.out_dir))
    except RenderError as error:
        print(f"render.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
