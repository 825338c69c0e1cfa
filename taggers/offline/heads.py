"""The projection heads of the offline model and their file format.

One safetensors file holds both heads, the learned temperature and, optionally,
fine-tuned backbone tensors (`backbone.*`) that replace the ImageNet ones. Its
metadata carries the architecture, so a file alone is enough to rebuild the model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from taggers.offline import file_format

FORMAT = file_format.HEADS_FORMAT


@dataclass
class HeadsConfig:
    backbone: str = "efficientnet-lite0"
    image_size: int = 224
    backbone_dim: int = 1280
    colour_dim: int = 0
    colour_version: str = ""
    text_model: str = "all-MiniLM-L6-v2"
    text_dim: int = 384
    hidden: int = 512
    dim: int = 256
    dropout: float = 0.1
    #: Backbone blocks whose weights the file replaces (fine-tuned); empty: pure ImageNet.
    finetuned: list[str] = field(default_factory=list)
    #: Pooled mid-level backbone features after the 1280-d descriptor (taggers/offline/backbone.py
    #: `parse_mid`, e.g. "4,7,10,14/mean,mask,max") and their length; "" and 0: none.
    mid_features: str = ""
    mid_dim: int = 0

    @property
    def image_in(self) -> int:
        return self.backbone_dim + self.mid_dim + self.colour_dim


class Projection(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear: puts features of unlike scales into the shared space."""

    def __init__(self, d_in: int, hidden: int, d_out: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.fc1 = nn.Linear(d_in, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))


class Heads(nn.Module):
    def __init__(self, cfg: HeadsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image = Projection(cfg.image_in, cfg.hidden, cfg.dim, cfg.dropout)
        self.text = Projection(cfg.text_dim, cfg.hidden, cfg.dim, cfg.dropout)
        # CLIP's learnable temperature, stored as a log so it stays positive.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, feats: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.image(feats), dim=-1)

    def encode_text(self, feats: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.text(feats), dim=-1)

    def scale(self) -> float:
        return float(self.logit_scale.detach().exp().clamp(max=100.0))


def save_heads(heads: Heads, path: Path, backbone_state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the heads (float16, to keep the shipped file small) and any fine-tuned backbone tensors."""
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in heads.state_dict().items()}
    tensors["logit_scale"] = heads.logit_scale.detach().float().reshape(1)
    for k, v in (backbone_state or {}).items():
        tensors[f"backbone.{k}"] = v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
    file_format.save(tensors, path, FORMAT, asdict(heads.cfg))


def read_config(path: Path) -> HeadsConfig:
    """The architecture stored in a heads file, read from its header alone (ValueError for
    a file of another kind)."""
    return HeadsConfig(**file_format.read_config(path, FORMAT))


def load_heads(path: Path) -> tuple[Heads, dict[str, torch.Tensor]]:
    """Heads in eval mode (float32) and the fine-tuned backbone tensors, if any."""
    from safetensors.torch import load_file

    cfg = read_config(path)
    tensors = load_file(str(path))
    backbone = {k[len("backbone."):]: v.float() if v.is_floating_point() else v
                for k, v in tensors.items() if k.startswith("backbone.")}
    own = {k: v.float().reshape(()) if k == "logit_scale" else v.float()
           for k, v in tensors.items() if not k.startswith("backbone.")}
    heads = Heads(cfg)
    heads.load_state_dict(own)
    heads.eval()
    return heads, backbone
