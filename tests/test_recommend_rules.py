"""Bought together: rules from mlxtend on hand-made baskets, checked against hand-computed figures."""
from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from toolkit.recommend.baskets import baskets
from toolkit.recommend.rules import complements, mine_rules

# 5 baskets. Counts: A 4, B 4, C 3, D 1; AB 3, AC 2, BC 2, AD 1, BD 1, ABC 1, ABD 1.
BASKETS = [["A", "B", "C"], ["A", "B"], ["A", "C"], ["B", "C"], ["A", "B", "D"]]


def rule(rules, a, c):
    return next(r for r in rules if r.antecedents == tuple(a) and r.consequents == tuple(c))


def test_support_confidence_and_lift_are_those_computed_by_hand():
    rules = mine_rules(BASKETS, min_support=0.4, min_confidence=0.5)
    ab = rule(rules, "A", "B")
    assert ab.support == pytest.approx(3 / 5)
    assert ab.confidence == pytest.approx((3 / 5) / (4 / 5))            # 0.75
    assert ab.lift == pytest.approx(0.75 / (4 / 5))                     # 0.9375
    ca = rule(rules, "C", "A")
    assert (ca.support, ca.confidence, ca.lift) == pytest.approx((2 / 5, 2 / 3, (2 / 3) / (4 / 5)))
    # Every rule between the frequent pairs, none with D (support 1/5 < 0.4), none under 0.5 confidence.
    pairs = {(r.antecedents, r.consequents) for r in rules}
    assert pairs == {(("A",), ("B",)), (("B",), ("A",)), (("A",), ("C",)), (("C",), ("A",)),
                     (("B",), ("C",)), (("C",), ("B",))}


def test_rules_are_sorted_by_confidence_then_lift_and_thresholds_apply():
    rules = mine_rules(BASKETS, min_support=0.2, min_confidence=0.9)
    # Only D's rules are certain: D -> {A, B} has the highest lift, 1 / (3/5).
    first = rules[0]
    assert (first.antecedents, first.consequents) == (("D",), ("A", "B"))
    assert (first.support, first.confidence, first.lift) == pytest.approx((0.2, 1.0, 5 / 3))
    assert all(r.confidence >= 0.9 for r in rules)
    assert [r.confidence for r in rules] == sorted((r.confidence for r in rules), reverse=True)
    assert mine_rules(BASKETS, min_support=0.2, min_confidence=0.9, min_lift=1.5) == [first]


def test_fpgrowth_and_apriori_give_the_same_rules():
    a = mine_rules(BASKETS, 0.2, 0.1, algorithm="fpgrowth")
    b = mine_rules(BASKETS, 0.2, 0.1, algorithm="apriori")
    assert len(a) > 10
    assert [(r.antecedents, r.consequents) for r in a] == [(r.antecedents, r.consequents) for r in b]
    assert [r.lift for r in a] == pytest.approx([r.lift for r in b])


def test_no_baskets_or_no_pairs_give_no_rules():
    assert mine_rules([], 0.1, 0.1) == []
    assert mine_rules([["A"], ["B"]], 0.1, 0.1) == []
    assert mine_rules([["A"], ["B"]], 0.9, 0.1) == []  # no item frequent enough: nothing to encode
    assert complements([["A"], ["B"]]) == {}


def test_complements_need_two_baskets_and_rank_by_confidence():
    found = complements(BASKETS, min_baskets=2)
    assert [c.item_id for c in found["A"]] == ["B", "C"]                # AB 3 baskets, AC 2; AD only once
    assert found["A"][0].confidence == pytest.approx(0.75) and found["A"][0].baskets == 3
    assert "D" not in found


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "basket_id"]).assign(
        event_type="purchase", quantity=1.0, price=None)


def test_baskets_are_orders_or_one_users_day_or_a_longer_window():
    events = frame([
        ("u1", "A", datetime(2024, 1, 2, 9), None), ("u1", "B", datetime(2024, 1, 2, 18), None),
        ("u1", "C", datetime(2024, 1, 3, 9), None), ("u2", "A", datetime(2024, 1, 1, 9), None),
        ("u2", "A", datetime(2024, 1, 1, 10), None),                         # the same item twice: once
        ("u3", "X", datetime(2024, 1, 1), "order-7"), ("u3", "Y", datetime(2024, 1, 5), "order-7"),
    ])
    assert sorted(map(sorted, baskets(events))) == [["A"], ["A", "B"], ["C"], ["X", "Y"]]
    # Windows are counted from 1970-01-01: 2 and 3 January 2024 fall in one two-day window.
    assert sorted(map(sorted, baskets(events, window_days=2))) == [["A"], ["A", "B", "C"], ["X", "Y"]]
    assert baskets(events, max_items=1)[0] == ["A"]
