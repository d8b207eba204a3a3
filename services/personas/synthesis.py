"""Persona synthesis: N customer segments for an idea, drawn from its domain prior under bias controls.

`generate_personas(request)` is the whole stage; the servicer only wraps it. Everything is seeded by
`request.seed` (same seed -> the same response bytes) and nothing reads the idea's price: willingness
to pay comes from the prior and the idea's survey data alone, so a price far above it shows up later
as poor demand instead of being explained away here.

How one persona is made (every draw from one numpy Generator, in a fixed order):

1. Segments: the prior's segments by weight, largest first; with more personas than segments each
   extra persona goes to the segment with the highest weight per persona so far (D'Hondt), and
   becomes a distinct sub-segment ("<segment> #2").
2. Demographics: ONE draw of an (age band, income band, occupation) cell from the domain's joint
   table restricted to the segment's eligible cells (data/priors/demographics.yaml explains how the
   table is built); impossible combinations have probability 0 and cannot be drawn. Coverage-aware:
   of `coverage_candidates` draws, the first that adds an age or income band not yet covered wins.
3. Willingness to pay: lognormal. median = segment median x (income mid / segment's mean income)^e
   x exp(N(0, jitter)) with e the domain's income elasticity; sigma = segment sigma x exp(N(0, jitter/2));
   p10/p50/p90 = median x exp(z x sigma) with z = -1.2816, 0, +1.2816.
4. Traits: price sensitivity, innovation, imitation, churn and feature importances are the segment's
   values x exp(N(0, jitter)); brand affinity is the segment's + N(0, jitter/2). Importances cover
   every canonical feature of the domain (unlisted ones get the domain default).
5. Weights: segment weight / personas in the segment x exp(N(0, weight_jitter)), then bias controls
   (normalise to 1, cap any one segment, redistribute the excess) - see services/personas/bias.py.
6. Calibration (services/personas/calibration.py): when the idea's grounding data holds survey answers
   (Van Westendorp / Gabor-Granger), a lognormal is fitted to them by maximum likelihood and the
   personas' WTP is moved so their weighted mixture has the fitted log-mean and log-variance; the fit
   and its held-out fidelity go into `calibration`, and `sources.wtp` names the imports. The
   optimism control then checks persona p90s against the grounding data's upper range, not the prior's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from smvm.errors import InvalidArgument
from smvm.v1 import market_pb2, persona_service_pb2

from services.personas import bias, calibration, narratives
from services.personas.priors import DomainPrior, JointCell, SegmentPrior, prior_for_idea

DEFAULT_COUNT = 5
MAX_COUNT = 200
# z of the 10th / 90th percentile of the standard normal (scipy.stats.norm.ppf(0.9)).
Z90 = 1.2815515655446004
# Fixed stream id so persona draws never share a stream with another stage given the same seed.
_STREAM = 0x9E45_0A01


@dataclass(frozen=True)
class PersonaSettings:
    segment_cap: float = bias.DEFAULT_SEGMENT_CAP
    min_entropy: float = bias.DEFAULT_MIN_ENTROPY
    min_band_fraction: float = bias.DEFAULT_MIN_BAND_FRACTION
    # Log-sd of the multiplicative jitter on segment weights and on each persona parameter.
    weight_jitter: float = 0.15
    param_jitter: float = 0.10
    coverage_candidates: int = 8
    max_count: int = MAX_COUNT


def no_calibration() -> persona_service_pb2.WtpCalibration:
    """No grounding data: nothing calibrated, fidelity not reported."""
    return persona_service_pb2.WtpCalibration(calibrated=False, ks_distance=-1.0, intent_mae=-1.0,
                                              ks_midpoint_distance=-1.0)


def wtp_quantiles(median_usd: float, sigma: float) -> tuple[float, float, float]:
    """(p10, p50, p90) of a lognormal with this median and log-sd."""
    return median_usd * math.exp(-Z90 * sigma), median_usd, median_usd * math.exp(Z90 * sigma)


def wtp_distribution(median_usd: float, sigma: float) -> market_pb2.WtpDistribution:
    p10, p50, p90 = wtp_quantiles(median_usd, sigma)
    return market_pb2.WtpDistribution(
        family="lognormal", median_usd=median_usd, sigma=sigma, p10_usd=p10, p50_usd=p50, p90_usd=p90
    )


def allocate_segments(segments: Sequence[SegmentPrior], count: int) -> list[tuple[SegmentPrior, int]]:
    """(segment, variant number) for each persona, deterministic.

    count <= segments: the `count` heaviest segments (ties by file order). count > segments: every
    segment once, extras by D'Hondt on the segment weights. Returned in the prior's file order.
    """
    order = sorted(range(len(segments)), key=lambda i: (-segments[i].weight, i))
    if count <= len(segments):
        chosen = {i: 1 for i in order[:count]}
    else:
        chosen = {i: 1 for i in order}
        for _ in range(count - len(segments)):
            best = max(order, key=lambda i: (segments[i].weight / (chosen[i] + 1), -i))
            chosen[best] += 1
    out: list[tuple[SegmentPrior, int]] = []
    for i in sorted(chosen):
        out.extend((segments[i], k) for k in range(1, chosen[i] + 1))
    return out


def _draw_cell(
    rng: np.random.Generator, table: Sequence[JointCell], covered_ages: set[str], covered_incomes: set[str], k: int
) -> JointCell:
    probs = np.fromiter((c.p for c in table), dtype=float, count=len(table))
    probs = probs / probs.sum()
    picks = rng.choice(len(table), size=max(1, k), p=probs)
    best, best_new = table[int(picks[0])], -1
    for idx in picks:
        cell = table[int(idx)]
        new = (cell.age not in covered_ages) + (cell.income not in covered_incomes)
        if new > best_new:
            best, best_new = cell, new
        if new == 2:
            break
    return best


def _segment_log_income(prior: DomainPrior, table: Sequence[JointCell]) -> float:
    demo = prior.demographics
    return math.fsum(c.p * math.log(demo.income_mid(c.income)) for c in table)


@dataclass
class _Draft:
    segment: SegmentPrior
    variant: int
    cell: JointCell
    raw_weight: float
    wtp_median: float
    wtp_sigma: float
    price_sensitivity: float
    innovation: float
    imitation: float
    churn: float
    brand_affinity: float
    importance: dict[str, float] = field(default_factory=dict)


def generate_personas(
    request: persona_service_pb2.GeneratePersonasRequest, settings: PersonaSettings | None = None
) -> persona_service_pb2.GeneratePersonasResponse:
    settings = settings or PersonaSettings()
    count = int(request.count) or DEFAULT_COUNT
    if count < 0:
        raise InvalidArgument("count", f"must be >= 0 (0 means the default {DEFAULT_COUNT}), got {request.count}")
    if count > settings.max_count:
        raise InvalidArgument("count", f"at most {settings.max_count} personas, got {request.count}")
    idea = request.idea if request.HasField("idea") else None
    prior, resolution = prior_for_idea(idea)
    rng = np.random.default_rng([int(request.seed), _STREAM])
    demo = prior.demographics
    j = settings.param_jitter

    drafts: list[_Draft] = []
    covered_ages: set[str] = set()
    covered_incomes: set[str] = set()
    allocation = allocate_segments(prior.segments, count)
    per_segment = {}
    for seg, _ in allocation:
        per_segment[seg.id] = per_segment.get(seg.id, 0) + 1
    for seg, variant in allocation:
        table = prior.segment_table(seg)
        cell = _draw_cell(rng, table, covered_ages, covered_incomes, settings.coverage_candidates)
        covered_ages.add(cell.age)
        covered_incomes.add(cell.income)
        income_factor = math.exp(
            prior.wtp_income_elasticity * (math.log(demo.income_mid(cell.income)) - _segment_log_income(prior, table))
        )
        d = _Draft(
            segment=seg,
            variant=variant,
            cell=cell,
            raw_weight=seg.weight / per_segment[seg.id] * math.exp(rng.normal(0.0, settings.weight_jitter)),
            wtp_median=seg.wtp_median_usd * income_factor * math.exp(rng.normal(0.0, j)),
            wtp_sigma=seg.wtp_sigma * math.exp(rng.normal(0.0, j / 2)),
            price_sensitivity=seg.price_sensitivity * math.exp(rng.normal(0.0, j)),
            innovation=seg.innovation * math.exp(rng.normal(0.0, j)),
            imitation=seg.imitation * math.exp(rng.normal(0.0, j)),
            churn=min(0.5, max(0.001, seg.churn_monthly * math.exp(rng.normal(0.0, j)))),
            brand_affinity=seg.brand_affinity + rng.normal(0.0, j / 2),
        )
        for f in prior.feature_ids:
            base = seg.feature_importance.get(f, prior.default_feature_importance)
            d.importance[f] = base * math.exp(rng.normal(0.0, j))
        drafts.append(d)

    capped = bias.cap_weights([d.raw_weight for d in drafts], settings.segment_cap)
    weights = capped.weights
    src = prior.source
    grounding = idea.grounding if idea is not None else None
    fit = calibration.calibrate(grounding) if grounding is not None else no_calibration()
    wtp_source = {d.segment.id: f"{src}#segments.{d.segment.id}.wtp;income_elasticity" for d in drafts}
    if fit.calibrated:
        medians, sigmas = calibration.calibrated_wtp(
            [d.wtp_median for d in drafts], [d.wtp_sigma for d in drafts], weights, fit.mu, fit.sigma)
        for d, m, sd in zip(drafts, medians, sigmas):
            d.wtp_median, d.wtp_sigma = m, sd
        refs = ",".join(i[:12] for i in fit.import_ids) or "survey"
        wtp_source = {k: f"grounding:{refs}#{fit.method};relative_position:{v}" for k, v in wtp_source.items()}
    has_survey = grounding is not None and (len(grounding.van_westendorp) or len(grounding.gabor_granger))
    upper, upper_source = prior.wtp_upper_range_usd, "prior"
    if has_survey:
        upper, upper_source = fit.upper_range_usd or calibration.upper_range(grounding), "grounding"
    personas: list[market_pb2.Persona] = []
    checks: list[bias.PersonaCheck] = []
    for i, (d, w) in enumerate(zip(drafts, weights)):
        pid = f"persona-{i + 1:02d}"
        segment_name = d.segment.name if d.variant == 1 else f"{d.segment.name} #{d.variant}"
        occ_label = demo.occupation_labels[d.cell.occupation]
        demographics = {
            "age_band": d.cell.age,
            "income_band": d.cell.income,
            "occupation": d.cell.occupation,
            "occupation_label": occ_label,
            **{k: d.segment.attributes[k] for k in sorted(d.segment.attributes)},
        }
        wtp = wtp_distribution(d.wtp_median, d.wtp_sigma)
        weight_source = src + ";renormalised" + (";segment_cap" if i in capped.capped else "")
        sources = {
            "segment": f"{src}#segments.{d.segment.id}",
            "weight": weight_source,
            "demographics": f"{src}#joint_table",
            "needs": f"{src}#segments.{d.segment.id}.needs",
            "wtp": wtp_source[d.segment.id],
            "price_sensitivity": src,
            "feature_importance": src,
            "innovation": src,
            "imitation": src,
            "churn_monthly": src,
            "brand_affinity": src,
        }
        personas.append(
            market_pb2.Persona(
                id=pid,
                name=f"{segment_name} ({occ_label}, {d.cell.age})",
                segment=segment_name,
                weight=float(w),
                demographics=demographics,
                needs=list(d.segment.needs),
                wtp=wtp,
                price_sensitivity=d.price_sensitivity,
                feature_importance=d.importance,
                innovation=d.innovation,
                imitation=d.imitation,
                churn_monthly=d.churn,
                brand_affinity=d.brand_affinity,
                sources=sources,
            )
        )
        personas[-1].narrative = narratives.template_narrative(personas[-1])
        personas[-1].sources["narrative"] = narratives.TEMPLATE_SOURCE
        checks.append(bias.PersonaCheck(pid, d.cell.age, d.cell.income, wtp.p90_usd))

    ages_with_mass, incomes_with_mass = prior.bands_with_mass()
    report = bias.build_bias_report(
        personas=checks,
        weights=weights,
        cap=capped,
        segment_cap=settings.segment_cap,
        age_bands=demo.age_bands,
        income_bands=demo.income_ids,
        age_bands_with_mass=len(ages_with_mass),
        income_bands_with_mass=len(incomes_with_mass),
        wtp_upper_range_usd=upper,
        upper_range_source=upper_source,
        min_entropy=settings.min_entropy,
        min_band_fraction=settings.min_band_fraction,
    )
    return persona_service_pb2.GeneratePersonasResponse(
        personas=personas,
        bias_report=report,
        prior=prior.domain,
        warnings=list(resolution.warnings),
        domain_detection=resolution.method,
        calibration=fit,
    )
