"""The overwatch policy: budget and review thresholds as versioned data.

`load_policy()` reads `policy.yaml` next to this module; `load_policy({"review": {...}})` deep-merges
overrides onto it; `load_policy(path)` reads another file. The version is the file's `version` plus
a hash of the merged content, so every review names exactly the thresholds that produced it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from smvm.errors import InvalidArgument
from smvm.merge import deep_merge

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent / "policy.yaml"

# (dotted path, lower bound, upper bound) of every number the rules read; checked on load.
_BOUNDS: tuple[tuple[str, float, float], ...] = (
    ("budget.default_max_tokens_per_run", 1, math.inf),
    ("budget.warn_fraction", 0.0, 1.0),
    ("budget.reservation_ttl_s", 1, math.inf),
    ("budget.project.max_utility_evaluations", 0, math.inf),
    ("budget.project.max_tokens", 0, math.inf),
    ("budget.project.max_cpu_seconds", 0, math.inf),
    ("review.bias.default_segment_cap", 0.0, 1.0),
    ("review.bias.optimism_tolerance", 0.0, math.inf),
    ("review.bias.max_optimistic_weight", 0.0, 1.0),
    ("review.decision.go_min_composite", 0.0, 100.0),
    ("review.decision.composite_tolerance", 0.0, 100.0),
    ("review.decision.min_probability_npv_positive", 0.0, 1.0),
    ("review.decision.min_final_customers_p50", 0.0, math.inf),
    ("review.evidence.min_confidence", 0.0, 1.0),
    ("review.evidence.min_personas", 0, math.inf),
    ("review.evidence.min_competitors", 0, math.inf),
    ("review.evidence.max_neutral_weight", 0.0, 1.0),
    ("review.simulation.veto_min_iterations", 0, math.inf),
    ("review.simulation.min_iterations", 0, math.inf),
    ("review.simulation.max_relative_spread", 0.0, math.inf),
)


@dataclass(frozen=True)
class OverwatchPolicy:
    data: dict[str, Any]
    version: str

    def get(self, dotted: str) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(dotted)
            node = node[part]
        return node

    def num(self, dotted: str) -> float:
        return float(self.get(dotted))


def _validate(policy: OverwatchPolicy) -> None:
    for dotted, low, high in _BOUNDS:
        try:
            value = policy.num(dotted)
        except (KeyError, TypeError, ValueError):
            raise InvalidArgument(f"policy.{dotted}", "is required and must be a number") from None
        if not (low <= value <= high) or math.isnan(value):
            raise InvalidArgument(f"policy.{dotted}", f"must be in [{low}, {high}], got {value}")
    if policy.num("review.simulation.veto_min_iterations") > policy.num("review.simulation.min_iterations"):
        raise InvalidArgument("policy.review.simulation", "veto_min_iterations must not exceed min_iterations")
    if policy.get("budget.project.period") not in ("month", "day"):
        raise InvalidArgument("policy.budget.project.period", "must be month or day")
    if not isinstance(policy.get("budget.projects"), Mapping):
        raise InvalidArgument("policy.budget.projects", "must be a mapping of project_id to ceilings")
    for dotted in ("review.veto_recommendations", "review.bias.severe_controls", "review.evidence.data_quality_warnings"):
        value = policy.get(dotted)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f"policy.{dotted}", "must be a list of strings")


def _version(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return f"{data.get('version', '0')}+{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


@functools.lru_cache(maxsize=4)
def _read(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def load_policy(source: Mapping | str | Path | None = None) -> OverwatchPolicy:
    """The default policy, the default with `source` (a mapping) merged on, or the file at `source`."""
    if source is None or isinstance(source, Mapping):
        data = deep_merge(_read(str(DEFAULT_POLICY_PATH)), source or {})
    else:
        data = copy.deepcopy(_read(str(Path(source))))
    policy = OverwatchPolicy(data=data, version=_version(data))
    _validate(policy)
    return policy
