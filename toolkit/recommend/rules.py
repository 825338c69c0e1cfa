"""Association rules over baskets with mlxtend's FP-Growth (or Apriori): support, confidence, lift."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Literal, Sequence

import pandas as pd

from toolkit.recommend.records import Rule

Algorithm = Literal["fpgrowth", "apriori"]


def frequent_itemsets(baskets: Sequence[Sequence[str]], min_support: float, max_len: int | None = None,
                      algorithm: Algorithm = "fpgrowth") -> pd.DataFrame:
    """mlxtend's table (support, itemsets) over a sparse one-hot of the baskets: a dense one would
    need rows x catalog bytes."""
    from mlxtend.frequent_patterns import apriori, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    if not baskets:
        return pd.DataFrame({"support": [], "itemsets": []})
    # An item in fewer baskets than min_support can be in no frequent itemset: leave it out before
    # encoding (every basket stays a row, so supports keep their denominator). mlxtend works on a
    # dense copy of the one-hot, so its width is what costs memory: 10 GB for 1M baskets over 10k items.
    counts = Counter(item for b in baskets for item in set(b))
    least = min_support * len(baskets)
    frequent = {item for item, n in counts.items() if n >= least}
    if not frequent:
        return pd.DataFrame({"support": [], "itemsets": []})
    encoder = TransactionEncoder()
    onehot = encoder.fit_transform([[i for i in b if i in frequent] for b in baskets], sparse=True)
    frame = pd.DataFrame.sparse.from_spmatrix(onehot, columns=[str(c) for c in encoder.columns_])
    mine = fpgrowth if algorithm == "fpgrowth" else apriori
    return mine(frame, min_support=min_support, use_colnames=True, max_len=max_len)


def mine_rules(baskets: Sequence[Sequence[str]], min_support: float, min_confidence: float,
               min_lift: float | None = None, max_len: int | None = None,
               algorithm: Algorithm = "fpgrowth") -> list[Rule]:
    """Rules X -> Y with support(X and Y) >= min_support and confidence >= min_confidence, best first
    (confidence, then lift, then support)."""
    from mlxtend.frequent_patterns import association_rules

    itemsets = frequent_itemsets(baskets, min_support, max_len, algorithm)
    if itemsets.empty or not (itemsets["itemsets"].map(len) > 1).any():
        return []
    table = association_rules(itemsets, num_itemsets=len(baskets), metric="confidence",
                              min_threshold=min_confidence)
    if min_lift is not None:
        table = table[table["lift"] >= min_lift]
    rules = [Rule(tuple(sorted(a)), tuple(sorted(c)), float(s), float(conf), float(lift))
             for a, c, s, conf, lift in zip(table["antecedents"], table["consequents"], table["support"],
                                            table["confidence"], table["lift"])]
    rules.sort(key=lambda r: (-r.confidence, -r.lift, -r.support, r.antecedents, r.consequents))
    return rules


@dataclass(frozen=True)
class Complement:
    item_id: str
    support: float
    confidence: float
    lift: float
    baskets: int


def complements(baskets: Sequence[Sequence[str]], min_baskets: int = 2,
                algorithm: Algorithm = "fpgrowth") -> dict[str, list[Complement]]:
    """For every item, the items bought with it in at least `min_baskets` baskets, from the one-to-one
    rules of the miner, best first (confidence, then lift)."""
    n = len(baskets)
    if n == 0:
        return {}
    rules = mine_rules(baskets, min_support=min_baskets / n - 1e-12, min_confidence=0.0, max_len=2,
                       algorithm=algorithm)
    found: dict[str, list[Complement]] = defaultdict(list)
    for r in rules:
        found[r.antecedents[0]].append(Complement(r.consequents[0], r.support, r.confidence, r.lift,
                                                  round(r.support * n)))
    return dict(found)
