"""MemoryService: the gRPC face of the memory graph, plus its two periodic jobs (learn, retain)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from smvm.config import Settings
from smvm.db import DatabaseUnavailable, open_database
from smvm.db.database import database_url_for
from smvm.errors import InvalidArgument
from smvm.ids import check_id
from smvm.server import ServiceHost
from smvm.timestamps import checked_datetime
from smvm.v1 import memory_service_pb2 as pb, memory_service_pb2_grpc as pb_grpc

from services.memory.graph import MemoryGraph, parse
from services.memory.retention import RetentionRules

log = logging.getLogger(__name__)


def _limit(field: str, value: int, default: int, maximum: int) -> int:
    if value == 0:
        return default
    if not 1 <= value <= maximum:
        raise InvalidArgument(field, f"must be between 1 and {maximum}")
    return value


def _ts(value: str):
    from google.protobuf import timestamp_pb2

    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(parse(value))
    return ts


class MemoryServicer(pb_grpc.MemoryServiceServicer):
    def __init__(self, graph: MemoryGraph, rules: RetentionRules):
        self.graph = graph
        self.rules = rules

    async def _sync(self) -> list[str]:
        return await asyncio.to_thread(self.graph.sync)

    async def FindSimilarIdeas(self, request: pb.FindSimilarIdeasRequest, context) -> pb.FindSimilarIdeasResponse:
        if not request.text.strip():
            raise InvalidArgument("text", "is required")
        limit = _limit("limit", request.limit, 5, 100)
        if not 0.0 <= request.min_similarity <= 1.0:
            raise InvalidArgument("min_similarity", "must be in [0, 1]")
        await self._sync()
        ideas = await asyncio.to_thread(
            self.graph.similar_ideas, request.text, domain=request.domain, limit=limit,
            exclude_run_id=request.exclude_run_id, min_similarity=request.min_similarity)
        return pb.FindSimilarIdeasResponse(ideas=[pb.SimilarIdea(**vars(i)) for i in ideas])

    async def ListKnownCompetitors(self, request: pb.ListKnownCompetitorsRequest, context) -> pb.ListKnownCompetitorsResponse:
        if not request.domain.strip():
            raise InvalidArgument("domain", "is required")
        limit = _limit("limit", request.limit, 50, 500)
        await self._sync()
        rows = await asyncio.to_thread(self.graph.known_competitors, request.domain, limit=limit,
                                       exclude_synthetic=request.exclude_synthetic)
        return pb.ListKnownCompetitorsResponse(competitors=[
            pb.KnownCompetitor(name=c["name"], domain=c["domain"], runs_seen=c["runs_seen"],
                               last_monthly_price_usd=c.get("monthly_price_usd", 0.0), features=c.get("features", []),
                               synthetic=bool(c.get("synthetic")), last_seen=_ts(c["last_seen"]),
                               source=c.get("source", ""), last_run_id=c.get("run_id", ""),
                               market_share=c.get("market_share"))
            for c in rows])

    async def GetDecisionHistory(self, request: pb.GetDecisionHistoryRequest, context) -> pb.GetDecisionHistoryResponse:
        project_id = check_id("project_id", request.project_id)
        await self._sync()
        rows = await asyncio.to_thread(self.graph.decision_history, project_id)
        return pb.GetDecisionHistoryResponse(project_id=project_id, decisions=[
            pb.DecisionRecord(run_id=d["run_id"], idea_title=d.get("idea_title", ""), recommendation=d["recommendation"],
                              confidence=d["confidence"], composite_score=d.get("composite_score", 0.0),
                              review_verdict=d.get("review_verdict", ""), decided_at=_ts(d["decided_at"]))
            for d in rows])

    async def SyncRuns(self, request: pb.SyncRunsRequest, context) -> pb.SyncRunsResponse:
        return pb.SyncRunsResponse(run_ids=await self._sync())

    async def ApplyRetention(self, request: pb.ApplyRetentionRequest, context) -> pb.ApplyRetentionResponse:
        now = checked_datetime("as_of", request.as_of) if request.HasField("as_of") else dt.datetime.now(dt.timezone.utc)
        deleted = await asyncio.to_thread(self.graph.apply_retention, self.rules, now, dry_run=request.dry_run)
        return pb.ApplyRetentionResponse(deleted=deleted, retention_days=self.rules.days)


async def periodic(name: str, every_s: float, job) -> None:
    """Run `job` every `every_s` seconds until cancelled; a failing round is logged and retried."""
    while True:
        try:
            await asyncio.to_thread(job)
        except DatabaseUnavailable as err:
            log.warning("%s: database unavailable (%s); next round in %.0fs", name, err, every_s)
        except Exception:
            log.exception("%s failed; next round in %.0fs", name, every_s)
        await asyncio.sleep(every_s)


def build_host(settings: Settings, address: str | None = None) -> ServiceHost:
    graph = MemoryGraph(open_database(database_url_for(settings.database_url, settings.runs_dir)))
    rules = RetentionRules.load()  # a broken rules file fails the start, not a cleanup round
    servicer = MemoryServicer(graph, rules)
    tasks: list[asyncio.Task] = []

    def register(server):
        pb_grpc.add_MemoryServiceServicer_to_server(servicer, server)
        return [pb.DESCRIPTOR.services_by_name["MemoryService"].full_name]

    async def on_start() -> None:
        tasks.append(asyncio.create_task(periodic("memory sync", settings.memory_sync_interval_s, graph.sync)))
        tasks.append(asyncio.create_task(periodic(
            "retention cleanup", settings.memory_retention_interval_s,
            lambda: graph.apply_retention(rules, dt.datetime.now(dt.timezone.utc)))))

    async def on_stop() -> None:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        graph.db.close()

    return ServiceHost("memory", address or settings.memory_addr, register, on_start=on_start, on_stop=on_stop,
                       grace_s=settings.grace_period_s)
