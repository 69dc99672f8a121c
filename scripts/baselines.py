"""Baseline table without an agent: RITM oracle (pixel / grid), the learned clicker, no further
clicks, random.

The learned clicker is a mask prior (``ppo.prior.MaskPrior``, a small U-Net of the image
alone) trained here on the training split for ``--prior-steps`` updates, clicking by RITM's
rule against its own prediction (no GT at evaluation); its training time is printed.

    python -m scripts.baselines                                   # synthetic val, weight-free
    python -m scripts.baselines --segmenter sam2 --sam2-config sam2.1_hiera_t --sam2-image-size 256
    python -m scripts.baselines --dataset kvasir:/data/Kvasir-SEG --segmenter sam2 \
        --sam2-checkpoint /ckpt/sam2.1_hiera_base_plus.pt --device cuda

For SAM2 the held-out images are encoded in memory first (use scripts.embed + scripts.train
for large sets); without a checkpoint SAM2 has RANDOM weights (a cost/plumbing check only).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from gpu_env.config import PROTOTYPE_ENV
from gpu_env.datasets import is_synthetic, load_dataset
from gpu_env.env import ClickEnv
from ppo.evaluate import evaluate_agent, report
from ppo.factory import resolve_device


@dataclass
class BaselineConfig:
    """Evaluate the baseline clickers on a held-out split."""

    dataset: str = "synthetic"
    """``synthetic``, ``kvasir:<folder>`` or an image/mask folder."""
    split: str = "val"
    """Split evaluated."""
    count: int = 64
    """Synthetic images (ignored for folders)."""
    segmenter: Literal["weightfree", "sam2"] = "weightfree"
    """Segmenter under test."""
    sam2_config: str = "sam2.1_hiera_b+"
    """SAM2.1 config name."""
    sam2_checkpoint: str | None = None
    """SAM2 checkpoint; None = random weights."""
    sam2_image_size: int | None = None
    """SAM2 input size override (small random-weight models)."""
    num_clicks: int = 20
    """Clicks per episode, the initial one included."""
    batch_size: int = 64
    """Episodes at once."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda``."""
    out: Path = Path("runs/baselines")
    """Output folder (results.json/csv, dice_vs_clicks.png)."""
    seed: int = 0
    """Seed of the random clicker and of the learned clicker's training."""
    prior_steps: int = 1200
    """Training updates of the learned clicker's network (0: no learned-clicker row)."""
    prior_width: int = 16
    """Base channel width of the learned clicker's U-Net."""
    train_split: str = "train"
    """Split the learned clicker is trained on."""
    train_count: int = 1024
    """Synthetic training images of the learned clicker (ignored for folders)."""


def train_learned_clicker(cfg: BaselineConfig, env: ClickEnv, device: torch.device) -> str:
    """Train the learned clicker's mask prior on the training split and install its maps in
    ``env``; returns a one-line description with its training time."""
    from gpu_env.datasets.io import resize_images
    from ppo.prior import MaskPrior, prior_probabilities, train_mask_prior

    kw = {"count": cfg.train_count} if is_synthetic(cfg.dataset) else {}
    train = load_dataset(cfg.dataset, split=cfg.train_split, size=256, **kw)
    rgb = resize_images(train.images.to(device), env.config.obs_size)
    gt = train.masks.to(device).bool()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        prior = MaskPrior(width=cfg.prior_width).to(device)
    stats = train_mask_prior(prior, rgb, gt, steps=cfg.prior_steps, seed=cfg.seed)
    env.set_mask_prior(prior_probabilities(prior, env.rgb))
    return (f"U-Net width {cfg.prior_width} trained on {len(train)} {cfg.train_split} images, "
            f"{stats.steps} steps in {stats.seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(BaselineConfig, args=argv, description=__doc__)
    device = resolve_device(cfg.device)
    kw = {"count": cfg.count} if is_synthetic(cfg.dataset) else {}
    data = load_dataset(cfg.dataset, split=cfg.split, size=256, **kw)
    if cfg.segmenter == "weightfree":
        from sam_batch.geodesic import GeodesicSegmenter

        segmenter = GeodesicSegmenter(data.images.to(device))
        label = "weight-free geodesic segmenter"
    else:
        from sam_batch.decoder import BatchedSAM2Decoder
        from sam_batch.encoder import encode_images
        from sam_batch.model import build_sam

        model = build_sam(cfg.sam2_config, cfg.sam2_checkpoint, device=device,
                          image_size=cfg.sam2_image_size)
        feats = encode_images(model, [data.load_original(i)[0] for i in range(len(data))],
                              batch_size=8, progress=True)
        segmenter = BatchedSAM2Decoder(model, feats)
        weights = cfg.sam2_checkpoint or "RANDOM weights"
        label = f"SAM2 {cfg.sam2_config} ({weights}, input {segmenter.input_size})"
    env = ClickEnv(segmenter, data, PROTOTYPE_ENV)
    trained = ""
    if cfg.prior_steps:
        trained = train_learned_clicker(cfg, env, device)
    curves = evaluate_agent(env, data, None, num_clicks=cfg.num_clicks,
                            batch_size=cfg.batch_size, seed=cfg.seed)
    meta = {"segmenter": label, "dataset": cfg.dataset, "split": cfg.split,
            "images": len(data), "command": " ".join(["python -m scripts.baselines", *(argv or sys.argv[1:])])}
    if trained:
        meta["learned_clicker"] = trained
    print(f"{label} on {len(data)} {cfg.dataset}/{cfg.split} images\n")
    if trained:
        print(f"learned clicker: {trained}\n")
    print(report(curves, cfg.out, meta))
    print(f"\nresults written to {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
