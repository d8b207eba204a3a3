"""AnalysisService: a thin gRPC layer over services.analysis.decide."""

from __future__ import annotations

import asyncio
import gc

from smvm import metrics
from smvm.config import Settings
from smvm.server import ServiceHost
from smvm.v1 import analysis_service_pb2 as pb, analysis_service_pb2_grpc as pb_grpc

from services.analysis.decide import analyze


class AnalysisServicer(pb_grpc.AnalysisServiceServicer):
    async def Analyze(self, request: pb.AnalyzeRequest, context) -> pb.AnalyzeResponse:
        return await asyncio.to_thread(_analyze, request)


def _analyze(request: pb.AnalyzeRequest) -> pb.AnalyzeResponse:
    segment = "analysis.service.decide" if request.skip_documents else "analysis.service.documents"
    with metrics.RUN_SEGMENT.labels(segment).time():
        response = analyze(request, render_documents=not request.skip_documents)
    if not request.skip_documents:
        # matplotlib Figures are cyclic (figure, canvas, axes) and each keeps its Agg pixel buffer
        # (native memory, megabytes) until the cyclic collector runs, which it schedules by object
        # counts, not bytes: the service's RSS crept up about 0.3 MiB per report. Collect now.
        gc.collect()
    return response


def build_host(settings: Settings, address: str | None = None) -> ServiceHost:
    def register(server):
        pb_grpc.add_AnalysisServiceServicer_to_server(AnalysisServicer(), server)
        return [pb.DESCRIPTOR.services_by_name["AnalysisService"].full_name]

    return ServiceHost("analysis", address or settings.analysis_addr, register, grace_s=settings.grace_period_s)
