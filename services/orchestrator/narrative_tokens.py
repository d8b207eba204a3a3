"""Model tokens for persona narratives: reserved before the personas stage, committed after it.

The personas stage may not reach overwatch (the mesh's network policy lets only the orchestrator
call it), so the orchestrator holds the tokens for it, exactly as it holds the simulation's compute:
with the model adapter configured (`Settings.llm_enabled`) it reserves `llm_tokens_per_persona` per
persona (purpose `narratives`) before the call, passes the amount as the request's
`narrative_token_allowance`, and commits what the response reports the provider counted
(`narrative_usage`), or releases the hold when the stage fails.

Narratives are optional enrichment, so nothing here fails a run: a reservation refused with
RESOURCE_EXHAUSTED (the run's `max_tokens_per_run` or the project's period ceiling) means the model
is not called at all and the personas keep their template narratives; the refusal is a
`narratives.refused` run event and a `resource_constraint` alert, and overwatch's audit trail has
its `budget.refused`. Any other ledger failure also means no model call (the model is never called
unmetered). A reservation at 80 % of a ceiling raises the alert as a warning.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import grpc

from smvm import metrics
from smvm.v1 import overwatch_service_pb2, persona_service_pb2

from services.orchestrator import simconfig

PURPOSE = "narratives"
log = logging.getLogger(__name__)


@dataclass
class TokenHold:
    """What the personas stage may spend: `allowance` tokens under `reservation_id` ('' = none)."""

    reservation_id: str = ""
    allowance: int = 0
    warnings: list[str] = field(default_factory=list)


def _ledger_timeout(pipeline, ctx) -> float:
    return max(1.0, min(pipeline.settings.stage_timeout_s, ctx.deadline - time.monotonic()))


async def reserve(pipeline, ctx) -> TokenHold:
    """Hold the narratives' tokens in overwatch's ledger; an empty hold when the adapter is off or
    the ledger refuses (recorded on the run)."""
    settings = pipeline.settings
    if not settings.llm_enabled():
        return TokenHold()
    count = ctx.configuration.persona_count or simconfig.DEFAULTS["persona_count"]
    tokens = count * settings.llm_tokens_per_persona
    try:
        answer = await pipeline.clients.overwatch.ReserveBudget(
            overwatch_service_pb2.ReserveBudgetRequest(
                run_id=ctx.run_id, project_id=ctx.project_id, purpose=PURPOSE,
                requested=overwatch_service_pb2.ResourceAmounts(tokens=tokens),
                max_tokens_per_run=ctx.configuration.max_tokens_per_run,
                max_utility_evaluations=settings.max_utility_evaluations,
                ttl_seconds=max(0.0, ctx.deadline - time.monotonic()) + 60.0),
            timeout=_ledger_timeout(pipeline, ctx))
    except grpc.aio.AioRpcError as err:
        refused = err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        pipeline.store.update(ctx.run_id, "narratives.refused" if refused else "narratives.skipped", payload={
            "purpose": PURPOSE, "requested_tokens": tokens, "code": err.code().name, "message": err.details(),
            "narratives": "template"})
        if refused:
            pipeline._alert(ctx, "resource_constraint", "warning",
                            f"persona narratives not written by the model: {err.details()}",
                            {"purpose": PURPOSE, "requested_tokens": tokens})
        else:
            log.warning("narrative tokens not reserved (%s); template narratives", err.code().name)
        return TokenHold()
    pipeline.store.update(ctx.run_id, "budget.reserved", payload={
        "purpose": PURPOSE, "reservation_id": answer.reservation_id, "tokens": tokens,
        "utilisation": round(answer.utilisation, 4), "warnings": list(answer.warnings)})
    if answer.warnings:
        pipeline._alert(ctx, "resource_constraint", "warning", "; ".join(answer.warnings),
                        {"purpose": PURPOSE, "utilisation": answer.utilisation, "warnings": list(answer.warnings)})
    return TokenHold(answer.reservation_id, tokens, list(answer.warnings))


async def settle(pipeline, ctx, hold: TokenHold, response: persona_service_pb2.GeneratePersonasResponse) -> None:
    """Commit the provider's counts against the hold and record them on the run."""
    if not hold.reservation_id:
        return
    usage = response.narrative_usage
    spent = usage.prompt_tokens + usage.completion_tokens
    payload = {"reservation_id": hold.reservation_id, "model": usage.model, "reserved_tokens": hold.allowance,
               "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
               "calls": usage.calls, "failed_calls": usage.failed_calls, "skipped": usage.skipped,
               "warnings": [w for w in response.warnings if w.startswith("narratives:")]}
    try:
        settled = await pipeline.clients.overwatch.CommitBudget(
            overwatch_service_pb2.CommitBudgetRequest(
                reservation_id=hold.reservation_id, actual=overwatch_service_pb2.ResourceAmounts(tokens=spent)),
            timeout=_ledger_timeout(pipeline, ctx))
    except grpc.aio.AioRpcError as err:
        # Unsettled, the hold still counts in full until it expires: the ledger over-counts, never under.
        log.warning("narrative tokens of run %s not committed: %s", ctx.run_id, err.code().name)
        pipeline.store.update(ctx.run_id, "narratives.unsettled", payload={**payload, "error": err.code().name})
        return
    metrics.MODEL_TOKENS.labels("prompt").inc(usage.prompt_tokens)
    metrics.MODEL_TOKENS.labels("completion").inc(usage.completion_tokens)
    pipeline.store.update(ctx.run_id, "narratives.metered", payload=payload)
    if settled.warnings and not hold.warnings:
        pipeline._alert(ctx, "resource_constraint", "warning", "; ".join(settled.warnings),
                        {"purpose": PURPOSE, "warnings": list(settled.warnings)})


async def release(pipeline, ctx, hold: TokenHold, reason: str) -> None:
    """Give the hold back when the personas stage failed (a failure here only waits for expiry)."""
    if not hold.reservation_id:
        return
    try:
        await pipeline.clients.overwatch.ReleaseBudget(
            overwatch_service_pb2.ReleaseBudgetRequest(reservation_id=hold.reservation_id, reason=reason),
            timeout=_ledger_timeout(pipeline, ctx))
    except grpc.aio.AioRpcError as err:
        log.warning("could not release narrative tokens %s: %s", hold.reservation_id, err.code().name)
