"""Approve, abstain on, or veto a decision before it is released.

Every rule reads the request (the decision, the bias report, the personas and the simulation result)
and may add a reason: `blocking` reasons veto, `warning` reasons make the review abstain (the gate
holds: not enough evidence to release the recommendation as it stands), `info` reasons are notes.
Thresholds come from the overwatch policy (policy.yaml); every reason's message states the numbers
it was judged on so the verdict can be audited from `decision.output.json` alone.

Where the review can check the inputs itself it does, rather than trust the producer's self-report:
segment concentration and WTP optimism are recomputed from the personas, and the composite score
from the decision's own criteria.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from smvm.errors import InvalidArgument
from smvm.v1 import decision_pb2, overwatch_service_pb2 as pb

from services.overwatch.policy import OverwatchPolicy, load_policy

BLOCKING, WARNING, INFO = "blocking", "warning", "info"
_SEVERITY_RANK = {BLOCKING: 0, WARNING: 1, INFO: 2}
NONE_OPTION = "none"  # the simulation's "buy nothing" offering (services.simulation.spec.NONE_OPTION)
# Bias controls the review recomputes from the personas when the request carries them.
_RECOMPUTED_CONTROLS = frozenset({"segment_cap", "optimism"})


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    severity: str


def recommendation_name(value: int) -> str:
    return decision_pb2.Recommendation.Name(value).removeprefix("RECOMMENDATION_")


def _check_number(field: str, value: float, low: float, high: float) -> None:
    if not math.isfinite(value) or not (low <= value <= high):
        raise InvalidArgument(field, f"must be in [{low:g}, {high:g}], got {value}")


def validate(request: pb.ReviewDecisionRequest) -> None:
    """Reject a request the rules cannot judge (missing decision, out-of-range numbers)."""
    if not request.HasField("decision"):
        raise InvalidArgument("decision", "is required")
    decision = request.decision
    known = {v.number for v in decision_pb2.Recommendation.DESCRIPTOR.values}
    if decision.recommendation == decision_pb2.RECOMMENDATION_UNSPECIFIED or decision.recommendation not in known:
        raise InvalidArgument("decision.recommendation", "is required and must be GO, PIVOT or KILL")
    _check_number("decision.confidence", decision.confidence, 0.0, 1.0)
    _check_number("decision.composite_score", decision.composite_score, 0.0, 100.0)
    for i, criterion in enumerate(decision.criteria):
        _check_number(f"decision.criteria[{i}].weight", criterion.weight, 0.0, math.inf)
        _check_number(f"decision.criteria[{i}].score", criterion.score, 0.0, 100.0)
    for i, persona in enumerate(request.personas):
        _check_number(f"personas[{i}].weight", persona.weight, 0.0, math.inf)
    if request.personas and math.fsum(p.weight for p in request.personas) <= 0:
        raise InvalidArgument("personas.weight", "persona weights sum to 0")
    if request.simulation.iterations < 0:
        raise InvalidArgument("simulation.iterations", f"must not be negative, got {request.simulation.iterations}")
    if request.planned_iterations < 0:
        raise InvalidArgument("planned_iterations", f"must not be negative, got {request.planned_iterations}")


class _Rules:
    """The rules over one request; each method returns its findings."""

    def __init__(self, request: pb.ReviewDecisionRequest, policy: OverwatchPolicy):
        self.request = request
        self.policy = policy
        self.decision = request.decision
        self.recommendation = recommendation_name(request.decision.recommendation)
        self.is_go = request.decision.recommendation == decision_pb2.RECOMMENDATION_GO
        vetoable = {str(r).upper() for r in policy.get("review.veto_recommendations")}
        # Severity of a bias / evidence failure: blocking on the recommendations it may veto.
        self.serious = BLOCKING if self.recommendation in vetoable else WARNING

    # ------------------------------------------------------------------ bias audit
    def bias(self) -> list[Finding]:
        report = self.request.bias_report
        if not self.request.HasField("bias_report"):
            return [Finding("bias.report_missing", "no bias report accompanied the decision", WARNING)]
        severe = set(self.policy.get("review.bias.severe_controls"))
        recompute = bool(self.request.personas)
        by_control: dict[str, list[str]] = defaultdict(list)
        for flag in report.flags:
            by_control[flag.split(":", 1)[0]].append(flag)
        out = []
        for control, flags in by_control.items():
            if recompute and control in _RECOMPUTED_CONTROLS:
                continue  # judged below from the personas themselves
            severity = self.serious if control in severe else WARNING
            out.append(Finding(f"bias.{control}", f"bias control failed: {', '.join(flags)}", severity))
        if not report.passed and not report.flags:
            out.append(Finding("bias.audit_failed", "bias report failed without naming a control", WARNING))
        if recompute:
            out += self._segment_concentration(severe)
            out += self._wtp_optimism(severe)
        return out

    def _segment_concentration(self, severe: set[str]) -> list[Finding]:
        cap = self.request.bias_report.segment_weight_cap or self.policy.num("review.bias.default_segment_cap")
        shares: dict[str, float] = defaultdict(float)
        for persona in self.request.personas:
            shares[persona.segment or persona.id] += persona.weight
        total = math.fsum(shares.values())
        segment, weight = max(shares.items(), key=lambda item: item[1])
        share = weight / total
        if share <= cap + 1e-9:
            return []
        severity = self.serious if "segment_cap" in severe else WARNING
        return [Finding("bias.segment_cap",
                        f"segment {segment!r} holds {share:.3f} of the persona weight, above the cap {cap:g} "
                        f"({len(shares)} segments)", severity)]

    def _wtp_optimism(self, severe: set[str]) -> list[Finding]:
        upper = self.request.bias_report.wtp_upper_range_usd
        if upper <= 0:
            return []
        limit = upper * (1.0 + self.policy.num("review.bias.optimism_tolerance"))
        total = math.fsum(p.weight for p in self.request.personas)
        optimistic = [p for p in self.request.personas if p.wtp.p90_usd > limit]
        share = math.fsum(p.weight for p in optimistic) / total
        evidence, notes = [], []
        described = (f"personas with WTP P90 above the grounding upper range ${upper:g} hold {share:.3f} "
                     f"of the weight ({', '.join(p.id or p.name for p in optimistic)})")
        max_share = self.policy.num("review.bias.max_optimistic_weight")
        if share > max_share:
            evidence.append(described)
        elif optimistic:  # a tail the personas' control flags, too light to distort the market
            notes.append(Finding("bias.optimism", f"{described}, within the tolerated {max_share:g}", INFO))
        simulated_median = self.request.simulation.wtp_usd.p50
        if simulated_median > limit:
            evidence.append(f"simulated WTP median ${simulated_median:.2f} is above the grounding upper range ${upper:g}")
        if not evidence:
            return notes
        severity = self.serious if "optimism" in severe else WARNING
        return [Finding("bias.optimism", "; ".join(evidence), severity)]

    # ------------------------------------------------------------------ decision consistency
    def consistency(self) -> list[Finding]:
        decision, policy, out = self.decision, self.policy, []
        total_weight = math.fsum(c.weight for c in decision.criteria)
        if total_weight > 0:
            weighted = math.fsum(c.weight * c.score for c in decision.criteria) / total_weight
            tolerance = policy.num("review.decision.composite_tolerance")
            if abs(weighted - decision.composite_score) > tolerance:
                out.append(Finding("decision.composite_mismatch",
                                   f"composite score {decision.composite_score:.2f} differs from the weighted mean "
                                   f"of its criteria {weighted:.2f} by more than {tolerance:g}", BLOCKING))
        if not self.is_go:
            return out
        go_min = policy.num("review.decision.go_min_composite")
        if decision.composite_score < go_min:
            out.append(Finding("decision.go_below_band",
                               f"GO with composite score {decision.composite_score:.2f} < {go_min:g}", BLOCKING))
        gate = decision.gate.gate_decision.strip().lower()
        if gate == "reject":
            out.append(Finding("decision.gate_rejected", "GO although the T0+3 gate rejected the idea", BLOCKING))
        elif gate == "hold":
            failed = [c.name for c in decision.gate.criteria if not c.passed]
            out.append(Finding("decision.gate_on_hold",
                               f"GO although the T0+3 gate holds (failed: {', '.join(failed) or 'none named'})", WARNING))
        if decision.HasField("financials"):
            p_npv = decision.financials.probability_npv_positive
            floor = policy.num("review.decision.min_probability_npv_positive")
            if p_npv < floor:
                out.append(Finding("risk.npv_show_stopper", f"GO with P(NPV > 0) = {p_npv:.3f} < {floor:g}", BLOCKING))
        stats = self.request.simulation.month_stats
        if stats:
            customers = stats[-1].customers.p50
            floor = policy.num("review.decision.min_final_customers_p50")
            if customers <= floor:
                out.append(Finding("decision.go_without_demand",
                                   f"GO although simulated final-month customers (P50) are {customers:g}", BLOCKING))
        if decision.market.disagreement:
            market = decision.market
            out.append(Finding("evidence.som_disagreement",
                               f"top-down SOM ${market.som_usd:,.0f} and simulated SOM ${market.som_bottom_up_usd:,.0f} "
                               "disagree", WARNING))
        return out

    # ------------------------------------------------------------------ evidence
    def evidence(self) -> list[Finding]:
        decision, policy, out = self.decision, self.policy, []
        min_confidence = policy.num("review.evidence.min_confidence")
        if decision.confidence < min_confidence:
            out.append(Finding("evidence.low_confidence",
                               f"confidence {decision.confidence:.3f} < {min_confidence:g}: too few simulated worlds "
                               f"agree on {self.recommendation}", WARNING))
        min_personas = int(policy.num("review.evidence.min_personas"))
        if len(self.request.personas) < min_personas:
            out.append(Finding("evidence.few_personas",
                               f"{len(self.request.personas)} personas < {min_personas}", WARNING))
        competitors = competitor_count(self.request.simulation)
        min_competitors = int(policy.num("review.evidence.min_competitors"))
        if competitors < min_competitors:
            out.append(Finding("evidence.no_competitors",
                               f"the simulation modelled {competitors} competitors < {min_competitors}", WARNING))
        total_weight = math.fsum(c.weight for c in decision.criteria)
        if total_weight > 0:
            neutral = math.fsum(c.weight for c in decision.criteria if c.neutral) / total_weight
            limit = policy.num("review.evidence.max_neutral_weight")
            if neutral > limit:
                names = [c.name for c in decision.criteria if c.neutral]
                out.append(Finding("evidence.neutral_criteria",
                                   f"criteria without evidence ({', '.join(names)}) carry {neutral:.2f} of the weight "
                                   f"> {limit:g}", WARNING))
        grounding = self.request.idea.grounding
        if grounding.quality_warning:
            poor = [f"{q.kind} ({q.rows_accepted}/{q.rows_read} rows kept)" for q in grounding.quality if q.quality_warning]
            out.append(Finding("input.data_quality", "grounding import(s) of poor data quality: " + ", ".join(poor),
                               WARNING))
        serious = tuple(str(w) for w in policy.get("review.evidence.data_quality_warnings"))
        for warning in self.request.idea.warnings:
            kind = ":".join(warning.split(":", 2)[:2])
            if kind in serious:
                out.append(Finding("input.data_quality", f"data-quality warning from ingestion: {warning}", WARNING))
            else:
                out.append(Finding("input.warning", warning, INFO))
        return out

    # ------------------------------------------------------------------ simulation size and spread
    def simulation(self) -> list[Finding]:
        simulation, policy, out = self.request.simulation, self.policy, []
        iterations = simulation.iterations
        veto_min = int(policy.num("review.simulation.veto_min_iterations"))
        abstain_min = int(policy.num("review.simulation.min_iterations"))
        if self.is_go and iterations < veto_min:
            out.append(Finding("simulation.too_small",
                               f"GO from {iterations} Monte Carlo iterations < {veto_min}", BLOCKING))
        elif iterations < abstain_min:
            out.append(Finding("simulation.few_iterations",
                               f"{iterations} Monte Carlo iterations < {abstain_min}", WARNING))
        planned = self.request.planned_iterations
        if 0 < iterations < planned:
            out.append(Finding("simulation.cut_short",
                               f"the simulation ran {iterations} of {planned} planned iterations: a budget or a "
                               "deadline cut it short", WARNING))
        if simulation.month_stats:
            revenue = simulation.month_stats[-1].revenue_usd
            spread = relative_spread(revenue.p10, revenue.p50, revenue.p90)
            limit = policy.num("review.simulation.max_relative_spread")
            if spread > limit:
                out.append(Finding("simulation.wide_outcome_spread",
                                   f"final-month revenue (P90 - P10) / P50 = {spread:.2f} > {limit:g} "
                                   f"(P10 ${revenue.p10:,.0f}, P50 ${revenue.p50:,.0f}, P90 ${revenue.p90:,.0f})",
                                   WARNING))
        return out


def competitor_count(simulation) -> int:
    """Competitors the simulation modelled: its offerings less ours (the first) and "none"."""
    names = [share.name for share in simulation.offering_shares]
    return max(0, len([n for n in names[1:] if n != NONE_OPTION]))


def relative_spread(p10: float, p50: float, p90: float) -> float:
    """(P90 - P10) / P50; 0 when every quantile is 0, infinite when only the median is 0."""
    width = max(0.0, p90 - p10)
    if p50 > 0:
        return width / p50
    return math.inf if width > 0 or p90 > 0 else 0.0


def _merge(findings: list[Finding]) -> list[Finding]:
    """One reason per code (most severe severity, messages joined), blocking first, then warning, info."""
    merged: dict[str, Finding] = {}
    for finding in findings:
        seen = merged.get(finding.code)
        if seen is None:
            merged[finding.code] = finding
        elif finding.severity == INFO and seen.severity == INFO:
            merged[f"{finding.code}#{len(merged)}"] = finding  # distinct notes stay distinct
        else:
            severity = min(seen.severity, finding.severity, key=_SEVERITY_RANK.__getitem__)
            merged[finding.code] = Finding(finding.code, f"{seen.message}; {finding.message}", severity)
    return sorted(merged.values(), key=lambda f: _SEVERITY_RANK[f.severity])


def verdict_for(findings: list[Finding]) -> int:
    severities = {f.severity for f in findings}
    if BLOCKING in severities:
        return decision_pb2.REVIEW_VERDICT_VETO
    if WARNING in severities:
        return decision_pb2.REVIEW_VERDICT_ABSTAIN
    return decision_pb2.REVIEW_VERDICT_APPROVE


def review_decision(request: pb.ReviewDecisionRequest, policy: OverwatchPolicy | None = None) -> pb.ReviewDecisionResponse:
    """The verdict on `request.decision` with every reason behind it."""
    policy = policy or load_policy()
    validate(request)
    rules = _Rules(request, policy)
    findings = _merge([*rules.bias(), *rules.consistency(), *rules.evidence(), *rules.simulation()])
    return pb.ReviewDecisionResponse(
        review=decision_pb2.Review(
            verdict=verdict_for(findings),
            reasons=[decision_pb2.ReviewReason(code=f.code, message=f.message, severity=f.severity) for f in findings],
            policy_version=policy.version,
        )
    )
