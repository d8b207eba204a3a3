"""The budget ledger: what each run and project spends, reserved before the work and settled after.

A service asks to `reserve` what its work will spend at most; the ledger counts what the run and its
project already hold or have spent in the current period, refuses with ResourceExhausted when any
ceiling would be exceeded (before the work starts, never half-way), and warns with the guide's
`resource_constraint` alert at `warn_fraction` of a ceiling. The work then `commit`s what it really
spent, or `release`s the reservation unspent. Every step and every refusal is an audit event.

Ceilings: per run, compute (utility evaluations) and model tokens from the run configuration or the
service defaults; per project and period (policy `budget.project`), compute, tokens and measured
CPU seconds. The check and the insert happen in one store transaction that first takes the budget's
locks (`lock_budget`: the project period and the run), so two concurrent reservations - threads,
processes or overwatch replicas on one database - can never both slip under a ceiling.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

from smvm.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from smvm.ids import check_id

from services.overwatch.budget import BudgetDefaults
from services.overwatch.ledger_store import AuditRow, LedgerStore, LedgerTransaction, Totals
from services.overwatch.policy import OverwatchPolicy

DEFAULT_PURPOSE = "simulation"


@dataclass(frozen=True)
class Amounts:
    utility_evaluations: int = 0
    tokens: int = 0
    cpu_seconds: float = 0.0

    def check(self, prefix: str) -> "Amounts":
        """Refuse negative or non-finite amounts, naming the field."""
        for name in ("utility_evaluations", "tokens", "cpu_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"{prefix}.{name}", f"must be a non-negative number, got {value}")
        return self


@dataclass(frozen=True)
class Usage:
    scope: str
    committed: Amounts
    reserved: Amounts
    ceilings: Amounts  # 0 = no ceiling


@dataclass(frozen=True)
class ProjectCeilings:
    period: str  # "month" or "day"
    utility_evaluations: int
    tokens: int
    cpu_seconds: float

    @classmethod
    def for_project(cls, policy: OverwatchPolicy, project_id: str) -> "ProjectCeilings":
        base = dict(policy.get("budget.project"))
        base.update(policy.get("budget.projects").get(project_id) or {})
        return cls(
            period=str(base["period"]),
            utility_evaluations=int(base["max_utility_evaluations"]),
            tokens=int(base["max_tokens"]),
            cpu_seconds=float(base["max_cpu_seconds"]),
        )

    def period_of(self, epoch_s: float) -> str:
        day = dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc)
        return day.strftime("%Y-%m" if self.period == "month" else "%Y-%m-%d")


@dataclass
class Reservation:
    reservation_id: str
    warnings: list[str]
    utilisation: float
    run_usage: Usage
    project_usage: Usage
    replayed: bool = False


@dataclass
class Settlement:
    run_usage: Usage
    project_usage: Usage
    warnings: list[str] = field(default_factory=list)
    replayed: bool = False


@dataclass(frozen=True)
class _Meter:
    """One ceiling the reservation is judged against."""

    scope: str  # "run" or "project <id>"
    label: str  # compute | tokens | cpu
    unit: str
    field: str  # the request field the refusal names
    ceiling_name: str
    used: float  # spent + held before this reservation
    requested: float
    ceiling: float  # 0 = none

    @property
    def after(self) -> float:
        return self.used + self.requested

    def exceeded(self) -> bool:
        if self.ceiling <= 0:
            return False
        if self.label == "cpu":  # measured after the work: refuse once the period's CPU is spent
            return self.used >= self.ceiling
        return self.after > self.ceiling

    def fraction(self) -> float:
        return self.after / self.ceiling if self.ceiling > 0 else 0.0


def iso_at(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{int(value)}"


class Ledger:
    """Reserve / commit / release over a LedgerStore, with the policy's ceilings."""

    def __init__(self, store: LedgerStore, defaults: BudgetDefaults, policy: OverwatchPolicy,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.defaults = defaults
        self.policy = policy
        self.clock = clock
        self.ttl_s = float(policy.num("budget.reservation_ttl_s"))
        self._warn_at = Fraction(str(defaults.warn_fraction))

    # ------------------------------------------------------------------ reserve
    def reserve(self, *, run_id: str, project_id: str, requested: Amounts, max_utility_evaluations: int = 0,
                max_tokens_per_run: int = 0, purpose: str = "", ttl_s: float = 0.0, actor: str = "",
                correlation_id: str = "") -> Reservation:
        check_id("run_id", run_id)
        check_id("project_id", project_id)
        requested.check("requested")
        for name, value in (("max_utility_evaluations", max_utility_evaluations), ("max_tokens_per_run", max_tokens_per_run),
                            ("ttl_seconds", ttl_s)):
            if value < 0:
                raise InvalidArgument(name, f"must not be negative, got {value}")
        purpose = purpose or DEFAULT_PURPOSE
        run_max_evals = int(max_utility_evaluations or self.defaults.max_utility_evaluations)
        run_max_tokens = int(max_tokens_per_run or self.defaults.max_tokens_per_run)
        ceilings = ProjectCeilings.for_project(self.policy, project_id)
        now = self.clock()
        period = ceilings.period_of(now)
        audit = dict(actor=actor or "unknown", run_id=run_id, project_id=project_id, correlation_id=correlation_id)
        refusal: ResourceExhausted | None = None
        with self.store.transaction() as tx:
            tx.lock_budget(project_id, period, run_id)
            existing = tx.reservation_for(run_id, purpose)
            if existing is not None:
                return self._replay_reservation(tx, existing, project_id, requested, now)
            run_totals = tx.run_totals(run_id, now)
            project_totals = tx.project_totals(project_id, period, now)
            meters = self._meters(run_totals, project_totals, requested, run_max_evals, run_max_tokens, ceilings, project_id,
                                  period)
            over = next((m for m in meters if m.exceeded()), None)
            if over is not None:
                refusal = self._refusal(over, run_id)
                tx.append_audit(time=iso_at(now), kind="budget.refused", **audit, payload={
                    "purpose": purpose, "reason": refusal.reason, "message": refusal.message, "field": refusal.field,
                    "requested": _amounts_dict(requested), "period": period})
            else:
                reservation_id = f"RSV-{uuid.uuid4().hex[:20]}"
                tx.insert_reservation({
                    "reservation_id": reservation_id, "run_id": run_id, "project_id": project_id, "purpose": purpose,
                    "period": period, "state": "reserved", "reserved_evaluations": requested.utility_evaluations,
                    "reserved_tokens": requested.tokens, "run_max_evaluations": run_max_evals,
                    "run_max_tokens": run_max_tokens, "created_at": iso_at(now),
                    "expires_at": now + (ttl_s or self.ttl_s),
                })
                warnings = self._warnings(meters)
                tx.append_audit(time=iso_at(now), kind="budget.reserved", **audit, payload={
                    "reservation_id": reservation_id, "purpose": purpose, "requested": _amounts_dict(requested),
                    "period": period, "warnings": warnings})
                for warning in warnings:
                    tx.append_audit(time=iso_at(now), kind="budget.alert.resource_constraint", **audit,
                                    payload={"reservation_id": reservation_id, "alert": warning})
                return Reservation(
                    reservation_id=reservation_id, warnings=warnings,
                    utilisation=max(m.fraction() for m in meters),
                    run_usage=self._run_usage(tx, run_id, now),
                    project_usage=self._project_usage(tx, project_id, period, ceilings, now),
                )
        raise refusal

    def _replay_reservation(self, tx: LedgerTransaction, row: dict, project_id: str, requested: Amounts,
                            now: float) -> Reservation:
        same = (row["project_id"], row["reserved_evaluations"], row["reserved_tokens"]) == (
            project_id, requested.utility_evaluations, requested.tokens)
        if not same:
            raise AlreadyExists(
                f"run {row['run_id']} already holds a {row['purpose']} reservation {row['reservation_id']} for other "
                "amounts or another project", reason="RESERVATION_CONFLICT")
        if row["state"] == "released":
            raise FailedPrecondition(f"reservation {row['reservation_id']} was released", reason="RESERVATION_RELEASED")
        ceilings = ProjectCeilings.for_project(self.policy, row["project_id"])
        return Reservation(
            reservation_id=row["reservation_id"], warnings=[], utilisation=0.0, replayed=True,
            run_usage=self._run_usage(tx, row["run_id"], now),
            project_usage=self._project_usage(tx, row["project_id"], row["period"], ceilings, now),
        )

    @staticmethod
    def _meters(run: Totals, project: Totals, requested: Amounts, run_max_evals: int, run_max_tokens: int,
                ceilings: ProjectCeilings, project_id: str, period: str) -> list[_Meter]:
        scope = f"project {project_id}"
        return [
            _Meter("run", "compute", "utility evaluations", "requested.utility_evaluations", "max_utility_evaluations",
                   run.evaluations, requested.utility_evaluations, run_max_evals),
            _Meter("run", "tokens", "tokens", "requested.tokens", "max_tokens_per_run",
                   run.tokens, requested.tokens, run_max_tokens),
            _Meter(scope, "compute", "utility evaluations", "requested.utility_evaluations",
                   f"project max_utility_evaluations per {ceilings.period} {period}",
                   project.evaluations, requested.utility_evaluations, ceilings.utility_evaluations),
            _Meter(scope, "tokens", "tokens", "requested.tokens", f"project max_tokens per {ceilings.period} {period}",
                   project.tokens, requested.tokens, ceilings.tokens),
            _Meter(scope, "cpu", "CPU seconds", "requested.cpu_seconds",
                   f"project max_cpu_seconds per {ceilings.period} {period}",
                   project.committed_cpu_seconds, 0.0, ceilings.cpu_seconds),
        ]

    @staticmethod
    def _refusal(meter: _Meter, run_id: str) -> ResourceExhausted:
        kind = "RUN" if meter.scope == "run" else "PROJECT"
        if meter.label == "cpu":
            message = (f"{meter.scope} CPU budget spent: {_fmt(meter.used)} of {_fmt(meter.ceiling)} CPU seconds "
                       f"({meter.ceiling_name}); run {run_id} refused before it starts")
        else:
            message = (f"{meter.scope} {meter.label} ceiling exceeded: {_fmt(meter.used)} already spent or held + "
                       f"{_fmt(meter.requested)} requested {meter.unit} > allowed {_fmt(meter.ceiling)} "
                       f"({meter.ceiling_name}) for run {run_id}")
        return ResourceExhausted(message, field=meter.field, reason=f"{kind}_{meter.label.upper()}_CEILING_EXCEEDED")

    def _warnings(self, meters: list[_Meter]) -> list[str]:
        out = []
        for m in meters:
            if m.ceiling > 0 and m.after > 0 and Fraction(m.after) >= self._warn_at * Fraction(m.ceiling):
                out.append(f"resource_constraint: {m.scope} {m.label} at {int(m.after * 100 // m.ceiling)}% of ceiling "
                           f"({_fmt(m.after)} of {_fmt(m.ceiling)} {m.unit})")
        return out

    # ------------------------------------------------------------------ settle
    def commit(self, reservation_id: str, actual: Amounts, *, actor: str = "", correlation_id: str = "") -> Settlement:
        actual.check("actual")
        now = self.clock()
        with self.store.transaction() as tx:
            row = self._locked_row(tx, reservation_id)
            ceilings = ProjectCeilings.for_project(self.policy, row["project_id"])
            if row["state"] == "committed":
                # A retried commit (the orchestrator re-running a stage after losing its database, say)
                # is the same work when the counted amounts match; CPU seconds are a measurement that
                # differs between attempts, so the first commit's figure stands.
                same = (row["actual_evaluations"], row["actual_tokens"]) == (actual.utility_evaluations, actual.tokens)
                if not same:
                    raise AlreadyExists(f"reservation {reservation_id} was committed with other amounts",
                                        reason="ALREADY_COMMITTED")
                return Settlement(self._run_usage(tx, row["run_id"], now),
                                  self._project_usage(tx, row["project_id"], row["period"], ceilings, now), replayed=True)
            if row["state"] == "released":
                raise FailedPrecondition(f"reservation {reservation_id} was released; nothing to commit",
                                         reason="RESERVATION_RELEASED")
            tx.settle(reservation_id, "committed", iso_at(now), evaluations=actual.utility_evaluations,
                      tokens=actual.tokens, cpu_seconds=actual.cpu_seconds)
            audit = self._audit_of(row, actor, correlation_id)
            reserved = Amounts(row["reserved_evaluations"], row["reserved_tokens"])
            tx.append_audit(time=iso_at(now), kind="budget.committed", **audit, payload={
                "reservation_id": reservation_id, "reserved": _amounts_dict(reserved), "actual": _amounts_dict(actual)})
            if actual.utility_evaluations > reserved.utility_evaluations or actual.tokens > reserved.tokens:
                tx.append_audit(time=iso_at(now), kind="budget.overrun", **audit, payload={
                    "reservation_id": reservation_id, "reserved": _amounts_dict(reserved), "actual": _amounts_dict(actual)})
            project_usage = self._project_usage(tx, row["project_id"], row["period"], ceilings, now)
            warnings = self._usage_warnings(project_usage, f"project {row['project_id']}")
            return Settlement(self._run_usage(tx, row["run_id"], now), project_usage, warnings)

    def release(self, reservation_id: str, *, reason: str = "", actor: str = "", correlation_id: str = "") -> Settlement:
        now = self.clock()
        with self.store.transaction() as tx:
            row = self._locked_row(tx, reservation_id)
            ceilings = ProjectCeilings.for_project(self.policy, row["project_id"])
            if row["state"] == "committed":
                raise FailedPrecondition(f"reservation {reservation_id} was committed; it cannot be released",
                                         reason="ALREADY_COMMITTED")
            replayed = row["state"] == "released"
            if not replayed:
                tx.settle(reservation_id, "released", iso_at(now))
                tx.append_audit(time=iso_at(now), kind="budget.released", **self._audit_of(row, actor, correlation_id),
                                payload={"reservation_id": reservation_id, "reason": reason})
            return Settlement(self._run_usage(tx, row["run_id"], now),
                              self._project_usage(tx, row["project_id"], row["period"], ceilings, now), replayed=replayed)

    @staticmethod
    def _locked_row(tx: LedgerTransaction, reservation_id: str) -> dict:
        """The reservation, held against another replica settling it, and its budget's locks."""
        if not reservation_id:
            raise InvalidArgument("reservation_id", "is required")
        row = tx.reservation(reservation_id, lock=True)
        if row is None:
            raise NotFound(f"reservation {reservation_id} not found", reason="RESERVATION_NOT_FOUND")
        tx.lock_budget(row["project_id"], row["period"], row["run_id"])
        return row

    @staticmethod
    def _audit_of(row: dict, actor: str, correlation_id: str) -> dict:
        return dict(actor=actor or "unknown", run_id=row["run_id"], project_id=row["project_id"],
                    correlation_id=correlation_id)

    def _usage_warnings(self, usage: Usage, scope: str) -> list[str]:
        out = []
        for name, unit in (("utility_evaluations", "utility evaluations"), ("tokens", "tokens"), ("cpu_seconds", "CPU seconds")):
            ceiling = getattr(usage.ceilings, name)
            used = getattr(usage.committed, name) + getattr(usage.reserved, name)
            if ceiling > 0 and used > 0 and Fraction(used) >= self._warn_at * Fraction(ceiling):
                out.append(f"resource_constraint: {scope} {unit} at {int(used * 100 // ceiling)}% of ceiling "
                           f"({_fmt(used)} of {_fmt(ceiling)} {unit})")
        return out

    # ------------------------------------------------------------------ usage
    def usage(self, *, run_id: str = "", project_id: str = "", period: str = "") -> tuple[Usage | None, Usage | None]:
        if not run_id and not project_id:
            raise InvalidArgument("run_id", "run_id or project_id is required")
        now = self.clock()
        with self.store.reading() as tx:
            run_usage = self._run_usage(tx, check_id("run_id", run_id), now) if run_id else None
            project_usage = None
            if project_id:
                ceilings = ProjectCeilings.for_project(self.policy, check_id("project_id", project_id))
                project_usage = self._project_usage(tx, project_id, period or ceilings.period_of(now), ceilings, now)
            return run_usage, project_usage

    def _run_usage(self, tx: LedgerTransaction, run_id: str, now: float) -> Usage:
        totals = tx.run_totals(run_id, now)
        max_evals, max_tokens = tx.run_ceilings(run_id) or (self.defaults.max_utility_evaluations,
                                                            self.defaults.max_tokens_per_run)
        return _usage(f"run:{run_id}", totals, Amounts(max_evals, max_tokens, 0.0))

    @staticmethod
    def _project_usage(tx: LedgerTransaction, project_id: str, period: str, ceilings: ProjectCeilings,
                       now: float) -> Usage:
        totals = tx.project_totals(project_id, period, now)
        return _usage(f"project:{project_id}:{period}", totals,
                      Amounts(ceilings.utility_evaluations, ceilings.tokens, ceilings.cpu_seconds))

    # ------------------------------------------------------------------ audit
    def record(self, *, kind: str, actor: str, run_id: str = "", project_id: str = "", correlation_id: str = "",
               payload: dict | None = None, at: float | None = None) -> int:
        if not kind:
            raise InvalidArgument("event.kind", "is required")
        with self.store.transaction() as tx:
            return tx.append_audit(time=iso_at(self.clock() if at is None else at), kind=kind, actor=actor or "unknown",
                                   run_id=run_id, project_id=project_id, correlation_id=correlation_id,
                                   payload=payload or {})

    def events(self, *, run_id: str = "", project_id: str = "", kind_prefix: str = "", after: int = 0,
               limit: int = 100) -> list[AuditRow]:
        if not run_id and not project_id and not kind_prefix:
            raise InvalidArgument("run_id", "run_id, project_id or kind_prefix is required")
        return self.store.audit_events(run_id=run_id, project_id=project_id, kind_prefix=kind_prefix, after=after,
                                       limit=limit)


def _usage(scope: str, totals: Totals, ceilings: Amounts) -> Usage:
    return Usage(
        scope=scope,
        committed=Amounts(totals.committed_evaluations, totals.committed_tokens, totals.committed_cpu_seconds),
        reserved=Amounts(totals.reserved_evaluations, totals.reserved_tokens, 0.0),
        ceilings=ceilings,
    )


def _amounts_dict(amounts: Amounts) -> dict:
    return {"utility_evaluations": amounts.utility_evaluations, "tokens": amounts.tokens,
            "cpu_seconds": amounts.cpu_seconds}
