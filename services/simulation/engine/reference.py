"""The same model as kernel.py in plain numpy, on the same draws: the tests' oracle and the
benchmark's baseline.

The draws are numpy's own: two calls per chunk on the chunk's SFC64 Generator, `random` for the
uniform block and `standard_normal` for the normal block, in the layout kernel.py documents (the
kernel reproduces these numbers bit for bit). The arithmetic is vectorised over the whole chunk
(iterations x customers x offerings / price points) and follows the kernel's algorithm step for
step, with the same number of exponentials (one per utility, plus the outside option's), which is
how one would write this model in numpy; only the months, a recurrence, loop in Python.
"""

from __future__ import annotations

import numpy as np

from services.simulation.engine.kernel import LOSS_MARGIN


def simulate(spec, rng: np.random.Generator, n_iter: int):
    n_cust, months = spec.customers, spec.months
    n_feat = spec.seg_importance.shape[1]
    n_off = spec.n_offerings
    low, high, p_mean, p_sd, q_mean, q_sd, churn_mean, churn_sd, scale_sd, step = spec.market

    uniforms = rng.random((n_iter, 1 + n_cust))
    normals = rng.standard_normal((n_iter, 4 + (3 + n_feat) * n_cust))
    zm = normals[:, :4]
    z = normals[:, 4:].reshape(n_iter, 3 + n_feat, n_cust)  # coefficient-major, as drawn

    market = np.empty((n_iter, 5))
    market[:, 0] = low + (high - low) * uniforms[:, 0]
    p = p_mean * np.exp(p_sd * zm[:, 0] - 0.5 * p_sd * p_sd)
    q = q_mean * np.exp(q_sd * zm[:, 1] - 0.5 * q_sd * q_sd)
    churn = np.clip(churn_mean * np.exp(churn_sd * zm[:, 2] - 0.5 * churn_sd * churn_sd), 0.0, 0.5)
    scale = np.exp(scale_sd * zm[:, 3])
    market[:, 1], market[:, 2], market[:, 3], market[:, 4] = p, q, churn, scale
    m_size = market[:, 0]

    seg = np.minimum(np.searchsorted(spec.seg_cumw, uniforms[:, 1:], side="right"), len(spec.seg_cumw) - 1)
    tau = spec.seg_taste_sd[seg]  # (I, N)
    wtp = spec.seg_wtp_median[seg] * np.exp(spec.seg_wtp_sigma[seg] * z[:, 0])
    k = spec.seg_beta[seg] * np.exp(tau * z[:, 1]) * scale[:, None] / wtp
    brand = spec.seg_brand[seg] * np.exp(tau * z[:, 2])
    importance = spec.seg_importance[seg] * np.exp(tau[..., None] * z[:, 3:].transpose(0, 2, 1))  # (I, N, F)
    a = brand[..., None] * spec.off_brand + (importance.reshape(n_iter * n_cust, n_feat) @ spec.off_features.T).reshape(
        n_iter, n_cust, n_off)  # (I, N, J); one matrix product for the whole chunk

    # Competitors (and none) before our entry; then ours joins; then our price varies on the grid.
    uc = a[..., 1:] - k[..., None] * spec.off_price[1:]  # (I, N, J-1)
    cmax = np.maximum(uc.max(axis=-1, initial=0.0), 0.0)[..., None]  # (I, N, 1)
    ec = np.exp(uc - cmax)
    e_none = np.exp(-cmax)
    csum = e_none + ec.sum(axis=-1, keepdims=True)
    respond = spec.competitive_response and n_off > 1
    pre = (ec / csum).mean(axis=1) if respond else None  # (I, J-1): the re-pricing rule's reference
    u0 = a[..., :1] - k[..., None] * spec.off_price[0]
    d0 = u0 - cmax
    t0 = np.exp(-np.abs(d0))
    e0 = np.where(d0 > 0.0, 1.0, t0)
    r0 = np.where(d0 > 0.0, t0, 1.0)
    tot = e0 + csum * r0
    base = np.concatenate([e0 / tot, ec * r0 / tot, e_none * r0 / tot], axis=-1).mean(axis=1)  # (I, J+1)
    d = (a[..., :1] - k[..., None] * spec.price_grid) - cmax  # (I, N, G)
    with np.errstate(over="ignore"):  # exp(-d) = inf only where the share is 0 anyway
        demand = (1.0 / (1.0 + csum * np.exp(-d))).mean(axis=1)

    customers = np.empty((n_iter, months))
    share = np.empty((n_iter, months))
    revenue = np.empty((n_iter, months))
    prices = np.tile(spec.off_price, (n_iter, 1))
    cur = base
    ratio, decay = q / p, np.exp(-(p + q))
    aware = np.zeros(n_iter)
    ours = np.zeros(n_iter)
    for month in range(months):
        if respond and month > 0:
            uc = a[..., 1:] - k[..., None] * prices[:, None, 1:]
            mx = np.maximum(uc.max(axis=-1, keepdims=True), np.maximum(u0, 0.0))
            eo, ec, en = np.exp(u0 - mx), np.exp(uc - mx), np.exp(-mx)
            tot = eo + en + ec.sum(axis=-1, keepdims=True)
            cur = np.concatenate([eo / tot, ec / tot, en / tot], axis=-1).mean(axis=1)
        kk = (1.0 - aware) / (1.0 + ratio * aware)
        ke = kk * decay
        new = (1.0 - ke) / (1.0 + ratio * ke) - aware
        ours = ours + cur[:, 0] * new - churn * ours
        aware = aware + new - churn * aware
        customers[:, month] = m_size * ours
        share[:, month] = np.where(aware > 0.0, ours / np.where(aware > 0.0, aware, 1.0), 0.0)
        revenue[:, month] = m_size * ours * spec.off_price[0]
        if respond and month < months - 1:
            lost = cur[:, 1:n_off] < pre * (1.0 - LOSS_MARGIN)
            prices[:, 1:] = np.where(lost, prices[:, 1:] * (1.0 - step), prices[:, 1:])
    evaluations = n_iter * spec.evaluations_per_iteration()
    return market, customers, share, revenue, cur.copy(), prices, base[:, 0].copy(), demand, wtp, evaluations
