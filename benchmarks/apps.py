"""The HTTP servers the gateway benchmark measures, one uvicorn worker each, like the real gateway.

    python benchmarks/apps.py bare --port P          a bare FastAPI app: GET /status answers a constant
                                                     JSON body of a real status's size (the HTTP-only floor)
    python benchmarks/apps.py gateway --port P       the real gateway app (services.gateway.app) with rate
                                                     limits off, since a load test would only see 429s
                                                     (settings, e.g. SMVM_ORCHESTRATOR_ADDR, from the env)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STATUS_BODY = {
    "run_id": "RUN-BENCH", "validation_id": "VAL-RUN-BENCH", "project_id": "PROJ-BENCH", "status": "DECISION_READY",
    "current_stage": "overwatch", "progress": 1.0,
    "stage_results": {s: "completed" for s in ("ingestion", "personas", "competitors", "simulation", "analysis", "overwatch")},
    "created_at": "2026-11-25T06:00:00Z", "updated_at": "2026-11-25T06:00:01Z",
    "estimated_completion": "2026-11-25T06:02:00Z", "run_directory": "runs/PROJ-BENCH/validation/RUN-BENCH",
    "correlation_id": "0123456789abcdef0123456789abcdef",
}


def bare_app():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/status")
    async def status() -> dict:
        return STATUS_BODY

    return app


def gateway_app():
    from smvm.config import load_settings
    from services.gateway.app import create_app

    return create_app(load_settings(), rate_limits_per_minute={})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("app", choices=("bare", "gateway"))
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    app = bare_app() if args.app == "bare" else gateway_app()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, server_header=False)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--print-status-body":
        print(json.dumps(STATUS_BODY))
    else:
        main()
