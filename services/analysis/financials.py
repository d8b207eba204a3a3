"""Financials on plain numbers: per-iteration cash flows, NPV, ROI, payback, break-even, revenue fan.

Cash flow of month t (t = 1..T) in one Monte Carlo iteration:

    new_t  = max(customers_t - customers_{t-1} + churn * customers_{t-1}, 0)   (gross adds)
    CF_t   = gross_margin * revenue_t - CAC * new_t - fixed_costs_monthly

with customers_0 = 0 and an initial investment I spent at month 0. Then

    NPV       = -I + sum_t CF_t / (1 + r_m)^t,   r_m = (1 + r_annual)^(1/12) - 1
    ROI       = (sum inflows - sum outflows) / sum outflows   (undiscounted; inflows = margin x revenue,
                outflows = I + CAC spend + fixed costs; 0 when there are no outflows)
    payback   = first month whose cumulative cash (-I + CF_1 + ... + CF_t) is >= 0; 0 = never
    break-even= first month whose own CF_t is >= 0 (operating break-even); 0 = never
    break-even CAC = the CAC at which NPV = 0 (NPV is linear in CAC)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from services.analysis.stats import safe_div, wmean, wprob, wquantile, wquantile_columns


@dataclass(frozen=True)
class CostAssumptions:
    cac_usd: float
    gross_margin: float
    fixed_costs_monthly_usd: float
    initial_investment_usd: float
    discount_rate_annual: float
    basis: list[str] = field(default_factory=list)  # where each figure came from


def monthly_rate(annual: float) -> float:
    return (1.0 + max(annual, -0.99)) ** (1.0 / 12.0) - 1.0


def discount_factors(months: int, annual_rate: float) -> np.ndarray:
    """(1 + r_m)^-t for t = 1..months."""
    return (1.0 + monthly_rate(annual_rate)) ** -np.arange(1, months + 1, dtype=float)


def npv(cash_flows, annual_rate: float, initial_investment: float = 0.0):
    """NPV of monthly cash flows (last axis = months, first at t=1) less an investment at t=0."""
    cf = np.asarray(cash_flows, dtype=float)
    if cf.shape[-1] == 0:
        out = np.full(cf.shape[:-1], -float(initial_investment))
    else:
        out = cf @ discount_factors(cf.shape[-1], annual_rate) - initial_investment
    return out if np.ndim(out) else float(out)


def new_customers(customers, churn) -> np.ndarray:
    c = np.clip(np.asarray(customers, dtype=float), 0.0, None)
    churn = np.clip(np.asarray(churn, dtype=float), 0.0, 1.0).reshape(-1, 1)
    prev = np.concatenate([np.zeros((c.shape[0], 1)), c[:, :-1]], axis=1)
    return np.clip(c - prev + churn * prev, 0.0, None)


def cash_flows(revenue, customers, churn, costs: CostAssumptions, adds: np.ndarray | None = None) -> np.ndarray:
    """`adds`: new_customers(customers, churn) when the caller has it already."""
    rev = np.clip(np.asarray(revenue, dtype=float), 0.0, None)
    adds = new_customers(customers, churn) if adds is None else adds
    return costs.gross_margin * rev - costs.cac_usd * adds - costs.fixed_costs_monthly_usd


def payback_month(cash_flows, initial_investment: float) -> np.ndarray:
    """First month (1-based) whose cumulative cash is >= 0; 0 where never."""
    cf = np.atleast_2d(np.asarray(cash_flows, dtype=float))
    if cf.shape[1] == 0:
        return np.zeros(cf.shape[0], dtype=int)
    cumulative = np.cumsum(cf, axis=1) - initial_investment
    hit = cumulative >= 0
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def break_even_month(cash_flows) -> np.ndarray:
    """First month (1-based) with a non-negative monthly cash flow; 0 where never."""
    cf = np.atleast_2d(np.asarray(cash_flows, dtype=float))
    if cf.shape[1] == 0:
        return np.zeros(cf.shape[0], dtype=int)
    hit = cf >= 0
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def roi(revenue, customers, churn, costs: CostAssumptions, adds: np.ndarray | None = None) -> np.ndarray:
    rev = np.clip(np.asarray(revenue, dtype=float), 0.0, None)
    adds = new_customers(customers, churn) if adds is None else adds
    inflow = costs.gross_margin * rev.sum(axis=1)
    outflow = (
        costs.initial_investment_usd
        + costs.cac_usd * adds.sum(axis=1)
        + costs.fixed_costs_monthly_usd * rev.shape[1]
    )
    return safe_div(inflow - outflow, outflow, 0.0)


def _month_quantile(months: np.ndarray, weights, q: float) -> int:
    """Quantile of 'month reached' where 0 means never (treated as beyond the horizon); 0 if never."""
    as_float = np.where(months > 0, months.astype(float), np.inf)
    value = wquantile(as_float, weights, q)
    return int(value) if np.isfinite(value) else 0


@dataclass
class FinancialSummary:
    horizon_months: int
    npv: np.ndarray  # per iteration
    roi: np.ndarray
    payback: np.ndarray  # month, 0 = never
    break_even: np.ndarray
    horizon_revenue: np.ndarray
    npv_p10: float
    npv_p50: float
    npv_p90: float
    roi_p50: float
    payback_p50: int
    break_even_p50: int
    probability_npv_positive: float
    probability_roi_positive: float
    probability_payback_within: float
    payback_window_months: int
    revenue_p10: float  # horizon total
    revenue_p50: float
    revenue_p90: float
    break_even_cac_p50: float
    costs: CostAssumptions
    monthly_revenue: np.ndarray  # (n, months), cleaned: the fan's source
    weights: np.ndarray

    @cached_property
    def _monthly(self) -> np.ndarray:
        """(months, 3) weighted P10 / P50 / P90 of each month's revenue. Computed on first use:
        the tornado's and the pivots' scenarios never read the fan, only the run's own scenario does."""
        if not self.horizon_months:
            return np.zeros((0, 3))
        return wquantile_columns(self.monthly_revenue, self.weights, [0.1, 0.5, 0.9])

    @property
    def monthly_p10(self) -> np.ndarray:
        return self._monthly[:, 0]

    @property
    def monthly_p50(self) -> np.ndarray:
        return self._monthly[:, 1]

    @property
    def monthly_p90(self) -> np.ndarray:
        return self._monthly[:, 2]


def summarise(revenue, customers, churn, weights, costs: CostAssumptions, payback_window: int = 24) -> FinancialSummary:
    rev = np.clip(np.nan_to_num(np.atleast_2d(np.asarray(revenue, dtype=float))), 0.0, None)
    cust = np.clip(np.nan_to_num(np.atleast_2d(np.asarray(customers, dtype=float))), 0.0, None)
    n, months = rev.shape
    w = np.asarray(weights, dtype=float)
    gross_adds = new_customers(cust, churn)
    cf = cash_flows(rev, cust, churn, costs, gross_adds)
    npv_k = np.atleast_1d(npv(cf, costs.discount_rate_annual, costs.initial_investment_usd))
    roi_k = np.atleast_1d(roi(rev, cust, churn, costs, gross_adds))
    pay_k = payback_month(cf, costs.initial_investment_usd)
    be_k = break_even_month(cf)
    total = rev.sum(axis=1)
    # NPV = A - CAC * B per iteration; the CAC where NPV = 0 is A / B.
    d = discount_factors(months, costs.discount_rate_annual)
    adds = gross_adds @ d if months else np.zeros(n)
    a = npv_k + costs.cac_usd * adds
    be_cac = safe_div(a, adds, 0.0)
    have = adds > 0
    be_cac_p50 = float(wquantile(be_cac[have], w[have] / max(w[have].sum(), 1e-300), 0.5)) if have.any() else 0.0
    n10, n50, n90 = wquantile(npv_k, w, [0.1, 0.5, 0.9])
    r10, r50, r90 = wquantile(total, w, [0.1, 0.5, 0.9])
    return FinancialSummary(
        horizon_months=months,
        npv=npv_k,
        roi=roi_k,
        payback=pay_k,
        break_even=be_k,
        horizon_revenue=total,
        npv_p10=float(n10),
        npv_p50=float(n50),
        npv_p90=float(n90),
        roi_p50=float(wquantile(roi_k, w, 0.5)),
        payback_p50=_month_quantile(pay_k, w, 0.5),
        break_even_p50=_month_quantile(be_k, w, 0.5),
        probability_npv_positive=wprob(npv_k > 0, w),
        probability_roi_positive=wprob(roi_k > 0, w),
        probability_payback_within=wprob((pay_k > 0) & (pay_k <= payback_window), w),
        payback_window_months=payback_window,
        revenue_p10=float(r10),
        revenue_p50=float(r50),
        revenue_p90=float(r90),
        break_even_cac_p50=be_cac_p50,
        costs=costs,
        monthly_revenue=rev,
        weights=w,
    )


def mean_npv(summary: FinancialSummary, weights) -> float:
    return wmean(summary.npv, weights)
