"""Second, opt-in stage: fine-tuning the image backbone's last blocks together with the heads.

The frozen front's activations are computed once (ONNX Runtime) and cached by photo hash;
each epoch then runs only the last blocks in PyTorch, on the same objective as the heads.
On the eval split one fine-tuned block did not beat frozen features (p@5 articleType
0.82-0.83 either way, at ~10x the training time).
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from taggers.offline import LITE0_BLOCKS, FrontRunner, mirrored, to_square
from toolkit.training.captions import Captions, sample_captions
from toolkit.training.config import Progress, TrainConfig
from toolkit.training.features import cached_rows, file_hashes
from toolkit.training.loop import seed_everything
from toolkit.training.losses import batch_loss, look_codes

if TYPE_CHECKING:
    from taggers.offline import Heads


def front_activations(paths: list[Path], n_front: int, threads: int, cache: Path,
                      progress: Progress) -> dict[str, np.ndarray]:
    """Activations of the frozen front of the backbone (float16, photo and mirror image), cached by
    file hash; computed with ONNX Runtime, since they are what every fine-tuning epoch starts from."""
    from PIL import Image

    hashes, by_hash = file_hashes(paths)
    run = FrontRunner(n_front, threads, cache)

    def compute(keys: list[str]) -> dict[str, np.ndarray]:
        acts, mirror = [], []
        t0 = time.time()
        for i in range(0, len(keys), 64):
            arrs = np.stack([to_square(Image.open(by_hash[h])) for h in keys[i: i + 64]])
            acts.append(run(arrs).astype(np.float16))
            mirror.append(run(mirrored(arrs)).astype(np.float16))
            if (i // 64) % 8 == 7 or i + 64 >= len(keys):
                done = min(i + 64, len(keys))
                progress(f"front activations: {done}/{len(keys)} ({done / (time.time() - t0):.0f} photos/s)")
        return {"acts": np.concatenate(acts), "mirror": np.concatenate(mirror)}

    return cached_rows(cache / "features" / f"{run.features_key}.npz", hashes, compute, ("acts", "mirror"))


def finetune(heads: Heads, acts: dict[str, np.ndarray], colour: np.ndarray, txt_f: np.ndarray, caps: Captions,
             cfg: TrainConfig, progress: Progress) -> tuple[Heads, dict, float]:
    """Train the backbone's last blocks together with the (already trained) heads, on the same
    objective; returns the heads, the changed backbone tensors and the last epoch's loss."""
    import torch

    from taggers.offline import Tail, load_backbone

    seed_everything(cfg.seed + 1)
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


def finetune_stage(heads: Heads, paths: list[Path], colour: np.ndarray, txt_f: np.ndarray, caps: Captions,
                   cfg: TrainConfig, cache: Path, progress: Progress) -> tuple[Heads, dict, float]:
    """Second stage: cache the frozen front's activations, then fine-tune the last blocks with the heads.
    On the eval split one fine-tuned block did not beat frozen features (p@5 articleType 0.82-0.83
    either way, at ~10x the training time), so it is opt-in."""
    n_front = LITE0_BLOCKS - cfg.finetune_blocks
    acts = front_activations(paths, n_front, cfg.threads, cache, progress)
    heads.cfg.finetuned = [f"_blocks.{i}" for i in range(n_front, LITE0_BLOCKS)] + ["_conv_head", "_bn1"]
    return finetune(heads, acts, colour, txt_f, caps, cfg, progress)

