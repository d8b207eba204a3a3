"""Memory of earlier runs in the decision: similar ideas decided before and the project's history as
evidence, the precedent rule's market sub-risk, and memory that was unavailable."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings, strategies as st

from services.analysis.decide import analyze
from services.analysis.policy import load_policy
from services.analysis.precedent import memory_findings
from smvm.errors import InvalidArgument
from smvm.v1 import analysis_service_pb2, memory_grounding_pb2 as mg, memory_service_pb2 as mem

from tests.analysis.test_decide import make_request

POLICY = load_policy()


def idea(run_id, similarity, recommendation, project="PROJ-OTHER"):
    return mem.SimilarIdea(run_id=run_id, project_id=project, title=f"idea {run_id}", domain="fintech",
                           similarity=similarity, recommendation=recommendation, confidence=0.7)


def record(run_id, recommendation, day):
    r = mem.DecisionRecord(run_id=run_id, idea_title="earlier", recommendation=recommendation, confidence=0.6)
    r.decided_at.FromDatetime(dt.datetime(2026, 11, day, 12, tzinfo=dt.timezone.utc))
    return r


def grounding(similar=(), history=(), status="used", error=""):
    return mg.MemoryGrounding(status=status, error=error, similar_ideas=list(similar), decision_history=list(history),
                              project_id="PROJ-ME")


SIMILAR = [
    idea("RUN-SAME", 1.0, "KILL", project="PROJ-ME"),  # a re-run of this very idea: history, not precedent
    idea("RUN-A", 0.8, "KILL"),
    idea("RUN-B", 0.6, "KILL"),
    idea("RUN-C", 0.4, "PIVOT"),
    idea("RUN-U", 0.5, ""),  # never decided
    idea("RUN-D", 0.1, "GO"),  # below min_similarity (0.2)
]


def request_with(memory=None):
    req = analysis_service_pb2.AnalyzeRequest()
    if memory is not None:
        req.memory.CopyFrom(memory)
    return req


def test_the_precedent_rule_by_hand():
    found = memory_findings(request_with(grounding(SIMILAR, [record("RUN-SAME", "KILL", 20), record("RUN-P", "PIVOT", 22)])),
                            POLICY)
    assert found.status == "used" and [i.run_id for i in found.precedents] == ["RUN-A", "RUN-B", "RUN-C"]
    # (0.8 x 100 + 0.6 x 100 + 0.4 x 50) / (0.8 + 0.6 + 0.4)
    assert found.precedent_risk == pytest.approx(160 / 1.8, abs=1e-6)
    assert found.evidence[0] == "3 similar ideas decided before: 2 KILL, 1 PIVOT (RUN-A 0.80 KILL, RUN-B 0.60 KILL, RUN-C 0.40 PIVOT)"
    assert found.evidence[1] == ("project PROJ-ME: 2 earlier decisions: 1 KILL, 1 PIVOT "
                                 "(RUN-SAME KILL (2026-11-20), RUN-P PIVOT (2026-11-22))")
    assert found.warning is None


def test_no_precedent_adds_no_risk_and_says_so():
    found = memory_findings(request_with(grounding([idea("RUN-D", 0.1, "GO")])), POLICY)
    assert found.precedent_risk is None and found.risk_part() is None
    assert found.evidence == ["no similar idea decided before"]


def test_unavailable_memory_is_a_warning_and_not_consulted_is_silent():
    down = memory_findings(request_with(grounding(status="unavailable", error="ListKnownCompetitors: UNAVAILABLE")), POLICY)
    assert down.status == "unavailable" and down.warning.startswith("memory:unavailable: ListKnownCompetitors: UNAVAILABLE")
    assert down.evidence == [] and down.risk_part() is None
    silent = memory_findings(request_with(), POLICY)
    assert silent.status == "not_consulted" and silent.warning is None and silent.evidence == []


@pytest.mark.parametrize("bad, field", [
    (grounding([idea("RUN-A", 1.5, "KILL")]), "memory.similar_ideas[0].similarity"),
    (grounding([idea("", 0.5, "KILL")]), "memory.similar_ideas[0].run_id"),
    (grounding(history=[record("", "GO", 3)]), "memory.decision_history[0].run_id"),
    (grounding(history=[mem.DecisionRecord(run_id="RUN-X", decided_at={"seconds": 10**12})]),
     "memory.decision_history[0].decided_at"),
])
def test_malformed_memory_is_refused_naming_the_field(bad, field):
    with pytest.raises(InvalidArgument) as err:
        memory_findings(request_with(bad), POLICY)
    assert err.value.field == field


OUTCOME = st.sampled_from(["KILL", "PIVOT", "GO"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.2, 1.0), OUTCOME), min_size=1, max_size=8), st.data())
def test_precedent_risk_is_bounded_and_a_kill_never_lowers_it(rows, data):
    ideas = [idea(f"RUN-{i}", s, o) for i, (s, o) in enumerate(rows)]
    risk = memory_findings(request_with(grounding(ideas)), POLICY).precedent_risk
    assert 0.0 <= risk <= 100.0
    k = data.draw(st.integers(0, len(ideas) - 1))
    ideas[k] = idea(ideas[k].run_id, ideas[k].similarity, "KILL")
    assert memory_findings(request_with(grounding(ideas)), POLICY).precedent_risk >= risk - 1e-9


@pytest.fixture(scope="module")
def decisions():
    base = make_request(competitors=2)
    grounded = analysis_service_pb2.AnalyzeRequest()
    grounded.CopyFrom(base)
    grounded.memory.CopyFrom(grounding(SIMILAR, [record("RUN-P", "PIVOT", 22)]))
    down = analysis_service_pb2.AnalyzeRequest()
    down.CopyFrom(base)
    down.memory.CopyFrom(grounding(status="unavailable", error="DEADLINE_EXCEEDED after 2s"))
    opts = dict(render_documents=False)
    return analyze(base, **opts), analyze(grounded, **opts), analyze(grounded, **opts), analyze(down, **opts)


def test_precedents_raise_the_market_risk_by_the_rule_and_leave_the_call_alone(decisions):
    base, grounded, again, _ = decisions
    b, g = base.decision, grounded.decision
    assert g.recommendation == b.recommendation and g.composite_score == b.composite_score and g.confidence == b.confidence
    market_b = next(r for r in b.risks if r.category == "market")
    market_g = next(r for r in g.risks if r.category == "market")
    n = len(market_b.evidence)
    assert g.memory.precedent_risk == pytest.approx(160 / 1.8, abs=1e-6)
    assert market_g.score == pytest.approx((market_b.score * n + g.memory.precedent_risk) / (n + 1), abs=1e-9)
    assert market_g.evidence[-1].startswith("similar ideas' outcomes 89: 3 similar ideas decided before: 2 KILL, 1 PIVOT")
    assert [r for r in g.risks if r.category != "market"] == [r for r in b.risks if r.category != "market"]
    assert g.memory.status == "used"
    assert [i.run_id for i in g.memory.precedents] == ["RUN-A", "RUN-B", "RUN-C"]
    assert "RUN-A 0.80 KILL" in g.memory.evidence[0] and "RUN-P PIVOT" in g.memory.evidence[1]
    assert "## Memory of earlier runs" in grounded.report_markdown and "RUN-B" in grounded.report_markdown
    assert b.memory.status == "not_consulted" and "## Memory of earlier runs" not in base.report_markdown
    # deterministic for the same memory contents
    assert again.decision.SerializeToString(deterministic=True) == grounded.decision.SerializeToString(deterministic=True)


def test_a_run_decided_without_memory_says_so_in_its_warnings(decisions):
    base, _, _, down = decisions
    assert down.decision.recommendation == base.decision.recommendation
    assert down.decision.memory.status == "unavailable"
    assert any(w.startswith("memory:unavailable: DEADLINE_EXCEEDED after 2s") for w in down.decision.warnings)
