"""Label classifiers over the image features, one per vocabulary group, and their file format.

The local tagger names a photo's labels by comparing its embedding with label prompts.
A small classifier trained on the same image features the projection head sees (backbone,
mid-level and colour, before the projection squeezes them into the shared space) knows the
catalog's labels better; the tagger blends the two (taggers/clip_local.py). On the training
split's holdout fifth, the blend named article types 0.7 points, genders 0.4 and colours 2.2
more often than the prompts alone (hidden width 256 did as well, at 5.8 MB instead of 4.3).

The classifiers live in their own file beside the heads (`heads.tags.safetensors` next to
`heads.safetensors`): they change tags, never vectors, so the model id and every stored
collection stay valid when they are added or retrained.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from taggers.offline import file_format

FORMAT = file_format.TAG_HEADS_FORMAT


@dataclass
class TagHeadsConfig:
    #: Length of the image features the classifiers read (the heads' `image_in`).
    image_in: int
    #: Vocabulary group -> its labels, in the classifier's output order.
    groups: dict[str, list[str]] = field(default_factory=dict)
    hidden: int = 192
    dropout: float = 0.3
    #: Weight of the classifier against the prompts in the tagger's blend of log-probabilities.
    blend: float = 0.5
    #: SHA-256 of the heads file the classifiers were trained beside.
    heads_sha256: str = ""


class TagHeads(nn.Module):
    """Standardised features -> per group, Linear -> GELU -> Linear over that group's labels."""

    def __init__(self, cfg: TagHeadsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.image_in))
        self.register_buffer("std", torch.ones(cfg.image_in))
        self.classifiers = nn.ModuleDict({
            name: nn.Sequential(nn.Dropout(0.2), nn.Linear(cfg.image_in, cfg.hidden), nn.GELU(),
                                nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, len(labels)))
            for name, labels in cfg.groups.items()})

    def logits(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (feats[:, : self.cfg.image_in] - self.mean) / self.std
        return {name: head(x) for name, head in self.classifiers.items()}

    def probabilities(self, feats: np.ndarray) -> dict[str, np.ndarray]:
        """Per group, (N, labels) softmax probabilities for N rows of image features."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(np.atleast_2d(feats), dtype=np.float32))
            return {name: torch.softmax(lg, dim=1).numpy() for name, lg in self.logits(x).items()}


def save_tag_heads(model: TagHeads, path: Path) -> None:
    tensors = {k: v.detach().to(torch.float16 if k.startswith("classifiers.") else torch.float32).contiguous()
               for k, v in model.state_dict().items()}
    file_format.save(tensors, path, FORMAT, asdict(model.cfg))


def load_tag_heads(path: Path) -> TagHeads:
    """The classifiers in eval mode (float32). Raises ValueError for a file of another kind."""
    from safetensors.torch import load_file

    model = TagHeads(TagHeadsConfig(**file_format.read_config(path, FORMAT)))
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    model.eval()
    return model
