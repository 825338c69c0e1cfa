"""Comparing two `toolkit eval` runs of one catalog, photo by photo.

Each metric is a mean of one score per photo (or query); `evaluate` keeps those scores
(`EvalReport.per_item`) and the command writes them to `eval.items.json`. Two runs over the
same photos are compared on the photos both scored: the change is the mean of the per-photo
differences, and its 95% margin comes from their spread. Pairing removes what the photos
themselves contribute (an easy photo is easy for both models), so a change is told apart from
noise at a fraction of the size that each run's own interval would need.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.ground.errors import ConfigError
from toolkit.evaluation.metrics import margin

ITEMS_FILE = "eval.items.json"
FORMAT = "toolkit-eval-items-v1"
#: Metrics whose per-photo scores depend on the other photos of the run (the gallery searched).
RETRIEVAL = ("image.", "text.", "query.")


@dataclass
class Change:
    metric: str
    #: Photos (or queries) both runs scored for this metric.
    n: int
    before: float
    after: float
    #: Mean per-photo difference (after - before) and the half-width of its 95% interval.
    delta: float
    margin: float

    @property
    def verdict(self) -> str:
        if self.delta > self.margin:
            return "better"
        if self.delta < -self.margin:
            return "worse"
        return "no change shown"


@dataclass
class Comparison:
    """A run against an earlier one: where that one's scores came from, and each metric's change."""
    path: Path
    model_id: str
    changes: list[Change]
    #: Both runs scored the same photos, so their search figures are compared too.
    same_photos: bool

    @classmethod
    def of(cls, path: Path, model_id: str, before: dict[str, dict[str, float]],
           after: dict[str, dict[str, float]]) -> "Comparison":
        same = scored_photos(before) == scored_photos(after)
        return cls(path, model_id, compare(before, after, same), same)

    def worse(self, metrics: list[str]) -> list[str]:
        """One line per named metric that is worse than before by more than its margin."""
        by_name = {c.metric: c for c in self.changes}
        missing = [m for m in metrics if m not in by_name]
        if missing:
            raise ConfigError(f"--fail-if-worse names no metric both runs scored: {', '.join(missing)}")
        return [f"{c.metric} {c.before:.4g} -> {c.after:.4g} ({c.delta:+.4g}, ±{c.margin:.2g} at 95%)"
                for c in (by_name[m] for m in metrics) if c.verdict == "worse"]


def save_items(per_item: dict[str, dict[str, float]], model_id: str, path: Path) -> Path:
    """Each metric's per-photo scores, with the keys listed once (the file is a tenth the size)."""
    keys = sorted({k for scores in per_item.values() for k in scores})
    index = {k: i for i, k in enumerate(keys)}
    data = {"format": FORMAT, "model_id": model_id, "keys": keys,
            "scores": {m: [[index[k], v] for k, v in scores.items()] for m, scores in per_item.items()}}
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def load_items(path: Path) -> tuple[str, dict[str, dict[str, float]]]:
    """(model id, per-photo scores) of an earlier run: its `eval.items.json`, or the folder holding it."""
    path = Path(path)
    file = path / ITEMS_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--compare {path}: no {ITEMS_FILE} there; give the --out folder of an earlier "
                          "`toolkit eval` run") from None
    except ValueError as err:
        raise ConfigError(f"--compare {file}: not JSON ({err}); give the {ITEMS_FILE} an earlier run wrote") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"--compare {file}: not a {ITEMS_FILE} of `toolkit eval`; give the --out folder of "
                          "an earlier run")
    keys = data["keys"]
    return str(data.get("model_id", "")), {m: {keys[i]: float(v) for i, v in pairs}
                                           for m, pairs in data["scores"].items()}


def scored_photos(per_item: dict[str, dict[str, float]]) -> set[str]:
    """The photos a run scored (the keys of every metric but the attribute queries')."""
    return {k for metric, scores in per_item.items() if not metric.startswith("query.") for k in scores}


def compare(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
            same_photos: bool | None = None) -> list[Change]:
    """Per metric both runs have, its change over the photos both scored (two or more). Search
    metrics only when both runs scored the same photos: a photo's neighbours, and a title's or
    a query's results, depend on what else was searched (a --limit run against a whole one).
    `same_photos`: whether they did, where the caller knows already."""
    same_gallery = scored_photos(before) == scored_photos(after) if same_photos is None else same_photos
    changes = []
    for metric, now in after.items():
        then = before.get(metric)
        if not then or (metric.startswith(RETRIEVAL) and not same_gallery):
            continue
        common = sorted(set(now) & set(then))
        if len(common) < 2:
            continue
        a = np.array([then[k] for k in common])
        b = np.array([now[k] for k in common])
        changes.append(Change(metric, len(common), round(float(a.mean()), 4), round(float(b.mean()), 4),
                              round(float((b - a).mean()), 4), margin(b - a)))
    return changes
