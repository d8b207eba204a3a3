"""PersonaService: a thin gRPC layer over services.personas.synthesis (and, when the model adapter
is configured, services.personas.narratives within the token allowance the request carries)."""

from __future__ import annotations

import asyncio

from smvm.config import Settings
from smvm.server import ServiceHost
from smvm.v1 import persona_service_pb2 as pb, persona_service_pb2_grpc as pb_grpc

from services.personas.narratives import NarrativeWriter
from services.personas.synthesis import generate_personas


class PersonaServicer(pb_grpc.PersonaServiceServicer):
    def __init__(self, narrator: NarrativeWriter | None = None):
        self.narrator = narrator

    async def GeneratePersonas(self, request: pb.GeneratePersonasRequest, context) -> pb.GeneratePersonasResponse:
        response = await asyncio.to_thread(generate_personas, request)
        if self.narrator is not None:
            await self.narrator.enrich(response, request.idea if request.HasField("idea") else None,
                                       request.narrative_token_allowance, context.time_remaining())
        return response


def build_host(settings: Settings, address: str | None = None) -> ServiceHost:
    def register(server):
        pb_grpc.add_PersonaServiceServicer_to_server(PersonaServicer(NarrativeWriter.from_settings(settings)), server)
        return [pb.DESCRIPTOR.services_by_name["PersonaService"].full_name]

    return ServiceHost("personas", address or settings.personas_addr, register, grace_s=settings.grace_period_s)
