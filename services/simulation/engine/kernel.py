"""The numba kernel: one chunk of Monte Carlo iterations of the SMVM market model.

Model (the numpy oracle in reference.py implements the same equations on the same draws)
---------------------------------------------------------------------------------------
Per iteration, market-level draws (in this order from the chunk's Generator):
  M     = low + (high - low) * U                       reachable customers, U ~ U[0, 1)
  p     = p_mean * exp(sd_p * z - sd_p^2 / 2)          Bass innovation (mean-preserving lognormal;
  q     = q_mean * exp(sd_q * z - sd_q^2 / 2)          p_mean, q_mean already carry the segments'
                                                       weighted innovation / imitation multipliers)
  churn = clip(churn_mean * exp(sd_c * z - sd_c^2 / 2), 0, 0.5)   monthly
  scale = exp(sd_s * z)                                market-wide price-sensitivity multiplier
Then N customers: N uniforms pick segments by cumulative weight, then (3 + F) normals per customer:
  wtp_i   = wtp_median_s * exp(wtp_sigma_s * z0)
  beta_i  = price_sensitivity_s * exp(tau_s * z1)      tau_s = 0.5 * wtp_sigma_s (spec.py)
  brand_i = brand_affinity_s * exp(tau_s * z2)
  w_if    = feature_importance_sf * exp(tau_s * z_{3+f})
Utility of offering j (ours j = 0, competitors 1..J-1), outside option "none" = 0:
  u_ij = sum_f w_if x_jf + brand_i b_j - beta_i * scale * price_j / wtp_i
The price term is WTP-anchored: paying one's own WTP costs beta_i * scale utils, so the same
dollar price hurts a low-WTP customer more, and the per-dollar price coefficient beta*scale/wtp
is consistent with the drawn WTP. Choice probabilities are the softmax over {offerings, none},
computed with the max subtracted; shares are mean probabilities over the N customers (no sampling).

Demand curve: our share at each price_grid point with the same customers (common random numbers);
competitors' utilities do not depend on our price, so one evaluation per point.

Monthly dynamics over T months, A = aware/adopting fraction of M, C = our customers / M:
  one-month exact Bass flow from A: K = (1 - A) / (1 + (q/p) A), E = exp(-(p + q)),
  A' = (1 - K E) / (1 + (q/p) K E), new adopters g = A' - A;
  C <- C + s_t g - churn C;  A <- A + g - churn A  (churned adopters return to the unaware pool).
With churn 0 and s = 1, C(t) is the closed form F(t) = (1-e^{-(p+q)t}) / (1 + (q/p) e^{-(p+q)t}).
Reported: customers M C, share C / A (our share of adopters), revenue M C price_0.
s_t is our choice share; without competitive response it is the base share every month.
With competitive response, after month t < T each competitor whose choice share is below its
share in the market before our entry (same customers, no "ours" option) cuts its price by
reprice_step; the shares of month t+1 are recomputed at the new prices (J-1 evaluations per
customer). Cuts continue while the incumbent stays under its pre-entry share.

Evaluation count per customer: J + G (+ (T-1)(J-1) with response); see budget.py.
Determinism: only the Generator passed in draws numbers; no fastmath (it would let LLVM reorder
sums); each chunk runs single-threaded, so results do not depend on the thread count.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit

ENGINE = f"numba-{numba.__version__}"
# A competitor "loses share" only when the fall exceeds this relative margin, so that rounding
# differences far below it cannot flip a re-pricing decision between kernel and reference.
LOSS_MARGIN = 1e-9


@njit(cache=True, nogil=True)
def simulate_chunk(rng, n_iter, n_cust, months, response, seg_cumw, seg_wtp_median, seg_wtp_sigma,
                   seg_taste_sd, seg_beta, seg_brand, seg_importance, off_features, off_brand, off_price,
                   grid, market):
    n_seg, n_feat = seg_importance.shape
    n_off = off_price.shape[0]
    n_grid = grid.shape[0]
    low, high = market[0], market[1]
    p_mean, p_sd, q_mean, q_sd = market[2], market[3], market[4], market[5]
    churn_mean, churn_sd, scale_sd, step = market[6], market[7], market[8], market[9]

    draws = np.empty((n_iter, 5))
    customers = np.empty((n_iter, months))
    share = np.empty((n_iter, months))
    revenue = np.empty((n_iter, months))
    final_shares = np.empty((n_iter, n_off + 1))
    final_prices = np.empty((n_iter, n_off))
    base_share = np.empty(n_iter)
    demand = np.empty((n_iter, n_grid))
    wtp = np.empty((n_iter, n_cust))

    u_seg = np.empty(n_cust)
    z = np.empty((n_cust, 3 + n_feat))
    a = np.empty((n_cust, n_off))
    k = np.empty(n_cust)
    u_ours = np.empty(n_cust)
    e = np.empty(n_off)
    pre = np.empty(n_off)
    cur = np.empty(n_off + 1)
    prices = np.empty(n_off)
    dem = np.empty(n_grid)
    evaluations = 0

    for it in range(n_iter):
        m_size = low + (high - low) * rng.random()
        zp = rng.standard_normal()
        zq = rng.standard_normal()
        zc = rng.standard_normal()
        zs = rng.standard_normal()
        p = p_mean * math.exp(p_sd * zp - 0.5 * p_sd * p_sd)
        q = q_mean * math.exp(q_sd * zq - 0.5 * q_sd * q_sd)
        churn = min(max(churn_mean * math.exp(churn_sd * zc - 0.5 * churn_sd * churn_sd), 0.0), 0.5)
        scale = math.exp(scale_sd * zs)
        draws[it, 0] = m_size
        draws[it, 1] = p
        draws[it, 2] = q
        draws[it, 3] = churn
        draws[it, 4] = scale
        for i in range(n_cust):
            u_seg[i] = rng.random()
        for i in range(n_cust):
            for c in range(3 + n_feat):
                z[i, c] = rng.standard_normal()

        # Customers: coefficients and the price-independent part of each utility.
        for i in range(n_cust):
            s = 0
            while s < n_seg - 1 and u_seg[i] >= seg_cumw[s]:
                s += 1
            tau = seg_taste_sd[s]
            w = seg_wtp_median[s] * math.exp(seg_wtp_sigma[s] * z[i, 0])
            wtp[it, i] = w
            k[i] = seg_beta[s] * math.exp(tau * z[i, 1]) * scale / w
            b = seg_brand[s] * math.exp(tau * z[i, 2])
            for j in range(n_off):
                a[i, j] = b * off_brand[j]
            for f in range(n_feat):
                imp = seg_importance[s, f] * math.exp(tau * z[i, 3 + f])
                for j in range(n_off):
                    a[i, j] += imp * off_features[j, f]

        # Base market at list prices, the market before our entry, and the demand curve.
        for j in range(n_off):
            pre[j] = 0.0
        for j in range(n_off + 1):
            cur[j] = 0.0
        for g in range(n_grid):
            dem[g] = 0.0
        for i in range(n_cust):
            cmax = 0.0
            for j in range(1, n_off):
                e[j] = a[i, j] - k[i] * off_price[j]
                if e[j] > cmax:
                    cmax = e[j]
            u0 = a[i, 0] - k[i] * off_price[0]
            u_ours[i] = u0
            e_none = math.exp(-cmax)
            csum = e_none
            for j in range(1, n_off):
                e[j] = math.exp(e[j] - cmax)
                csum += e[j]
            for j in range(1, n_off):
                pre[j] += e[j] / csum
            mx = u0 if u0 > cmax else cmax
            e0 = math.exp(u0 - mx)
            r = math.exp(cmax - mx)
            tot = e0 + csum * r
            cur[0] += e0 / tot
            for j in range(1, n_off):
                cur[j] += e[j] * r / tot
            cur[n_off] += e_none * r / tot
            for g in range(n_grid):
                ug = a[i, 0] - k[i] * grid[g]
                if ug > cmax:
                    dem[g] += 1.0 / (1.0 + csum * math.exp(cmax - ug))
                else:
                    eg = math.exp(ug - cmax)
                    dem[g] += eg / (csum + eg)
        evaluations += n_cust * (n_off + n_grid)
        for j in range(n_off):
            pre[j] /= n_cust
            prices[j] = off_price[j]
        for j in range(n_off + 1):
            cur[j] /= n_cust
        for g in range(n_grid):
            demand[it, g] = dem[g] / n_cust
        base_share[it] = cur[0]

        # Months: Bass adoption, our share of new adopters, churn; optional competitor re-pricing.
        ratio = q / p
        decay = math.exp(-(p + q))
        aware = 0.0
        ours = 0.0
        for t in range(months):
            if response and t > 0 and n_off > 1:
                for j in range(n_off + 1):
                    cur[j] = 0.0
                for i in range(n_cust):
                    u0 = u_ours[i]
                    mx = u0 if u0 > 0.0 else 0.0
                    for j in range(1, n_off):
                        e[j] = a[i, j] - k[i] * prices[j]
                        if e[j] > mx:
                            mx = e[j]
                    e0 = math.exp(u0 - mx)
                    e_none = math.exp(-mx)
                    tot = e0 + e_none
                    for j in range(1, n_off):
                        e[j] = math.exp(e[j] - mx)
                        tot += e[j]
                    cur[0] += e0 / tot
                    for j in range(1, n_off):
                        cur[j] += e[j] / tot
                    cur[n_off] += e_none / tot
                evaluations += n_cust * (n_off - 1)
                for j in range(n_off + 1):
                    cur[j] /= n_cust
            kk = (1.0 - aware) / (1.0 + ratio * aware)
            ke = kk * decay
            adopted = (1.0 - ke) / (1.0 + ratio * ke)
            new = adopted - aware
            ours = ours + cur[0] * new - churn * ours
            aware = aware + new - churn * aware
            customers[it, t] = m_size * ours
            share[it, t] = ours / aware if aware > 0.0 else 0.0
            revenue[it, t] = m_size * ours * off_price[0]
            if response and t < months - 1:
                for j in range(1, n_off):
                    if cur[j] < pre[j] * (1.0 - LOSS_MARGIN):
                        prices[j] *= 1.0 - step
        for j in range(n_off + 1):
            final_shares[it, j] = cur[j]
        for j in range(n_off):
            final_prices[it, j] = prices[j]

    return draws, customers, share, revenue, final_shares, final_prices, base_share, demand, wtp, evaluations


def simulate(spec, rng, n_iter):
    """The kernel on a SimSpec; returns the same tuple as reference.simulate."""
    return simulate_chunk(
        rng, n_iter, spec.customers, spec.months, spec.competitive_response, spec.seg_cumw, spec.seg_wtp_median,
        spec.seg_wtp_sigma, spec.seg_taste_sd, spec.seg_beta, spec.seg_brand, spec.seg_importance,
        spec.off_features, spec.off_brand, spec.off_price, spec.price_grid, spec.market,
    )


def warmup() -> None:
    """Compile (or load from NUMBA_CACHE_DIR) the kernel with the argument types the service uses."""
    rng = np.random.Generator(np.random.PCG64(0))
    one = np.ones(1)
    simulate_chunk(rng, 1, 2, 2, True, one, one, one * 0.1, one * 0.05, one, one, np.ones((1, 1)),
                   np.ones((2, 1)), np.ones(2), np.ones(2), np.ones(2), np.array([1.0, 2.0, 0.03, 0.1, 0.38, 0.1, 0.02, 0.1, 0.1, 0.02]))
