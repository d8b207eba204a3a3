"""At-least-once delivery of outbox messages to TractionBuild.

Each message is POSTed as JSON with Standard Webhooks signature headers. 2xx delivers it (the body is
kept as the message's response, e.g. the results sync's reference). Anything else is a failed
attempt, retried after the guide's exponential backoff (base x 1, 2, 4, 8, 16 plus up to one base of
jitter; at most `max_retries` retries) or later when the receiver's Retry-After on 429 / 503 says so;
after the last retry the message is dead-lettered (listable and replayable). 410 Gone disables the
URL: its pending messages go straight to the dead letters. A circuit breaker per callback host opens
after `breaker_threshold` consecutive host failures (no answer, a timeout, 5xx) and lets one trial
through every `breaker_cooldown_s`; its count is kept in the outbox, so a restart does not forget an
outage. While it is open no message's retry budget is spent: claimed
messages wait for their lease to lapse, and a failed trial is charged to the breaker, not to the
message. So an outage of the receiver loses nothing (its messages are delivered once the breaker
closes), while a message the receiver keeps refusing (4xx) is dead-lettered after its retries.

The callback barrier: a message is delivered no earlier than `barrier_s` after this dispatcher first
saw it (claimed it), and it can only be claimed once its state change has committed. barrier_s is
the gateways' status-cache staleness bound L (SMVM_STATUS_CACHE_STALENESS_MS): a gateway answers
from its cache only while synced within L, so a client that reads GET /status after receiving a
callback is answered a state at least as new as the callback's, by any gateway. Messages claimed
together wait once, in their streams' own tasks: the barrier adds at most L of latency, not to the
delivery rate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import random
import time
from typing import Awaitable, Callable
from urllib.parse import urlsplit

import httpx

from smvm import correlation, metrics
from smvm.outbox import PENDING, Outbox, OutboxMessage

from services.orchestrator.callbacks import signing

log = logging.getLogger("smvm.callbacks")

RESPONSE_KEEP_CHARS = 4096
FIRST_SEEN_KEPT = 10_000
_BACKOFF_STATUSES = (429, 503)


@dataclasses.dataclass(frozen=True)
class DeliveryPolicy:
    backoff_base_s: float = 1.0
    max_retries: int = 5
    timeout_s: float = 10.0
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    lease_s: float = 30.0
    max_retry_after_s: float = 3600.0
    poll_interval_s: float = 0.5
    batch_size: int = 32
    barrier_s: float = 0.0  # the callback barrier (module docstring); the status cache's staleness bound

    @classmethod
    def from_settings(cls, settings) -> "DeliveryPolicy":
        return cls(
            backoff_base_s=settings.webhook_backoff_base_s, max_retries=settings.webhook_max_retries,
            timeout_s=settings.webhook_timeout_s, breaker_threshold=settings.webhook_breaker_threshold,
            breaker_cooldown_s=settings.webhook_breaker_cooldown_s, lease_s=settings.webhook_lease_s,
            poll_interval_s=settings.webhook_poll_interval_s, barrier_s=settings.status_cache_staleness_ms / 1000,
        )


def backoff_delay(retry: int, base_s: float, rng: random.Random) -> float:
    """Delay before retry number `retry` (1-based): base * 2**(retry-1) plus jitter in [0, base)."""
    return base_s * 2 ** (retry - 1) + rng.uniform(0.0, base_s)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class CircuitBreaker:
    """closed -> open after `threshold` consecutive failures -> one trial after `cooldown_s`.

    `on_change(failures, opened_at)` is called whenever the counted state changes (the dispatcher
    saves it in the outbox), and `restore` starts from a saved state: a breaker that forgot the
    failures of an outage at a restart would charge up to `threshold` more to the messages' retry
    budgets, and a message could be dead-lettered by an outage the breaker should have absorbed."""

    def __init__(self, threshold: int, cooldown_s: float,
                 on_change: Callable[[int, float | None], None] | None = None):
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_in_flight = False
        self.on_change = on_change

    def restore(self, failures: int, opened_at: float | None) -> "CircuitBreaker":
        self.failures, self.opened_at = max(0, int(failures)), opened_at
        return self

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.trial_in_flight else "open"

    def allow(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if now < self.opened_at + self.cooldown_s or self.trial_in_flight:
            return False
        self.trial_in_flight = True
        return True

    def success(self) -> None:
        changed = self.failures != 0 or self.opened_at is not None
        self.failures, self.opened_at, self.trial_in_flight = 0, None, False
        if changed:
            self._changed()

    def failure(self, now: float) -> None:
        self.failures += 1
        was_trial, self.trial_in_flight = self.trial_in_flight, False
        if was_trial or self.failures >= self.threshold:
            self.opened_at = now
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.failures, self.opened_at)


OnDelivered = Callable[[OutboxMessage, str], Awaitable[None] | None]


class Dispatcher:
    """Claims due messages from an Outbox and delivers them; run `run()` as a background task."""

    def __init__(
        self,
        outbox: Outbox,
        policy: DeliveryPolicy,
        secrets: list[str],
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        extra_headers: Callable[[OutboxMessage], dict[str, str]] | None = None,
        on_delivered: OnDelivered | None = None,
    ):
        self.outbox = outbox
        self.policy = policy
        self.secrets = secrets
        self.clock = clock
        self.rng = rng or random.Random()
        self.extra_headers = extra_headers
        self.on_delivered = on_delivered
        self._client = client
        self._own_client = client is None
        self.breakers: dict[str, CircuitBreaker] = {}
        self.disabled_urls: set[str] = set()
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        # (run_id, url) streams being delivered by a background task, and those tasks.
        self._busy: set[tuple[str, str]] = set()
        self._backlog: dict[tuple[str, str], dict[str, OutboxMessage]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._first_seen: dict[str, float] = {}  # event_id -> time.monotonic() of its first claim here

    def breaker(self, host: str) -> CircuitBreaker:
        """The host's breaker, starting from the state saved in the outbox (it survives restarts)."""
        if host not in self.breakers:
            def save(failures: int, opened_at: float | None) -> None:
                self.outbox.save_breaker(host, failures, opened_at, self.clock())
            self.breakers[host] = CircuitBreaker(
                self.policy.breaker_threshold, self.policy.breaker_cooldown_s, on_change=save,
            ).restore(*self.outbox.load_breaker(host))
        return self.breakers[host]

    def wake(self) -> None:
        """New messages are waiting: deliver them now rather than at the next poll."""
        self._wake.set()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.policy.timeout_s, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; a crash in one round is logged, never fatal. Each run's
        stream is delivered by its own task, so a slow receiver never holds up another's."""
        while not stop.is_set():
            try:
                started = self._start_round()
            except Exception:
                log.exception("delivery round failed")
                started = 0
            if started:
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=self.policy.poll_interval_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    def _claim_streams(self) -> dict[tuple[str, str], list[OutboxMessage]]:
        """Claim due messages, grouped by (run, url): one run's messages go in order, one at a time."""
        claimed = [m for m in self.outbox.claim_due(self.clock(), self.policy.batch_size, self.policy.lease_s)
                   if m.event_id not in self._in_flight]
        self._saw(claimed)
        streams: dict[tuple[str, str], list[OutboxMessage]] = {}
        for message in claimed:
            streams.setdefault((message.run_id, message.url), []).append(message)
        return streams

    def _saw(self, messages: list[OutboxMessage]) -> None:
        now = time.monotonic()
        if len(self._first_seen) > FIRST_SEEN_KEPT:  # messages another replica delivered: forget them
            horizon = now - self.policy.barrier_s - self.policy.lease_s
            self._first_seen = {k: v for k, v in self._first_seen.items() if v >= horizon}
        for message in messages:
            self._first_seen.setdefault(message.event_id, now)

    async def _barrier(self, message: OutboxMessage) -> None:
        """Wait until `barrier_s` has passed since this dispatcher first saw `message`."""
        if self.policy.barrier_s <= 0:
            return
        seen = self._first_seen.setdefault(message.event_id, time.monotonic())
        wait = seen + self.policy.barrier_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _dispatch(self, streams: dict[tuple[str, str], list[OutboxMessage]]) -> list[tuple[tuple[str, str], list]]:
        """Messages of a stream already being delivered join its backlog; the rest are new streams."""
        fresh = []
        for key, group in streams.items():
            if key in self._busy:
                self._backlog.setdefault(key, {}).update({m.event_id: m for m in group})
            else:
                self._busy.add(key)
                fresh.append((key, group))
        return fresh

    def _start_round(self) -> int:
        """Claim and hand each new stream to a background task; return how many were started."""
        fresh = self._dispatch(self._claim_streams())
        for key, group in fresh:
            task = asyncio.create_task(self._deliver_stream(key, group), name=f"deliver:{key[0]}")
            self._tasks.add(task)
            task.add_done_callback(self._stream_done)
        return len(fresh)

    def _stream_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())
        self.wake()  # the stream's next message may be due now

    async def run_once(self) -> int:
        """One round, waited for: claim due messages and attempt each; return how many were attempted."""
        fresh = self._dispatch(self._claim_streams())
        results = await asyncio.gather(*(self._deliver_stream(key, group) for key, group in fresh))
        return sum(results)

    def _pending_in_order(self, run_id: str, url: str) -> list[str]:
        """Event ids of this run's pending messages to this URL, oldest first (due or not, leased or not)."""
        pending = [m for m in self.outbox.list(state=PENDING, run_id=run_id, limit=10_000) if m.url == url]
        return [m.event_id for m in sorted(pending, key=lambda m: (m.created_at, m.event_id))]

    async def _deliver_stream(self, key: tuple[str, str], group: list[OutboxMessage]) -> int:
        """Deliver a stream's claimed messages, then any claimed for it meanwhile, until one fails or
        none is left. The busy mark is dropped with no await after the last backlog check, so a
        message claimed for this stream is never stranded in the backlog."""
        attempted = 0
        claimed = {m.event_id: m for m in group}
        try:
            while claimed:
                count, clean = await self._deliver_in_order(key, claimed)
                attempted += count
                more = self._backlog.pop(key, {})
                if not clean or (count == 0 and not more):
                    break  # a failure, or no progress possible: the rest wait for their lease
                claimed.update((k, v) for k, v in more.items() if k not in self._in_flight)
        finally:
            self._backlog.pop(key, None)  # after a failure they wait for their lease, keeping the order
            self._busy.discard(key)
        return attempted

    async def _deliver_in_order(self, key: tuple[str, str], claimed: dict[str, OutboxMessage]) -> tuple[int, bool]:
        """Attempt claimed messages while each is the oldest pending one of the stream (head-of-line),
        so a receiver never sees RUNNING after DECISION_READY. Returns (attempted, clean) where clean
        means it stopped for lack of a claimed head, not because a delivery failed."""
        attempted = 0
        for event_id in self._pending_in_order(*key):
            message = claimed.pop(event_id, None)
            if message is None:
                return attempted, True  # the oldest pending one is not ours to send now
            self._in_flight.add(message.event_id)
            try:
                await self._barrier(message)
                outcome = await self.deliver(message)
            finally:
                self._in_flight.discard(message.event_id)
                self._first_seen.pop(message.event_id, None)
            if outcome == "circuit_open":
                return attempted, False
            attempted += 1
            if outcome != "delivered":
                return attempted, False
        return attempted, True

    async def deliver(self, message: OutboxMessage) -> str:
        """Attempt one message; return the outcome (also counted in metrics). Log lines carry the
        run's correlation id, as the request that caused the message did."""
        token = correlation.set(message.payload.get("correlation_id") or correlation.get())
        try:
            return await self._attempt(message)
        finally:
            correlation.reset(token)

    async def _attempt(self, message: OutboxMessage) -> str:
        now = self.clock()
        host = urlsplit(message.url).netloc.lower()
        if message.url in self.disabled_urls:
            self.outbox.mark_failed(message.event_id, "endpoint disabled: it answered 410 Gone", None)
            return self._count(message, "disabled")
        breaker = self.breaker(host)
        if not breaker.allow(now):
            return self._count(message, "circuit_open")
        is_trial = breaker.trial_in_flight
        body = json.dumps(message.payload, separators=(",", ":"), sort_keys=True, default=str).encode()
        headers = {"content-type": "application/json", "user-agent": "smvm-webhooks/1"}
        headers.update(signing.headers(self.secrets, message.event_id, body, int(now)))
        cid = correlation.get()
        if cid:
            headers[correlation.HTTP_HEADER] = cid
        if self.extra_headers is not None:
            headers.update(self.extra_headers(message))
        started = time.perf_counter()
        retry_after = None
        try:
            response = await self.client.post(message.url, content=body, headers=headers, timeout=self.policy.timeout_s)
        except httpx.HTTPError as exc:
            error, status = f"{type(exc).__name__}: {exc}"[:500], None
        else:
            status = response.status_code
            error = f"HTTP {status}: {response.text[:300]}"
            retry_after = parse_retry_after(response.headers.get("retry-after"), now) if status in _BACKOFF_STATUSES else None
        finally:
            metrics.WEBHOOK_LATENCY.labels(message.kind).observe(time.perf_counter() - started)

        if status is not None and 200 <= status < 300:
            breaker.success()
            self.outbox.mark_delivered(message.event_id, self.clock(), response.text[:RESPONSE_KEEP_CHARS])
            log.info("callback delivered", extra={"event_id": message.event_id, "kind": message.kind,
                                                  "run_id": message.run_id, "status": status})
            if self.on_delivered is not None:
                result = self.on_delivered(message, response.text)
                if asyncio.iscoroutine(result):
                    await result
            return self._count(message, "delivered")
        if status == 410:
            breaker.success()  # the host answered; only this endpoint is gone
            self.disabled_urls.add(message.url)
            self.outbox.mark_failed(message.event_id, error, None)
            log.warning("callback endpoint disabled (410)", extra={"url": message.url, "event_id": message.event_id})
            return self._count(message, "disabled")
        if status is None or status >= 500 or status == 408:
            breaker.failure(now)
            if is_trial:
                log.info("circuit trial failed; breaker stays open", extra={"host": host, "error": error})
                return self._count(message, "trial_failed")
        else:
            breaker.success()  # the host answered (4xx, 429): it is up, this message is the problem
        retry = message.attempts + 1  # this attempt's number is attempts + 1; the next is retry `retry`
        if retry > self.policy.max_retries:
            self.outbox.mark_failed(message.event_id, error, None)
            log.warning("callback dead-lettered", extra={"event_id": message.event_id, "kind": message.kind,
                                                        "run_id": message.run_id, "error": error})
            return self._count(message, "dead")
        delay = backoff_delay(retry, self.policy.backoff_base_s, self.rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.policy.max_retry_after_s))
        self.outbox.mark_failed(message.event_id, error, now + delay)
        log.info("callback attempt failed; retrying", extra={"event_id": message.event_id, "retry": retry,
                                                           "delay_s": round(delay, 3), "error": error})
        return self._count(message, "retry")

    @staticmethod
    def _count(message: OutboxMessage, outcome: str) -> str:
        metrics.WEBHOOK_DELIVERIES.labels(message.kind, outcome).inc()
        return outcome
