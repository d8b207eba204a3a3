"""`python -m services.competitors`: serve the competitors stage until SIGTERM."""

from smvm.server import run_service
from services.competitors.servicer import build_host

if __name__ == "__main__":
    run_service("competitors", build_host)
