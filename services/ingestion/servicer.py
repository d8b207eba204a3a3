"""IngestionService: a thin gRPC layer over services.ingestion.normalize."""

from __future__ import annotations

import asyncio

from smvm.config import Settings
from smvm.server import ServiceHost
from smvm.v1 import ingestion_service_pb2 as pb, ingestion_service_pb2_grpc as pb_grpc

from services.ingestion.normalize import normalize_idea


class IngestionServicer(pb_grpc.IngestionServiceServicer):
    async def NormalizeIdea(self, request: pb.NormalizeIdeaRequest, context) -> pb.NormalizeIdeaResponse:
        return pb.NormalizeIdeaResponse(idea=await asyncio.to_thread(normalize_idea, request))


def build_host(settings: Settings, address: str | None = None) -> ServiceHost:
    def register(server):
        pb_grpc.add_IngestionServiceServicer_to_server(IngestionServicer(), server)
        return [pb.DESCRIPTOR.services_by_name["IngestionService"].full_name]

    return ServiceHost("ingestion", address or settings.ingestion_addr, register, grace_s=settings.grace_period_s)
