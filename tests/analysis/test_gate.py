"""The T0+3 gate's "top 5 competitors identified" counts grounded competitors only: provenance imported or
learned by default (the policy's gate.counted_provenances), never the prior's synthetic archetypes."""

from __future__ import annotations

import pytest

from services.analysis.decide import analyze
from services.analysis.gate import provenance
from services.analysis.policy import load_policy
from smvm.errors import InvalidArgument
from smvm.v1 import market_pb2
from tests.analysis.test_decide import GO, great


def _with_provenances(*provenances: str):
    req = great(competitors=0)
    for i, p in enumerate(provenances):
        req.competitors.add(name=f"rival{i}", monthly_price_usd=40.0, provenance=p)
    return req


def _criterion(decision):
    return next(c for c in decision.gate.criteria if c.name == "top_5_competitors_identified")


def test_synthetic_archetypes_are_not_identified_competitors():
    d = analyze(_with_provenances(*["synthetic"] * 5), render_documents=False).decision
    assert d.recommendation == GO
    criterion = _criterion(d)
    assert not criterion.passed and d.gate.gate_decision == "hold"
    assert "0 competitors identified" in criterion.evidence
    assert "0 imported, 0 learned, 5 synthetic; need 5" in criterion.evidence
    assert any(step.startswith("supply what the gate lacks: top_5_competitors_identified") for step in d.gate.next_steps)


def test_imported_and_learned_competitors_are_counted():
    d = analyze(_with_provenances("imported", "imported", "imported", "learned", "learned", "synthetic"),
                render_documents=False).decision
    criterion = _criterion(d)
    assert criterion.passed and d.gate.gate_decision == "proceed"
    assert criterion.evidence == ("5 competitors identified (provenance imported or learned) of 6 in the landscape: "
                                  "3 imported, 2 learned, 1 synthetic; need 5")


def test_which_provenances_count_is_a_versioned_policy_setting():
    req = _with_provenances(*["synthetic"] * 5)
    lenient = {"gate": {"counted_provenances": ["imported", "learned", "synthetic"]}}
    d = analyze(req, policy=lenient, render_documents=False).decision
    assert _criterion(d).passed and d.gate.gate_decision == "proceed"
    assert d.policy_version != load_policy().version and load_policy().get("gate.counted_provenances") == ["imported", "learned"]
    for bad in (["imported", "bogus"], [], "imported"):
        with pytest.raises(InvalidArgument) as err:
            load_policy({"gate": {"counted_provenances": bad}})
        assert err.value.field == "policy.gate.counted_provenances"


@pytest.mark.parametrize("fields, expected", [
    ({"provenance": "learned", "source": "import:ab12"}, "learned"),
    ({"synthetic": True, "source": "prior:finance"}, "synthetic"),
    ({"source": "import:ab12cd34ef56;g2.example"}, "imported"),
    ({"source": "memory:RUN-1"}, "learned"),
    ({"source": "spreadsheet"}, "unspecified"),
])
def test_a_competitor_stored_before_provenance_existed_is_read_off_its_source(fields, expected):
    assert provenance(market_pb2.Competitor(name="x", **fields)) == expected


def test_an_unspecified_provenance_is_listed_and_not_counted():
    req = _with_provenances("imported", "imported", "imported", "imported")
    req.competitors.add(name="legacy", monthly_price_usd=40.0, source="spreadsheet")
    criterion = _criterion(analyze(req, render_documents=False).decision)
    assert not criterion.passed
    assert "4 competitors identified" in criterion.evidence and "4 imported, 0 learned, 0 synthetic, 1 unspecified" in criterion.evidence
