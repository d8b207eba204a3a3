"""The memory graph learned from real run-store rows, on SQLite and PostgreSQL."""

import datetime as dt

import pytest

from smvm.errors import InvalidArgument
from smvm.v1 import (
    analysis_service_pb2, competitor_service_pb2, decision_pb2, idea_pb2, market_pb2, overwatch_service_pb2,
    persona_service_pb2,
)
from services.memory.graph import MemoryGraph
from services.memory.retention import RetentionRules
from services.orchestrator.rundir import RunDirectory
from services.orchestrator.store import RunRecord, RunStore


def _ser(message) -> bytes:
    return message.SerializeToString(deterministic=True)


def decided_run(store: RunStore, run_id: str, project_id: str, title: str, description: str, domain: str,
                competitors: list[tuple[str, float, bool]], recommendation: str = "GO", state: str = "DECISION_READY",
                landscape: competitor_service_pb2.BuildLandscapeResponse | None = None):
    """A run as the orchestrator leaves it: stage outputs committed, then DECISION_READY."""
    record = RunRecord(run_id=run_id, project_id=project_id, state="INITIATED", created_at=f"2026-11-0{len(run_id) % 9 + 1}T00:00:00Z",
                       updated_at="2026-11-01T00:00:00Z", estimated_completion="", request_sha256="x",
                       correlation_id="c", seed=1, source_shape="business_idea")
    idea = idea_pb2.Idea(title=title, description=description, domain=domain)
    store.create(record, RunDirectory(store.root, project_id, run_id), actor="t", stage_outputs={"ingestion": _ser(idea)})
    personas = persona_service_pb2.GeneratePersonasResponse(personas=[
        market_pb2.Persona(id=f"P{i}", name=f"Persona {i}", segment="students", weight=0.5) for i in range(2)])
    landscape = landscape or competitor_service_pb2.BuildLandscapeResponse(competitors=[
        market_pb2.Competitor(id=name, name=name, monthly_price_usd=price, synthetic=synthetic, features=["budgeting"])
        for name, price, synthetic in competitors])
    analysis = analysis_service_pb2.AnalyzeResponse(decision=decision_pb2.Decision(
        recommendation=decision_pb2.Recommendation.Value(f"RECOMMENDATION_{recommendation}"), confidence=0.7,
        composite_score=66.0))
    review = overwatch_service_pb2.ReviewDecisionResponse(review=decision_pb2.Review(verdict=decision_pb2.REVIEW_VERDICT_APPROVE))
    for stage, output in (("personas", personas), ("competitors", landscape), ("analysis", analysis), ("overwatch", review)):
        store.update(run_id, "stage.completed", state="RUNNING", stage_output=(stage, _ser(output)))
    if state != "RUNNING":
        store.update(run_id, "run.decision_ready", state=state, recommendation=recommendation)


@pytest.fixture
def store(db, runs_dir):
    return RunStore(runs_dir, db)


@pytest.fixture
def graph(db):
    return MemoryGraph(db)


def test_decided_runs_are_learned_once_and_unfinished_ones_not_at_all(store, graph):
    decided_run(store, "RUN-A", "PROJ-1", "Student budgeting app", "budgets for students", "fintech", [("Mint", 0.0, False)])
    decided_run(store, "RUN-R", "PROJ-1", "Half done", "still running", "fintech", [], state="RUNNING")
    assert graph.sync() == ["RUN-A"]
    assert graph.sync() == []
    assert [d["run_id"] for d in graph.decision_history("PROJ-1")] == ["RUN-A"]


def test_similar_past_ideas_rank_by_text_and_carry_their_decision(store, graph):
    decided_run(store, "RUN-A", "PROJ-1", "Student budgeting app", "A mobile budgeting app for university students",
                "fintech", [], "GO")
    decided_run(store, "RUN-B", "PROJ-2", "Dog walking marketplace", "Book dog walkers nearby", "pets", [], "KILL")
    decided_run(store, "RUN-C", "PROJ-3", "Budget coach", "Budgeting coach for young professionals", "fintech", [], "PIVOT")
    graph.sync()
    found = graph.similar_ideas("budgeting app for students", limit=5)
    assert [i.run_id for i in found] == ["RUN-A", "RUN-C"]
    assert found[0].recommendation == "GO" and found[0].confidence == pytest.approx(0.7)
    assert found[0].similarity > found[1].similarity > 0
    assert [i.run_id for i in graph.similar_ideas("budgeting app for students", exclude_run_id="RUN-A")] == ["RUN-C"]
    assert graph.similar_ideas("budgeting app", domain="pets") == []


def test_competitors_known_in_a_domain_merge_across_runs(store, graph):
    decided_run(store, "RUN-A", "PROJ-1", "A", "a", "fintech", [("Mint", 0.0, False), ("YNAB", 14.99, False)])
    decided_run(store, "RUN-B", "PROJ-2", "B", "b", "FinTech", [("ynab", 15.99, False), ("Synthetic Co", 5.0, True)])
    decided_run(store, "RUN-C", "PROJ-3", "C", "c", "pets", [("Rover", 20.0, False)])
    graph.sync()
    known = graph.known_competitors("fintech")
    assert [(c["name"], c["runs_seen"]) for c in known] == [("ynab", 2), ("Mint", 1), ("Synthetic Co", 1)]
    assert known[0]["monthly_price_usd"] == pytest.approx(15.99)  # the latest sighting's price
    assert [c["name"] for c in graph.known_competitors("fintech", exclude_synthetic=True)] == ["ynab", "Mint"]
    assert [c["name"] for c in graph.known_competitors("pets")] == ["Rover"]


def test_a_projects_decision_history_is_in_order(store, graph):
    decided_run(store, "RUN-1", "PROJ-9", "First take", "x", "fintech", [], "KILL")
    decided_run(store, "RUN-2", "PROJ-9", "Second take", "y", "fintech", [], "PIVOT")
    decided_run(store, "RUN-3", "PROJ-8", "Other", "z", "fintech", [], "GO")
    graph.sync()
    history = graph.decision_history("PROJ-9")
    assert [(d["run_id"], d["recommendation"], d["review_verdict"], d["idea_title"]) for d in history] == [
        ("RUN-1", "KILL", "APPROVE", "First take"), ("RUN-2", "PIVOT", "APPROVE", "Second take")]


def test_retention_deletes_each_class_after_its_own_period(store, graph, db):
    decided_run(store, "RUN-A", "PROJ-1", "Student budgeting", "budgets", "fintech", [("Mint", 0.0, False)])
    graph.sync()
    rules = RetentionRules.from_mapping({"persona": 180, "idea": 730, "competitor": 365})
    now = dt.datetime.now(dt.timezone.utc)

    assert graph.apply_retention(rules, now + dt.timedelta(days=200), dry_run=True)["persona"] == 2
    assert _count(db, "persona") == 2  # a dry run deletes nothing
    deleted = graph.apply_retention(rules, now + dt.timedelta(days=200))
    assert (deleted["persona"], deleted["competitor"], deleted["idea"]) == (2, 0, 0)
    assert _count(db, "persona") == 0 and _count(db, "competitor") == 1
    deleted = graph.apply_retention(rules, now + dt.timedelta(days=800))
    assert (deleted["competitor"], deleted["idea"], deleted["decision"], deleted["project"]) == (1, 1, 0, 0)
    # decisions are kept for ever, so the project's history survives its idea
    assert [d["idea_title"] for d in graph.decision_history("PROJ-1")] == ["Student budgeting"]
    with db.transaction() as tx:
        assert tx.one("SELECT COUNT(*) FROM memory_edges WHERE dst LIKE 'persona:%' OR dst LIKE 'competitor:%'") == (0,)


def _count(db, kind: str) -> int:
    with db.transaction() as tx:
        return tx.one("SELECT COUNT(*) FROM memory_nodes WHERE kind = ?", (kind,))[0]


@pytest.mark.parametrize("raw, field", [({"personas": 3}, "personas"), ({"idea": -1}, "idea"), ({"idea": "long"}, "idea")])
def test_bad_retention_rules_name_the_data_class(raw, field):
    with pytest.raises(InvalidArgument) as err:
        RetentionRules.from_mapping(raw)
    assert err.value.field == field


def test_the_shipped_rules_load():
    rules = RetentionRules.load()
    assert rules.days["decision"] == 0 and rules.days["persona"] > 0


def test_a_competitor_keeps_the_source_it_was_learned_from_and_a_learned_sighting_is_no_new_sighting(store, graph):
    imported = market_pb2.Competitor(name="Tallyho", monthly_price_usd=12.0, market_share=0.08, provenance="imported",
                                     source="import:0123456789ab;G2", features=["invoicing"])
    decided_run(store, "RUN-A", "PROJ-1", "A", "a", "fintech", [],
                landscape=competitor_service_pb2.BuildLandscapeResponse(competitors=[imported]))
    graph.sync()
    (first,) = graph.known_competitors("fintech")
    assert (first["source"], first["run_id"], first["market_share"], first["runs_seen"]) == (
        "import:0123456789ab;G2", "RUN-A", 0.08, 1)
    # A later run took it from memory (at another price, say): the run counts, the sighting does not.
    learned = market_pb2.Competitor(name="Tallyho", monthly_price_usd=99.0, provenance="learned", source="memory:RUN-A",
                                    learned=market_pb2.LearnedFrom(run_id="RUN-A", source="import:0123456789ab;G2"))
    gone = market_pb2.Competitor(name="Forgotten", monthly_price_usd=5.0, provenance="learned", source="memory:RUN-Z")
    decided_run(store, "RUN-BB", "PROJ-2", "B", "b", "fintech", [],
                landscape=competitor_service_pb2.BuildLandscapeResponse(competitors=[learned, gone]))
    graph.sync()
    (after,) = graph.known_competitors("fintech")  # a learned entry memory no longer holds is not re-created
    assert after["runs_seen"] == 2
    assert (after["source"], after["run_id"], after["monthly_price_usd"], after["last_seen"]) == (
        first["source"], "RUN-A", 12.0, first["last_seen"])


def test_the_kept_idea_corpus_follows_learning_retention_and_other_replicas(store, graph, db):
    """similar_ideas keeps its corpus between queries; it must still see every idea the database
    holds now: one learned after the last query, one learned by another replica, none deleted."""
    decided_run(store, "RUN-A", "PROJ-1", "Student budgeting app", "budgeting app for university students", "fintech", [])
    graph.sync()
    assert [i.run_id for i in graph.similar_ideas("budgeting app for students")] == ["RUN-A"]

    decided_run(store, "RUN-B", "PROJ-2", "Budgeting app for students", "budgeting app for students", "fintech", [])
    other_replica = MemoryGraph(db)
    assert other_replica.sync() == ["RUN-B"]
    found = graph.similar_ideas("budgeting app for students")  # this replica learned nothing itself
    assert [i.run_id for i in found] == ["RUN-B", "RUN-A"] and found[0].similarity == pytest.approx(1.0)
    # a fresh graph (no kept corpus) answers the same scores
    fresh = MemoryGraph(db).similar_ideas("budgeting app for students")
    assert [(i.run_id, i.similarity) for i in fresh] == [(i.run_id, pytest.approx(i.similarity)) for i in found]

    rules = RetentionRules.from_mapping({"persona": 180, "idea": 730, "competitor": 365})
    graph.apply_retention(rules, dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=800))
    assert graph.similar_ideas("budgeting app for students") == []
    assert other_replica.similar_ideas("budgeting app for students") == []
