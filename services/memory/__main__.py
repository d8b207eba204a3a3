"""`python -m services.memory`: serve the memory service (the knowledge graph) until SIGTERM."""

from smvm.server import run_service
from services.memory.servicer import build_host

if __name__ == "__main__":
    run_service("memory", build_host)
