"""Retention rules per data class of the memory graph (services/memory/retention.yaml)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from smvm.errors import InvalidArgument

DATA_CLASSES = ("project", "idea", "persona", "competitor", "decision")
RULES_FILE = Path(__file__).with_name("retention.yaml")


@dataclasses.dataclass(frozen=True)
class RetentionRules:
    days: dict[str, int]  # data class -> days kept after last seen (0 = for ever)

    @classmethod
    def load(cls, path: Path = RULES_FILE) -> "RetentionRules":
        raw = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: dict) -> "RetentionRules":
        unknown = set(raw) - set(DATA_CLASSES)
        if unknown:
            raise InvalidArgument(sorted(unknown)[0], f"unknown data class; expected one of {DATA_CLASSES}")
        days = {}
        for data_class in DATA_CLASSES:
            value = raw.get(data_class, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(data_class, "retention must be a whole number of days >= 0")
            days[data_class] = value
        return cls(days)
