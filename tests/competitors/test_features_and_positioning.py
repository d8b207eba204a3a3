"""Feature mapping onto the canonical taxonomy, and the positioning matrix on a hand-made landscape."""

import pytest
from hypothesis import given, settings, strategies as st

from services.competitors.landscape import feature_vector
from services.competitors.positioning import Offering, feature_coverage, positioning_matrix, quadrant
from services.personas.priors import load_prior, map_feature


def test_map_feature_exact_similarity_and_unmapped():
    prior = load_prior("b2b_saas")
    exact = map_feature(prior, "Slack Integration")
    assert (exact.feature, exact.method, exact.score) == ("integrations", "synonym", 1.0)
    assert map_feature(prior, "audit-logs").feature == "security_compliance"  # punctuation folded
    assert map_feature(prior, "integration").feature == "integrations"  # plural folded
    assert map_feature(prior, "reports").method == "synonym"  # "reporting" itself: activity stem folded
    similar = map_feature(prior, "weekly reports")  # {weekly, report} vs "reporting" {report} -> Jaccard 1/2
    assert (similar.feature, similar.method, similar.score) == ("reporting", "similarity", 0.5)
    nothing = map_feature(prior, "quantum widgets")
    assert nothing.feature is None and nothing.method == "unmapped"


def test_british_spellings_and_activity_nouns_map_like_their_american_and_agent_forms():
    """The example idea's own features: "automatic categorisation" is the prior's "automatic
    categorization", "AI coaching" its "ai financial coach" (both were unmapped, so the positioning
    pivot named expense tracking and financial advice as gaps the idea had)."""
    prior = load_prior("finance")
    assert (map_feature(prior, "automatic categorisation").feature, map_feature(prior, "automatic categorisation").method) == (
        "expense_tracking", "synonym")
    assert map_feature(prior, "Transaction Categorisations").feature == "expense_tracking"
    coaching = map_feature(prior, "AI coaching")
    assert (coaching.feature, coaching.method) == ("financial_advice", "similarity") and coaching.score == pytest.approx(2 / 3, abs=1e-6)
    assert map_feature(prior, "quantum coaching").feature is None  # one shared stem in three is still too weak


def test_partial_coverage_and_max_rule():
    prior = load_prior("b2b_saas")
    vector, unmapped = feature_vector(
        prior, [("task automation", 1.0), ("reports", 0.5), ("zapier", 0.5), ("webhooks", 0.25), ("self hosting", 1.0)]
    )
    assert list(vector) == list(prior.feature_ids)  # dense, taxonomy order
    assert vector["core_workflow"] == 1.0
    assert vector["reporting"] == 0.5
    assert vector["integrations"] == 0.5  # max of zapier 0.5 and webhooks 0.25
    assert vector["security_compliance"] == 0.0
    assert unmapped == ["self hosting"]


def test_archetype_partial_features_from_the_prior_file():
    """SMB all-in-one C lists "reports: 0.5" and "zapier: 0.5" in data/priors/b2b_saas.yaml."""
    prior = load_prior("b2b_saas")
    arch = next(a for a in prior.archetypes if a.name == "SMB all-in-one C")
    vector, unmapped = feature_vector(prior, list(arch.features))
    assert vector["reporting"] == 0.5 and vector["integrations"] == 0.5
    assert vector["core_workflow"] == vector["mobile_access"] == vector["support_onboarding"] == 1.0
    assert unmapped == []


TAX = ["f1", "f2"]
FULL, NONE = {"f1": 1.0, "f2": 1.0}, {"f1": 0.0, "f2": 0.0}


def test_quadrants_split_at_the_competitor_medians():
    offerings = [
        Offering("a", "A", 10.0, FULL),
        Offering("b", "B", 20.0, NONE),
        Offering("c", "C", 30.0, FULL),
        Offering("d", "D", 40.0, NONE),
        Offering("ours", "Us", 100.0, {"f1": 1.0, "f2": 0.0}, ours=True),
    ]
    points = {p.id: p for p in positioning_matrix(offerings, TAX)}
    # medians: price 25, coverage 0.5 (ours excluded)
    assert {k: p.quadrant for k, p in points.items()} == {
        "a": "value", "b": "budget", "c": "premium", "d": "overpriced", "ours": "premium",
    }
    assert points["ours"].normalised_price == 1.0 and points["a"].normalised_price == 0.1
    assert points["ours"].feature_coverage == 0.5 and points["ours"].ours and not points["a"].ours


def test_unpriced_ours_and_median_ties():
    offerings = [
        Offering("a", "A", 10.0, FULL),
        Offering("b", "B", 20.0, NONE),
        Offering("c", "C", 30.0, {"f1": 1.0, "f2": 0.0}),
        Offering("ours", "Us", 0.0, FULL, ours=True, unpriced=True),
    ]
    points = {p.id: p for p in positioning_matrix(offerings, TAX)}
    assert points["ours"].quadrant == "unpriced" and points["ours"].normalised_price == 0.0
    # median price 20 is "low" (not strictly above), median coverage 0.5 is "high"
    assert points["b"].quadrant == "budget" and points["c"].quadrant == "premium"
    assert quadrant(20.0, 0.5, 20.0, 0.5) == "value"


def test_weighted_coverage():
    assert feature_coverage({"f1": 1.0, "f2": 0.0}, TAX) == 0.5
    assert feature_coverage({"f1": 1.0, "f2": 0.0}, TAX, {"f1": 3.0, "f2": 1.0}) == pytest.approx(0.75)
    assert feature_coverage({}, []) == 0.0


def test_every_synonym_maps_to_its_own_feature_in_every_prior():
    """A synonym shadowed by another feature's phrase would silently go to the wrong feature."""
    from services.personas.priors import all_priors

    clashes = []
    for domain, prior in all_priors().items():
        for f in prior.features:
            for phrase in (f.label, *f.synonyms):
                m = map_feature(prior, phrase)
                if (m.feature, m.method) != (f.id, "synonym"):
                    clashes.append((domain, f.id, phrase, m.feature))
    assert clashes == []


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 1000, allow_nan=False), st.floats(0, 1), st.floats(0, 1)),
        min_size=1,
        max_size=12,
    )
)
def test_positioning_properties(rows):
    offerings = [Offering(f"c{i}", f"C{i}", round(p, 4), {"f1": a, "f2": b}) for i, (p, a, b) in enumerate(rows)]
    points = positioning_matrix(offerings, TAX)
    prices = sorted(o.monthly_price_usd for o in offerings)
    raw_cov = [feature_coverage(o.feature_vector, TAX) for o in offerings]
    for o, p, c in zip(offerings, points, raw_cov):
        assert 0.0 <= p.normalised_price <= 1.0 and 0.0 <= p.feature_coverage <= 1.0
        high_price = p.quadrant in ("premium", "overpriced")
        # an offering at the cheapest price is never "high price"; the most expensive one is unless all tie
        if o.monthly_price_usd == prices[0]:
            assert not high_price
        if c == max(raw_cov):
            assert p.quadrant in ("premium", "value")
    if prices[-1] > 0:
        assert max(p.normalised_price for p in points) == 1.0
