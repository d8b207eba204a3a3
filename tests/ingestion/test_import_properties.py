"""Property tests of the grounding importer: any bytes give an import or one InvalidArgument naming its
field; counts add up; accepted rows obey their kind's rules; planted personal data never survives."""

from __future__ import annotations

import csv
import io
import json
import math

from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings, strategies as st

from smvm.errors import InvalidArgument

from services.ingestion.adapters import KINDS
from services.ingestion.importer import MAX_LISTED_REJECTIONS, run_import

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_CELL = st.one_of(
    st.floats(-10, 5000, allow_nan=False).map(lambda x: f"{x:.2f}"),
    st.sampled_from(["", "abc", "NaN", "inf", "-1", "0", "1e400", "12%", "1,500", "$20"]),
)
_PII = st.sampled_from(["jane.roe@startup.io", "+1 (415) 555-0132", "221B Baker Street", "Mr. Alan Turing",
                        "4111 1111 1111 1111"])


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def _outcome(kind: str, fmt: str, content: bytes):
    try:
        return run_import(kind, fmt, content)
    except InvalidArgument as err:
        assert err.field == "content" or err.field.startswith("content.")
        return None


@given(st.sampled_from(KINDS), st.sampled_from(["csv", "json", "jsonl"]), st.binary(max_size=300))
@_SETTINGS
def test_any_bytes_give_an_import_or_an_error_naming_content(kind, fmt, content):
    result = _outcome(kind, fmt, content)
    if result is not None:
        assert result.report.rows_read >= 1


@given(st.lists(st.tuples(_CELL, _CELL, _CELL, _CELL, st.integers(0, 30)), min_size=1, max_size=60))
@_SETTINGS
def test_van_westendorp_counts_add_up_and_accepted_rows_are_ordered(rows):
    body = _csv(["respondent_id", "too_cheap", "cheap", "expensive", "too_expensive"],
                [[f"R{rid}", a, b, c, d] for a, b, c, d, rid in rows])
    result = _outcome("van_westendorp", "csv", body)
    if result is None:
        return
    report = result.report
    if len(report.rejected) < MAX_LISTED_REJECTIONS:
        assert report.rows_accepted + len(report.rejected) + report.duplicates == report.rows_read == len(rows)
    assert len(result.grounding.van_westendorp) == report.rows_accepted
    assert len({a.respondent_id for a in result.grounding.van_westendorp}) == report.rows_accepted
    for a in result.grounding.van_westendorp:
        assert 0 < a.too_cheap <= a.cheap <= a.expensive <= a.too_expensive <= 1e6
    assert 0 <= report.outliers <= report.rows_accepted
    assert 0.0 <= report.coverage <= 1.0 and 0.0 <= report.quality_score <= 1.0
    assert 0.25 <= result.grounding.confidence_factor <= 1.0
    assert result.grounding.confidence_factor == 1.0 or report.quality_warning
    again = run_import("van_westendorp", "csv", body)
    assert again.grounding.SerializeToString(deterministic=True) == result.grounding.SerializeToString(deterministic=True)


@given(st.lists(st.tuples(st.text(max_size=12), _PII, _CELL, st.sampled_from(["", "monthly", "annual", "weird"]),
                          st.sampled_from(["", "USD", "EUR", "XYZ"])), min_size=1, max_size=25))
@_SETTINGS
def test_planted_personal_data_never_leaves_a_competitor_import(rows):
    records = [{"name": f"Co {name} {secret}", "price": price, "billing_period": period, "currency": cur,
                "features": [f"invoicing {secret}", "reports"], "source": f"ask {secret}"}
               for name, secret, price, period, cur in rows]
    result = _outcome("competitors", "json", json.dumps(records).encode())
    if result is None:
        return
    text = json_format.MessageToJson(result.grounding)
    for _, secret, *_ in rows:
        assert secret not in text
    for c in result.grounding.competitors:
        assert math.isfinite(c.price_amount) and c.price_amount >= 0 and c.currency in ("USD", "EUR")
