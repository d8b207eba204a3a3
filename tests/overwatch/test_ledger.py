"""The budget ledger: run and project ceilings, 80 % warnings, refusal before work, settlement,
expiry, persistence across restarts, and atomic reservations under many threads and processes.

Every test runs on SQLite and on a real PostgreSQL server (the `database_url` fixture)."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from smvm.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

from services.overwatch.budget import BudgetDefaults
from services.overwatch.ledger import Amounts, Ledger
from services.overwatch.ledger_store import LedgerStore
from services.overwatch.policy import load_policy

DEFAULTS = BudgetDefaults(max_utility_evaluations=1_000, max_tokens_per_run=100, warn_fraction=0.8)
T0 = 1_795_000_000.0  # 2026-11-18, inside one calendar month


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_ledger(database_url: str, clock=None, **project) -> Ledger:
    ceilings = {"max_utility_evaluations": 10_000, "max_tokens": 1_000, "max_cpu_seconds": 100, "period": "month"}
    ceilings.update(project)
    policy = load_policy({"budget": {"project": ceilings, "reservation_ttl_s": 600}})
    return Ledger(LedgerStore(database_url), DEFAULTS, policy, clock=clock or Clock())


def reserve(ledger: Ledger, run_id: str, evals: int = 0, tokens: int = 0, project: str = "proj", **kw):
    return ledger.reserve(run_id=run_id, project_id=project, requested=Amounts(evals, tokens), actor="svc", **kw)


def test_run_ceiling_passes_at_the_ceiling_warns_from_80_percent_and_refuses_one_over(database_url):
    ledger = make_ledger(database_url)
    quiet = reserve(ledger, "RUN-A", evals=799)
    assert quiet.warnings == [] and quiet.utilisation == pytest.approx(0.799)
    warned = reserve(ledger, "RUN-B", evals=800)
    assert warned.warnings == ["resource_constraint: run compute at 80% of ceiling (800 of 1000 utility evaluations)"]
    full = reserve(ledger, "RUN-C", evals=1_000, tokens=100)
    assert full.utilisation == 1.0 and len(full.warnings) == 2
    with pytest.raises(ResourceExhausted) as err:
        reserve(ledger, "RUN-D", evals=1_001)
    assert err.value.field == "requested.utility_evaluations"
    assert err.value.reason == "RUN_COMPUTE_CEILING_EXCEEDED"
    assert "0 already spent or held + 1001 requested utility evaluations > allowed 1000" in err.value.message
    with pytest.raises(ResourceExhausted) as err:
        reserve(ledger, "RUN-E", tokens=101)
    assert err.value.reason == "RUN_TOKENS_CEILING_EXCEEDED" and err.value.field == "requested.tokens"


def test_the_run_configuration_ceiling_replaces_the_default(database_url):
    ledger = make_ledger(database_url)
    held = reserve(ledger, "RUN-A", evals=4_000, max_utility_evaluations=5_000)
    assert held.run_usage.ceilings.utility_evaluations == 5_000
    with pytest.raises(ResourceExhausted):
        reserve(ledger, "RUN-B", evals=60, max_utility_evaluations=50)


def test_a_second_reservation_of_one_run_counts_what_the_run_already_holds(database_url):
    ledger = make_ledger(database_url)
    reserve(ledger, "RUN-A", evals=600, purpose="simulation")
    with pytest.raises(ResourceExhausted) as err:
        reserve(ledger, "RUN-A", evals=401, purpose="rerun")
    assert "600 already spent or held + 401 requested" in err.value.message
    reserve(ledger, "RUN-A", evals=400, purpose="rerun")


def test_project_ceiling_spans_runs_release_frees_and_commit_counts_the_actual(database_url):
    ledger = make_ledger(database_url, max_utility_evaluations=2_500)
    a = reserve(ledger, "RUN-A", evals=1_000)
    reserve(ledger, "RUN-B", evals=1_000)
    with pytest.raises(ResourceExhausted) as err:
        reserve(ledger, "RUN-C", evals=600)
    assert err.value.reason == "PROJECT_COMPUTE_CEILING_EXCEEDED"
    assert "project proj compute ceiling exceeded: 2000 already spent or held + 600 requested" in err.value.message
    assert reserve(ledger, "RUN-X", evals=600, project="other").reservation_id  # other projects are unaffected
    with pytest.raises(AlreadyExists):  # a run belongs to one project
        reserve(ledger, "RUN-X", evals=600)
    settled = ledger.commit(a.reservation_id, Amounts(300, 0, 1.5))
    assert settled.project_usage.committed == Amounts(300, 0, 1.5)
    assert settled.project_usage.reserved.utility_evaluations == 1_000
    c = reserve(ledger, "RUN-C", evals=600)  # 300 spent + 1000 held + 600 <= 2500
    released = ledger.release(c.reservation_id, reason="stage failed")
    assert released.project_usage.reserved.utility_evaluations == 1_000
    warned = reserve(ledger, "RUN-D", evals=1_000, max_utility_evaluations=5_000)  # project: 2300 of 2500
    assert warned.warnings == ["resource_constraint: project proj compute at 92% of ceiling "
                               "(2300 of 2500 utility evaluations)"]


def test_spent_project_cpu_refuses_the_next_run_before_it_starts(database_url):
    ledger = make_ledger(database_url, max_cpu_seconds=10)
    held = reserve(ledger, "RUN-A", evals=10)
    ledger.commit(held.reservation_id, Amounts(10, 0, 10.0))
    with pytest.raises(ResourceExhausted) as err:
        reserve(ledger, "RUN-B", evals=10)
    assert err.value.reason == "PROJECT_CPU_CEILING_EXCEEDED"
    assert "CPU budget spent: 10 of 10 CPU seconds" in err.value.message


def test_the_project_period_rolls_over(database_url):
    clock = Clock()
    ledger = make_ledger(database_url, clock, max_utility_evaluations=1_000)
    reserve(ledger, "RUN-A", evals=1_000)
    with pytest.raises(ResourceExhausted):
        reserve(ledger, "RUN-B", evals=1)
    clock.now += 31 * 86_400  # next calendar month
    assert reserve(ledger, "RUN-B", evals=1_000).project_usage.scope.startswith("project:proj:2026-12")


def test_an_unsettled_reservation_stops_counting_when_it_expires(database_url):
    clock = Clock()
    ledger = make_ledger(database_url, clock, max_utility_evaluations=1_000)
    reserve(ledger, "RUN-A", evals=1_000, ttl_s=60)
    with pytest.raises(ResourceExhausted):
        reserve(ledger, "RUN-B", evals=1)
    clock.now += 61
    assert reserve(ledger, "RUN-B", evals=1_000).reservation_id


def test_settlement_is_idempotent_and_refuses_contradictions(database_url):
    ledger = make_ledger(database_url)
    held = reserve(ledger, "RUN-A", evals=100)
    again = reserve(ledger, "RUN-A", evals=100)
    assert again.replayed and again.reservation_id == held.reservation_id
    with pytest.raises(AlreadyExists):
        reserve(ledger, "RUN-A", evals=101)
    ledger.commit(held.reservation_id, Amounts(90, cpu_seconds=1.5))
    assert ledger.commit(held.reservation_id, Amounts(90, cpu_seconds=1.5)).replayed
    # The same work measured again (a retried stage) replays; the first CPU figure stands.
    assert ledger.commit(held.reservation_id, Amounts(90, cpu_seconds=2.25)).replayed
    with pytest.raises(AlreadyExists):
        ledger.commit(held.reservation_id, Amounts(91))
    with pytest.raises(FailedPrecondition):
        ledger.release(held.reservation_id)
    with pytest.raises(NotFound):
        ledger.commit("RSV-nope", Amounts(1))
    with pytest.raises(InvalidArgument) as err:
        ledger.commit(held.reservation_id, Amounts(-1))
    assert err.value.field == "actual.utility_evaluations"
    with pytest.raises(InvalidArgument) as err:
        reserve(ledger, "../etc", evals=1)
    assert err.value.field == "run_id"


def test_the_ledger_and_its_audit_trail_survive_a_restart(database_url):
    ledger = make_ledger(database_url, max_utility_evaluations=1_000)
    held = reserve(ledger, "RUN-A", evals=700)
    ledger.commit(held.reservation_id, Amounts(650, 0, 2.0), actor="orchestrator", correlation_id="cid-1")
    with pytest.raises(ResourceExhausted):
        reserve(ledger, "RUN-B", evals=400)
    ledger.store.close()

    reopened = make_ledger(database_url, max_utility_evaluations=1_000)
    run_usage, project_usage = reopened.usage(run_id="RUN-A", project_id="proj")
    assert run_usage.committed == Amounts(650, 0, 2.0) and project_usage.committed.utility_evaluations == 650
    with pytest.raises(ResourceExhausted):
        reserve(reopened, "RUN-B", evals=351)
    events = reopened.events(project_id="proj")
    assert [e.kind for e in events] == ["budget.reserved", "budget.committed", "budget.refused", "budget.refused"]
    committed = events[1]
    assert (committed.actor, committed.run_id, committed.correlation_id) == ("orchestrator", "RUN-A", "cid-1")
    assert committed.payload["actual"]["utility_evaluations"] == 650 and committed.time.endswith("Z")
    assert [e.kind for e in reopened.events(run_id="RUN-B")] == ["budget.refused", "budget.refused"]
    assert [e.kind for e in reopened.events(project_id="proj", kind_prefix="budget.ref")] == ["budget.refused"] * 2


def test_many_threads_sharing_one_ledger_never_reserve_past_the_project_ceiling(database_url):
    ledger = make_ledger(database_url, max_utility_evaluations=10_000)
    barrier = threading.Barrier(16)

    def attempt(i: int) -> int:
        barrier.wait() if i < 16 else None
        try:
            reserve(ledger, f"RUN-{i}", evals=700)
            return 700
        except ResourceExhausted:
            return 0

    with ThreadPoolExecutor(max_workers=16) as pool:
        granted = list(pool.map(attempt, range(64)))
    assert sum(granted) == 14 * 700  # floor(10000 / 700) reservations fit, and no more
    _, usage = ledger.usage(project_id="proj")
    assert usage.reserved.utility_evaluations == 14 * 700 <= 10_000
    assert len(ledger.events(project_id="proj", kind_prefix="budget.refused", limit=1000)) == 50


def _race(database_url: str, workers: int, attempt) -> list[int]:
    """`workers` threads, each with its OWN ledger and database connection (as replicas have),
    start together and each make 8 attempts; returns what each attempt was granted."""
    ledgers = [make_ledger(database_url, max_utility_evaluations=10_000) for _ in range(workers)]
    barrier = threading.Barrier(workers)

    def worker(w: int) -> list[int]:
        barrier.wait()
        return [attempt(ledgers[w], w * 8 + k) for k in range(8)]

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return [g for granted in pool.map(worker, range(workers)) for g in granted]
    finally:
        for ledger in ledgers:
            ledger.store.close()


def _granted(ledger: Ledger, **kw) -> int:
    try:
        ledger.reserve(actor="svc", **kw)
    except ResourceExhausted:
        return 0
    return kw["requested"].utility_evaluations


def test_connections_racing_for_one_project_period_never_pass_its_ceiling(database_url):
    granted = _race(database_url, 8, lambda ledger, i: _granted(
        ledger, run_id=f"RUN-{i}", project_id="proj", requested=Amounts(700)))
    assert sum(granted) == 14 * 700 and granted.count(700) == 14  # floor(10000 / 700), and no more
    check = make_ledger(database_url, max_utility_evaluations=10_000)
    _, usage = check.usage(project_id="proj")
    assert usage.reserved.utility_evaluations == 14 * 700
    assert len(check.events(project_id="proj", kind_prefix="budget.reserved", limit=1000)) == 14


def test_connections_racing_for_one_run_in_two_projects_never_pass_the_run_ceiling(database_url):
    """One run's reservations under different projects share no project row: the run's lock orders them."""
    granted = _race(database_url, 8, lambda ledger, i: _granted(
        ledger, run_id="RUN-SHARED", project_id=f"proj-{i % 2}", requested=Amounts(70), purpose=f"step-{i}"))
    assert sum(granted) == 14 * 70  # run ceiling 1000 (DEFAULTS): floor(1000 / 70) fit
    run_usage, _ = make_ledger(database_url).usage(run_id="RUN-SHARED")
    assert run_usage.reserved.utility_evaluations == 14 * 70 <= DEFAULTS.max_utility_evaluations


def test_connections_settling_one_reservation_at_once_count_it_once(database_url):
    """Two replicas retrying one commit: one commits, the other replays; the period total counts it once."""
    held = reserve(make_ledger(database_url), "RUN-A", evals=500)
    ledgers = [make_ledger(database_url) for _ in range(6)]
    barrier = threading.Barrier(6)

    def commit(ledger: Ledger) -> bool:
        barrier.wait()
        return ledger.commit(held.reservation_id, Amounts(400, 0, 1.0)).replayed

    with ThreadPoolExecutor(max_workers=6) as pool:
        replayed = list(pool.map(commit, ledgers))
    assert sorted(replayed) == [False] + [True] * 5
    _, usage = ledgers[0].usage(project_id="proj")
    assert usage.committed == Amounts(400, 0, 1.0) and usage.reserved.utility_evaluations == 0


def test_two_ledgers_on_one_database_serialise_like_two_processes(database_url):
    first = make_ledger(database_url, max_utility_evaluations=1_000)
    second = make_ledger(database_url, max_utility_evaluations=1_000)
    reserve(first, "RUN-A", evals=600)
    with pytest.raises(ResourceExhausted):
        reserve(second, "RUN-B", evals=600)


_examples = itertools.count()


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["reserve", "commit", "release"]), st.integers(0, 9),
                              st.integers(0, 600), st.integers(0, 600)), max_size=30))
def test_usage_matches_a_model_and_reservations_fit_under_the_ceiling(database_url, ops):
    example = next(_examples)  # one database per test: each example has its own project and runs
    project = f"proj-{example}"
    ledger = make_ledger(database_url, max_utility_evaluations=2_000)
    held: dict[int, tuple[str, int]] = {}
    committed: dict[int, int] = {}
    settled: set[int] = set()
    try:
        for op, run, amount, actual in ops:
            if op == "reserve" and run not in held and run not in settled:
                fits = sum(a for _, a in held.values()) + sum(committed.values()) + amount <= 2_000
                fits = fits and amount <= DEFAULTS.max_utility_evaluations
                try:
                    held[run] = (reserve(ledger, f"RUN-{example}-{run}", evals=amount, project=project).reservation_id,
                                 amount)
                    assert fits
                except ResourceExhausted:
                    assert not fits
            elif op == "commit" and run in held:
                rid, _ = held.pop(run)
                ledger.commit(rid, Amounts(actual))
                committed[run] = actual
                settled.add(run)
            elif op == "release" and run in held:
                ledger.release(held.pop(run)[0])
                settled.add(run)
            _, usage = ledger.usage(project_id=project)
            assert usage.reserved.utility_evaluations == sum(a for _, a in held.values())
            assert usage.committed.utility_evaluations == sum(committed.values())
    finally:
        ledger.store.close()


def _reserve_in_another_process(database_url: str, first: int, count: int) -> int:
    """Runs in a spawned process: its own ledger on the shared database; returns what it was granted.
    It keeps the test's fixed clock (T0): with the real clock its reservations fell in another
    budget period than the check's once the calendar month moved past T0's (the test failed from
    2026-12-01)."""
    policy = load_policy({"budget": {"project": {"max_utility_evaluations": 10_000}}})
    ledger = Ledger(LedgerStore(database_url), DEFAULT_PROCESS_DEFAULTS, policy, clock=Clock())
    granted = 0
    for i in range(first, first + count):
        try:
            ledger.reserve(run_id=f"RUN-P{i}", project_id="proj", requested=Amounts(700))
            granted += 700
        except ResourceExhausted:
            pass
    ledger.store.close()
    return granted


DEFAULT_PROCESS_DEFAULTS = BudgetDefaults(max_utility_evaluations=1_000, max_tokens_per_run=100)


def test_processes_sharing_the_database_never_reserve_past_the_project_ceiling(database_url):
    import multiprocessing

    LedgerStore(database_url).close()  # the schema exists before the processes race
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        granted = pool.starmap(_reserve_in_another_process, [(database_url, k * 10, 10) for k in range(4)])
    assert sum(granted) == 14 * 700  # floor(10000 / 700), whichever processes won
    ledger = make_ledger(database_url, max_utility_evaluations=10_000)
    assert ledger.usage(project_id="proj")[1].reserved.utility_evaluations == 14 * 700
