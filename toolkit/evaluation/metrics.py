"""The figures of an evaluation: exact nearest neighbours, precision@k and its ceilings, title
ranks, tag accuracy and coverage, 95% margins, a confusion matrix and a 2-D map.

Every function works on plain arrays (vectors, label arrays, ranked indices), so each is
tested on cases small enough to work out by hand (tests/test_evaluation.py). Search is exact
numpy: HNSW's approximation would add noise to a figure meant to compare models.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from toolkit.evaluation.catalog import LabelledItem

KS = (1, 5, 10)
#: Tag groups whose labels image-to-image and attribute-query retrieval are scored on, in the
#: word order of a shopper's query ("Men Black Casual Shoes").
RETRIEVAL_GROUPS = ("gender", "colour", "article_type")
CONFUSION_LABELS = 12
#: Rows of the similarity matrix computed at once: 1,024 x 8,083 floats is 33 MB.
CHUNK = 1024
#: Standard normal quantile of a two-sided 95% interval.
Z95 = 1.96


def norm_label(label: str | None) -> str:
    return (label or "").strip().lower()


def label_array(items: Sequence[LabelledItem], column: str) -> np.ndarray:
    return np.array([norm_label(it.labels.get(column)) for it in items], dtype=object)


def top_neighbours(emb: np.ndarray, k: int) -> np.ndarray:
    """(N, min(k, N-1)) indices of each row's nearest other rows by cosine, best first."""
    n = len(emb)
    k = min(k, n - 1)
    out = np.zeros((n, max(k, 0)), dtype=np.int64)
    for start in range(0, n, CHUNK):
        sims = emb[start:start + CHUNK] @ emb.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        out[start:start + CHUNK] = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return out


def precision_at(top: np.ndarray, labels: dict[str, np.ndarray], ks: Sequence[int] = KS,
                 query_labels: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """Per attribute (and `all`), precision@k of `top` (queries x ranked gallery indices):
    the share of results whose label equals the query's. Queries without the label are left
    out; results without it count as wrong. Labels of the queries default to the gallery's."""
    return {attr: {k: mean_of(v) for k, v in by_k.items()}
            for attr, by_k in query_precision(top, labels, ks, query_labels).items()}


def query_precision(top: np.ndarray, labels: dict[str, np.ndarray], ks: Sequence[int] = KS,
                    query_labels: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per attribute (and `all`), each query's own precision@k; NaN for a query without the label."""
    query_labels = query_labels or labels
    hits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    every = np.ones(top.shape, dtype=bool)
    has_all = np.ones(len(top), dtype=bool)
    for attr, gallery in labels.items():
        q = query_labels[attr]
        same = gallery[top] == q[:, None]
        hits[attr] = (same, q != "")
        every &= same
        has_all &= hits[attr][1]
    if len(labels) > 1:
        hits["all"] = (every, has_all)
    return {attr: {f"p@{k}": np.where(has, same[:, :k].mean(axis=1) if same.size else 0.0, np.nan) for k in ks}
            for attr, (same, has) in hits.items()}


def mean_of(values: Sequence[float] | np.ndarray) -> float:
    """The mean of the values that are not NaN (0.0 when none is), rounded as every metric is."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return round(float(v.mean()), 4) if v.size else 0.0


def margin(values: Sequence[float] | np.ndarray) -> float:
    """Half-width of the 95% interval of the mean of `values` (one per photo or query scored):
    1.96 standard errors, by the normal approximation, which holds for the hundreds of photos
    an evaluation needs. NaN values are left out; 0.0 for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]  # the photos or queries a metric leaves out
    if v.size < 2:
        return 0.0
    return round(float(Z95 * v.std(ddof=1) / np.sqrt(v.size)), 4)


def image_ceilings(labels: dict[str, np.ndarray], ks: Sequence[int] = KS) -> dict[str, dict[str, float]]:
    """Per attribute (and `all`), the best precision@k of each photo querying the others: a
    photo whose label n others share can have at most min(n, k) right among its top k."""
    keys = dict(labels)
    if len(labels) > 1:
        keys["all"] = np.array(["\x1f".join(row) if all(row) else "" for row in zip(*labels.values())], dtype=object)
    n = len(next(iter(labels.values()), []))
    out = {}
    for attr, gallery in keys.items():
        counts = Counter(gallery)
        others = np.array([counts[g] - 1 for g in gallery if g != ""], dtype=np.float64)
        out[attr] = {f"p@{k}": _ceiling(others, min(k, n - 1)) for k in ks}
    return out


def query_ceilings(labels: dict[str, np.ndarray], query_labels: dict[str, np.ndarray],
                   k: int = 10) -> dict[str, float]:
    """The best precision@k for label queries: per attribute alone (min(photos with it, k) / k),
    for `all` (photos with every label), and for `mean`: the mean over attributes when one top k
    has to serve them all, which the k photos matching the most named labels reach."""
    attrs = list(labels)
    rows = list(zip(*labels.values()))
    kinds = Counter(rows)  # photos grouped by their label tuple: a few hundred kinds, not N photos
    tuples = np.array(list(kinds), dtype=object).reshape(len(kinds), len(attrs))
    sizes = np.array(list(kinds.values()), dtype=np.int64)
    n_q = len(next(iter(query_labels.values()), []))
    out = {a: 0.0 for a in attrs} | {"all": 0.0, "mean": 0.0}
    if n_q == 0 or not rows:
        return out
    k = min(k, len(rows))
    for q in range(n_q):
        match = np.stack([tuples[:, i] == query_labels[a][q] for i, a in enumerate(attrs)])  # attrs x kinds
        for i, a in enumerate(attrs):
            out[a] += min(int(sizes[match[i]].sum()), k) / k
        out["all"] += min(int(sizes[match.all(axis=0)].sum()), k) / k
        out["mean"] += _best_total(match.sum(axis=0), sizes, k) / (k * len(attrs))
    return {name: round(total / n_q, 4) for name, total in out.items()}


def _best_total(named: np.ndarray, sizes: np.ndarray, k: int) -> int:
    """Named labels matched by the k photos that match the most of them."""
    total, left = 0, k
    for i in np.argsort(-named, kind="stable"):
        take = min(int(sizes[i]), left)
        total += take * int(named[i])
        left -= take
        if left == 0:
            break
    return total


def _ceiling(others: np.ndarray, k: int) -> float:
    if others.size == 0 or k < 1:
        return 0.0
    return round(float(np.minimum(others, k).mean() / k), 4)


def text_ranks(img: np.ndarray, txt: np.ndarray, own: Sequence[int]) -> np.ndarray:
    """1-based rank of photo `own[i]` among all photos for title i (ties counted in its favour)."""
    own = np.asarray(own, dtype=np.int64)
    ranks = np.zeros(len(txt), dtype=np.int64)
    for start in range(0, len(txt), CHUNK):
        sims = txt[start:start + CHUNK] @ img.T
        mine = sims[np.arange(len(sims)), own[start:start + CHUNK]]
        ranks[start:start + CHUNK] = (sims > mine[:, None]).sum(axis=1) + 1
    return ranks


def text_metrics(ranks: np.ndarray) -> dict[str, float]:
    """Recall@1, recall@10 and MRR of the titles' ranks."""
    return {k: mean_of(v) for k, v in title_scores(ranks).items()}


def title_scores(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Each title's own recall@1, recall@10 and reciprocal rank: `text_metrics` are their means."""
    if len(ranks) == 0:
        return {}
    r = np.asarray(ranks, dtype=np.float64)
    return {"recall@1": (r <= 1).astype(np.float64), "recall@10": (r <= 10).astype(np.float64), "mrr": 1.0 / r}


def attribute_query_labels(items: Sequence[LabelledItem], columns: Sequence[str]) -> list[tuple[str, ...]]:
    """Label combinations ("Men", "Black", "Casual Shoes") held by two photos or more, in first-seen
    order: a combination only one photo has would score that photo's luck, not the model."""
    combos = Counter(tuple(it.labels.get(c, "") for c in columns) for it in items)
    return [c for c, n in combos.items() if n >= 2 and all(c)]


def top_for_queries(q: np.ndarray, img: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(img))
    return np.argsort(-(q @ img.T), axis=1, kind="stable")[:, :k]


def tag_scores(pred: Sequence[str], stored: Sequence[str | None], truth: Sequence[str],
               hits: dict[str, np.ndarray] | None = None) -> dict:
    """Accuracy of the best label, coverage and accuracy of the stored (thresholded) tags, and
    the most confused (truth -> predicted) pairs, over the photos the catalog labels. `hits`:
    `tag_hits` of the same arguments, where the caller has them already."""
    keep = [i for i, t in enumerate(truth) if norm_label(t)]
    confused = Counter((truth[i], pred[i]) for i in keep if norm_label(pred[i]) != norm_label(truth[i])).most_common(5)
    hits = hits if hits is not None else tag_hits(pred, stored, truth)
    return {"n": len(keep), **{k: mean_of(v) for k, v in hits.items()},
            "most_confused": [{"truth": t, "predicted": p, "n": n} for (t, p), n in confused]}


def tag_hits(pred: Sequence[str], stored: Sequence[str | None], truth: Sequence[str]) -> dict[str, np.ndarray]:
    """Per photo: is the best label right, is a tag stored, is the stored tag right (1.0 or 0.0);
    NaN where the catalog has no label, and for the last where no tag is stored."""
    nan = np.nan
    labelled = [bool(norm_label(t)) for t in truth]
    return {"accuracy": np.array([float(norm_label(p) == norm_label(t)) if ok else nan
                                  for p, t, ok in zip(pred, truth, labelled)]),
            "coverage": np.array([float(bool(s)) if ok else nan for s, ok in zip(stored, labelled)]),
            "accuracy@threshold": np.array([float(norm_label(s) == norm_label(t)) if ok and s else nan
                                            for s, t, ok in zip(stored, truth, labelled)])}


def confusion(pred: Sequence[str], truth: Sequence[str], top: int = CONFUSION_LABELS) -> dict:
    """Counts of (truth, predicted) over the `top` commonest true labels: rows are the truth,
    columns the same labels plus one for any other prediction, so each row sums to its photos."""
    labels = [lab for lab, _ in Counter(t for t in truth if t).most_common(top)]
    at = {norm_label(lab): i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for t, p in zip(truth, pred):
        if norm_label(t) in at:
            m[at[norm_label(t)], at.get(norm_label(p), len(labels))] += 1
    return {"labels": labels, "columns": [*labels, "(other)"], "matrix": m.tolist()}


def pca_2d(emb: np.ndarray) -> np.ndarray:
    """The two principal components of the rows, via SVD of the centred matrix."""
    if len(emb) < 2:
        return np.zeros((len(emb), 2))
    centred = emb - emb.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T
