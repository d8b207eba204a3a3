"""`smvm up` starts every process and leaves none behind, whether stopped politely or killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from smvm.launcher import free_addresses

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def _processes_with(marker: str) -> list[int]:
    """PIDs whose environment carries `marker` (the test's unique runs dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def _start_launcher(tmp_path: Path) -> tuple[subprocess.Popen, str, str]:
    addresses = free_addresses()
    runs = str(tmp_path / "runs-launcher")
    env = dict(os.environ, SMVM_PROFILE="test", SMVM_RUNS_DIR=runs, SMVM_NUMBA_CACHE_DIR=str(REPO / ".numba_cache"))
    env.update({f"SMVM_{name.upper()}_ADDR": addr for name, addr in addresses.items()})
    launcher = subprocess.Popen(
        [sys.executable, "-m", "smvm.cli", "up", "--log-dir", str(tmp_path / "logs")],
        env=env, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )
    gateway = f"http://{addresses['gateway']}"
    deadline = time.monotonic() + 240
    while True:
        assert launcher.poll() is None, launcher.stderr.read().decode()
        try:
            if httpx.get(f"{gateway}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "mesh never became ready"
        time.sleep(0.3)
    return launcher, runs, gateway


def _wait_gone(marker: str, timeout_s: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_sigterm_stops_every_process_cleanly(tmp_path):
    launcher, runs, _ = _start_launcher(tmp_path)
    assert len(_processes_with(runs)) >= 9  # launcher + 6 stages + orchestrator + gateway
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(60) == 0
    assert _wait_gone(runs) == []


def test_killing_the_launcher_leaves_no_process_behind(tmp_path):
    launcher, runs, _ = _start_launcher(tmp_path)
    children = [pid for pid in _processes_with(runs) if pid != launcher.pid]
    assert len(children) >= 8
    launcher.kill()  # SIGKILL: the launcher gets no chance to clean up
    launcher.wait(10)
    assert _wait_gone(runs) == []
