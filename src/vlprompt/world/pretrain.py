"""The recipe that pretrains the embedded tiny CLIP on generated image-caption pairs.

Symmetric contrastive loss, AdamW, linear warm-up then cosine decay, on batches generated from
(seed, step), so the run is reproducible and resumes exactly from its last checkpoint. The token
embedding is initialised from its own seeded generator and never decayed, so the rows of tokens the
world never uses stay at their initial values and the shipped file stores only the used rows.
"""

from __future__ import annotations

import io
import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch.utils.data import DataLoader, Dataset

from vlprompt.backbones.embedded import EMBEDDED_NAME, EMBEDDED_PREPROCESS, token_embedding_init
from vlprompt.backbones.text_tower import TextTower
from vlprompt.io import write_bytes, write_json
from vlprompt.progress import Progress
from vlprompt.world.captions import caption
from vlprompt.world.generator import COLOURS, SHAPES, random_scene, render
from vlprompt.world.pretrain_config import PretrainConfig

log = logging.getLogger(__name__)


class GeneratedBatches(Dataset):
    """Batch ``step`` of the pretraining stream: images (normalised) and tokenised captions."""

    def __init__(self, config: PretrainConfig, steps: int):
        self.config = config
        self.steps = steps
        self.tokenizer = open_clip.get_tokenizer(EMBEDDED_NAME)
        self.mean = torch.tensor(EMBEDDED_PREPROCESS["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(EMBEDDED_PREPROCESS["std"]).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int):
        rng = random.Random(f"pretrain/{self.config.seed}/{step}")
        scenes = hard_negative_scenes(rng, self.config.batch_size, self.config.group_size)
        pixels = torch.from_numpy(np.stack([np.asarray(render(s)) for s in scenes]))
        images = (pixels.permute(0, 3, 1, 2).float() / 255 - self.mean) / self.std
        texts = self.tokenizer([caption(s, rng) for s in scenes])
        return images, texts


def hard_negative_scenes(rng: random.Random, count: int, group_size: int) -> list:
    """``count`` scenes in groups of ``group_size`` that share a colour and differ in shape."""
    scenes = []
    while len(scenes) < count:
        colour = rng.choice(list(COLOURS))
        shapes = rng.sample(SHAPES, min(group_size, len(SHAPES)))
        scenes += [random_scene(rng, colour=colour, shape=shape) for shape in shapes]
    return scenes[:count]


def build_model(config: PretrainConfig) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = open_clip.create_model(EMBEDDED_NAME)
    with torch.no_grad():
        model.token_embedding.weight.copy_(token_embedding_init(model.token_embedding.weight.shape))
        model.logit_scale.fill_(config.logit_scale_init)
    return model


def param_groups(model: torch.nn.Module, config: PretrainConfig) -> list[dict]:
    """Decay matrices only; never the token embedding (unused rows must keep their initial values).
    The logit scale gets its own, larger learning rate."""
    decay, no_decay, scale = [], [], []
    for name, p in model.named_parameters():
        if name == "logit_scale":
            scale.append(p)
        elif p.ndim >= 2 and "token_embedding" not in name and "positional" not in name and "class_embedding" not in name:
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": config.weight_decay, "lr_mult": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0},
            {"params": scale, "weight_decay": 0.0, "lr_mult": config.logit_scale_lr_mult}]


def lr_at_step(step: int, config: PretrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def contrastive_loss(model: torch.nn.Module, tower: TextTower, images, texts, scale_max: float):
    image_features = F.normalize(model.encode_image(images), dim=-1)
    text_features = F.normalize(tower(tower.embed(texts), tower.eot_positions(texts)), dim=-1)
    scale = model.logit_scale.clamp(max=scale_max).exp()
    logits = scale * image_features @ text_features.t()
    target = torch.arange(len(images))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def pretrain(config: PretrainConfig, out_dir: str | Path, stop_after: int | None = None) -> torch.nn.Module:
    """Train (resuming from ``out_dir/checkpoint.pt`` if present); returns the model."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(config)
    tower = TextTower(model)
    optimizer = torch.optim.AdamW(param_groups(model, config), lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    ckpt = out_dir / "checkpoint.pt"
    start = 0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state["config"] != asdict(config):
            log.warning("checkpoint %s was written with another config; its settings are kept", ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        log.info("resuming pretraining at step %d", start)
    write_json(out_dir / "config.json", asdict(config))
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    loader = DataLoader(_Slice(GeneratedBatches(config, config.steps), start, end), batch_size=None,
                        num_workers=config.workers, prefetch_factor=4 if config.workers else None)
    model.train()
    bar = Progress(loader, "pretrain", total=config.steps, unit="step", initial=start)
    started = time.perf_counter()
    with (out_dir / "log.jsonl").open("a") as logfile:
        for step, (images, texts) in enumerate(bar, start=start):
            for group in optimizer.param_groups:
                group["lr"] = lr_at_step(step, config) * group["lr_mult"]
            loss = contrastive_loss(model, tower, images, texts, config.logit_scale_max)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scale = float(model.logit_scale.detach().exp())
            loss_value = float(loss.detach())
            bar.set_postfix(loss=f"{loss_value:.3f}", scale=f"{scale:.1f}")
            if (step + 1) % 20 == 0:
                logfile.write(f'{{"step": {step + 1}, "loss": {loss_value:.4f}, "scale": {scale:.2f}, '
                              f'"seconds": {time.perf_counter() - started:.1f}}}\n')
                logfile.flush()
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == end:
                save_checkpoint(model, optimizer, step + 1, config, ckpt)
    return model.eval()


class _Slice(Dataset):
    def __init__(self, data: Dataset, start: int, end: int):
        self.data, self.start, self.end = data, start, end

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __getitem__(self, i: int):
        return self.data[self.start + i]


def save_checkpoint(model, optimizer, step: int, config: PretrainConfig, path: Path) -> None:
    buffer = io.BytesIO()  # written as bytes, so a full disk is an OSError of the write (see vlprompt.io)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "config": asdict(config)}, buffer)
    write_bytes(path, buffer.getvalue())


def export_weights(model: torch.nn.Module, path: str | Path) -> int:
    """Write the shipped weights: every tensor but the token embedding, plus the embedding rows that
    differ from their seeded initial values. Returns the file size in bytes."""
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    embedding = state.pop("token_embedding.weight")
    initial = token_embedding_init(embedding.shape)
    rows = torch.nonzero((embedding != initial).any(dim=1)).flatten()
    state["token_embedding.rows"] = rows.to(torch.int64)
    state["token_embedding.values"] = embedding[rows].contiguous()
    path = Path(path)
    write_bytes(path, save(state))
    return path.stat().st_size
