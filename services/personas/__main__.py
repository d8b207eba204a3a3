"""`python -m services.personas`: serve the personas stage until SIGTERM."""

from smvm.server import run_service
from services.personas.servicer import build_host

if __name__ == "__main__":
    run_service("personas", build_host)
