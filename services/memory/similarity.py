"""Text similarity of ideas: TF-IDF vectors compared by cosine, in plain Python.

Enough for "have we seen an idea like this before?" over thousands of ideas, with no model to
download: tokens are lower-cased words (a crude plural strip folds "apps" into "app"), common
English words are dropped, and IDF is smoothed as in scikit-learn (log((1+N)/(1+df)) + 1) so a
word every idea shares still counts a little.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    "a an and are as at be by for from has have help helps in into is it its of on or our that the their them "
    "they this to was were will with who which while what when where how your you we us can more most less "
    "than so such via per".split()
)


def tokens(text: str) -> list[str]:
    out = []
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS or len(word) < 2:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


class TfIdfIndex:
    """Documents by key; `query` ranks them by cosine similarity to a text."""

    def __init__(self, documents: Iterable[tuple[str, str]]):
        self._counts = {key: Counter(tokens(text)) for key, text in documents}
        df: Counter = Counter()
        for counts in self._counts.values():
            df.update(counts.keys())
        n = len(self._counts)
        self._idf = {term: math.log((1 + n) / (1 + d)) + 1.0 for term, d in df.items()}
        self._idf_unseen = math.log(1 + n) + 1.0
        self._vectors = {key: self._vector(counts) for key, counts in self._counts.items()}

    def _vector(self, counts: Counter) -> dict[str, float]:
        weights = {t: c * self._idf.get(t, self._idf_unseen) for t, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {t: w / norm for t, w in weights.items()} if norm else {}

    def query(self, text: str, limit: int, min_similarity: float = 0.0) -> list[tuple[str, float]]:
        q = self._vector(Counter(tokens(text)))
        scored = []
        for key, vector in self._vectors.items():
            score = sum(w * vector.get(t, 0.0) for t, w in q.items())
            score = min(1.0, max(0.0, score))
            if score > 0.0 and score >= min_similarity:
                scored.append((key, score))
        scored.sort(key=lambda kv: (-kv[1], kv[0]))
        return scored[:limit]


class IdeaCorpus:
    """TF-IDF cosine ranking like `TfIdfIndex`, over a corpus kept between queries.

    Memory answers FindSimilarIdeas once per run, over every idea of the domain; rebuilding a
    TfIdfIndex each time (tokenising every text again) grew linearly with the ideas memory holds
    (622 ms at 3,000 runs, benchmarks/memory_grounding.py), on the way to the orchestrator's 2 s
    deadline. Here each document is tokenised once, when it joins the corpus; a query recomputes
    IDF and norms with numpy over the term-count arrays (a millisecond or so for thousands of
    ideas), so scores follow the corpus exactly as a fresh TfIdfIndex would (up to float rounding):
    IDF depends on every document, and a document excluded from a query is left out of it.
    """

    def __init__(self) -> None:
        self._vocabulary: dict[str, int] = {}
        self._docs: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # key -> (term ids, counts)
        self._arrays: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None = None

    def __contains__(self, key: str) -> bool:
        return key in self._docs

    def __len__(self) -> int:
        return len(self._docs)

    def keys(self) -> set[str]:
        return set(self._docs)

    def add(self, key: str, text: str) -> None:
        """Add (or replace) a document."""
        counts = Counter(tokens(text))
        ids = np.fromiter((self._vocabulary.setdefault(t, len(self._vocabulary)) for t in counts), dtype=np.int64,
                          count=len(counts))
        self._docs[key] = (ids, np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
        self._arrays = None

    def remove(self, key: str) -> None:
        if self._docs.pop(key, None) is not None:
            self._arrays = None

    def _concatenated(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Documents with at least one term, their term ids and counts end to end, and where each starts."""
        if self._arrays is None:
            keys = [k for k, (ids, _) in self._docs.items() if len(ids)]
            lengths = np.array([len(self._docs[k][0]) for k in keys], dtype=np.int64)
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if keys else np.zeros(0, dtype=np.int64)
            ids = np.concatenate([self._docs[k][0] for k in keys]) if keys else np.zeros(0, dtype=np.int64)
            tf = np.concatenate([self._docs[k][1] for k in keys]) if keys else np.zeros(0)
            self._arrays = (keys, ids, tf, starts)
        return self._arrays

    def query(self, text: str, limit: int, min_similarity: float = 0.0,
              exclude: frozenset[str] = frozenset()) -> list[tuple[str, float]]:
        """The `limit` most similar documents (key, cosine), best first, ties by key; documents in
        `exclude` are not part of the corpus for this query (IDF included)."""
        keys, ids, tf, starts = self._concatenated()
        n_terms = len(self._vocabulary)
        df = np.bincount(ids, minlength=n_terms).astype(np.float64)
        n = len(self._docs)
        left_out = [k for k in exclude if k in self._docs]
        for key in left_out:
            df[self._docs[key][0]] -= 1.0
        n -= len(left_out)
        idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        idf_unseen = math.log(1 + n) + 1.0  # the same formula at df = 0

        counts = Counter(tokens(text))
        q = {t: c * (idf[self._vocabulary[t]] if t in self._vocabulary else idf_unseen) for t, c in counts.items()}
        q_norm = math.sqrt(sum(w * w for w in q.values()))
        if not keys or not q_norm:
            return []
        q_weights = np.zeros(n_terms)
        for t, w in q.items():
            if t in self._vocabulary:
                q_weights[self._vocabulary[t]] = w / q_norm

        weights = tf * idf[ids]
        norms = np.sqrt(np.add.reduceat(weights * weights, starts))
        scores = np.add.reduceat(weights * q_weights[ids], starts) / norms
        np.clip(scores, 0.0, 1.0, out=scores)
        floor = max(min_similarity, np.nextafter(0.0, 1.0))
        hits = [(keys[i], float(scores[i])) for i in np.flatnonzero(scores >= floor) if keys[i] not in exclude]
        hits.sort(key=lambda kv: (-kv[1], kv[0]))
        return hits[:limit]
