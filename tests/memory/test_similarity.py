import pytest
from hypothesis import given, strategies as st

from services.memory.similarity import IdeaCorpus, TfIdfIndex, tokens


def test_tokens_drop_stopwords_and_fold_plurals():
    assert tokens("The Budgeting apps for Students, and a bus!") == ["budgeting", "app", "student", "bus"]


def test_known_answers():
    index = TfIdfIndex([
        ("fin", "budgeting app for university students"),
        ("pet", "dog walking marketplace"),
        ("fin2", "budgeting coach for millennials"),
    ])
    # identical text scores 1; a text sharing nothing scores nothing at all
    assert index.query("budgeting app for university students", 5)[0] == ("fin", pytest.approx(1.0))
    assert index.query("quantum chemistry", 5) == []
    ranked = index.query("student budgeting app", 5)
    assert [k for k, _ in ranked] == ["fin", "fin2"]
    assert ranked[0][1] > ranked[1][1] > 0
    # hand-computed: query "dog" against "dog walking marketplace" with idf(dog)=idf(walking)=idf(marketplace)
    assert index.query("dog", 5) == [("pet", pytest.approx(1 / 3 ** 0.5))]


def test_min_similarity_and_limit():
    index = TfIdfIndex([(f"k{i}", f"shared word{i}") for i in range(10)])
    assert len(index.query("shared", 3)) == 3
    assert index.query("shared", 10, min_similarity=0.99) == []


@given(st.lists(st.text(alphabet="abcdefgh ", min_size=1, max_size=30), min_size=1, max_size=8), st.text(alphabet="abcdefgh ", max_size=30))
def test_scores_are_cosines_in_unit_interval_and_sorted(docs, query):
    index = TfIdfIndex((str(i), d) for i, d in enumerate(docs))
    ranked = index.query(query, 100)
    scores = [s for _, s in ranked]
    assert all(0.0 < s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)


WORDS = st.sampled_from("budget app student coach dog walk market saving bank the for".split())
TEXTS = st.lists(WORDS, max_size=8).map(" ".join)


@given(st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 7), TEXTS), max_size=25),
       TEXTS, st.sets(st.integers(0, 7), max_size=2), st.sampled_from([0.0, 0.3]))
def test_the_kept_corpus_ranks_as_a_fresh_index_would_after_any_edits(edits, query, excluded, floor):
    """IdeaCorpus (kept between queries, numpy) against TfIdfIndex (rebuilt, the definition)."""
    corpus, docs = IdeaCorpus(), {}
    for op, i, text in edits:
        if op == "add":
            corpus.add(f"k{i}", text)
            docs[f"k{i}"] = text
        else:
            corpus.remove(f"k{i}")
            docs.pop(f"k{i}", None)
    exclude = frozenset(f"k{i}" for i in excluded)
    expected = dict(TfIdfIndex((k, t) for k, t in docs.items() if k not in exclude).query(query, 100, floor))
    got = corpus.query(query, 100, floor, exclude=exclude)
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    got = dict(got)
    # the same documents (but for a score within rounding of the floor) with the same scores
    clear = lambda scores: {k for k, v in scores.items() if v > floor + 1e-9}  # noqa: E731
    assert clear(got) == clear(expected)
    assert {k: got[k] for k in clear(got)} == pytest.approx({k: expected[k] for k in clear(got)}, abs=1e-12)
    assert corpus.query(query, 2, floor, exclude=exclude) == corpus.query(query, 100, floor, exclude=exclude)[:2]
