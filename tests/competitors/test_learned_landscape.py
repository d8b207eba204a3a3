"""Competitors learned from earlier runs (BuildLandscapeRequest.known_competitors) join the landscape:
after imported rows, before synthetic entries, de-duplicated by name, with their provenance."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from smvm.errors import InvalidArgument
from smvm.v1 import competitor_service_pb2 as pb, idea_pb2, memory_service_pb2 as mem

from services.competitors.landscape import IMPORTED_BRAND_BASE, IMPORTED_BRAND_PER_SHARE, build_landscape
from services.competitors.learned import LEARNED_DEFAULT_SHARE, name_key
from services.ingestion.importer import run_import
from services.personas.priors import load_prior

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "grounding" / "competitors"
SEEN = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.timezone.utc)


def known(name: str, price: float = 20.0, *, run_id: str = "RUN-PAST-1", source: str = "import:0123456789ab;G2",
          share: float | None = None, synthetic: bool = False, features=("invoicing",), runs_seen: int = 1):
    c = mem.KnownCompetitor(name=name, domain="finance", runs_seen=runs_seen, last_monthly_price_usd=price,
                            features=list(features), synthetic=synthetic, source=source, last_run_id=run_id,
                            market_share=share)
    c.last_seen.FromDatetime(SEEN)
    return c


def request(known_competitors=(), count: int = 0, grounding=None, seed: int = 1):
    idea = idea_pb2.Idea(domain="finance", title="Books", description="Bookkeeping for freelancers",
                         features=["invoicing", "expense tracking"])
    idea.price.CopyFrom(idea_pb2.Price(amount=12, currency="USD", billing_period="monthly"))
    if grounding is not None:
        idea.grounding.CopyFrom(grounding)
    return pb.BuildLandscapeRequest(idea=idea, count=count, seed=seed, known_competitors=list(known_competitors))


@pytest.fixture(scope="module")
def imported():
    return run_import("competitors", "", (FIXTURES / "good.csv").read_bytes(), "good.csv")


def test_learned_competitors_join_before_the_synthetic_ones_with_their_provenance():
    response = build_landscape(request([known("Tallyho", 30.0, share=0.07, runs_seen=3), known("Sumly", 0.0)], count=10))
    assert len(response.competitors) == 10
    assert [c.provenance for c in response.competitors] == ["learned"] * 2 + ["synthetic"] * 8
    assert [c.rank for c in response.competitors] == list(range(1, 11))
    tally = next(c for c in response.competitors if c.name == "Tallyho")
    assert not tally.synthetic and tally.source == "memory:RUN-PAST-1"
    assert tally.learned.run_id == "RUN-PAST-1" and tally.learned.source == "import:0123456789ab;G2"
    assert tally.learned.runs_seen == 3 and tally.learned.last_seen.ToDatetime(dt.timezone.utc) == SEEN
    assert tally.monthly_price_usd == 30.0
    assert tally.brand_strength == pytest.approx(IMPORTED_BRAND_BASE + IMPORTED_BRAND_PER_SHARE * 0.07)
    sumly = next(c for c in response.competitors if c.name == "Sumly")
    assert sumly.pricing.free_tier
    # Learned shares (0.07 stated, Sumly the default) share what the archetypes leave of the maximum.
    room = load_prior("finance").listed_share_max - sum(c.market_share for c in response.competitors[2:])
    factor = min(1.0, room / (0.07 + LEARNED_DEFAULT_SHARE))
    assert tally.market_share == pytest.approx(0.07 * factor, abs=1e-5)
    assert sumly.market_share == pytest.approx(LEARNED_DEFAULT_SHARE * factor, abs=1e-5)
    assert all(c.synthetic and c.provenance == "synthetic" for c in response.competitors[2:])
    assert response.our_offering.provenance == "idea"
    assert response.top5_synthetic == 3
    assert any(w.startswith("competitors:learned: 2 competitor(s)") and "RUN-PAST-1" in w for w in response.warnings)
    assert any(w.startswith("competitors:synthetic: 8 of 10") for w in response.warnings)


def test_learned_entries_never_move_the_archetypes_or_their_shares():
    plain = build_landscape(request(count=5))
    grounded = build_landscape(request([known("Tallyho", share=0.3)], count=5))
    archetypes = {c.name: c.market_share for c in plain.competitors if ":v" not in c.id}
    after = {c.name: c.market_share for c in grounded.competitors if c.synthetic and ":v" not in c.id}
    # the learned entry takes the last place of the ranking; the archetypes left keep their shares
    assert len(after) == len(archetypes) - 1 and all(after[n] == archetypes[n] for n in after)
    room = load_prior("finance").listed_share_max - sum(after.values())
    learned = next(c for c in grounded.competitors if c.provenance == "learned")
    assert learned.market_share == pytest.approx(min(0.3, room), abs=1e-6)
    assert sum(c.market_share for c in grounded.competitors) <= load_prior("finance").listed_share_max + 1e-9


def test_imported_rows_come_first_and_a_learned_namesake_is_dropped(imported):
    rows = [known("  LEDGERLY ", 1.0), known("Tallyho"), known("Prior Thing", synthetic=True)]
    response = build_landscape(request(rows, grounding=imported.grounding))
    provenance = [c.provenance for c in response.competitors]
    assert provenance == ["imported"] * 4 + ["learned"]  # no synthetic padding when a list was imported
    assert [c.name for c in response.competitors if c.provenance == "learned"] == ["Tallyho"]
    ledgerly = next(c for c in response.competitors if c.name == "Ledgerly")
    assert ledgerly.source.startswith("import:") and ledgerly.monthly_price_usd != 1.0
    assert any("1 left out as already imported" in w for w in response.warnings)
    assert any(w.startswith("competitors:imported: 4 of 4") for w in response.warnings)


def test_a_small_count_drops_learned_before_imported(imported):
    response = build_landscape(request([known("Tallyho"), known("Sumly")], count=3, grounding=imported.grounding))
    assert [c.provenance for c in response.competitors] == ["imported"] * 3


def test_the_same_request_gives_the_same_bytes():
    rows = [known("Tallyho", share=0.1), known("Sumly")]
    a = build_landscape(request(rows, count=12, seed=7)).SerializeToString(deterministic=True)
    b = build_landscape(request(rows, count=12, seed=7)).SerializeToString(deterministic=True)
    assert a == b


@pytest.mark.parametrize("row, field", [
    (mem.KnownCompetitor(name=" "), "known_competitors[0].name"),
    (mem.KnownCompetitor(name="X", last_monthly_price_usd=float("nan")), "known_competitors[0].last_monthly_price_usd"),
    (mem.KnownCompetitor(name="X", market_share=1.5), "known_competitors[0].market_share"),
    (mem.KnownCompetitor(name="X", features=["f" * 201]), "known_competitors[0].features[0]"),
    (mem.KnownCompetitor(name="X", last_seen={"seconds": -10**12}), "known_competitors[0].last_seen"),
])
def test_a_bad_known_competitor_is_refused_naming_the_field(row, field):
    with pytest.raises(InvalidArgument) as err:
        build_landscape(request([row]))
    assert err.value.field == field


NAMES = st.sampled_from(["Tallyho", "tallyho", "Sumly", "SUMLY ", "Ledgerly", "Acme", "Books Co", "books  co"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(NAMES, st.booleans()), max_size=8), st.integers(min_value=1, max_value=15))
def test_merge_rules_hold_for_any_memory(rows, count):
    response = build_landscape(request([known(n, synthetic=s) for n, s in rows], count=count))
    names = [name_key(c.name) for c in response.competitors]
    assert len(names) == len(set(names))  # de-duplicated by name
    order = [{"learned": 0, "synthetic": 1}[c.provenance] for c in response.competitors]
    assert order == sorted(order)  # learned before synthetic
    wanted = list(dict.fromkeys(name_key(n) for n, s in rows if not s))
    learned = [name_key(c.name) for c in response.competitors if c.provenance == "learned"]
    assert learned == [k for k in sorted(wanted, key=lambda k: learned.index(k) if k in learned else 99)][:count]
    assert set(learned) == set(wanted[:count]) or len(learned) == min(count, len(wanted))
    assert len(response.competitors) == count
