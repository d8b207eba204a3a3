"""The report as documents: one self-contained HTML page and a PDF, both carrying the charts.

HTML: the Markdown report converted by Python-Markdown (tables extension), charts inlined as PNG
data URIs, no external resources, so the gateway can serve it as one response. PDF (matplotlib's
PdfPages): a summary page with the headline figures and the decision matrix, then one page per chart.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap

import markdown
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from services.analysis import charts, report

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#1f2328}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #d0d7de;padding:4px 8px;vertical-align:top}
th{background:#f6f8fa}figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #d0d7de}
.badge{display:inline-block;padding:.2em .7em;border-radius:1em;color:#fff;font-weight:600}
.GO{background:#1a7f37}.PIVOT{background:#9a6700}.KILL{background:#cf222e}
"""


def _summary_page(context) -> Figure:
    d = context["decision"]
    fig = Figure(figsize=(8.27, 11.69))  # A4 portrait
    lines = [f"Validation report: {context['request'].idea.title or 'untitled idea'}", "",
             f"Recommendation: {context['recommendation']}   composite {d.composite_score:.1f}/100   "
             f"gate: {d.gate.gate_decision}",
             f"Confidence {d.confidence:.0%} (share of simulated worlds in the band; evidence-adjusted "
             f"{d.confidence_detail.evidence_adjusted:.0%}); "
             f"P(NPV > 0) {d.financials.probability_npv_positive:.0%}; "
             f"P(payback <= 24 months) {d.financials.probability_payback_within_24_months:.0%}",
             f"Policy {d.policy_version}", "", "Decision matrix:"]
    for c in d.criteria:
        lines.append(f"  {c.name:<22} {c.weight:>4.0%}  {c.score:5.1f}{'  (neutral)' if c.neutral else ''}")
    lines += ["", "T0+3 gate:"]
    lines += [f"  [{'x' if c.passed else ' '}] {c.name}: {c.evidence}" for c in d.gate.criteria]
    p, f = d.pricing, d.financials
    lines += ["", f"Price ${context['used'].price:,.2f}/month; WTP P10/P50/P90 ${p.wtp_p10_usd:,.2f} / ${p.wtp_p50_usd:,.2f} / "
              f"${p.wtp_p90_usd:,.2f}; revenue-maximising ${p.revenue_maximising_price_usd:,.2f}",
              f"NPV P50 ${f.npv_p50_usd:,.0f}; ROI P50 {f.roi_p50:+.0%}; payback month P50 {f.payback_month_p50 or 'never'}",
              f"TAM ${d.market.tam_usd:,.0f}; SOM top-down ${d.market.som_usd:,.0f} vs bottom-up ${d.market.som_bottom_up_usd:,.0f}"]
    if d.pivot_suggestions:
        lines += ["", "What to change:"] + [f"  - {s}" for s in d.pivot_suggestions]
    lines += ["", "Risks:"] + [f"  {r.category}: {r.score:.0f} ({r.level})" for r in d.risks]
    lines += ["", "Next steps:"] + [f"  {i}. {s}" for i, s in enumerate(d.next_steps, 1)]
    wrapped = []
    for line in lines:
        wrapped += textwrap.wrap(line, 95, subsequent_indent="      ") or [""]
    fig.text(0.06, 0.96, "\n".join(wrapped[:80]), va="top", ha="left", family="monospace", fontsize=7.5, parse_math=False)
    return fig


def render(**context) -> tuple[str, bytes]:
    """(HTML page, PDF bytes) for the analysis context built by decide.analyze."""
    figures = charts.build_all(context)
    md = report.render(**context)
    body = markdown.markdown(md, extensions=["tables"])
    rec = context["recommendation"]
    blocks = []
    for key, fig in figures.items():
        title = charts.title_of(key)
        png = base64.b64encode(charts.render_png(fig)).decode()
        blocks.append(f'<figure id="chart-{key}"><img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'
                      f"<figcaption>{html.escape(title)}</figcaption></figure>")
    title = html.escape(context["request"].idea.title or "untitled idea")
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>SMVM validation: {title}</title>"
            f"<style>{CSS}</style></head><body><p><span class=\"badge {rec}\">{rec}</span></p>{body}"
            f"<h2>Charts</h2>{''.join(blocks)}</body></html>")
    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": f"SMVM validation: {context['request'].idea.title}", "Creator": "SMVM analysis"}) as pdf:
        pdf.savefig(_summary_page(context))
        for fig in figures.values():
            pdf.savefig(fig)
    return page, buf.getvalue()
