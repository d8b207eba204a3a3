"""A TractionBuild double: the integration guide's own webhook handler, gate check and persistence
endpoint, made to run, served by uvicorn on a loopback port.

The functions `handle_validation_status_update` and `check_validation_gate` are the guide's code
(T0+3, "Webhook Handler Code" / "Gate Check Code") with only their storage helpers filled in; the
routes around them do what a real receiver must per Standard Webhooks: verify the signature (401
otherwise), de-duplicate on `webhook-id`, and ignore an update older than one already applied.
The server can be stopped and started again on the same port to play an outage.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.orchestrator.callbacks import signing
from smvm.launcher import free_port


@dataclass
class TractionBuildState:
    """What TractionBuild keeps: everything the guide's helpers read and write."""

    run_status: dict[str, dict] = field(default_factory=dict)
    decisions: dict[str, dict] = field(default_factory=dict)
    last_sequence: dict[str, int] = field(default_factory=dict)
    pipeline: dict[str, dict] = field(default_factory=dict)
    seen_event_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    deliveries: list[dict] = field(default_factory=list)  # every accepted message (after de-duplication)
    attempts: list[str] = field(default_factory=list)  # webhook-id of every request that reached us
    alerts: list[dict] = field(default_factory=list)
    persisted: dict[str, dict] = field(default_factory=dict)  # run_id -> persistence payload
    rejected_signatures: int = 0
    # Answer this status to the next N update / alert / results requests (0 = behave).
    fail_next: dict[str, tuple[int, int, dict]] = field(default_factory=dict)
    # Process the next N messages, then answer 500 as if the acknowledgement were lost on the way.
    lose_ack_next: int = 0
    # Seconds every update takes to answer (a slow receiver).
    delay_s: float = 0.0
    # Statuses to answer the next update requests with, in turn (after the signature check).
    fail_sequence: list[int] = field(default_factory=list)
    # When set, every accepted update is followed at once by GET {read_back_url}/api/v1/validation/
    # {run_id}/status (bearer read_back_token), as a client that acts on callbacks would; each
    # (update payload, HTTP status, body) is kept in read_backs.
    read_back_url: str = ""
    read_back_token: str = ""
    read_backs: list[tuple[dict, int, dict]] = field(default_factory=list)

    def updates_for(self, run_id: str) -> list[dict]:
        return [d["payload"] for d in self.deliveries if d["path"] == "update" and d["payload"]["run_id"] == run_id]

    def alerts_for(self, run_id: str) -> list[dict]:
        return [a for a in self.alerts if a["run_id"] == run_id]


def build_app(state: TractionBuildState, secret: str) -> FastAPI:
    app = FastAPI()

    # ------------------------------------------------------------ the guide's storage helpers
    async def update_run_status(run_id: str, status_update: dict) -> None:
        state.run_status[run_id] = status_update

    async def get_run_status(run_id: str) -> dict:
        return state.run_status.get(run_id, {"status": "UNKNOWN"})

    async def get_validation_decision(run_id: str) -> dict:
        return state.decisions[run_id]

    async def block_pipeline_progression(run_id: str, reason: str) -> None:
        state.pipeline[run_id] = {"blocked": True, "reason": reason}

    async def update_pipeline_requirements(run_id: str, requirements: list) -> None:
        state.pipeline[run_id] = {"blocked": False, "requirements": list(requirements)}

    async def allow_pipeline_progression(run_id: str) -> None:
        state.pipeline[run_id] = {"blocked": False}

    # ------------------------------------------------------------ the guide's webhook handler (verbatim body)
    async def handle_validation_status_update(run_id: str, webhook_data: dict):
        """
        Handle SMVM validation status updates
        """
        # Update local status tracking
        status_update = {
            "run_id": run_id,
            "status": webhook_data.get("status"),
            "timestamp": webhook_data.get("timestamp"),
            "step_completed": webhook_data.get("step_name"),
            "progress_percentage": webhook_data.get("progress", 0),
            "estimated_completion": webhook_data.get("estimated_completion")
        }

        # Store status update
        await update_run_status(run_id, status_update)

        # Check if decision is ready
        if webhook_data.get("status") == "DECISION_READY":
            decision = webhook_data.get("decision", {})
            recommendation = decision.get("recommendation")

            if recommendation == "KILL":
                # Block pipeline progression
                await block_pipeline_progression(run_id, "SMVM validation resulted in KILL decision")
            elif recommendation == "PIVOT":
                # Allow progression with pivot requirements
                await update_pipeline_requirements(run_id, decision.get("critical_success_factors", []))
            else:  # GO
                # Allow normal progression
                await allow_pipeline_progression(run_id)

        return {"status": "acknowledged"}

    # ------------------------------------------------------------ the guide's gate check (verbatim body)
    async def check_validation_gate(run_id: str) -> dict:
        """
        Check if validation gate allows progression
        """
        # Get current validation status
        status = await get_run_status(run_id)

        if status["status"] == "COMPLETED":
            decision = await get_validation_decision(run_id)

            return {
                "can_progress": decision["recommendation"] in ["GO", "PIVOT"],
                "recommendation": decision["recommendation"],
                "confidence": decision["confidence"],
                "requirements": decision.get("critical_success_factors", []),
                "block_reason": "SMVM validation decision" if decision["recommendation"] == "KILL" else None
            }
        elif status["status"] == "FAILED":
            return {
                "can_progress": False,
                "block_reason": "SMVM validation failed",
                "error_details": status.get("error")
            }
        else:
            # Still running
            return {
                "can_progress": False,
                "block_reason": "SMVM validation in progress",
                "estimated_completion": status.get("estimated_completion")
            }

    app.state.check_validation_gate = check_validation_gate

    # ------------------------------------------------------------ receiving (signature, de-duplication)
    def _planned_failure(kind: str) -> JSONResponse | None:
        if kind == "update" and state.fail_sequence:
            return JSONResponse({"error": "planned failure"}, status_code=state.fail_sequence.pop(0))
        count, status, headers = state.fail_next.get(kind, (0, 0, {}))
        if count <= 0:
            return None
        state.fail_next[kind] = (count - 1, status, headers)
        return JSONResponse({"error": "planned failure"}, status_code=status, headers=headers)

    async def _receive(request: Request, kind: str) -> tuple[dict | None, JSONResponse | None]:
        body = await request.body()
        state.attempts.append(request.headers.get(signing.ID_HEADER, ""))
        try:
            event_id = signing.verify(secret, dict(request.headers), body)
        except signing.SignatureError as exc:
            state.rejected_signatures += 1
            return None, JSONResponse({"error": str(exc)}, status_code=401)
        if (planned := _planned_failure(kind)) is not None:
            return None, planned
        if event_id in state.seen_event_ids:
            state.duplicates += 1
            return None, JSONResponse({"status": "duplicate"})
        state.seen_event_ids.add(event_id)
        payload = await request.json()
        state.deliveries.append({"path": kind, "event_id": event_id, "payload": payload,
                                 "correlation_id": request.headers.get("x-correlation-id", ""),
                                 "authorization": request.headers.get("authorization", ""),
                                 "received_at": time.time()})
        return payload, None

    @app.post("/tb/validation/update")
    async def validation_update(request: Request):
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        payload, refusal = await _receive(request, "update")
        if refusal is not None:
            return refusal
        run_id = payload["run_id"]
        if payload.get("sequence", 0) < state.last_sequence.get(run_id, 0):
            return {"status": "stale"}  # an older update arriving after a newer one
        state.last_sequence[run_id] = payload.get("sequence", 0)
        if "decision" in payload:
            state.decisions[run_id] = payload["decision"]
        if state.read_back_url:
            async with httpx.AsyncClient(base_url=state.read_back_url, timeout=30,
                                         headers={"Authorization": f"Bearer {state.read_back_token}"}) as client:
                read = await client.get(f"/api/v1/validation/{run_id}/status")
            state.read_backs.append((payload, read.status_code, read.json()))
        answer = await handle_validation_status_update(run_id, payload)
        if state.lose_ack_next > 0:
            state.lose_ack_next -= 1
            return JSONResponse({"error": "acknowledgement lost"}, status_code=500)
        return answer

    @app.post("/tb/validation/alert")
    async def validation_alert(request: Request):
        payload, refusal = await _receive(request, "alert")
        if refusal is not None:
            return refusal
        state.alerts.append(payload)
        return {"status": "acknowledged"}

    @app.post("/api/v1/projects/{project_id}/validation-results")
    async def validation_results(project_id: str, request: Request):
        payload, refusal = await _receive(request, "results")
        if refusal is not None:
            return refusal
        assert payload["project_id"] == project_id
        state.persisted[payload["run_id"]] = payload
        return {"reference_id": f"TB-REF-{payload['run_id']}"}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    return app


class TractionBuildDouble:
    """The app on 127.0.0.1:<port> in a background thread; stop() / start() play an outage."""

    def __init__(self, secret: str, port: int | None = None):
        self.secret = secret
        self.port = port or free_port()
        self.state = TractionBuildState()
        self.app = build_app(self.state, secret)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def callback_url(self) -> str:
        return f"{self.base_url}/tb"

    def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="tractionbuild-double", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("TractionBuild double did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(20)
            self._server = None

    def gate(self, run_id: str) -> dict[str, Any]:
        """Run the guide's gate check as TractionBuild would."""
        return asyncio.run(self.app.state.check_validation_gate(run_id))
