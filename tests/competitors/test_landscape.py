"""build_landscape: ranking, our offering, determinism, every domain prior, validation."""

import asyncio
import hashlib
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from services.competitors.landscape import (
    DEFAULT_COUNT,
    MAX_COUNT,
    RELEVANCE_PRIOR_WEIGHT,
    build_landscape,
    feature_vector,
)
from services.competitors.servicer import CompetitorServicer
from services.orchestrator import simconfig
from services.personas.synthesis import generate_personas
from services.personas.priors import available_domains, load_prior
from smvm.errors import InvalidArgument
from smvm.v1 import competitor_service_pb2 as pb, idea_pb2, persona_service_pb2, run_pb2

REPO = Path(__file__).resolve().parents[2]
SAAS_FEATURES = ["workflow automation", "slack integration", "AI summaries", "quantum widgets"]


def request(domain="b2b_saas", count=0, seed=7, features=(), price=None, **idea):
    i = idea_pb2.Idea(domain=domain, features=list(features), **idea)
    if price is not None:
        i.price.CopyFrom(price)
    return pb.BuildLandscapeRequest(idea=i, count=count, seed=seed)


def test_default_count_ranks_archetypes_by_prior_relevance_without_features():
    r = build_landscape(request())
    assert len(r.competitors) == DEFAULT_COUNT
    assert [c.rank for c in r.competitors] == list(range(1, DEFAULT_COUNT + 1))
    prior = load_prior("b2b_saas")
    expected = sorted(prior.archetypes, key=lambda a: (-a.relevance, a.name))[:DEFAULT_COUNT]
    assert [c.name for c in r.competitors] == [a.name for a in expected]
    assert [c.relevance for c in r.competitors] == [a.relevance for a in expected]
    assert r.competitors[0].name == "Incumbent suite A"  # relevance 0.90 in the prior file
    assert all(c.synthetic and c.source == "prior:b2b_saas" for c in r.competitors)
    assert (r.top5_identified, r.top5_synthetic) == (5, 5)
    assert r.prior == "b2b_saas" and r.domain_detection == "idea.domain" and r.fx_rates_as_of == "2025-02-28"


def test_feature_overlap_reorders_and_known_relevance():
    r = build_landscape(request(features=SAAS_FEATURES, count=4))
    # ours covers core_workflow, integrations, ai_assistant; Modern challenger B covers all three.
    assert r.competitors[0].name == "Modern challenger B"
    assert r.competitors[0].relevance == pytest.approx(RELEVANCE_PRIOR_WEIGHT * 0.85 + (1 - RELEVANCE_PRIOR_WEIGHT) * 1.0)
    relevances = [c.relevance for c in r.competitors]
    assert relevances == sorted(relevances, reverse=True) and len(relevances) == 4


def test_our_offering_vector_price_and_warnings():
    price = idea_pb2.Price(amount=6.99, currency="EUR", billing_period="monthly")
    r = build_landscape(request(features=SAAS_FEATURES, price=price, title="FlowPilot"))
    ours = r.our_offering
    assert ours.name == "FlowPilot" and not ours.synthetic and ours.rank == 0
    assert ours.monthly_price_usd == round(6.99 / 0.960523, 4)
    assert ours.pricing.fx_rates_as_of == "2025-02-28"
    assert list(ours.unmapped_features) == ["quantum widgets"]
    assert {f for f, v in ours.feature_vector.items() if v == 1.0} == {"core_workflow", "integrations", "ai_assistant"}
    assert list(r.feature_taxonomy) == list(load_prior("b2b_saas").feature_ids)
    assert any(w.startswith("features:unmapped") and "quantum widgets" in w for w in r.warnings)
    assert not any(w.startswith("price:missing") for w in r.warnings)
    point = next(p for p in r.positioning if p.ours)
    assert point.quadrant != "unpriced" and point.feature_coverage == pytest.approx(0.3)


def test_missing_price_and_features_are_flagged():
    r = build_landscape(request(price=idea_pb2.Price(amount=0, currency="USD", billing_period="monthly")))
    assert r.our_offering.monthly_price_usd == 0.0
    assert any(w.startswith("price:missing") for w in r.warnings)
    assert any(w.startswith("features:missing") for w in r.warnings)
    assert next(p for p in r.positioning if p.ours).quadrant == "unpriced"
    # assumed vector: per-feature median of the archetypes (seed-independent even with variants)
    prior = load_prior("b2b_saas")
    vectors = [feature_vector(prior, list(a.features))[0] for a in prior.archetypes]
    for f in prior.feature_ids:
        assert r.our_offering.feature_vector[f] == statistics.median(v[f] for v in vectors)
    other = build_landscape(request(count=20, seed=99, price=idea_pb2.Price(amount=0)))
    assert other.our_offering.feature_vector == r.our_offering.feature_vector
    # with no overlap basis, relevance is the prior's
    assert r.competitors[0].relevance == 0.90


def test_features_named_in_the_description_are_used_when_none_are_listed():
    r = build_landscape(request(description="Invoicing for agencies with Slack integration and custom reports."))
    vector = r.our_offering.feature_vector
    assert {f for f, v in vector.items() if v == 1.0} == {"integrations", "reporting"}
    assert sum(vector.values()) == 2.0
    assert any(w.startswith("features:from_text") for w in r.warnings)
    assert not any(w.startswith("features:missing") for w in r.warnings)


def test_unknown_domain_falls_back_to_general():
    r = build_landscape(pb.BuildLandscapeRequest(count=3))
    assert r.prior == "general" and r.domain_detection == "fallback"
    assert any(w.startswith("prior:fallback_general") for w in r.warnings)
    assert len(r.competitors) == 3


def test_same_seed_same_bytes_across_calls_and_processes():
    req = request(features=SAAS_FEATURES, count=25, seed=42)
    a = build_landscape(req)
    b = build_landscape(req)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    code = (
        "import hashlib,sys;from smvm.v1 import competitor_service_pb2 as pb;"
        "from services.competitors.landscape import build_landscape;"
        "r=pb.BuildLandscapeRequest.FromString(sys.stdin.buffer.read());"
        "print(hashlib.sha256(build_landscape(r).SerializeToString(deterministic=True)).hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=req.SerializeToString(), capture_output=True, cwd=REPO, check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.decode().strip() == hashlib.sha256(a.SerializeToString(deterministic=True)).hexdigest()


def test_different_seed_changes_only_the_synthetic_variants():
    n_arch = len(load_prior("b2b_saas").archetypes)
    a = build_landscape(request(features=SAAS_FEATURES, count=n_arch + 6, seed=1))
    b = build_landscape(request(features=SAAS_FEATURES, count=n_arch + 6, seed=2))

    def split(r):
        base, variants = {}, {}
        for c in r.competitors:
            c = type(c).FromString(c.SerializeToString())
            c.rank = 0
            (variants if c.source.endswith(":variant") else base)[c.id] = c
        return base, variants

    base_a, var_a = split(a)
    base_b, var_b = split(b)
    assert len(base_a) == n_arch and len(var_a) == 6
    assert base_a == base_b  # archetypes do not depend on the seed
    assert set(var_a) == set(var_b)  # same variant slots ...
    assert any(var_a[k] != var_b[k] for k in var_a)  # ... with different draws
    assert all(c.synthetic and "(variant 2)" in c.name for c in var_a.values())
    assert a.our_offering == b.our_offering
    assert any("seeded variants" in w for w in a.warnings)
    # a larger count keeps the earlier variants' draws
    c = build_landscape(request(features=SAAS_FEATURES, count=n_arch + 9, seed=1))
    _, var_c = split(c)
    for k, v in var_a.items():
        assert var_c[k].monthly_price_usd == v.monthly_price_usd and var_c[k].feature_vector == v.feature_vector


def test_market_shares_stay_within_the_listed_maximum():
    # b2b_saas archetypes list 0.81 against a 0.75 maximum: scaled down, variants get no room.
    saas = build_landscape(request(count=30, seed=3))
    assert sum(c.market_share for c in saas.competitors) == pytest.approx(0.75, abs=1e-5)
    assert saas.competitors[0].name == "Incumbent suite A"
    assert saas.competitors[0].market_share == pytest.approx(0.24 * 0.75 / 0.81, abs=1e-6)
    assert any(w.startswith("market_share:scaled") for w in saas.warnings)
    # consumer_subscription archetypes list 0.74 of 0.80: unchanged, variants share the 0.06 left.
    prior = load_prior("consumer_subscription")
    subs = build_landscape(request(domain="consumer_subscription", count=30, seed=3))
    by_name = {a.name: a.market_share for a in prior.archetypes}
    for c in subs.competitors:
        if c.name in by_name:
            assert c.market_share == pytest.approx(by_name[c.name], abs=1e-9)
    variant_total = sum(c.market_share for c in subs.competitors if c.source.endswith(":variant"))
    assert 0 < variant_total <= 0.06 + 1e-5
    assert sum(c.market_share for c in subs.competitors) <= prior.listed_share_max + 1e-5


@pytest.mark.parametrize("domain", available_domains())
def test_every_domain_prior_builds_a_landscape(domain):
    prior = load_prior(domain)
    for count in (0, len(prior.archetypes) + 3):
        r = build_landscape(request(domain=domain, count=count, seed=5))
        n = count or DEFAULT_COUNT
        assert len(r.competitors) == n and r.prior == domain
        assert [c.rank for c in r.competitors] == list(range(1, n + 1))
        for c in r.competitors:
            assert list(c.feature_vector) and set(c.feature_vector) == set(r.feature_taxonomy)
            assert all(0.0 <= v <= 1.0 for v in c.feature_vector.values())
            assert c.monthly_price_usd >= 0 and c.pricing.normalisation.endswith("USD/month")
            assert c.list_price.currency and c.list_price.billing_period
        assert len(r.positioning) == n + 1 and sum(p.ours for p in r.positioning) == 1
        assert {p.quadrant for p in r.positioning} <= {"premium", "value", "overpriced", "budget", "unpriced"}
        assert max(p.normalised_price for p in r.positioning) == 1.0


@pytest.mark.parametrize(
    "req, field",
    [
        (request(count=-1), "count"),
        (request(count=MAX_COUNT + 1), "count"),
        (request(features=["ok", "  "]), "idea.features[1]"),
        (request(features=["x" * 500]), "idea.features[0]"),
        (request(features=["f"] * 500), "idea.features"),
        (request(price=idea_pb2.Price(amount=-3, currency="USD", billing_period="monthly")), "idea.price.amount"),
        (request(price=idea_pb2.Price(amount=3, currency="ZZZ", billing_period="monthly")), "idea.price.currency"),
        (request(price=idea_pb2.Price(amount=3, currency="USD", billing_period="biweekly")), "idea.price.billing_period"),
        (request(price=idea_pb2.Price(amount=3, currency="USD", billing_period="one_time", amortisation_months=-2)),
         "idea.price.amortisation_months"),
    ],
)
def test_invalid_requests_name_the_field(req, field):
    with pytest.raises(InvalidArgument) as err:
        build_landscape(req)
    assert err.value.field == field


def test_servicer_wraps_the_domain_function():
    req = request(features=SAAS_FEATURES, count=5)
    served = asyncio.run(CompetitorServicer().BuildLandscape(req, None))
    assert served.SerializeToString() == build_landscape(req).SerializeToString()


def test_landscape_feeds_the_simulation_config():
    price = idea_pb2.Price(amount=59.99, currency="USD", billing_period="annual")
    landscape = build_landscape(request(features=SAAS_FEATURES, price=price, count=12))
    personas = generate_personas(
        persona_service_pb2.GeneratePersonasRequest(idea=idea_pb2.Idea(domain="b2b_saas"), count=5, seed=1)
    )
    config = simconfig.build_simulation_config(
        sam_usd=1e8, personas=personas, landscape=landscape, configuration=run_pb2.RunConfiguration(),
        seed=1, max_utility_evaluations=10**9,
    )
    taxonomy = list(landscape.feature_taxonomy)
    assert list(config.feature_taxonomy) == taxonomy
    assert config.our_offering.monthly_price_usd == pytest.approx(4.9992)
    assert list(config.our_offering.features) == [landscape.our_offering.feature_vector[f] for f in taxonomy]
    assert len(config.competitors) == 12
    for spec, comp in zip(config.competitors, landscape.competitors):
        assert spec.monthly_price_usd == comp.monthly_price_usd
        assert list(spec.features) == [comp.feature_vector[f] for f in taxonomy]
        assert spec.brand == comp.brand_strength
