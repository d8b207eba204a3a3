"""Gateway throughput and latency at fixed concurrency on loopback, with the per-hop cost.

In one run, against one local mesh (every service its own process):
  bare-http    a bare FastAPI app answering a constant status-sized JSON (benchmarks/apps.py): the
               floor of HTTP + FastAPI + uvicorn on this machine
  grpc-status  GetRunStatus straight to the orchestrator over gRPC (h2load, framed message): the
               gRPC hop and the orchestrator alone
  GET /status  the real gateway, rate limits off for the measurement, its status cache on (the
               default: answered from memory while synced with the orchestrator's run watch)
  GET /status nocache  the same gateway with SMVM_STATUS_CACHE=off (REST -> gRPC -> orchestrator
               for every request), a second process over the same orchestrator
  POST /runs   the real gateway accepting submissions (each starts a pipeline), lower concurrency
HTTP load from wrk, gRPC load from h2load (Debian packages wrk and nghttp2-client; `make bench`
installs them). Prints a table, the gateway's share of the bare rate and the per-hop split of the
median latency, and appends a dated row to benchmarks/results/gateway_load.tsv.

    .venv/bin/python benchmarks/gateway_load.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smvm.launcher import free_port
from common import BENCH_TOKEN, REPO, append_row, local_mesh, machine, percentile, require_tool, run

TARGET_SHARE = 0.60
TARGET_P99_MS = 50.0


def wait_http(url: str, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} never answered")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, seconds: int, connections: int, script: Path | None = None) -> dict:
    cmd = [require_tool("wrk", "wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
           "-H", f"Authorization: Bearer {BENCH_TOKEN}"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = run(cmd + [url], timeout=seconds + 60)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    requests = re.search(r"(\d+) requests in", out)
    return {"rps": rate, "p50": lat["50"], "p99": lat["99"], "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else "", "requests": int(requests.group(1)) if requests else 0}


def status_cache_hits(client, base_url: str) -> float:
    """The gateway's GET /status answers from its status cache so far (smvm_status_cache_lookups_total)."""
    for line in client.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith('smvm_status_cache_lookups_total{outcome="hit"}'):
            return float(line.split()[-1])
    return 0.0


def h2load_grpc(address: str, path: str, message: bytes, seconds: int, connections: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data, log = Path(tmp) / "request.bin", Path(tmp) / "requests.log"
        data.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)  # gRPC length-prefixed frame
        out = run([require_tool("h2load", "nghttp2-client"), f"--duration={seconds}", "--warm-up-time=1",
                   f"-c{connections}", "-m1", "-t1", f"--data={data}", f"--log-file={log}",
                   "-H", "content-type: application/grpc", "-H", "te: trailers",
                   f"http://{address}{path}"], timeout=seconds + 60)
        durations = [int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines() if line.strip()]
    rate = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    failed = int(re.search(r"(\d+) failed", out).group(1))
    return {"rps": rate, "p50": percentile(durations, 50), "p99": percentile(durations, 99), "non2xx": failed, "socket_errors": ""}


def grpc_status_ok(address: str, run_id: str) -> None:
    """h2load checks only HTTP status: check that the same call really answers grpc-status OK."""
    import grpc

    from smvm.v1 import validation_service_pb2 as vpb, validation_service_pb2_grpc as vgrpc

    with grpc.insecure_channel(address) as channel:
        vgrpc.ValidationServiceStub(channel).GetRunStatus(vpb.GetRunStatusRequest(run_id=run_id), timeout=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--post-connections", type=int, default=4)
    args = parser.parse_args()

    import httpx

    from smvm.v1 import validation_service_pb2 as vpb

    payload = json.loads((REPO / "examples" / "idea.json").read_text())
    payload.pop("run_id", None)
    payload["configuration"]["simulation_iterations"] = 200  # POST load measures acceptance, not simulation
    results: dict[str, dict] = {}
    with local_mesh() as mesh:
        env = dict(os.environ, SMVM_PROFILE="test", SMVM_API_TOKENS=BENCH_TOKEN, SMVM_LOG_LEVEL="WARNING",
                   SMVM_ORCHESTRATOR_ADDR=mesh.addresses["orchestrator"])
        ports = {"bare": free_port(), "gateway": free_port(), "nocache": free_port()}
        apps = {"bare": "bare", "gateway": "gateway", "nocache": "gateway"}
        servers = [subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "apps.py"), apps[name], "--port", str(port)],
                                    env=dict(env, SMVM_STATUS_CACHE="off" if name == "nocache" else "on"),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for name, port in ports.items()]
        try:
            wait_http(f"http://127.0.0.1:{ports['bare']}/status")
            wait_http(f"http://127.0.0.1:{ports['gateway']}/healthz")
            wait_http(f"http://127.0.0.1:{ports['nocache']}/healthz")
            with httpx.Client(headers={"Authorization": f"Bearer {BENCH_TOKEN}"}, timeout=30) as client:
                run_id = client.post(f"{mesh.gateway_url}/api/v1/validation/runs", json=payload).json()["run_id"]
                status_path = f"/api/v1/validation/{run_id}/status"
                for name in ("gateway", "nocache"):
                    assert client.get(f"http://127.0.0.1:{ports[name]}{status_path}").status_code == 200
                hits_before = status_cache_hits(client, f"http://127.0.0.1:{ports['gateway']}")
            grpc_status_ok(mesh.addresses["orchestrator"], run_id)
            results["bare-http"] = wrk(f"http://127.0.0.1:{ports['bare']}/status", args.seconds, args.connections)
            results["grpc-status"] = h2load_grpc(
                mesh.addresses["orchestrator"], "/smvm.v1.ValidationService/GetRunStatus",
                vpb.GetRunStatusRequest(run_id=run_id).SerializeToString(), args.seconds, args.connections)
            results["GET /status"] = wrk(f"http://127.0.0.1:{ports['gateway']}{status_path}", args.seconds, args.connections)
            with httpx.Client(timeout=30) as client:
                hits = status_cache_hits(client, f"http://127.0.0.1:{ports['gateway']}") - hits_before
            results["GET /status"]["hit_share"] = hits / max(1.0, results["GET /status"]["requests"])
            results["GET /status nocache"] = wrk(f"http://127.0.0.1:{ports['nocache']}{status_path}", args.seconds,
                                                 args.connections)
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
                lua.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = [[{json.dumps(payload)}]]\n")
            try:
                results["POST /runs"] = wrk(f"http://127.0.0.1:{ports['gateway']}/api/v1/validation/runs",
                                            max(3, args.seconds // 2), args.post_connections, Path(lua.name))
            finally:
                os.unlink(lua.name)
        finally:
            for server in servers:
                server.terminate()
                server.wait(10)

    share = results["GET /status"]["rps"] / results["bare-http"]["rps"]
    share_nocache = results["GET /status nocache"]["rps"] / results["bare-http"]["rps"]
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}; load generator on the same 2 cores as the servers")
    print(f"{'endpoint':21}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in results.items():
        conns = args.post_connections if name == "POST /runs" else args.connections
        print(f"{name:21}{conns:>6}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['non2xx']:>8}")
    g, b, c = results["GET /status"], results["bare-http"], results["grpc-status"]
    n = results["GET /status nocache"]
    print(f"per hop at the median: HTTP+FastAPI {b['p50']:.2f} ms (bare), gRPC+orchestrator {c['p50']:.2f} ms (bare), "
          f"gateway end to end {n['p50']:.2f} ms without its status cache, {g['p50']:.2f} ms with it "
          f"({g['hit_share']:.0%} of its answers from the cache)")
    verdict_share = "meets" if share >= TARGET_SHARE else "MISSES"
    verdict_p99 = "meets" if g["p99"] < TARGET_P99_MS else "MISSES"
    path = append_row("gateway_load", {
        "seconds": args.seconds, "connections": args.connections,
        **{f"{k.replace(' ', '').replace('/', '_')}_{m}": round(v[m], 2) for k, v in results.items() for m in ("rps", "p50", "p99")},
        "status_share_of_bare": round(share, 3), "status_nocache_share_of_bare": round(share_nocache, 3),
        "status_cache_hit_share": round(g["hit_share"], 3), "load_average": round(os.getloadavg()[0], 1),
    })
    print(f"gateway: GET /status at {share:.0%} of the bare FastAPI rate ({verdict_share} >= {TARGET_SHARE:.0%}), "
          f"p99 {g['p99']:.1f} ms ({verdict_p99} < {TARGET_P99_MS:.0f} ms); without its status cache "
          f"{share_nocache:.0%}, p99 {n['p99']:.1f} ms; row appended to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
