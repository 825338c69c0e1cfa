"""Hybrid ranking: exact query words found in a product's text count alongside its vector score.

A vector model blurs names: "Puma" and "Nike" sit close together, and a brand the model
never saw in training means nothing to it. A shopper who types a brand or a colour means
that exact word, so each candidate gets

    score = vector cosine + hybrid_weight × (query words found in its words / query words)

where "its words" are the words of its title, its tag labels and its catalog attribute
values, compared case-insensitively as whole words. Stop words ("for", "with") do not
count on either side. With hybrid_weight = 0 the order is the vector order.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Iterable, Sequence

from toolkit.ground.models import Hit

#: Words too common in queries to say anything about a product.
STOP_WORDS = frozenset({
    "a", "an", "and", "the", "for", "with", "of", "in", "on", "to", "or", "by", "at", "from", "my", "me",
    "i", "some", "any", "like", "show", "find", "want", "need", "looking",
})
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def words(text: str | None) -> list[str]:
    """Lower-cased words of a text, in order, without stop words or single letters."""
    if not text:
        return []
    return [w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOP_WORDS]


def query_words(text: str | None) -> list[str]:
    """The distinct words of a query that count for keyword matching, in order."""
    return list(dict.fromkeys(words(text)))


def hit_words(hit: Hit) -> set[str]:
    """Every word a product is known by: title, tag labels, attribute values."""
    texts: Iterable[str] = [hit.title or "", *hit.tags.values(), *map(str, hit.attributes.values())]
    return {w for t in texts for w in words(t)}


def keyword_fraction(query: Sequence[str], hit: Hit) -> float:
    """Share of the query's words found exactly among the hit's words (0 to 1)."""
    if not query:
        return 0.0
    found = hit_words(hit)
    return sum(1 for w in query if w in found) / len(query)


def rerank(hits: Sequence[Hit], text: str | None, weight: float) -> list[Hit]:
    """Hits re-scored as vector score + weight × keyword fraction, best first.

    Ties keep the incoming (vector) order, so with no matching words, or weight 0, the
    result is the input order.
    """
    query = query_words(text)
    if not query or weight <= 0:
        return list(hits)
    rescored = [replace(h, score=round(h.score + weight * keyword_fraction(query, h), 4)) for h in hits]
    return sorted(rescored, key=lambda h: h.score, reverse=True)  # sorted() is stable
