"""The numba kernel: one chunk of Monte Carlo iterations of the SMVM market model.

Model (the numpy oracle in reference.py implements the same equations on the same draws)
---------------------------------------------------------------------------------------
Draws, from the chunk's SFC64 Generator in this order (streams.py makes them inside numba, bit for
bit equal to numpy's `random()` / `standard_normal()`):
  1. Uniforms, a block of n_iter x (1 + N): per iteration the market-size uniform U, then the N
     customers' segment uniforms.
  2. Normals, a block of n_iter x (4 + (3 + F) N): per iteration zp, zq, zc, zs, then the customers'
     coefficient normals coefficient-major (N for WTP, N for price sensitivity, N for brand, then
     N per feature), so that loops over customers read contiguous memory.
Per iteration, market-level parameters:
  M     = low + (high - low) * U                       reachable customers
  p     = p_mean * exp(sd_p * z - sd_p^2 / 2)          Bass innovation (mean-preserving lognormal;
  q     = q_mean * exp(sd_q * z - sd_q^2 / 2)          p_mean, q_mean already carry the segments'
                                                       weighted innovation / imitation multipliers)
  churn = clip(churn_mean * exp(sd_c * z - sd_c^2 / 2), 0, 0.5)   monthly
  scale = exp(sd_s * z)                                market-wide price-sensitivity multiplier
Then N customers: their uniforms pick segments by cumulative weight; with their (3 + F) normals:
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
competitors' utilities do not depend on our price, so one evaluation per point. With
d = u_i0(grid_g) - cmax_i and C_i = e^{-cmax_i} (1 + sum_c e^{u_ic}) (the competitors' and none's
max-shifted exponentials), the share is the logistic form 1 / (1 + C_i e^{-d}), stable for any d:
it can only underflow to 0 when e^{-d} overflows, where the share is below 1e-300.

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

Evaluation count per customer: J + G (+ (T-1)(J-1) with response); see budget.py. Each counted
evaluation is a utility actually computed (and exponentiated) for that customer; competitors'
utilities are computed once per customer and price state, not once per grid point.

Speed: every loop over customers is branch-free straight-line arithmetic (vexp.py instead of the C
library's exp; error_model="numpy", since numba's default Python error model puts a zero-division
branch in every float division), so LLVM vectorises it across customers; the random words come
from SFC64 run in registers (streams.py). Determinism: only the chunk's stream draws numbers; no
fastmath (LLVM keeps every sum in program order, and means over customers use 8 fixed partial
sums); fused multiply-adds only where written (llvm.fma, exactly rounded on any CPU); each chunk
runs single-threaded, so results do not depend on the thread, chunk-batch or shard count.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit

from services.simulation.engine import streams
from services.simulation.engine.vexp import fma, vexp

ENGINE = f"numba-{numba.__version__}"
# A competitor "loses share" only when the fall exceeds this relative margin, so that rounding
# differences far below it cannot flip a re-pricing decision between kernel and reference.
LOSS_MARGIN = 1e-9


@njit(inline="always")
def _mean(v):
    """Mean of a 1-d array in a fixed order: 8 interleaved partial sums (one AVX-512 or two AVX2
    registers, so the adds do not wait on each other), then a fixed pairwise combination."""
    n = v.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    m = n - n % 8
    for i in range(0, m, 8):
        s0 += v[i]
        s1 += v[i + 1]
        s2 += v[i + 2]
        s3 += v[i + 3]
        s4 += v[i + 4]
        s5 += v[i + 5]
        s6 += v[i + 6]
        s7 += v[i + 7]
    for i in range(m, n):
        s0 += v[i]
    return (((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))) / n


@njit(inline="always")
def _bass_month(aware, ours, s, ratio, decay, churn):
    """One month: the exact one-month Bass flow from `aware`, our share `s` of the new adopters,
    churn on both; returns (aware, ours, new adopters)."""
    kk = (1.0 - aware) / (1.0 + ratio * aware)
    ke = kk * decay
    new = (1.0 - ke) / (1.0 + ratio * ke) - aware
    return aware + new - churn * aware, ours + s * new - churn * ours


@njit(cache=True, nogil=True, error_model="numpy")
def adoption_paths(draws, base_share, price0, customers, share, revenue):
    """The months without competitive response, where our share is the base share every month:
    the recurrence for all iterations at once (month-major buffers, so the loop over iterations
    vectorises). `draws` rows are [market size, p, q, churn, scale]; fills customers, share and
    revenue (n_iter, T). Also the whole of a Bass p, q or churn swing (swings.py): those drivers
    enter only here."""
    n_iter, months = customers.shape
    m_aware = np.zeros(n_iter)
    m_ours = np.zeros(n_iter)
    m_ratio = np.empty(n_iter)
    m_decay = np.empty(n_iter)
    m_size_it = np.empty(n_iter)
    m_churn = np.empty(n_iter)
    by_month = np.empty((3, months, n_iter))
    for it in range(n_iter):
        m_size_it[it] = draws[it, 0]
        m_ratio[it] = draws[it, 2] / draws[it, 1]
        m_decay[it] = math.exp(-(draws[it, 1] + draws[it, 2]))
        m_churn[it] = draws[it, 3]
    for t_month in range(months):
        for it in range(n_iter):
            aware, ours = _bass_month(m_aware[it], m_ours[it], base_share[it], m_ratio[it], m_decay[it],
                                      m_churn[it])
            m_aware[it] = aware
            m_ours[it] = ours
            by_month[0, t_month, it] = m_size_it[it] * ours
            by_month[1, t_month, it] = ours / aware if aware > 0.0 else 0.0
            by_month[2, t_month, it] = m_size_it[it] * ours * price0
    for it in range(n_iter):
        for t_month in range(months):
            customers[it, t_month] = by_month[0, t_month, it]
            share[it, t_month] = by_month[1, t_month, it]
            revenue[it, t_month] = by_month[2, t_month, it]


@njit(cache=True, nogil=True, error_model="numpy")
def simulate_chunk(state, n_iter, n_cust, months, response, seg_cumw, seg_wtp_median, seg_wtp_sigma,
                   seg_taste_sd, seg_beta, seg_brand, seg_importance, off_features, off_brand, off_price,
                   grid, market):
    """One chunk. `state` holds the chunk's SFC64 words and is advanced in place."""
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

    uniforms = np.empty(n_iter * (1 + n_cust))
    streams.fill_doubles(state, uniforms)
    z = np.empty(4 + (3 + n_feat) * n_cust)
    seg = np.empty(n_cust, np.intp)
    n_coef = (3 + n_feat) * n_cust
    c_median = np.empty(n_coef)
    c_sd = np.empty(n_coef)
    coef = np.empty(n_coef)
    k = np.empty(n_cust)
    a = np.empty((n_off, n_cust))
    e = np.empty((n_off, n_cust))
    cmax = np.empty(n_cust)
    csum = np.empty(n_cust)
    enone = np.empty(n_cust)
    u_ours = np.empty(n_cust)
    e_ours = np.empty(n_cust)
    ratio_r = np.empty(n_cust)
    tot = np.empty(n_cust)
    inv = np.empty(n_cust)
    prob = np.empty(n_cust)
    pre = np.empty(n_off)
    cur = np.empty(n_off + 1)
    prices = np.empty(n_off)
    evaluations = 0
    respond = response and n_off > 1

    for it in range(n_iter):
        ub = it * (1 + n_cust)
        streams.fill_normals(state, z)
        m_size = low + (high - low) * uniforms[ub]
        p = p_mean * math.exp(p_sd * z[0] - 0.5 * p_sd * p_sd)
        q = q_mean * math.exp(q_sd * z[1] - 0.5 * q_sd * q_sd)
        churn = min(max(churn_mean * math.exp(churn_sd * z[2] - 0.5 * churn_sd * churn_sd), 0.0), 0.5)
        scale = math.exp(scale_sd * z[3])
        draws[it, 0] = m_size
        draws[it, 1] = p
        draws[it, 2] = q
        draws[it, 3] = churn
        draws[it, 4] = scale

        # Customers: segment (the number of cumulative weights at or below the uniform: branch-free),
        # coefficients, and the price-independent part a[j, i] of each utility.
        for i in range(n_cust):
            seg[i] = 0
        for s in range(n_seg - 1):
            cw = seg_cumw[s]
            for i in range(n_cust):
                seg[i] += 1 if uniforms[ub + 1 + i] >= cw else 0
        # Every coefficient is median * exp(log-sd * z) (lognormal): the segments' medians and
        # log-sds laid out like the normal block (coefficient-major), then one flat loop.
        for i in range(n_cust):
            s = seg[i]
            taste_sd = seg_taste_sd[s]
            c_median[i] = seg_wtp_median[s]
            c_sd[i] = seg_wtp_sigma[s]
            c_median[n_cust + i] = seg_beta[s]
            c_sd[n_cust + i] = taste_sd
            c_median[2 * n_cust + i] = seg_brand[s]
            c_sd[2 * n_cust + i] = taste_sd
            for f in range(n_feat):
                c_median[(3 + f) * n_cust + i] = seg_importance[s, f]
                c_sd[(3 + f) * n_cust + i] = taste_sd
        for c in range(n_coef):
            coef[c] = c_median[c] * vexp(c_sd[c] * z[4 + c])
        wtp_it = wtp[it]
        for i in range(n_cust):
            w = coef[i]
            wtp_it[i] = w
            k[i] = coef[n_cust + i] * scale / w
        for j in range(n_off):
            bj = off_brand[j]
            a_j = a[j]
            for i in range(n_cust):
                a_j[i] = coef[2 * n_cust + i] * bj
        for f in range(n_feat):
            imp_f = coef[(3 + f) * n_cust:(4 + f) * n_cust]
            for j in range(n_off):
                x = off_features[j, f]
                a_j = a[j]
                for i in range(n_cust):
                    a_j[i] = fma(imp_f[i], x, a_j[i])

        # The market before our entry (competitors and none), our base share, the demand curve.
        for i in range(n_cust):
            cmax[i] = 0.0
        for j in range(1, n_off):
            pj = off_price[j]
            for i in range(n_cust):
                uj = a[j, i] - k[i] * pj
                e[j, i] = uj
                cmax[i] = max(cmax[i], uj)
        for i in range(n_cust):
            enone[i] = vexp(-cmax[i])
            csum[i] = enone[i]
        for j in range(1, n_off):
            for i in range(n_cust):
                ej = vexp(e[j, i] - cmax[i])
                e[j, i] = ej
                csum[i] += ej
        if respond:  # the pre-entry shares are only the re-pricing rule's reference
            for i in range(n_cust):
                inv[i] = 1.0 / csum[i]
            for j in range(1, n_off):
                for i in range(n_cust):
                    prob[i] = e[j, i] * inv[i]
                pre[j] = _mean(prob)
        p0 = off_price[0]
        for i in range(n_cust):
            u0 = a[0, i] - k[i] * p0
            u_ours[i] = u0
            d = u0 - cmax[i]
            t = vexp(-abs(d))
            e_ours[i] = 1.0 if d > 0.0 else t
            ratio_r[i] = t if d > 0.0 else 1.0
            tot[i] = e_ours[i] + csum[i] * ratio_r[i]
        for i in range(n_cust):
            inv[i] = 1.0 / tot[i]
            prob[i] = e_ours[i] * inv[i]
            inv[i] *= ratio_r[i]  # competitors' and none's factor: r / tot
        cur[0] = _mean(prob)
        for j in range(1, n_off):
            for i in range(n_cust):
                prob[i] = e[j, i] * inv[i]
            cur[j] = _mean(prob)
        for i in range(n_cust):
            prob[i] = enone[i] * inv[i]
        cur[n_off] = _mean(prob)
        for g in range(n_grid):
            pg = grid[g]
            for i in range(n_cust):
                d = (a[0, i] - k[i] * pg) - cmax[i]
                prob[i] = 1.0 / (1.0 + csum[i] * vexp(-d))
            demand[it, g] = _mean(prob)
        evaluations += n_cust * (n_off + n_grid)
        base_share[it] = cur[0]
        for j in range(n_off + 1):
            final_shares[it, j] = cur[j]
        for j in range(n_off):
            prices[j] = off_price[j]
            final_prices[it, j] = prices[j]

        if not respond:
            continue  # months run for the whole chunk at once, below
        # Months with competitive response: Bass adoption, our share of new adopters, churn, and
        # competitors re-pricing after each month in which they are under their pre-entry share.
        ratio = q / p
        decay = math.exp(-(p + q))
        aware = 0.0
        ours = 0.0
        for t_month in range(months):
            if t_month > 0:
                for i in range(n_cust):
                    cmax[i] = max(u_ours[i], 0.0)
                for j in range(1, n_off):
                    pj = prices[j]
                    for i in range(n_cust):
                        uj = a[j, i] - k[i] * pj
                        e[j, i] = uj
                        cmax[i] = max(cmax[i], uj)
                for i in range(n_cust):
                    e_ours[i] = vexp(u_ours[i] - cmax[i])
                    enone[i] = vexp(-cmax[i])
                    tot[i] = e_ours[i] + enone[i]
                for j in range(1, n_off):
                    for i in range(n_cust):
                        ej = vexp(e[j, i] - cmax[i])
                        e[j, i] = ej
                        tot[i] += ej
                for i in range(n_cust):
                    inv[i] = 1.0 / tot[i]
                    prob[i] = e_ours[i] * inv[i]
                cur[0] = _mean(prob)
                for j in range(1, n_off):
                    for i in range(n_cust):
                        prob[i] = e[j, i] * inv[i]
                    cur[j] = _mean(prob)
                for i in range(n_cust):
                    prob[i] = enone[i] * inv[i]
                cur[n_off] = _mean(prob)
                evaluations += n_cust * (n_off - 1)
            aware, ours = _bass_month(aware, ours, cur[0], ratio, decay, churn)
            customers[it, t_month] = m_size * ours
            share[it, t_month] = ours / aware if aware > 0.0 else 0.0
            revenue[it, t_month] = m_size * ours * off_price[0]
            if t_month < months - 1:
                for j in range(1, n_off):
                    if cur[j] < pre[j] * (1.0 - LOSS_MARGIN):
                        prices[j] *= 1.0 - step
        for j in range(n_off + 1):
            final_shares[it, j] = cur[j]
        for j in range(n_off):
            final_prices[it, j] = prices[j]

    if not respond:
        adoption_paths(draws, base_share, off_price[0], customers, share, revenue)
    return draws, customers, share, revenue, final_shares, final_prices, base_share, demand, wtp, evaluations


def simulate(spec, rng, n_iter):
    """The kernel on a SimSpec with the chunk's SFC64 Generator (advanced as numpy would be);
    returns the same tuple as reference.simulate."""
    state = streams.state_of(rng)
    out = simulate_chunk(
        state, n_iter, spec.customers, spec.months, spec.competitive_response, spec.seg_cumw, spec.seg_wtp_median,
        spec.seg_wtp_sigma, spec.seg_taste_sd, spec.seg_beta, spec.seg_brand, spec.seg_importance,
        spec.off_features, spec.off_brand, spec.off_price, spec.price_grid, spec.market,
    )
    streams.set_state(rng, state)
    return out


def warmup() -> None:
    """Compile (or load from NUMBA_CACHE_DIR) everything the engine runs, with the argument types
    the service uses: the kernel and the chunk histogram."""
    from services.simulation.engine import binning

    state = streams.state_of(np.random.Generator(np.random.SFC64(0)))
    one = np.ones(1)
    simulate_chunk(state, 1, 2, 2, True, one, one, one * 0.1, one * 0.05, one, one, np.ones((1, 1)),
                   np.ones((2, 1)), np.ones(2), np.ones(2), np.ones(2),
                   np.array([1.0, 2.0, 0.03, 0.1, 0.38, 0.1, 0.02, 0.1, 0.1, 0.02]))
    binning.counts(np.ones((1, 1)), one, np.array([False, True]), np.zeros(2), np.ones(2), 4)
    adoption_paths(np.ones((1, 5)), one, 1.0, np.empty((1, 2)), np.empty((1, 2)), np.empty((1, 2)))
