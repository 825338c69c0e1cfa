"""Training the offline model's heads from labelled photos (beside core, not inside it).

    split.py      which catalog rows training may see (the fixed train/eval/holdout split)
    captions.py   the vocabulary and the captions each photo is paired with
    features.py   cached image and caption features
    losses.py     the objective; loop.py the training loop over cached features
    finetune.py   the optional fine-tuning of the backbone's last blocks
    tag_heads.py  the label classifiers trained beside the heads
    train.py      `train_heads` and `heads_info`, what `toolkit model` calls

`train_heads`, `train_tag_heads` and `heads_info` are importable from here; they load on
first use, so importing the split rules (as evaluation does) loads no model code.
"""
from __future__ import annotations

from typing import Any

__all__ = ["heads_info", "train_heads", "train_tag_heads"]


def __getattr__(name: str) -> Any:
    if name in ("heads_info", "train_heads"):
        from toolkit.training import train as module
    elif name == "train_tag_heads":
        from toolkit.training import tag_heads as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)
