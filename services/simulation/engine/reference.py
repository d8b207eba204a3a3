"""The same model as kernel.py in plain numpy, on the same draws: the tests' oracle and the
benchmark's baseline.

Draws are taken per iteration in the kernel's order (market, N uniforms, N x (3+F) normals), so
one Generator yields identical numbers to both; the arithmetic is then vectorised over the whole
chunk (iterations x customers x offerings), which is how one would write it in numpy.
"""

from __future__ import annotations

import numpy as np

from services.simulation.engine.kernel import LOSS_MARGIN


def _softmax_with_none(u: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis plus the outside option (utility 0), appended last."""
    mx = u.max(axis=-1, keepdims=True, initial=0.0)
    ex = np.exp(u - mx)
    e_none = np.exp(-mx)
    tot = ex.sum(axis=-1, keepdims=True) + e_none
    return np.concatenate([ex / tot, e_none / tot], axis=-1)


def simulate(spec, rng: np.random.Generator, n_iter: int):
    n_cust, months = spec.customers, spec.months
    n_feat = spec.seg_importance.shape[1]
    n_off = spec.n_offerings
    low, high, p_mean, p_sd, q_mean, q_sd, churn_mean, churn_sd, scale_sd, step = spec.market

    market = np.empty((n_iter, 5))
    u_seg = np.empty((n_iter, n_cust))
    z = np.empty((n_iter, n_cust, 3 + n_feat))
    for it in range(n_iter):
        m_u = rng.random()
        zm = rng.standard_normal(4)
        market[it] = [low + (high - low) * m_u, zm[0], zm[1], zm[2], zm[3]]
        u_seg[it] = rng.random(n_cust)
        z[it] = rng.standard_normal((n_cust, 3 + n_feat))
    zp, zq, zc, zs = market[:, 1].copy(), market[:, 2].copy(), market[:, 3].copy(), market[:, 4].copy()
    p = p_mean * np.exp(p_sd * zp - 0.5 * p_sd * p_sd)
    q = q_mean * np.exp(q_sd * zq - 0.5 * q_sd * q_sd)
    churn = np.clip(churn_mean * np.exp(churn_sd * zc - 0.5 * churn_sd * churn_sd), 0.0, 0.5)
    scale = np.exp(scale_sd * zs)
    market[:, 1], market[:, 2], market[:, 3], market[:, 4] = p, q, churn, scale
    m_size = market[:, 0]

    seg = np.minimum(np.searchsorted(spec.seg_cumw, u_seg, side="right"), len(spec.seg_cumw) - 1)
    tau = spec.seg_taste_sd[seg]
    wtp = spec.seg_wtp_median[seg] * np.exp(spec.seg_wtp_sigma[seg] * z[..., 0])
    k = spec.seg_beta[seg] * np.exp(tau * z[..., 1]) * scale[:, None] / wtp
    brand = spec.seg_brand[seg] * np.exp(tau * z[..., 2])
    importance = spec.seg_importance[seg] * np.exp(tau[..., None] * z[..., 3:])
    a = brand[..., None] * spec.off_brand + importance @ spec.off_features.T  # (I, N, J)

    u = a - k[..., None] * spec.off_price  # (I, N, J)
    base = _softmax_with_none(u).mean(axis=1)  # (I, J+1)
    pre = _softmax_with_none(u[..., 1:]).mean(axis=1)[:, :-1]  # competitors before our entry
    ug = a[..., :1] - k[..., None] * spec.price_grid  # (I, N, G): our utility at each grid price
    cmax = np.maximum(u[..., 1:].max(axis=-1, keepdims=True, initial=0.0), 0.0)
    csum = np.exp(-cmax) + np.exp(u[..., 1:] - cmax).sum(axis=-1, keepdims=True)
    with np.errstate(over="ignore"):
        above = 1.0 / (1.0 + csum * np.exp(cmax - ug))
        eg = np.exp(np.minimum(ug - cmax, 0.0))
    demand = np.where(ug > cmax, above, eg / (csum + eg)).mean(axis=1)

    customers = np.empty((n_iter, months))
    share = np.empty((n_iter, months))
    revenue = np.empty((n_iter, months))
    prices = np.tile(spec.off_price, (n_iter, 1))
    cur = base
    ratio, decay = q / p, np.exp(-(p + q))
    aware = np.zeros(n_iter)
    ours = np.zeros(n_iter)
    respond = spec.competitive_response and n_off > 1
    for t in range(months):
        if respond and t > 0:
            ut = a - k[..., None] * prices[:, None, :]
            ut[..., 0] = u[..., 0]
            cur = _softmax_with_none(ut).mean(axis=1)
        kk = (1.0 - aware) / (1.0 + ratio * aware)
        ke = kk * decay
        new = (1.0 - ke) / (1.0 + ratio * ke) - aware
        ours = ours + cur[:, 0] * new - churn * ours
        aware = aware + new - churn * aware
        customers[:, t] = m_size * ours
        share[:, t] = np.where(aware > 0.0, ours / np.where(aware > 0.0, aware, 1.0), 0.0)
        revenue[:, t] = m_size * ours * spec.off_price[0]
        if respond and t < months - 1:
            lost = cur[:, 1:n_off] < pre * (1.0 - LOSS_MARGIN)
            prices[:, 1:] = np.where(lost, prices[:, 1:] * (1.0 - step), prices[:, 1:])
    evaluations = n_iter * spec.evaluations_per_iteration()
    return market, customers, share, revenue, cur.copy(), prices, base[:, 0].copy(), demand, wtp, evaluations
