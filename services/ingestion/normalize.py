"""Both submission shapes of the integration guide -> one canonical, validated, PII-masked Idea.

`business_idea` (the code-spec shape) and `idea` (the T0 shape) carry overlapping facts under
different names; every later stage reads only the canonical Idea. Steps, in order:
1. per-field checks and canonical text (validate.py), errors naming the field in the request's shape;
2. market size in USD/year: TAM >= SAM >= SOM >= 0, missing lower figures derived by stated shares;
3. price to USD per month at the dated rate table (fx.py), the original kept in a warning;
4. PII masked in every free-text field (pii.py), findings by field and kind, never the value;
5. grounding references resolved into Idea.grounding from the import store (import_store.py): an
   unknown id is InvalidArgument naming `<shape>.grounding_refs[i]`; an import with poor quality
   adds a `grounding:quality_warning` warning and lowers grounding.confidence_factor.
Deterministic: no clock, no randomness, fixed field and finding order.
"""

from __future__ import annotations

import re

from smvm.errors import InvalidArgument
from smvm.v1 import idea_pb2, ingestion_service_pb2

from services.ingestion import fx, pii, validate
from services.ingestion.import_store import ImportStore

# Shares used to derive a missing figure from the next larger one; rules of thumb, labelled as such
# in MarketSize.source and the warnings so nobody mistakes them for data.
SAM_SHARE_OF_TAM = 0.10
SOM_SHARE_OF_SAM = 0.05
# A monthly price above this is a typo (cents as dollars, wrong currency), not a plan.
MAX_MONTHLY_USD = 1_000_000.0
DERIVED_TITLE_MAX = 80

# Canonical Idea fields holding free text that may carry personal data, in masking order.
FREE_TEXT_FIELDS = (
    "title", "description", "domain", "target_market", "value_proposition", "target_customers",
    "competitive_advantage", "submitter",
)


def normalize_idea(request: ingestion_service_pb2.NormalizeIdeaRequest, store: ImportStore | None = None) -> idea_pb2.Idea:
    """The canonical Idea for either request shape, or InvalidArgument naming the offending field.

    `store` resolves grounding references; without one, any reference is refused (nothing to resolve against).
    """
    shape = request.WhichOneof("shape")
    if shape == "business_idea":
        idea = _from_business_idea(request.business_idea, "business_idea")
    elif shape == "idea":
        idea = _from_submission(request.idea, "idea")
    else:
        raise InvalidArgument("business_idea", "exactly one of `idea` or `business_idea` is required",
                              reason="REQUIRED")
    idea.source_shape = shape
    _mask_pii(idea)
    _grounding(idea, getattr(request, shape).grounding_refs, f"{shape}.grounding_refs", store)
    return idea


def _grounding(idea: idea_pb2.Idea, refs, field: str, store: ImportStore | None) -> None:
    """Resolve the referenced imports into idea.grounding (rows are stored PII-masked already)."""
    if not refs:
        return
    if store is None:
        raise InvalidArgument(f"{field}[0]", "names no stored import (no import store is configured)",
                              reason="UNKNOWN_IMPORT")
    grounding = store.resolve(list(refs), field)
    idea.grounding.CopyFrom(grounding)
    idea.grounding_refs.extend(grounding.import_ids)
    for report in grounding.quality:
        if report.quality_warning:
            reasons = [w for w in report.warnings if w.startswith("quality:")]
            idea.warnings.append(
                f"grounding:quality_warning: import {report.import_id[:12]} ({report.kind}) has poor data quality "
                f"({'; '.join(reasons)}); downstream confidence x{grounding.confidence_factor:g}")


def _from_business_idea(msg: idea_pb2.BusinessIdea, prefix: str) -> idea_pb2.Idea:
    idea = idea_pb2.Idea()
    idea.title = validate.text(f"{prefix}.title", msg.title, max_len=validate.TITLE_MAX, required=True)
    _common(idea, msg, prefix)
    idea.target_market = validate.text(f"{prefix}.target_market", msg.target_market, max_len=validate.SHORT_TEXT_MAX)
    idea.value_proposition = validate.text(
        f"{prefix}.value_proposition", msg.value_proposition, max_len=validate.SHORT_TEXT_MAX)
    # 0 counts as "not given": proto3 JSON clients send it for an empty figure, and no plan has a market of 0.
    given = {
        name: validate.market_figure(f"{prefix}.{name}", getattr(msg, name)) or None if msg.HasField(name) else None
        for name in ("estimated_tam", "estimated_sam", "estimated_som")
    }
    validate.market_consistency(prefix, given["estimated_tam"], given["estimated_sam"], given["estimated_som"])
    _market_size(idea, given["estimated_tam"], given["estimated_sam"], given["estimated_som"])
    return idea


def _from_submission(msg: idea_pb2.IdeaSubmission, prefix: str) -> idea_pb2.Idea:
    idea = idea_pb2.Idea()
    _common(idea, msg, prefix)
    if msg.title.strip():
        idea.title = validate.text(f"{prefix}.title", msg.title, max_len=validate.TITLE_MAX, required=True)
    else:
        idea.title = _title_from(idea.description)
        idea.warnings.append("title:derived: the T0 shape has no title; the description's first sentence is used")
    idea.urgency = validate.urgency(f"{prefix}.urgency", msg.urgency)
    idea.submitter = validate.text(f"{prefix}.submitter", msg.submitter, max_len=validate.SUBMITTER_MAX)
    meta, meta_prefix = msg.metadata, f"{prefix}.metadata"
    idea.target_customers = validate.text(
        f"{meta_prefix}.target_customers", meta.target_customers, max_len=validate.SHORT_TEXT_MAX)
    idea.competitive_advantage = validate.text(
        f"{meta_prefix}.competitive_advantage", meta.competitive_advantage, max_len=validate.SHORT_TEXT_MAX)
    # The T0 shape names its customers and edge; they are the target market and value proposition.
    idea.target_market = idea.target_customers
    idea.value_proposition = idea.competitive_advantage
    tam = None
    if meta.HasField("estimated_market_size"):
        tam = validate.market_figure(f"{meta_prefix}.estimated_market_size", meta.estimated_market_size) or None
    if tam is not None:
        idea.warnings.append("market_size:interpreted: idea.metadata.estimated_market_size is taken as the TAM")
    _market_size(idea, tam, None, None)
    return idea


def _common(idea: idea_pb2.Idea, msg, prefix: str) -> None:
    """Fields both shapes share under the same names."""
    idea.description = validate.text(
        f"{prefix}.description", msg.description, min_len=validate.DESCRIPTION_MIN,
        max_len=validate.DESCRIPTION_MAX, required=True, multiline=True)
    idea.domain = validate.text(f"{prefix}.domain", msg.domain, max_len=validate.DOMAIN_MAX).lower()
    features, duplicates = validate.features(f"{prefix}.features", msg.features)
    idea.features.extend(features)
    if duplicates:
        idea.warnings.append(f"features:duplicates_removed: {duplicates} repeated feature(s) dropped")
    if msg.HasField("estimated_build_months"):
        idea.estimated_build_months = validate.number(
            f"{prefix}.estimated_build_months", msg.estimated_build_months,
            low=0.0, high=validate.BUILD_MONTHS_MAX, low_open=True)
    if msg.HasField("team_coverage"):
        idea.team_coverage = validate.number(f"{prefix}.team_coverage", msg.team_coverage, low=0.0, high=1.0)
    if msg.HasField("price"):
        _price(idea, msg.price, f"{prefix}.price")
    if msg.HasField("cost_overrides"):
        _cost_overrides(idea, msg.cost_overrides, f"{prefix}.cost_overrides")


# Bounds of each cost override: (low, high); NPV's discount rate may be negative but not <= -100 %.
COST_BOUNDS = {
    "cac_usd": (0.0, 1e7), "gross_margin": (0.0, 1.0), "fixed_costs_monthly_usd": (0.0, 1e9),
    "initial_investment_usd": (0.0, 1e11), "discount_rate_annual": (-0.99, 10.0),
}


def _cost_overrides(idea: idea_pb2.Idea, costs: idea_pb2.CostOverrides, prefix: str) -> None:
    """Copy the founder's cost figures that are present, each checked against its bounds."""
    for name, (low, high) in COST_BOUNDS.items():
        if costs.HasField(name):
            setattr(idea.cost_overrides, name, validate.number(f"{prefix}.{name}", getattr(costs, name), low=low, high=high))
    if not idea.HasField("cost_overrides"):
        idea.cost_overrides.SetInParent()  # present but empty: every figure from the domain defaults


def _market_size(idea: idea_pb2.Idea, tam: float | None, sam: float | None, som: float | None) -> None:
    """Fill MarketSize (USD/year), deriving missing smaller figures from larger ones and saying so."""
    size = idea.market_size
    if tam is None and sam is None and som is None:
        size.source = "missing"
        idea.warnings.append("market_size:missing: no TAM/SAM/SOM given; later stages use domain priors")
        return
    derived: list[str] = []
    if sam is None and tam is not None:
        sam = min(max(round(tam * SAM_SHARE_OF_TAM, 2), som or 0.0), tam)
        derived.append(f"sam={SAM_SHARE_OF_TAM:g}*tam")
    if som is None and sam is not None:
        som = round(sam * SOM_SHARE_OF_SAM, 2)
        derived.append(f"som={SOM_SHARE_OF_SAM:g}*sam")
    for name, value in (("tam", tam), ("sam", sam)):
        if value is None:
            idea.warnings.append(f"market_size:{name}_missing: no {name.upper()} given; it is left at 0 (unknown)")
    size.tam_usd, size.sam_usd, size.som_usd = tam or 0.0, sam or 0.0, som or 0.0
    size.source = "submitted" + (f";derived:{','.join(derived)}" if derived else "")
    if derived:
        idea.warnings.append(f"market_size:derived: {', '.join(derived)} (rules of thumb, not data)")


def _price(idea: idea_pb2.Idea, price: idea_pb2.Price, field: str) -> None:
    """Check the proposed price and store it as USD per month; the original goes into a warning."""
    amount = validate.number(f"{field}.amount", price.amount, low=0.0, high=1e12, low_open=True)
    currency = price.currency.strip()
    if currency:
        currency = validate.currency_code(f"{field}.currency", currency)
    else:
        currency = "USD"
        idea.warnings.append("price:defaulted: no currency given; USD assumed")
    period = fx.canonical_period(price.billing_period) if price.billing_period.strip() else "monthly"
    if period is None:
        raise InvalidArgument(f"{field}.billing_period", f"must be one of {', '.join(fx.BILLING_PERIODS)}",
                              reason="UNKNOWN_VALUE")
    if not price.billing_period.strip():
        idea.warnings.append("price:defaulted: no billing period given; monthly assumed")
    months = price.amortisation_months
    if months < 0 or months > fx.MAX_AMORTISATION_MONTHS:
        raise InvalidArgument(f"{field}.amortisation_months",
                              f"must be between 1 and {fx.MAX_AMORTISATION_MONTHS}", reason="OUT_OF_RANGE")
    if period == "one_time" and months == 0:
        months = fx.DEFAULT_AMORTISATION_MONTHS
        idea.warnings.append(f"price:defaulted: one-time price amortised over {months} months")
    table = fx.load_fx_table()
    monthly = fx.monthly_usd(amount, currency, period, months, field=field, table=table)
    if monthly <= 0:
        raise InvalidArgument(f"{field}.amount", "is below 0.0001 USD per month after conversion",
                              reason="OUT_OF_RANGE")
    if monthly > MAX_MONTHLY_USD:
        raise InvalidArgument(f"{field}.amount", f"exceeds {MAX_MONTHLY_USD:g} USD per month after conversion",
                              reason="OUT_OF_RANGE")
    idea.price.amount, idea.price.currency, idea.price.billing_period = monthly, "USD", "monthly"
    if (currency, period) != ("USD", "monthly") or monthly != amount:
        life = f" over {months} months" if period == "one_time" else ""
        idea.warnings.append(
            f"price:normalised: {amount:g} {currency} {period}{life} -> {monthly:g} USD monthly "
            f"(rates as of {table.as_of})")


def _title_from(description: str) -> str:
    """A short title for the T0 shape: the description's first sentence, cut at a word boundary."""
    first = re.split(r"(?<=[.!?])\s|\n", description, maxsplit=1)[0].rstrip(".!? ")
    if len(first) <= DERIVED_TITLE_MAX:
        return first or description[:DERIVED_TITLE_MAX]
    cut = first[: DERIVED_TITLE_MAX - 3]
    cut = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return cut.rstrip(" ,;:") + "..."


def _mask_pii(idea: idea_pb2.Idea) -> None:
    """Mask every free-text field in place and record what was found where (never the value)."""
    fields = [(name, getattr(idea, name)) for name in FREE_TEXT_FIELDS]
    fields += [(f"features[{i}]", f) for i, f in enumerate(idea.features)]
    masked, findings = pii.mask_fields(fields)
    for name in FREE_TEXT_FIELDS:
        setattr(idea, name, masked[name])
    idea.domain = idea.domain.lower()  # a lookup key: lower-case, placeholders included, so it is stable
    for i in range(len(idea.features)):
        idea.features[i] = masked[f"features[{i}]"]
    for field, kind, count in findings:
        idea.pii_findings.add(kind=kind, field=field, count=count)
    if findings:
        total = sum(count for _, _, count in findings)
        kinds = sorted({kind for _, kind, _ in findings})
        idea.warnings.append(f"pii:masked: {total} item(s) of personal data masked ({', '.join(kinds)})")
