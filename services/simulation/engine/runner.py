"""Chunked, reproducible execution and the split-independent merge of chunk statistics.

Chunk c (iterations [c*ci, (c+1)*ci)) draws from Generator(SFC64(SeedSequence(seed).spawn(n)[c])),
built directly as SeedSequence(seed, spawn_key=(c,)) (the same child), so a chunk's numbers depend
only on (seed, c). Each chunk reduces to ChunkStats:

- `sums` (float64): per histogram row its sum, min and max, then base_share, final_price[J] and
  price_change summed over the chunk's iterations. Chunk sums are combined over a fixed
  FANOUT-ary tree of chunk indices: node (level L, index b) is the in-order combination of nodes
  (L - 1, FANOUT b .. FANOUT b + FANOUT - 1), level 0 being the chunks. A shard combines every
  node whose chunks all lie in its range as soon as they are done and keeps only the rest, so
  it holds at most about FANOUT nodes per level (memory does not grow with the iteration count);
  merge completes the same tree, so the floating-point result is the same for any split into
  shards, in any order.
- `histogram_counts` (int64): fixed bins per row, bins set by the config only; integer counts
  add exactly in any order, so a shard carries them summed over its chunks (in its first
  ChunkStats).

Quantiles are read off the merged histogram (linear interpolation inside a bin, geometric for log
bins) and clamped to the exact merged [min, max]. The layout string names all of this; merge
refuses shards whose layout differs.
"""

from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from smvm.errors import Cancelled, InvalidArgument

from services.simulation.engine import binning, kernel, swings

BINS = 1024
# Log-binned rows resolve values down to this fraction of their upper bound; below is one bin.
LOG_RANGE = 1e-6
QUANTILES = (0.05, 0.10, 0.50, 0.90, 0.95)
# Children per node of the chunk-sums tree: a shard holds at most about FANOUT nodes per level.
FANOUT = 64
LAYOUT_VERSION = "smvm.sim.v2"


@dataclass(frozen=True)
class Rows:
    """The histogram rows of a spec: name blocks, and per row its bin scale."""

    blocks: list[tuple[str, int, str]]
    is_log: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def count(self) -> int:
        return len(self.is_log)

    def offset(self, name: str) -> int:
        start = 0
        for block, size, _ in self.blocks:
            if block == name:
                return start
            start += size
        raise KeyError(name)


def rows_for(spec) -> Rows:
    months, n_off, grid = spec.months, spec.n_offerings, spec.price_grid
    m_high = spec.market_size_high
    wtp_lo = float(np.min(spec.seg_wtp_median * np.exp(-5.0 * spec.seg_wtp_sigma))) / 2.0
    wtp_hi = float(np.max(spec.seg_wtp_median * np.exp(5.0 * spec.seg_wtp_sigma))) * 2.0
    blocks = [
        ("customers", months, "log", [m_high] * months),
        ("share", months, "lin", [1.0] * months),
        ("revenue", months, "log", [max(m_high * spec.off_price[0], 1.0)] * months),
        ("offering_share", n_off + 1, "lin", [1.0] * (n_off + 1)),
        ("demand_share", len(grid), "lin", [1.0] * len(grid)),
        ("demand_revenue", len(grid), "log", [max(m_high * g, 1.0) for g in grid]),
        ("wtp", 1, "log", [wtp_hi]),
    ]
    is_log, lo, hi = [], [], []
    for name, size, kind, highs in blocks:
        for h in highs:
            is_log.append(kind == "log")
            hi.append(float(h))
            lo.append((wtp_lo if name == "wtp" else float(h) * LOG_RANGE) if kind == "log" else 0.0)
    return Rows([(n, s, k) for n, s, k, _ in blocks], np.array(is_log), np.array(lo), np.array(hi))


def layout_for(spec) -> str:
    rows = rows_for(spec)
    blocks = ",".join(f"{n}[{s}]:{k}" for n, s, k in rows.blocks)
    return (
        f"{LAYOUT_VERSION};bins={BINS};log_range={LOG_RANGE:g};rows={blocks};"
        f"sums=row_sum[{rows.count}],row_min[{rows.count}],row_max[{rows.count}],base_share,"
        f"final_price[{spec.n_offerings}],price_change;sums_tree=fanout {FANOUT}, in-order;"
        f"histogram=row-major[{rows.count}x{BINS}],"
        "summed over a shard's chunks, carried by its first ChunkStats"
    )


@dataclass
class ChunkSums:
    """A node of the sums tree: a chunk (level 0) or the combination of FANOUT nodes below it."""

    index: int
    iterations: int
    sums: np.ndarray
    level: int = 0


class SumsTree:
    """Chunk sums combined over the fixed FANOUT-ary tree of chunk indices (see the module doc)."""

    def __init__(self, spec, row_count: int):
        self.spec = spec
        self.rows = row_count
        self.nodes: dict[tuple[int, int], ChunkSums] = {}

    def width(self, level: int) -> int:
        return -(-self.spec.n_chunks // FANOUT**level)

    def chunk_span(self, level: int, index: int) -> tuple[int, int]:
        return index * FANOUT**level, min((index + 1) * FANOUT**level, self.spec.n_chunks)

    def _combine(self, total: np.ndarray, more: np.ndarray) -> np.ndarray:
        r = self.rows
        out = total.copy()
        out[:r] = total[:r] + more[:r]
        out[r:2 * r] = np.minimum(total[r:2 * r], more[r:2 * r])
        out[2 * r:3 * r] = np.maximum(total[2 * r:3 * r], more[2 * r:3 * r])
        out[3 * r:] = total[3 * r:] + more[3 * r:]
        return out

    def add(self, node: ChunkSums, field: str = "chunks") -> None:
        """Insert a node (validated against the tree) and complete every parent it completes."""
        level, index = node.level, node.index
        if level < 0 or not 0 <= index < self.width(level) or (level > 0 and self.width(level - 1) == 1):
            raise InvalidArgument(field, f"node ({level}, {index}) is not in the tree of {self.spec.n_chunks} chunks")
        first, end = self.chunk_span(level, index)
        iterations = min(end * self.spec.chunk_iterations, self.spec.iterations) - first * self.spec.chunk_iterations
        if node.iterations != iterations:
            raise InvalidArgument(field, f"node ({level}, {index}) has {node.iterations} iterations, not {iterations}")
        if self._overlaps(level, index):
            raise InvalidArgument(field, f"chunk {index} duplicated" if level == 0 else f"node ({level}, {index}) duplicated")
        self.nodes[(level, index)] = node
        while self.width(level) > 1:
            parent = index // FANOUT
            children = range(parent * FANOUT, min((parent + 1) * FANOUT, self.width(level)))
            if not all((level, i) in self.nodes for i in children):
                return
            total, count = None, 0
            for i in children:  # in index order: the same additions whatever the shards were
                child = self.nodes.pop((level, i))
                total = child.sums.copy() if total is None else self._combine(total, child.sums)
                count += child.iterations
            level, index = level + 1, parent
            self.nodes[(level, index)] = ChunkSums(index, count, total, level)

    def _overlaps(self, level: int, index: int) -> bool:
        """Whether a node held already covers one of this node's chunks (itself, an ancestor or,
        for nodes above the chunks, which only merge adds, a descendant)."""
        lv, i = level, index
        while True:
            if (lv, i) in self.nodes:
                return True
            if self.width(lv) == 1:
                break
            lv, i = lv + 1, i // FANOUT
        if level == 0:
            return False
        first, end = self.chunk_span(level, index)
        return any(lv < level and self.chunk_span(lv, i)[0] < end and first < self.chunk_span(lv, i)[1]
                   for lv, i in self.nodes)

    def root(self) -> ChunkSums | None:
        """The whole run's node, once every chunk is in."""
        top = 0
        while self.width(top) > 1:
            top += 1
        return self.nodes.get((top, 0)) if len(self.nodes) == 1 else None


@dataclass
class Sample:
    iteration: int
    market_size: float
    bass_p: float
    bass_q: float
    churn: float
    price_scale: float
    monthly_customers: np.ndarray
    monthly_revenue: np.ndarray
    demand_share: np.ndarray
    final_share: np.ndarray  # (J + 1,) ours, competitors, none


@dataclass
class Partial:
    """The statistics of a contiguous range of chunks (one shard)."""

    chunk_start: int
    chunk_count: int
    chunks: list[ChunkSums]
    histogram: np.ndarray  # int64, rows x BINS flattened
    samples: list[Sample]
    utility_evaluations: int  # swings included
    kernel_seconds: float
    layout: str
    swings: list[swings.SwingPart] = field(default_factory=list)  # one per config swing, or none


@dataclass
class Output:
    seed: int
    iterations: int
    months: int
    chunks: int
    engine: str
    utility_evaluations: int
    kernel_seconds: float
    customers: np.ndarray  # (T, 6): mean, p5, p10, p50, p90, p95
    share: np.ndarray
    revenue: np.ndarray
    offering_names: list[str]  # ours, competitors, "none"
    offering_share: np.ndarray  # (J+1, 6)
    final_price: np.ndarray  # (J+1,) mean final price (0 for "none")
    price_grid: np.ndarray
    demand_share: np.ndarray  # (G, 6)
    demand_revenue: np.ndarray
    wtp: np.ndarray  # (6,)
    response_enabled: bool
    share_with_response: float
    share_without_response: float
    mean_price_change: float
    samples: list[Sample] = field(default_factory=list)
    swings: list[swings.SwingPart] = field(default_factory=list)


def _chunk_stats(spec, rows: Rows, out) -> tuple[np.ndarray, np.ndarray]:
    _, customers, share, revenue, final_shares, final_prices, base_share, demand, wtp, _ = out
    demand_revenue = demand * spec.price_grid * out[0][:, :1]
    per_iteration = np.concatenate([customers, share, revenue, final_shares, demand, demand_revenue], axis=1)
    wtp_flat = wtp.ravel()
    counts = binning.counts(per_iteration, wtp_flat, rows.is_log, rows.lo, rows.hi, BINS)

    list_prices = spec.off_price
    total = list_prices[1:].sum()
    change = final_prices[:, 1:].sum(axis=1) / total - 1.0 if total > 0 else np.zeros(len(final_prices))
    sums = np.concatenate([
        per_iteration.sum(axis=0), [wtp_flat.sum()],
        per_iteration.min(axis=0), [wtp_flat.min()],
        per_iteration.max(axis=0), [wtp_flat.max()],
        [base_share.sum()], final_prices.sum(axis=0), [change.sum()],
    ])
    return sums, counts


def chunk_generator(seed: int, chunk: int) -> np.random.Generator:
    """The chunk's stream: child `chunk` of SeedSequence(seed).spawn(n_chunks)."""
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence(seed, spawn_key=(chunk,))))


def _run_one(spec, rows: Rows, chunk: int, simulate, recurrence_swings: tuple[int, ...] = ()):
    """One base chunk: its sums, histogram counts, samples, evaluations and seconds, and for a
    sampled chunk the swings that only re-run the adoption recurrence on its draws (swings.py)."""
    first, end = spec.chunk_range(chunk)
    rng = chunk_generator(spec.seed, chunk)
    started = time.perf_counter()
    out = simulate(spec, rng, end - first)
    seconds = time.perf_counter() - started
    sums, counts = _chunk_stats(spec, rows, out)
    samples = []
    market, customers, _, revenue, final_shares, _, base_share, demand, _, _ = out
    for local in range(min(end, spec.sample_limit) - first):
        samples.append(Sample(first + local, *map(float, market[local]), customers[local].copy(),
                              revenue[local].copy(), demand[local].copy(), final_shares[local].copy()))
    swung = []
    if first < spec.sampled_iterations:
        swung = [(s, swings.from_base(spec, s, first, market, base_share, final_shares)) for s in recurrence_swings]
    return ChunkSums(chunk, end - first, sums), counts, samples, int(out[-1]), seconds, swung


def default_threads() -> int:
    return int(os.environ.get("SMVM_SIM_THREADS", 0)) or (os.cpu_count() or 1)


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def pool(workers: int) -> ThreadPoolExecutor:
    """The process's engine thread pool of `workers` threads, created once.

    Starting fresh threads for every run cost 1-2 ms (a default run's kernel takes about 4 ms on
    two threads); concurrent runs share the pool's threads instead of oversubscribing the CPUs.
    """
    with _pools_lock:
        executor = _pools.get(workers)
        if executor is None:
            executor = _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"sim-engine-{workers}")
        return executor


def run_chunks(
    spec,
    chunk_start: int,
    chunk_count: int,
    on_progress: Callable[[int, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    threads: int | None = None,
    simulate=None,
) -> Partial:
    """Run chunks [chunk_start, chunk_start + chunk_count), several at a time on threads, and the
    config's swings on those of them that hold sampled iterations (swings.py): the recurrence-only
    swings with their base chunk, the kernel re-runs as jobs of their own.

    Each chunk is single-threaded and seeded by its index, so the thread count changes speed only.
    Progress counts base chunks and kernel re-runs together. `should_stop` is checked before each chunk
    starts; when it says stop, running chunks finish and Cancelled is raised (the servicer's stop
    covers both a cancelled call and a passed deadline).
    """
    if chunk_start < 0 or chunk_count < 1 or chunk_start + chunk_count > spec.n_chunks:
        raise InvalidArgument("chunk_count", f"chunks [{chunk_start}, {chunk_start + chunk_count}) outside [0, {spec.n_chunks})")
    simulate = simulate or kernel.simulate
    rows = rows_for(spec)
    swing_range = range(chunk_start, min(chunk_start + chunk_count, spec.swing_chunks))
    rerun = [s for s, swing in enumerate(spec.swings) if swings.reruns_kernel(swing.driver, spec.competitive_response)]
    recurrence = tuple(s for s in range(len(spec.swings)) if s not in rerun)
    jobs = [(None, c) for c in range(chunk_start, chunk_start + chunk_count)]
    jobs += [(s, c) for s in rerun for c in swing_range]
    total = len(jobs)
    workers = max(1, min(threads or default_threads(), total))
    histogram = np.zeros(rows.count * BINS, dtype=np.int64)
    tree = SumsTree(spec, rows.count)
    samples = []
    swing_parts: list[list[swings.SwingPart]] = [[] for _ in spec.swings]
    done, evaluations, seconds = 0, 0, 0.0
    executor = pool(workers)
    running = []
    stopped = False
    while jobs or running:
        while jobs and len(running) < workers and not stopped:
            if should_stop is not None and should_stop():
                stopped = True
                break
            swing, chunk = jobs.pop(0)
            if swing is None:
                running.append((None, executor.submit(_run_one, spec, rows, chunk, simulate, recurrence)))
            else:
                running.append((swing, executor.submit(swings.run_chunk, spec, swing, chunk, simulate)))
        if stopped and not running:
            break
        if not running:
            break
        swing, future = running.pop(0)
        if swing is None:
            sums, counts, chunk_samples, chunk_evals, chunk_seconds, swung = future.result()
            for s, part in swung:
                swing_parts[s].append(part)
                chunk_seconds += part.kernel_seconds
            tree.add(sums)
            histogram += counts
            samples.extend(chunk_samples)
        else:
            part = future.result()
            swing_parts[swing].append(part)
            chunk_evals, chunk_seconds = part.utility_evaluations, part.kernel_seconds
        done += 1
        evaluations += chunk_evals
        seconds += chunk_seconds
        if on_progress is not None:
            on_progress(done, total, evaluations)
    if stopped:
        raise Cancelled(f"simulation stopped after {done} of {total} chunks")
    nodes = sorted(tree.nodes.values(), key=lambda node: (node.level, node.index))
    shard_swings = [swings.concatenate(parts) for parts in swing_parts if parts]
    return Partial(chunk_start, chunk_count, nodes, histogram, samples, evaluations, seconds, layout_for(spec), shard_swings)


def _quantiles(counts: np.ndarray, is_log: bool, lo: float, hi: float, vmin: float, vmax: float) -> np.ndarray:
    n = counts.sum()
    cum = np.cumsum(counts)
    out = []
    for q in QUANTILES:
        target = q * n
        b = int(np.searchsorted(cum, target, side="left"))
        b = min(b, BINS - 1)
        before = cum[b] - counts[b]
        frac = (target - before) / counts[b] if counts[b] > 0 else 0.5
        if is_log:
            if b == 0:
                value = frac * lo
            else:
                ratio = hi / lo
                lower = lo * ratio ** ((b - 1) / (BINS - 1))
                upper = lo * ratio ** (b / (BINS - 1))
                value = lower * (upper / lower) ** frac
        else:
            width = (hi - lo) / BINS
            value = lo + (b + frac) * width
        out.append(min(max(value, vmin), vmax))
    return np.array(out)


def merge(spec, partials: list[Partial]) -> Output:
    """Merge shards covering every chunk exactly once; the result does not depend on the split."""
    layout = layout_for(spec)
    rows = rows_for(spec)
    tree = SumsTree(spec, rows.count)
    histogram = np.zeros(rows.count * BINS, dtype=np.int64)
    for n, part in enumerate(partials):
        if part.layout != layout:
            raise InvalidArgument(f"shards[{n}].layout", "does not match this config's layout")
        if part.histogram.shape != histogram.shape:
            raise InvalidArgument(f"shards[{n}].chunks", "histogram size does not match the layout")
        for node in part.chunks:
            if node.sums.shape != (3 * rows.count + 2 + spec.n_offerings,):
                raise InvalidArgument(f"shards[{n}].chunks", f"node ({node.level}, {node.index}) sums do not match the layout")
            tree.add(node, f"shards[{n}].chunks")
        histogram += part.histogram
    root = tree.root()
    if root is None:
        covered = set()
        for level, index in tree.nodes:
            covered.update(range(*tree.chunk_span(level, index)))
        missing = sorted(set(range(spec.n_chunks)) - covered)[:5]
        raise InvalidArgument("shards", f"chunks missing, e.g. {missing}")

    r = rows.count
    sums = root.sums
    total, vmin, vmax, extra = sums[:r], sums[r:2 * r], sums[2 * r:3 * r], sums[3 * r:]
    n = spec.iterations
    counts = np.asarray(histogram).reshape(r, BINS)
    stats = np.empty((r, 6))
    for row in range(r):
        rows_n = n * spec.customers if row == r - 1 else n
        stats[row, 0] = total[row] / rows_n
        stats[row, 1:] = _quantiles(counts[row], bool(rows.is_log[row]), rows.lo[row], rows.hi[row], vmin[row], vmax[row])

    def block(name: str) -> np.ndarray:
        start = rows.offset(name)
        size = dict((b, s) for b, s, _ in rows.blocks)[name]
        return stats[start:start + size]

    n_off = spec.n_offerings
    base_share = extra[0] / n
    final_price = np.concatenate([extra[1:1 + n_off] / n, [0.0]])
    price_change = extra[1 + n_off] / n
    offering_share = block("offering_share")
    samples: list[Sample] = []
    for part in partials:
        samples.extend(part.samples)
    samples.sort(key=lambda s: s.iteration)
    swing_paths = swings.merge(spec, [part.swings for part in partials])
    return Output(
        seed=spec.seed, iterations=n, months=spec.months, chunks=spec.n_chunks, engine=kernel.ENGINE,
        utility_evaluations=sum(p.utility_evaluations for p in partials),
        kernel_seconds=sum(p.kernel_seconds for p in partials),
        customers=block("customers"), share=block("share"), revenue=block("revenue"),
        offering_names=list(spec.offering_names), offering_share=offering_share, final_price=final_price,
        price_grid=spec.price_grid.copy(), demand_share=block("demand_share"), demand_revenue=block("demand_revenue"),
        wtp=block("wtp")[0], response_enabled=spec.competitive_response,
        share_with_response=float(offering_share[0, 0]), share_without_response=float(base_share),
        mean_price_change=float(price_change), samples=samples[: spec.sample_limit], swings=swing_paths,
    )
