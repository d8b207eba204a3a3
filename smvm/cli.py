"""`smvm`: run the mesh and operate it through the REST gateway, as TractionBuild would.

    smvm up [--simulation-replicas N]       start the mesh in the foreground until Ctrl-C / SIGTERM
    smvm demo FILE [--import KIND=PATH ...] start the mesh, import grounding data through the gateway and
                                            reference it from FILE's idea (grounding_refs), submit FILE,
                                            wait, print the decision and the T0+3 gate, stop
    smvm submit FILE [--wait]               submit an idea (either request shape of the guide)
    smvm status ID | results ID | finalize ID | complete ID --results FILE
    smvm runs [--project-id P]              list runs
    smvm import FILE --kind K [--format F] [--local]
                                            import grounding data (K: van_westendorp | gabor_granger |
                                            competitors | market_size) through the gateway, or with
                                            --local straight into SMVM_RUNS_DIR/imports; prints the
                                            import id and the data-quality report
    smvm token create NAME --role R [--project P] [--expires-in 30d] | rotate NAME --new-name N [--overlap 7d] | revoke NAME | list
    smvm memory similar TEXT [--domain D] | competitors DOMAIN | history PROJECT | retention [--dry-run]
                                            query the memory service (gRPC, SMVM_MEMORY_ADDR)
    smvm deliveries [--state dead] [--run-id R]   callbacks to TractionBuild (dead letters with --state dead)
    smvm replay EVENT_ID                    put a dead callback back in the queue
    smvm sync-results [RUN_ID ...]          post completed runs' results to TractionBuild now

The client commands talk to SMVM_GATEWAY_URL (default http://127.0.0.1:8080) with SMVM_TOKEN
(default dev-admin-token, accepted by the dev profile).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from smvm import token_cli
from smvm.config import load_settings
from smvm.errors import SmvmError

TERMINAL = {"DECISION_READY", "COMPLETED", "FAILED", "TIMEOUT"}


class Client:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0):
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        body = response.json() if response.content else {}
        if response.status_code >= 400:
            raise SystemExit(f"HTTP {response.status_code}: {json.dumps(body)}")
        return body

    def submit(self, payload: dict) -> dict:
        return self._json(self.http.post("/api/v1/validation/runs", json=payload))

    def status(self, run_id: str) -> dict:
        return self._json(self.http.get(f"/api/v1/validation/{run_id}/status"))

    def results(self, run_id: str) -> dict:
        return self._json(self.http.get(f"/api/v1/validation/{run_id}/results"))

    def complete(self, run_id: str, results: dict) -> dict:
        return self._json(self.http.put(f"/api/v1/validation/{run_id}/complete", json={"results": results}))

    def finalize(self, run_id: str) -> dict:
        return self._json(self.http.post(f"/api/v1/validation/{run_id}/finalize", json={}))

    def runs(self, project_id: str | None) -> dict:
        params = {"project_id": project_id} if project_id else {}
        return self._json(self.http.get("/api/v1/validation/runs", params=params))

    def import_grounding(self, path: Path, kind: str, fmt: str = "") -> dict:
        body = {"kind": kind, "format": fmt, "source_name": path.name,
                "content": base64.b64encode(path.read_bytes()).decode("ascii")}
        return self._json(self.http.post("/api/v1/grounding/imports", json=body))
    def deliveries(self, state: str | None, run_id: str | None, limit: int | None) -> dict:
        params = {k: v for k, v in (("state", state), ("run_id", run_id), ("limit", limit)) if v}
        return self._json(self.http.get("/api/v1/admin/deliveries", params=params))

    def replay(self, event_id: str) -> dict:
        return self._json(self.http.post(f"/api/v1/admin/deliveries/{event_id}/replay"))

    def sync_results(self, run_ids: list[str]) -> dict:
        return self._json(self.http.post("/api/v1/admin/results-sync", json={"run_ids": run_ids}))

    def wait(self, run_id: str, timeout_s: float = 600.0, interval_s: float = 0.25) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(run_id)
            if status.get("status") in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise SystemExit(f"run {run_id} still {status.get('status')} after {timeout_s:.0f}s")
            time.sleep(interval_s)


def _client(args) -> Client:
    return Client(args.url, args.token)


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _summarise(results: dict) -> str:
    decision = results.get("decision", {})
    review = results.get("review", {})
    status = results.get("status", {})
    lines = [
        f"Decision: {decision.get('recommendation', '?')}  "
        f"(confidence {decision.get('confidence', 0):.2f}, composite {decision.get('composite_score', 0):.1f}/100)",
        f"Overwatch: {review.get('verdict', '?')}"
        + (f" - {', '.join(r.get('code', '') for r in review.get('reasons', []))}" if review.get("reasons") else ""),
    ]
    for criterion in decision.get("criteria", []):
        lines.append(
            f"  - {criterion.get('name')}: {criterion.get('score', 0):.0f} x {criterion.get('weight', 0):.2f}"
            f"  {criterion.get('evidence', '')}"
        )
    for step in decision.get("next_steps", [])[:3]:
        lines.append(f"  next: {step}")
    gate = decision.get("gate", {})
    if gate:
        lines.append(f"Gate (T0+3): {gate.get('gate_decision', '?')}")
        for criterion in gate.get("criteria", []):
            lines.append(f"  - {criterion.get('name')}: {'pass' if criterion.get('passed') else 'FAIL'}  "
                         f"{criterion.get('evidence', '')}")
    lines.append(f"Run directory: {status.get('run_directory', '?')}")
    return "\n".join(lines)


def cmd_up(args) -> int:
    from smvm.launcher import Mesh

    settings = load_settings()
    mesh = Mesh(settings, simulation_replicas=args.simulation_replicas, log_dir=args.log_dir)
    stop = {"now": False}

    def request_stop(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print("starting the SMVM mesh...", file=sys.stderr)
    mesh.start()
    print(f"SMVM mesh ready: gateway {mesh.gateway_url}, runs in {settings.runs_dir}", file=sys.stderr)
    try:
        while not stop["now"]:
            for key, proc in mesh.processes.items():
                if proc.poll() is not None:
                    print(f"{key} exited with code {proc.returncode}; stopping the mesh", file=sys.stderr)
                    stop["now"] = True
            time.sleep(0.2)
    finally:
        codes = mesh.stop()
        print(f"mesh stopped: {codes}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from smvm.launcher import Mesh

    settings = load_settings()
    payload = json.loads(Path(args.file).read_text())
    log_dir = Path(args.log_dir or "build/logs")
    print(f"starting the SMVM mesh (logs in {log_dir}/)...", file=sys.stderr)
    with Mesh(settings, log_dir=log_dir) as mesh:
        client = Client(mesh.gateway_url, args.token)
        for kind, path in args.imports:
            answer = client.import_grounding(path, kind)
            _reference_import(payload, answer["import_id"])
            report = answer.get("report", {})
            print(f"imported {path} as {kind}: {answer['import_id'][:12]} ({report.get('rows_accepted', 0)} of "
                  f"{report.get('rows_read', 0)} rows), referenced from the idea", file=sys.stderr)
        accepted = client.submit(payload)
        run_id = accepted["run_id"]
        print(f"submitted {args.file} as run {run_id}; waiting for the decision...", file=sys.stderr)
        status = client.wait(run_id)
        if status["status"] not in ("DECISION_READY", "COMPLETED"):
            print(f"run ended {status['status']}: {status.get('error')}", file=sys.stderr)
            return 1
        print(_summarise(client.results(run_id)))
    print("mesh stopped.", file=sys.stderr)
    return 0


def _import_arg(text: str) -> tuple[str, Path]:
    """KIND=PATH, PATH an existing file."""
    kind, sep, path = text.partition("=")
    if not sep or not kind or not path:
        raise argparse.ArgumentTypeError(f"expected KIND=PATH (e.g. competitors=examples/competitors.csv), got {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {path}")
    return kind, Path(path)


def _reference_import(payload: dict, import_id: str) -> None:
    """Add an import to the idea's grounding_refs, in whichever request shape the payload uses."""
    shape = "idea" if "idea" in payload and "business_idea" not in payload else "business_idea"
    payload.setdefault(shape, {}).setdefault("grounding_refs", []).append(import_id)


def cmd_submit(args) -> int:
    client = _client(args)
    payload = json.loads(Path(args.file).read_text())
    if args.project_id:
        payload["project_id"] = args.project_id
    if args.run_id:
        payload["run_id"] = args.run_id
    accepted = client.submit(payload)
    if not args.wait:
        _print(accepted)
        return 0
    status = client.wait(accepted["run_id"])
    _print(status)
    return 0 if status["status"] in ("DECISION_READY", "COMPLETED") else 1


def _import_local(path: Path, kind: str, fmt: str) -> dict:
    """The ImportGrounding code path in this process, into the configured runs root (no mesh needed)."""
    # Deferred: the other client commands need none of the service code.
    from google.protobuf import json_format

    from services.ingestion.import_store import ImportStore
    from services.ingestion.servicer import import_grounding
    from smvm.errors import InvalidArgument
    from smvm.v1 import ingestion_service_pb2

    request = ingestion_service_pb2.ImportGroundingRequest(kind=kind, format=fmt, content=path.read_bytes(),
                                                           source_name=path.name)
    try:
        answer = import_grounding(request, ImportStore(load_settings().runs_dir))
    except InvalidArgument as exc:
        raise SystemExit(f"import refused, nothing stored: {exc} ({exc.reason})") from None
    return json_format.MessageToDict(answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def cmd_import(args) -> int:
    path = Path(args.file)
    if args.local:
        answer = _import_local(path, args.kind, args.format or "")
    else:
        answer = _client(args).import_grounding(path, args.kind, args.format or "")
    _print(answer)
    report = answer.get("report", {})
    if report.get("quality_warning"):
        print(f"quality_warning: {'; '.join(w for w in report.get('warnings', []) if w.startswith('quality:'))}",
              file=sys.stderr)
    return 0


def cmd_memory(args) -> int:
    """The memory service's queries, printed as JSON, over the mesh's own channel (service token, mTLS)."""
    import asyncio

    import grpc
    from google.protobuf import json_format

    from smvm.channels import ClientSecurity, open_channel
    from smvm.v1 import memory_service_pb2 as pb, memory_service_pb2_grpc as pb_grpc

    async def query():
        async with open_channel(args.memory_addr, ClientSecurity.from_settings(load_settings())) as channel:
            stub = pb_grpc.MemoryServiceStub(channel)
            if args.query == "similar":
                return await stub.FindSimilarIdeas(pb.FindSimilarIdeasRequest(text=args.text, domain=args.domain, limit=args.limit), timeout=30)
            if args.query == "competitors":
                return await stub.ListKnownCompetitors(pb.ListKnownCompetitorsRequest(domain=args.domain), timeout=30)
            if args.query == "history":
                return await stub.GetDecisionHistory(pb.GetDecisionHistoryRequest(project_id=args.project_id), timeout=30)
            return await stub.ApplyRetention(pb.ApplyRetentionRequest(dry_run=args.dry_run), timeout=60)

    try:
        response = asyncio.run(query())
    except grpc.RpcError as err:
        raise SystemExit(f"{err.code().name}: {err.details()}") from None
    _print(json_format.MessageToDict(response, preserving_proto_field_name=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smvm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("SMVM_GATEWAY_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--token", default=os.environ.get("SMVM_TOKEN", "dev-admin-token"))
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the mesh in the foreground")
    up.add_argument("--simulation-replicas", type=int, default=1)
    up.add_argument("--log-dir", type=Path, default=None, help="write service logs here instead of stderr")
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", help="start the mesh, validate FILE, print the decision, stop")
    demo.add_argument("file")
    demo.add_argument("--log-dir", default=None)
    demo.add_argument("--import", dest="imports", action="append", default=[], type=_import_arg, metavar="KIND=PATH",
                      help="import PATH as KIND (van_westendorp | gabor_granger | competitors | market_size) "
                           "through the gateway and reference it from the idea; repeatable")
    demo.set_defaults(func=cmd_demo)

    submit = sub.add_parser("submit", help="submit an idea")
    submit.add_argument("file")
    submit.add_argument("--project-id")
    submit.add_argument("--run-id")
    submit.add_argument("--wait", action="store_true")
    submit.set_defaults(func=cmd_submit)

    for name, method in (("status", "status"), ("results", "results"), ("finalize", "finalize")):
        p = sub.add_parser(name, help=f"{name} of a run")
        p.add_argument("run_id")
        p.set_defaults(func=lambda a, m=method: _print(getattr(_client(a), m)(a.run_id)) or 0)

    complete = sub.add_parser("complete", help="store final results for a run")
    complete.add_argument("run_id")
    complete.add_argument("--results", required=True, help="JSON file")
    complete.set_defaults(func=lambda a: _print(_client(a).complete(a.run_id, json.loads(Path(a.results).read_text()))) or 0)

    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--project-id")
    runs.set_defaults(func=lambda a: _print(_client(a).runs(a.project_id)) or 0)

    imp = sub.add_parser("import", help="import grounding data (survey, competitor list, market sizes)")
    imp.add_argument("file")
    imp.add_argument("--kind", required=True, choices=("van_westendorp", "gabor_granger", "competitors", "market_size"))
    imp.add_argument("--format", choices=("csv", "json", "jsonl"), help="default: from the file's extension")
    imp.add_argument("--local", action="store_true", help="import in this process into SMVM_RUNS_DIR (no gateway)")
    imp.set_defaults(func=cmd_import)
    token_cli.add_commands(sub)
    memory = sub.add_parser("memory", help="query the memory service (knowledge graph across runs)")
    memory.add_argument("--memory-addr", default=os.environ.get("SMVM_MEMORY_ADDR", "127.0.0.1:50058"))
    queries = memory.add_subparsers(dest="query", required=True)
    similar = queries.add_parser("similar", help="past ideas most similar to TEXT")
    similar.add_argument("text")
    similar.add_argument("--domain", default="")
    similar.add_argument("--limit", type=int, default=5)
    queries.add_parser("competitors", help="competitors known in DOMAIN").add_argument("domain")
    queries.add_parser("history", help="a project's decisions").add_argument("project_id")
    queries.add_parser("retention", help="apply the retention rules now").add_argument("--dry-run", action="store_true")
    memory.set_defaults(func=cmd_memory)
    deliveries = sub.add_parser("deliveries", help="list callbacks to TractionBuild")
    deliveries.add_argument("--state", choices=("pending", "delivered", "dead"))
    deliveries.add_argument("--run-id")
    deliveries.add_argument("--limit", type=int)
    deliveries.set_defaults(func=lambda a: _print(_client(a).deliveries(a.state, a.run_id, a.limit)) or 0)

    replay = sub.add_parser("replay", help="replay a dead (or delivered) callback")
    replay.add_argument("event_id")
    replay.set_defaults(func=lambda a: _print(_client(a).replay(a.event_id)) or 0)

    sync = sub.add_parser("sync-results", help="post completed runs' results to TractionBuild now")
    sync.add_argument("run_ids", nargs="*")
    sync.set_defaults(func=lambda a: _print(_client(a).sync_results(a.run_ids)) or 0)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SmvmError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
