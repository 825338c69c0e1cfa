"""Two-tower model: a shopper tower and a product tower trained so that a shopper's vector points at
what they buy next.

- Product tower: a small MLP over the store's image vector of the product (projected onto its top
  principal components) and embeddings of its catalog attributes (product type, colour, section, ...).
  It needs no purchases, so a product nobody bought yet gets a vector like any other.
- Shopper tower: the recency-weighted mean of the product tower's inputs over their history, through
  the product tower's MLP (so a shopper sits among what they bought) plus a second MLP that also reads
  embeddings of their segment (age band, gender: segments.py); with no history the segment alone
  speaks (cold start). Pooling the inputs rather than the outputs runs the MLPs once per pair, not once
  per product of every history: about 20 times less work.
- Training: (purchases before day d -> a product bought on day d) pairs from the events before `now`,
  in-batch sampled softmax (the other targets of the batch are the negatives), optionally with the
  logQ correction for how often each product is a target. PyTorch on the CPU, seeded.

Serving needs no PyTorch: the trained towers are kept as numpy arrays (product vectors for every
product, the shopper tower's weights) inside the `Models` bundle that `toolkit recommend train` saves.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from toolkit.recommend.cf import Interactions


@dataclass(frozen=True)
class TowerOptions:
    """The defaults: best alone (MAP@12 0.0010) of three settings (these; logQ correction; temperature 0.05)
    on H&M's 4 weeks before the 8 that `toolkit recommend eval` reports (bench/recommend.py --jobs tune)."""

    dim: int = 64
    hidden: int = 128
    attribute_dim: int = 32
    #: Principal components of the image vectors the product tower reads.
    image_components: int = 64
    epochs: int = 10
    batch: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    #: The most recent purchases a shopper's history holds.
    history: int = 20
    half_life_days: float = 60.0
    #: Training pairs whose target was bought this many days before `now` at most.
    window_days: float = 365.0
    log_q: bool = False
    #: An attribute with more distinct values than this is an id or free text: left out.
    max_values: int = 500
    #: Share of pairs whose history is hidden, so the segment alone learns to speak for new shoppers.
    drop_history: float = 0.1
    #: Share of pairs whose segment is hidden, so that the history learns to speak without it.
    drop_segment: float = 0.25
    seed: int = 0


@dataclass
class TwoTower:
    """The trained towers as numpy arrays. `item_vectors` rows follow `Interactions.items`."""

    item_vectors: np.ndarray
    #: The product tower's input of every product (image components, then the sum of its attribute embeddings).
    item_inputs: np.ndarray
    item_layers: list[tuple[np.ndarray, np.ndarray]]  # product tower MLP: (weight out x in, bias), ReLU between
    layers: list[tuple[np.ndarray, np.ndarray]]  # shopper tower's own MLP
    parts: dict[str, int]  # segment part ("age 25-34", "female") -> row of part_vectors
    part_vectors: np.ndarray
    options: TowerOptions
    pairs: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    def user_vector(self, cols: np.ndarray, weights: np.ndarray, segment: str | None) -> np.ndarray:
        """The shopper tower's output for a history (product rows and their recency weights) and a segment."""
        pooled = _pool(self.item_inputs, cols, weights)
        rows = [self.parts[p] for p in _segment_parts(segment) if p in self.parts]
        attrs = self.part_vectors[rows].sum(axis=0) if rows else np.zeros(self.part_vectors.shape[1], np.float32)
        out = _mlp(self.item_layers, pooled) + _mlp(self.layers, np.concatenate([pooled, attrs]))
        norm = float(np.linalg.norm(out))
        return out / norm if norm > 0 else out

    def scores(self, cols: np.ndarray, weights: np.ndarray, segment: str | None) -> np.ndarray:
        """Cosine of every product's vector to the shopper's."""
        return self.item_vectors @ self.user_vector(cols, weights, segment)


def _mlp(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


def recency(age_days: np.ndarray, half_life_days: float) -> np.ndarray:
    return np.power(0.5, np.maximum(age_days, 0) / max(half_life_days, 1e-9)).astype(np.float32)


def _pool(vectors: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> np.ndarray:
    total = float(np.sum(weights)) if len(cols) else 0.0
    if total <= 0:
        return np.zeros(vectors.shape[1], dtype=np.float32)
    return (np.asarray(weights, dtype=np.float32) @ vectors[cols]) / total


def _segment_parts(segment: str | None) -> list[str]:
    return [p for p in (segment or "").split(", ") if p]


# -- features ---------------------------------------------------------------------------------------

def item_features(data: Interactions, content: np.ndarray | None, item_attributes: Mapping[str, Mapping[str, str]],
                  options: TowerOptions) -> tuple[np.ndarray, np.ndarray, int]:
    """(image features items x c, attribute codes items x attributes with 0 = unknown, vocabulary size)."""
    n = len(data.items)
    if content is not None and content.size:
        image = _principal(content, options.image_components)
    else:
        image = np.zeros((n, 0), dtype=np.float32)
    names = _attribute_names(item_attributes, options.max_values)
    codes = np.zeros((n, len(names)), dtype=np.int64)
    vocab: dict[tuple[str, str], int] = {}
    for row, item in enumerate(data.items.tolist()):
        attrs = item_attributes.get(item) or {}
        for j, name in enumerate(names):
            value = attrs.get(name)
            if value not in (None, ""):
                codes[row, j] = vocab.setdefault((name, str(value)), len(vocab) + 1)
    return image, codes, len(vocab) + 1


def _attribute_names(item_attributes: Mapping[str, Mapping[str, str]], max_values: int) -> list[str]:
    """Attributes with 2 to `max_values` values, one of each set that splits the products the same way
    (H&M's `colour_group_code` and `colour_group_name`: the first by name is kept)."""
    values: dict[str, set[str]] = {}
    for attrs in item_attributes.values():
        for name, value in attrs.items():
            if value not in (None, ""):
                values.setdefault(name, set()).add(str(value))
    names = sorted(name for name, seen in values.items() if 1 < len(seen) <= max_values)
    ids = list(item_attributes)
    kept, partitions = [], set()
    for name in names:
        codes = pd.factorize(pd.Series([str((item_attributes[i] or {}).get(name) or "") for i in ids]))[0]
        key = codes.tobytes()
        if key not in partitions:
            partitions.add(key)
            kept.append(name)
    return kept


def _principal(content: np.ndarray, k: int) -> np.ndarray:
    """Rows projected on their top-k principal components (over the rows that have a vector), scaled to unit
    variance; rows without a vector stay zero."""
    has = np.linalg.norm(content, axis=1) > 0
    if not has.any():
        return np.zeros((content.shape[0], 0), dtype=np.float32)
    x = content[has].astype(np.float64)
    mean = x.mean(axis=0)
    cov = np.cov((x - mean).T) if len(x) > 1 else np.eye(x.shape[1])
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:min(k, x.shape[1])]
    basis = vectors[:, order] * np.sign(vectors[np.argmax(np.abs(vectors[:, order]), axis=0), order])
    scale = np.sqrt(np.maximum(values[order], 1e-12))
    out = np.zeros((content.shape[0], len(order)), dtype=np.float32)
    out[has] = ((x - mean) @ basis / scale).astype(np.float32)
    return out


# -- training pairs ---------------------------------------------------------------------------------

@dataclass
class Pairs:
    history: np.ndarray  # pairs x L product rows, -1 = none
    age: np.ndarray  # pairs x L days before the target's day
    target: np.ndarray  # pairs
    parts: np.ndarray  # pairs x P segment part codes, 0 = none


def pairs(purchases: pd.DataFrame, data: Interactions, now: pd.Timestamp, segments: Mapping[str, str],
          part_index: dict[str, int], options: TowerOptions) -> Pairs:
    """(purchases before day d -> each product bought on day d) for every shopper and day in the window."""
    frame = purchases[purchases["item_id"].isin(data.item_index.keys())]
    frame = frame.assign(day=frame["ts"].dt.floor("D"), row=frame["item_id"].map(data.item_index))
    frame = frame.sort_values(["user_id", "ts", "item_id"], kind="stable")
    first = pd.Timestamp(now) - pd.Timedelta(days=options.window_days)
    length = options.history
    width = max(1, max((len(_segment_parts(s)) for s in segments.values()), default=1))
    hist, ages, targets, parts = [], [], [], []
    for user, rows in frame.groupby("user_id", sort=True):
        days = rows["day"].to_numpy()
        items = rows["row"].to_numpy(dtype=np.int64)
        codes = [part_index[p] for p in _segment_parts(segments.get(user))][:width]
        codes += [0] * (width - len(codes))
        for day in np.unique(days):
            if day < np.datetime64(first):
                continue
            before = np.flatnonzero(days < day)[-length:]
            h = np.full(length, -1, dtype=np.int64)
            a = np.zeros(length, dtype=np.float32)
            h[:len(before)] = items[before]
            a[:len(before)] = (day - days[before]) / np.timedelta64(1, "D")
            for target in np.unique(items[days == day]):
                hist.append(h)
                ages.append(a)
                targets.append(target)
                parts.append(codes)
    if not targets:
        return Pairs(np.zeros((0, length), np.int64), np.zeros((0, length), np.float32), np.zeros(0, np.int64),
                     np.zeros((0, width), np.int64))
    return Pairs(np.stack(hist), np.stack(ages), np.asarray(targets, dtype=np.int64),
                 np.asarray(parts, dtype=np.int64))


# -- training ---------------------------------------------------------------------------------------

def train(data: Interactions, purchases: pd.DataFrame, now, content: np.ndarray | None,
          item_attributes: Mapping[str, Mapping[str, str]], segments: Mapping[str, str],
          options: TowerOptions | None = None) -> TwoTower | None:
    """Train both towers on the purchases before `now`; None when there is nothing to learn from."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    options = options or TowerOptions()
    started = time.perf_counter()
    image, codes, vocab = item_features(data, content, item_attributes, options)
    part_names = sorted({p for s in segments.values() for p in _segment_parts(s)})
    part_index = {p: i + 1 for i, p in enumerate(part_names)}
    found = pairs(purchases[purchases["ts"] < pd.Timestamp(now)], data, pd.Timestamp(now), segments, part_index,
                  options)
    if len(found.target) < 2:
        return None
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    d, a, hidden = options.dim, options.attribute_dim, options.hidden

    width = image.shape[1] + a

    class ItemTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attributes = nn.Embedding(vocab, a, padding_idx=0)
            nn.init.normal_(self.attributes.weight, std=1.0 / np.sqrt(max(codes.shape[1], 1)))
            with torch.no_grad():
                self.attributes.weight[0].zero_()
            self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, d))

        def inputs(self, img: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
            return torch.cat([img, self.attributes(code).sum(1)], dim=1)

    class UserTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.parts = nn.Embedding(len(part_index) + 1, a, padding_idx=0)
            self.mlp = nn.Sequential(nn.Linear(width + a, hidden), nn.ReLU(), nn.Linear(hidden, d))

        def forward(self, pooled: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
            return F.normalize(items.mlp(pooled) + self.mlp(torch.cat([pooled, self.parts(part).sum(1)], dim=1)),
                               dim=-1)

    items, users = ItemTower(), UserTower()
    optimiser = torch.optim.Adam(list(items.parameters()) + list(users.parameters()), lr=options.lr,
                                 weight_decay=options.weight_decay)
    image_t, codes_t = torch.from_numpy(image), torch.from_numpy(codes)
    hist_t, target_t, parts_t = (torch.from_numpy(found.history), torch.from_numpy(found.target),
                                 torch.from_numpy(found.parts))
    weight_t = torch.from_numpy(recency(found.age, options.half_life_days)) * (hist_t >= 0)
    counts = np.bincount(found.target, minlength=len(data.items)).astype(np.float64)
    log_q = torch.from_numpy(np.log(np.maximum(counts, 1) / counts.sum()).astype(np.float32))
    losses = []
    for _ in range(options.epochs):
        order = torch.randperm(len(target_t), generator=generator)
        total, steps = 0.0, 0
        for start in range(0, len(order), options.batch):
            batch = order[start:start + options.batch]
            if len(batch) < 2:
                continue
            hist, target, w = hist_t[batch], target_t[batch], weight_t[batch].clone()
            w[torch.rand(len(batch), generator=generator) < options.drop_history] = 0
            rows, inverse = torch.unique(torch.cat([hist.clamp(min=0).reshape(-1), target]), return_inverse=True)
            x = items.inputs(image_t[rows], codes_t[rows])
            hx = x[inverse[:hist.numel()]].reshape(*hist.shape, width)
            tv = F.normalize(items.mlp(x[inverse[hist.numel():]]), dim=-1)
            pooled = (w.unsqueeze(-1) * hx).sum(1) / w.sum(1, keepdim=True).clamp(min=1e-9)
            part = parts_t[batch].clone()
            part[torch.rand(len(batch), generator=generator) < options.drop_segment] = 0
            u = users(pooled, part)
            logits = u @ tv.T / options.temperature
            if options.log_q:
                logits = logits - log_q[target].unsqueeze(0)
            same = target.unsqueeze(0) == target.unsqueeze(1)
            logits = logits.masked_fill(same & ~torch.eye(len(batch), dtype=torch.bool), float("-inf"))
            loss = F.cross_entropy(logits, torch.arange(len(batch)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(round(total / max(steps, 1), 4))
    with torch.no_grad():
        inputs = items.inputs(image_t, codes_t)
        vectors = F.normalize(items.mlp(inputs), dim=-1)

    def layers(mlp: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
                for m in mlp if isinstance(m, nn.Linear)]

    return TwoTower(vectors.numpy().astype(np.float32), inputs.numpy().astype(np.float32), layers(items.mlp),
                    layers(users.mlp), part_index,
                    users.parts.weight.detach().numpy().copy(), options, len(found.target),
                    round(time.perf_counter() - started, 2), losses)
