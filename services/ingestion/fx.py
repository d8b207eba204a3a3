"""Price normalisation: any supported currency and billing period -> a monthly price in USD.

Rates come from the dated table data/fx_rates.yaml (units of a currency per 1 USD, one fixing
date), so a run's prices are reproducible and say which day's rates they used. A currency that is
not in the table is refused (InvalidArgument naming the field), never guessed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from smvm.errors import InvalidArgument

FX_TABLE_PATH = Path(__file__).resolve().parents[2] / "data" / "fx_rates.yaml"

# Months one billing period covers. weekly: 52 weeks / 12 months.
MONTHS_PER_PERIOD: dict[str, float] = {
    "weekly": 12.0 / 52.0,
    "monthly": 1.0,
    "quarterly": 3.0,
    "annual": 12.0,
}
BILLING_PERIODS = ("weekly", "monthly", "quarterly", "annual", "one_time")
# Spellings founders use for the same periods.
PERIOD_ALIASES: dict[str, str] = {
    "week": "weekly", "per_week": "weekly",
    "month": "monthly", "per_month": "monthly", "mo": "monthly",
    "quarter": "quarterly", "per_quarter": "quarterly",
    "year": "annual", "yearly": "annual", "annually": "annual", "per_year": "annual", "yr": "annual",
    "onetime": "one_time", "one_off": "one_time", "once": "one_time", "lifetime": "one_time",
}
DEFAULT_AMORTISATION_MONTHS = 24
MAX_AMORTISATION_MONTHS = 120
# Monthly decimals kept: sub-cent, so rounding never moves a price by a visible amount.
MONTHLY_DECIMALS = 4


@dataclass(frozen=True)
class FxTable:
    as_of: str
    source: str
    units_per_usd: dict[str, float]

    def rate(self, currency: str, field: str) -> float:
        """Units of `currency` per USD; unknown codes are an InvalidArgument on `field`."""
        try:
            return self.units_per_usd[currency]
        except KeyError:
            raise InvalidArgument(
                field, f"unknown currency; supported: {', '.join(sorted(self.units_per_usd))}",
                reason="UNKNOWN_CURRENCY",
            ) from None

    def to_usd(self, amount: float, currency: str, field: str) -> float:
        return amount / self.rate(currency, field)


@functools.lru_cache(maxsize=4)
def load_fx_table(path: Path = FX_TABLE_PATH) -> FxTable:
    """Read and check the table once per process; a broken table fails loudly, not per request."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or raw.get("base") != "USD":
        raise ValueError(f"{path}: expected a mapping with base: USD")
    rates = {str(code).upper(): float(value) for code, value in (raw.get("units_per_usd") or {}).items()}
    bad = [code for code, value in rates.items() if not (math.isfinite(value) and value > 0)]
    if bad or rates.get("USD") != 1.0:
        raise ValueError(f"{path}: rates must be positive and USD must be 1.0 (bad: {bad})")
    return FxTable(as_of=str(raw.get("as_of", "")), source=str(raw.get("source", "")), units_per_usd=rates)


def canonical_period(value: str) -> str | None:
    """'Yearly ' -> 'annual'; None when the spelling is unknown."""
    key = value.strip().lower().replace("-", "_").replace(" ", "_")
    key = PERIOD_ALIASES.get(key, key)
    return key if key in BILLING_PERIODS else None


def months_covered(billing_period: str, amortisation_months: int) -> float:
    """How many months one payment pays for (one_time: the amortisation life)."""
    if billing_period == "one_time":
        return float(amortisation_months)
    return MONTHS_PER_PERIOD[billing_period]


def monthly_usd(amount: float, currency: str, billing_period: str, amortisation_months: int,
                *, field: str, table: FxTable | None = None) -> float:
    """A checked price converted to USD per month (amount / months covered / units per USD)."""
    table = table or load_fx_table()
    usd = table.to_usd(amount, currency, f"{field}.currency")
    return round(usd / months_covered(billing_period, amortisation_months), MONTHLY_DECIMALS)
