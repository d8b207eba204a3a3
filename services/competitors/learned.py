"""Competitors learned from earlier runs (the memory service) and how they join a landscape.

The orchestrator asks memory for the competitors earlier runs met in the idea's domain and passes
them in `BuildLandscapeRequest.known_competitors`. The merge rules, in order of precedence:

1. Imported competitor lists (the founder named them) come first and are never displaced.
2. Learned competitors come next: one entry per distinct name (case and spacing folded, as memory
   keys them) not already imported; synthetic ones (prior-generated in an earlier run) are left out,
   since the prior will generate them afresh.
3. Synthetic entries (archetypes of the domain prior, then seeded variants) fill what is left of
   `count` when nothing was imported, skipping any name a learned entry already has.

The ranking is by provenance first (imported, learned, synthetic), then relevance, so a smaller
`count` drops synthetic entries before learned ones and learned before imported.

A learned entry carries provenance "learned", source "memory:<run that last met it>" and
`learned` (that run, the source it was first learned from, how many runs met it, when last seen),
so the `competitors` artifact tells learned from imported from synthetic. Memory keeps a price
already normalised to USD per month and free-text features; like an imported row, each feature is
taken as fully covered. Market share is the one memory last saw, else LEARNED_DEFAULT_SHARE (a
stated rule of thumb); brand strength follows the imported rule (base + per_share x share).
"""

from __future__ import annotations

import math
from typing import Iterable

from smvm.errors import InvalidArgument
from smvm.timestamps import valid_timestamp
from smvm.v1 import memory_service_pb2

# Relevance before feature overlap: below a competitor the founder named (1.0), in the range of a
# prior's main archetypes, since a real run met it in this domain.
LEARNED_RELEVANCE = 0.8
# Share assumed for a learned competitor whose share memory never saw (one small listed player).
LEARNED_DEFAULT_SHARE = 0.05
MAX_KNOWN = 500
MAX_NAME_CHARS = 200
MAX_FEATURES = 200
MAX_FEATURE_CHARS = 200

PROVENANCE_RANK = {"imported": 0, "learned": 1, "synthetic": 2}


def name_key(name: str) -> str:
    """The identity of a competitor across sources: lower-case, runs of whitespace folded."""
    return " ".join(name.lower().split())


def check_known(known: Iterable[memory_service_pb2.KnownCompetitor]) -> list[memory_service_pb2.KnownCompetitor]:
    """The known competitors, or InvalidArgument naming the first field this stage cannot use."""
    rows = list(known)
    if len(rows) > MAX_KNOWN:
        raise InvalidArgument("known_competitors", f"at most {MAX_KNOWN} known competitors, got {len(rows)}")
    for i, c in enumerate(rows):
        field = f"known_competitors[{i}]"
        if not c.name.strip() or len(c.name) > MAX_NAME_CHARS:
            raise InvalidArgument(f"{field}.name", f"must be 1-{MAX_NAME_CHARS} characters")
        if not (math.isfinite(c.last_monthly_price_usd) and c.last_monthly_price_usd >= 0):
            raise InvalidArgument(f"{field}.last_monthly_price_usd", "must be a finite number >= 0")
        if c.HasField("market_share") and not (math.isfinite(c.market_share) and 0 <= c.market_share <= 1):
            raise InvalidArgument(f"{field}.market_share", "must be a fraction in [0, 1]")
        if c.HasField("last_seen") and not valid_timestamp(c.last_seen):
            raise InvalidArgument(f"{field}.last_seen", "must be a time in years 1-9999")
        if c.runs_seen < 0:
            raise InvalidArgument(f"{field}.runs_seen", "must be >= 0")
        if len(c.features) > MAX_FEATURES:
            raise InvalidArgument(f"{field}.features", f"at most {MAX_FEATURES} features")
        for j, text in enumerate(c.features):
            if len(text) > MAX_FEATURE_CHARS:
                raise InvalidArgument(f"{field}.features[{j}]", f"at most {MAX_FEATURE_CHARS} characters")
    return rows


def select_learned(known: Iterable[memory_service_pb2.KnownCompetitor], taken: set[str]
                   ) -> tuple[list[memory_service_pb2.KnownCompetitor], dict[str, int]]:
    """(learned competitors that join, in memory's order; counts of those left out and why).

    `taken` holds the name keys already in the landscape (the imported ones); it gains the joined ones.
    """
    joined, dropped = [], {"synthetic": 0, "duplicate": 0}
    for c in check_known(known):
        key = name_key(c.name)
        if c.synthetic:
            dropped["synthetic"] += 1
        elif key in taken:
            dropped["duplicate"] += 1
        else:
            taken.add(key)
            joined.append(c)
    return joined, dropped


def learned_share(c: memory_service_pb2.KnownCompetitor) -> float:
    return c.market_share if c.HasField("market_share") else LEARNED_DEFAULT_SHARE
