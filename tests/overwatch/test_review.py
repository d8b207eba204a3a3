"""Known-answer tests: one crafted request per rule, and the verdict it must get."""

from __future__ import annotations

import pytest

from smvm.errors import InvalidArgument
from smvm.v1 import decision_pb2

from services.overwatch.policy import load_policy
from services.overwatch.review import relative_spread, review_decision

APPROVE, ABSTAIN, VETO = (decision_pb2.REVIEW_VERDICT_APPROVE, decision_pb2.REVIEW_VERDICT_ABSTAIN,
                          decision_pb2.REVIEW_VERDICT_VETO)


def reasons(review) -> dict[str, str]:
    return {r.code: r.severity for r in review.reasons}


def test_a_well_supported_go_is_approved_with_no_reasons(healthy_go):
    review = review_decision(healthy_go).review
    assert review.verdict == APPROVE
    assert list(review.reasons) == []
    assert review.policy_version.startswith("1.0.0+") and len(review.policy_version) == len("1.0.0+") + 8


def _set_personas(request, personas):
    del request.personas[:]
    request.personas.extend(personas)


# (mutation, the blocking reason it must produce)
VETOES = {
    "one segment dominates": (
        lambda r, p: _set_personas(r, [p("a", "s1", 0.7), p("b", "s2", 0.1), p("c", "s3", 0.1), p("d", "s4", 0.1)]),
        "bias.segment_cap"),
    "two personas of one segment sum over the cap": (
        lambda r, p: _set_personas(r, [p("a", "s1", 0.3), p("b", "s1", 0.3), p("c", "s3", 0.2), p("d", "s4", 0.2)]),
        "bias.segment_cap"),
    "personas' WTP above grounding": (
        lambda r, p: _set_personas(r, [p("a", "s1", 0.3, wtp_p90=80), p("b", "s2", 0.3), p("c", "s3", 0.2),
                                        p("d", "s4", 0.2)]),
        "bias.optimism"),
    "simulated WTP median above grounding": (lambda r, p: setattr(r.simulation.wtp_usd, "p50", 60.0), "bias.optimism"),
    "report flags broken weights": (
        lambda r, p: (r.bias_report.flags.append("weights:sum_not_one:0.9"), setattr(r.bias_report, "passed", False)),
        "bias.weights"),
    "composite disagrees with its criteria": (lambda r, p: setattr(r.decision, "composite_score", 90.0),
                                              "decision.composite_mismatch"),
    "GO below the GO band": (
        lambda r, p: ([setattr(c, "score", 70.0) for c in r.decision.criteria],
                      setattr(r.decision, "composite_score", 70.0)),
        "decision.go_below_band"),
    "GO the gate rejected": (lambda r, p: setattr(r.decision.gate, "gate_decision", "reject"), "decision.gate_rejected"),
    "GO with NPV show-stopper": (lambda r, p: setattr(r.decision.financials, "probability_npv_positive", 0.01),
                                 "risk.npv_show_stopper"),
    "GO with no simulated customers": (lambda r, p: setattr(r.simulation.month_stats[-1].customers, "p50", 0.0),
                                       "decision.go_without_demand"),
    "GO from a tiny simulation": (lambda r, p: setattr(r.simulation, "iterations", 50), "simulation.too_small"),
}


@pytest.mark.parametrize("name", list(VETOES))
def test_each_veto_rule(healthy_go, persona, name):
    mutate, code = VETOES[name]
    mutate(healthy_go, persona)
    review = review_decision(healthy_go).review
    assert review.verdict == VETO
    assert reasons(review).get(code) == "blocking", list(review.reasons)
    assert review.reasons[0].severity == "blocking"  # blocking reasons come first


def test_flag_based_veto_when_the_request_carries_no_personas(healthy_go):
    del healthy_go.personas[:]
    healthy_go.bias_report.flags.append("segment_cap:exceeded:0.7")
    healthy_go.bias_report.passed = False
    found = reasons(review_decision(healthy_go).review)
    assert found["bias.segment_cap"] == "blocking"
    assert found["evidence.few_personas"] == "warning"


ABSTAINS = {
    "confidence below the floor": (lambda r, p: setattr(r.decision, "confidence", 0.4), "evidence.low_confidence"),
    "few personas": (lambda r, p: _set_personas(r, [p("a", "s1", 0.5), p("b", "s2", 0.5)]), "evidence.few_personas"),
    "no competitors": (
        lambda r, p: (r.simulation.ClearField("offering_shares"),
                      r.simulation.offering_shares.add(name="our_product"), r.simulation.offering_shares.add(name="none")),
        "evidence.no_competitors"),
    "iterations below the minimum": (lambda r, p: setattr(r.simulation, "iterations", 200), "simulation.few_iterations"),
    "wide outcome spread": (
        lambda r, p: r.simulation.month_stats[-1].revenue_usd.CopyFrom(type(r.simulation.wtp_usd)(p10=1000, p50=5000, p90=30000)),
        "simulation.wide_outcome_spread"),
    "criteria without evidence carry too much weight": (
        lambda r, p: [setattr(c, "neutral", True) for c in r.decision.criteria[:2]], "evidence.neutral_criteria"),
    "low persona diversity": (
        lambda r, p: (r.bias_report.flags.append("diversity:entropy_below_minimum:0.5<0.7"),
                      setattr(r.bias_report, "passed", False)),
        "bias.diversity"),
    "gate on hold": (lambda r, p: setattr(r.decision.gate, "gate_decision", "hold"), "decision.gate_on_hold"),
    "top-down and simulated SOM disagree": (lambda r, p: setattr(r.decision.market, "disagreement", True),
                                            "evidence.som_disagreement"),
    "no bias report": (lambda r, p: r.ClearField("bias_report"), "bias.report_missing"),
    "a budget cut the simulation short": (lambda r, p: setattr(r, "planned_iterations", 2_000), "simulation.cut_short"),
    "data-quality warning from ingestion": (
        lambda r, p: r.idea.warnings.append("market_size:missing: no TAM/SAM/SOM given; later stages use domain priors"),
        "input.data_quality"),
}


@pytest.mark.parametrize("name", list(ABSTAINS))
def test_each_abstain_rule(healthy_go, persona, name):
    mutate, code = ABSTAINS[name]
    mutate(healthy_go, persona)
    review = review_decision(healthy_go).review
    assert review.verdict == ABSTAIN, list(review.reasons)
    assert reasons(review) == {code: "warning"}


def test_a_biased_pivot_abstains_instead_of_being_vetoed(healthy_go, persona):
    healthy_go.decision.recommendation = decision_pb2.RECOMMENDATION_PIVOT
    _set_personas(healthy_go, [persona("a", "s1", 0.7), persona("b", "s2", 0.1), persona("c", "s3", 0.1),
                               persona("d", "s4", 0.1)])
    review = review_decision(healthy_go).review
    assert review.verdict == ABSTAIN
    assert reasons(review) == {"bias.segment_cap": "warning"}


def test_go_only_rules_do_not_touch_a_kill(healthy_go):
    """A KILL below the band, refused by the gate, with no demand and a tiny simulation is consistent."""
    healthy_go.decision.recommendation = decision_pb2.RECOMMENDATION_KILL
    for criterion in healthy_go.decision.criteria:
        criterion.score = 30.0
    healthy_go.decision.composite_score = 30.0
    healthy_go.decision.gate.gate_decision = "reject"
    healthy_go.decision.financials.probability_npv_positive = 0.0
    healthy_go.simulation.month_stats[-1].customers.p50 = 0.0
    assert review_decision(healthy_go).review.verdict == APPROVE
    healthy_go.simulation.iterations = 50  # below the veto floor: a KILL only abstains
    assert reasons(review_decision(healthy_go).review) == {"simulation.few_iterations": "warning"}


def test_veto_wins_over_abstain_and_every_reason_is_kept(healthy_go):
    healthy_go.decision.confidence = 0.3
    healthy_go.simulation.iterations = 10
    review = review_decision(healthy_go).review
    assert review.verdict == VETO
    assert reasons(review) == {"simulation.too_small": "blocking", "evidence.low_confidence": "warning"}
    assert "10 Monte Carlo iterations < 100" in review.reasons[0].message


def test_idea_warnings_are_notes_that_do_not_change_the_verdict(healthy_go):
    healthy_go.idea.warnings.extend(["sam derived from tam", "price currency assumed USD"])
    review = review_decision(healthy_go).review
    assert review.verdict == APPROVE
    assert [(r.code, r.message) for r in review.reasons] == [
        ("input.warning", "sam derived from tam"), ("input.warning", "price currency assumed USD")]


def test_thresholds_come_from_the_policy_and_change_its_version(healthy_go):
    strict = load_policy({"review": {"evidence": {"min_confidence": 0.9}}})
    review = review_decision(healthy_go, strict).review
    assert review.verdict == ABSTAIN and reasons(review) == {"evidence.low_confidence": "warning"}
    assert review.policy_version != load_policy().version
    lenient = load_policy({"review": {"veto_recommendations": []}})
    healthy_go.simulation.iterations = 50
    assert review_decision(healthy_go, lenient).review.verdict == VETO  # too_small is not a bias rule
    healthy_go.simulation.iterations = 1000
    healthy_go.simulation.wtp_usd.p50 = 60.0
    assert reasons(review_decision(healthy_go, lenient).review) == {"bias.optimism": "warning"}


def test_an_invalid_policy_names_the_threshold():
    with pytest.raises(InvalidArgument) as err:
        load_policy({"review": {"evidence": {"min_confidence": 1.5}}})
    assert err.value.field == "policy.review.evidence.min_confidence"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.ClearField("decision"), "decision"),
        (lambda r: setattr(r.decision, "recommendation", decision_pb2.RECOMMENDATION_UNSPECIFIED),
         "decision.recommendation"),
        (lambda r: setattr(r.decision, "recommendation", 99), "decision.recommendation"),  # unknown enum value
        (lambda r: setattr(r.decision, "confidence", 1.5), "decision.confidence"),
        (lambda r: setattr(r.decision, "composite_score", float("nan")), "decision.composite_score"),
        (lambda r: setattr(r.decision.criteria[2], "score", 101.0), "decision.criteria[2].score"),
        (lambda r: setattr(r.personas[1], "weight", -0.1), "personas[1].weight"),
        (lambda r: [setattr(p, "weight", 0.0) for p in r.personas], "personas.weight"),
        (lambda r: setattr(r.simulation, "iterations", -1), "simulation.iterations"),
    ],
)
def test_bad_input_names_the_field(healthy_go, mutate, field):
    mutate(healthy_go)
    with pytest.raises(InvalidArgument) as err:
        review_decision(healthy_go)
    assert err.value.field == field


@pytest.mark.parametrize(
    "p10, p50, p90, expected",
    [(8000, 10000, 14000, 0.6), (0, 0, 0, 0.0), (0, 0, 10, float("inf")), (5, 5, 5, 0.0)],
)
def test_relative_spread(p10, p50, p90, expected):
    assert relative_spread(p10, p50, p90) == pytest.approx(expected)


def test_a_light_optimistic_tail_is_a_note_not_a_veto(healthy_go, persona):
    """The personas' control flags any persona above the range; the review vetoes only real mass."""
    _set_personas(healthy_go, [persona("a", "s1", 0.3), persona("b", "s2", 0.3), persona("c", "s3", 0.25),
                               persona("tail", "s4", 0.15, wtp_p90=55)])
    healthy_go.bias_report.flags.append("optimism:wtp_p90_above_prior_upper_range:tail")
    healthy_go.bias_report.passed = False
    review = review_decision(healthy_go).review
    assert review.verdict == APPROVE
    assert [(r.code, r.severity) for r in review.reasons] == [("bias.optimism", "info")]
    assert "hold 0.150 of the weight (tail)" in review.reasons[0].message


# The issue's reasons, each mapped to the rule codes that carry it; every code has a known-answer
# test above, so no reason can lose its test without this failing.
ISSUE_REASONS = {
    ("abstain", "confidence interval too wide"): ["simulation.wide_outcome_spread", "evidence.low_confidence"],
    ("abstain", "data-quality warnings"): ["input.data_quality", "evidence.few_personas", "evidence.neutral_criteria"],
    ("abstain", "budget cut the simulation short"): ["simulation.cut_short", "simulation.few_iterations"],
    ("veto", "bias audit failed"): ["bias.segment_cap", "bias.optimism", "bias.weights"],
    ("veto", "policy violated"): ["decision.composite_mismatch", "decision.go_below_band", "decision.gate_rejected",
                                  "simulation.too_small"],
    ("veto", "show-stopping risk"): ["risk.npv_show_stopper", "decision.go_without_demand"],
}


@pytest.mark.parametrize("verdict,reason", list(ISSUE_REASONS))
def test_every_reason_of_the_issue_has_a_rule_with_a_known_answer_test(verdict, reason):
    tested = {code for _, code in (VETOES if verdict == "veto" else ABSTAINS).values()}
    assert set(ISSUE_REASONS[(verdict, reason)]) <= tested


def test_a_simulation_that_ran_as_planned_is_not_cut_short(healthy_go):
    healthy_go.planned_iterations = healthy_go.simulation.iterations
    assert review_decision(healthy_go).review.verdict == APPROVE


def test_the_cut_short_reason_states_the_numbers(healthy_go):
    healthy_go.planned_iterations = 4_000
    (reason,) = review_decision(healthy_go).review.reasons
    assert reason.message == "the simulation ran 1000 of 4000 planned iterations: a budget or a deadline cut it short"
