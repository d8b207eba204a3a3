"""What every benchmark script shares: a local mesh on free ports, percentiles, the machine line, and
the results files each run appends a dated row to (benchmarks/results/<name>.tsv)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

BENCH_TOKEN = "bench-token"


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) without needing numpy here."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs, {cpu}, Python {platform.python_version()}"


def append_row(name: str, columns: dict[str, object]) -> Path:
    """Append one dated row to benchmarks/results/<name>.tsv. The header is written on first use,
    and again before a row whose columns differ from the last header's (a benchmark that measures
    more than it did), so every row sits under the header that names its columns."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.tsv"
    row = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(), **columns}
    header = "\t".join(row)
    headers = [line for line in path.read_text().splitlines() if line.startswith("date\t")] if path.exists() else []
    with path.open("a") as f:
        if not headers or headers[-1] != header:
            f.write(header + "\n")
        f.write("\t".join(str(v) for v in row.values()) + "\n")
    return path


def require_tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is missing: `apt-get install -y {package}` (make bench installs it)")
    return found


@contextlib.contextmanager
def local_mesh(simulation_replicas: int = 1, extra_env: dict[str, str] | None = None, **overrides) -> Iterator[object]:
    """Every service as its own process on free loopback ports, a throwaway runs dir; stopped on exit.
    `extra_env` adds environment variables of every process (e.g. metrics listen addresses)."""
    from smvm.config import Settings
    from smvm.launcher import Mesh, free_addresses

    with tempfile.TemporaryDirectory(prefix="smvm-bench-") as tmp:
        settings = Settings(
            profile="test", runs_dir=Path(tmp) / "runs", api_tokens=BENCH_TOKEN, numba_cache_dir=REPO / ".numba_cache",
            log_level="WARNING", **overrides,
        )
        mesh = Mesh(
            settings, addresses=free_addresses(simulation_replicas), log_dir=Path(tmp) / "logs",
            extra_env={"SMVM_PROFILE": "test", "SMVM_LOG_LEVEL": "WARNING", **(extra_env or {})},
        )
        mesh.start(timeout_s=300)
        try:
            yield mesh
        finally:
            mesh.stop()


def run(cmd: list[str], timeout: float) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def submit_and_wait(client, payload: dict, poll_s: float = 0.01) -> tuple[str, float, float]:
    """POST /runs through the gateway, then poll its status until the run is decided.

    Returns (run_id, seconds until the POST was answered, seconds until DECISION_READY), both from
    just before the POST; exits naming the answer when the run is refused or ends without a decision."""
    started = time.perf_counter()
    response = client.post("/api/v1/validation/runs", json=payload)
    accepted = time.perf_counter()
    if response.status_code != 201:
        raise SystemExit(f"POST /runs answered {response.status_code}: {response.text}")
    run_id = response.json()["run_id"]
    while True:
        status = client.get(f"/api/v1/validation/{run_id}/status").json()["status"]
        if status in ("DECISION_READY", "COMPLETED"):
            return run_id, accepted - started, time.perf_counter() - started
        if status in ("FAILED", "TIMEOUT"):
            raise SystemExit(f"run {run_id} ended {status}")
        time.sleep(poll_s)
