"""The bookkeeping of benchmarks/run_breakdown.py: per-run segment deltas between two scrapes, and the
decision's parts timed where each is entered from outside the others, with nothing left patched."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import run_breakdown  # noqa: E402

from services.analysis import decide, pricing  # noqa: E402
from tests.analysis.test_decide import make_request  # noqa: E402


def test_a_runs_segments_are_the_scrape_after_less_the_scrape_before():
    before = {"personas.call": (1.0, 3), "analysis.call": (4.0, 3), "documents.call": (9.0, 2)}
    after = {"personas.call": (1.25, 4), "analysis.call": (4.5, 4), "documents.call": (9.0, 2), "simulation.run": (0.75, 1)}
    assert run_breakdown.delta(after, before) == {"personas.call": 0.25, "analysis.call": 0.5, "simulation.run": 0.75}


def test_the_decisions_parts_add_up_to_at_most_the_whole_and_are_unpatched_afterwards():
    originals = {name: getattr(decide, name) for name in ("read_simulation", "_scenario", "sensitivity", "evppi")}
    profile = pricing.elasticity_profile
    request = make_request(n=60, competitors=3, our_share=0.2, competitor_share=0.3, competitor_price=18.0)
    parts, whole = run_breakdown.time_decision_parts(request, repeats=1)
    assert set(parts) >= {"read the simulation (samples -> arrays)", "tornado (every swing re-scored)",
                          "scenarios at the used and the best price", "the decision message and the rest"}
    assert all(v >= 0 for v in parts.values()) and parts["tornado (every swing re-scored)"] > 0
    assert np.isclose(sum(parts.values()), whole)  # the rest is the whole less the timed parts
    assert {name: getattr(decide, name) for name in originals} == originals and pricing.elasticity_profile is profile
