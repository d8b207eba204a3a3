"""Memory of earlier runs as decision evidence: similar ideas decided before and the project's history.

The orchestrator hands the memory service's answers over in `AnalyzeRequest.memory`; this module turns
them into `Decision.memory` (evidence lines that cite run ids) and into one market sub-risk.

Precedent rule (policy `risk.memory_precedent`): a similar idea counts as precedent when it has a
decision and its similarity is at least `min_similarity`, unless it belongs to this run's project with
similarity >= `rerun_similarity` — that is a re-run of this very idea, shown in the project's history
but never its own precedent (else each re-run of a killed idea would be pushed further towards KILL).
The precedent risk is the similarity-weighted mean of `outcome_risk` over the precedents (KILL 100,
PIVOT 50, GO 0 as shipped): ideas like this one that were killed raise the market risk, ideas that
went ahead lower it. It joins the market category as one more averaged sub-risk; it does not move
the composite or the recommendation, and it depends only on the request, so the decision stays
deterministic for the same seed and the same memory contents.

Memory that was down or slow leaves status "unavailable" and a warning in the decision; a request
without `memory` (memory not consulted) leaves status "not_consulted" and no evidence.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from smvm.errors import InvalidArgument
from smvm.timestamps import valid_timestamp
from smvm.v1 import analysis_service_pb2, memory_grounding_pb2, memory_service_pb2

from services.analysis.policy import Policy

OUTCOMES = ("KILL", "PIVOT", "GO")
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MAX_CITED = 5


@dataclass
class MemoryFindings:
    status: str
    evidence: list[str] = field(default_factory=list)
    precedents: list[memory_service_pb2.SimilarIdea] = field(default_factory=list)
    history: list[memory_service_pb2.DecisionRecord] = field(default_factory=list)
    precedent_risk: float | None = None
    warning: str | None = None

    def risk_part(self) -> tuple[float, str] | None:
        """The market sub-risk (score, evidence line), or None without precedents."""
        if self.precedent_risk is None:
            return None
        return self.precedent_risk, f"similar ideas' outcomes {self.precedent_risk:.0f}: {self.evidence[0]}"

    def to_proto(self) -> memory_grounding_pb2.MemoryEvidence:
        out = memory_grounding_pb2.MemoryEvidence(status=self.status, evidence=self.evidence,
                                                  precedents=self.precedents, decision_history=self.history)
        if self.precedent_risk is not None:
            out.precedent_risk = self.precedent_risk
        return out


def _counts(ideas) -> str:
    counts = Counter(i.recommendation for i in ideas)
    return ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o])


def precedents(grounding: memory_grounding_pb2.MemoryGrounding, policy: Policy) -> list[memory_service_pb2.SimilarIdea]:
    """The similar ideas that count as precedent, in memory's order (best first)."""
    min_similarity = policy.num("risk.memory_precedent.min_similarity")
    rerun = policy.num("risk.memory_precedent.rerun_similarity")
    outcomes = policy.get("risk.memory_precedent.outcome_risk")
    return [i for i in grounding.similar_ideas
            if i.recommendation in outcomes and i.similarity >= min_similarity
            and not (grounding.project_id and i.project_id == grounding.project_id and i.similarity >= rerun)]


def check_memory(grounding: memory_grounding_pb2.MemoryGrounding) -> None:
    """InvalidArgument naming the first field of the memory grounding this stage cannot use."""
    for i, idea in enumerate(grounding.similar_ideas):
        if not (math.isfinite(idea.similarity) and 0.0 <= idea.similarity <= 1.0):
            raise InvalidArgument(f"memory.similar_ideas[{i}].similarity", f"must be in [0, 1], got {idea.similarity}")
        if not idea.run_id:
            raise InvalidArgument(f"memory.similar_ideas[{i}].run_id", "is required")
    for i, record in enumerate(grounding.decision_history):
        if not record.run_id:
            raise InvalidArgument(f"memory.decision_history[{i}].run_id", "is required")
        if not valid_timestamp(record.decided_at):
            raise InvalidArgument(f"memory.decision_history[{i}].decided_at", "must be a time in years 1-9999")


def memory_findings(request: analysis_service_pb2.AnalyzeRequest, policy: Policy) -> MemoryFindings:
    if not request.HasField("memory"):
        return MemoryFindings("not_consulted")
    grounding = request.memory
    check_memory(grounding)
    if grounding.status != "used":
        why = grounding.error or "no answer"
        return MemoryFindings(grounding.status or "unavailable", warning=(
            f"memory:unavailable: {why}; decided without memory grounding (no learned competitors, similar "
            "past ideas or decision history)"))
    found = MemoryFindings("used", history=list(grounding.decision_history))
    cited = precedents(grounding, policy)
    found.precedents = cited
    if cited:
        outcomes = policy.get("risk.memory_precedent.outcome_risk")
        weight = math.fsum(i.similarity for i in cited)
        found.precedent_risk = round(math.fsum(i.similarity * float(outcomes[i.recommendation]) for i in cited) / weight, 6)
        runs = ", ".join(f"{i.run_id} {i.similarity:.2f} {i.recommendation}" for i in cited[:MAX_CITED])
        more = f", {len(cited) - MAX_CITED} more" if len(cited) > MAX_CITED else ""
        found.evidence.append(f"{len(cited)} similar idea{'s' if len(cited) != 1 else ''} decided before: "
                              f"{_counts(cited)} ({runs}{more})")
    else:
        found.evidence.append("no similar idea decided before")
    if found.history:
        recent = found.history[-MAX_CITED:]
        runs = ", ".join(f"{d.run_id} {d.recommendation} ({d.decided_at.ToDatetime():%Y-%m-%d})" for d in recent)
        more = f"; {len(found.history) - MAX_CITED} earlier" if len(found.history) > MAX_CITED else ""
        found.evidence.append(f"project {grounding.project_id or 'history'}: {len(found.history)} earlier "
                              f"decision{'s' if len(found.history) != 1 else ''}: {_counts(found.history)} ({runs}{more})")
    return found
