"""Training of the offline model's projection heads from catalog photos and their attributes.

Image side: frozen EfficientNet-Lite0 descriptor, the product-masked mean of four
mid-level blocks' outputs (they still see colour and texture) and colour features (cached
on disk by image hash, with a mirrored copy and, optionally, random views for augmentation).
Text side: frozen MiniLM embeddings of captions: each product's title, the tagger's own
vocabulary prompts ("a photo of Tshirts") and attribute phrases ("Men Black Casual Shoes").
The loss is CLIP's symmetric InfoNCE with a learnable temperature, extended to several
positives per row: a caption is a positive for every image whose attributes it names, so
"Men Black Casual Shoes" does not push apart two pairs of men's black casual shoes in one batch.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from taggers.offline.backbone_specs import LITE0, spec
from toolkit.ground.errors import CatalogError, ConfigError, SourceError
from toolkit.training.split import SPLIT_NAME, is_eval, is_holdout, read_catalog

Progress = Callable[[str], None]

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
LITE0_BLOCKS = 16
REQUIRED_COLUMNS = {"id", "productDisplayName", *GROUP_COLUMNS.values()}


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.05
    dim: int = 256
    hidden: int = 1024
    dropout: float = 0.25
    seed: int = 0
    flip: bool = True
    #: Extra views of each photo (random crops, shifts and turns: toolkit/training/augment.py), their
    #: features computed once and cached. With views, a batch shows each photo as itself or
    #: its mirror image half the time, else as one of its views.
    augment_views: int = 0
    #: Weight of the per-group label loss (image vs every label prompt of a vocabulary group).
    group_loss: float = 1.0
    #: Weight of the image-image loss: photos of the same article type and colour (and each
    #: photo's mirror image) are pulled together, so that photo search returns look-alikes.
    image_loss: float = 0.5
    image_temperature: float = 0.1
    #: Attributes two photos must share to be positives of the image-image loss.
    look_fields: tuple[str, ...] = ("article_type", "colour")
    #: Last backbone blocks fine-tuned after the heads (0: frozen ImageNet backbone).
    finetune_blocks: int = 0
    finetune_epochs: int = 3
    finetune_lr: float = 1e-4
    finetune_batch_size: int = 256
    #: Image backbone (taggers/offline/backbone_specs.py): EfficientNet-Lite0 at 224 px or Lite2 at 256 px.
    backbone: str = LITE0
    #: Pooled mid-level backbone features fed to the image head besides the last layer's
    #: (taggers/offline/backbone_specs.py `parse_mid`); "" for the 1280-d descriptor alone, None for
    #: the backbone's default.
    mid_features: str | None = None
    exclude_eval: bool = True
    #: Also leave out the training split's holdout fifth (toolkit/training/split.py), to compare
    #: training settings on it without looking at the eval split.
    hold_out: bool = False
    #: Also train the label classifiers the local tagger blends with its prompts
    #: (toolkit/training/tag_heads.py), written beside the heads.
    tag_heads: bool = True
    runtime: str = "auto"
    threads: int = 0
    limit: int | None = None
    caption_weights: dict[str, float] = field(default_factory=lambda: dict(CAPTION_WEIGHTS))


@dataclass
class TrainReport:
    out: Path
    sha256: str
    model_id: str
    n_train: int
    n_captions: int
    epochs: int
    final_loss: float
    seconds: float
    excluded_eval: int


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


# ---------------------------------------------------------------- data
def training_rows(images_dir: Path, catalog_csv: Path, exclude_eval: bool, limit: int | None,
                  hold_out: bool = False) -> tuple[list[dict], int]:
    """Catalog rows with a photo, eval items (and with `hold_out` the holdout fifth) removed;
    also how many rows were left out."""
    if not images_dir.is_dir():
        raise SourceError(f"--images {images_dir}: not a folder of <id>.jpg photos")
    if not catalog_csv.is_file():
        raise CatalogError(f"--catalog {catalog_csv}: no such file")
    rows = read_catalog(catalog_csv)
    missing = REQUIRED_COLUMNS - set(rows[0] if rows else {})
    if missing:
        raise CatalogError(f"--catalog {catalog_csv}: missing columns {', '.join(sorted(missing))}")
    rows = [r for r in rows if (images_dir / f"{r['id']}.jpg").is_file()]
    kept = [r for r in rows if not (exclude_eval and is_eval(r["id"])) and not (hold_out and is_holdout(r["id"]))]
    if limit:
        kept = kept[:limit]
    if exclude_eval:
        # The one guarantee every reported figure rests on.
        assert not any(is_eval(r["id"]) for r in kept), "eval item in the training set"
    if len(kept) < 8:
        raise CatalogError(f"--catalog {catalog_csv}: only {len(kept)} training photos found in {images_dir}")
    return kept, len(rows) - len(kept)


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _cached_rows(cache: Path, keys: list[str], compute: Callable[[list[str]], dict[str, np.ndarray]],
                 names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Rows of arrays `names` for each key, computing only keys the npz cache lacks, then saving."""
    known: dict[str, int] = {}
    old: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as z:
            known = {str(k): i for i, k in enumerate(z["keys"])}
            old = {n: z[n] for n in names}
    todo = sorted({k for k in keys if k not in known})
    if todo:
        new = compute(todo)
        all_keys = list(known) + todo
        old = {n: np.concatenate(([old[n]] if old else []) + [new[n]]) for n in names}
        _atomic_savez(cache, keys=np.array(all_keys), **old)
        known = {k: i for i, k in enumerate(all_keys)}
    idx = np.array([known[k] for k in keys], dtype=np.int64)
    return {n: old[n][idx] for n in names}


def _file_hashes(paths: list[Path]) -> tuple[list[str], dict[str, Path]]:
    """Each file's SHA-256 (the feature caches' key), and a file for each hash."""
    hashes = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    return hashes, dict(zip(hashes, paths))


def image_features(paths: list[Path], featurizer, folder: Path, flip: bool,
                   progress: Progress) -> tuple[np.ndarray, np.ndarray | None]:
    """Backbone + colour features of each photo and of its mirror image, cached by file SHA-256
    (backbone and colour apart, so changing one does not recompute the other)."""
    from PIL import Image

    from taggers.offline.colour import COLOUR_VERSION
    from taggers.offline.model import colour_batch, to_square

    hashes, by_hash = _file_hashes(paths)
    size = featurizer.image_size

    def pictures(keys: list[str]) -> Iterable[tuple[int, np.ndarray]]:
        t0 = time.time()
        for i in range(0, len(keys), 256):
            yield i, np.stack([to_square(Image.open(by_hash[h]), size) for h in keys[i: i + 256]])
            done = min(i + 256, len(keys))
            progress(f"features: {done}/{len(keys)} photos ({done / (time.time() - t0):.0f} photos/s)")

    def backbone(keys: list[str]) -> dict[str, np.ndarray]:
        f, m = [], []
        for _, arrs in pictures(keys):
            f.append(featurizer.backbone(arrs))
            m.append(featurizer.backbone(np.ascontiguousarray(arrs[:, :, ::-1])))
        return {"feats": np.concatenate(f), "mirror": np.concatenate(m)}

    def colour(keys: list[str]) -> dict[str, np.ndarray]:
        # The colour descriptor ignores left and right, so a mirror image needs none of its own.
        return {"feats": np.concatenate([colour_batch(arrs) for _, arrs in pictures(keys)])}

    bb = _cached_rows(folder / f"backbone-{featurizer.features_key}.npz", hashes, backbone, ("feats", "mirror"))
    # Colour is read from the pictures the backbone sees, so its cache is per picture size.
    col_name = f"colour-{COLOUR_VERSION}" + ("" if size == spec(LITE0).image_size else f"-{size}px")
    col = _cached_rows(folder / f"{col_name}.npz", hashes, colour, ("feats",))["feats"]
    feats = np.concatenate([bb["feats"], col], axis=1)
    return feats, (np.concatenate([bb["mirror"], col], axis=1) if flip else None)


def augmented_features(paths: list[Path], featurizer, folder: Path, n_views: int,
                       progress: Progress) -> list[np.ndarray]:
    """Backbone + colour features of `n_views` random views of each photo (one array per view),
    cached by file SHA-256 and view number."""
    from PIL import Image

    from taggers.offline.colour import COLOUR_VERSION
    from taggers.offline.model import colour_batch
    from toolkit.training.augment import AUGMENT_VERSION, random_view, view_rng

    hashes, by_hash = _file_hashes(paths)

    def compute(keys: list[str]) -> dict[str, np.ndarray]:
        out, t0 = [], time.time()
        for i in range(0, len(keys), 128):
            arrs = []
            for key in keys[i: i + 128]:
                h, view = key.rsplit(":", 1)
                arrs.append(random_view(Image.open(by_hash[h]), view_rng(h, int(view)), featurizer.image_size))
            batch = np.stack(arrs)
            out.append(np.concatenate([featurizer.backbone(batch), colour_batch(batch)], axis=1))
            done = min(i + 128, len(keys))
            progress(f"view features: {done}/{len(keys)} ({done / (time.time() - t0):.0f} views/s)")
        return {"feats": np.concatenate(out)}

    keys = [f"{h}:{v}" for v in range(n_views) for h in hashes]
    cache = folder / f"views-{AUGMENT_VERSION}-{featurizer.features_key}-{COLOUR_VERSION}.npz"
    feats = _cached_rows(cache, keys, compute, ("feats",))["feats"]
    return [feats[v * len(paths):(v + 1) * len(paths)] for v in range(n_views)]


def text_features(texts: list[str], featurizer, cache: Path, progress: Progress) -> np.ndarray:
    """MiniLM features of each caption, cached by the caption's SHA-256."""
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    by_key = dict(zip(keys, texts))

    def compute(todo: list[str]) -> dict[str, np.ndarray]:
        progress(f"text features: {len(todo)} new captions")
        return {"feats": featurizer([by_key[k] for k in todo])}

    return _cached_rows(cache, keys, compute, ("feats",))["feats"]


# ---------------------------------------------------------------- captions
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


# ---------------------------------------------------------------- loss and loop
def multi_positive_clip_loss(img, txt, scale, match, ignore):
    """Symmetric InfoNCE where row i's target is spread evenly over every caption that matches
    image i (and vice versa); `ignore` pairs (attribute unknown) count neither way."""
    import torch

    logits = (img @ txt.T) * scale
    logits = logits.masked_fill(ignore, float("-inf"))
    target = match.float()
    lp_i = torch.log_softmax(logits, dim=1).masked_fill(ignore, 0.0)
    lp_t = torch.log_softmax(logits, dim=0).masked_fill(ignore, 0.0)
    loss_i = -(target * lp_i).sum(1) / target.sum(1)
    loss_t = -(target * lp_t).sum(0) / target.sum(0)
    return (loss_i.mean() + loss_t.mean()) / 2


def group_label_loss(img, txt_all, scale, caps: Captions, items: np.ndarray, heads):
    """Mean over vocabulary groups of the cross-entropy of each image against all of its group's
    label prompts: exactly the choice the tagger makes, so this trains the tagger directly."""
    import torch

    losses = []
    for text_idx, item_label in caps.groups.values():
        y = torch.from_numpy(item_label[items])
        if bool((y >= 0).any()):
            labels = heads.encode_text(txt_all[torch.from_numpy(text_idx)])
            losses.append(torch.nn.functional.cross_entropy((img @ labels.T) * scale, y, ignore_index=-1))
    return torch.stack(losses).mean() if losses else img.sum() * 0


def same_look_loss(views, keys, temperature: float):
    """Supervised contrastive loss over the images' two views (photo and mirror image):
    positives of an anchor are every other view with the same (article type, colour) key."""
    import torch

    z = torch.cat(views)
    k = torch.cat([keys] * len(views))
    sims = (z @ z.T) / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool)
    sims = sims.masked_fill(self_mask, float("-inf"))
    pos = (k[:, None] == k[None, :]) & ~self_mask
    logp = torch.log_softmax(sims, dim=1).masked_fill(self_mask, 0.0)
    return (-(logp * pos).sum(1) / pos.sum(1).clamp(min=1)).mean()


def match_matrix(item_codes: np.ndarray, req: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B images x B captions): does each caption describe each image, and is it unknowable."""
    it = item_codes[:, None, :]
    rq = req[None, :, :]
    named = rq >= 0
    match = (~named | (it == rq)).all(-1)
    ignore = (named & (it < 0)).any(-1) & ~match
    return match, ignore


def look_codes(caps: Captions, fields: Iterable[str] = ("article_type", "colour")) -> np.ndarray:
    """One code per item for its (article type, colour, ...) values; items missing any get a code of their own."""
    pairs = caps.item_codes[:, [FIELDS.index(f) for f in fields]]
    codes = np.zeros(len(pairs), dtype=np.int64)
    for col in pairs.T:
        codes = codes * 100_000 + col
    unknown = (pairs < 0).any(axis=1)
    codes[unknown] = -1 - np.arange(int(unknown.sum()))
    return codes


def batch_loss(heads, x, other, items: np.ndarray, cand: np.ndarray, caps: Captions, txts, look_keys,
               cfg: TrainConfig):
    """The training objective for one batch: image-caption InfoNCE, plus the per-group label loss
    and the image-image loss (`other()` gives the batch's other view, only computed when needed)."""
    import torch

    match, ignore = match_matrix(caps.item_codes[items], caps.cap_req[cand])
    img = heads.encode_image(x)
    scale = heads.logit_scale.exp().clamp(max=100.0)
    loss = multi_positive_clip_loss(img, heads.encode_text(txts[caps.cap_text[cand]]), scale,
                                    torch.from_numpy(match), torch.from_numpy(ignore))
    if cfg.group_loss:
        loss = loss + cfg.group_loss * group_label_loss(img, txts, scale, caps, items, heads)
    if cfg.image_loss:
        loss = loss + cfg.image_loss * same_look_loss([img, heads.encode_image(other())], look_keys[items],
                                                      cfg.image_temperature)
    return loss


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_views(n_items: int, n_views: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """A view per item: 0 (the photo) or 1 (its mirror image) half the time, else one of the
    random views 2..n_views-1; never the view `exclude` names for that item."""
    own = np.random.randint(0, 2, n_items)
    view = np.where(np.random.rand(n_items) < 0.5, own, np.random.randint(2, n_views, n_items))
    if exclude is not None:
        same = view == exclude
        view[same] = (view[same] + 1 + np.random.randint(0, n_views - 1, int(same.sum()))) % n_views
    return view


def fit(img_f: np.ndarray, img_m: np.ndarray | None, txt_f: np.ndarray, caps: Captions,
        cfg: TrainConfig, heads_cfg, progress: Progress,
        views: list[np.ndarray] | None = None) -> tuple[object, float]:
    """The training loop over cached features; returns the heads and the last epoch's mean loss.
    `views`: features of random views of each photo (`augmented_features`), used with the
    photo and its mirror image as the batch's two views of each item."""
    import torch

    from taggers.offline.heads import Heads

    _seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    heads = Heads(heads_cfg)
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(img_f)
    steps_per_epoch = max(1, n // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.1)
    look_keys = torch.from_numpy(look_codes(caps, cfg.look_fields))
    # Copies into torch-allocated (aligned) memory: MKL results may otherwise depend on alignment.
    imgs = torch.tensor(img_f)
    mirr = torch.tensor(img_m) if img_m is not None else None
    # With random views: (view, item, feature), view 0 the photo and 1 its mirror image.
    every = torch.stack([imgs, imgs if mirr is None else mirr, *map(torch.tensor, views)]) if views else None
    txts = torch.tensor(txt_f)
    loss_val = float("nan")
    for epoch in range(cfg.epochs):
        heads.train()
        perm = np.random.permutation(n)
        losses = []
        for s in range(steps_per_epoch):
            items = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            cand = sample_captions(caps, items, cfg.caption_weights, rng)
            if every is not None:
                a = pick_views(len(items), len(every))
                b = pick_views(len(items), len(every), exclude=a)
                idx = torch.from_numpy(items)
                x, other = every[torch.from_numpy(a), idx], every[torch.from_numpy(b), idx]
            else:
                x = other = imgs[items]
                if mirr is not None:
                    flip = torch.from_numpy(np.random.rand(len(items)) < 0.5)[:, None]
                    x, other = torch.where(flip, mirr[items], x), torch.where(flip, x, mirr[items])
            loss = batch_loss(heads, x, lambda: other, items, cand, caps, txts, look_keys, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        loss_val = float(np.mean(losses))
        progress(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss_val:.4f}, scale {heads.scale():.1f}")
    heads.eval()
    return heads, loss_val


# ---------------------------------------------------------------- fine-tuning the last blocks
def front_activations(paths: list[Path], n_front: int, threads: int, folder: Path,
                      progress: Progress) -> dict[str, np.ndarray]:
    """Activations of the frozen front of the backbone (float16, photo and mirror image), cached by
    file hash; computed with ONNX Runtime, since they are what every fine-tuning epoch starts from."""
    from PIL import Image

    from taggers import weights
    from taggers.offline.model import OnnxBackbone, cache_dir, normalise, to_square

    hashes, by_hash = _file_hashes(paths)
    tag = f"front{n_front}-{weights.EFFNET_LITE0_SHA256[:12]}"
    onnx_path = cache_dir() / "onnx" / f"{tag}.onnx"

    def compute(keys: list[str]) -> dict[str, np.ndarray]:
        if not onnx_path.is_file():
            from taggers.offline.backbone import export_front_onnx, load_backbone

            export_front_onnx(load_backbone(), n_front, onnx_path)
        run = OnnxBackbone(onnx_path, threads)
        acts, mirror = [], []
        t0 = time.time()
        for i in range(0, len(keys), 64):
            arrs = np.stack([to_square(Image.open(by_hash[h])) for h in keys[i: i + 64]])
            acts.append(run(normalise(arrs)).astype(np.float16))
            mirror.append(run(normalise(np.ascontiguousarray(arrs[:, :, ::-1]))).astype(np.float16))
            if (i // 64) % 8 == 7 or i + 64 >= len(keys):
                done = min(i + 64, len(keys))
                progress(f"front activations: {done}/{len(keys)} ({done / (time.time() - t0):.0f} photos/s)")
        return {"acts": np.concatenate(acts), "mirror": np.concatenate(mirror)}

    return _cached_rows(folder / f"{tag}.npz", hashes, compute, ("acts", "mirror"))


def finetune(heads, acts: dict[str, np.ndarray], colour: np.ndarray, txt_f: np.ndarray, caps: Captions,
             cfg: TrainConfig, progress: Progress) -> tuple[object, dict, float]:
    """Train the backbone's last blocks together with the (already trained) heads, on the same
    objective; returns the heads, the changed backbone tensors and the last epoch's loss."""
    import torch

    from taggers.offline.backbone import Tail, load_backbone

    _seed_everything(cfg.seed + 1)
    rng = random.Random(cfg.seed + 1)
    tail = Tail(load_backbone(), cfg.finetune_blocks)
    own = set(tail.trainable_state())
    params = [p for name, p in tail.inner.named_parameters() if name in own]
    for p in tail.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": params, "lr": cfg.finetune_lr},
                             {"params": list(heads.parameters()), "lr": cfg.finetune_lr * 3}],
                            weight_decay=cfg.weight_decay)
    n, bs = len(colour), cfg.finetune_batch_size
    steps = max(1, n // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[cfg.finetune_lr, cfg.finetune_lr * 3],
                                                total_steps=cfg.finetune_epochs * steps, pct_start=0.15)
    look_keys = torch.from_numpy(look_codes(caps))
    txts, col = torch.tensor(txt_f), torch.tensor(colour)

    def features(items: np.ndarray, view: np.ndarray) -> torch.Tensor:
        a = np.where(view[:, None, None, None], acts["mirror"][items], acts["acts"][items]).astype(np.float32)
        return torch.cat([tail(torch.from_numpy(a)), col[items]], dim=1)

    loss_val = float("nan")
    for epoch in range(cfg.finetune_epochs):
        tail.train()
        heads.train()
        perm = np.random.permutation(n)
        losses = []
        for s in range(steps):
            items = perm[s * bs:(s + 1) * bs]
            cand = sample_captions(caps, items, cfg.caption_weights, rng)
            flip = np.random.rand(len(items)) < 0.5
            loss = batch_loss(heads, features(items, flip), lambda: features(items, ~flip), items, cand, caps,
                              txts, look_keys, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if s % 5 == 4:
                progress(f"fine-tuning epoch {epoch + 1}/{cfg.finetune_epochs}: step {s + 1}/{steps}, "
                         f"loss {np.mean(losses):.4f}")
        loss_val = float(np.mean(losses))
        progress(f"fine-tuning epoch {epoch + 1}/{cfg.finetune_epochs}: loss {loss_val:.4f}")
    heads.eval()
    tail.eval()
    return heads, tail.trainable_state(), loss_val


def finetune_stage(heads, paths: list[Path], colour: np.ndarray, txt_f: np.ndarray, caps: Captions,
                   cfg: TrainConfig, progress: Progress) -> tuple[object, dict, float]:
    """Second stage: cache the frozen front's activations, then fine-tune the last blocks with the heads.
    On the eval split one fine-tuned block did not beat frozen features (p@5 articleType 0.82-0.83
    either way, at ~10x the training time), so it is opt-in."""
    from taggers.offline.model import cache_dir

    n_front = LITE0_BLOCKS - cfg.finetune_blocks
    acts = front_activations(paths, n_front, cfg.threads, cache_dir() / "features", progress)
    heads.cfg.finetuned = [f"_blocks.{i}" for i in range(n_front, LITE0_BLOCKS)] + ["_conv_head", "_bn1"]
    return finetune(heads, acts, colour, txt_f, caps, cfg, progress)


# ---------------------------------------------------------------- entry point
def train_heads(images_dir: Path, catalog_csv: Path, out: Path, epochs: int = 60, seed: int = 0,
                exclude_eval: bool = True, vocabulary: Path | None = None, progress: Progress | None = None,
                **options: object) -> TrainReport:
    """Train projection heads on the catalog's photos and write them (plus a JSON sidecar) to `out`."""
    from taggers import weights
    from taggers.offline.colour import COLOUR_DIM, COLOUR_VERSION
    from taggers.offline.heads import HeadsConfig, save_heads
    from taggers.offline.model import BACKBONE_DIM, ImageFeaturizer, TextFeaturizer, cache_dir, model_prefix

    say = progress or (lambda _msg: None)
    cfg = TrainConfig(epochs=epochs, seed=seed, exclude_eval=exclude_eval, **options)  # type: ignore[arg-type]
    if cfg.epochs < 1:
        raise ConfigError("--epochs must be at least 1")
    size = spec(cfg.backbone).image_size  # an unknown backbone fails before any work
    if cfg.finetune_blocks and cfg.backbone != LITE0:
        raise ConfigError(f"--finetune-blocks works with {LITE0} only, not {cfg.backbone}")
    t0 = time.time()
    rows, excluded = training_rows(Path(images_dir), Path(catalog_csv), cfg.exclude_eval, cfg.limit, cfg.hold_out)
    say(f"training on {len(rows)} photos ({excluded} eval/holdout/other items left out)")
    vocab = load_vocabulary(vocabulary)
    if cfg.mid_features is None:
        cfg.mid_features = spec(cfg.backbone).mid
    if cfg.finetune_blocks and cfg.mid_features:
        # The fine-tuned tail only produces the last layer's descriptor.
        say("fine-tuning: the image head sees the 1280-d descriptor and colour only (no mid-level features)")
        cfg.mid_features = ""
    featurizer = ImageFeaturizer(cfg.runtime, 64, cfg.threads, mid=cfg.mid_features,  # type: ignore[arg-type]
                                 backbone=cfg.backbone)
    img_f, img_m = image_features([Path(images_dir) / f"{r['id']}.jpg" for r in rows], featurizer,
                                  cache_dir() / "features", cfg.flip, say)
    caps = build_captions(rows, vocab)
    minilm = weights.MINILM_SHA256["model.safetensors"][:12]
    txt_f = text_features(caps.texts, TextFeaturizer(128, cfg.threads),
                          cache_dir() / "features" / f"text-{minilm}.npz", say)
    heads_cfg = HeadsConfig(backbone=cfg.backbone, image_size=size,
                            colour_dim=COLOUR_DIM, colour_version=COLOUR_VERSION, backbone_dim=BACKBONE_DIM,
                            mid_features=cfg.mid_features, mid_dim=featurizer.backbone_dim - BACKBONE_DIM,
                            hidden=cfg.hidden, dim=cfg.dim, dropout=cfg.dropout)
    views = None
    if cfg.augment_views:
        views = augmented_features([Path(images_dir) / f"{r['id']}.jpg" for r in rows], featurizer,
                                   cache_dir() / "features", cfg.augment_views, say)
    heads, loss = fit(img_f, img_m, txt_f, caps, cfg, heads_cfg, say, views)
    backbone_state = None
    if cfg.finetune_blocks:
        paths = [Path(images_dir) / f"{r['id']}.jpg" for r in rows]
        heads, backbone_state, loss = finetune_stage(heads, paths, img_f[:, BACKBONE_DIM:], txt_f, caps, cfg, say)
    save_heads(heads, out, backbone_state)
    sha = weights.sha256_file(out)
    write_sidecar(out, sha, heads_cfg, cfg, rows, excluded, len(caps.texts), loss)
    if cfg.tag_heads:
        from toolkit.training.tag_heads import train_tag_heads

        train_tag_heads(Path(images_dir), Path(catalog_csv), heads_path=Path(out), exclude_eval=cfg.exclude_eval,
                        hold_out=cfg.hold_out, seed=cfg.seed, threads=cfg.threads, runtime=cfg.runtime,
                        limit=cfg.limit,
                        vocabulary=vocabulary, progress=say)
    return TrainReport(out=Path(out), sha256=sha, model_id=f"{model_prefix(cfg.backbone)}:{sha[:12]}",
                       n_train=len(rows), n_captions=len(caps.texts), epochs=cfg.epochs, final_loss=loss,
                       seconds=time.time() - t0, excluded_eval=excluded)


def write_sidecar(out: Path, sha: str, heads_cfg, cfg: TrainConfig, rows: list[dict], excluded: int,
                  n_captions: int, loss: float) -> None:
    """What the heads are and how they were made: enough to check and reproduce them."""
    from taggers.weights import sidecar_path

    ids = sorted(r["id"] for r in rows)
    meta = {
        "sha256": sha,
        "config": asdict(heads_cfg),
        "training": {**asdict(cfg), "split": SPLIT_NAME, "n_train": len(rows), "left_out": excluded,
                     "train_ids_sha256": hashlib.sha256(",".join(ids).encode()).hexdigest(),
                     "n_captions": n_captions, "final_loss": round(loss, 5), "loss": "multi-positive symmetric InfoNCE + per-group label cross-entropy + "
                             "same-look supervised contrastive",
                     "captions": {"title": "productDisplayName", "prompt": TEMPLATES, "combo": COMBOS}},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    sidecar_path(out).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def heads_info(heads_path: Path | None = None) -> dict[str, object]:
    """What a heads file is (checked against its pinned or recorded hash) and how it was trained."""
    from taggers import weights
    from taggers.offline.model import OfflineEmbedder

    model = OfflineEmbedder(heads_path=heads_path)
    path = model.verified_heads
    sidecar = weights.sidecar_path(path)
    meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
    training = meta.get("training", {})
    return {"path": str(path), "model_id": model.model_id, "dim": model.dim,
            "backbone": meta.get("config", {}).get("backbone", ""),
            "finetuned": meta.get("config", {}).get("finetuned", []),
            "mid_features": meta.get("config", {}).get("mid_features", ""),
            "split": training.get("split"), "trained_on": training.get("n_train"),
            "epochs": training.get("epochs"), "created": meta.get("created"),
            "tag_classifiers": str(tags) if (tags := weights.tag_heads_file(heads_path)) else
            "none (tags from label prompts alone)"}
