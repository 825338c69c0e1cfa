"""Hybrid ranking as a pure function: exact words in title, tags or attributes add to the vector score."""
from __future__ import annotations

import pytest

from toolkit.ground.models import Hit
from toolkit.search.ranking import keyword_fraction, query_words, rerank


def hit(pid: str, score: float, title: str = "", tags: dict | None = None, attributes: dict | None = None) -> Hit:
    return Hit(product_id=pid, title=title, price=None, currency=None, url=None, score=score, tags=tags or {},
               media_uri="", timestamp=None, media_id=pid, attributes=attributes or {})


def test_query_words_are_lower_case_distinct_and_skip_stop_words():
    assert query_words("Puma BLACK shoes for men, black!") == ["puma", "black", "shoes", "men"]
    assert query_words("a t-shirt") == ["shirt"]  # single letters say nothing
    assert query_words("  ") == [] and query_words(None) == []


def test_fraction_counts_title_tags_and_attributes_as_whole_words():
    h = hit("1", 0.5, title="Puma Men Running Shoes", tags={"colour": "Black"}, attributes={"brand": "Puma"})
    assert keyword_fraction(["puma", "black"], h) == 1.0
    assert keyword_fraction(["puma", "red"], h) == 0.5
    assert keyword_fraction(["pum"], h) == 0.0  # a prefix is not the word
    assert keyword_fraction([], h) == 0.0


def test_a_brand_word_lifts_that_brand_above_closer_vectors():
    hits = [hit("nike", 0.62, "Nike Men Black Shoes"), hit("plain", 0.60, "Black Shoes"),
            hit("puma", 0.50, "Puma Men Black Shoes")]
    ranked = rerank(hits, "Puma black", weight=0.3)
    assert [h.product_id for h in ranked] == ["puma", "nike", "plain"]
    # score = vector + weight x fraction of the query's words found
    assert [h.score for h in ranked] == [pytest.approx(0.50 + 0.3), pytest.approx(0.62 + 0.15),
                                         pytest.approx(0.60 + 0.15)]


def test_no_matching_words_or_zero_weight_keeps_the_vector_order_and_scores():
    hits = [hit("a", 0.9, "Red Dress"), hit("b", 0.8, "Blue Dress")]
    assert rerank(hits, "sandals", weight=0.3) == hits
    assert rerank(hits, "blue", weight=0.0) == hits
    assert rerank(hits, "", weight=0.3) == hits


def test_ties_keep_the_vector_order():
    hits = [hit("a", 0.5, "Puma Cap"), hit("b", 0.5, "Puma Bag"), hit("c", 0.5, "Puma Tee")]
    assert [h.product_id for h in rerank(hits, "puma", 0.3)] == ["a", "b", "c"]


def test_rerank_does_not_change_its_input():
    hits = [hit("a", 0.5, "Puma Cap")]
    rerank(hits, "puma", 0.3)
    assert hits[0].score == 0.5
