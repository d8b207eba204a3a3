"""The memory graph: what every decided run taught SMVM, as nodes and links in the store's database.

Nodes are projects, ideas, personas, competitors and decisions; links say project -proposed-> idea,
idea -targets-> persona, idea -faces-> competitor, idea -decided-> decision. The graph is learned
from the run store itself (each decided run's committed stage outputs), once per run, so no stage
has to report to it and a run learned twice is impossible. A competitor is one node per (domain,
name) shared by every run that met it; everything else belongs to one run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading

from smvm.db import Database
from smvm.db.database import Transaction
from smvm.v1 import (
    analysis_service_pb2,
    competitor_service_pb2,
    decision_pb2,
    idea_pb2,
    overwatch_service_pb2,
    persona_service_pb2,
)

from services.memory.retention import DATA_CLASSES, RetentionRules
from services.memory.similarity import IdeaCorpus

log = logging.getLogger(__name__)

DECIDED = ("DECISION_READY", "COMPLETED")


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def short(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


def competitor_key(domain: str, name: str) -> str:
    return f"competitor:{domain.lower()}:{' '.join(name.lower().split())}"


@dataclasses.dataclass
class SimilarIdea:
    run_id: str
    project_id: str
    title: str
    domain: str
    similarity: float
    recommendation: str
    confidence: float


class MemoryGraph:
    def __init__(self, db: Database):
        self.db = db
        # Idea corpora by domain, kept between queries (IdeaCorpus says why): corpus, node -> (project,
        # run, domain, title), node -> last_seen it was read at.
        self._corpora: dict[str, tuple[IdeaCorpus, dict[str, tuple[str, str, str, str]], dict[str, str]]] = {}
        self._corpora_lock = threading.Lock()

    # ------------------------------------------------------------------ learning
    def sync(self) -> list[str]:
        """Learn every decided run not yet in the graph; return their run ids."""
        with self.db.reading() as tx:
            pending = [r[0] for r in tx.all(
                "SELECT r.run_id FROM runs r LEFT JOIN memory_learned_runs m ON m.run_id = r.run_id "
                "WHERE m.run_id IS NULL AND r.state IN (?, ?) ORDER BY r.created_at, r.run_id", DECIDED)]
        learned = []
        for run_id in pending:
            try:
                with self.db.transaction() as tx:
                    if self._learn(tx, run_id):
                        learned.append(run_id)
            except Exception:  # one undecodable run must not stop the others
                log.exception("could not learn run %s", run_id)
        return learned

    def _learn(self, tx: Transaction, run_id: str) -> bool:
        if tx.one(f"SELECT 1 FROM memory_learned_runs WHERE run_id = ?{tx.for_update()}", (run_id,)):
            return False  # another replica learned it meanwhile
        record = json.loads(tx.one("SELECT record FROM runs WHERE run_id = ?", (run_id,))[0])
        outputs = {stage: bytes(blob) for stage, blob in tx.all(
            "SELECT stage, output FROM stage_outputs WHERE run_id = ?", (run_id,))}
        decided = tx.one("SELECT time FROM events WHERE run_id = ? AND type = ? ORDER BY seq", (run_id, "run.decision_ready"))
        seen = iso(parse(decided[0])) if decided else iso(dt.datetime.now(dt.timezone.utc))
        project_id = record["project_id"]
        idea = idea_pb2.Idea.FromString(outputs.get("ingestion", b""))
        domain = idea.domain.lower()

        self._node(tx, f"project:{project_id}", "project", project_id, "", "", project_id, {"project_id": project_id}, seen)
        idea_id = f"idea:{run_id}"
        text = " ".join([idea.title, idea.description, idea.value_proposition, idea.target_market, " ".join(idea.features)])
        self._node(tx, idea_id, "idea", project_id, run_id, domain, idea.title,
                   {"title": idea.title, "text": text, "features": list(idea.features)}, seen)
        self._edge(tx, f"project:{project_id}", idea_id, "proposed", run_id, seen)

        if "personas" in outputs:
            personas = persona_service_pb2.GeneratePersonasResponse.FromString(outputs["personas"])
            for persona in personas.personas:
                node = f"persona:{run_id}:{persona.id}"
                self._node(tx, node, "persona", project_id, run_id, domain, persona.name,
                           {"name": persona.name, "segment": persona.segment, "weight": persona.weight}, seen)
                self._edge(tx, idea_id, node, "targets", run_id, seen)

        if "competitors" in outputs:
            landscape = competitor_service_pb2.BuildLandscapeResponse.FromString(outputs["competitors"])
            for competitor in landscape.competitors:
                node = competitor_key(domain, competitor.name)
                if competitor.provenance == "learned":
                    # Taken from memory itself: the run met it, but that is no new sighting (no fresh
                    # price, source or last_seen, or retention would never let it expire).
                    if tx.one("SELECT 1 FROM memory_nodes WHERE node_id = ?", (node,)):
                        self._edge(tx, idea_id, node, "faces", run_id, seen)
                    continue
                data = {"name": competitor.name, "monthly_price_usd": competitor.monthly_price_usd,
                        "features": list(competitor.features), "synthetic": competitor.synthetic,
                        "source": competitor.source, "run_id": run_id}
                if competitor.market_share > 0:
                    data["market_share"] = competitor.market_share
                self._node(tx, node, "competitor", "", "", domain, competitor.name, data, seen)
                self._edge(tx, idea_id, node, "faces", run_id, seen)

        if "analysis" in outputs:
            decision = analysis_service_pb2.AnalyzeResponse.FromString(outputs["analysis"]).decision
            verdict = ""
            if "overwatch" in outputs:
                review = overwatch_service_pb2.ReviewDecisionResponse.FromString(outputs["overwatch"]).review
                verdict = short(decision_pb2.ReviewVerdict.Name(review.verdict), "REVIEW_VERDICT_")
            node = f"decision:{run_id}"
            self._node(tx, node, "decision", project_id, run_id, domain, idea.title, {
                "recommendation": short(decision_pb2.Recommendation.Name(decision.recommendation), "RECOMMENDATION_"),
                "confidence": decision.confidence, "composite_score": decision.composite_score,
                "review_verdict": verdict, "idea_title": idea.title, "decided_at": seen}, seen)
            self._edge(tx, idea_id, node, "decided", run_id, seen)
        tx.execute("INSERT INTO memory_learned_runs (run_id, learned_at) VALUES (?, ?)",
                   (run_id, iso(dt.datetime.now(dt.timezone.utc))))
        return True

    @staticmethod
    def _node(tx: Transaction, node_id: str, kind: str, project_id: str, run_id: str, domain: str, label: str,
              data: dict, seen: str) -> None:
        existing = tx.one(f"SELECT first_seen, last_seen FROM memory_nodes WHERE node_id = ?{tx.for_update()}", (node_id,))
        if existing is None:
            tx.execute(
                "INSERT INTO memory_nodes (node_id, kind, project_id, run_id, domain, label, data, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (node_id, kind, project_id, run_id, domain, label, json.dumps(data), seen, seen))
        elif seen >= existing[1]:  # the newest sighting describes it (a competitor's latest price)
            tx.execute("UPDATE memory_nodes SET label = ?, data = ?, last_seen = ? WHERE node_id = ?",
                       (label, json.dumps(data), seen, node_id))

    @staticmethod
    def _edge(tx: Transaction, src: str, dst: str, kind: str, run_id: str, seen: str) -> None:
        if not tx.one("SELECT 1 FROM memory_edges WHERE src = ? AND dst = ? AND kind = ? AND run_id = ?", (src, dst, kind, run_id)):
            tx.execute("INSERT INTO memory_edges (src, dst, kind, run_id, created_at) VALUES (?, ?, ?, ?, ?)",
                       (src, dst, kind, run_id, seen))

    # ------------------------------------------------------------------ queries
    def similar_ideas(self, text: str, *, domain: str = "", limit: int = 5, exclude_run_id: str = "",
                      min_similarity: float = 0.0) -> list[SimilarIdea]:
        domain = domain.lower()
        with self._corpora_lock:  # queries run in worker threads; one refresh of a corpus at a time
            with self.db.reading() as tx:
                corpus, ideas = self._refreshed_corpus(tx, domain)
            ranked = corpus.query(text, limit, min_similarity, exclude=frozenset({f"idea:{exclude_run_id}"}))
        if not ranked:
            return []
        decision_nodes = [f"decision:{ideas[node_id][1]}" for node_id, _ in ranked]  # by primary key
        with self.db.reading() as tx:
            decisions = {r[0]: json.loads(r[1]) for r in tx.all(
                f"SELECT run_id, data FROM memory_nodes WHERE node_id IN ({', '.join('?' * len(decision_nodes))})",
                decision_nodes)}
        out = []
        for node_id, score in ranked:
            project_id, run_id, dom, title = ideas[node_id]
            decision = decisions.get(run_id, {})
            out.append(SimilarIdea(run_id, project_id, title, dom, score,
                                   decision.get("recommendation", ""), decision.get("confidence", 0.0)))
        return out

    def _refreshed_corpus(self, tx: Transaction, domain: str) -> tuple[IdeaCorpus, dict[str, tuple[str, str, str, str]]]:
        """The domain's idea corpus ("" = every domain) brought up to the database: ideas learned
        since the last query are read and tokenised, ideas retention deleted are dropped. Another
        memory replica's learning is seen the same way, since the database is the reference."""
        where, params = "kind = ?", ["idea"]
        if domain:
            where += " AND domain = ?"
            params.append(domain)
        current = {node_id: last_seen for node_id, last_seen in tx.all(
            f"SELECT node_id, last_seen FROM memory_nodes WHERE {where}", params)}
        corpus, ideas, versions = self._corpora.setdefault(domain, (IdeaCorpus(), {}, {}))
        for node_id in [k for k in versions if k not in current]:
            corpus.remove(node_id)
            del ideas[node_id], versions[node_id]
        changed = [k for k, seen in current.items() if versions.get(k) != seen]
        for first in range(0, len(changed), 500):
            batch = changed[first:first + 500]
            for node_id, project_id, run_id, dom, data, last_seen in tx.all(
                    "SELECT node_id, project_id, run_id, domain, data, last_seen FROM memory_nodes "
                    f"WHERE node_id IN ({', '.join('?' * len(batch))})", batch):
                item = json.loads(data)
                corpus.add(node_id, item["text"])
                ideas[node_id] = (project_id, run_id, dom, item["title"])
                versions[node_id] = last_seen
        return corpus, ideas

    def known_competitors(self, domain: str, *, limit: int = 50, exclude_synthetic: bool = False) -> list[dict]:
        with self.db.reading() as tx:
            rows = tx.all(
                "SELECT n.node_id, n.domain, n.data, n.last_seen, COUNT(DISTINCT e.run_id) FROM memory_nodes n "
                "LEFT JOIN memory_edges e ON e.dst = n.node_id AND e.kind = ? "
                "WHERE n.kind = ? AND n.domain = ? GROUP BY n.node_id, n.domain, n.data, n.last_seen",
                ("faces", "competitor", domain.lower()))
        out = []
        for _node_id, dom, data, last_seen, runs_seen in rows:
            item = json.loads(data)
            if exclude_synthetic and item.get("synthetic"):
                continue
            out.append({**item, "domain": dom, "last_seen": last_seen, "runs_seen": int(runs_seen)})
        out.sort(key=lambda c: (-c["runs_seen"], c["name"].lower()))
        return out[:limit]

    def decision_history(self, project_id: str) -> list[dict]:
        with self.db.reading() as tx:
            rows = tx.all("SELECT run_id, data FROM memory_nodes WHERE kind = ? AND project_id = ? ORDER BY first_seen, run_id",
                          ("decision", project_id))
        return [{"run_id": run_id, **json.loads(data)} for run_id, data in rows]

    # ------------------------------------------------------------------ retention
    def apply_retention(self, rules: RetentionRules, now: dt.datetime, *, dry_run: bool = False) -> dict[str, int]:
        """Delete nodes (and their links) last seen longer ago than their class's rule allows."""
        deleted = {data_class: 0 for data_class in DATA_CLASSES}
        with self.db.transaction() as tx:
            for data_class, days in rules.days.items():
                if days <= 0:
                    continue
                cutoff = iso(now - dt.timedelta(days=days))
                expired = [r[0] for r in tx.all(
                    "SELECT node_id FROM memory_nodes WHERE kind = ? AND last_seen < ?", (data_class, cutoff))]
                deleted[data_class] = len(expired)
                if dry_run:
                    continue
                for node_id in expired:
                    tx.execute("DELETE FROM memory_edges WHERE src = ? OR dst = ?", (node_id, node_id))
                    tx.execute("DELETE FROM memory_nodes WHERE node_id = ?", (node_id,))
        return deleted
