"""The protos are the schema of record: lint-clean, one service per file, REST paths as the guide says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from google.api import annotations_pb2

from smvm.v1 import validation_service_pb2

REPO = Path(__file__).resolve().parents[2]


def _buf() -> str:
    return shutil.which("buf", path=str(Path(sys.executable).parent)) or "buf"


def test_buf_lint_is_clean():
    result = subprocess.run([_buf(), "lint"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_service_per_file_in_package_smvm_v1():
    for path in (REPO / "protos/smvm/v1").glob("*.proto"):
        text = path.read_text()
        assert "package smvm.v1;" in text, path
        services = [line for line in text.splitlines() if line.startswith("service ")]
        assert len(services) <= 1, (path, services)
        if path.name.endswith("_service.proto"):
            assert len(services) == 1, path


def test_validation_service_http_annotations_match_the_integration_guide():
    service = validation_service_pb2.DESCRIPTOR.services_by_name["ValidationService"]
    routes = {}
    for method in service.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        routes[method.name] = (verb, getattr(rule, verb), rule.body)
    assert routes == {
        "SubmitRun": ("post", "/api/v1/validation/runs", "*"),
        "GetRunStatus": ("get", "/api/v1/validation/{run_id}/status", ""),
        "GetRunResults": ("get", "/api/v1/validation/{run_id}/results", ""),
        "CompleteRun": ("put", "/api/v1/validation/{run_id}/complete", "*"),
        "FinalizeRun": ("post", "/api/v1/validation/{run_id}/finalize", "*"),
        "ListRuns": ("get", "/api/v1/validation/runs", ""),
        "GetRunReport": ("get", "/api/v1/validation/{run_id}/report", ""),
    }


def test_descriptor_set_for_envoy_is_generated_with_the_services():
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString((REPO / "build/smvm_descriptor.pb").read_bytes())
    names = {f.name for f in fds.file}
    assert "smvm/v1/validation_service.proto" in names and "google/api/http.proto" in names
