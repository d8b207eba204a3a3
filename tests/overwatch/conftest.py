"""A crafted review request that every rule passes; tests mutate one thing to trip one rule."""

from __future__ import annotations

import pytest

from smvm.db.testing import database_url, db, pg_cluster, pg_server_url, pg_url  # noqa: F401 (fixtures)
from smvm.v1 import decision_pb2, market_pb2, overwatch_service_pb2 as pb, simulation_pb2

# The analysis policy's decision matrix, with scores whose weighted mean is exactly 80.
CRITERIA = [
    ("market_opportunity", 0.25, 84.0),
    ("wtp_validation", 0.20, 80.0),
    ("competitive_position", 0.15, 76.0),
    ("technical_feasibility", 0.15, 80.0),
    ("financial_viability", 0.10, 80.0),
    ("risk", 0.10, 76.0),
    ("team_capability", 0.05, 80.0),
]


def _persona(pid: str, segment: str, weight: float, wtp_p90: float = 40.0) -> market_pb2.Persona:
    return market_pb2.Persona(
        id=pid, name=pid, segment=segment, weight=weight,
        wtp=market_pb2.WtpDistribution(family="lognormal", median_usd=20, p10_usd=10, p50_usd=20, p90_usd=wtp_p90),
    )


def healthy_go_request() -> pb.ReviewDecisionRequest:
    decision = decision_pb2.Decision(
        recommendation=decision_pb2.RECOMMENDATION_GO,
        confidence=0.8,
        composite_score=80.0,
        criteria=[decision_pb2.Criterion(name=n, weight=w, score=s) for n, w, s in CRITERIA],
        gate=decision_pb2.GateDecision(gate_decision="proceed", confidence_score=0.8),
        financials=decision_pb2.Financials(probability_npv_positive=0.7),
        market=decision_pb2.MarketSizing(tam_usd=5e8, sam_usd=5e7, som_usd=2e6, som_bottom_up_usd=1.5e6),
    )
    bias = market_pb2.BiasReport(
        passed=True, max_segment_weight=0.3, segment_weight_cap=0.5, diversity_entropy=0.97,
        min_diversity_entropy=0.7, wtp_upper_range_usd=50.0,
    )
    personas = [_persona("p1", "students", 0.3), _persona("p2", "families", 0.3),
                _persona("p3", "retirees", 0.2), _persona("p4", "freelancers", 0.2)]
    final = simulation_pb2.MonthStats(
        month=36,
        customers=simulation_pb2.Quantiles(p10=300, p50=500, p90=700),
        revenue_usd=simulation_pb2.Quantiles(p10=8000, p50=10000, p90=14000),
    )
    simulation = simulation_pb2.SimulationResult(
        iterations=1000, months=36, month_stats=[final],
        offering_shares=[simulation_pb2.OfferingShare(name=n) for n in ("our_product", "rival_a", "rival_b", "none")],
        wtp_usd=simulation_pb2.Quantiles(p10=10, p50=20, p90=40),
    )
    return pb.ReviewDecisionRequest(run_id="RUN-1", decision=decision, bias_report=bias, personas=personas,
                                    simulation=simulation)


@pytest.fixture
def healthy_go() -> pb.ReviewDecisionRequest:
    return healthy_go_request()


@pytest.fixture
def persona():
    return _persona
