"""Collaborative filtering with implicit: ALS, BPR and item-item cosine over a user x item matrix.

A user's row is the sum of their events' weights (purchases count most). Scores come back as a
full vector over the items, so the blend (picks.py) can add them to other signals.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

Kind = Literal["als", "bpr", "item"]
EVENT_WEIGHTS: Mapping[str, float] = {"purchase": 1.0, "cart": 0.5, "view": 0.1}


@dataclass
class Interactions:
    users: np.ndarray  # index -> user id
    items: np.ndarray  # index -> item id
    user_index: dict[str, int]
    item_index: dict[str, int]
    matrix: csr_matrix  # users x items, summed event weights

    def row(self, item_ids: list[str], weights: list[float] | None = None) -> csr_matrix:
        """A 1 x items row for a shopper outside the matrix (a session), from the items they touched."""
        cols = [self.item_index[i] for i in item_ids if i in self.item_index]
        w = [1.0] * len(cols) if weights is None else [wt for i, wt in zip(item_ids, weights) if i in self.item_index]
        row = csr_matrix((np.asarray(w, dtype=np.float32), (np.zeros(len(cols), dtype=np.int32), cols)),
                         shape=(1, len(self.items)))
        row.sum_duplicates()
        return row


def interactions(events: pd.DataFrame, weights: Mapping[str, float] = EVENT_WEIGHTS,
                 all_items: list[str] | None = None) -> Interactions:
    """The user x item matrix. `all_items` (the item table) become columns too, bought or not, so that
    signals other than CF (trending, other colours) can reach them."""
    users, user_codes = np.unique(events["user_id"].to_numpy(dtype=str), return_inverse=True)
    items = np.unique(np.concatenate([events["item_id"].to_numpy(dtype=str), np.asarray(all_items or [], dtype=str)]))
    item_codes = np.searchsorted(items, events["item_id"].to_numpy(dtype=str))
    value = events["event_type"].map(weights).fillna(0).to_numpy(dtype=np.float32) * \
        events["quantity"].to_numpy(dtype=np.float32)
    matrix = csr_matrix((value, (user_codes, item_codes)), shape=(len(users), len(items)), dtype=np.float32)
    matrix.sum_duplicates()
    return Interactions(users, items, {u: i for i, u in enumerate(users)}, {t: i for i, t in enumerate(items)},
                        matrix)


class CF:
    """One implicit model over `Interactions`. Parameters are implicit's."""

    def __init__(self, kind: Kind = "als", factors: int = 64, iterations: int = 15, regularization: float = 0.05,
                 alpha: float = 10.0, neighbours: int = 100, random_state: int = 0) -> None:
        self.kind = kind
        if kind == "als":
            from implicit.cpu.als import AlternatingLeastSquares

            self.model = AlternatingLeastSquares(factors=factors, iterations=iterations, regularization=regularization,
                                                 alpha=alpha, random_state=random_state, calculate_training_loss=False)
        elif kind == "bpr":
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            self.model = BayesianPersonalizedRanking(factors=factors, iterations=max(iterations, 50),
                                                     random_state=random_state)
        elif kind == "item":
            from implicit.nearest_neighbours import CosineRecommender

            self.model = CosineRecommender(K=neighbours)
        else:
            raise ValueError(f"unknown CF kind {kind!r}")

    def fit(self, data: Interactions) -> "CF":
        with warnings.catch_warnings():
            # implicit's own item-item fit hands itself a COO matrix and warns about it
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            self.model.fit(data.matrix, show_progress=False)
        return self

    def scores(self, row: csr_matrix, user: int | None = None) -> np.ndarray:
        """Scores of every item for a user's row (`user`: their index in the trained matrix, if any)."""
        if self.kind == "item":
            return np.asarray((row @ self.model.similarity).todense()).ravel()
        if user is not None:
            factors = self.model.user_factors[user]
        elif row.nnz:
            factors = self.model.recalculate_user(0, row) if self.kind == "als" else None
            if factors is None:  # BPR cannot fold a new user in: the mean of their items' factors
                factors = np.asarray(self.model.item_factors[row.indices].mean(axis=0)).ravel()
        else:
            return np.zeros(self.model.item_factors.shape[0], dtype=np.float32)
        return np.asarray(self.model.item_factors @ np.asarray(factors).ravel()).ravel()

    def because(self, row: csr_matrix, items: np.ndarray) -> np.ndarray:
        """For each of `items`, the item of the row that most explains it (item-item: the most similar
        one; factor models: the closest in factor space). Empty rows explain nothing (-1)."""
        if row.nnz == 0:
            return np.full(len(items), -1)
        if self.kind == "item":
            sims = np.asarray(self.model.similarity[row.indices][:, items].todense())
        else:
            f = self.model.item_factors
            sims = f[row.indices] @ f[items].T
        return row.indices[np.argmax(sims, axis=0)]
