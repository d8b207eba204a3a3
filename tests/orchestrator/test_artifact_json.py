"""artifact_json writes what json.dumps(MessageToDict(...), indent=2) wrote, byte for byte."""

from __future__ import annotations

import decimal
import json
import math
from pathlib import PurePosixPath

from google.protobuf import json_format
from hypothesis import given, settings, strategies as st

from smvm.v1 import simulation_pb2

from services.orchestrator import artifact_json
from services.orchestrator.rundir import json_bytes

SPECIAL_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1e-05, 1e16, 1.7976931348623157e308])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | SPECIAL_FLOATS
TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | FLOATS | TEXT
KEYS = TEXT | st.integers() | FLOATS | st.booleans() | st.none()
OTHER = st.builds(decimal.Decimal, st.integers()) | st.builds(PurePosixPath, st.text(max_size=5))  # default=str
JSON_LIKE = st.recursive(
    SCALARS | OTHER,
    lambda inner: st.lists(inner, max_size=6) | st.lists(FLOATS, max_size=30) | st.tuples(inner, inner)
    | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=60,
)


@settings(max_examples=400, deadline=None)
@given(JSON_LIKE)
def test_dumps_is_json_dumps_with_indent_2(obj):
    assert artifact_json.dumps(obj) == json.dumps(obj, indent=2, sort_keys=False, default=str)


def test_json_bytes_is_the_text_and_a_newline():
    obj = {"a": [1.5, math.nan, -math.inf], "b": {"c": None, 1: True}, "d": []}
    assert json_bytes(obj) == (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode()


DOUBLES = st.lists(FLOATS, max_size=8)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@st.composite
def simulation_results(draw) -> simulation_pb2.SimulationResult:
    result = simulation_pb2.SimulationResult(
        seed=draw(st.integers(min_value=0, max_value=2**64 - 1)), iterations=draw(INT32), months=draw(INT32),
        utility_evaluations=draw(st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        kernel_seconds=draw(FLOATS), engine=draw(st.text(max_size=12)),  # proto strings hold no surrogates
    )
    for _ in range(draw(st.integers(0, 4))):
        result.samples.add(
            iteration=draw(INT32), market_size=draw(FLOATS), bass_p=draw(FLOATS), bass_q=draw(FLOATS),
            churn=draw(FLOATS), price_scale=draw(FLOATS), monthly_customers=draw(DOUBLES),
            monthly_revenue_usd=draw(DOUBLES), demand_share=draw(DOUBLES))
    for month in range(draw(st.integers(0, 2))):
        result.month_stats.add(month=month + 1, customers=simulation_pb2.Quantiles(mean=draw(FLOATS), p50=draw(FLOATS)))
    for _ in range(draw(st.integers(0, 2))):
        swing = result.swings.add(iterations=draw(INT32), monthly_customers_f64=draw(st.binary(max_size=16)))
        swing.swing.driver = draw(st.sampled_from(list(simulation_pb2.SwingDriver.values())))
        swing.swing.factor = draw(FLOATS)
    return result


def as_before(message) -> str:
    return json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True), indent=2, default=str)


@settings(max_examples=300, deadline=None)
@given(simulation_results())
def test_message_dict_is_message_to_dict_in_the_same_order(result):
    fast = artifact_json.message_dict(result)
    assert json.dumps(fast, indent=2, default=str) == as_before(result)  # text: order and values
    assert artifact_json.dumps(fast) == as_before(result)


def test_a_message_without_plain_repeated_messages_goes_to_json_format_unchanged():
    config = simulation_pb2.SimulationConfig(seed=2**63 + 5, iterations=3, price_grid=[1.0, math.inf],
                                             swings=[simulation_pb2.DriverSwing(driver=1, factor=0.75)])
    assert artifact_json.message_dict(config) == json_format.MessageToDict(config, preserving_proto_field_name=True)
