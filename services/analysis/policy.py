"""The decision policy: weights, thresholds and cost defaults as versioned data.

`load_policy()` reads `policy/decision_policy.yaml`; `load_policy({"bands": {"go": 80}})` deep-merges
overrides onto it; `load_policy(path)` reads another file. The result's `version` is the file's
`version` plus a hash of the merged content, so a decision always names exactly what produced it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from smvm.errors import InvalidArgument
from smvm.merge import deep_merge

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent / "policy" / "decision_policy.yaml"

# Competitor provenances (Competitor.provenance) the gate's counted_provenances may name.
PROVENANCES = ("imported", "learned", "synthetic")

DIMENSIONS = (
    "market_opportunity",
    "wtp_validation",
    "competitive_position",
    "technical_feasibility",
    "financial_viability",
    "risk",
    "team_capability",
)


@dataclass(frozen=True)
class Policy:
    data: dict[str, Any]
    version: str = field(default="")

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def num(self, dotted: str, default: float | None = None) -> float:
        value = self.get(dotted, default)
        if value is None:
            raise KeyError(dotted)
        return float(value)

    @property
    def weights(self) -> dict[str, float]:
        return {name: float(self.data["weights"][name]) for name in DIMENSIONS}

    @property
    def go_threshold(self) -> float:
        return float(self.data["bands"]["go"])

    @property
    def pivot_threshold(self) -> float:
        return float(self.data["bands"]["pivot"])

    def domain_costs(self, domain: str) -> tuple[str, dict[str, float]]:
        """(canonical domain, its cost defaults); unknown domains get `general`."""
        finance = self.data["finance"]
        key = (domain or "").strip().lower().replace("_", " ")
        aliases = {str(k).lower(): v for k, v in (finance.get("aliases") or {}).items()}
        domains = finance["domains"]
        if key.replace(" ", "_") in domains:
            canonical = key.replace(" ", "_")
        elif key in aliases:
            canonical = aliases[key]
        else:
            canonical = "general"
        return canonical, {k: float(v) for k, v in domains[canonical].items()}


def _validate(data: dict) -> None:
    weights = data.get("weights") or {}
    missing = [name for name in DIMENSIONS if name not in weights]
    if missing:
        raise InvalidArgument("policy.weights", f"missing dimensions: {', '.join(missing)}")
    values = [float(weights[name]) for name in DIMENSIONS]
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise InvalidArgument("policy.weights", "weights must be finite and non-negative")
    if abs(sum(values) - 1.0) > 1e-9:
        raise InvalidArgument("policy.weights", f"weights sum to {sum(values):.6f}, not 1")
    go, pivot = float(data["bands"]["go"]), float(data["bands"]["pivot"])
    if not (0.0 <= pivot <= go <= 100.0):
        raise InvalidArgument("policy.bands", "need 0 <= pivot <= go <= 100")
    counted = (data.get("gate") or {}).get("counted_provenances")
    if not isinstance(counted, list) or not counted or any(p not in PROVENANCES for p in counted):
        raise InvalidArgument("policy.gate.counted_provenances", f"must list one or more of {', '.join(PROVENANCES)}")
    if not isinstance((data.get("pivots") or {}).get("require_npv_not_lower"), bool):
        raise InvalidArgument("policy.pivots.require_npv_not_lower", "must be true or false")
    if "general" not in (data.get("finance", {}).get("domains") or {}):
        raise InvalidArgument("policy.finance.domains", "a `general` domain is required")


def _version(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    return f"{data.get('version', '0')}+{digest}"


_DEFAULT_CACHE: dict[str, Any] = {}


def _default_data() -> dict:
    if "data" not in _DEFAULT_CACHE:
        _DEFAULT_CACHE["data"] = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    return copy.deepcopy(_DEFAULT_CACHE["data"])


def load_policy(source: Policy | Mapping | str | Path | None = None) -> Policy:
    """The default policy, or it overridden by a mapping, or another YAML file."""
    if isinstance(source, Policy):
        return source
    if source is None:
        data = _default_data()
    elif isinstance(source, Mapping):
        data = deep_merge(_default_data(), source)
    else:
        data = yaml.safe_load(Path(source).read_text())
    _validate(data)
    return Policy(data=data, version=_version(data))
