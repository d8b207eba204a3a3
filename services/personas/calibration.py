"""WTP calibration: a lognormal fitted to imported survey answers by maximum likelihood, and its fidelity.

Model: a respondent's monthly willingness to pay W ~ lognormal(mu, sigma).
- Van Westendorp answer (too cheap, cheap, expensive, too expensive): W lies between 'cheap' and
  'expensive' (the respondent would buy at 'cheap' and balks at 'expensive'), so the answer is
  interval-censored: likelihood Phi((ln expensive - mu)/sigma) - Phi((ln cheap - mu)/sigma).
- Gabor-Granger answer (price p, intent q in [0, 1]): a soft Bernoulli on "W >= p": likelihood
  S(p)^q (1 - S(p))^(1 - q) with S = 1 - CDF.
Both kinds enter one likelihood, maximised over (mu, ln sigma) (scipy L-BFGS-B from the log-midpoint
moments). The interval likelihood is exact when the survey's price ladder does not depend on the
respondent (the usual design); the known-answer test draws a survey on a fixed ladder from a known
lognormal and recovers it.

Fidelity is reported on held-out respondents (every HOLDOUT_EVERY-th by a stable hash of kind and
respondent id, so the split never depends on the seed and a respondent's answers stay together):
- Kolmogorov-Smirnov distance between the fitted CDF and the held-out Van Westendorp answers. The
  answers are intervals, so their empirical CDF is known only within bounds: at x, between the share
  with 'expensive' <= x and the share with 'cheap' <= x. The distance at x is how far the fitted CDF
  lies outside those bounds (0 inside), and the statistic is its maximum over every held-out
  endpoint - the usual KS statistic when the intervals are cells of one price ladder, and never an
  overstatement otherwise (lenient when intervals are wide). Beside it, `ks_midpoint_distance`: the
  plain KS statistic of the intervals' geometric midpoints (strict with wide intervals, inflated by a
  coarse ladder). Reading both brackets the truth;
- mean absolute error, over the held-out Gabor-Granger price points, between the mean observed intent
  and the fitted S(p).
Fewer than MIN_RESPONDENTS_FOR_HOLDOUT respondents: the fit uses every answer and fidelity is not
reported (-1). Fewer than MIN_RESPONDENTS_TO_FIT: no calibration; the prior stands.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import optimize, stats

from smvm.errors import InvalidArgument
from smvm.v1 import grounding_pb2, persona_service_pb2

HOLDOUT_EVERY = 5
MIN_RESPONDENTS_TO_FIT = 10
MIN_RESPONDENTS_FOR_HOLDOUT = 25
SIGMA_BOUNDS = (0.05, 3.0)
# A Gabor-Granger price point takes part in the MAE only with this many held-out answers.
MIN_ANSWERS_PER_POINT = 2
UPPER_RANGE_QUANTILE = 0.9
GG_UPPER_MIN_INTENT = 0.1
# At most this share of the fitted log-variance may come from differences between personas.
MAX_BETWEEN_SHARE = 0.75
# Bounds on survey answers a stage accepts (ingestion's adapters enforce the same; a caller that
# bypasses ingestion gets INVALID_ARGUMENT naming the answer, never a crash or a nonsense fit).
MAX_ANSWERS = 500_000
MAX_PRICE_USD = 1_000_000.0
METHOD_VW = "van_westendorp_interval(cheap,expensive)"
METHOD_GG = "gabor_granger_bernoulli(intent)"
_TINY = 1e-300


@dataclass(frozen=True)
class Survey:
    """Survey answers as arrays: Van Westendorp intervals and Gabor-Granger (price, intent) pairs."""

    vw_low: np.ndarray = field(default_factory=lambda: np.empty(0))
    vw_high: np.ndarray = field(default_factory=lambda: np.empty(0))
    gg_price: np.ndarray = field(default_factory=lambda: np.empty(0))
    gg_intent: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def empty(self) -> bool:
        return self.vw_low.size == 0 and self.gg_price.size == 0


def _neg_log_likelihood(theta: np.ndarray, s: Survey) -> float:
    mu, sigma = float(theta[0]), math.exp(float(theta[1]))
    total = 0.0
    if s.vw_low.size:
        hi = stats.norm.cdf((np.log(s.vw_high) - mu) / sigma)
        lo = stats.norm.cdf((np.log(s.vw_low) - mu) / sigma)
        # A zero-width interval (cheap == expensive) is a point: its density, on the log scale.
        point = s.vw_high <= s.vw_low
        mass = np.where(point, stats.norm.pdf((np.log(s.vw_high) - mu) / sigma) / sigma, hi - lo)
        total += float(np.sum(np.log(np.maximum(mass, _TINY))))
    if s.gg_price.size:
        surv = stats.norm.sf((np.log(s.gg_price) - mu) / sigma)
        total += float(np.sum(s.gg_intent * np.log(np.maximum(surv, _TINY))
                              + (1 - s.gg_intent) * np.log(np.maximum(1 - surv, _TINY))))
    return -total


def fit_lognormal(s: Survey) -> tuple[float, float]:
    """(mu, sigma) maximising the survey's likelihood."""
    if s.empty:
        raise ValueError("no survey answers to fit")
    logs = np.concatenate([0.5 * (np.log(s.vw_low) + np.log(s.vw_high)), np.log(s.gg_price)])
    mu0 = float(np.median(logs))
    sd0 = float(np.std(logs)) if logs.size > 1 else 0.5
    x0 = np.array([mu0, math.log(min(max(sd0, SIGMA_BOUNDS[0] * 2), SIGMA_BOUNDS[1] / 2))])
    bounds = [(mu0 - 10, mu0 + 10), (math.log(SIGMA_BOUNDS[0]), math.log(SIGMA_BOUNDS[1]))]
    res = optimize.minimize(_neg_log_likelihood, x0, args=(s,), method="L-BFGS-B", bounds=bounds)
    return float(res.x[0]), float(math.exp(res.x[1]))


def lognormal_cdf(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return stats.norm.cdf((np.log(x) - mu) / sigma)


def ks_distance(points: np.ndarray, mu: float, sigma: float) -> float:
    """sup |empirical CDF of points - fitted CDF| (the one-sample Kolmogorov-Smirnov statistic)."""
    return float(stats.kstest(points, lambda x: lognormal_cdf(np.asarray(x), mu, sigma)).statistic)


def interval_ks_distance(low: np.ndarray, high: np.ndarray, mu: float, sigma: float) -> float:
    """KS distance of the fitted CDF from the bounds of the interval-censored empirical CDF.

    With zero-width intervals (low == high) this is exactly ks_distance of the points.
    """
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    lo_sorted, hi_sorted = np.sort(low), np.sort(high)
    xs = np.unique(np.concatenate([low, high]))
    n = low.size
    fit = lognormal_cdf(xs, mu, sigma)
    # Just below x (left limits) and at x, as the one-sample KS statistic does for points.
    below_x_upper = np.searchsorted(lo_sorted, xs, side="left") / n
    at_x_upper = np.searchsorted(lo_sorted, xs, side="right") / n
    below_x_lower = np.searchsorted(hi_sorted, xs, side="left") / n
    at_x_lower = np.searchsorted(hi_sorted, xs, side="right") / n
    gap = np.maximum.reduce([
        np.zeros_like(fit), below_x_lower - fit, fit - at_x_upper, at_x_lower - fit, fit - below_x_upper,
    ])
    gap = np.maximum(gap, 0.0)
    return float(gap.max()) if gap.size else 0.0


def intent_fidelity(price: np.ndarray, intent: np.ndarray, mu: float, sigma: float
                    ) -> tuple[float, list[persona_service_pb2.PricePointFidelity]]:
    """MAE over price points between mean observed intent and the fitted S(p); -1 when no point qualifies."""
    points = []
    for p in sorted(set(np.round(price, 4).tolist())):
        mask = np.isclose(price, p)
        if mask.sum() < MIN_ANSWERS_PER_POINT:
            continue
        predicted = float(stats.norm.sf((math.log(p) - mu) / sigma))
        points.append(persona_service_pb2.PricePointFidelity(
            price_usd=p, answers=int(mask.sum()), observed_intent=round(float(intent[mask].mean()), 6),
            predicted_intent=round(predicted, 6)))
    if not points:
        return -1.0, []
    return round(float(np.mean([abs(q.observed_intent - q.predicted_intent) for q in points])), 6), points


def _held_out(kind: str, respondent_id: str) -> bool:
    digest = hashlib.sha256(f"{kind}\0{respondent_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % HOLDOUT_EVERY == 0


def _survey(vw: Sequence[grounding_pb2.VanWestendorpAnswer], gg: Sequence[grounding_pb2.GaborGrangerAnswer]) -> Survey:
    return Survey(
        vw_low=np.array([a.cheap for a in vw], dtype=float), vw_high=np.array([a.expensive for a in vw], dtype=float),
        gg_price=np.array([a.price for a in gg], dtype=float), gg_intent=np.array([a.purchase_intent for a in gg], dtype=float),
    )


def check_survey(grounding: grounding_pb2.GroundingData, field: str = "idea.grounding") -> None:
    """InvalidArgument naming the first survey answer a fit cannot use (non-finite, <= 0, absurd, out of order)."""
    for name in ("van_westendorp", "gabor_granger"):
        if len(getattr(grounding, name)) > MAX_ANSWERS:
            raise InvalidArgument(f"{field}.{name}", f"at most {MAX_ANSWERS} answers", reason="TOO_MANY")
    for i, a in enumerate(grounding.van_westendorp):
        previous = None
        for part in ("too_cheap", "cheap", "expensive", "too_expensive"):
            value = getattr(a, part)
            where = f"{field}.van_westendorp[{i}].{part}"
            if not (math.isfinite(value) and 0 < value <= MAX_PRICE_USD):
                raise InvalidArgument(where, f"must be a price in (0, {MAX_PRICE_USD:g}] USD per month",
                                      reason="OUT_OF_RANGE")
            if previous is not None and value < previous:
                raise InvalidArgument(where, "must not be below the previous threshold "
                                      "(too cheap <= cheap <= expensive <= too expensive)", reason="OUT_OF_ORDER")
            previous = value
    for i, a in enumerate(grounding.gabor_granger):
        if not (math.isfinite(a.price) and 0 < a.price <= MAX_PRICE_USD):
            raise InvalidArgument(f"{field}.gabor_granger[{i}].price",
                                  f"must be a price in (0, {MAX_PRICE_USD:g}] USD per month", reason="OUT_OF_RANGE")
        if not (math.isfinite(a.purchase_intent) and 0 <= a.purchase_intent <= 1):
            raise InvalidArgument(f"{field}.gabor_granger[{i}].purchase_intent", "must be in [0, 1]",
                                  reason="OUT_OF_RANGE")


def upper_range(grounding: grounding_pb2.GroundingData) -> float:
    """The grounding data's upper WTP range: the 90th percentile of 'too expensive' answers, else the
    highest tested Gabor-Granger price with mean intent >= 0.1 (0 when there is neither)."""
    if grounding.van_westendorp:
        return float(np.quantile([a.too_expensive for a in grounding.van_westendorp], UPPER_RANGE_QUANTILE))
    by_price: dict[float, list[float]] = {}
    for a in grounding.gabor_granger:
        by_price.setdefault(round(a.price, 4), []).append(a.purchase_intent)
    wanted = [p for p, q in by_price.items() if float(np.mean(q)) >= GG_UPPER_MIN_INTENT]
    return max(wanted, default=max(by_price, default=0.0))


def calibrate(grounding: grounding_pb2.GroundingData) -> persona_service_pb2.WtpCalibration:
    """Fit and fidelity for an idea's grounding data; calibrated=False (with a note) when there is too little.

    Answers a fit cannot use are an InvalidArgument naming them (check_survey).
    """
    check_survey(grounding)
    vw, gg = list(grounding.van_westendorp), list(grounding.gabor_granger)
    respondents = {("vw", a.respondent_id) for a in vw} | {("gg", a.respondent_id) for a in gg}
    import_ids = [q.import_id for q in grounding.quality if q.kind in ("van_westendorp", "gabor_granger")]
    out = persona_service_pb2.WtpCalibration(import_ids=import_ids, ks_distance=-1.0, intent_mae=-1.0,
                                             ks_midpoint_distance=-1.0)
    if len(respondents) < MIN_RESPONDENTS_TO_FIT:
        if respondents:
            out.notes.append(f"calibration:skipped: {len(respondents)} survey respondent(s), fewer than "
                             f"{MIN_RESPONDENTS_TO_FIT}; WTP comes from the domain prior")
        return out
    out.method = "lognormal_mle:" + "+".join(m for m, present in ((METHOD_VW, vw), (METHOD_GG, gg)) if present)
    holdout = len(respondents) >= MIN_RESPONDENTS_FOR_HOLDOUT
    vw_fit = [a for a in vw if not (holdout and _held_out("vw", a.respondent_id))]
    gg_fit = [a for a in gg if not (holdout and _held_out("gg", a.respondent_id))]
    vw_out = [a for a in vw if holdout and _held_out("vw", a.respondent_id)]
    gg_out = [a for a in gg if holdout and _held_out("gg", a.respondent_id)]
    mu, sigma = fit_lognormal(_survey(vw_fit, gg_fit))
    out.calibrated = True
    out.mu, out.sigma, out.median_usd = round(mu, 6), round(sigma, 6), round(math.exp(mu), 4)
    fit_ids = {("vw", a.respondent_id) for a in vw_fit} | {("gg", a.respondent_id) for a in gg_fit}
    out.fit_respondents = len(fit_ids)
    out.holdout_respondents = len(respondents) - len(fit_ids)
    if not holdout:
        out.notes.append(f"fidelity:not_reported: {len(respondents)} respondents, fewer than "
                         f"{MIN_RESPONDENTS_FOR_HOLDOUT} to hold some out; the fit uses all")
    if vw_out:
        out.ks_distance = round(interval_ks_distance(np.array([a.cheap for a in vw_out]),
                                                     np.array([a.expensive for a in vw_out]), mu, sigma), 6)
        mids = np.sqrt(np.array([a.cheap * a.expensive for a in vw_out]))
        out.ks_midpoint_distance = round(ks_distance(mids, mu, sigma), 6)
    if gg_out:
        mae, points = intent_fidelity(np.array([a.price for a in gg_out]), np.array([a.purchase_intent for a in gg_out]),
                                      mu, sigma)
        out.intent_mae = mae
        out.price_points.extend(points)
    out.upper_range_usd = round(upper_range(grounding), 4)
    return out


def calibrated_wtp(medians: Sequence[float], sigmas: Sequence[float], weights: Sequence[float], mu: float, sigma: float
                   ) -> tuple[list[float], list[float]]:
    """Persona (median, sigma) pairs whose weighted mixture has the fitted log-mean and log-variance.

    The personas' log-medians are shifted so their weighted mean is mu; the spread between personas
    is kept (shrunk when it alone would exceed MAX_BETWEEN_SHARE of sigma^2), and the personas' own
    sigmas are scaled (keeping their ratios) so their weighted mean square is what remains:
    sigma^2 - between variance. The prior keeps the segments' order and relative positions; the
    survey sets the level and the spread.
    """
    logs = np.log(np.asarray(medians, dtype=float))
    w = np.asarray(weights, dtype=float) / math.fsum(weights)
    centre = float(np.sum(w * logs))
    between = float(np.sum(w * (logs - centre) ** 2))
    target = sigma ** 2
    scale = 1.0 if between <= MAX_BETWEEN_SHARE * target else math.sqrt(MAX_BETWEEN_SHARE * target / between)
    new_logs = mu + scale * (logs - centre)
    within = math.sqrt(max(target - scale ** 2 * between, 0.0))
    own = np.asarray(sigmas, dtype=float)
    rms = math.sqrt(float(np.sum(w * own ** 2)))
    return [float(math.exp(x)) for x in new_logs], [float(within * x / rms) for x in own]

