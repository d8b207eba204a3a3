"""The dispatcher against the TractionBuild double over real HTTP: signatures, retries, Retry-After,
410, the circuit breaker, dead letters and replay; and the pure parts (signing vectors, backoff,
breaker, URL checks, MemoryOutbox leases)."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import random
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from conftest import SECRET
from tractionbuild_double import TractionBuildDouble
from services.orchestrator.callbacks import payloads, signing
from services.orchestrator.callbacks.dispatcher import (
    CircuitBreaker, DeliveryPolicy, Dispatcher, backoff_delay, parse_retry_after,
)
from services.orchestrator.callbacks.memory_outbox import MemoryOutbox
from services.orchestrator.callbacks.urls import check_callback_url
from smvm.errors import InvalidArgument
from smvm.outbox import DEAD, DELIVERED, PENDING

FAST = DeliveryPolicy(backoff_base_s=0.02, max_retries=5, timeout_s=5, breaker_threshold=5,
                      breaker_cooldown_s=0.3, lease_s=0.2, poll_interval_s=0.01)


# ------------------------------------------------------------------ pure parts
def test_signature_matches_the_standard_webhooks_reference_vector():
    # The Standard Webhooks specification's published example.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert signing.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_accepts_any_rotated_secret_and_rejects_tampering_and_old_messages():
    body = b'{"a":1}'
    headers = signing.headers(["old-secret", SECRET], "evt_1", body, timestamp=1_000_000)
    assert len(headers["webhook-signature"].split()) == 2
    assert signing.verify(SECRET, headers, body, now=1_000_010) == "evt_1"
    assert signing.verify("old-secret", headers, body, now=1_000_010) == "evt_1"
    with pytest.raises(signing.SignatureError):
        signing.verify(SECRET, headers, b'{"a":2}', now=1_000_010)
    with pytest.raises(signing.SignatureError):
        signing.verify("other", headers, body, now=1_000_010)
    with pytest.raises(signing.SignatureError, match="tolerance"):
        signing.verify(SECRET, headers, body, now=1_000_000 + 301)


@given(retry=st.integers(1, 5), base=st.floats(0.001, 10), seed=st.integers(0, 2**32))
def test_backoff_is_the_guides_doubling_schedule_plus_at_most_one_base_of_jitter(retry, base, seed):
    delay = backoff_delay(retry, base, random.Random(seed))
    nominal = base * [1, 2, 4, 8, 16][retry - 1]
    assert nominal <= delay < nominal + base


def test_retry_after_in_seconds_or_as_an_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(email.utils.formatdate(now + 42, usegmt=True), now) == pytest.approx(42, abs=1)
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


def test_breaker_opens_after_five_consecutive_failures_and_lets_one_trial_through_after_cooldown():
    breaker = CircuitBreaker(threshold=5, cooldown_s=10)
    for i in range(4):
        breaker.failure(now=i)
    assert breaker.allow(4) and breaker.state == "closed"
    breaker.success()  # a success resets the count
    for i in range(5):
        assert breaker.allow(i)
        breaker.failure(now=i)
    assert breaker.state == "open" and not breaker.allow(13.9)
    assert breaker.allow(14.1) and breaker.state == "half_open"
    assert not breaker.allow(14.2)  # one trial at a time
    breaker.failure(now=15)  # a failed trial re-opens it
    assert breaker.state == "open" and not breaker.allow(24.9) and breaker.allow(25.1)
    breaker.success()
    assert breaker.state == "closed" and breaker.allow(25.2)


@pytest.mark.parametrize("url, profile, allow, reason", [
    ("ftp://tb.example.com/cb", "dev", "", "absolute http(s) URL"),
    ("https://user:pw@tb.example.com/cb", "dev", "", "credentials"),
    ("https://tb.example.com:99999/cb", "dev", "", "not a valid URL"),
    ("http://10.0.0.7/cb", "prod", "tb.example.com", "allow-list"),
    ("http://kubernetes.default.svc/cb", "test", "*.example.com", "allow-list"),
    ("https://example.com/cb", "prod", "*.example.com", "allow-list"),
])
def test_callback_urls_refused_name_the_field(url, profile, allow, reason):
    with pytest.raises(InvalidArgument, match=re.escape(reason)) as info:
        check_callback_url("metadata.callback_url", url, profile=profile, allow_list=tuple(allow.split(",")))
    assert info.value.field == "metadata.callback_url"


def test_callback_urls_allowed():
    assert check_callback_url("callback_url", "http://10.0.0.7/cb", profile="dev") == "http://10.0.0.7/cb"
    for url in ("https://tb.example.com/cb", "https://api.tb.example.com/x"):
        assert check_callback_url("callback_url", url, profile="prod", allow_list=("tb.example.com", "*.tb.example.com"))
    assert check_callback_url("callback_url", "", profile="prod") == ""


def test_memory_outbox_leases_a_message_to_one_claimer_until_the_lease_lapses():
    outbox = MemoryOutbox()
    outbox.enqueue([payloads.message("validation.update", "RUN-1", "http://x/validation/update", {"n": i},
                                     event_id=f"e{i}", now=100.0 + i) for i in range(3)])
    outbox.enqueue([payloads.message("validation.update", "RUN-1", "http://x", {"n": 99}, event_id="e0", now=1)])
    assert outbox.get("e0").payload == {"n": 0}  # re-enqueueing an id changes nothing
    first = outbox.claim_due(now=200, limit=2, lease_s=10)
    assert [m.event_id for m in first] == ["e0", "e1"]
    assert [m.event_id for m in outbox.claim_due(now=205, limit=10, lease_s=10)] == ["e2"]
    assert outbox.claim_due(now=209, limit=10, lease_s=10) == []
    outbox.mark_failed("e0", "HTTP 500", next_attempt_at=300)
    assert [m.event_id for m in outbox.claim_due(now=211, limit=10, lease_s=10)] == ["e1"]
    assert outbox.get("e0").attempts == 1
    # At 299 the leases have lapsed but e0 is not due yet.
    assert [m.event_id for m in outbox.claim_due(now=299, limit=10, lease_s=10)] == ["e1", "e2"]
    assert [m.event_id for m in outbox.claim_due(now=300, limit=10, lease_s=1)] == ["e0"]
    outbox.mark_failed("e2", "HTTP 500", None)
    assert [m.event_id for m in outbox.list(state=DEAD)] == ["e2"]
    replayed = outbox.replay("e2", now=400)
    assert replayed.state == PENDING and replayed.attempts == 0
    with pytest.raises(KeyError):
        outbox.replay("nope", now=1)


# ------------------------------------------------------------------ over HTTP
class _Record:
    def __init__(self, run_id: str, url: str):
        self.run_id, self.project_id, self.callback_url = run_id, "PROJ-1", url
        self.state, self.progress, self.current_stage, self.error = "RUNNING", 0.25, "personas", ""
        self.stage_results = {"personas": "in_progress"}
        self.estimated_completion, self.correlation_id = "2026-11-25T07:00:00Z", "CORR-unit-1"


def _update(run_id: str, url: str, n: int = 0):
    body = payloads.update_payload(_Record(run_id, url), step_name=f"step{n}")
    return payloads.message(payloads.UPDATE_KIND, run_id, url + "/validation/update", body)


async def _drive(dispatcher: Dispatcher, done, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "condition not reached"
        await dispatcher.run_once()
        await asyncio.sleep(0.01)


@pytest.fixture
async def dispatcher():
    outbox = MemoryOutbox()
    d = Dispatcher(outbox, FAST, [SECRET], rng=random.Random(7))
    yield d
    await d.aclose()


async def test_a_signed_update_is_delivered_once_with_its_correlation_id(double, dispatcher):
    message = _update("RUN-U-1", double.callback_url)
    dispatcher.outbox.enqueue([message])
    await _drive(dispatcher, lambda: dispatcher.outbox.get(message.event_id).state == DELIVERED)
    [got] = double.state.deliveries
    assert got["event_id"] == message.event_id and got["correlation_id"] == "CORR-unit-1"
    assert got["payload"]["status"] == "RUNNING" and got["payload"]["validation_id"] == "VAL-RUN-U-1"
    assert double.state.rejected_signatures == 0
    assert double.state.run_status["RUN-U-1"]["step_completed"] == "step0"
    assert dispatcher.outbox.get(message.event_id).response == '{"status":"acknowledged"}'


async def test_a_wrong_secret_is_refused_by_the_receiver_and_retried(double):
    d = Dispatcher(MemoryOutbox(), FAST, ["not-the-secret"])
    message = _update("RUN-U-2", double.callback_url)
    d.outbox.enqueue([message])
    await _drive(d, lambda: d.outbox.get(message.event_id).attempts >= 1)
    await d.aclose()
    assert double.state.rejected_signatures >= 1 and double.state.deliveries == []
    assert d.outbox.get(message.event_id).last_error.startswith("HTTP 401")


async def test_retry_after_on_503_is_honoured_then_delivered(double, dispatcher):
    double.state.fail_next["update"] = (1, 503, {"Retry-After": "1"})
    message = _update("RUN-U-3", double.callback_url)
    before = time.time()
    dispatcher.outbox.enqueue([message])
    await _drive(dispatcher, lambda: dispatcher.outbox.get(message.event_id).attempts >= 1)
    waiting = dispatcher.outbox.get(message.event_id)
    assert waiting.state == PENDING and waiting.next_attempt_at >= before + 1.0  # not the 0.02 s backoff
    await _drive(dispatcher, lambda: dispatcher.outbox.get(message.event_id).state == DELIVERED)
    assert dispatcher.outbox.get(message.event_id).delivered_at >= before + 1.0
    assert double.state.attempts.count(message.event_id) == 2


async def test_five_retries_then_dead_letter_then_replay_delivers(double, dispatcher):
    double.state.fail_next["update"] = (6, 500, {})
    dispatcher.policy = DeliveryPolicy(**{**FAST.__dict__, "breaker_threshold": 100})
    message = _update("RUN-U-4", double.callback_url)
    dispatcher.outbox.enqueue([message])
    await _drive(dispatcher, lambda: dispatcher.outbox.get(message.event_id).state == DEAD)
    dead = dispatcher.outbox.get(message.event_id)
    assert dead.attempts == 6 and dead.last_error.startswith("HTTP 500")  # 1 attempt + 5 retries
    assert double.state.attempts.count(message.event_id) == 6
    assert [m.event_id for m in dispatcher.outbox.list(state=DEAD)] == [message.event_id]
    dispatcher.outbox.replay(message.event_id, time.time())
    await _drive(dispatcher, lambda: dispatcher.outbox.get(message.event_id).state == DELIVERED)
    assert [d["event_id"] for d in double.state.deliveries] == [message.event_id]


async def test_410_disables_the_endpoint_and_dead_letters_what_waits_for_it(double, dispatcher):
    double.state.fail_next["update"] = (1, 410, {})
    first, second = _update("RUN-U-5", double.callback_url, 1), _update("RUN-U-6", double.callback_url, 2)
    dispatcher.outbox.enqueue([first])
    await _drive(dispatcher, lambda: dispatcher.outbox.get(first.event_id).state == DEAD)
    dispatcher.outbox.enqueue([second])
    await _drive(dispatcher, lambda: dispatcher.outbox.get(second.event_id).state == DEAD)
    assert double.state.attempts == [first.event_id]  # the second was never sent
    assert "410" in dispatcher.outbox.get(second.event_id).last_error


async def test_breaker_opens_after_five_failures_without_spending_attempts_then_delivers(double, dispatcher):
    dispatcher.policy = DeliveryPolicy(**{**FAST.__dict__, "breaker_cooldown_s": 1.0})
    dispatcher.breakers.clear()
    messages = [_update(f"RUN-B-{i}", double.callback_url, i) for i in range(8)]
    double.stop()  # connection refused from now on
    dispatcher.outbox.enqueue(messages)
    host = f"127.0.0.1:{double.port}"
    await _drive(dispatcher, lambda: dispatcher.breaker(host).state == "open")
    spent = sum(dispatcher.outbox.get(m.event_id).attempts for m in messages)
    # Attempts already in flight when the fifth failure opened it still count; no more start.
    assert 5 <= spent <= len(messages)
    for _ in range(20):  # the breaker holds them: no attempts while open, nothing dead
        await dispatcher.run_once()
        await asyncio.sleep(0.005)
    assert sum(dispatcher.outbox.get(m.event_id).attempts for m in messages) == spent
    assert all(dispatcher.outbox.get(m.event_id).state == PENDING for m in messages)
    double.start()
    await _drive(dispatcher, lambda: all(dispatcher.outbox.get(m.event_id).state == DELIVERED for m in messages))
    assert dispatcher.breaker(host).state == "closed"
    assert sorted(d["event_id"] for d in double.state.deliveries) == sorted(m.event_id for m in messages)
    assert dispatcher.outbox.list(state=DEAD) == []


async def test_a_long_outage_spends_no_retries_after_the_breaker_opens(double, dispatcher):
    """One run's updates go in order, so its first message takes the five failures that open the
    breaker; the failed trials after that are charged to the breaker, and it is still delivered."""
    dispatcher.policy = DeliveryPolicy(**{**FAST.__dict__, "breaker_cooldown_s": 0.05, "lease_s": 0.05})
    dispatcher.breakers.clear()
    messages = [_update("RUN-O-1", double.callback_url, i) for i in range(3)]
    double.stop()
    dispatcher.outbox.enqueue(messages)
    host = f"127.0.0.1:{double.port}"
    deadline = time.monotonic() + 1.5  # many cooldowns: many failed trials
    while time.monotonic() < deadline:
        await dispatcher.run_once()
        await asyncio.sleep(0.01)
    first = dispatcher.outbox.get(messages[0].event_id)
    assert first.state == PENDING and first.attempts == 5
    assert [dispatcher.outbox.get(m.event_id).attempts for m in messages[1:]] == [0, 0]
    double.start()
    await _drive(dispatcher, lambda: all(dispatcher.outbox.get(m.event_id).state == DELIVERED for m in messages))
    # Delivered in the order they were emitted.
    assert [d["event_id"] for d in double.state.deliveries] == [m.event_id for m in messages]
    assert dispatcher.breaker(host).state == "closed"


async def test_an_outage_across_dispatcher_restarts_still_charges_a_message_at_most_the_threshold(double, tmp_path):
    """The breaker's count lives in the outbox: a restarted orchestrator does not start the outage
    over with a closed breaker, which used to dead-letter a run's first update (CI, issue #7)."""
    from smvm.db.database import open_database
    from smvm.db.migrations import migrate
    from smvm.db.outbox import SqlOutbox

    db = open_database(f"sqlite:///{tmp_path / 'smvm.db'}")
    migrate(db)
    policy = DeliveryPolicy(**{**FAST.__dict__, "breaker_cooldown_s": 0.05, "lease_s": 0.05})
    messages = [_update("RUN-X-1", double.callback_url, i) for i in range(2)]
    host = f"127.0.0.1:{double.port}"
    double.stop()
    SqlOutbox(db).enqueue(messages)
    for life in range(4):  # four orchestrator lives during one outage
        d = Dispatcher(SqlOutbox(db), policy, [SECRET], rng=random.Random(life))
        try:
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:
                await d.run_once()
                await asyncio.sleep(0.01)
        finally:
            await d.aclose()
        first = d.outbox.get(messages[0].event_id)
        assert first.state == PENDING and first.attempts <= policy.breaker_threshold, (life, first)
    assert SqlOutbox(db).load_breaker(host)[1] is not None  # saved open
    assert d.outbox.get(messages[0].event_id).attempts == policy.breaker_threshold
    double.start()
    d = Dispatcher(SqlOutbox(db), policy, [SECRET])
    try:
        await _drive(d, lambda: all(d.outbox.get(m.event_id).state == DELIVERED for m in messages))
    finally:
        await d.aclose()
    assert [x["event_id"] for x in double.state.deliveries][-2:] == [m.event_id for m in messages]
    assert SqlOutbox(db).load_breaker(host) == (0, None)  # the trial's success closed it, durably


async def test_a_refusing_receiver_does_not_open_the_breaker(double, dispatcher):
    double.state.fail_next["update"] = (12, 422, {})
    messages = [_update(f"RUN-R-{i}", double.callback_url, i) for i in range(2)]
    dispatcher.outbox.enqueue(messages)
    await _drive(dispatcher, lambda: all(dispatcher.outbox.get(m.event_id).state == DEAD for m in messages))
    assert dispatcher.breaker(f"127.0.0.1:{double.port}").state == "closed"
    assert all(dispatcher.outbox.get(m.event_id).attempts == 6 for m in messages)


async def test_a_slow_receiver_does_not_hold_up_another(double):
    slow = TractionBuildDouble(SECRET)
    slow.state.delay_s = 2.0
    slow.start()
    d = Dispatcher(MemoryOutbox(), FAST, [SECRET])
    stop = asyncio.Event()
    runner = asyncio.create_task(d.run(stop))
    try:
        held = _update("RUN-SLOW", slow.callback_url)
        d.outbox.enqueue([held])
        await asyncio.sleep(0.2)  # the slow delivery is under way
        quick = _update("RUN-FAST", double.callback_url)
        d.outbox.enqueue([quick])
        d.wake()
        deadline = time.monotonic() + 20
        while d.outbox.get(held.event_id).state != DELIVERED:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert d.outbox.get(quick.event_id).state == DELIVERED
        assert d.outbox.get(quick.event_id).delivered_at < d.outbox.get(held.event_id).delivered_at
    finally:
        stop.set()
        await runner
        await d.aclose()
        slow.stop()


@given(failures=st.lists(st.sampled_from([500, 502, 503, 429, 400, 404]), max_size=10),
       per_run=st.lists(st.integers(1, 4), min_size=1, max_size=3))
@hsettings(max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_whatever_the_receiver_answers_each_message_ends_delivered_once_or_dead_and_runs_keep_order(
        double, failures, per_run):
    double.state.deliveries.clear()
    double.state.seen_event_ids.clear()
    double.state.fail_sequence[:] = list(failures)
    policy = DeliveryPolicy(**{**FAST.__dict__, "backoff_base_s": 0.005, "breaker_cooldown_s": 0.05, "lease_s": 0.1})
    d = Dispatcher(MemoryOutbox(), policy, [SECRET], rng=random.Random(1))
    emitted = {f"RUN-P-{r}": [_update(f"RUN-P-{r}", double.callback_url, i) for i in range(n)]
               for r, n in enumerate(per_run)}
    for messages in emitted.values():
        d.outbox.enqueue(messages)
    stop = asyncio.Event()
    runner = asyncio.create_task(d.run(stop))
    every = [m for messages in emitted.values() for m in messages]
    try:
        deadline = time.monotonic() + 30
        while any(d.outbox.get(m.event_id).state == PENDING for m in every):
            assert time.monotonic() < deadline, [d.outbox.get(m.event_id) for m in every]
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await runner
        await d.aclose()
    received = [x["event_id"] for x in double.state.deliveries]
    for message in every:
        final = d.outbox.get(message.event_id)
        if final.state == DELIVERED:
            assert received.count(message.event_id) == 1
        else:
            assert final.state == DEAD and final.attempts == FAST.max_retries + 1
            assert message.event_id not in received
    for messages in emitted.values():
        order = [m.event_id for m in messages if m.event_id in received]
        assert [e for e in received if e in set(order)] == order  # emission order kept per run


async def test_the_callback_barrier_delays_delivery_once_per_batch_not_per_message(double):
    """A message goes out no earlier than barrier_s after the dispatcher first claimed it (the gateways'
    status-cache bound: a receiver's next GET /status then sees at least that state); the messages
    claimed together wait once, whichever streams they are in."""
    barrier_s = 1.0
    d = Dispatcher(MemoryOutbox(), dataclasses.replace(FAST, barrier_s=barrier_s), [SECRET])
    stop = asyncio.Event()
    messages = [_update(f"RUN-B-{run}", double.callback_url, n) for run in range(3) for n in range(3)]
    d.outbox.enqueue(messages)
    started = time.time()
    runner = asyncio.create_task(d.run(stop))
    try:
        deadline = time.monotonic() + 20
        while not all(d.outbox.get(m.event_id).state == DELIVERED for m in messages):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await runner
        await d.aclose()
    received = [r["received_at"] for r in double.state.deliveries]
    assert len(received) == 9 and min(received) >= started + barrier_s
    # Waiting per message would take three barriers per stream; the batch waits one.
    assert max(received) - started < 2 * barrier_s
    for run in range(3):  # still in each run's order
        assert [u["step_name"] for u in double.state.updates_for(f"RUN-B-{run}")] == ["step0", "step1", "step2"]
