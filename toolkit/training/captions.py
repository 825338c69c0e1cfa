"""Captions of catalog photos for training: the tagger's vocabulary and the texts each photo is paired with.

Each product's title, the vocabulary's prompts for its labels ("a photo of Tshirts") and
attribute phrases in the words shoppers type ("Men Black Casual Shoes"). Every caption
records which attributes it names, so the loss can tell which images it describes.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

#: Catalog columns behind each vocabulary group (pattern has none: it is read from titles).
GROUP_COLUMNS = {
    "article_type": "articleType",
    "colour": "baseColour",
    "gender": "gender",
    "usage": "usage",
    "season": "season",
    "master_category": "masterCategory",
}
TEMPLATES = {
    "article_type": "a photo of {label}",
    "colour": "a {label} coloured product",
    "gender": "a product for {label}",
    "usage": "for {label} use",
    "season": "a {label} season product",
    "master_category": "a product from the {label} category",
    "pattern": "a {label} pattern",
}
#: Title words that name a pattern; the first match wins.
PATTERN_WORDS = [
    ("polka dot", r"polka"), ("floral", r"floral|flower"), ("striped", r"stripe"), ("checked", r"check"),
    ("colourblocked", r"colou?r ?block"), ("graphic", r"graphic"), ("printed", r"print"), ("solid", r"solid|plain"),
]
FIELDS = ["title", "article_type", "colour", "gender", "usage", "season", "master_category", "pattern"]
#: Attribute phrases, in the words shoppers type: "Men Black Casual Shoes".
COMBOS = [
    "{gender} {colour} {article_type}", "{colour} {article_type}", "{gender} {article_type}",
    "{usage} {article_type}", "{colour} {article_type} for {gender}", "{gender} {colour} {usage} {article_type}",
]
CAPTION_WEIGHTS = {"title": 0.6, "prompt": 0.2, "combo": 0.2}
REQUIRED_COLUMNS = {"id", "productDisplayName", *GROUP_COLUMNS.values()}


def pattern_of(title: str) -> str | None:
    low = title.lower()
    for label, rx in PATTERN_WORDS:
        if re.search(rx, low):
            return label
    return None


def build_vocabulary(rows: list[dict[str, str]], min_count: int = 2) -> dict:
    """The tagger vocabulary from catalog rows: each group's labels are the catalog's own values
    (seen at least `min_count` times), so tags line up with catalog attributes."""
    groups = {}
    for group, column in GROUP_COLUMNS.items():
        counts: dict[str, int] = {}
        for r in rows:
            if r.get(column):
                counts[r[column]] = counts.get(r[column], 0) + 1
        labels = sorted(v for v, n in counts.items() if n >= min_count)
        groups[group] = {"template": TEMPLATES[group], "column": column, "labels": labels}
    groups["pattern"] = {"template": TEMPLATES["pattern"], "column": None,
                         "labels": [label for label, _ in PATTERN_WORDS]}
    return {"version": 1, "groups": groups}


def load_vocabulary(path: Path | None = None) -> dict:
    path = path or Path(__file__).resolve().parents[2] / "taggers" / "data" / "vocabulary.json"
    return json.loads(Path(path).read_text(encoding="utf-8"))



@dataclass
class Captions:
    texts: list[str]            # unique caption strings
    cap_text: np.ndarray        # (M,) candidate -> text index
    cap_req: np.ndarray         # (M, F) attribute codes the caption names, -1 where it names none
    by_item: list[dict[str, list[int]]]  # item -> caption kind -> candidate indices
    item_codes: np.ndarray      # (N, F) the items' attribute codes, -1 unknown
    groups: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Vocabulary group -> (text index of each label's prompt, each item's label index or -1)."""


def item_values(row: dict[str, str]) -> dict[str, str | None]:
    vals: dict[str, str | None] = {g: (row.get(c) or None) for g, c in GROUP_COLUMNS.items()}
    vals["title"] = row.get("productDisplayName") or None
    vals["pattern"] = pattern_of(row.get("productDisplayName", ""))
    return vals


def build_captions(rows: list[dict[str, str]], vocab: dict) -> Captions:
    values = [item_values(r) for r in rows]
    codebook: dict[str, dict[str, int]] = {f: {} for f in FIELDS}

    def code(f: str, v: str | None) -> int:
        return -1 if v is None else codebook[f].setdefault(v, len(codebook[f]))

    item_codes = np.array([[code(f, v[f]) for f in FIELDS] for v in values], dtype=np.int64)
    texts: dict[str, int] = {}
    cap_text, cap_req, by_item = [], [], []

    def add(kind_map: dict, kind: str, text: str, named: Iterable[str], v: dict) -> None:
        req = [-1] * len(FIELDS)
        for f in named:
            req[FIELDS.index(f)] = code(f, v[f])
        kind_map.setdefault(kind, []).append(len(cap_text))
        cap_text.append(texts.setdefault(text, len(texts)))
        cap_req.append(req)

    groups = vocab["groups"]
    for v in values:
        kinds: dict[str, list[int]] = {}
        if v["title"]:
            add(kinds, "title", v["title"], ["title"], v)
        for g, group in groups.items():
            if g in FIELDS and v.get(g) in group["labels"]:
                add(kinds, "prompt", group["template"].format(label=v[g]), [g], v)
        for combo in COMBOS:
            named = re.findall(r"{(\w+)}", combo)
            if all(v.get(f) for f in named):
                add(kinds, "combo", combo.format(**{f: v[f] for f in named}), named, v)
        by_item.append(kinds)
    targets = {}
    for g, group in groups.items():
        if g not in FIELDS:
            continue
        labels = list(group["labels"])
        text_idx = np.array([texts.setdefault(group["template"].format(label=lab), len(texts)) for lab in labels])
        item_label = np.array([labels.index(v[g]) if v.get(g) in labels else -1 for v in values])
        targets[g] = (text_idx, item_label)
    return Captions(list(texts), np.array(cap_text), np.array(cap_req, dtype=np.int64), by_item, item_codes,
                    targets)


def sample_captions(caps: Captions, items: np.ndarray, weights: dict[str, float], rng: random.Random) -> np.ndarray:
    out = []
    for i in items:
        kinds = caps.by_item[i]
        names = [k for k in weights if k in kinds]
        kind = rng.choices(names, [weights[k] for k in names])[0]
        out.append(rng.choice(kinds[kind]))
    return np.array(out)

