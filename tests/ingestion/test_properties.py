"""Property tests: arbitrary input only ever yields an Idea or an InvalidArgument, and
normalising the canonical output again changes nothing."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings, strategies as st

from smvm.errors import InvalidArgument
from smvm.v1 import idea_pb2, ingestion_service_pb2

from services.ingestion import validate
from services.ingestion.normalize import normalize_idea

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120)
_SOME_TEXT = st.one_of(_TEXT, st.sampled_from(["", "   ", "A perfectly ordinary description of an idea.",
                                               "mail x@y.io, call +1 415 555 0132", "\u200b\ufeff\n\n"]))
_NUMBER = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1e13))
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mostly(valid: st.SearchStrategy, anything: st.SearchStrategy) -> st.SearchStrategy:
    """Two parts plausible input to one part anything, so both outcomes are well exercised."""
    return st.one_of(valid, valid, anything)


_TITLE = _mostly(_TEXT.map(lambda t: "Idea " + t), _SOME_TEXT)
_DESCRIPTION = _mostly(_TEXT.map(lambda t: "Describe it: " + t), _SOME_TEXT)


@st.composite
def _market(draw) -> tuple[float | None, float | None, float | None]:
    if draw(st.booleans()):
        return draw(_NUMBER), draw(_NUMBER), draw(_NUMBER)
    tam = draw(st.floats(0, 1e13))
    sam = draw(st.one_of(st.none(), st.floats(0, 1).map(lambda f: f * tam)))
    som = draw(st.one_of(st.none(), st.floats(0, 1).map(lambda f: f * (tam if sam is None else sam))))
    return draw(st.sampled_from([tam, None])), sam, som


@st.composite
def business_ideas(draw) -> idea_pb2.BusinessIdea:
    msg = idea_pb2.BusinessIdea(
        title=draw(_TITLE), description=draw(_DESCRIPTION), target_market=draw(_SOME_TEXT),
        value_proposition=draw(_SOME_TEXT), domain=draw(_SOME_TEXT),
        features=draw(st.lists(_mostly(_TEXT.map(lambda t: "f " + t), _SOME_TEXT), max_size=4)),
    )
    tam, sam, som = draw(_market())
    numbers = {
        "estimated_tam": tam, "estimated_sam": sam, "estimated_som": som,
        "estimated_build_months": draw(_mostly(st.floats(0.5, 120), _NUMBER)),
        "team_coverage": draw(_mostly(st.floats(0, 1), _NUMBER)),
    }
    for name, value in numbers.items():
        if value is not None:
            setattr(msg, name, value)
    if draw(st.booleans()):
        msg.price.amount = draw(_mostly(st.floats(0.01, 10_000), st.floats(allow_nan=True, allow_infinity=True)))
        msg.price.currency = draw(st.one_of(st.sampled_from(["USD", "eur", "JPY", "", "XXX"]), _TEXT))
        msg.price.billing_period = draw(_mostly(st.sampled_from(["monthly", "annual", "one_time", "Yearly", ""]), _TEXT))
        msg.price.amortisation_months = draw(_mostly(st.integers(0, 120), st.integers(-5, 200)))
    return msg


@st.composite
def submissions(draw) -> idea_pb2.IdeaSubmission:
    msg = idea_pb2.IdeaSubmission(
        description=draw(_DESCRIPTION), domain=draw(_SOME_TEXT), title=draw(_SOME_TEXT),
        urgency=draw(st.one_of(st.sampled_from(["high", "LOW", ""]), _TEXT)), submitter=draw(_SOME_TEXT),
    )
    msg.metadata.target_customers = draw(_SOME_TEXT)
    msg.metadata.competitive_advantage = draw(_SOME_TEXT)
    value = draw(_mostly(st.floats(0, 1e13), _NUMBER))
    if value is not None:
        msg.metadata.estimated_market_size = value
    return msg


def _normalize_or_none(request) -> idea_pb2.Idea | None:
    try:
        return normalize_idea(request)
    except InvalidArgument as err:
        assert err.field and err.field.split(".")[0] in ("business_idea", "idea")
        return None


def _as_business_idea(idea: idea_pb2.Idea) -> ingestion_service_pb2.NormalizeIdeaRequest:
    """Feed a canonical idea back in through the business_idea shape."""
    msg = idea_pb2.BusinessIdea(
        title=idea.title, description=idea.description, target_market=idea.target_market,
        value_proposition=idea.value_proposition, domain=idea.domain, features=list(idea.features),
    )
    # In the canonical idea 0 means "not known", so only positive figures go back in.
    for name, value in (("estimated_tam", idea.market_size.tam_usd), ("estimated_sam", idea.market_size.sam_usd),
                        ("estimated_som", idea.market_size.som_usd)):
        if value > 0:
            setattr(msg, name, value)
    if idea.HasField("price"):
        msg.price.CopyFrom(idea.price)
    for name in ("estimated_build_months", "team_coverage"):
        if idea.HasField(name):
            setattr(msg, name, getattr(idea, name))
    return ingestion_service_pb2.NormalizeIdeaRequest(business_idea=msg)


def _check_invariants(idea: idea_pb2.Idea) -> None:
    size = idea.market_size
    assert all(math.isfinite(x) and x >= 0 for x in (size.tam_usd, size.sam_usd, size.som_usd))
    if size.tam_usd > 0:
        assert size.tam_usd >= size.sam_usd >= size.som_usd
    if idea.HasField("price"):
        assert idea.price.currency == "USD" and idea.price.billing_period == "monthly" and idea.price.amount > 0
    assert idea.title and len(idea.description) >= validate.DESCRIPTION_MIN
    assert idea.title == validate.clean_line(idea.title)


@given(business_ideas())
@_SETTINGS
def test_business_ideas_give_an_idea_or_invalid_argument_and_renormalise_to_themselves(msg):
    idea = _normalize_or_none(ingestion_service_pb2.NormalizeIdeaRequest(business_idea=msg))
    if idea is None:
        return
    _check_invariants(idea)
    again = normalize_idea(_as_business_idea(idea))
    for name in ("title", "description", "target_market", "value_proposition", "domain", "features", "price"):
        assert getattr(again, name) == getattr(idea, name), name
    size, size_again = idea.market_size, again.market_size
    assert (size_again.tam_usd, size_again.sam_usd, size_again.som_usd) == (size.tam_usd, size.sam_usd, size.som_usd)


@given(submissions())
@_SETTINGS
def test_t0_submissions_give_an_idea_or_invalid_argument(msg):
    request = ingestion_service_pb2.NormalizeIdeaRequest(idea=msg)
    idea = _normalize_or_none(request)
    if idea is None:
        return
    _check_invariants(idea)
    assert idea.urgency in ("", *validate.URGENCIES)
    assert normalize_idea(request).SerializeToString(deterministic=True) == idea.SerializeToString(deterministic=True)


@given(_TEXT)
@settings(max_examples=300, deadline=None)
def test_text_cleaning_is_idempotent(text):
    line, block = validate.clean_line(text), validate.clean_block(text)
    assert validate.clean_line(line) == line and validate.clean_block(block) == block
    assert line == line.strip() and "  " not in line and "\n" not in line
