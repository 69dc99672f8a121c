"""Baseline table without an agent: RITM oracle (pixel / grid), no further clicks, random.

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

from gpu_env.config import EnvConfig
from gpu_env.datasets import load_dataset
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
    """Seed of the random clicker."""


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(BaselineConfig, args=argv, description=__doc__)
    device = resolve_device(cfg.device)
    kw = {"count": cfg.count} if cfg.dataset == "synthetic" else {}
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
    env = ClickEnv(segmenter, data, EnvConfig())
    curves = evaluate_agent(env, data, None, num_clicks=cfg.num_clicks,
                            batch_size=cfg.batch_size, seed=cfg.seed)
    meta = {"segmenter": label, "dataset": cfg.dataset, "split": cfg.split,
            "images": len(data), "command": " ".join(["python -m scripts.baselines", *(argv or sys.argv[1:])])}
    print(f"{label} on {len(data)} {cfg.dataset}/{cfg.split} images\n")
    print(report(curves, cfg.out, meta))
    print(f"\nresults written to {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
