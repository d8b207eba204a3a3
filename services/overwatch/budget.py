"""Per-run ceilings: refuse a run over budget before any work starts, warn as it nears one.

The spec's token monitor: compute (utility evaluations) and model tokens each have a ceiling per run,
taken from the run's configuration or, when it gives 0, from the service's defaults. A request at
or under every ceiling passes; utilisation is the largest fraction of any ceiling it would use; at
`warn_fraction` (80 % by default) or more it carries the guide's `resource_constraint` alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from smvm.config import Settings
from smvm.errors import InvalidArgument, ResourceExhausted
from smvm.v1 import overwatch_service_pb2 as pb

from services.overwatch.policy import OverwatchPolicy, load_policy


@dataclass(frozen=True)
class BudgetDefaults:
    """Ceilings used when a request leaves them at 0, and where the warning starts."""

    max_utility_evaluations: int
    max_tokens_per_run: int
    warn_fraction: float = 0.8

    @classmethod
    def from_settings(cls, settings: Settings, policy: OverwatchPolicy | None = None) -> "BudgetDefaults":
        policy = policy or load_policy()
        return cls(
            max_utility_evaluations=int(settings.max_utility_evaluations),
            max_tokens_per_run=int(policy.num("budget.default_max_tokens_per_run")),
            warn_fraction=policy.num("budget.warn_fraction"),
        )


@dataclass(frozen=True)
class _Meter:
    label: str  # how the warning and the error name the resource
    unit: str
    requested_field: str
    ceiling_field: str
    requested: int
    ceiling: int


def _non_negative(request: pb.CheckBudgetRequest, name: str) -> int:
    value = int(getattr(request, name))
    if value < 0:
        raise InvalidArgument(name, f"must not be negative, got {value}")
    return value


def _percent(requested: int, ceiling: int) -> int:
    """Whole percent of the ceiling used, rounded down, in exact integer arithmetic."""
    return requested * 100 // ceiling


def check_budget(request: pb.CheckBudgetRequest, defaults: BudgetDefaults) -> pb.CheckBudgetResponse:
    """The effective ceilings, utilisation and warnings; ResourceExhausted when a ceiling is exceeded."""
    if defaults.max_utility_evaluations <= 0 or defaults.max_tokens_per_run <= 0:
        raise ValueError(f"service default ceilings must be positive, got {defaults}")
    requested_evals = _non_negative(request, "requested_utility_evaluations")
    requested_tokens = _non_negative(request, "requested_tokens")
    max_evals = _non_negative(request, "max_utility_evaluations") or defaults.max_utility_evaluations
    max_tokens = _non_negative(request, "max_tokens_per_run") or defaults.max_tokens_per_run
    meters = (
        _Meter("compute", "utility evaluations", "requested_utility_evaluations", "max_utility_evaluations",
               requested_evals, max_evals),
        _Meter("tokens", "tokens", "requested_tokens", "max_tokens_per_run", requested_tokens, max_tokens),
    )
    for meter in meters:
        if meter.requested > meter.ceiling:
            raise ResourceExhausted(
                f"{meter.label} ceiling exceeded: requested {meter.requested} {meter.unit} > allowed "
                f"{meter.ceiling} ({meter.ceiling_field}) for run {request.run_id or '?'}",
                field=meter.requested_field,
                reason=f"{meter.ceiling_field.upper()}_EXCEEDED",
            )
    warn_at = Fraction(str(defaults.warn_fraction))  # exact, so 80 of 100 warns at 0.8
    warnings = [
        f"resource_constraint: {meter.label} at {_percent(meter.requested, meter.ceiling)}% of ceiling "
        f"({meter.requested} of {meter.ceiling} {meter.unit})"
        for meter in meters
        if meter.requested > 0 and meter.requested >= warn_at * meter.ceiling
    ]
    return pb.CheckBudgetResponse(
        utilisation=max(meter.requested / meter.ceiling for meter in meters),
        warnings=warnings,
        max_utility_evaluations=max_evals,
        max_tokens_per_run=max_tokens,
    )
