"""IngestionService: a thin gRPC layer over normalize.py (ideas) and importer.py / import_store.py (grounding)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smvm.config import Settings
from smvm.server import ServiceHost
from smvm.v1 import ingestion_service_pb2 as pb, ingestion_service_pb2_grpc as pb_grpc

from services.ingestion.import_store import ImportStore
from services.ingestion.importer import run_import
from services.ingestion.normalize import normalize_idea


def import_grounding(request: pb.ImportGroundingRequest, store: ImportStore) -> pb.ImportGroundingResponse:
    """Import (all or nothing), then store; a refused file raises before anything is written."""
    result = run_import(request.kind, request.format, request.content, request.source_name)
    existed = store.save(result)
    return pb.ImportGroundingResponse(import_id=result.import_id, report=result.report, existed=existed)


class IngestionServicer(pb_grpc.IngestionServiceServicer):
    def __init__(self, runs_dir: Path | str):
        self.store = ImportStore(runs_dir)

    async def NormalizeIdea(self, request: pb.NormalizeIdeaRequest, context) -> pb.NormalizeIdeaResponse:
        return pb.NormalizeIdeaResponse(idea=await asyncio.to_thread(normalize_idea, request, self.store))

    async def ImportGrounding(self, request: pb.ImportGroundingRequest, context) -> pb.ImportGroundingResponse:
        return await asyncio.to_thread(import_grounding, request, self.store)


def build_host(settings: Settings, address: str | None = None) -> ServiceHost:
    def register(server):
        pb_grpc.add_IngestionServiceServicer_to_server(IngestionServicer(settings.runs_dir), server)
        return [pb.DESCRIPTOR.services_by_name["IngestionService"].full_name]

    return ServiceHost("ingestion", address or settings.ingestion_addr, register, grace_s=settings.grace_period_s)
