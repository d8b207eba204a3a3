"""The adapter plugin interface, and the typed, PII-masking cell reader every adapter parses rows with.

An adapter is a module that exposes `ADAPTER`, an object with:
- `kind`: the grounding kind it imports (the ImportGrounding `kind`);
- `required` / `optional`: the canonical columns it reads, `aliases` (other spellings), and
  `expected`: the informative columns data-quality coverage is measured on;
- `min_rows`: accepted rows below which the import raises quality_warning;
- `parse(cells)`: one row -> one message, or RowError naming the column and the rule;
- `duplicate_key(item)`: rows with the same key are duplicates (the first is kept);
- `outlier_values(item)`: column -> positive value, judged by the stated outlier rule (quality.py);
- `attach(items, grounding)`: add the accepted rows to a GroundingData;
- `file_warnings(items)`: observations about the file as a whole (e.g. shares summing above 1).
Adding a kind is adding a module and one line to adapters/__init__.py.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping, Protocol, Sequence

from google.protobuf.message import Message

from smvm.errors import InvalidArgument
from smvm.v1 import grounding_pb2

from services.ingestion import fx, pii, validate

TEXT_MAX = 1_000
LIST_SEPARATORS = (";", "|")
_THOUSANDS = re.compile(r"-?\d{1,3}(,\d{3})+(\.\d+)?")
# A comma followed by anything but exactly three digits is a decimal comma ("12,5", "0,25").
_DECIMAL_COMMA = re.compile(r"-?\d+,(\d{1,2}|\d{4,})")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


class RowError(Exception):
    """A row refused: which column, and the rule it broke (never the value: it may be personal data)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class Adapter(Protocol):
    kind: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    expected: tuple[str, ...]
    aliases: Mapping[str, str]
    min_rows: int

    def parse(self, cells: "Cells") -> Message: ...

    def duplicate_key(self, item: Message) -> Hashable | None: ...

    def outlier_values(self, item: Message) -> Mapping[str, float]: ...

    def attach(self, items: Sequence[Message], grounding: grounding_pb2.GroundingData) -> None: ...

    def file_warnings(self, items: Sequence[Message]) -> list[str]: ...


def canonical_columns(adapter: Adapter, record: Mapping[str, Any]) -> dict[str, Any]:
    """The record under canonical column names (aliases folded; the first spelling present wins)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = adapter.aliases.get(key, key)
        if name not in out or _blank(out[name]):
            out[name] = value
    return out


def missing_columns(adapter: Adapter, records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Required columns that no record carries at all (a file-level error, not a row-level one)."""
    seen: set[str] = set()
    for record in records:
        seen.update(k for k in record)
    return [c for c in adapter.required if c not in seen]


@functools.lru_cache(maxsize=4096)
def _mask(text: str) -> pii.MaskResult:
    """pii.mask, remembered: survey and list columns repeat the same values (segments, currencies)."""
    return pii.mask(text)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


@dataclass
class Cells:
    """One row's values, read by type; remembers which expected columns were present (coverage) and
    how many values had personal data masked."""

    values: Mapping[str, Any]
    row: int
    present: set[str] = field(default_factory=set)
    pii_masked: int = 0

    def has(self, name: str) -> bool:
        return not _blank(self.values.get(name))

    def _raw(self, name: str, required: bool) -> Any:
        value = self.values.get(name)
        if _blank(value):
            if required:
                raise RowError(name, "is required")
            return None
        self.present.add(name)
        return value

    def number(self, name: str, *, low: float = 0.0, high: float = 1e14, required: bool = False,
               low_open: bool = False, percent_ok: bool = False) -> float | None:
        """A finite number in [low, high]; "12%" means 0.12 when percent_ok."""
        value = self._raw(name, required)
        if value is None:
            return None
        if isinstance(value, bool):
            raise RowError(name, "must be a number")
        scale = 1.0
        if isinstance(value, str):
            text = value.strip()
            if percent_ok and text.endswith("%"):
                text, scale = text[:-1].strip(), 0.01
            text = text.lstrip("$€£").strip()
            if _THOUSANDS.fullmatch(text):
                text = text.replace(",", "")
            elif _DECIMAL_COMMA.fullmatch(text):
                text = text.replace(",", ".")
            try:
                value = float(text)
            except ValueError:
                raise RowError(name, "must be a number") from None
        if not isinstance(value, (int, float)):
            raise RowError(name, "must be a number")
        number = float(value) * scale
        if not math.isfinite(number):
            raise RowError(name, "must be a finite number")
        if number < low or (low_open and number == low):
            raise RowError(name, f"must be {'greater than' if low_open else 'at least'} {low:g}")
        if number > high:
            raise RowError(name, f"must be at most {high:g}")
        return number

    def integer(self, name: str, *, low: int, high: int, required: bool = False) -> int | None:
        number = self.number(name, low=low, high=high, required=required)
        if number is None:
            return None
        if number != int(number):
            raise RowError(name, "must be a whole number")
        return int(number)

    def text(self, name: str, *, required: bool = False, max_len: int = TEXT_MAX) -> str:
        """Cleaned one-line text with personal data masked."""
        value = self._raw(name, required)
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RowError(name, "must be text")
        cleaned = validate.clean_line(str(value))
        if not cleaned:
            if required:
                raise RowError(name, "is required")
            return ""
        if len(cleaned) > max_len:
            raise RowError(name, f"must be at most {max_len} characters")
        masked = _mask(cleaned)
        if masked.counts:
            self.pii_masked += 1
        return masked.text

    def identifier(self, name: str) -> str:
        """A respondent id; one that holds personal data (an e-mail, a phone) is pseudonymised."""
        value = self._raw(name, False)
        if value is None:
            return ""
        cleaned = validate.clean_line(str(value))[:TEXT_MAX]
        if pii.detect(cleaned):
            self.pii_masked += 1
            return "anon-" + hashlib.sha256(cleaned.encode()).hexdigest()[:16]
        return cleaned

    def flag(self, name: str) -> bool | None:
        value = self._raw(name, False)
        if value is None:
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise RowError(name, "must be true or false")

    def text_list(self, name: str, *, max_items: int = validate.FEATURES_MAX_COUNT,
                  max_len: int = validate.FEATURE_MAX) -> list[str]:
        """A list (JSON array, or text separated by ';' or '|'), masked, case-insensitive duplicates dropped."""
        value = self._raw(name, False)
        if value is None:
            return []
        if isinstance(value, str):
            sep = next((s for s in LIST_SEPARATORS if s in value), None)
            items: list[Any] = value.split(sep) if sep else [value]
        elif isinstance(value, list):
            items = value
        else:
            raise RowError(name, "must be a list or text separated by ';'")
        out: list[str] = []
        seen: set[str] = set()
        for item in items:
            if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                raise RowError(name, "must list text items")
            cleaned = validate.clean_line(str(item))
            if not cleaned:
                continue
            if len(cleaned) > max_len:
                raise RowError(name, f"items must be at most {max_len} characters")
            masked = _mask(cleaned)
            if masked.counts:
                self.pii_masked += 1
            if masked.text.casefold() not in seen:
                seen.add(masked.text.casefold())
                out.append(masked.text)
        if len(out) > max_items:
            raise RowError(name, f"must list at most {max_items} items")
        return out

    def currency(self, name: str = "currency", table: fx.FxTable | None = None) -> str:
        code = self.text(name, max_len=8).upper() or "USD"
        table = table or fx.load_fx_table()
        if code not in table.units_per_usd:
            raise RowError(name, "unknown currency (not in the dated rates table)")
        return code

    def period(self, name: str = "billing_period") -> str:
        raw = self.text(name, max_len=32)
        if not raw:
            return "monthly"
        period = fx.canonical_period(raw)
        if period is None:
            raise RowError(name, f"must be one of {', '.join(fx.BILLING_PERIODS)}")
        return period


def to_monthly_usd(cells: Cells, amount: float, field_name: str, currency: str, period: str,
                   amortisation_months: int = 0) -> float:
    """A price in the row's currency and billing period as USD per month (fx.py's one rule)."""
    months = amortisation_months or fx.DEFAULT_AMORTISATION_MONTHS
    try:
        return fx.monthly_usd(amount, currency, period, months, field=field_name)
    except InvalidArgument as exc:  # only an unknown currency can get here, already checked
        raise RowError(field_name, exc.message) from None
