"""`python -m services.ingestion`: serve the ingestion stage until SIGTERM."""

from smvm.server import run_service
from services.ingestion.servicer import build_host

if __name__ == "__main__":
    run_service("ingestion", build_host)
