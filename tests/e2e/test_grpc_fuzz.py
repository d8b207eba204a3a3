"""Hostile input over gRPC: hypothesis builds arbitrary request messages for every method of every
service (from the generated descriptors, so a new RPC is fuzzed the day it is added) and sends them to
the real mesh processes. No call may end INTERNAL / UNKNOWN / UNAVAILABLE, none may hang past its
deadline, an INVALID_ARGUMENT must name the offending field, and every service is still SERVING after.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor as pbd
from google.protobuf import json_format, message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings, strategies as st

from smvm.v1 import run_pb2, validation_service_pb2_grpc
from smvm.v1 import (
    analysis_service_pb2,
    competitor_service_pb2,
    delivery_service_pb2,
    ingestion_service_pb2,
    memory_service_pb2,
    overwatch_service_pb2,
    persona_service_pb2,
    run_watch_service_pb2,
    simulation_service_pb2,
    validation_service_pb2,
)

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "idea.json"

# service full name -> mesh key whose address serves it
SERVICES = {
    "smvm.v1.IngestionService": ("ingestion", ingestion_service_pb2),
    "smvm.v1.PersonaService": ("personas", persona_service_pb2),
    "smvm.v1.CompetitorService": ("competitors", competitor_service_pb2),
    "smvm.v1.SimulationService": ("simulation-0", simulation_service_pb2),
    "smvm.v1.AnalysisService": ("analysis", analysis_service_pb2),
    "smvm.v1.OverwatchService": ("overwatch", overwatch_service_pb2),
    "smvm.v1.ValidationService": ("orchestrator", validation_service_pb2),
    "smvm.v1.DeliveryService": ("orchestrator", delivery_service_pb2),
    "smvm.v1.RunWatchService": ("orchestrator", run_watch_service_pb2),
    "smvm.v1.MemoryService": ("memory", memory_service_pb2),
}
ALLOWED = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE,
    # the server honouring the caller's deadline (the elapsed-time check below tells it from a hang)
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
TERMINAL_STATES = {run_pb2.RUN_STATE_DECISION_READY, run_pb2.RUN_STATE_COMPLETED, run_pb2.RUN_STATE_FAILED,
                   run_pb2.RUN_STATE_TIMEOUT}
CALL_TIMEOUT_S = 3.0
EXAMPLES_PER_METHOD = 25
MAX_DEPTH = 3

EDGE_STRINGS = [
    "", " ", "../../etc/passwd", "a/b", "..", "\x00", "RUN-\u202e", "😀" * 20, "x" * 5000, "NaN", "-1",
    "Robert'); DROP TABLE runs;--", "<script>alert(1)</script>", "\u0301\u0301", "ID-1",
]
EDGE_FLOATS = [0.0, -0.0, -1.0, 1e-300, 1e300, math.inf, -math.inf, math.nan, 4.99, 1e9]
_INT_RANGES = {
    pbd.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), pbd.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    pbd.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), pbd.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    pbd.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), pbd.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    pbd.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), pbd.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    pbd.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), pbd.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _int_strategy(lo: int, hi: int) -> st.SearchStrategy[int]:
    small = st.integers(max(lo, -3), min(hi, 1100))
    return st.one_of(small, st.sampled_from([v for v in (lo, hi, 0, 1, 2**31 - 1, 10**9) if lo <= v <= hi]), st.integers(lo, hi))


def _scalar(field: pbd.FieldDescriptor, depth: int) -> st.SearchStrategy:
    t = field.type
    if t in (pbd.FieldDescriptor.TYPE_DOUBLE, pbd.FieldDescriptor.TYPE_FLOAT):
        return st.one_of(st.sampled_from(EDGE_FLOATS), st.floats(allow_nan=True, allow_infinity=True, width=64 if t == pbd.FieldDescriptor.TYPE_DOUBLE else 32))
    if t in _INT_RANGES:
        return _int_strategy(*_INT_RANGES[t])
    if t == pbd.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == pbd.FieldDescriptor.TYPE_STRING:
        return st.one_of(st.sampled_from(EDGE_STRINGS), st.text(max_size=40))
    if t == pbd.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == pbd.FieldDescriptor.TYPE_ENUM:
        values = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(values), st.integers(max(values) + 1, max(values) + 5))
    if t == pbd.FieldDescriptor.TYPE_MESSAGE:
        return message_strategy(field.message_type, depth + 1)
    raise AssertionError(f"unhandled field type {t} of {field.full_name}")


def message_strategy(descriptor: pbd.Descriptor, depth: int = 0) -> st.SearchStrategy:
    """Arbitrary instances of a message type: any subset of fields set, to any value, nested to MAX_DEPTH."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > MAX_DEPTH:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy] = {}
    for field in descriptor.fields:
        is_map = field.type == pbd.FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry
        if is_map:
            key = _scalar(field.message_type.fields_by_name["key"], depth)
            value = _scalar(field.message_type.fields_by_name["value"], depth)
            optional[field.name] = st.dictionaries(key, value, max_size=3)
        elif field.is_repeated:
            optional[field.name] = st.lists(_scalar(field, depth), max_size=3 if depth else 6)
        else:
            optional[field.name] = _scalar(field, depth)

    def build(values: dict) -> object:
        message = cls()
        for name, value in values.items():
            target = getattr(message, name) if name in descriptor.fields_by_name else None
            field = descriptor.fields_by_name[name]
            if field.type == pbd.FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
                for k, v in value.items():
                    if field.message_type.fields_by_name["value"].type == pbd.FieldDescriptor.TYPE_MESSAGE:
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif field.is_repeated:
                if field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)
            elif field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries({}, optional=optional).map(build)


def _methods(client_streaming: bool) -> list[tuple[str, pbd.MethodDescriptor]]:
    out = []
    for service_name, (key, module) in SERVICES.items():
        service = module.DESCRIPTOR.services_by_name[service_name.rsplit(".", 1)[1]]
        out.extend((key, method) for method in service.methods if method.client_streaming == client_streaming)
    return out


METHODS = _methods(client_streaming=False)
STREAMING_METHODS = _methods(client_streaming=True)  # requests as a stream (RunWatchService.WatchRuns)
STREAM_EXAMPLES = 6
STREAM_TIMEOUT_S = 1.5  # a watch never ends by itself: each stream is read until its deadline


def _tame(method: pbd.MethodDescriptor, request) -> None:
    """Keep the background work a fuzzed SubmitRun may start small (CI has 2 cores); everything
    else about the request stays arbitrary. Huge iteration counts are refused by the budget checks,
    which tests/simulation and tests/overwatch cover."""
    if method.full_name == "smvm.v1.ValidationService.SubmitRun" and request.HasField("configuration"):
        cfg = request.configuration
        cfg.simulation_iterations = min(abs(cfg.simulation_iterations), 500)
        if cfg.timeout_seconds > 30:
            cfg.timeout_seconds = 30


@pytest.fixture(scope="module")
def channels(mesh):
    opened = {key: grpc.insecure_channel(address) for key, address in mesh.grpc_targets().items()}
    yield opened
    for channel in opened.values():
        channel.close()


def _field_named(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    fields = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


def _caller(channel, method: pbd.MethodDescriptor):
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.server_streaming:
        call = channel.unary_stream(path, request_serializer=request_cls.SerializeToString, response_deserializer=response_cls.FromString)
    else:
        call = channel.unary_unary(path, request_serializer=request_cls.SerializeToString, response_deserializer=response_cls.FromString)
    return path, call


def _check_answer(call, path: str, method: pbd.MethodDescriptor, request, seen: collections.Counter):
    """One call: an allowed code, within its deadline, INVALID_ARGUMENT naming a field; returns the reply."""
    _tame(method, request)
    started = time.monotonic()
    code, error, reply = grpc.StatusCode.OK, None, None
    try:
        reply = call(request, timeout=CALL_TIMEOUT_S)
        if method.server_streaming:
            reply = list(reply)
    except grpc.RpcError as exc:
        code, error = exc.code(), exc
    elapsed = time.monotonic() - started
    seen[code.name] += 1
    assert code in ALLOWED, f"{path} answered {code.name}: {error.details() if error else ''}\nrequest: {request}"
    assert elapsed < CALL_TIMEOUT_S + 3.0, f"{path} took {elapsed:.1f}s"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert _field_named(error), f"{path}: INVALID_ARGUMENT without a field: {error.details()}"
    return reply


def _all_serving(channels, after: str) -> None:
    for key, channel in channels.items():
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING, f"{key} stopped serving after fuzzing {after}"


FUZZ_SETTINGS = settings(max_examples=EXAMPLES_PER_METHOD, deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("key, method", METHODS, ids=[m.full_name for _, m in METHODS])
def test_arbitrary_requests_get_a_clean_answer(channels, key, method):
    path, call = _caller(channels[key], method)
    seen: collections.Counter[str] = collections.Counter()

    @FUZZ_SETTINGS
    @given(request=message_strategy(method.input_type))
    def check(request):
        _check_answer(call, path, method, request, seen)

    check()
    # a request message with no fields has one value only, which hypothesis tries once
    assert sum(seen.values()) == (EXAMPLES_PER_METHOD if method.input_type.fields else 1), seen
    _all_serving(channels, path)


@pytest.mark.parametrize("key, method", STREAMING_METHODS, ids=[m.full_name for _, m in STREAMING_METHODS])
def test_arbitrary_request_streams_get_a_clean_answer(channels, key, method):
    """Client-streaming methods get 0-4 arbitrary messages on one stream. A stream that lives until its
    deadline ends DEADLINE_EXCEEDED (allowed); nothing else may go wrong, and a WatchRuns stream must
    have answered every sync it was sent (echoing its sync_id, whatever the value) by then."""
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    seen: collections.Counter[str] = collections.Counter()
    if method.server_streaming:
        call = channels[key].stream_stream(path, request_serializer=request_cls.SerializeToString,
                                           response_deserializer=response_cls.FromString)
    else:
        call = channels[key].stream_unary(path, request_serializer=request_cls.SerializeToString,
                                          response_deserializer=response_cls.FromString)

    @settings(FUZZ_SETTINGS, max_examples=STREAM_EXAMPLES)
    @given(requests=st.lists(message_strategy(method.input_type), max_size=4))
    def check(requests):
        started = time.monotonic()
        replies, code, error = [], grpc.StatusCode.OK, None
        try:
            answer = call(iter(requests), timeout=STREAM_TIMEOUT_S)
            if method.server_streaming:
                for reply in answer:
                    replies.append(reply)
            else:
                replies.append(answer)
        except grpc.RpcError as exc:
            code, error = exc.code(), exc
        seen[code.name] += 1
        assert code in ALLOWED, f"{path} answered {code.name}: {error.details() if error else ''}\nrequests: {requests}"
        assert time.monotonic() - started < STREAM_TIMEOUT_S + 3.0
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert _field_named(error), f"{path}: INVALID_ARGUMENT without a field: {error.details()}"
        if method.full_name == "smvm.v1.RunWatchService.WatchRuns":
            assert replies and replies[0].WhichOneof("event") == "started"
            synced = [r.synced.sync_id for r in replies if r.WhichOneof("event") == "synced"]
            assert synced == [r.sync_id for r in requests], (synced, requests)

    check()
    assert sum(seen.values()) == STREAM_EXAMPLES, seen
    _all_serving(channels, path)


def _field_paths(descriptor: pbd.Descriptor, depth: int = 0) -> list[tuple[pbd.FieldDescriptor, ...]]:
    """Every field reachable through singular sub-messages, as a path from the top message."""
    paths = []
    for field in descriptor.fields:
        paths.append((field,))
        nested = field.type == pbd.FieldDescriptor.TYPE_MESSAGE and not field.is_repeated
        if nested and depth < MAX_DEPTH and not field.message_type.full_name.startswith("google."):
            paths.extend((field, *rest) for rest in _field_paths(field.message_type, depth + 1))
    return paths


def mutations(seed) -> st.SearchStrategy:
    """`seed` with one field anywhere in it replaced by an arbitrary value (or cleared)."""
    descriptor = seed.DESCRIPTOR

    def value_for(path):
        field = path[-1]
        if field.is_repeated and not (field.type == pbd.FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry):
            return st.one_of(st.just(None), st.lists(_scalar(field, 1), max_size=8))
        if field.type == pbd.FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            return st.just(None)
        return st.one_of(st.just(None), _scalar(field, 1))

    def apply(path, value):
        message = type(seed)()
        message.CopyFrom(seed)
        target = message
        for field in path[:-1]:
            target = getattr(target, field.name)
        field = path[-1]
        if value is None:
            target.ClearField(field.name)
        elif field.is_repeated:
            target.ClearField(field.name)
            if field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    getattr(target, field.name).add().CopyFrom(item)
            else:
                getattr(target, field.name).extend(value)
        elif field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
        return message

    return st.sampled_from(_field_paths(descriptor)).flatmap(lambda path: value_for(path).map(lambda v: apply(path, v)))


_run_numbers = itertools.count()


def test_mutated_valid_submissions_get_a_clean_answer(channels):
    """Closer to the real door: the example submission with one field anywhere made hostile."""
    method = validation_service_pb2.DESCRIPTOR.services_by_name["ValidationService"].methods_by_name["SubmitRun"]
    path, call = _caller(channels["orchestrator"], method)
    seed = json_format.ParseDict(json.loads(EXAMPLE.read_text()), validation_service_pb2.SubmitRunRequest())
    seed.configuration.simulation_iterations = 200
    seen: collections.Counter[str] = collections.Counter()
    accepted: list[str] = []

    @settings(FUZZ_SETTINGS, max_examples=60)
    @given(request=mutations(seed))
    def check(request):
        if request.run_id == seed.run_id:
            request.run_id = f"RUN-FUZZ-{next(_run_numbers)}"  # each accepted submission is a new run
        reply = _check_answer(call, path, method, request, seen)
        if reply is not None:
            accepted.append(reply.run_id)

    check()
    assert seen["OK"] >= 5 and seen["INVALID_ARGUMENT"] >= 5, seen  # both sides of validation were reached
    # Every accepted run ends, and none of them on a bug: odd-but-valid input is the stages' job too.
    stub = validation_service_pb2_grpc.ValidationServiceStub(channels["orchestrator"])
    deadline = time.monotonic() + 180
    for run_id in dict.fromkeys(accepted):
        while True:
            status = stub.GetRunStatus(validation_service_pb2.GetRunStatusRequest(run_id=run_id), timeout=5).status
            if status.state in TERMINAL_STATES:
                break
            assert time.monotonic() < deadline, f"fuzzed run {run_id} never ended: {status}"
            time.sleep(0.1)
        assert "internal" not in status.error.lower(), f"fuzzed run {run_id} hit a bug: {status.error}"
    _all_serving(channels, path)
