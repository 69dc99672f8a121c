"""Baseline table without an agent: RITM oracle (pixel / grid), the learned clicker, no further
clicks, random.

The learned clicker is a small U-Net that guesses the object from the image alone, trained
here on the training split for --prior-steps steps; it clicks by RITM's rule against its own
guess and sees no ground truth. Its training time is printed.

    sam2click-baselines                                   # synthetic val, weight-free
    sam2click-baselines --segmenter sam2 --sam2-config sam2.1_hiera_t --sam2-image-size 256
    sam2click-baselines --dataset kvasir:/data/Kvasir-SEG --segmenter sam2 \
        --sam2-checkpoint /ckpt/sam2.1_hiera_base_plus.pt --device cuda

For SAM2 the held-out images are encoded in memory first (use sam2click-embed + sam2click-train
for large sets); without a checkpoint SAM2 has RANDOM weights (a cost/plumbing check only).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gpu_env.config import PROTOTYPE_ENV
from gpu_env.host_allocator import freed_memory_kept
from gpu_env.datasets.config import DataConfig
from gpu_env.env import ClickEnv
from ppo.command_options import DeviceConfig, EpisodesConfig, ResultsConfig
from ppo.config import MaskPriorConfig
from ppo.evaluate import evaluate_agent, report
from ppo.factory import DeviceError, load_split
from ppo.run_dir import RunFolderError, check_results_folder
from sam_batch.config import SegmenterConfig
from sam_batch.factory import build_segmenter

from ._command import cli, command_name, fail


DEFAULT_OUT = Path("runs/baselines")
"""Where the baseline table goes without ``--out`` (or with ``--out None``)."""


@dataclass(frozen=True)
class BaselineConfig:
    """Evaluate the baseline clickers on a held-out split (``eval_split``, ``eval_images``).

    ``--prior-steps``/``--prior-width`` size the learned clicker's network: training's mask prior
    (``MaskPriorConfig``, which training's policy section inherits)."""

    data: DataConfig = field(default_factory=DataConfig)
    """The held-out images scored, and the training images of the learned clicker."""
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    """The segmenter each click is given to: weight-free, or SAM2."""
    episodes: EpisodesConfig = field(default_factory=EpisodesConfig)
    """The evaluation episodes."""
    device: DeviceConfig = field(default_factory=DeviceConfig)
    """Where the command runs."""
    results: ResultsConfig = field(default_factory=lambda: ResultsConfig(out=DEFAULT_OUT))
    """Where the table goes: runs/baselines under the working directory unless --out."""
    prior: MaskPriorConfig = field(default_factory=MaskPriorConfig)
    """The learned clicker's network."""


def train_learned_clicker(cfg: BaselineConfig, env: ClickEnv, device: torch.device) -> str:
    """Train the learned clicker's mask prior on the training split and install its maps in
    ``env``; returns a one-line description with its training time."""
    from gpu_env.datasets.io import resize_images
    from ppo.prior import MaskPrior, prior_probabilities, train_mask_prior

    train = load_split(cfg.data, cfg.data.train_split, cfg.data.train_images)
    rgb = resize_images(train.images.to(device), env.config.obs_size)
    gt = train.masks.to(device).bool()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.episodes.seed)
        prior = MaskPrior(width=cfg.prior.prior_width).to(device)
    with freed_memory_kept():  # for the training steps, not the images' loading (host_allocator)
        stats = train_mask_prior(prior, rgb, gt, steps=cfg.prior.prior_steps, seed=cfg.episodes.seed)
    env.set_mask_prior(prior_probabilities(prior, env.rgb))
    return (f"U-Net width {cfg.prior.prior_width} trained on {len(train)} "
            f"{cfg.data.train_split} images, "
            f"{stats.steps} steps in {stats.seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    cfg = cli("baselines", BaselineConfig, argv, __doc__)
    cfg.episodes.check(command_name("baselines"))
    out = cfg.results.out or DEFAULT_OUT
    try:
        device = cfg.device.resolve()
        check_results_folder(out, overwrite=cfg.results.overwrite)
    except (DeviceError, RunFolderError) as err:
        raise fail("baselines", str(err)) from err
    data = load_split(cfg.data, cfg.data.eval_split, cfg.data.eval_images)
    seg = cfg.segmenter
    # without --feature-cache the held-out images are encoded in memory here
    segmenter = build_segmenter(seg, data.images, device, image_ids=data.ids,
                                split=cfg.data.eval_split, progress=True,
                                originals=lambda: [data.load_original(i)[0]
                                                   for i in range(len(data))],
                                load_original=lambda i: data.load_original(i)[0])
    if seg.kind == "weightfree":
        label = "weight-free geodesic segmenter"
    else:
        weights = seg.sam2_checkpoint or "RANDOM weights"
        label = f"SAM2 {seg.sam2_config} ({weights}, input {segmenter.input_size})"
    env = ClickEnv(segmenter, data, PROTOTYPE_ENV)
    trained = ""
    if cfg.prior.prior_steps:
        trained = train_learned_clicker(cfg, env, device)
    ep = cfg.episodes
    with freed_memory_kept():
        curves = evaluate_agent(env, data, None, num_clicks=ep.num_clicks,
                                batch_size=ep.batch_size, seed=ep.seed)
    meta = {"segmenter": label, "dataset": cfg.data.dataset, "split": cfg.data.eval_split,
            "images": len(data), "command": " ".join(["sam2click-baselines", *(argv or sys.argv[1:])])}
    if trained:
        meta["learned_clicker"] = trained
    print(f"{label} on {len(data)} {cfg.data.dataset}/{cfg.data.eval_split} images\n")
    if trained:
        print(f"learned clicker: {trained}\n")
    print(report(curves, out, meta))
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
