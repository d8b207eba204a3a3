"""OverwatchService: a thin gRPC layer over services.overwatch.budget and services.overwatch.review."""

from __future__ import annotations

import asyncio

from smvm.config import Settings
from smvm.server import ServiceHost
from smvm.v1 import overwatch_service_pb2 as pb, overwatch_service_pb2_grpc as pb_grpc

from services.overwatch.budget import BudgetDefaults, check_budget
from services.overwatch.policy import OverwatchPolicy, load_policy
from services.overwatch.review import review_decision


class OverwatchServicer(pb_grpc.OverwatchServiceServicer):
    def __init__(self, defaults: BudgetDefaults, policy: OverwatchPolicy):
        self.defaults = defaults
        self.policy = policy

    async def CheckBudget(self, request: pb.CheckBudgetRequest, context) -> pb.CheckBudgetResponse:
        return check_budget(request, self.defaults)  # a few integer comparisons: no thread needed

    async def ReviewDecision(self, request: pb.ReviewDecisionRequest, context) -> pb.ReviewDecisionResponse:
        return await asyncio.to_thread(review_decision, request, self.policy)


def build_host(settings: Settings, address: str | None = None) -> ServiceHost:
    policy = load_policy()  # read once at start: a broken policy file fails the start, not a run
    servicer = OverwatchServicer(BudgetDefaults.from_settings(settings, policy), policy)

    def register(server):
        pb_grpc.add_OverwatchServiceServicer_to_server(servicer, server)
        return [pb.DESCRIPTOR.services_by_name["OverwatchService"].full_name]

    return ServiceHost("overwatch", address or settings.overwatch_addr, register, grace_s=settings.grace_period_s)
