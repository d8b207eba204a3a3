"""Cost structure for the financials: the policy's documented per-domain defaults, made concrete.

CAC is expressed as months of gross profit at a reference price (so it scales with what is sold)
and then held fixed in USD; the initial investment is the build period's fixed costs. Every figure
carries its basis so the report can say which numbers are priors rather than measurements.
"""

from __future__ import annotations

from services.analysis.financials import CostAssumptions
from services.analysis.policy import Policy


def cost_assumptions(policy: Policy, domain: str, reference_price: float, build_months: float | None,
                     overrides=None) -> CostAssumptions:
    """The domain's defaults, each replaced by the request's override when one is set."""
    base = _defaults(policy, domain, reference_price, build_months)
    if overrides is None:
        return base
    values = dict(cac_usd=base.cac_usd, gross_margin=base.gross_margin, fixed_costs_monthly_usd=base.fixed_costs_monthly_usd,
                  initial_investment_usd=base.initial_investment_usd, discount_rate_annual=base.discount_rate_annual)
    basis = list(base.basis)
    for name in values:
        if overrides.HasField(name):
            values[name] = float(getattr(overrides, name))
            basis.append(f"{name} = {values[name]:,.4g} (request override, replaces the default)")
    return CostAssumptions(**values, basis=basis)


def _defaults(policy: Policy, domain: str, reference_price: float, build_months: float | None) -> CostAssumptions:
    canonical, d = policy.domain_costs(domain)
    margin = min(max(d["gross_margin"], 0.0), 1.0)
    cac = max(d["cac_payback_months"], 0.0) * max(reference_price, 0.0) * margin
    fixed = max(d["fixed_costs_monthly_usd"], 0.0)
    if build_months is None:
        months = policy.num("finance.default_build_months", 6)
        months_basis = f"default build period of {months:g} months"
    else:
        months = max(build_months, 0.0)
        months_basis = f"idea.estimated_build_months = {months:g}"
    rate = policy.num("finance.discount_rate_annual", 0.12)
    basis = [
        f"domain cost priors: '{canonical}' (policy defaults, not measurements)",
        f"CAC = {d['cac_payback_months']:g} months x ${reference_price:,.2f} x {margin:.0%} margin = ${cac:,.2f}",
        f"gross margin {margin:.0%}; fixed costs ${fixed:,.0f}/month",
        f"initial investment = {months_basis} x fixed costs = ${months * fixed:,.0f}",
        f"discount rate {rate:.1%}/year",
    ]
    return CostAssumptions(
        cac_usd=cac, gross_margin=margin, fixed_costs_monthly_usd=fixed,
        initial_investment_usd=months * fixed, discount_rate_annual=rate, basis=basis,
    )
