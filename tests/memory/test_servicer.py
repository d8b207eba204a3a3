"""MemoryService over real loopback gRPC, on the store's database (SQLite and PostgreSQL)."""

import datetime as dt

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from smvm.config import Settings
from smvm.launcher import free_port
from smvm.v1 import memory_service_pb2 as pb, memory_service_pb2_grpc as pb_grpc
from services.memory.servicer import build_host
from services.orchestrator.store import RunStore

from .test_graph import decided_run


@pytest.fixture
async def memory(database_url, runs_dir):
    store = RunStore(runs_dir, database_url=database_url)
    decided_run(store, "RUN-A", "PROJ-1", "Student budgeting app", "A budgeting app for university students", "fintech",
                [("Mint", 0.0, False), ("YNAB", 14.99, False)], "GO")
    decided_run(store, "RUN-B", "PROJ-1", "Budget coach", "Budgeting coach for graduates", "fintech", [("YNAB", 15.99, False)], "PIVOT")
    settings = Settings(profile="test", runs_dir=runs_dir, database_url=database_url, grace_period_s=0,
                        memory_addr=f"127.0.0.1:{free_port()}")
    host = build_host(settings)
    await host.start()
    await host.ready.wait()
    async with grpc.aio.insecure_channel(settings.memory_addr) as channel:
        yield store, pb_grpc.MemoryServiceStub(channel), settings.memory_addr
    await host.stop(0)


async def test_queries_answer_from_the_runs_in_the_store(memory):
    store, stub, _ = memory
    similar = await stub.FindSimilarIdeas(pb.FindSimilarIdeasRequest(text="budgeting app for students"), timeout=10)
    assert [i.run_id for i in similar.ideas] == ["RUN-A", "RUN-B"]
    assert similar.ideas[0].recommendation == "GO" and 0 < similar.ideas[1].similarity < similar.ideas[0].similarity <= 1
    known = await stub.ListKnownCompetitors(pb.ListKnownCompetitorsRequest(domain="fintech"), timeout=10)
    assert [(c.name, c.runs_seen) for c in known.competitors] == [("YNAB", 2), ("Mint", 1)]
    assert known.competitors[0].last_monthly_price_usd == pytest.approx(15.99)
    history = await stub.GetDecisionHistory(pb.GetDecisionHistoryRequest(project_id="PROJ-1"), timeout=10)
    assert [(d.run_id, d.recommendation, d.review_verdict) for d in history.decisions] == [
        ("RUN-A", "GO", "APPROVE"), ("RUN-B", "PIVOT", "APPROVE")]
    # a run decided after the service started is learned on the next query
    decided_run(store, "RUN-C", "PROJ-1", "Third", "c", "fintech", [], "KILL")
    assert (await stub.SyncRuns(pb.SyncRunsRequest(), timeout=10)).run_ids == ["RUN-C"]
    assert (await stub.SyncRuns(pb.SyncRunsRequest(), timeout=10)).run_ids == []


async def test_retention_over_grpc(memory):
    _, stub, _ = memory
    await stub.SyncRuns(pb.SyncRunsRequest(), timeout=10)
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=200))
    dry = await stub.ApplyRetention(pb.ApplyRetentionRequest(dry_run=True, as_of=later), timeout=10)
    assert dry.deleted["persona"] == 4 and dry.retention_days["persona"] == 180 and dry.retention_days["decision"] == 0
    done = await stub.ApplyRetention(pb.ApplyRetentionRequest(as_of=later), timeout=10)
    assert done.deleted["persona"] == 4
    assert (await stub.ApplyRetention(pb.ApplyRetentionRequest(as_of=later), timeout=10)).deleted["persona"] == 0


@pytest.mark.parametrize("call, request_, field", [
    ("FindSimilarIdeas", pb.FindSimilarIdeasRequest(text=""), "text"),
    ("FindSimilarIdeas", pb.FindSimilarIdeasRequest(text="x", limit=101), "limit"),
    ("FindSimilarIdeas", pb.FindSimilarIdeasRequest(text="x", min_similarity=1.5), "min_similarity"),
    ("ListKnownCompetitors", pb.ListKnownCompetitorsRequest(domain=""), "domain"),
    ("GetDecisionHistory", pb.GetDecisionHistoryRequest(project_id="../x"), "project_id"),
    # found by the gRPC fuzz: a Timestamp outside years 1-9999 was a ValueError, answered INTERNAL
    ("ApplyRetention", pb.ApplyRetentionRequest(as_of=timestamp_pb2.Timestamp(seconds=-(2**63))), "as_of"),
    ("ApplyRetention", pb.ApplyRetentionRequest(as_of=timestamp_pb2.Timestamp(seconds=0, nanos=-1)), "as_of"),
])
async def test_bad_requests_name_the_field(memory, call, request_, field):
    _, stub, _ = memory
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(stub, call)(request_, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    violation = error_details_pb2.BadRequest()
    status.details[0].Unpack(violation)
    assert violation.field_violations[0].field == field


async def test_the_cli_prints_the_services_answers(memory, capsys):
    import asyncio
    import json as jsonlib

    from smvm import cli

    _, _, target = memory
    code = await asyncio.to_thread(cli.main, ["memory", "--memory-addr", target, "similar", "budgeting app for students"])
    assert code == 0
    printed = jsonlib.loads(capsys.readouterr().out)
    assert [i["run_id"] for i in printed["ideas"]] == ["RUN-A", "RUN-B"]
    code = await asyncio.to_thread(cli.main, ["memory", "--memory-addr", target, "history", "PROJ-1"])
    assert [d["recommendation"] for d in jsonlib.loads(capsys.readouterr().out)["decisions"]] == ["GO", "PIVOT"]
    with pytest.raises(SystemExit, match="INVALID_ARGUMENT"):
        await asyncio.to_thread(cli.main, ["memory", "--memory-addr", target, "history", "../x"])
