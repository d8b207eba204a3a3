"""PII detection and masking: right kinds, right fields, raw values gone, checksums respected."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from hypothesis import given, settings, strategies as st

from services.ingestion import pii
from services.ingestion.normalize import normalize_idea

RAW = {
    "email": "jane.roe+pitch@startup.io",
    "phone": "+1 (415) 555-0132",
    "card_number": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "national_id": "123-45-6789",
    "street_address": "221B Baker Street",
    "person_name": "Jane Roe",
}


def test_description_pii_is_masked_with_kinds_and_no_raw_value(business_body, to_request):
    business_body["description"] = (
        f"Founder: my name is {RAW['person_name']}, write to {RAW['email']} or call {RAW['phone']}. "
        f"Test payments with {RAW['card_number']}, payouts to {RAW['iban']}. SSN {RAW['national_id']}. "
        f"Office at {RAW['street_address']}. We serve 1500000000 users in 2024-2025 at 9.99 a month."
    )
    business_body["value_proposition"] = "Ask Mr. John Smith or mail sales@startup.io"
    idea = normalize_idea(to_request("business_idea", business_body))
    found = {(f.field, f.kind): f.count for f in idea.pii_findings}
    assert found == {
        ("description", "card_number"): 1, ("description", "email"): 1, ("description", "iban"): 1,
        ("description", "national_id"): 1, ("description", "person_name"): 1, ("description", "phone"): 1,
        ("description", "street_address"): 1,
        ("value_proposition", "email"): 1, ("value_proposition", "person_name"): 1,
    }
    serialised = json.dumps(json_format.MessageToDict(idea)) + idea.SerializeToString().decode("utf-8", "replace")
    for raw in [*RAW.values(), "John Smith", "sales@startup.io", "4111", "0532 0130"]:
        assert raw not in serialised, raw
    # figures that only look like numbers are left alone
    assert "1500000000 users in 2024-2025 at 9.99" in idea.description
    for kind in ("[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]", "[NATIONAL_ID]", "[ADDRESS]", "[NAME]"):
        assert kind in idea.description
    assert any(w.startswith("pii:masked: 9 item(s)") for w in idea.warnings)


def test_features_are_masked_per_index(business_body, to_request):
    business_body["features"] = ["budgeting", "support line +44 20 7946 0958"]
    idea = normalize_idea(to_request("business_idea", business_body))
    assert [(f.field, f.kind) for f in idea.pii_findings] == [("features[1]", "phone")]
    assert list(idea.features) == ["budgeting", "support line [PHONE]"]


@pytest.mark.parametrize("number", ["4111111111111111", "5500005555555559", "378282246310005", "6011111111111117"])
def test_luhn_accepts_test_card_numbers(number):
    assert pii.luhn_valid(number)
    assert pii.mask(f"card {number} today").counts == {"card_number": 1}


@pytest.mark.parametrize("run", ["4111111111111112", "1234567812345678", "9999999999999", "0000000000000000"])
def test_non_card_digit_runs_are_not_cards(run):
    assert "card_number" not in pii.mask(f"order id {run} shipped").counts


@given(st.text(alphabet="0123456789", min_size=12, max_size=18), st.integers(0, 17), st.integers(1, 9))
@settings(max_examples=200, deadline=None)
def test_luhn_catches_every_single_digit_error(body, position, delta):
    check = next(d for d in "0123456789" if pii.luhn_valid(body + d))
    number = body + check
    i = position % len(number)
    wrong = number[:i] + str((int(number[i]) + delta) % 10) + number[i + 1:]
    assert pii.luhn_valid(number) and not pii.luhn_valid(wrong)


def test_iban_checksum():
    assert pii.iban_valid("GB82WEST12345698765432") and pii.iban_valid("DE89 3704 0044 0532 0130 00")
    assert not pii.iban_valid("GB82WEST12345698765433")
    assert pii.mask("pay GB82WEST12345698765433 now").counts == {}


@pytest.mark.parametrize(
    "text, kinds",
    [
        ("Reach me at +49 30 1234567", {"phone": 1}),
        ("call 555-123-4567 or 020 7946 0958", {"phone": 2}),
        ("NI number AB 12 34 56 C", {"national_id": 1}),
        ("Hauptstraße 5, Berlin", {"street_address": 1}),
        ("Regards, Maria", {"person_name": 1}),
        ("revenue 12 000 000 and 1.500.000 users, 3.5-4.0 growth, on 2024-12-01", {}),
        ("SSN-like 000-12-3456 is no SSN", {"phone": 1}),  # invalid area 000: still masked, as a phone
        ("E.164 +14155550132 works", {"phone": 1}),
    ],
)
def test_detectors(text, kinds):
    assert pii.mask(text).counts == kinds


_PII_PIECES = st.sampled_from([*(v for k, v in RAW.items() if k != "person_name"), "my name is Jane Roe", "Mr. Alan Turing", "bob@example.org", "+33 1 23 45 67 89"])
_FILLER = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@given(st.lists(st.tuples(_FILLER, _PII_PIECES), min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_masking_removes_planted_pii_and_is_idempotent(parts):
    text = " ".join(f"{filler} {piece} ." for filler, piece in parts)
    once = pii.mask(text)
    assert sum(once.counts.values()) >= 1
    for _, piece in parts:
        assert piece not in once.text
    assert pii.mask(once.text).text == once.text
