"""The mask prior (a U-Net of the image alone), the learned clicker built on it, and the hard
rule of automatic mode: the actor never sees ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gpu_env.obs_spec import ACTION_MASK, GT_ERROR, IMAGE_EMBEDDING, MASK_PRIOR, OBS, PRIOR_CLICK, SAM_PROB
from gpu_env.evaluation import OracleClicker, PriorClicker
from ppo.prior import MaskPrior, attach_prior, prior_probabilities, train_mask_prior
from ppo.train import Trainer
from tests.test_train import tiny
from tests.nets import spatial

ROOT = Path(__file__).resolve().parents[1]

GT_FREE_KEYS = {OBS, SAM_PROB, MASK_PRIOR, PRIOR_CLICK, IMAGE_EMBEDDING, ACTION_MASK}


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    cfg = tiny(tmp_path_factory.mktemp("prior"), "prior", width=8, train_images=12,
               num_envs=8, prior_steps=3)
    t = Trainer(cfg)
    t.pretrain_prior()
    return t


def test_mask_prior_shapes_and_parameter_count():
    net = MaskPrior(width=16)
    assert sum(p.numel() for p in net.parameters()) == 488_001
    out = net(torch.rand(2, 3, 128, 128))
    assert out.shape == (2, 1, 128, 128) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="width >= 1"):
        MaskPrior(width=0)


def test_training_the_prior_lowers_its_loss():
    torch.manual_seed(0)
    rgb = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    gt = torch.zeros(8, 32, 32, dtype=torch.bool)
    for i in range(8):  # a bright square on a dark background: learnable in a few steps
        r, c = 4 + i, 20 - i
        rgb[i, :, r:r + 8, c:c + 8] = 220
        gt[i, r:r + 8, c:c + 8] = True
    net = MaskPrior(width=8, depth=2)
    before = train_mask_prior(net, rgb, gt, steps=1, seed=0, progress=False).final_loss
    after = train_mask_prior(net, rgb, gt, steps=100, lr=1e-2, seed=0, progress=False).final_loss
    assert after < 0.2 * before
    probs = prior_probabilities(net, rgb)
    assert probs.shape == (8, 1, 32, 32) and float(probs.min()) >= 0 and float(probs.max()) <= 1
    pred = probs[:, 0] > 0.5
    assert float(2 * (pred & gt).sum() / (pred.sum() + gt.sum())) > 0.9


def test_prior_is_frozen_owned_by_the_policy_and_installed(trainer):
    prior = trainer.policy.prior
    assert prior is not None and not any(p.requires_grad for p in prior.parameters())
    assert not any(p is q for p in prior.parameters() for q in trainer.trainable())
    env = trainer.env
    expected = prior_probabilities(prior, env.rgb)
    assert torch.equal(env.mask_prior, expected)
    assert torch.equal(trainer.envs.eval_env.mask_prior, prior_probabilities(prior, trainer.envs.eval_env.rgb))
    obs = env.observe(env.initial_state(4, 0))
    assert obs[MASK_PRIOR].shape == (4, 1, env.config.obs_size, env.config.obs_size)


def test_a_checkpoint_carries_the_prior(trainer, tmp_path):
    trainer.save(None)
    other = Trainer(trainer.cfg.replace(exp_name="reloaded", out_dir=str(tmp_path)))
    other.load(trainer.keeper.last)
    for (k, a), b in zip(trainer.policy.prior.state_dict().items(),
                         other.policy.prior.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(other.env.mask_prior, trainer.env.mask_prior)


def test_observing_without_an_installed_prior_says_what_to_do(trainer):
    env = trainer.env.with_config(trainer.env.config)
    env.mask_prior = None
    with pytest.raises(ValueError, match="set_mask_prior"):
        env.observe(env.initial_state(2, 0))
    with pytest.raises(ValueError, match=r"\[12, 1, 64, 64\]|one map per image"):
        trainer.env.set_mask_prior(torch.zeros(3, 1, 8, 8))


def test_actor_input_keys_hold_no_ground_truth(trainer):
    assert trainer.cfg.env.mode == "auto"
    assert set(trainer.policy.in_keys) <= GT_FREE_KEYS
    assert MASK_PRIOR in trainer.policy.in_keys and GT_ERROR not in trainer.policy.in_keys
    assert GT_ERROR not in trainer.env.observe(trainer.env.initial_state(2, 0)).keys()


def test_changing_the_ground_truth_does_not_change_the_action_distribution(trainer):
    """Same images, same clicks, same masks; only the GT of the episodes differs."""
    env = trainer.env
    state = env.initial_state(8, 11)
    for _ in range(2):  # a few clicks in, so masks and heatmaps are not the reset ones
        state, _, _ = env.step_autoreset(state, torch.arange(8) * 37 % env.num_actions)
    policy = trainer.policy.eval()
    with torch.no_grad():
        obs = env.observe(state)
        logits, _ = policy(**{k: obs[k] for k in policy.in_keys})
        other = env.with_config(env.config)
        other.gt = ~env.gt  # every episode's GT replaced by its complement
        obs2 = other.observe(state)
        logits2, _ = policy(**{k: obs2[k] for k in policy.in_keys})
    policy.train()
    assert torch.equal(logits, logits2)
    assert torch.equal(obs[ACTION_MASK], obs2[ACTION_MASK])


def test_learned_clicker_with_the_gt_as_prior_is_the_oracle(tmp_path):
    """With the GT itself installed as the prior (observation size = mask size, so no
    resampling), the learned clicker's rule is RITM's oracle, click for click."""
    cfg = tiny(tmp_path, "gtprior", train_images=6, image_size=64, obs_size=64, grid_size=16,
               prior_steps=0)
    t = Trainer(cfg)
    env = t.env
    if env.mask_size != env.config.obs_size:
        env = Trainer(cfg.replace(exp_name="gt2", obs_size=env.mask_size)).env
    env.set_mask_prior(env.gt[:, None].float())
    state = env.initial_state(6, 1)
    for _ in range(3):
        obs = env.observe(state)
        got = PriorClicker()(env, state, obs)
        want = OracleClicker(grid=False)(env, state, obs)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
        state, _ = env.step_click(state, *want)


def test_attach_prior_is_a_no_op_without_a_prior(trainer):

    policy = spatial(grid_size=8, obs_size=32, width=4)
    assert policy.prior is None
    attach_prior(policy, trainer.env)  # must not touch the env
    assert trainer.env.mask_prior is not None


def test_quick_evaluation_writes_best_pt_and_logs_episode_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny(tmp_path, "tb", tensorboard=True, eval_every=2, checkpoint_every=2)
    Trainer(cfg).run()
    run = tmp_path / "tb"
    assert (run / "best.pt").exists()
    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0}).Reload()
    assert "eval/episodes" in acc.Tags()["images"] and "eval_dice" in acc.Tags()["scalars"]
    img = acc.Images("eval/episodes")[-1]
    assert img.width > 3 * 128 and img.height >= 4 * 128  # 4 episodes of max_clicks + 1 tiles


def test_a_config_saved_before_the_mask_prior_loads_without_one():
    from ppo.config import TrainConfig

    # a flat config.json of a run saved before the mask prior (and before the config's sections)
    old = json.loads((ROOT / "docs/results/auto_seeds/seed1_results.json").read_text())
    old = old["meta"]["config"]
    assert "mask_prior" not in old and "prior_steps" not in old and "env" not in old
    cfg = TrainConfig.from_dict(old)
    assert cfg.env.obs_mask_prior is False and TrainConfig().env.obs_mask_prior is True


def test_the_recipe_runs_with_sam2_and_the_image_embedding(tmp_path):
    """Random-weight tiny SAM2 (the real architecture), feature caches per split, the mask
    prior beside the cached image embedding: pre-training, PPO, and the evaluation with the
    learned clicker's row."""
    from gpu_env.datasets import load_dataset
    from ppo.evaluate import evaluate_agent
    from sam_batch.cache import encode_to_cache
    from sam_batch.model import checkpoint_fingerprint
    from tests.dist_workers import write_folder_dataset
    from references.sam_fixtures import TINY_CONFIG, TINY_SIZE, tiny_model

    data = write_folder_dataset(tmp_path / "data", 4, 2)
    for split in ("train", "val"):
        ds = load_dataset(str(data), split=split, size=64)
        encode_to_cache(tiny_model(), lambda i, ds=ds: ds.load_original(i)[0], ds.ids,
                        tmp_path / f"cache_{split}", config_name=TINY_CONFIG, progress=False,
                        fingerprint=checkpoint_fingerprint(None, TINY_CONFIG, 0, TINY_SIZE))
    cfg = tiny(tmp_path, "sam", dataset=str(data), image_size=64, obs_size=64, grid_size=16,
               segmenter="sam2", sam2_config=TINY_CONFIG, sam2_image_size=TINY_SIZE,
               feature_cache=str(tmp_path / "cache_{split}"), obs_image_embedding=True,
               obs_prior_click=True, num_envs=4, num_steps=2, total_timesteps=16, eval_images=2)
    t = Trainer(cfg)
    assert {MASK_PRIOR, PRIOR_CLICK, IMAGE_EMBEDDING} <= set(t.policy.in_keys)
    t.run()
    assert t.prior_stats["prior_steps"] == 2 and t.iteration == 2
    curves = evaluate_agent(t.envs.eval_env, t.envs.eval_data, t.policy, num_clicks=3,
                            progress=False)
    names = [c.name for c in curves]
    assert "learned clicker" in names and "agent (PPO)" in names
    assert all(float(c.dice.min()) >= 0 for c in curves)


def test_mask_prior_policy_forward_and_update_have_no_host_sync():
    """The prior's planes, the grid distance maps (exact EDT) and the residual bias on
    ``prior_click`` stay on the device."""
    from tensordict import TensorDict

    from ppo.loss import PPOConfig, make_ppo_loss, ppo_update
    from ppo.policies import make_actor_critic
    from tests.sync_guard import allow_host_reads, forbid_host_sync

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    policy = spatial(grid_size=8, obs_size=32, width=8, dilations=(1, 2),
                           use_mask_prior=True, prior_width=4, prior_distance=True,
                           use_prior_click=True, prior_click_scale=2.0)
    ac = make_actor_critic(policy, generator=gen)
    obs = torch.rand(16, 6, 32, 32, generator=gen)
    obs[:, 3] = (obs[:, 3] > 0.5).float()
    td = TensorDict({OBS: obs, MASK_PRIOR: torch.rand(16, 1, 32, 32, generator=gen),
                     PRIOR_CLICK: 3 * torch.rand(16, 2, 8, 8, generator=gen)}, [16])
    with forbid_host_sync(), torch.no_grad():
        batch = ac.policy_value(td)
    batch["advantage"] = torch.randn(16, 1, generator=gen)
    batch["value_target"] = batch["state_value"] + torch.randn(16, 1, generator=gen)
    cfg = PPOConfig(num_minibatches=2, update_epochs=1)
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    loss = make_ppo_loss(ac.actor, ac.critic, cfg)
    step = opt.step
    opt.step = lambda: allow_host_reads(step)  # CPU Adam's step counter (see test_ppo_loss)
    with forbid_host_sync():
        stats = ppo_update(loss, opt, batch, cfg, generator=gen, lr=1e-3)
    assert torch.isfinite(stats["loss_objective"]).all()


def test_prior_probabilities_do_not_depend_on_the_chunk():
    from gpu_env.mask_prior import load_bundled_prior

    prior, _ = load_bundled_prior()
    rgb = torch.randint(0, 256, (37, 3, 64, 64), generator=torch.Generator().manual_seed(0),
                        dtype=torch.uint8)
    prior_probabilities(prior, rgb[:4])  # the first call of a process may pick other kernels
    ref = prior_probabilities(prior, rgb, chunk=37)
    for chunk in (5, 16, 32):  # a one-image chunk runs other conv kernels (see the docstring)
        assert torch.equal(prior_probabilities(prior, rgb, chunk=chunk), ref), chunk
