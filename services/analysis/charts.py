"""The report's charts as matplotlib Figures (Agg backend, no display), one function per chart.

Each function takes the analysis context and returns a Figure, so tests can inspect the plotted
data before anything is saved; `render_png` turns a Figure into PNG bytes. Figures are built with
the object API (no pyplot state), so analyses running in parallel threads do not share a figure.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless, deterministic

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from services.analysis.stats import wquantile_columns  # noqa: E402

SIZE = (8.0, 4.8)
OURS, GREY, ACCENT = "#1f6feb", "#8b949e", "#d1242f"


def _t(text: str) -> str:
    """Text shown verbatim: a '$' would otherwise start matplotlib mathtext."""
    return text.replace("$", r"\$")


def _quantile_rows(matrix: np.ndarray, weights: np.ndarray, levels=(0.1, 0.5, 0.9)) -> np.ndarray:
    """(len(levels), columns) weighted quantiles of each column."""
    return wquantile_columns(matrix, weights, list(levels)).T


def demand_and_revenue(*, sim, used, optimum, decision, vw=None, **_) -> Figure:
    fig = Figure(figsize=SIZE)
    ax = fig.subplots()
    p, q = sim.prices, sim.mean_share
    q10, _, q90 = _quantile_rows(sim.draws.demand_share, sim.draws.weights)
    ax.fill_between(p, 100 * q10, 100 * q90, color=OURS, alpha=0.15, label="share P10-P90")
    ax.plot(p, 100 * q, color=OURS, marker="o", ms=3, label="share of aware customers (mean)")
    ax.set_xlabel("monthly price (USD)")
    ax.set_ylabel("share choosing us (%)", color=OURS)
    ax2 = ax.twinx()
    ax2.plot(p, p * q, color=ACCENT, label="revenue per aware customer")
    ax2.set_ylabel("revenue per aware customer (USD/month)", color=ACCENT)
    ax.axvline(used.price, color="black", ls="--", lw=1.2, label=_t(f"analysed price ${used.price:,.2f}"))
    if not optimum.no_demand:
        ax.axvline(optimum.price, color=ACCENT, ls=":", lw=1.2, label=_t(f"revenue-maximising ${optimum.price:,.2f}"))
    if vw is not None:
        ax.axvspan(vw.pmc, vw.pme, color=GREY, alpha=0.12, label=_t(f"Van Westendorp range ${vw.pmc:,.0f}-${vw.pme:,.0f}"))
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper right")
    ax.set_title(f"Demand and revenue curves (elasticity at price {decision.pricing.elasticity_at_price:.2f})")
    fig.tight_layout()
    return fig


def revenue_fan(*, used, sim, **_) -> Figure:
    f = used.finance
    months = np.arange(1, f.monthly_p50.size + 1)
    fig = Figure(figsize=SIZE)
    ax = fig.subplots()
    ax.fill_between(months, f.monthly_p10, f.monthly_p90, color=OURS, alpha=0.2, label="P10-P90")
    ax.plot(months, f.monthly_p50, color=OURS, lw=2, label="P50")
    ax.set_xlabel("month")
    ax.set_ylabel("monthly revenue (USD)")
    ax.set_title(_t(f"Revenue forecast fan at ${used.price:,.2f}/month ({sim.draws.n} simulated worlds)"))
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def adoption_curve(*, used, sim, **_) -> Figure:
    c10, c50, c90 = _quantile_rows(used.customers, sim.draws.weights)
    months = np.arange(1, c50.size + 1)
    fig = Figure(figsize=SIZE)
    ax = fig.subplots()
    ax.fill_between(months, c10, c90, color="#2da44e", alpha=0.2, label="P10-P90")
    ax.plot(months, c50, color="#2da44e", lw=2, label="P50 active customers")
    ax.set_xlabel("month")
    ax.set_ylabel("active customers")
    ax.set_title("Adoption S-curve (Bass diffusion, simulated)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def tornado(*, tornado, used, recommendation, **_) -> Figure:
    fig = Figure(figsize=SIZE)
    ax = fig.subplots()
    base = used.finance.npv_p50
    rows = list(reversed(tornado))  # widest swing on top
    y = np.arange(len(rows))
    for i, sw in enumerate(rows):
        for value, label, colour in ((sw.npv_low, sw.low_label, ACCENT), (sw.npv_high, sw.high_label, OURS)):
            ax.barh(i, value - base, left=base, color=colour, alpha=0.8)
            ax.annotate(label, (value, i), fontsize=7, va="center", ha="left" if value >= base else "right")
        if sw.flips(recommendation):
            ax.annotate("flips the call", (max(sw.npv_low, sw.npv_high), i + 0.3), fontsize=7, color=ACCENT)
    ax.axvline(base, color="black", lw=1)
    ax.set_yticks(y, [_t(sw.driver) for sw in rows])
    ax.set_xlabel("NPV P50 (USD)")
    ax.set_title(_t(f"Sensitivity tornado (one at a time, same simulated worlds; base ${base:,.0f})"))
    fig.tight_layout()
    return fig


def _coverage(vector) -> float:
    return float(np.mean(list(vector.values()))) if len(vector) else float("nan")


def positioning_map(*, request, used, **_) -> Figure:
    fig = Figure(figsize=SIZE)
    ax = fig.subplots()
    pts = []
    cfg = request.simulation_config if request.HasField("simulation_config") else None
    for i, c in enumerate(request.competitors):
        cov = _coverage(c.feature_vector)
        if not np.isfinite(cov) and cfg is not None and i < len(cfg.competitors) and cfg.competitors[i].features:
            cov = float(np.mean(cfg.competitors[i].features))
        if np.isfinite(cov):
            pts.append((c.name, c.monthly_price_usd, cov))
    ours = _coverage(request.our_offering.feature_vector)
    if not np.isfinite(ours) and cfg is not None and cfg.our_offering.features:
        ours = float(np.mean(cfg.our_offering.features))
    if pts:
        ax.scatter([x for _, x, _ in pts], [y for _, _, y in pts], s=60, color=GREY, label="competitors")
        seen: dict[tuple[float, float], int] = {}
        for name, x, y in pts:  # stack the labels of coinciding points instead of overprinting them
            k = seen.get((round(x, 2), round(y, 3)), 0)
            seen[(round(x, 2), round(y, 3))] = k + 1
            ax.annotate(_t(name), (x, y), fontsize=7, xytext=(4, 3 + 9 * k), textcoords="offset points")
    if np.isfinite(ours):
        ax.scatter([used.price], [ours], s=140, color=OURS, marker="*", label="our offering")
        ax.annotate(_t(request.our_offering.name or "ours"), (used.price, ours), fontsize=8, xytext=(5, -10), textcoords="offset points")
    if not pts and not np.isfinite(ours):
        ax.text(0.5, 0.5, "no feature data for a positioning map", ha="center", transform=ax.transAxes)
    ax.set_xlabel("monthly price (USD)")
    ax.set_ylabel("feature coverage (mean of the taxonomy, 0-1)")
    ax.set_title("Competitive positioning: price vs features")
    ax.grid(alpha=0.3)
    if pts or np.isfinite(ours):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def van_westendorp_chart(*, vw, used, **_) -> Figure:
    fig = Figure(figsize=SIZE)
    ax = fig.subplots()
    lo = min(vw.too_cheap.min(), used.price)
    hi = max(vw.too_expensive.max(), used.price)
    grid = np.linspace(lo, hi, 400)
    cv = vw.curves(grid)
    styles = {"too_cheap": ("#2da44e", "-"), "not_cheap": ("#2da44e", "--"), "too_expensive": (ACCENT, "-"),
              "not_expensive": (ACCENT, "--"), "cheap": (GREY, ":"), "expensive": ("#9a6700", ":")}
    for name, (colour, ls) in styles.items():
        ax.plot(grid, 100 * cv[name], color=colour, ls=ls, label=name.replace("_", " "))
    for i, (label, x) in enumerate((("PMC", vw.pmc), ("OPP", vw.opp), ("IPP", vw.ipp), ("PME", vw.pme))):
        ax.axvline(x, color="black", lw=0.6, alpha=0.5)  # labels alternate in height: OPP and IPP often coincide
        ax.annotate(_t(f"{label} ${x:,.2f}"), (x, 101.5 + 5 * (i % 2)), fontsize=7, ha="center", annotation_clip=False)
    ax.axvline(used.price, color=OURS, lw=1.5, ls="--", label=_t(f"analysed price ${used.price:,.2f}"))
    ax.set_ylim(0, 100)
    ax.set_xlabel("monthly price (USD)")
    ax.set_ylabel("respondents (%)")
    ax.set_title(f"Van Westendorp price sensitivity ({vw.respondents} respondents)", pad=22)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return fig


CHARTS = {
    "demand_revenue": ("Demand and revenue curves", demand_and_revenue),
    "revenue_fan": ("Revenue fan", revenue_fan),
    "adoption": ("Adoption S-curve", adoption_curve),
    "tornado": ("Sensitivity tornado", tornado),
    "positioning": ("Positioning map", positioning_map),
}


# drawn only when their data exists (an imported survey)
OPTIONAL_CHARTS = {
    "van_westendorp": ("Van Westendorp price sensitivity", van_westendorp_chart, "vw"),
}


def build_all(context: dict) -> dict[str, Figure]:
    figures = {key: make(**context) for key, (_, make) in CHARTS.items()}
    for key, (_, make, needs) in OPTIONAL_CHARTS.items():
        if context.get(needs) is not None:
            figures[key] = make(**context)
    return figures


def title_of(key: str) -> str:
    return (CHARTS.get(key) or OPTIONAL_CHARTS[key])[0]


def render_png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()

