"""The Markdown validation report and the machine-readable summary: the decision first, then every
figure with its evidence."""

from __future__ import annotations

import json

from google.protobuf import json_format

from services.analysis.stats import money as _money


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return out + [""]


def render(*, request, decision, recommendation, used, best, sim, wtp, optimum, profile, costs, voi, tornado, warnings,
           factors, base_confidence, basis, price_source, policy, vw=None, gg=None, risks=(), memory=None, **_) -> str:
    idea = request.idea
    f = used.finance
    lines = [f"# Validation report: {idea.title or 'untitled idea'}", ""]
    lines += [f"**Recommendation: {recommendation}** (confidence {decision.confidence:.0%}, composite {decision.composite_score:.1f}/100; "
              f"GO >= {policy.go_threshold:g}, PIVOT >= {policy.pivot_threshold:g}). Gate: **{decision.gate.gate_decision}**.", ""]
    lines += [f"- Why: {basis}.",
              f"- P(NPV > 0) = {f.probability_npv_positive:.0%}; P(payback <= {f.payback_window_months} months) = {f.probability_payback_within:.0%}; "
              f"P(ROI > 0) = {f.probability_roi_positive:.0%}.",
              f"- Confidence {decision.confidence:.0%} = share of Monte Carlo iterations in the {recommendation} band "
              f"(GO {decision.confidence_detail.share_go:.0%} / PIVOT {decision.confidence_detail.share_pivot:.0%} / "
              f"KILL {decision.confidence_detail.share_kill:.0%})"
              + (f"; evidence-adjusted {decision.confidence_detail.evidence_adjusted:.0%}"
                 + "".join(f" x {v:.2f} ({t})" for t, v in factors) if factors else "") + ".",
              f"- Across the simulated worlds the composite runs from {decision.confidence_detail.composite_p5:.1f} (P5) to "
              f"{decision.confidence_detail.composite_p95:.1f} (P95), median {decision.confidence_detail.composite_p50:.1f}; "
              "dimensions scored from fixed inputs (TAM, build estimate, team, competitor shares) add no spread.",
              f"- Policy {decision.policy_version}; {sim.draws.n} Monte Carlo {'samples' if sim.draws.source == 'samples' else 'quantile scenarios'} "
              f"of {sim.iterations} iterations, {sim.months} months.", ""]
    if decision.pivot_suggestions:
        lines += ["## What to change", ""] + [f"- {p}" for p in decision.pivot_suggestions] + [""]

    lines += ["## Decision matrix", ""]
    lines += _table(["Dimension", "Weight", "Score", "Evidence"],
                    [[c.name + (" (neutral)" if c.neutral else ""), f"{c.weight:.0%}", f"{c.score:.1f}", c.evidence] for c in decision.criteria])

    lines += ["## T0+3 gate", ""]
    lines += _table(["Criterion", "Passed", "Evidence"], [[c.name, "yes" if c.passed else "**no**", c.evidence] for c in decision.gate.criteria])

    p = decision.pricing
    lines += ["## Pricing", ""]
    lines += [f"- Price analysed: {_money(used.price)}/month ({price_source if price_source != 'none' else 'assumed: the simulated price'}).",
              f"- Willingness to pay ({wtp.source}): P10 {_money(p.wtp_p10_usd)}, P50 {_money(p.wtp_p50_usd)}, P90 {_money(p.wtp_p90_usd)}.",
              (f"- Revenue-maximising price (Gabor-Granger over the simulated grid): {_money(p.revenue_maximising_price_usd)}/month"
               + (" (at the grid edge)" if optimum.at_edge else "") if not optimum.no_demand else "- No price on the grid attracts demand."),
              f"- Point elasticity at the price: {p.elasticity_at_price:.2f} ({policy.num('pricing.ci_level'):.0%} Monte Carlo interval "
              f"{p.elasticity_ci_low:.2f} to {p.elasticity_ci_high:.2f}); "
              + ("elastic: a price cut raises revenue." if p.elasticity_at_price < -1 else "inelastic: a price rise raises revenue."), ""]
    if vw is not None:
        lines += [f"Van Westendorp survey ({vw.respondents} respondents"
                  + (f", {vw.dropped} inconsistent dropped" if vw.dropped else "") + "):", ""]
        lines += _table(["PMC (marginal cheapness)", "OPP (optimal)", "IPP (indifference)", "PME (marginal expensiveness)",
                         "Acceptable at the price"],
                        [[_money(vw.pmc), _money(vw.opp), _money(vw.ipp), _money(vw.pme),
                          f"{vw.acceptable_share(used.price):.0%}"]])
    if gg is not None:
        lines += [f"- Gabor-Granger survey ({gg.respondents} respondents, {gg.prices.size} prices): revenue-maximising price "
                  + (f"{_money(gg.optimum.price)}/month" + (" (at the surveyed edge)" if gg.optimum.at_edge else "")
                     if not gg.optimum.no_demand else "none (no purchase intent)")
                  + f"; intent at {_money(used.price)} is {gg.intent_at(used.price):.0%}.", ""]
    step = max(1, profile.prices.size // 8)
    rows = []
    for i in range(0, profile.prices.size, step):
        arc = f"{profile.arc[i]:.2f}" if i < profile.arc.size else ""
        rows.append([_money(profile.prices[i]), f"{sim.mean_share[i]:.2%}", _money(profile.prices[i] * sim.mean_share[i]),
                     f"{profile.point[i]:.2f} [{profile.point_low[i]:.2f}, {profile.point_high[i]:.2f}]", arc])
    lines += _table(["Price", "Share of aware customers", "Revenue per aware customer", "Point elasticity [CI]", "Arc elasticity to next"], rows)

    m = decision.market
    lines += ["## Market sizing (USD/year)", ""]
    lines += _table(["", "Top-down (inputs)", "Bottom-up (simulation)"],
                    [["TAM", _money(m.tam_usd) if m.tam_usd else "not given", "not simulated: the simulated market is the SAM"],
                     ["SAM", _money(m.sam_usd) if m.sam_usd else "not given",
                      "an input, not a finding: the simulated market is the idea's SAM / (12 x WTP P50) customers"],
                     ["SOM", _money(m.som_usd) if m.som_usd else "not given",
                      f"{_money(used.market.som_bottom_up_usd)} (P10 {_money(used.market.som_bottom_up_p10_usd)}, P90 {_money(used.market.som_bottom_up_p90_usd)})"]])
    lines += [f"- Top-down figures: {used.market.source}."]
    lines += [f"- {n}" for n in used.market.notes] + [""]

    lines += ["## Financials", ""]
    lines += _table(["Figure", "Value"], [
        [f"Revenue over {sim.months} months (P10 / P50 / P90)", f"{_money(f.revenue_p10)} / {_money(f.revenue_p50)} / {_money(f.revenue_p90)}"],
        [f"NPV at {costs.discount_rate_annual:.0%}/yr (P10 / P50 / P90)", f"{_money(f.npv_p10)} / {_money(f.npv_p50)} / {_money(f.npv_p90)}"],
        ["ROI (P50)", f"{f.roi_p50:+.0%}"],
        ["Payback month (P50)", str(f.payback_p50) if f.payback_p50 else "not within the horizon"],
        ["Operating break-even month (P50)", str(f.break_even_p50) if f.break_even_p50 else "not within the horizon"],
        ["Break-even CAC (P50)", _money(f.break_even_cac_p50)],
    ])
    months = [t for t in (1, 3, 6, 12, 18, 24, 30, 36) if t <= sim.months]
    lines += ["Monthly revenue fan:", ""]
    lines += _table(["Month", "P10", "P50", "P90"],
                    [[str(t), _money(f.monthly_p10[t - 1]), _money(f.monthly_p50[t - 1]), _money(f.monthly_p90[t - 1])] for t in months])
    lines += ["Cost assumptions:", ""] + [f"- {b}" for b in costs.basis] + [""]
    if best is not used:
        lines += [f"At the revenue-maximising price {_money(best.price)}: revenue P50 {_money(best.finance.revenue_p50)}, NPV P50 "
                  f"{_money(best.finance.npv_p50)}, P(NPV > 0) {best.finance.probability_npv_positive:.0%}, composite {best.composite:.1f}.", ""]

    if tornado:
        lines += ["## Sensitivity (one at a time, same simulated worlds)", ""]
        rows = []
        for sw in tornado:
            flips = [b for b in (sw.band_low, sw.band_high) if b != recommendation]
            rows.append([sw.driver, f"{sw.low_label}: {_money(sw.npv_low)} ({sw.band_low})",
                         f"{sw.high_label}: {_money(sw.npv_high)} ({sw.band_high})", _money(abs(sw.npv_high - sw.npv_low)),
                         "**yes**: " + "/".join(flips) if flips else "no", sw.method])
        lines += _table(["Driver", "Downside: NPV P50 (band)", "Upside: NPV P50 (band)", "Swing", "Flips the call", "How"], rows)
        lines += ["How: *re-simulated* = the simulation re-ran the market with the driver moved (same seed, same "
                  "customers and draws); *same paths* = exact on the simulated paths (price, market size, costs); "
                  "*approximated* = an older simulation output without re-simulated swings.", ""]
    if voi:
        lines += ["## Value of information", ""]
        lines += _table(["Driver", "EVPPI (expected NPV)", "Call flips at"],
                        [[v.driver, _money(v.evppi_usd), f"{v.flip_value:,.4g}" if v.flip_value is not None else "-"] for v in voi])

    if risks:
        lines += ["## Risk assessment", ""]
        lines += _table(["Risk", "Score (0 none - 100 severe)", "Level", "Evidence"],
                        [[r.category, f"{r.score:.0f}", r.level, "; ".join(r.evidence)] for r in risks])

    if memory is not None and memory.status != "not_consulted":
        lines += ["## Memory of earlier runs", ""]
        if memory.status != "used":
            lines += ["- Memory was unavailable: this decision has no learned competitors, similar ideas or history.", ""]
        else:
            lines += [f"- {e}" for e in memory.evidence] + [""]
            if memory.precedents:
                lines += _table(["Run", "Project", "Idea", "Similarity", "Decision"],
                                [[i.run_id, i.project_id, i.title, f"{i.similarity:.2f}", i.recommendation]
                                 for i in memory.precedents])
    lines += ["## Critical success factors", ""] + [f"- {s}" for s in decision.critical_success_factors] + [""]
    lines += ["## Next steps", ""] + [f"{i}. {s}" for i, s in enumerate(decision.next_steps, 1)] + [""]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in dict.fromkeys(warnings)] + [""]
    return "\n".join(lines)


def summary_json(*, request, decision, recommendation, used, sim, policy, tornado, voi, risks=(), vw=None, gg=None,
                 memory=None, **_) -> str:
    """reports/validation_summary.json's analysis part: the headline figures, flat and machine-readable."""
    f, m, p = used.finance, decision.market, decision.pricing
    c = decision.confidence_detail
    doc = {
        "recommendation": recommendation,
        "confidence": decision.confidence,
        "confidence_detail": {"band_share": c.band_share, "share_go": c.share_go, "share_pivot": c.share_pivot,
                              "share_kill": c.share_kill, "probability_npv_positive": c.probability_npv_positive,
                              "probability_payback_within_24_months": c.probability_payback_within_24_months,
                              "evidence_adjusted": c.evidence_adjusted, "iterations": c.iterations, "basis": c.basis,
                              "composite_p5": c.composite_p5, "composite_p50": c.composite_p50, "composite_p95": c.composite_p95},
        "composite_score": decision.composite_score,
        "policy_version": decision.policy_version,
        "gate": {"gate_decision": decision.gate.gate_decision, "confidence_score": decision.gate.confidence_score,
                 "criteria": [{"name": g.name, "passed": g.passed, "evidence": g.evidence} for g in decision.gate.criteria]},
        "criteria": [{"name": x.name, "weight": x.weight, "score": x.score, "neutral": x.neutral, "evidence": x.evidence}
                     for x in decision.criteria],
        "pricing": json_format.MessageToDict(p, preserving_proto_field_name=True, always_print_fields_with_no_presence=True),
        "market": {"tam_usd": m.tam_usd, "sam_usd": m.sam_usd, "som_usd": m.som_usd, "som_bottom_up_usd": m.som_bottom_up_usd,
                   "som_bottom_up_p10_usd": m.som_bottom_up_p10_usd, "som_bottom_up_p90_usd": m.som_bottom_up_p90_usd,
                   "reconciliation_ratio": m.reconciliation_ratio, "disagreement": m.disagreement, "source": m.tam_source},
        "financials": {"horizon_months": sim.months, "price_usd": used.price,
                       "revenue_usd": {"p10": f.revenue_p10, "p50": f.revenue_p50, "p90": f.revenue_p90},
                       "npv_usd": {"p10": f.npv_p10, "p50": f.npv_p50, "p90": f.npv_p90},
                       "discount_rate_annual": f.costs.discount_rate_annual, "roi_p50": f.roi_p50,
                       "probability_roi_positive": f.probability_roi_positive,
                       "probability_npv_positive": f.probability_npv_positive,
                       "payback_month_p50": f.payback_p50, "break_even_month_p50": f.break_even_p50,
                       "cac_usd": f.costs.cac_usd, "gross_margin": f.costs.gross_margin,
                       "fixed_costs_monthly_usd": f.costs.fixed_costs_monthly_usd,
                       "initial_investment_usd": f.costs.initial_investment_usd},
        "sensitivity": [{"driver": s.driver, "low": s.low_label, "high": s.high_label, "npv_low_usd": s.npv_low,
                         "npv_high_usd": s.npv_high, "band_low": s.band_low, "band_high": s.band_high,
                         "method": s.method} for s in tornado],
        "value_of_information": [{"driver": v.driver, "evppi_usd": v.evppi_usd, "flip_value": v.flip_value} for v in voi],
        "risks": [{"category": r.category, "score": r.score, "level": r.level, "evidence": r.evidence} for r in risks],
        "pivot_suggestions": list(decision.pivot_suggestions),
        "critical_success_factors": list(decision.critical_success_factors),
        "next_steps": list(decision.next_steps),
        "memory": ({"status": memory.status, "evidence": memory.evidence, "precedent_risk": memory.precedent_risk,
                    "precedent_run_ids": [i.run_id for i in memory.precedents],
                    "history_run_ids": [d.run_id for d in memory.history]} if memory is not None else None),
        "surveys": {"van_westendorp_respondents": vw.respondents if vw is not None else 0,
                    "gabor_granger_respondents": gg.respondents if gg is not None else 0},
    }
    return json.dumps(doc, allow_nan=False, default=float)
