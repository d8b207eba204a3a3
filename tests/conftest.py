"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# One numba cache for every test process, so each compiles at most once per machine.
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
os.environ.setdefault("SMVM_NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
# The launcher forks (fork + exec, for PR_SET_PDEATHSIG) from this process, which has run grpc
# servers and TLS channels by then; grpc's fork handlers then abort the child before its exec
# (SIGABRT, "epoll_wait error: Bad file descriptor"). The children exec at once and need no grpc
# state from here, so the handlers are turned off before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def faults(monkeypatch):
    """Set this process's SMVM_FAULT_INJECTION (read as a real service reads it) for one test."""
    from smvm.config import load_settings

    def set_plan(text: str) -> None:
        monkeypatch.setenv("SMVM_FAULT_INJECTION", text)
        load_settings.cache_clear()

    yield set_plan
    monkeypatch.delenv("SMVM_FAULT_INJECTION", raising=False)
    load_settings.cache_clear()
