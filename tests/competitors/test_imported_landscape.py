"""The landscape from an imported competitor list (Idea.grounding.competitors): real rows, normalised
prices, taxonomy mapping with unmapped features listed, ranking, the top-5 gate and positioning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smvm.errors import InvalidArgument
from smvm.v1 import competitor_service_pb2 as pb, grounding_pb2, idea_pb2

from services.competitors.landscape import (
    IMPORTED_BRAND_BASE,
    IMPORTED_BRAND_PER_SHARE,
    TOP_N_GATE,
    build_landscape,
)
from services.ingestion import fx
from services.ingestion.importer import run_import
from services.personas.priors import load_prior

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "grounding" / "competitors"


def _request(grounding: grounding_pb2.GroundingData, count: int = 0, features=("invoicing", "expense tracking")):
    idea = idea_pb2.Idea(domain="finance", title="Books", description="Bookkeeping for freelancers",
                         features=list(features))
    idea.price.CopyFrom(idea_pb2.Price(amount=12, currency="USD", billing_period="monthly"))
    idea.grounding.CopyFrom(grounding)
    return pb.BuildLandscapeRequest(idea=idea, count=count, seed=1)


@pytest.fixture(scope="module")
def imported():
    return run_import("competitors", "", (FIXTURES / "good.csv").read_bytes(), "good.csv")


def test_imported_rows_become_the_landscape_with_normalised_prices(imported):
    response = build_landscape(_request(imported.grounding))
    by_name = {c.name: c for c in response.competitors}
    assert set(by_name) == {"Ledgerly", "PayPilot", "SeatSuite", "OnceBooks"}
    assert all(not c.synthetic for c in response.competitors)
    assert all(c.source.startswith(f"import:{imported.import_id[:12]}") for c in response.competitors)
    rates = fx.load_fx_table().units_per_usd
    assert by_name["Ledgerly"].monthly_price_usd == pytest.approx(99 / 12 / rates["EUR"], abs=1e-4)
    assert by_name["SeatSuite"].monthly_price_usd == pytest.approx(8 * 10 / rates["GBP"], abs=1e-4)
    assert by_name["SeatSuite"].pricing.per_seat and by_name["SeatSuite"].pricing.seats == 10
    assert by_name["OnceBooks"].monthly_price_usd == pytest.approx(240 / fx.DEFAULT_AMORTISATION_MONTHS)
    assert by_name["PayPilot"].pricing.free_tier and by_name["PayPilot"].monthly_price_usd == 15
    assert by_name["Ledgerly"].market_share == pytest.approx(0.18)
    assert by_name["Ledgerly"].brand_strength == pytest.approx(IMPORTED_BRAND_BASE + IMPORTED_BRAND_PER_SHARE * 0.18)
    # OnceBooks states no share: it gets what the listed ones leave of the prior's maximum.
    listed_max = load_prior("finance").listed_share_max
    assert by_name["OnceBooks"].market_share == pytest.approx(listed_max - (0.18 + 0.12 + 0.05), abs=1e-6)
    assert any(w.startswith("market_share:assumed: 1 imported") for w in response.warnings)


def test_taxonomy_mapping_lists_what_it_cannot_map(imported):
    response = build_landscape(_request(imported.grounding))
    by_name = {c.name: c for c in response.competitors}
    ledgerly = by_name["Ledgerly"]
    assert set(ledgerly.feature_vector) == set(response.feature_taxonomy)
    assert ledgerly.feature_vector["expense_tracking"] == 1.0
    assert ledgerly.feature_vector["tax_and_invoicing"] == 1.0
    onebooks = by_name["OnceBooks"]
    assert "offline mode" in onebooks.unmapped_features
    for c in response.competitors:  # never silently dropped: every feature mapped or listed
        mapped = sum(1 for v in c.feature_vector.values() if v > 0)
        assert mapped + len(c.unmapped_features) >= 1


def test_top5_gate_and_ranking(imported):
    response = build_landscape(_request(imported.grounding))
    assert response.top5_identified == 4 and response.top5_synthetic == 0
    assert any(w.startswith("competitors:top5_incomplete: only 4") for w in response.warnings)
    assert [c.rank for c in response.competitors] == [1, 2, 3, 4]
    relevance = [c.relevance for c in response.competitors]
    assert relevance == sorted(relevance, reverse=True)
    # Ledgerly covers both of our features: it ranks first.
    assert response.competitors[0].name == "Ledgerly"
    points = {p.id: p for p in response.positioning}
    assert set(points) == {c.id for c in response.competitors} | {"ours"}
    assert max(p.normalised_price for p in points.values()) == 1.0


def test_top_n_cuts_a_long_list_and_the_gate_counts_five():
    rows = [{"name": f"Vendor {i}", "price": 5 + i, "features": ["invoicing"] + (["budgeting"] if i % 2 else []),
             "market_share": 0.02, "source": "list"} for i in range(14)]
    result = run_import("competitors", "json", json.dumps(rows).encode())
    response = build_landscape(_request(result.grounding))
    assert len(response.competitors) == 10  # default top-N
    assert response.top5_identified == TOP_N_GATE and response.top5_synthetic == 0
    assert not any("top5_incomplete" in w for w in response.warnings)
    assert len(build_landscape(_request(result.grounding, count=3)).competitors) == 3


def test_without_imports_the_landscape_is_labelled_synthetic():
    response = build_landscape(_request(grounding_pb2.GroundingData()))
    assert all(c.synthetic and c.source.startswith("prior:finance") for c in response.competitors)
    assert response.top5_synthetic == response.top5_identified == TOP_N_GATE
    assert any(w.startswith("competitors:synthetic:") for w in response.warnings)


@pytest.mark.parametrize("row, field", [
    ({"name": "", "price_amount": 1}, "idea.grounding.competitors[0].name"),
    ({"name": "A", "price_amount": 1, "market_share": 1.5}, "idea.grounding.competitors[0].market_share"),
    ({"name": "A", "price_amount": float("inf")}, "idea.grounding.competitors[0].price.amount"),
    ({"name": "A", "price_amount": 1, "currency": "XYZ"}, "idea.grounding.competitors[0].price.currency"),
    ({"name": "A", "price_amount": 1, "seats": -2}, "idea.grounding.competitors[0].seats"),
])
def test_unusable_imported_rows_name_their_field(row, field):
    g = grounding_pb2.GroundingData()
    g.competitors.add(**row)
    with pytest.raises(InvalidArgument) as err:
        build_landscape(_request(g))
    assert err.value.field == field
