"""Prometheus metrics of every SMVM process: the integration guide's key metrics, one registry each.

The gateway serves them at /metrics; each gRPC service serves them over HTTP on
`SMVM_<NAME>_METRICS_ADDR` (e.g. SMVM_ORCHESTRATOR_METRICS_ADDR=127.0.0.1:9150), fed by
`smvm.interceptors.MetricsInterceptor`. Names follow Prometheus conventions (base units, _total).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest, start_http_server

log = logging.getLogger("smvm.metrics")

# Latency buckets (seconds) covering a fast status read up to the guide's 60 s timeout.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_RUN_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)

HTTP_REQUESTS = Counter(
    "smvm_http_requests_total", "REST requests by endpoint, method and status code", ["endpoint", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "smvm_http_request_duration_seconds", "REST request latency by endpoint and method", ["endpoint", "method"],
    buckets=_LATENCY_BUCKETS,
)
RPC_HANDLED = Counter("smvm_grpc_server_handled_total", "gRPC calls served, by method and status code", ["method", "code"])
RPC_LATENCY = Histogram(
    "smvm_grpc_server_handling_seconds", "gRPC call latency by method", ["method"], buckets=_LATENCY_BUCKETS
)
RUNS_FINISHED = Counter(
    "smvm_validation_runs_finished_total",
    "Validation runs that reached an outcome (DECISION_READY = success; FAILED, TIMEOUT otherwise)", ["outcome"],
)
RUN_DURATION = Histogram(
    "smvm_validation_run_duration_seconds", "End-to-end run time from submission to outcome", ["outcome"],
    buckets=_RUN_BUCKETS,
)
UTILITY_EVALUATIONS = Counter(
    "smvm_simulation_utility_evaluations_total", "Compute consumed: utility evaluations of finished simulations"
)
SIMULATION_ITERATIONS = Counter("smvm_simulation_iterations_total", "Monte Carlo iterations of finished simulations")
TOKENS_BUDGETED = Counter(
    "smvm_run_tokens_budgeted_total", "max_tokens_per_run of the runs started (the guide's token budget)"
)
WEBHOOK_DELIVERIES = Counter(
    "smvm_webhook_deliveries_total",
    "Callback delivery attempts by kind and outcome (delivered, retry, dead, disabled, circuit_open, trial_failed)", ["kind", "outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "smvm_webhook_delivery_seconds", "Callback delivery attempt latency by kind", ["kind"], buckets=_LATENCY_BUCKETS
)
MODEL_TOKENS = Counter(
    "smvm_model_tokens_total", "Model tokens the narrative adapter's provider reported and the ledger committed",
    ["kind"],  # prompt | completion
)
SERVICE_TOKENS_ACCEPTED = Counter(
    "smvm_service_tokens_accepted_total",
    "Calls authenticated with the mesh's service token: `current`, or `other` (an overlap token still accepted; "
    "once it stops rising everywhere the old token can be dropped)", ["token"],
)
ALERTS = Counter("smvm_alerts_total", "Alerts emitted to TractionBuild by type", ["alert_type"])
STATUS_CACHE_LOOKUPS = Counter(
    "smvm_status_cache_lookups_total",
    "GET /status at the gateway by how its status cache answered: hit (from the cache), miss (run not cached), "
    "stale (cache not synced within the staleness bound: stream down, syncs unanswered), written (a write through "
    "this gateway not yet synced); all but hit made a GetRunStatus call", ["outcome"],
)
STATUS_CACHE_UPDATES = Counter(
    "smvm_status_cache_updates_total",
    "Run watch messages the gateway's status cache applied: change, progress, synced, started, lost (stream ended)",
    ["kind"],
)
STATUS_CACHE_SYNC_AGE = Gauge(
    "smvm_status_cache_sync_age_seconds",
    "Time since the gateway sent the last sync the orchestrator has answered (+Inf when none since the stream "
    "started); the cache answers only while this is under SMVM_STATUS_CACHE_STALENESS_MS",
)
STATUS_CACHE_ENTRIES = Gauge("smvm_status_cache_entries", "Runs in the gateway's status cache")
RUN_SEGMENT = Histogram(
    "smvm_run_segment_seconds",
    "Wall time of the segments of a validation run (stage calls, artifact writes, commits, the engine's and the "
    "analysis' own parts), by segment: where a run's time goes (benchmarks/run_breakdown.py)", ["segment"],
    buckets=_LATENCY_BUCKETS,
)


class Stopwatch:
    """Consecutive segments of one piece of work: `lap(segment)` records the time since the previous
    lap (or the start) as that segment, so the segments add up to the whole with no gap left out."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._last = clock()

    def lap(self, segment: str) -> float:
        now = self._clock()
        elapsed, self._last = now - self._last, now
        RUN_SEGMENT.labels(segment).observe(elapsed)
        return elapsed


def render() -> tuple[bytes, str]:
    """The exposition text of this process's registry and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


def metrics_addr_for(service: str) -> str:
    """The configured metrics listen address of `service` ("" = not served)."""
    return os.environ.get(f"SMVM_{service.upper()}_METRICS_ADDR", "").strip()


def serve(service: str) -> int | None:
    """Start the HTTP metrics endpoint of `service` if configured; return the bound port."""
    address = metrics_addr_for(service)
    if not address:
        return None
    host, _, port = address.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
    bound = server.server_address[1]
    log.info("metrics endpoint", extra={"address": f"{host}:{bound}"})
    return bound
