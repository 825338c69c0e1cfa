"""Local tagging in the shared image/text space: no cloud, no per-call cost.

Each vocabulary group ("article_type", "colour", ...) has a prompt template and labels;
the labels' text embeddings are computed once, and a photo gets, per group, the label
whose prompt is nearest, with a softmax confidence over the group's labels (similarity
times the model's learned logit scale). Under the threshold, the group gets no label.

Where the model has label classifiers for a group (taggers/offline/tag_heads.py) and the pipeline
gave the image features they read, the group's probabilities are a blend of both: a
weighted mean of the two log-probabilities, normalised again. A group whose labels the
classifier does not know (an edited vocabulary) keeps the prompts alone.
"""
from __future__ import annotations

import functools
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterator, Sequence

import numpy as np

from taggers.base import Embedder, FeatureEmbedder, ScaledEmbedder, TaggerBase, wants_features

if TYPE_CHECKING:
    from taggers.offline.tag_heads import TagHeads
from toolkit.ground.files import atomic_path
from toolkit.ground.errors import ConfigError, TaggerError
from toolkit.ground.models import Media, Tag, TagResult

SHIPPED_VOCABULARY = Path(__file__).resolve().parent / "data" / "vocabulary.json"
#: CLIP's own cap on its logit scale; used when an embedder exposes none.
DEFAULT_LOGIT_SCALE = 100.0
#: Raise when a change to the scoring below changes the tags the same model gives.
SCORING_REVISION = 2


@dataclass(frozen=True)
class Group:
    name: str
    templates: tuple[str, ...]
    labels: tuple[str, ...]
    column: str | None = None

    def prompts(self, label: str) -> list[str]:
        return [t.format(label=label) for t in self.templates]


def load_vocabulary(path: Path | None) -> list[Group]:
    """Groups from a vocabulary JSON ({"groups": {name: {"template" or "templates", "labels"}}})."""
    path = Path(path) if path else SHIPPED_VOCABULARY
    where = f"vocabulary {path} (TOOLKIT_VOCABULARY)"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{where} cannot be read: {err.strerror or err}") from None
    except ValueError as err:
        raise ConfigError(f"{where} is not valid JSON: {err}") from None
    groups = raw.get("groups") if isinstance(raw, dict) else None
    if not isinstance(groups, dict) or not groups:
        raise ConfigError(f'{where} needs a non-empty "groups" object')
    return [_group(name, spec, where) for name, spec in groups.items()]


def _group(name: str, spec: object, where: str) -> Group:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: group {name!r} must be an object with a template and labels")
    templates = spec.get("templates") or ([spec["template"]] if spec.get("template") else ["{label}"])
    labels = spec.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise ConfigError(f"{where}: group {name!r} needs a non-empty list of label strings")
    if not all(isinstance(t, str) and "{label}" in t for t in templates):
        raise ConfigError(f"{where}: every template of group {name!r} must contain {{label}}")
    return Group(name, tuple(templates), tuple(dict.fromkeys(labels)), spec.get("column"))


class LocalTagger(TaggerBase):
    """Tags from frame embeddings (`media.embeddings`, filled by the pipeline) against a vocabulary."""

    name: ClassVar[str] = "local"
    media_types: ClassVar[frozenset[str]] = frozenset({"image", "video"})
    #: The pipeline runs it after embedding; taggers without it run alongside the model.
    needs_embeddings: ClassVar[bool] = True

    def __init__(self, embedder: Embedder, vocabulary: Path | None = None, threshold: float = 0.35,
                 cache: Path | None = None) -> None:
        """`cache`: a folder to keep the label embeddings in across runs (DATA_DIR/cache); None: none."""
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"TOOLKIT_TAG_THRESHOLD={threshold} must be between 0 and 1")
        self.embedder = embedder
        self.threshold = threshold
        self.cache = cache
        self.groups = load_vocabulary(vocabulary)
        self._label_embs: dict[str, np.ndarray] | None = None
        self._columns: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    # ---- label embeddings, once ----
    def label_embeddings(self) -> dict[str, np.ndarray]:
        """Per group, one L2-normalised row per label (the mean of its prompts' embeddings).
        Kept on disk per model and vocabulary: embedding the prompts took ~4.5 s of every run."""
        with self._lock:
            if self._label_embs is None:
                self._label_embs = self._cached_label_embeddings()
            return self._label_embs

    def _label_cache_path(self) -> Path | None:
        if self.cache is None:
            return None
        spec = json.dumps([self.embedder.model_id, [(g.name, g.templates, g.labels) for g in self.groups]],
                          sort_keys=True)
        return Path(self.cache) / "labels" / f"{hashlib.sha256(spec.encode()).hexdigest()[:20]}.npz"

    def _cached_label_embeddings(self) -> dict[str, np.ndarray]:
        path = self._label_cache_path()
        if path is not None and path.is_file():
            try:
                with np.load(path) as saved:
                    return {g.name: saved[g.name] for g in self.groups}
            except (OSError, KeyError, ValueError):
                pass  # a damaged cache is rebuilt below
        embs = {g.name: self._embed_group(g) for g in self.groups}
        if path is not None:
            with atomic_path(path) as tmp:  # a parallel run never reads half a file
                np.savez(tmp, **embs)
        return embs

    def _embed_group(self, group: Group) -> np.ndarray:
        n_t = len(group.templates)
        texts = [p for label in group.labels for p in group.prompts(label)]
        embs = np.asarray(self.embedder.embed_texts(texts), dtype=np.float32).reshape(len(group.labels), n_t, -1)
        mean = embs.mean(axis=1)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True).clip(min=1e-12)

    @functools.cached_property
    def version(self) -> str | None:
        """What decides this tagger's tags: the model (and its label classifiers), the
        vocabulary, the threshold and the scoring's revision. Stored with the tags, so that
        `toolkit tag --retag` finds the items an earlier version tagged (None without a model id).
        Worked out once: a run asks for every item it lists."""
        tags_id = self.embedder.tags_id if isinstance(self.embedder, FeatureEmbedder) else ""
        spec = [SCORING_REVISION, self.embedder.model_id, tags_id, self.threshold,
                [(g.name, g.templates, g.labels) for g in self.groups]]
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def scale(self) -> float:
        return float(self.embedder.logit_scale) if isinstance(self.embedder, ScaledEmbedder) else DEFAULT_LOGIT_SCALE

    # ---- the model's label classifiers, where it has them ----
    def tag_heads(self) -> "TagHeads | None":
        """The embedder's label classifiers, if it has any (the offline model's)."""
        return self.embedder.tag_heads() if isinstance(self.embedder, FeatureEmbedder) else None

    def classifier_columns(self) -> dict[str, np.ndarray]:
        """Group -> the classifier's output index of each of the group's labels, for the groups
        whose every label the classifier knows."""
        with self._lock:
            if self._columns is None:
                heads = self.tag_heads()
                known = heads.cfg.groups if heads is not None else {}
                self._columns = {}
                for g in self.groups:
                    index = {lab: i for i, lab in enumerate(known.get(g.name, []))}
                    if index and all(lab in index for lab in g.labels):
                        self._columns[g.name] = np.array([index[lab] for lab in g.labels])
            return self._columns

    # ---- scoring ----
    def probabilities(self, embs: np.ndarray, rowwise: bool = False,
                      features: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per group, (N, labels) softmax probabilities for N embedding rows; blended with the
        label classifiers' when `features` (the image features behind each row) are given.
        `rowwise` takes one small product per row (the same numbers as scoring each row
        alone): for a chunk of 64 rows, one threaded BLAS product cost 30x more CPU than 64
        single-threaded ones on a loaded 2-core machine, its threads waiting for cores the
        model is using."""
        embs = np.atleast_2d(np.asarray(embs, dtype=np.float32))
        out = {}
        scale = self.scale
        for name, labels in self.label_embeddings().items():
            logits = ((embs[:, None, :] @ labels.T)[:, 0, :] if rowwise else embs @ labels.T) * scale
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            out[name] = p / p.sum(axis=1, keepdims=True)
        if features is not None and len(features) and self.classifier_columns():
            self._blend(out, np.atleast_2d(features))
        return out

    def _blend(self, probs: dict[str, np.ndarray], features: np.ndarray) -> None:
        heads = self.tag_heads()
        learned = heads.probabilities(features)
        w = float(heads.cfg.blend)
        for name, cols in self.classifier_columns().items():
            q = learned[name][:, cols]
            q = q / q.sum(axis=1, keepdims=True).clip(min=1e-12)
            logp = (1 - w) * np.log(probs[name].clip(min=1e-12)) + w * np.log(q.clip(min=1e-12))
            logp -= logp.max(axis=1, keepdims=True)
            p = np.exp(logp)
            probs[name] = p / p.sum(axis=1, keepdims=True)

    @staticmethod
    def _best(probs: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per group, each row's most likely label and its probability, for a whole batch at once."""
        return {g: (p.argmax(axis=1), p.max(axis=1)) for g, p in probs.items()}

    def _tags(self, best: dict[str, tuple[np.ndarray, np.ndarray]], row: int,
              start: float | None = None) -> list[Tag]:
        tags = []
        for g in self.groups:
            idx, top = best[g.name]
            p = float(top[row])
            if p >= self.threshold:
                tags.append(Tag(group=g.name, label=g.labels[int(idx[row])], confidence=round(p, 4),
                                provider=self.name, start=start))
        return tags

    def tag_embeddings(self, embs: np.ndarray, features: np.ndarray | None = None) -> list[list[Tag]]:
        """Tags for each row of `embs` (L2-normalised embeddings), without Media objects; with
        `features`, the image features behind the rows, the label classifiers join in."""
        best = self._best(self.probabilities(embs, features=features))
        return [self._tags(best, i) for i in range(len(np.atleast_2d(embs)))]

    # ---- the Tagger protocol ----
    def tag(self, items: Sequence[Media]) -> Iterator[TagResult]:
        """Every frame of every item scored in one matrix product per group (per item, the
        Python overhead had cost about as much as the product itself)."""
        items = list(items)
        spans: dict[int, tuple[int, int]] = {}
        rows: list[np.ndarray] = []
        feats: list[np.ndarray | None] = []
        errors: dict[int, str] = {}
        start = 0
        for i, media in enumerate(items):
            try:
                embs, media_feats = self._frame_embeddings(media)
            except TaggerError as err:
                errors[i] = str(err)
                continue
            rows.append(embs)
            feats.append(media_feats)
            spans[i] = (start, start + len(embs))
            start += len(embs)
        # The classifiers join in only when every row has its features: one blend per batch.
        features = np.concatenate(feats) if feats and all(f is not None for f in feats) else None
        probs = self.probabilities(np.concatenate(rows), rowwise=True, features=features) if rows else {}
        best = self._best(probs)
        for i, media in enumerate(items):
            if i in errors:
                yield TagResult(ref=media.ref, provider=self.name, error=errors[i])
            else:
                yield self._result(media, probs, best, *spans[i])

    def _result(self, media: Media, probs: dict[str, np.ndarray],
                best: dict[str, tuple[np.ndarray, np.ndarray]], lo: int, hi: int) -> TagResult:
        result = TagResult(ref=media.ref, provider=self.name)
        n = hi - lo
        if media.kind == "video" or n > 1:
            stamps = [f.timestamp for f in media.frames] if len(media.frames) == n else [None] * n
            result.frame_tags = {i: self._tags(best, lo + i, start=stamps[i]) for i in range(n)}
        if n == 1:  # the mean of one row is the row
            result.tags = self._tags(best, lo)
        else:
            # The media as a whole: its frames' probabilities averaged, so one odd frame cannot decide.
            mean = {g: p[lo:hi].mean(axis=0, keepdims=True) for g, p in probs.items()}
            result.tags = self._tags(self._best(mean), 0)
        return result

    def _frame_embeddings(self, media: Media) -> tuple[np.ndarray, np.ndarray | None]:
        """The item's embedding rows and, where known, the image features behind them."""
        if media.embeddings is not None and len(media.embeddings):
            embs = np.atleast_2d(np.asarray(media.embeddings, dtype=np.float32))
            feats = media.features
            return embs, (np.atleast_2d(feats) if feats is not None and len(feats) == len(embs) else None)
        if not media.frames:
            raise TaggerError(f"{media.ref.key}: no frames to tag")
        images = [f.image for f in media.frames]
        if self.classifier_columns() and wants_features(self.embedder):
            embs, feats = self.embedder.embed_images_with_features(images)  # type: ignore[union-attr]
            return np.asarray(embs, dtype=np.float32), np.asarray(feats, dtype=np.float32)
        return np.asarray(self.embedder.embed_images(images), dtype=np.float32), None
