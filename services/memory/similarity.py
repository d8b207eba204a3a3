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
