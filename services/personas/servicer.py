"""PersonaService: a thin gRPC layer over services.personas.synthesis."""

from __future__ import annotations

import asyncio

from smvm.config import Settings
from smvm.server import ServiceHost
from smvm.v1 import persona_service_pb2 as pb, persona_service_pb2_grpc as pb_grpc

from services.personas.synthesis import generate_personas


class PersonaServicer(pb_grpc.PersonaServiceServicer):
    async def GeneratePersonas(self, request: pb.GeneratePersonasRequest, context) -> pb.GeneratePersonasResponse:
        return await asyncio.to_thread(generate_personas, request)


def build_host(settings: Settings, address: str | None = None) -> ServiceHost:
    def register(server):
        pb_grpc.add_PersonaServiceServicer_to_server(PersonaServicer(), server)
        return [pb.DESCRIPTOR.services_by_name["PersonaService"].full_name]

    return ServiceHost("personas", address or settings.personas_addr, register, grace_s=settings.grace_period_s)
