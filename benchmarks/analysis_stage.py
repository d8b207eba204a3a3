"""Analysis stage cost: the decision alone against the decision plus its HTML / PDF documents.

The workload is the shape a default run hands the analysis service: 1000 Monte Carlo samples of
36 monthly paths, a 17-point demand curve, 10 competitors. The same request is analysed with
`render_documents=False` (matrix, tornado, VOI, Markdown, summary) and with documents (five
matplotlib charts as PNG, HTML, PDF), alternating, so the ratio compares like with like.

    .venv/bin/python benchmarks/analysis_stage.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from common import append_row  # noqa: E402

from services.analysis.decide import analyze  # noqa: E402
from tests.analysis.test_decide import make_request  # noqa: E402


def workload():
    req = make_request(a=0.5, b=0.01, price=20.0, market_size=50_000.0, n=1000, months=36, tam=1e8,
                       grid=np.linspace(5.0, 45.0, 17), build=6, team=0.7, competitors=10,
                       our_share=0.2, competitor_share=0.3, competitor_price=18.0, bias_passed=True)
    for i, c in enumerate(req.competitors):
        c.feature_vector["core"] = 0.05 * i
    req.our_offering.feature_vector["core"] = 0.5
    return req


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    req = workload()
    analyze(req)  # warm-up: imports, matplotlib font cache
    plain, full = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        analyze(req, render_documents=False)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        resp = analyze(req)
        full.append(time.perf_counter() - t)
    out = {
        "samples": len(req.simulation.samples), "months": 36, "grid_points": 17, "repeats": args.repeats,
        "decision_only_s_median": statistics.median(plain), "with_documents_s_median": statistics.median(full),
        "documents_overhead_ratio": statistics.median(full) / statistics.median(plain),
        "html_bytes": len(resp.report_html), "pdf_bytes": len(resp.report_pdf),
    }
    print(f"analysis stage, {out['samples']} samples x {out['months']} months, median of {args.repeats}")
    print(f"  decision only         {1000 * out['decision_only_s_median']:9.1f} ms")
    print(f"  decision + documents  {1000 * out['with_documents_s_median']:9.1f} ms"
          f"  ({out['documents_overhead_ratio']:.2f}x; HTML {out['html_bytes']:,} B, PDF {out['pdf_bytes']:,} B)")
    append_row("analysis_stage", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
