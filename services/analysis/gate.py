"""The integration guide's T0+3 CrewController gate: proceed | hold | reject, criteria one by one.

KILL rejects (the guide blocks progression on KILL); GO and PIVOT proceed only when every gate
criterion passes, otherwise they hold until the missing piece (competitor list, build estimate,
TAM) is supplied.

"Top 5 competitors identified" counts grounded competitors only: those whose provenance is in the
policy's `gate.counted_provenances` (default imported - the founder's list - and learned - met by
earlier runs, from memory), never the domain prior's synthetic archetypes, which are assumptions,
not identified competitors.
"""

from __future__ import annotations

from collections import Counter

from services.analysis.policy import PROVENANCES
from smvm.v1 import decision_pb2


def provenance(competitor) -> str:
    """Where a competitor comes from; for one stored before Competitor.provenance existed, read off
    its `synthetic` flag and `source` ("import:..." / "memory:..."), else "unspecified"."""
    if competitor.provenance:
        return competitor.provenance
    if competitor.synthetic:
        return "synthetic"
    if competitor.source.startswith("import"):
        return "imported"
    if competitor.source.startswith("memory"):
        return "learned"
    return "unspecified"


def _competitors_criterion(request, policy) -> decision_pb2.GateCriterion:
    need = int(policy.num("gate.min_competitors"))
    counted = tuple(policy.get("gate.counted_provenances"))
    counts = Counter(provenance(c) for c in request.competitors)
    identified = sum(counts[p] for p in counted)
    listed = [f"{counts[p]} {p}" for p in PROVENANCES] + [f"{n} {p}" for p, n in sorted(counts.items()) if p not in PROVENANCES]
    evidence = (f"{identified} competitors identified (provenance {' or '.join(counted)}) of {len(request.competitors)} "
                f"in the landscape: {', '.join(listed)}; need {need}")
    if not request.competitors and request.HasField("simulation_config") and request.simulation_config.competitors:
        evidence += (f" (the simulation's {len(request.simulation_config.competitors)} competitors come without a "
                     "competitor list, so without provenance)")
    return decision_pb2.GateCriterion(name="top_5_competitors_identified", passed=identified >= need, evidence=evidence)


def gate_criteria(used, knockouts, request, sim, policy) -> list[decision_pb2.GateCriterion]:
    tam = used.market.tam_usd  # grounding imports first, then idea.market_size
    tam_min = policy.num("market.tam_min_usd")
    idea = request.idea
    has_build = idea.HasField("estimated_build_months")
    tech_ok = has_build and idea.estimated_build_months <= sim.months
    if not has_build and not policy.get("gate.technical_assessment_required"):
        tech_ok = True
    return [
        decision_pb2.GateCriterion(
            name="market_size_tam_at_least_1m", passed=tam >= tam_min,
            evidence=(f"TAM ${tam:,.0f}/yr ({used.market.source}) vs minimum ${tam_min:,.0f}" if tam > 0 else "TAM not given")),
        decision_pb2.GateCriterion(
            name="technical_feasibility", passed=bool(tech_ok),
            evidence=(f"estimated build {idea.estimated_build_months:g} months within the {sim.months}-month horizon"
                      if has_build else "no build estimate given (basic architecture assessment missing)")),
        _competitors_criterion(request, policy),
        decision_pb2.GateCriterion(
            name="no_show_stopping_risk", passed=not knockouts,
            evidence="; ".join(t for t, _ in knockouts) if knockouts else "no show-stopper found"),
    ]


FACTOR_NAMES = {
    "market_opportunity": "market_opportunity",
    "technical_feasibility": "technical_risks",
    "competitive_position": "competitive_pressure",
}


def gate_decision(recommendation, confidence, used, knockouts, request, sim, policy, next_steps) -> decision_pb2.GateDecision:
    criteria = gate_criteria(used, knockouts, request, sim, policy)
    if recommendation == "KILL":
        verdict = "reject"
    elif all(c.passed for c in criteria):
        verdict = "proceed"
    else:
        verdict = "hold"
    gate = decision_pb2.GateDecision(gate_decision=verdict, confidence_score=confidence, criteria=criteria)
    for dim in used.dimensions:
        gate.key_factors.add(factor=FACTOR_NAMES.get(dim.name, dim.name), score=dim.score / 100.0, evidence=dim.evidence)
    steps = list(next_steps)
    if verdict == "hold":
        steps = [f"supply what the gate lacks: {c.name} ({c.evidence})" for c in criteria if not c.passed] + steps
    gate.next_steps.extend(steps)
    return gate
