"""Grounding a run in the memory service: what earlier runs learned, asked once per run.

Stage services accept calls only from the orchestrator, and memory admits the orchestrator, so the
orchestrator asks memory and hands the answers to the stages in their requests: known competitors
to the competitor stage, similar ideas and the project's decisions to the analysis stage.

Three queries run in parallel, each with the short deadline `memory_timeout_s`:
ListKnownCompetitors(idea domain, synthetic ones left out), FindSimilarIdeas(idea text, same domain,
this run left out) and GetDecisionHistory(project). Memory down, slow or refusing never fails or
stalls a run: any error makes the grounding "unavailable" with the reason and the run goes on
without memory (the pipeline records a memory.unavailable event; analysis puts a warning in the
decision). The pipeline commits the grounding with the run, so a resumed run's remaining stages see
the memory its first attempt saw.
"""

from __future__ import annotations

import asyncio

import grpc

from smvm.v1 import idea_pb2, memory_grounding_pb2, memory_service_pb2, memory_service_pb2_grpc

# Similar ideas asked for: the analysis policy decides which count as precedent (its own, higher,
# similarity floor); this floor only keeps unrelated ideas out of the request.
SIMILAR_LIMIT = 10
SIMILAR_MIN = 0.1
KNOWN_LIMIT = 50


def idea_text(idea: idea_pb2.Idea) -> str:
    """The text memory compares ideas by (the same fields the memory graph indexes)."""
    return " ".join([idea.title, idea.description, idea.value_proposition, idea.target_market, " ".join(idea.features)])


def _why(method: str, err: BaseException, timeout_s: float) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"{method}: DEADLINE_EXCEEDED after {timeout_s:g}s"
        return f"{method}: {err.code().name}: {err.details() or ''}".rstrip(": ")
    if isinstance(err, asyncio.TimeoutError):
        return f"{method}: no answer within {timeout_s:g}s"
    return f"{method}: {type(err).__name__}: {err}"


async def ground(stub: memory_service_pb2_grpc.MemoryServiceStub, *, run_id: str, project_id: str,
                 idea: idea_pb2.Idea, timeout_s: float) -> memory_grounding_pb2.MemoryGrounding:
    """Memory's answers for one run; never raises for memory's sake and returns within about `timeout_s`."""
    out = memory_grounding_pb2.MemoryGrounding(project_id=project_id)
    domain = idea.domain.strip()
    calls = {
        "FindSimilarIdeas": stub.FindSimilarIdeas(memory_service_pb2.FindSimilarIdeasRequest(
            text=idea_text(idea), domain=domain, limit=SIMILAR_LIMIT, exclude_run_id=run_id,
            min_similarity=SIMILAR_MIN), timeout=timeout_s),
        "GetDecisionHistory": stub.GetDecisionHistory(
            memory_service_pb2.GetDecisionHistoryRequest(project_id=project_id), timeout=timeout_s),
    }
    if domain:  # memory keys competitors by domain; an idea without one has none to look up
        calls["ListKnownCompetitors"] = stub.ListKnownCompetitors(memory_service_pb2.ListKnownCompetitorsRequest(
            domain=domain, limit=KNOWN_LIMIT, exclude_synthetic=True), timeout=timeout_s)
    try:
        # The calls carry their own deadlines; the outer one only guards against a call that ignores it.
        # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation of this task.
        async with asyncio.timeout(timeout_s + 1.0):
            answers = await asyncio.gather(*calls.values(), return_exceptions=True)
    except asyncio.TimeoutError as err:
        for call in calls.values():
            call.cancel()
        out.status, out.error = "unavailable", _why("memory", err, timeout_s)
        return out
    results = dict(zip(calls, answers))
    failures = [_why(m, r, timeout_s) for m, r in results.items() if isinstance(r, BaseException)]
    if failures:
        # All or nothing: a partial memory would ground some stages and not others without saying which.
        out.status, out.error = "unavailable", "; ".join(failures)
        return out
    out.status = "used"
    out.similar_ideas.extend(results["FindSimilarIdeas"].ideas)
    out.decision_history.extend(d for d in results["GetDecisionHistory"].decisions if d.run_id != run_id)
    if "ListKnownCompetitors" in results:
        out.known_competitors.extend(c for c in results["ListKnownCompetitors"].competitors if not c.synthetic)
    return out
