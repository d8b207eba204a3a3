"""OverwatchService: a thin gRPC layer over the budget checks, the ledger, the review and the audit trail."""

from __future__ import annotations

import asyncio
import json

from smvm import auth, correlation
from smvm.config import Settings
from smvm.errors import InvalidArgument
from smvm.server import ServerSecurity, ServiceHost
from smvm.v1 import decision_pb2, overwatch_service_pb2 as pb, overwatch_service_pb2_grpc as pb_grpc

from services.overwatch.budget import BudgetDefaults, check_budget
from services.overwatch.ledger import Amounts, Ledger, Usage
from services.overwatch.ledger_store import AuditRow, LedgerStore
from services.overwatch.policy import OverwatchPolicy, load_policy
from services.overwatch.review import recommendation_name, review_decision

MAX_AUDIT_PAGE = 1000


def _amounts(message: pb.ResourceAmounts) -> Amounts:
    return Amounts(int(message.utility_evaluations), int(message.tokens), float(message.cpu_seconds))


def _amounts_pb(amounts: Amounts) -> pb.ResourceAmounts:
    return pb.ResourceAmounts(utility_evaluations=amounts.utility_evaluations, tokens=amounts.tokens,
                              cpu_seconds=amounts.cpu_seconds)


def usage_pb(usage: Usage | None) -> pb.Usage | None:
    if usage is None:
        return None
    return pb.Usage(scope=usage.scope, committed=_amounts_pb(usage.committed), reserved=_amounts_pb(usage.reserved),
                    ceilings=_amounts_pb(usage.ceilings))


def audit_pb(row: AuditRow) -> pb.AuditEvent:
    return pb.AuditEvent(sequence=row.sequence, time=row.time, kind=row.kind, actor=row.actor, run_id=row.run_id,
                         project_id=row.project_id, correlation_id=row.correlation_id,
                         payload_json=json.dumps(row.payload, sort_keys=True))


def _who() -> dict:
    """The caller as the audit trail names it: the authenticated principal, its correlation id."""
    return {"actor": auth.current_actor(), "correlation_id": correlation.get()}


class OverwatchServicer(pb_grpc.OverwatchServiceServicer):
    def __init__(self, defaults: BudgetDefaults, policy: OverwatchPolicy, ledger: Ledger):
        self.defaults = defaults
        self.policy = policy
        self.ledger = ledger

    async def CheckBudget(self, request: pb.CheckBudgetRequest, context) -> pb.CheckBudgetResponse:
        return check_budget(request, self.defaults)  # a few integer comparisons: no thread needed

    async def ReviewDecision(self, request: pb.ReviewDecisionRequest, context) -> pb.ReviewDecisionResponse:
        response = await asyncio.to_thread(review_decision, request, self.policy)
        review = response.review
        verdict = decision_pb2.ReviewVerdict.Name(review.verdict).removeprefix("REVIEW_VERDICT_")
        await asyncio.to_thread(
            self.ledger.record, kind=f"review.{verdict.lower()}", run_id=request.run_id, project_id=request.project_id,
            payload={"verdict": verdict, "policy_version": review.policy_version,
                     "recommendation": recommendation_name(request.decision.recommendation),
                     "reasons": [{"code": r.code, "severity": r.severity} for r in review.reasons]},
            **_who())
        return response

    async def ReserveBudget(self, request: pb.ReserveBudgetRequest, context) -> pb.ReserveBudgetResponse:
        held = await asyncio.to_thread(
            self.ledger.reserve, run_id=request.run_id, project_id=request.project_id,
            requested=_amounts(request.requested), max_utility_evaluations=request.max_utility_evaluations,
            max_tokens_per_run=request.max_tokens_per_run, purpose=request.purpose, ttl_s=request.ttl_seconds, **_who())
        return pb.ReserveBudgetResponse(
            reservation_id=held.reservation_id, warnings=held.warnings, utilisation=held.utilisation,
            run_usage=usage_pb(held.run_usage), project_usage=usage_pb(held.project_usage), replayed=held.replayed)

    async def CommitBudget(self, request: pb.CommitBudgetRequest, context) -> pb.CommitBudgetResponse:
        settled = await asyncio.to_thread(self.ledger.commit, request.reservation_id, _amounts(request.actual), **_who())
        return pb.CommitBudgetResponse(run_usage=usage_pb(settled.run_usage), project_usage=usage_pb(settled.project_usage),
                                       warnings=settled.warnings)

    async def ReleaseBudget(self, request: pb.ReleaseBudgetRequest, context) -> pb.ReleaseBudgetResponse:
        settled = await asyncio.to_thread(self.ledger.release, request.reservation_id, reason=request.reason, **_who())
        return pb.ReleaseBudgetResponse(run_usage=usage_pb(settled.run_usage), project_usage=usage_pb(settled.project_usage))

    async def GetUsage(self, request: pb.GetUsageRequest, context) -> pb.GetUsageResponse:
        run_usage, project_usage = await asyncio.to_thread(
            self.ledger.usage, run_id=request.run_id, project_id=request.project_id, period=request.period)
        return pb.GetUsageResponse(run_usage=usage_pb(run_usage), project_usage=usage_pb(project_usage))

    async def RecordAuditEvent(self, request: pb.RecordAuditEventRequest, context) -> pb.RecordAuditEventResponse:
        event = request.event
        try:
            payload = json.loads(event.payload_json) if event.payload_json else {}
        except json.JSONDecodeError:
            raise InvalidArgument("event.payload_json", "is not JSON") from None
        if not isinstance(payload, dict):
            raise InvalidArgument("event.payload_json", "must be a JSON object")
        # The reporting service's identity is recorded next to the actor it reports.
        payload.setdefault("reported_by", auth.current_actor())
        sequence = await asyncio.to_thread(
            self.ledger.record, kind=event.kind, actor=event.actor or auth.current_actor(), run_id=event.run_id,
            project_id=event.project_id, correlation_id=event.correlation_id or correlation.get(), payload=payload)
        return pb.RecordAuditEventResponse(sequence=sequence)

    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest, context) -> pb.ListAuditEventsResponse:
        size = request.page_size or 100
        if not 1 <= size <= MAX_AUDIT_PAGE:
            raise InvalidArgument("page_size", f"must be between 1 and {MAX_AUDIT_PAGE}")
        try:
            after = int(request.page_token or 0)
        except ValueError:
            raise InvalidArgument("page_token", "is not a token this service issued") from None
        rows = await asyncio.to_thread(self.ledger.events, run_id=request.run_id, project_id=request.project_id,
                                       kind_prefix=request.kind_prefix, after=after, limit=size + 1)
        page = rows[:size]
        return pb.ListAuditEventsResponse(events=[audit_pb(r) for r in page],
                                          next_page_token=str(page[-1].sequence) if len(rows) > size else "")


def build_host(settings: Settings, address: str | None = None, *, policy: OverwatchPolicy | None = None,
               security: ServerSecurity | None = None) -> ServiceHost:
    policy = policy or load_policy()  # read once at start: a broken policy file fails the start, not a run
    defaults = BudgetDefaults.from_settings(settings, policy)
    ledger = Ledger(LedgerStore.under(settings.runs_dir, settings.database_url), defaults, policy)
    servicer = OverwatchServicer(defaults, policy, ledger)

    def register(server):
        pb_grpc.add_OverwatchServiceServicer_to_server(servicer, server)
        return [pb.DESCRIPTOR.services_by_name["OverwatchService"].full_name]

    async def record_denial(event: dict) -> None:
        # Overwatch is the audit trail's home: its own refusals go straight into it.
        await asyncio.to_thread(ledger.record, **event)

    security = security or ServerSecurity()
    security.on_denied = record_denial
    return ServiceHost("overwatch", address or settings.overwatch_addr, register, grace_s=settings.grace_period_s,
                       security=security)
