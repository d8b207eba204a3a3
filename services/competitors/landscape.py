"""Competitor landscape: ranked competitors and our own offering on one taxonomy and one price basis.

`build_landscape(request)` is the whole stage; the servicer only wraps it. Steps:

1. The idea's domain prior (services.personas.priors: idea.domain -> keywords -> general fallback).
2. Imported competitor lists (idea.grounding.competitors, from IngestionService.ImportGrounding) when
   the idea references any: one offering per row, provenance "imported", source "import:<id>[;<row source>]",
   prior relevance 1 (the founder named them), brand strength from market share (IMPORTED_BRAND_*,
   a stated rule of thumb), missing shares sharing what the listed ones leave; no synthetic padding.
   Then competitors earlier runs met in the domain (request.known_competitors, from the memory
   service), provenance "learned", de-duplicated by name (services.competitors.learned has the rules).
   Without imports, one offering per competitor archetype of the prior follows, provenance "synthetic".
   Prices go through services.competitors.pricing; free-text
   features map onto the prior's canonical taxonomy (priors.map_feature: exact synonym, else token
   similarity); coverage per canonical feature is the highest coverage of the features that map to
   it ("reports: 0.5" covers half); features that map nowhere are kept in `unmapped_features`.
3. (Priors only) when `count` exceeds the archetypes, seeded variants fill the gap: archetypes in order of prior
   relevance, each variant with jittered list price, feature coverage (some features dropped),
   brand, share and relevance, and decaying relevance and share per generation. Variant k draws from
   its own stream (seed, stream id, k), so the archetypes never depend on the seed and a larger
   count never changes the earlier variants.
4. Our offering from the idea's features (coverage 1) and proposed price; no price (or 0) leaves
   monthly_price_usd at 0 with a warning (the simulation then evaluates the personas' WTP).
   No features: those its title / description / value proposition name (exact canonical phrases),
   else the landscape's per-feature median; either way flagged as an assumption.
5. Relevance = RELEVANCE_PRIOR_WEIGHT x prior relevance + the rest x overlap (the share of our
   feature coverage the competitor also covers); ranked by provenance (imported, learned, synthetic),
   then highest relevance, ties by name then id; the top `count` kept and ranked 1..n. Listed market
   shares sum to at most the prior's `listed_share_max` (the rest of the market is unlisted players):
   imported rows and archetypes are scaled down only if they alone exceed it; learned entries share
   what is left, and variants what is left after them.
6. Positioning matrix (services.competitors.positioning), the guide's top-5 criterion, warnings.

Same request -> the same response bytes: every float is rounded, maps are filled in taxonomy
order, and all randomness comes from numpy Generators seeded by request.seed.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field

import numpy as np

from smvm.errors import InvalidArgument
from smvm.v1 import competitor_service_pb2 as pb, idea_pb2, market_pb2

from services.competitors.learned import (
    LEARNED_RELEVANCE,
    PROVENANCE_RANK,
    learned_share,
    name_key,
    select_learned,
)
from services.competitors.pricing import NormalisedPrice, normalise_idea_price, normalise_price
from services.competitors.positioning import Offering, positioning_matrix
from services.ingestion.fx import FxTable, load_fx_table
from services.personas.priors import (
    ArchetypePrior,
    DomainPrior,
    PriorDataError,
    features_in_text,
    map_feature,
    prior_for_idea,
)

DEFAULT_COUNT = 10
MAX_COUNT = 100
MAX_IDEA_FEATURES = 200
MAX_FEATURE_CHARS = 200
TOP_N_GATE = 5
OUR_ID = "ours"
# A new entrant has little awareness or trust yet; incumbents in the priors sit at 0.15-0.9.
NEW_ENTRANT_BRAND = 0.1
RELEVANCE_PRIOR_WEIGHT = 0.7
# Variant jitter (log-sd of multiplicative noise) and per-generation decay.
VARIANT_PRICE_LOG_SD = 0.25
VARIANT_COVERAGE_LOG_SD = 0.2
VARIANT_FEATURE_DROP = 0.15
VARIANT_BRAND_LOG_SD = 0.2
VARIANT_RELEVANCE_LOG_SD = 0.05
VARIANT_RELEVANCE_DECAY = 0.85
VARIANT_SHARE_DECAY = 0.5
VARIANT_SHARE_LOG_SD = 0.3
DECIMALS = 6
# Fixed stream id so competitor draws never share a stream with another stage given the same seed.
_STREAM = 0xC0_4D_E7_01
# Imported rows carry no brand figure: brand = base + per_share x market share, at most max (a share
# of 0.2 gives 0.7); rows without a share get the base. Incumbents in the priors sit at 0.15-0.9.
IMPORTED_BRAND_BASE = 0.3
IMPORTED_BRAND_PER_SHARE = 2.0
IMPORTED_BRAND_MAX = 0.9
IMPORTED_RELEVANCE = 1.0


@dataclass
class _Draft:
    id: str
    name: str
    price: NormalisedPrice
    features: list[tuple[str, float]]
    brand: float
    share: float
    prior_relevance: float
    source: str
    variant: int
    vector: dict[str, float] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    relevance: float = 0.0
    provenance: str = "synthetic"  # imported | learned | synthetic
    learned: market_pb2.LearnedFrom | None = None

    @property
    def synthetic(self) -> bool:
        return self.provenance == "synthetic"



def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def feature_vector(prior: DomainPrior, features: list[tuple[str, float]]) -> tuple[dict[str, float], list[str]]:
    """(canonical feature -> coverage, dense in taxonomy order; unmapped free texts in input order)."""
    best = dict.fromkeys(prior.feature_ids, 0.0)
    unmapped: list[str] = []
    for text, coverage in features:
        match = map_feature(prior, text)
        if match.feature is None:
            unmapped.append(text)
        else:
            best[match.feature] = max(best[match.feature], coverage)
    return {f: round(min(1.0, max(0.0, c)), DECIMALS) for f, c in best.items()}, unmapped


def _archetype_price(prior: DomainPrior, a: ArchetypePrior, amount: float, table: FxTable) -> NormalisedPrice:
    try:
        return normalise_price(
            amount,
            a.price.currency,
            a.price.billing_period,
            amortisation_months=a.price.amortisation_months,
            per_seat=a.per_seat,
            seats=a.seats,
            free_tier=a.free_tier,
            field=f"competitors.archetypes[{a.name}].price",
            table=table,
        )
    except InvalidArgument as exc:  # a broken data file is a packaging bug, not a user error
        raise PriorDataError(f"{prior.path}: {exc}") from exc


def _archetype_draft(prior: DomainPrior, a: ArchetypePrior, table: FxTable) -> _Draft:
    return _Draft(
        id=f"{prior.domain}:{_slug(a.name)}",
        name=a.name,
        price=_archetype_price(prior, a, a.price.amount, table),
        features=list(a.features),
        brand=a.brand_strength,
        share=a.market_share,
        prior_relevance=a.relevance,
        source=prior.source,
        variant=1,
    )


def _variant_draft(prior: DomainPrior, a: ArchetypePrior, generation: int, index: int, seed: int, table: FxTable) -> _Draft:
    """A seeded variant of an archetype; every draw happens in a fixed order whatever the outcome."""
    rng = np.random.default_rng([seed, _STREAM, index])
    amount = round(a.price.amount * math.exp(rng.normal(0.0, VARIANT_PRICE_LOG_SD)), 2)
    brand = min(1.0, a.brand_strength * math.exp(rng.normal(0.0, VARIANT_BRAND_LOG_SD)))
    share = a.market_share * VARIANT_SHARE_DECAY ** (generation - 1) * math.exp(rng.normal(0.0, VARIANT_SHARE_LOG_SD))
    relevance = a.relevance * VARIANT_RELEVANCE_DECAY ** (generation - 1) * math.exp(rng.normal(0.0, VARIANT_RELEVANCE_LOG_SD))
    features = []
    for text, coverage in a.features:
        dropped = rng.random() < VARIANT_FEATURE_DROP
        jittered = min(1.0, round(coverage * math.exp(rng.normal(0.0, VARIANT_COVERAGE_LOG_SD)), 2))
        if not dropped and jittered > 0:
            features.append((text, jittered))
    if not features and a.features:
        features.append(a.features[0])
    return _Draft(
        id=f"{prior.domain}:{_slug(a.name)}:v{generation}",
        name=f"{a.name} (variant {generation})",
        price=_archetype_price(prior, a, amount, table),
        features=features,
        brand=round(brand, DECIMALS),
        share=round(share, DECIMALS),
        prior_relevance=round(min(1.0, relevance), DECIMALS),
        source=f"{prior.source}:variant",
        variant=generation,
    )


MAX_IMPORTED = 1_000
MAX_NAME_CHARS = 200
MAX_SEATS = 100_000


def _check_imported(records) -> None:
    """InvalidArgument naming the first imported row this stage cannot use (ingestion's adapter enforces
    the same rules; a caller that bypasses it must not crash the stage)."""
    if len(records) > MAX_IMPORTED:
        raise InvalidArgument("idea.grounding.competitors", f"at most {MAX_IMPORTED} competitors, got {len(records)}")
    for i, r in enumerate(records):
        field = f"idea.grounding.competitors[{i}]"
        if not r.name.strip() or len(r.name) > MAX_NAME_CHARS:
            raise InvalidArgument(f"{field}.name", f"must be 1-{MAX_NAME_CHARS} characters")
        if r.HasField("market_share") and not (math.isfinite(r.market_share) and 0 <= r.market_share <= 1):
            raise InvalidArgument(f"{field}.market_share", "must be a fraction in [0, 1]")
        if not 0 <= r.seats <= MAX_SEATS:
            raise InvalidArgument(f"{field}.seats", f"must be in 0..{MAX_SEATS} (0 = not per seat)")
        if len(r.features) > MAX_IDEA_FEATURES:
            raise InvalidArgument(f"{field}.features", f"at most {MAX_IDEA_FEATURES} features")
        for j, text in enumerate(r.features):
            if len(text) > MAX_FEATURE_CHARS:
                raise InvalidArgument(f"{field}.features[{j}]", f"at most {MAX_FEATURE_CHARS} characters")


def _imported_drafts(prior: DomainPrior, records, table: FxTable, warnings: list[str]) -> list[_Draft]:
    """One draft per imported competitor row (duplicate names were dropped by the import)."""
    _check_imported(records)
    given = math.fsum(r.market_share for r in records if r.HasField("market_share"))
    missing = [i for i, r in enumerate(records) if not r.HasField("market_share")]
    room = max(0.0, prior.listed_share_max - given)
    fill = room / len(missing) if missing else 0.0
    if missing:
        warnings.append(
            f"market_share:assumed: {len(missing)} imported competitor(s) state no market share; each is given "
            f"{fill:.4f} (the {room:.3f} the listed shares leave of the prior's listed maximum "
            f"{prior.listed_share_max:.2f}, split evenly)")
    drafts = []
    seen_ids: dict[str, int] = {}
    for i, r in enumerate(records):
        field = f"idea.grounding.competitors[{i}]"
        price = normalise_price(
            r.price_amount, r.currency or "USD", r.billing_period or "monthly",
            amortisation_months=r.amortisation_months, per_seat=r.seats > 0, seats=max(r.seats, 1),
            free_tier=r.free_tier, field=f"{field}.price", table=table)
        share = r.market_share if r.HasField("market_share") else fill
        base_id = f"import:{_slug(r.name) or 'competitor'}"
        seen_ids[base_id] = seen_ids.get(base_id, 0) + 1
        source = f"import:{r.import_id[:12]}" if r.import_id else "import"
        drafts.append(_Draft(
            id=base_id if seen_ids[base_id] == 1 else f"{base_id}-{seen_ids[base_id]}",
            name=r.name,
            price=price,
            features=[(text, 1.0) for text in r.features],
            brand=_brand_from_share(share),
            share=share,
            prior_relevance=IMPORTED_RELEVANCE,
            source=source + (f";{r.source}" if r.source else ""),
            variant=1,
            provenance="imported",
        ))
    warnings.append(
        f"brand_strength:assumed: imported competitors' brand strength = {IMPORTED_BRAND_BASE:g} + "
        f"{IMPORTED_BRAND_PER_SHARE:g} x market share (at most {IMPORTED_BRAND_MAX:g}); imports carry no brand figure")
    return drafts


def _brand_from_share(share: float) -> float:
    """Brand strength of a grounded competitor (imported or learned): sources carry no brand figure,
    so it is assumed from market share (the warning in _imported_drafts states the rule)."""
    return round(min(IMPORTED_BRAND_MAX, IMPORTED_BRAND_BASE + IMPORTED_BRAND_PER_SHARE * share), DECIMALS)


def _learned_drafts(known, table: FxTable) -> list[_Draft]:
    """One draft per learned competitor (already selected and de-duplicated)."""
    drafts = []
    for i, c in enumerate(known):
        price = normalise_price(c.last_monthly_price_usd, "USD", "monthly", free_tier=c.last_monthly_price_usd == 0,
                                field=f"known_competitors[{i}].last_monthly_price_usd", table=table)
        share = learned_share(c)
        learned = market_pb2.LearnedFrom(run_id=c.last_run_id, source=c.source, runs_seen=c.runs_seen)
        if c.HasField("last_seen"):
            learned.last_seen.CopyFrom(c.last_seen)
        drafts.append(_Draft(
            id=f"learned:{_slug(c.name) or 'competitor'}",
            name=c.name,
            price=price,
            features=[(text, 1.0) for text in c.features],
            brand=_brand_from_share(share),
            share=share,
            prior_relevance=LEARNED_RELEVANCE,
            source=f"memory:{c.last_run_id}" if c.last_run_id else "memory",
            variant=1,
            provenance="learned",
            learned=learned,
        ))
    return drafts


def _validate(request: pb.BuildLandscapeRequest) -> int:
    count = int(request.count)
    if count < 0:
        raise InvalidArgument("count", f"must be >= 0 (0 means the default {DEFAULT_COUNT}), got {count}")
    if count > MAX_COUNT:
        raise InvalidArgument("count", f"at most {MAX_COUNT} competitors, got {count}")
    features = request.idea.features
    if len(features) > MAX_IDEA_FEATURES:
        raise InvalidArgument("idea.features", f"at most {MAX_IDEA_FEATURES} features, got {len(features)}")
    for i, text in enumerate(features):
        if not text.strip():
            raise InvalidArgument(f"idea.features[{i}]", "must not be blank")
        if len(text) > MAX_FEATURE_CHARS:
            raise InvalidArgument(f"idea.features[{i}]", f"at most {MAX_FEATURE_CHARS} characters, got {len(text)}")
    return count or DEFAULT_COUNT


def _idea_text(idea: idea_pb2.Idea) -> str:
    return " \n ".join((idea.title, idea.description, idea.value_proposition, idea.competitive_advantage))


def _overlap(theirs: dict[str, float], ours: dict[str, float]) -> float | None:
    """Share of our feature coverage the competitor also covers; None when we list nothing."""
    total = math.fsum(ours.values())
    if total <= 0:
        return None
    return math.fsum(min(theirs.get(f, 0.0), c) for f, c in ours.items()) / total


def _listed_shares(ranked: list[_Draft], cap: float, warnings: list[str]) -> list[float]:
    """Market shares that sum to at most `cap`, tier by tier: archetypes and imported rows keep theirs
    (scaled down only if they alone exceed the cap); learned entries share what those leave; seeded
    variants share what is left after them. So neither the seed nor memory ever moves an archetype's
    or an imported row's share, and the seed never moves a learned one's."""
    tiers = [
        ("archetype and imported", [d for d in ranked if d.variant == 1 and d.provenance != "learned"]),
        ("learned", [d for d in ranked if d.provenance == "learned"]),
        ("variant", [d for d in ranked if d.variant > 1]),
    ]
    scale: dict[int, float] = {}
    room = cap
    for label, drafts in tiers:
        total = math.fsum(d.share for d in drafts)
        factor = min(1.0, room / total) if total > 0 else 1.0
        if factor < 1.0:
            warnings.append(
                f"market_share:scaled: archetype shares summed to {total:.3f}, above the listed "
                f"maximum {cap:.2f}; scaled by {factor:.4f}" if label.startswith("archetype") else
                f"market_share:{label}s_scaled: {label} shares summed to {total:.3f}, the room left "
                f"by the entries ranked before them is {room:.3f}; scaled by {factor:.4f}")
        for d in drafts:
            scale[id(d)] = factor
        room = max(0.0, room - total * factor)
    return [d.share * scale[id(d)] for d in ranked]


def _competitor(d: _Draft, rank: int, share: float) -> market_pb2.Competitor:
    return market_pb2.Competitor(
        id=d.id,
        name=d.name,
        monthly_price_usd=d.price.monthly_price_usd,
        list_price=d.price.list_price,
        features=[text for text, _ in d.features],
        feature_vector=d.vector,
        market_share=round(share, DECIMALS),
        brand_strength=d.brand,
        source=d.source,
        synthetic=d.synthetic,
        rank=rank,
        unmapped_features=d.unmapped,
        pricing=d.price.terms(),
        relevance=d.relevance,
        provenance=d.provenance,
        learned=d.learned,
    )


def _our_vector(
    prior: DomainPrior, idea: idea_pb2.Idea, features: list[tuple[str, float]], drafts: list[_Draft], warnings: list[str]
) -> tuple[dict[str, float], list[str], bool]:
    """(our feature vector, unmapped idea features, whether the vector is the assumed median)."""
    vector, unmapped = feature_vector(prior, features)
    if unmapped:
        warnings.append(f"features:unmapped: idea features {unmapped} match no canonical {prior.domain} feature")
    if features:
        if not any(vector.values()):
            warnings.append(f"features:none_mapped: none of the idea's features maps onto the {prior.domain} taxonomy")
        return vector, unmapped, False
    named = dict(features_in_text(prior, _idea_text(idea)))
    if named:
        warnings.append(
            "features:from_text: the idea lists no features; assumed full coverage of those its text names: "
            f"{[f'{f} ({phrase})' for f, phrase in named.items()]}"
        )
        return {f: 1.0 if f in named else 0.0 for f in prior.feature_ids}, unmapped, False
    archetypes = [d for d in drafts if d.variant == 1]  # never the seeded variants (learned entries count)
    warnings.append(
        "features:missing: the idea lists no features and its text names none; our offering is assumed at "
        "the landscape's median coverage per feature"
    )
    median = {f: round(statistics.median(d.vector[f] for d in archetypes), DECIMALS) for f in prior.feature_ids}
    return median, unmapped, True


def build_landscape(request: pb.BuildLandscapeRequest) -> pb.BuildLandscapeResponse:
    count = _validate(request)
    idea = request.idea if request.HasField("idea") else idea_pb2.Idea()
    has_price = request.HasField("idea") and idea.HasField("price")
    our_price = normalise_idea_price(idea.price) if has_price else None
    prior, resolution = prior_for_idea(idea if request.HasField("idea") else None)
    table = load_fx_table()
    taxonomy = list(prior.feature_ids)
    warnings = list(resolution.warnings)

    imported = list(idea.grounding.competitors)
    drafts = _imported_drafts(prior, imported, table, warnings) if imported else []
    taken = {name_key(d.name) for d in drafts}
    known, dropped = select_learned(request.known_competitors, taken)
    learned = _learned_drafts(known, table)
    drafts += learned
    if learned:
        runs = sorted({c.last_run_id for c in known if c.last_run_id})
        warnings.append(
            f"competitors:learned: {len(learned)} competitor(s) earlier runs met in the {idea.domain or prior.domain} "
            f"domain joined from memory (runs {', '.join(runs) or 'unnamed'})"
            + (f"; {dropped['duplicate']} left out as already imported" if dropped["duplicate"] else ""))
    if not imported:
        archetypes = [a for a in prior.archetypes if name_key(a.name) not in taken]
        drafts += [_archetype_draft(prior, a, table) for a in archetypes]
        by_relevance = sorted(range(len(prior.archetypes)), key=lambda i: (-prior.archetypes[i].relevance, i))
        extra = max(0, count - len(learned) - len(archetypes))
        for k in range(extra):
            base = prior.archetypes[by_relevance[k % len(by_relevance)]]
            drafts.append(_variant_draft(prior, base, k // len(by_relevance) + 2, k, int(request.seed), table))
    for d in drafts:
        d.vector, d.unmapped = feature_vector(prior, d.features)

    ours_features = [(str(t).strip(), 1.0) for t in idea.features]
    our_vector, our_unmapped, assumed_median = _our_vector(prior, idea, ours_features, drafts, warnings)
    unpriced = our_price is None or our_price.monthly_price_usd <= 0
    if unpriced:
        warnings.append(
            "price:missing: the idea proposes no price (or 0); the simulation evaluates the personas' "
            "WTP median and analysis recommends a price"
        )

    # Relevance ranking.
    overlap_basis = {} if assumed_median else our_vector
    for d in drafts:
        overlap = _overlap(d.vector, overlap_basis)
        score = d.prior_relevance if overlap is None else (
            RELEVANCE_PRIOR_WEIGHT * d.prior_relevance + (1 - RELEVANCE_PRIOR_WEIGHT) * overlap
        )
        d.relevance = round(score, DECIMALS)
    ranked = sorted(drafts, key=lambda d: (PROVENANCE_RANK[d.provenance], -d.relevance, d.name, d.id))[:count]

    # Imported shares are the founder's data: scaled only if they sum above 1, never to the prior's maximum.
    shares = _listed_shares(ranked, 1.0 if imported else prior.listed_share_max, warnings)
    competitors = [_competitor(d, i + 1, share) for i, (d, share) in enumerate(zip(ranked, shares))]
    if imported:
        imports = sorted({r.import_id[:12] for r in imported if r.import_id})
        ranked_imports = sum(1 for d in ranked if d.provenance == "imported")
        warnings.append(
            f"competitors:imported: {ranked_imports} of {len(imported)} imported competitor(s) ranked "
            f"(imports {', '.join(imports) or 'unnamed'}); none synthesised")
        if len(competitors) < TOP_N_GATE:
            warnings.append(
                f"competitors:top5_incomplete: only {len(competitors)} competitor(s) imported"
                + (" or learned" if learned else "") + f"; the guide's "
                f"'top {TOP_N_GATE} identified' criterion needs {TOP_N_GATE}")
    elif any(d.synthetic for d in ranked):
        variants = sum(1 for d in ranked if d.variant > 1)
        synthetic = sum(1 for d in ranked if d.synthetic)
        share = f"all {len(competitors)}" if synthetic == len(competitors) else f"{synthetic} of {len(competitors)}"
        warnings.append(
            f"competitors:synthetic: {share} competitors are synthesised from the {prior.domain} "
            f"prior's archetypes (no imported competitor list)"
            + (f"; {variants} are seeded variants of archetypes" if variants else "")
        )

    our = market_pb2.Competitor(
        id=OUR_ID,
        name=idea.title or "our_product",
        monthly_price_usd=0.0 if unpriced else our_price.monthly_price_usd,
        features=[t for t, _ in ours_features],
        feature_vector=our_vector,
        brand_strength=NEW_ENTRANT_BRAND,
        source="idea",
        synthetic=False,
        unmapped_features=our_unmapped,
        provenance="idea",
    )
    if our_price is not None:
        our.list_price.CopyFrom(our_price.list_price)
        our.pricing.CopyFrom(our_price.terms())

    offerings = [Offering(c.id, c.name, c.monthly_price_usd, dict(c.feature_vector)) for c in competitors]
    offerings.append(Offering(our.id, our.name, our.monthly_price_usd, our_vector, ours=True, unpriced=unpriced))
    top = competitors[:TOP_N_GATE]
    return pb.BuildLandscapeResponse(
        competitors=competitors,
        feature_taxonomy=taxonomy,
        our_offering=our,
        prior=prior.domain,
        positioning=positioning_matrix(offerings, taxonomy),
        top5_identified=len(top),
        top5_synthetic=sum(1 for c in top if c.synthetic),
        warnings=warnings,
        domain_detection=resolution.method,
        fx_rates_as_of=table.as_of,
    )
