"""List price -> monthly USD, with the derivation written down so a reader can redo it by hand.

Rules (the same for competitors and for our own offering, so prices are comparable):

- Billing periods: weekly x 52/12, monthly, quarterly / 3, annual / 12 (services.ingestion.fx holds
  the period table and the aliases, so ingestion and this stage cannot disagree).
- One-off licences are amortised over `amortisation_months`; when none is stated, over
  DEFAULT_AMORTISATION_MONTHS (24: a typical major-version life of desktop software and the
  horizon buyers compare a licence against a subscription on). At most MAX_AMORTISATION_MONTHS.
- Per-seat prices are multiplied by `seats` (the account-level price a buyer actually pays).
- Free tiers are recorded, not priced in: monthly_price_usd is the paid plan's price, or 0 when the
  offering is free only.
- Currencies are converted with the dated table data/fx_rates.yaml (amount / units per USD); the
  table date goes into the terms. Unknown currencies are refused, never guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from smvm.errors import InvalidArgument
from smvm.v1 import idea_pb2, market_pb2

from services.ingestion.fx import (
    DEFAULT_AMORTISATION_MONTHS,
    MAX_AMORTISATION_MONTHS,
    MONTHS_PER_PERIOD,
    FxTable,
    canonical_period,
    load_fx_table,
)

MONTHLY_DECIMALS = 4
MAX_SEATS = 100_000
# Anything above this per month is a typo (or a unit mix-up), not a price.
MAX_MONTHLY_USD = 10_000_000.0


@dataclass(frozen=True)
class NormalisedPrice:
    """A list price, its monthly USD equivalent and how one became the other."""

    list_price: idea_pb2.Price
    monthly_price_usd: float
    per_seat: bool
    seats: int
    free_tier: bool
    normalisation: str
    fx_rates_as_of: str

    def terms(self) -> market_pb2.PricingTerms:
        return market_pb2.PricingTerms(
            per_seat=self.per_seat,
            seats=self.seats,
            free_tier=self.free_tier,
            normalisation=self.normalisation,
            fx_rates_as_of=self.fx_rates_as_of,
        )


def _fmt(x: float) -> str:
    """Short, stable number text for derivations ("240", "8.25", "0.960523")."""
    return f"{x:.6g}" if abs(x) < 1e6 else f"{x:.0f}"


def normalise_price(
    amount: float,
    currency: str = "USD",
    billing_period: str = "monthly",
    *,
    amortisation_months: int = 0,
    per_seat: bool = False,
    seats: int = 1,
    free_tier: bool = False,
    field: str = "price",
    table: FxTable | None = None,
) -> NormalisedPrice:
    """Normalise one list price; bad values raise InvalidArgument on `field`.<part>."""
    table = table or load_fx_table()
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
        raise InvalidArgument(f"{field}.amount", f"must be a finite number >= 0, got {amount!r}")
    code = (currency or "USD").strip().upper()
    rate = table.rate(code, f"{field}.currency")
    period = canonical_period(billing_period or "monthly")
    if period is None:
        raise InvalidArgument(
            f"{field}.billing_period",
            f"unknown billing period {billing_period!r}; supported: weekly, monthly, quarterly, annual, one_time",
        )
    if amortisation_months < 0 or amortisation_months > MAX_AMORTISATION_MONTHS:
        raise InvalidArgument(
            f"{field}.amortisation_months", f"must be in 0..{MAX_AMORTISATION_MONTHS} (0 = default), got {amortisation_months}"
        )
    if per_seat and not 1 <= seats <= MAX_SEATS:
        raise InvalidArgument(f"{field}.seats", f"must be in 1..{MAX_SEATS} for a per-seat price, got {seats}")

    steps = [f"{_fmt(amount)} {code} {period}"]
    if period == "one_time":
        months = float(amortisation_months or DEFAULT_AMORTISATION_MONTHS)
        why = "stated" if amortisation_months else "default"
        per_month = amount / months
        steps.append(f"amortised over {months:.0f} months ({why} life) -> {_fmt(per_month)} {code}")
    else:
        months = MONTHS_PER_PERIOD[period]
        per_month = amount / months
        if period == "weekly":
            steps.append(f"x 52/12 -> {_fmt(per_month)} {code}")
        elif period != "monthly":
            steps.append(f"/ {months:.0f} -> {_fmt(per_month)} {code}")
    if per_seat:
        per_month *= seats
        steps.append(f"x {seats} seats -> {_fmt(per_month)} {code}")
    else:
        seats = 1
    as_of = ""
    if code != "USD":
        as_of = table.as_of
        per_month /= rate
        steps.append(f"/ {_fmt(rate)} {code} per USD ({as_of}) -> {_fmt(per_month)} USD")
    monthly = round(per_month, MONTHLY_DECIMALS)
    if monthly > MAX_MONTHLY_USD:
        raise InvalidArgument(f"{field}.amount", f"normalises to {monthly:.0f} USD/month, above {MAX_MONTHLY_USD:.0f}")
    free = bool(free_tier) or amount == 0
    if amount == 0:
        steps.append("free only -> 0 USD/month")
    elif free:
        steps.append("free tier exists; price is the paid plan")
    text = "; ".join(steps) + f" => {monthly:.4f} USD/month"
    list_price = idea_pb2.Price(
        amount=float(amount), currency=code, billing_period=period, amortisation_months=int(amortisation_months)
    )
    return NormalisedPrice(list_price, monthly, bool(per_seat), int(seats), free, text, as_of)


def normalise_idea_price(price: idea_pb2.Price, *, field: str = "idea.price", table: FxTable | None = None) -> NormalisedPrice:
    """Our own proposed price (a Price message; flat, no seats)."""
    return normalise_price(
        float(price.amount),
        price.currency,
        price.billing_period,
        amortisation_months=int(price.amortisation_months),
        field=field,
        table=table,
    )
