"""`python -m services.analysis`: serve the analysis stage until SIGTERM."""

from smvm.server import run_service
from services.analysis.servicer import build_host

if __name__ == "__main__":
    run_service("analysis", build_host)
