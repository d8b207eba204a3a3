"""Known answers for normalisation, and one test per validation rule naming its field."""

from __future__ import annotations

import math

import pytest

from smvm.errors import InvalidArgument
from smvm.v1 import ingestion_service_pb2

from services.ingestion import fx
from services.ingestion.normalize import normalize_idea


def test_business_example_maps_field_for_field(business_body, to_request):
    idea = normalize_idea(to_request("business_idea", business_body))
    assert idea.source_shape == "business_idea"
    assert idea.title == "AI-powered personal finance coach"
    assert idea.domain == "fintech"
    assert (idea.market_size.tam_usd, idea.market_size.sam_usd, idea.market_size.som_usd) == (12e9, 1.5e9, 45e6)
    assert idea.market_size.source == "submitted"
    assert (idea.price.amount, idea.price.currency, idea.price.billing_period) == (9.99, "USD", "monthly")
    assert list(idea.features)[:2] == ["bank account sync", "automatic categorisation"] and len(idea.features) == 6
    assert idea.estimated_build_months == 6 and idea.team_coverage == pytest.approx(0.7)
    assert not idea.pii_findings and not idea.warnings


def test_t0_example_maps_to_the_same_canonical_idea_and_masks_the_submitter(t0_body, to_request):
    idea = normalize_idea(to_request("idea", t0_body))
    assert idea.source_shape == "idea"
    assert idea.title == "AI-powered personal finance management platform"  # derived from the description
    assert idea.domain == "finance" and idea.urgency == "high"
    assert idea.target_market == "millennials" and idea.value_proposition == "AI-driven insights"
    # estimated_market_size is the TAM; SAM = 10% of TAM, SOM = 5% of SAM, labelled as derived
    assert (idea.market_size.tam_usd, idea.market_size.sam_usd, idea.market_size.som_usd) == (5e6, 5e5, 2.5e4)
    assert idea.market_size.source == "submitted;derived:sam=0.1*tam,som=0.05*sam"
    assert idea.submitter == "[EMAIL]"
    assert [(f.field, f.kind, f.count) for f in idea.pii_findings] == [("submitter", "email", 1)]
    assert "john.doe" not in str(idea)
    assert not idea.HasField("price")
    assert any(w.startswith("title:derived") for w in idea.warnings)


@pytest.mark.parametrize(
    "price, expected_monthly_usd",
    [
        ({"amount": 120, "currency": "EUR", "billing_period": "annual"}, 10.411),  # 10 EUR / 0.960523
        ({"amount": 120, "currency": "eur", "billing_period": "Yearly"}, 10.411),  # spellings folded
        ({"amount": 10, "currency": "USD", "billing_period": "weekly"}, 43.3333),  # x 52 / 12
        ({"amount": 30, "currency": "USD", "billing_period": "quarterly"}, 10.0),
        ({"amount": 240, "currency": "GBP", "billing_period": "one_time"}, 12.6029),  # / 24 months / 0.793468
        ({"amount": 120, "currency": "GBP", "billing_period": "one_time", "amortisation_months": 12}, 12.6029),
        ({"amount": 1_200_000, "currency": "JPY", "billing_period": "annual"}, 663.2883),
        ({"amount": 9.99}, 9.99),  # USD monthly assumed, with warnings
    ],
)
def test_price_is_normalised_to_monthly_usd_with_the_table_rate(business_body, to_request, price, expected_monthly_usd):
    business_body["price"] = price
    idea = normalize_idea(to_request("business_idea", business_body))
    assert idea.price.amount == pytest.approx(expected_monthly_usd, abs=1e-4)
    assert (idea.price.currency, idea.price.billing_period) == ("USD", "monthly")
    if price.get("currency", "USD").upper() != "USD" or price.get("billing_period", "monthly") != "monthly":
        # the original is kept, with the rate table's date
        note = next(w for w in idea.warnings if w.startswith("price:normalised"))
        assert f"{price['amount']:g}" in note and fx.load_fx_table().as_of in note
    if "currency" not in price:
        assert any("USD assumed" in w for w in idea.warnings)


def test_fx_table_is_dated_and_eur_matches_the_ecb_quote():
    table = fx.load_fx_table()
    assert table.as_of == "2025-02-28"
    assert table.units_per_usd["EUR"] == pytest.approx(1 / 1.0411, rel=1e-6)
    with pytest.raises(InvalidArgument) as err:
        table.to_usd(1.0, "XBT", "x.price.currency")
    assert err.value.field == "x.price.currency"


@pytest.mark.parametrize(
    "tam, sam, som, expected, source",
    [
        (1e9, None, None, (1e9, 1e8, 5e6), "submitted;derived:sam=0.1*tam,som=0.05*sam"),
        (1e9, 2e8, None, (1e9, 2e8, 1e7), "submitted;derived:som=0.05*sam"),
        (1e9, None, 3e8, (1e9, 3e8, 3e8), "submitted;derived:sam=0.1*tam"),  # SAM never below SOM
        (None, 2e8, 1e6, (0.0, 2e8, 1e6), "submitted"),  # TAM unknown stays 0
        (None, None, None, (0.0, 0.0, 0.0), "missing"),
        (0.0, 0.0, 0.0, (0.0, 0.0, 0.0), "missing"),  # 0 is "not given"
        (1e9, None, 0.0, (1e9, 1e8, 5e6), "submitted;derived:sam=0.1*tam,som=0.05*sam"),
    ],
)
def test_market_size_derivation(business_body, to_request, tam, sam, som, expected, source):
    for key, value in (("estimated_tam", tam), ("estimated_sam", sam), ("estimated_som", som)):
        business_body.pop(key)
        if value is not None:
            business_body[key] = value
    size = normalize_idea(to_request("business_idea", business_body)).market_size
    assert (size.tam_usd, size.sam_usd, size.som_usd) == expected and size.source == source


def test_free_text_is_trimmed_nfc_and_whitespace_normalised(business_body, to_request):
    business_body["title"] = "  Cafe\u0301\u200b   finder\t "  # decomposed e + acute, zero-width space
    business_body["description"] = "\ufeffFirst  line.\r\n\r\n\r\n   Second\tline   \n"
    business_body["features"] = ["  Budgeting ", "budgeting", "AI  coaching"]
    business_body["domain"] = "  FinTech "
    idea = normalize_idea(to_request("business_idea", business_body))
    assert idea.title == "Caf\u00e9 finder"
    assert idea.description == "First line.\n\nSecond line"
    assert list(idea.features) == ["Budgeting", "AI coaching"]
    assert any(w.startswith("features:duplicates_removed: 1") for w in idea.warnings)
    assert idea.domain == "fintech"


def _set(path: str, value):
    def mutate(body: dict) -> None:
        *parents, leaf = path.split(".")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return mutate


_DELETE = object()
_BIG = 1e15

BUSINESS_RULES = [
    ("title", _DELETE, "business_idea.title"),
    ("title", " \u200b\t ", "business_idea.title"),
    ("title", "x" * 201, "business_idea.title"),
    ("description", _DELETE, "business_idea.description"),
    ("description", "too short", "business_idea.description"),
    ("description", "y" * 10_001, "business_idea.description"),
    ("target_market", "z" * 1_001, "business_idea.target_market"),
    ("value_proposition", "v" * 1_001, "business_idea.value_proposition"),
    ("domain", "d" * 65, "business_idea.domain"),
    ("estimated_tam", -1.0, "business_idea.estimated_tam"),
    ("estimated_tam", "Infinity", "business_idea.estimated_tam"),
    ("estimated_tam", "NaN", "business_idea.estimated_tam"),
    ("estimated_tam", _BIG, "business_idea.estimated_tam"),
    ("estimated_sam", -5.0, "business_idea.estimated_sam"),
    ("estimated_sam", 2e10, "business_idea.estimated_sam"),  # SAM > TAM
    ("estimated_som", 3e9, "business_idea.estimated_som"),  # SOM > SAM
    ("features", ["x"] * 51, "business_idea.features"),
    ("features", ["ok", "  "], "business_idea.features[1]"),
    ("features", ["f" * 201], "business_idea.features[0]"),
    ("estimated_build_months", 0, "business_idea.estimated_build_months"),
    ("estimated_build_months", 121, "business_idea.estimated_build_months"),
    ("team_coverage", 1.5, "business_idea.team_coverage"),
    ("team_coverage", -0.1, "business_idea.team_coverage"),
    ("price.amount", 0, "business_idea.price.amount"),
    ("price.amount", -9.99, "business_idea.price.amount"),
    ("price.amount", "NaN", "business_idea.price.amount"),
    ("price.amount", 5e7, "business_idea.price.amount"),  # absurd: > 1e6 USD a month
    ("price.currency", "XYZ", "business_idea.price.currency"),  # not in the table
    ("price.currency", "dollars", "business_idea.price.currency"),  # not an ISO code
    ("price.billing_period", "fortnightly", "business_idea.price.billing_period"),
    ("price.amortisation_months", -1, "business_idea.price.amortisation_months"),
    ("price.amortisation_months", 121, "business_idea.price.amortisation_months"),
    ("grounding_refs", ["not-an-import-id"], "business_idea.grounding_refs[0]"),
    ("cost_overrides.gross_margin", 1.5, "business_idea.cost_overrides.gross_margin"),
    ("cost_overrides.cac_usd", -1.0, "business_idea.cost_overrides.cac_usd"),
    ("cost_overrides.discount_rate_annual", -1.0, "business_idea.cost_overrides.discount_rate_annual"),
    ("cost_overrides.fixed_costs_monthly_usd", "NaN", "business_idea.cost_overrides.fixed_costs_monthly_usd"),
]

T0_RULES = [
    ("description", _DELETE, "idea.description"),
    ("title", "t" * 201, "idea.title"),
    ("urgency", "asap", "idea.urgency"),
    ("submitter", "s" * 255, "idea.submitter"),
    ("metadata.estimated_market_size", -5, "idea.metadata.estimated_market_size"),
    ("metadata.estimated_market_size", _BIG, "idea.metadata.estimated_market_size"),
    ("metadata.target_customers", "c" * 1_001, "idea.metadata.target_customers"),
    ("metadata.competitive_advantage", "a" * 1_001, "idea.metadata.competitive_advantage"),
    ("price", {"amount": 10, "currency": "ABC"}, "idea.price.currency"),
    ("features", ["", "x"], "idea.features[0]"),
    ("team_coverage", 2, "idea.team_coverage"),
    ("grounding_refs", ["a" * 64], "idea.grounding_refs[0]"),
    ("cost_overrides.initial_investment_usd", -5, "idea.cost_overrides.initial_investment_usd"),
]


def test_cost_overrides_are_copied_when_present_and_absent_when_not(business_body, to_request):
    assert not normalize_idea(to_request("business_idea", business_body)).HasField("cost_overrides")
    business_body["cost_overrides"] = {"cac_usd": 42.0, "gross_margin": 0.8}
    costs = normalize_idea(to_request("business_idea", business_body)).cost_overrides
    assert (costs.cac_usd, costs.gross_margin) == (42.0, 0.8)
    assert not costs.HasField("fixed_costs_monthly_usd")  # the domain default applies


@pytest.mark.parametrize("path, value, field", BUSINESS_RULES, ids=[f"{r[2]}-{i}" for i, r in enumerate(BUSINESS_RULES)])
def test_each_business_idea_rule_names_its_field(business_body, to_request, path, value, field):
    _set(path, value)(business_body)
    with pytest.raises(InvalidArgument) as err:
        normalize_idea(to_request("business_idea", business_body))
    assert err.value.field == field, err.value


@pytest.mark.parametrize("path, value, field", T0_RULES, ids=[f"{r[2]}-{i}" for i, r in enumerate(T0_RULES)])
def test_each_t0_rule_names_its_field(t0_body, to_request, path, value, field):
    _set(path, value)(t0_body)
    with pytest.raises(InvalidArgument) as err:
        normalize_idea(to_request("idea", t0_body))
    assert err.value.field == field, err.value


def test_a_request_with_no_shape_is_refused():
    with pytest.raises(InvalidArgument) as err:
        normalize_idea(ingestion_service_pb2.NormalizeIdeaRequest())
    assert err.value.field == "business_idea"


def test_error_messages_never_echo_the_value(business_body, to_request):
    business_body["title"] = "secret.person@example.com " * 10  # 260 characters: too long
    with pytest.raises(InvalidArgument) as err:
        normalize_idea(to_request("business_idea", business_body))
    assert err.value.field == "business_idea.title" and "secret.person" not in str(err.value)


def test_same_input_same_bytes(t0_body, to_request):
    t0_body["description"] = "Call Dr. Jane Roe on +44 20 7946 0958 about our 49 EUR/year app for ski clubs."
    t0_body["price"] = {"amount": 49, "currency": "EUR", "billing_period": "annual"}
    first = normalize_idea(to_request("idea", t0_body)).SerializeToString(deterministic=True)
    second = normalize_idea(to_request("idea", t0_body)).SerializeToString(deterministic=True)
    assert first == second and len(first) > 0
    assert not math.isnan(normalize_idea(to_request("idea", t0_body)).price.amount)
