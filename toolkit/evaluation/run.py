"""Retrieval and tagging quality on a labelled catalog, measured through the real pipeline.

`evaluate` links the catalog's photos into a temporary folder, tags them with
`Toolkit.tag(..., tagger="local")` into a scratch collection (`eval-<random>`, removed
afterwards), reads the stored vectors and tags back, and scores them with exact numpy
search: HNSW's approximation would add noise to a figure meant to compare models.

Metric names (the keys of `EvalReport.metrics`, and what `--fail-under` accepts); ATTR is
a labelled column the vocabulary mirrors (articleType, baseColour, gender), or `all` when
a result must match every one of them:

    image.ATTR.p@1 / p@5 / p@10   each photo queries the others: share of its top k with the same label
    text.recall@1 / recall@10     each title queries the photos: share whose own photo is in the top k
    text.mrr                      mean of 1 / rank of the title's own photo
    query.ATTR.p@10               "Men Black Casual Shoes" from the labels (triples held by 2+ photos):
                                  share of the top 10 with each named label
    query.mean.p@10               the mean of the attributes' query.ATTR.p@10
    tags.COLUMN.accuracy          the local tagger's best label (no threshold) equals the catalog's
    tags.COLUMN.coverage          share of photos given a stored tag (confidence over the threshold)
    tags.COLUMN.accuracy@threshold  share of stored tags that are right

`EvalReport.ceilings` holds, for the image and query metrics, the best figure any ranking
could reach on these labels: a photo whose label only 3 others share scores at most 3/5 at
p@5, and a query whose every label only 3 photos share at most 0.3 for `all`. query.ATTR's
ceiling is that attribute's alone; query.mean's is that of all of them at once, since a top 10
filled with one attribute's matches can crowd out another's.

`EvalReport.margins` holds, for every metric, the half-width of its 95% interval: each figure
is a mean over the photos, titles or queries scored, and as many other photos of the same
catalog would give a figure within about that much of it. A `--fail-under` gate set closer
than that to a model's figure fails by chance now and then (`narrow_gates` names such gates).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import numpy as np

from toolkit.ground.errors import CatalogError, ConfigError, SourceError

if TYPE_CHECKING:
    from taggers.clip_local import Group
    from toolkit.core import Toolkit
    from toolkit.ground.models import Media
    from toolkit.ingest.pipeline import ItemCallback

Split = Literal["eval", "holdout", "all"]
KS = (1, 5, 10)
#: Tag groups whose labels image-to-image and attribute-query retrieval are scored on, in the
#: word order of a shopper's query ("Men Black Casual Shoes").
RETRIEVAL_GROUPS = ("gender", "colour", "article_type")
#: The group whose labels are the "categories" of the per-category bars, the map and the examples.
CATEGORY_GROUP = "article_type"
TOP_CATEGORIES = 15
CONFUSION_LABELS = 12
MAP_POINTS = 1500
EXAMPLES = 6
EXAMPLE_HITS = 5
#: Rows of the similarity matrix computed at once: 1,024 x 8,083 floats is 33 MB.
CHUNK = 1024
#: Standard normal quantile of a two-sided 95% interval.
Z95 = 1.96


@dataclass
class LabelledItem:
    product_id: str
    title: str
    image: Path
    labels: dict[str, str]  # catalog column (articleType, ...) -> label


@dataclass
class EvalReport:
    """Everything `toolkit eval` prints, writes to eval.json and draws in eval.html. JSON-able."""

    model_id: str
    split: str
    items: int
    metrics: dict[str, float]
    attributes: list[str]
    skipped: list[str] = field(default_factory=list)
    attribute_queries: int = 0
    #: metric name -> the best any ranking could score on these labels (image.* and query.*)
    ceilings: dict[str, float] = field(default_factory=dict)
    #: metric name -> half-width of its 95% interval over the photos or queries scored
    margins: dict[str, float] = field(default_factory=dict)
    #: metric name -> each photo's (or query's) own score, whose mean the metric is: what a
    #: comparison with another model's run pairs up (toolkit/evaluation/compare.py). Not in eval.json.
    per_item: dict[str, dict[str, float]] = field(default_factory=dict)
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The machine and precision the figures were measured with (`measured_on`): figures from
    #: two machines are never compared blind.
    measured_on: dict[str, object] = field(default_factory=dict)
    tags: dict[str, dict] = field(default_factory=dict)
    map: dict[str, list] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)
    seconds: float = 0.0


# ---- the catalog ---------------------------------------------------------------------------------

def label_columns(groups: Sequence["Group"], header: Sequence[str]) -> dict[str, str]:
    """Tag group -> the catalog's column for it: the vocabulary's `column` (or the group's own
    name), matched case-insensitively, so styles.csv and a products CSV both work."""
    lowered = {h.strip().lower(): h.strip() for h in header}
    found = {}
    for g in groups:
        for name in (g.column, g.name):
            if name and name.lower() in lowered:
                found[g.name] = lowered[name.lower()]
                break
    return found


def read_labelled(catalog_csv: Path, images: Path, columns: dict[str, str]) -> tuple[list[LabelledItem], list[str]]:
    """Catalog rows with their photo. A styles.csv row's photo is `<id>.jpg`; a products CSV
    row's is its first media entry, under `images`. Rows without a photo are named, not fatal."""
    from toolkit.ingest.catalog import read_products

    items, missing = [], []
    for p in read_products(catalog_csv):
        name = p.media[0] if p.media else f"{p.product_id}.jpg"
        path = _image_path(images, name)
        if path is None:
            missing.append(f"{p.product_id}: no photo {name} under {images}")
            continue
        wanted = set(columns.values())
        labels = {k: v for k, v in p.attributes.items() if k in wanted and v}
        items.append(LabelledItem(p.product_id, p.title, path, labels))
    return items, missing


def _image_path(images: Path, name: str) -> Path | None:
    name = name.removeprefix("file://")
    candidates = [Path(name)] if Path(name).is_absolute() else [images / name, images / Path(name).name]
    return next((c for c in candidates if c.is_file()), None)


def select(items: list[LabelledItem], split: Split, limit: int | None) -> list[LabelledItem]:
    """The rows of one split (toolkit/training/split.py: eval, holdout or all); then the first `limit`, in file order."""
    from toolkit.training.split import in_split

    if split not in ("eval", "holdout", "all"):
        raise ConfigError(f"split {split!r} is not a split; use eval, holdout or all")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit} must be 1 or more")
    chosen = [it for it in items if in_split(it.product_id, split)]
    return chosen[:limit] if limit else chosen


# ---- indexing into a scratch collection ----------------------------------------------------------

@dataclass
class Indexed:
    """What the pipeline stored for each photo, in the items' order (None rows for photos it skipped)."""
    embeddings: np.ndarray
    stored: list[dict | None]
    #: The image features the tagger read, per photo; None when the embedder gives none.
    features: list[np.ndarray | None]
    problems: list[str]


def index_scratch(tk: "Toolkit", items: list[LabelledItem], on_item: "ItemCallback | None" = None,
                  on_listed: Callable[[int], None] | None = None) -> Indexed:
    """Tag the photos into a fresh collection through the real pipeline, and read back each
    photo's vector and stored metadata; the features the tagger read are kept on the way (the
    store keeps vectors, not features), so scoring the tags needs no second backbone pass."""
    from toolkit.core import Toolkit

    name = f"eval-{uuid.uuid4().hex[:12]}"
    scratch = Toolkit(tk.settings.model_copy(update={"collection": name}), embedder=tk.embedder)
    folder = Path(tempfile.mkdtemp(prefix="toolkit-eval-"))
    features: dict[str, np.ndarray] = {}

    def keep_features(media: "Media") -> None:
        if media.features is not None and len(media.features):
            features[media.ref.key] = media.features[0]  # a video's first frame stands for it, as below

    try:
        keys = _link_photos(items, folder)
        report = scratch.tag(folder, tagger="local", on_item=on_item, on_listed=on_listed, on_media=keep_features)
        emb, stored = _read_back(scratch, keys)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        drop_collections(scratch, [name, f"{name}-products"])
    problems = [f.reason for f in [*report.skipped, *report.failed]]
    return Indexed(emb, stored, [features.get(k) for k in keys], problems)


def _link_photos(items: list[LabelledItem], folder: Path) -> list[str]:
    """One link per row named by its position, so a stored record's key leads back to its row
    even when two rows share a photo name."""
    keys = []
    for i, it in enumerate(items):
        key = f"{i:06d}{it.image.suffix.lower()}"
        try:
            os.symlink(it.image.resolve(), folder / key)
        except OSError:  # no symlinks (some Windows setups): copy instead
            shutil.copyfile(it.image, folder / key)
        keys.append(key)
    return keys


def _read_back(scratch: "Toolkit", keys: list[str], chunk: int = 500) -> tuple[np.ndarray, list[dict | None]]:
    by_key: dict[str, tuple[np.ndarray, dict]] = {}
    for start in range(0, len(keys), chunk):
        for r in scratch.store.get(where={"key": {"$in": keys[start:start + chunk]}}, include_embeddings=True):
            # A video has one record per frame; its first frame stands for it.
            if r.metadata.get("key") not in by_key or r.metadata.get("frame", 0) == 0:
                by_key[r.metadata["key"]] = (r.embedding, r.metadata)
    dim = scratch.embedder.dim
    emb = np.stack([by_key[k][0] if k in by_key else np.zeros(dim, np.float32) for k in keys]) if keys else \
        np.zeros((0, dim), np.float32)
    return emb.astype(np.float32), [by_key[k][1] if k in by_key else None for k in keys]


def drop_collections(tk: "Toolkit", names: Sequence[str]) -> None:
    from store.chroma import client_for

    client = client_for(tk.settings)
    for name in names:
        try:
            client.delete_collection(name)
        except Exception:  # never created (the run stopped first) or already gone
            pass


# ---- metrics -------------------------------------------------------------------------------------

def _norm(label: str | None) -> str:
    return (label or "").strip().lower()


def label_array(items: Sequence[LabelledItem], column: str) -> np.ndarray:
    return np.array([_norm(it.labels.get(column)) for it in items], dtype=object)


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
    keep = [i for i, t in enumerate(truth) if _norm(t)]
    confused = Counter((truth[i], pred[i]) for i in keep if _norm(pred[i]) != _norm(truth[i])).most_common(5)
    hits = hits if hits is not None else tag_hits(pred, stored, truth)
    return {"n": len(keep), **{k: mean_of(v) for k, v in hits.items()},
            "most_confused": [{"truth": t, "predicted": p, "n": n} for (t, p), n in confused]}


def tag_hits(pred: Sequence[str], stored: Sequence[str | None], truth: Sequence[str]) -> dict[str, np.ndarray]:
    """Per photo: is the best label right, is a tag stored, is the stored tag right (1.0 or 0.0);
    NaN where the catalog has no label, and for the last where no tag is stored."""
    nan = np.nan
    labelled = [bool(_norm(t)) for t in truth]
    return {"accuracy": np.array([float(_norm(p) == _norm(t)) if ok else nan
                                  for p, t, ok in zip(pred, truth, labelled)]),
            "coverage": np.array([float(bool(s)) if ok else nan for s, ok in zip(stored, labelled)]),
            "accuracy@threshold": np.array([float(_norm(s) == _norm(t)) if ok and s else nan
                                            for s, t, ok in zip(stored, truth, labelled)])}


def confusion(pred: Sequence[str], truth: Sequence[str], top: int = CONFUSION_LABELS) -> dict:
    """Counts of (truth, predicted) over the `top` commonest true labels: rows are the truth,
    columns the same labels plus one for any other prediction, so each row sums to its photos."""
    labels = [lab for lab, _ in Counter(t for t in truth if t).most_common(top)]
    at = {_norm(lab): i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for t, p in zip(truth, pred):
        if _norm(t) in at:
            m[at[_norm(t)], at.get(_norm(p), len(labels))] += 1
    return {"labels": labels, "columns": [*labels, "(other)"], "matrix": m.tolist()}


def pca_2d(emb: np.ndarray) -> np.ndarray:
    """The two principal components of the rows, via SVD of the centred matrix."""
    if len(emb) < 2:
        return np.zeros((len(emb), 2))
    centred = emb - emb.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


# ---- the report ----------------------------------------------------------------------------------

def evaluate(catalog_csv: Path, images: Path, toolkit: "Toolkit | None" = None, *, limit: int | None = None,
             split: Split = "eval", on_item: "ItemCallback | None" = None,
             on_listed: Callable[[int], None] | None = None) -> EvalReport:
    """Index the labelled catalog's photos into a scratch collection and score retrieval and tags."""
    from toolkit.core import Toolkit
    from toolkit.registry import tagger as make_tagger

    started = time.perf_counter()
    tk = toolkit or Toolkit()
    catalog_csv, images = Path(catalog_csv), Path(images)
    if not images.is_dir():
        raise SourceError(f"{images}: no such folder; give the folder holding the catalog's photos")
    tagger = make_tagger("local", tk.settings, tk.embedder)
    columns = label_columns(tagger.groups, catalog_header(catalog_csv))
    if not columns:
        wanted = ", ".join(g.column or g.name for g in tagger.groups)
        raise CatalogError(f"{catalog_csv}: no labelled columns; add one or more of {wanted}")
    rows, missing = read_labelled(catalog_csv, images, columns)
    items = select(rows, split, limit)
    if len(items) < 2:
        raise CatalogError(f"{catalog_csv}: {len(items)} photo(s) in the {split} split; evaluation needs 2 or more "
                           f"(try --split all, or check --images)")
    indexed = index_scratch(tk, items, on_item, on_listed)
    kept = [i for i, m in enumerate(indexed.stored) if m is not None]
    items, emb, stored = [items[i] for i in kept], indexed.embeddings[kept], [indexed.stored[i] for i in kept]
    feats = [indexed.features[i] for i in kept]
    features = np.stack(feats) if feats and all(f is not None for f in feats) else None
    report = EvalReport(model_id=tk.embedder.model_id, split=split, items=len(items), metrics={},
                        attributes=[columns[g] for g in RETRIEVAL_GROUPS if g in columns],
                        skipped=missing + indexed.problems)
    _score(report, tk, tagger, columns, items, emb, stored, features)
    report.measured_on = measured_on(tk.embedder)
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def measured_on(embedder: object) -> dict[str, object]:
    """CPU, its int8-relevant flags, the ONNX Runtime version and the image precision in force."""
    from toolkit.ground.machine import describe, machine_facts

    facts = dict(machine_facts())
    choice = getattr(embedder, "precision_choice", None)  # the offline model's; CLIP runs fp32 on PyTorch
    facts["precision"] = choice().precision if choice else "fp32"
    facts["line"] = f"{facts['precision']} image backbone on {describe()}"
    return facts


def catalog_header(catalog_csv: Path) -> list[str]:
    import csv

    if not catalog_csv.is_file():
        raise CatalogError(f"{catalog_csv}: no such file; give a styles.csv or products CSV")
    with catalog_csv.open(newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])


def _score(report: EvalReport, tk: "Toolkit", tagger, columns: dict[str, str], items: list[LabelledItem],
           emb: np.ndarray, stored: list[dict], features: np.ndarray | None) -> None:
    attrs = report.attributes
    labels = {a: label_array(items, a) for a in attrs}
    top = top_neighbours(emb, max(KS))
    keys = [item_key(it) for it in items]
    if attrs:
        for attr, by_k in query_precision(top, labels).items():
            for k, values in by_k.items():
                _put(report, f"image.{attr}.{k}", keys, values)
        for attr, by_k in image_ceilings(labels).items():
            report.ceilings.update({f"image.{attr}.{k}": v for k, v in by_k.items()})
    titled = [i for i, it in enumerate(items) if it.title]
    if titled:
        # Untitled photos stay in the gallery: a title's photo is ranked among all of them.
        txt = np.asarray(tk.embedder.embed_texts([items[i].title for i in titled]), np.float32)
        for k, values in title_scores(text_ranks(emb, txt, titled)).items():
            _put(report, f"text.{k}", [keys[i] for i in titled], values)
    _score_attribute_queries(report, tk, items, emb, labels)
    _score_tags(report, tagger, columns, items, keys, emb, stored, features)
    _add_pictures(report, columns, items, emb, top, labels)


def _score_attribute_queries(report: EvalReport, tk: "Toolkit", items: list[LabelledItem], emb: np.ndarray,
                             labels: dict[str, np.ndarray]) -> None:
    attrs = report.attributes
    combos = attribute_query_labels(items, attrs)
    report.attribute_queries = len(combos)
    if not combos:
        return
    q = tk.embedder.embed_texts([" ".join(c) for c in combos])
    top = top_for_queries(np.asarray(q, np.float32), emb, 10)
    query_labels = {a: np.array([_norm(c[i]) for c in combos], dtype=object) for i, a in enumerate(attrs)}
    names = [" ".join(c) for c in combos]
    per_query = {attr: by_k["p@10"] for attr, by_k in query_precision(top, labels, (10,), query_labels).items()}
    for attr, values in per_query.items():
        _put(report, f"query.{attr}.p@10", names, values)
    if len(attrs) > 1:  # every query names every label, so each has all the attributes' precisions
        _put(report, "query.mean.p@10", names, np.mean([per_query[a] for a in attrs], axis=0))
    # Bounds only for the figures reported (`all` and `mean` need two attributes or more).
    report.ceilings.update({f"query.{name}.p@10": v for name, v in query_ceilings(labels, query_labels, 10).items()
                            if f"query.{name}.p@10" in report.metrics})


def _score_tags(report: EvalReport, tagger, columns: dict[str, str], items: list[LabelledItem], keys: list[str],
                emb: np.ndarray, stored: list[dict], features: np.ndarray | None = None) -> None:
    probs = tagger.probabilities(emb, features=features)
    blended = set(tagger.classifier_columns()) if features is not None else set()
    for g in tagger.groups:
        if g.name not in columns:
            continue
        column = columns[g.name]
        pred = [g.labels[i] for i in probs[g.name].argmax(axis=1)]
        truth = [it.labels.get(column, "") for it in items]
        tags = [m.get(f"tag_{g.name}") for m in stored]
        hits = tag_hits(pred, tags, truth)
        scores = tag_scores(pred, tags, truth, hits)
        known = {_norm(lab) for lab in g.labels}
        scores["out_of_vocabulary"] = sum(1 for t in truth if _norm(t) and _norm(t) not in known)
        scores["group"] = g.name
        scores["method"] = "prompts+classifier" if g.name in blended else "prompts"
        scores["confusion"] = confusion(pred, truth)
        report.tags[column] = scores
        for k, values in hits.items():
            _put(report, f"tags.{column}.{k}", keys, values)


def item_key(item: LabelledItem) -> str:
    """Names a scored photo across runs: its product and picture (a product may have several)."""
    return f"{item.product_id}/{item.image.name}"


def _put(report: EvalReport, name: str, keys: Sequence[str], values: np.ndarray) -> None:
    """A metric from each photo's (or query's) own score: their mean, its 95% margin, and the scores."""
    report.metrics[name] = mean_of(values)
    report.margins[name] = margin(values)
    report.per_item[name] = {k: round(float(v), 4) for k, v in zip(keys, values) if not np.isnan(v)}


def _add_pictures(report: EvalReport, columns: dict[str, str], items: list[LabelledItem], emb: np.ndarray,
                  top: np.ndarray, labels: dict[str, np.ndarray]) -> None:
    """What the HTML report draws: p@5 per category, the 2-D map and the example queries."""
    column = columns.get(CATEGORY_GROUP)
    cats = [it.labels.get(column, "") if column else "" for it in items]
    if column and column in labels:
        same = labels[column][top[:, :5]] == labels[column][:, None]
        for cat, n in Counter(c for c in cats if c).most_common(TOP_CATEGORIES):
            rows = np.array([c == cat for c in cats])
            report.per_category[cat] = {"n": n, "p@5": round(float(same[rows].mean()), 4)}
    step = max(1, len(items) // MAP_POINTS)
    xy = pca_2d(emb[::step])
    report.map = {"x": np.round(xy[:, 0], 4).tolist(), "y": np.round(xy[:, 1], 4).tolist(),
                  "label": cats[::step]}
    report.examples = _examples(items, top, cats)


def _examples(items: list[LabelledItem], top: np.ndarray, cats: list[str]) -> list[dict]:
    """The first photo of each of the commonest categories, with its nearest photos."""
    firsts: dict[str, int] = {}
    for i, c in enumerate(cats):
        firsts.setdefault(c, i)
    chosen = [firsts[c] for c, _ in Counter(cats).most_common(EXAMPLES)]
    return [{"query": _picture(items[i], cats[i]),
             "hits": [{**_picture(items[j], cats[j]), "correct": bool(cats[j] and cats[j] == cats[i])}
                      for j in top[i, :EXAMPLE_HITS]]}
            for i in chosen]


def _picture(it: LabelledItem, category: str) -> dict:
    return {"product_id": it.product_id, "title": it.title, "image": str(it.image), "category": category}


# ---- gates ---------------------------------------------------------------------------------------

GATE = re.compile(r"^\s*([\w.@]+)\s*=\s*([0-9]*\.?[0-9]+)\s*$")


def parse_gate(text: str) -> tuple[str, float]:
    """`image.articleType.p@5=0.85` -> ("image.articleType.p@5", 0.85)."""
    m = GATE.match(text)
    if not m:
        raise ConfigError(f"--fail-under {text!r} must look like metric=value, e.g. image.articleType.p@5=0.85")
    return m.group(1), float(m.group(2))


def failed_gates(metrics: dict[str, float], gates: Sequence[tuple[str, float]],
                 margins: dict[str, float] | None = None) -> list[str]:
    """One line per gate the figures fall under; a gate naming no metric is an error, not a pass."""
    check_gate_names(gates, set(metrics))
    return [f"{name} = {metrics[name]:.4g} < {floor:g}{_plus_minus(margins, name)}"
            for name, floor in gates if metrics[name] < floor]


def narrow_gates(metrics: dict[str, float], gates: Sequence[tuple[str, float]],
                 margins: dict[str, float]) -> list[str]:
    """One line per gate passed by less than the figure's 95% margin: another sample of the same
    catalog could fail it, so a CI gate set there will fail now and then with no model change."""
    return [f"{name} = {metrics[name]:.4g} >= {floor:g}{_plus_minus(margins, name)}"
            for name, floor in gates if name in metrics and floor <= metrics[name] < floor + margins.get(name, 0.0)]


def _plus_minus(margins: dict[str, float] | None, name: str) -> str:
    return f" (±{margins[name]:.2g} at 95%)" if margins and name in margins else ""


def metric_names(columns: dict[str, str]) -> set[str]:
    """The metrics a run over a catalog with these labelled columns reports (tag group -> column)."""
    attrs = [columns[g] for g in RETRIEVAL_GROUPS if g in columns]
    scored = attrs + (["all"] if len(attrs) > 1 else [])
    names = {f"image.{a}.p@{k}" for a in scored for k in KS} | {f"query.{a}.p@10" for a in scored}
    names |= {"query.mean.p@10"} if len(attrs) > 1 else set()
    names |= {"text.recall@1", "text.recall@10", "text.mrr"}
    return names | {f"tags.{c}.{k}" for c in columns.values() for k in ("accuracy", "coverage", "accuracy@threshold")}


def planned_metrics(catalog_csv: Path, vocabulary: Path | None = None) -> set[str]:
    """Metric names from the catalog's header alone, so a mistyped gate fails before the model loads."""
    from taggers.clip_local import load_vocabulary

    return metric_names(label_columns(load_vocabulary(vocabulary), catalog_header(Path(catalog_csv))))


def check_gate_names(gates: Sequence[tuple[str, float]], known: set[str]) -> None:
    unknown = [name for name, _ in gates if name not in known]
    if unknown:
        raise ConfigError(f"--fail-under names no metric: {', '.join(unknown)}; "
                          f"metrics for this catalog: {', '.join(sorted(known))}")
