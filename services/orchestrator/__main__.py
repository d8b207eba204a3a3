"""`python -m services.orchestrator`: serve the orchestrator stage until SIGTERM."""

from smvm.server import run_service
from services.orchestrator.servicer import build_host

if __name__ == "__main__":
    run_service("orchestrator", build_host)
