"""What a training run of the projection heads is asked to do (`TrainConfig`) and what it did (`TrainReport`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from taggers.offline import LITE0
from toolkit.training.captions import CAPTION_WEIGHTS

Progress = Callable[[str], None]


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
    #: Share of the batches' views in which a main-catalog photo is shown degraded: shrunk to the
    #: first extra catalog's photo size and back up (toolkit/training/sources.py). 0: never.
    degrade: float = 0.0
    #: Fixed share of the extra catalogs' photos trained on at all (chosen by id; features are
    #: computed for those only); 1: all.
    extra_share: float = 1.0
    #: Share of the extra catalogs' photos each epoch shows (drawn anew each epoch); 1: all.
    extra_weight: float = 1.0
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

