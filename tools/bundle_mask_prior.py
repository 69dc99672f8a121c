"""Train the mask prior that ships with the package (``gpu_env/assets/``), by the main job's recipe.

The prior is the one ``sam2click-train`` pre-trains with its defaults: the same network
(``PolicyConfig().prior_width``), initialised from the same seed inside the same policy, trained
for ``PolicyConfig().prior_steps`` steps on the same synthetic training split. ``gpu_env.make``
loads it so that the default env observes the main job's mask prior without training it again.

    python tools/bundle_mask_prior.py            # writes gpu_env/assets/mask_prior_synthetic.*

The weights are written as safetensors beside a JSON record of how they were made (command,
machine, threads, seconds, the prior's mean Dice on the held-out split).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_env.mask_prior import ASSET_STEM, bundled_prior_path, prior_probabilities  # noqa: E402
from gpu_env.metrics import dice  # noqa: E402
from ppo.config import TrainConfig  # noqa: E402
from ppo.factory import build_envs  # noqa: E402
from ppo.policies import build_policy  # noqa: E402
from ppo.prior import policy_prior, pretrain_prior  # noqa: E402


def main() -> None:
    cfg = TrainConfig()
    device = torch.device("cpu")
    envs = build_envs(cfg, device)
    policy = build_policy(cfg.policy, cfg.env, cfg.run.seed, device)
    t0 = time.perf_counter()
    stats = pretrain_prior(policy, envs.train_env, steps=cfg.policy.prior_steps, seed=cfg.run.seed)
    prior = policy_prior(policy)
    probs = prior_probabilities(prior, envs.eval_env.rgb)
    gt = torch.nn.functional.interpolate(envs.eval_env.gt[:, None].float(), size=probs.shape[-2:],
                                         mode="area")[:, 0] > 0.5
    val_dice = float(dice(probs[:, 0] > 0.5, gt).mean())
    weights, record = bundled_prior_path()
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in prior.state_dict().items()}, str(weights))
    record.write_text(json.dumps({
        "command": "python tools/bundle_mask_prior.py",
        "recipe": {"dataset": cfg.data.dataset, "split": cfg.data.train_split,
                   "images": cfg.data.train_images, "image_size": cfg.data.image_size,
                   "obs_size": cfg.env.obs_size, "width": cfg.policy.prior_width,
                   "steps": stats.steps, "seed": cfg.run.seed},
        "final_loss": stats.final_loss,
        "val_dice": {"split": cfg.data.eval_split, "images": cfg.data.eval_images,
                     "mean": round(val_dice, 4)},
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
    }, indent=2) + "\n")
    print(f"wrote {weights} ({ASSET_STEM}); val Dice of the prior {val_dice:.3f}")


if __name__ == "__main__":
    main()
