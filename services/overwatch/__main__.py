"""`python -m services.overwatch`: serve the overwatch stage until SIGTERM."""

from smvm.server import run_service
from services.overwatch.servicer import build_host

if __name__ == "__main__":
    run_service("overwatch", build_host)
