"""`evaluate`: retrieval and tagging quality on a labelled catalog, measured through the real pipeline.

It reads the labelled catalog (catalog.py), indexes its photos into a scratch collection
with the local tagger (scratch.py), scores the stored vectors and tags (metrics.py) into an
`EvalReport` (record.py, which names every metric), and adds what the HTML report draws:
per-category bars, a 2-D map and example queries. Gates on the figures: gates.py.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from toolkit.evaluation.catalog import LabelledItem, Split, catalog_header, item_key, label_columns, read_labelled, select
from toolkit.evaluation.metrics import (KS, RETRIEVAL_GROUPS, attribute_query_labels, confusion, image_ceilings,
                                        label_array, margin, mean_of, norm_label, pca_2d, query_ceilings,
                                        query_precision, tag_hits, tag_scores, text_ranks, title_scores,
                                        top_for_queries, top_neighbours)
from toolkit.evaluation.record import EvalReport
from toolkit.evaluation.scratch import index_scratch
from toolkit.ground.errors import CatalogError, SourceError

if TYPE_CHECKING:
    from toolkit.core import Toolkit
    from toolkit.ingest.pipeline import ItemCallback

#: The group whose labels are the "categories" of the per-category bars, the map and the examples.
CATEGORY_GROUP = "article_type"
TOP_CATEGORIES = 15
MAP_POINTS = 1500
EXAMPLES = 6
EXAMPLE_HITS = 5
#: The groups whose worst labels the report shows, how many of each, and the fewest photos a label needs.
FAILURE_GROUPS = ("article_type", "colour")
FAILURES_PER_GROUP = 4
FAILURE_MIN_PHOTOS = 10


def evaluate(catalog_csv: Path, images: Path, toolkit: "Toolkit | None" = None, *, limit: int | None = None,
             split: Split | None = None, on_item: "ItemCallback | None" = None,
             on_listed: Callable[[int], None] | None = None, mapping: "str | Path | None" = None) -> EvalReport:
    """Index the labelled catalog's photos into a scratch collection and score retrieval and tags.
    `mapping`: a mapping file (or shipped mapping's name) that translates the catalog's columns
    into the vocabulary's (toolkit/evaluation/mapping.py); its split (all) is the default then.
    Without one, the default split is eval."""
    from toolkit.core import Toolkit
    from toolkit.registry import tagger as make_tagger

    started = time.perf_counter()
    tk = toolkit or Toolkit()
    catalog_csv, images = Path(catalog_csv), Path(images)
    if not images.is_dir():
        raise SourceError(f"{images}: no such folder; give the folder holding the catalog's photos")
    tagger = make_tagger("local", tk.settings, tk.embedder)
    summary = None
    if mapping is not None:
        from toolkit.evaluation.mapping import load_mapping, read_mapped

        the_mapping = load_mapping(mapping)
        split = split or the_mapping.split  # type: ignore[assignment]
        rows, missing, summary, columns = read_mapped(catalog_csv, images, the_mapping, tagger.groups)
        if not columns:
            raise CatalogError(f"--mapping {the_mapping.path}: maps no column of the tag vocabulary")
    else:
        split = split or "eval"
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
    if summary is not None:
        from dataclasses import asdict

        report.mapping = asdict(summary)
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
    query_labels = {a: np.array([norm_label(c[i]) for c in combos], dtype=object) for i, a in enumerate(attrs)}
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
        known = {norm_label(lab) for lab in g.labels}
        scores["out_of_vocabulary"] = sum(1 for t in truth if norm_label(t) and norm_label(t) not in known)
        scores["group"] = g.name
        scores["method"] = "prompts+classifier" if g.name in blended else "prompts"
        scores["confusion"] = confusion(pred, truth)
        report.tags[column] = scores
        for k, values in hits.items():
            _put(report, f"tags.{column}.{k}", keys, values)



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
    report.failures = _failures(columns, items, top, labels)


def _failures(columns: dict[str, str], items: list[LabelledItem], top: np.ndarray,
              labels: dict[str, np.ndarray]) -> list[dict]:
    """The worst article types and colours by image-to-image p@5 (among labels with
    FAILURE_MIN_PHOTOS photos or more), each with its photo of lowest p@5 and that photo's top 5."""
    out = []
    for group in FAILURE_GROUPS:
        column = columns.get(group)
        if not column or column not in labels or top.shape[1] < 5:
            continue
        lab = labels[column]
        own = (lab[top[:, :5]] == lab[:, None]).mean(axis=1)
        counts = Counter(v for v in lab if v)
        scored = sorted((float(own[lab == v].mean()), v) for v, n in counts.items() if n >= FAILURE_MIN_PHOTOS)
        for p5, value in scored[:FAILURES_PER_GROUP]:
            rows = np.flatnonzero(lab == value)
            i = int(rows[np.argsort(own[rows], kind="stable")[0]])
            shown = [it.labels.get(column, "") for it in items]
            out.append({"column": column, "label": items[i].labels.get(column, value), "n": counts[value],
                        "p@5": round(p5, 4), "query": _picture(items[i], shown[i]),
                        "hits": [{**_picture(items[j], shown[j]), "correct": bool(lab[j] == lab[i])}
                                 for j in top[i, :EXAMPLE_HITS]]})
    return out


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

