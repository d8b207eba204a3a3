"""CompetitorService: a thin gRPC layer over services.competitors.landscape."""

from __future__ import annotations

import asyncio

from smvm.config import Settings
from smvm.server import ServiceHost
from smvm.v1 import competitor_service_pb2 as pb, competitor_service_pb2_grpc as pb_grpc

from services.competitors.landscape import build_landscape


class CompetitorServicer(pb_grpc.CompetitorServiceServicer):
    async def BuildLandscape(self, request: pb.BuildLandscapeRequest, context) -> pb.BuildLandscapeResponse:
        return await asyncio.to_thread(build_landscape, request)


def build_host(settings: Settings, address: str | None = None) -> ServiceHost:
    def register(server):
        pb_grpc.add_CompetitorServiceServicer_to_server(CompetitorServicer(), server)
        return [pb.DESCRIPTOR.services_by_name["CompetitorService"].full_name]

    return ServiceHost("competitors", address or settings.competitors_addr, register, grace_s=settings.grace_period_s)
