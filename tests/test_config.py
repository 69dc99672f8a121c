"""The run config: one home per setting, every setting a CLI flag, one migration of old configs."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from ppo.config import SECTIONS, TrainConfig, migrate

ROOT = Path(__file__).resolve().parents[1]

FLAT_BEFORE_SECTIONS = {  # config.json of a run saved before the sections (and the mask prior)
    "action_mask": True, "anneal_lr": True, "autocast": "none", "bc_lr": 0.001, "bc_steps": 200,
    "boundary_metric": "fscore", "boundary_weight": 0.5, "checkpoint_every": 20, "clip_coef": 0.1,
    "clip_vloss": True, "compile": False, "dataset": "synthetic", "device": "auto",
    "ent_coef": 0.02, "eval_clicks": 20, "eval_every": 0, "eval_images": 64, "eval_split": "val",
    "exp_name": "ppo_click", "feature_cache": None, "gae_lambda": 0.95, "gamma": 0.5,
    "grid_size": 32, "image_size": 256, "keep_checkpoints": 3, "learning_rate": 0.001,
    "log_every": 5, "max_clicks": 5, "max_grad_norm": 0.5, "mode": "simulated_user",
    "num_envs": 64, "num_minibatches": 4, "num_steps": 10, "obs_image_embedding": False,
    "obs_sam_prob": True, "obs_size": 128, "out_dir": "runs", "patch_stem": True,
    "policy": "proto", "progress": True, "resume": None, "sam2_checkpoint": None,
    "sam2_config": "sam2.1_hiera_b+", "sam2_image_size": None, "sam2_seed": 0, "seed": 3,
    "segmenter": "weightfree", "shard_data": False, "tensorboard": True,
    "total_timesteps": 25600, "train_images": 256, "train_split": "train", "update_epochs": 4,
    "use_mask_input": True, "vf_coef": 0.5, "width": 16,
}


def test_a_flat_config_of_an_old_run_loads_through_the_migration():
    cfg = TrainConfig.from_dict(FLAT_BEFORE_SECTIONS)
    assert cfg.run.seed == 3 and cfg.ppo.bc_steps == 200 and cfg.ppo.total_timesteps == 25600
    assert cfg.env.mode == "simulated_user" and cfg.policy.kind == "proto"
    assert cfg.segmenter.kind == "weightfree" and cfg.data.train_images == 256
    assert cfg.env.obs_mask_prior is False  # ABSENT_MEANS: runs before the prior had none
    assert cfg.policy.prior_distance is False
    assert cfg.env.target_dice is None and cfg.ppo.norm_adv is True  # then not settable: defaults
    nested = cfg.to_dict()
    assert set(nested) == set(SECTIONS) and TrainConfig.from_dict(nested) == cfg
    assert migrate(nested) == nested


def test_unknown_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="no_such_flag"):
        TrainConfig.from_dict({**FLAT_BEFORE_SECTIONS, "no_such_flag": 1})
    with pytest.raises(ValueError, match="no_such_flag"):
        TrainConfig.from_dict({"env": {"no_such_flag": 1}})


def test_every_setting_has_one_home_and_one_flag():
    homes: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            assert f.name not in homes or f.name == "kind", (f.name, homes.get(f.name), section)
            homes.setdefault(f.name, section)
    cfg = TrainConfig.from_cli(["--target-dice", "0.9", "--heatmap-sigma", "2.5",
                                "--boundary-tolerance", "3", "--no-norm-adv", "--policy", "proto",
                                "--segmenter", "weightfree", "--no-mask-prior", "--seed", "7"])
    assert cfg.env.target_dice == 0.9 and cfg.env.heatmap_sigma == 2.5
    assert cfg.env.boundary_tolerance == 3 and cfg.ppo.norm_adv is False
    assert cfg.policy.kind == "proto" and cfg.env.obs_mask_prior is False and cfg.run.seed == 7


def test_replace_by_flat_name_changes_one_setting():
    cfg = TrainConfig().replace(seed=5, boundary_weight=0.0, policy="proto", mask_prior=False)
    assert cfg.run.seed == 5 and cfg.env.boundary_weight == 0.0 and cfg.policy.kind == "proto"
    assert cfg.env.obs_mask_prior is False
    assert cfg.replace() == cfg and TrainConfig().run.seed == 1


def test_the_saved_results_of_every_documented_run_still_load():
    for path in sorted(ROOT.glob("docs/results/**/*results.json")):
        config = json.loads(path.read_text())["meta"].get("config")
        if config:
            TrainConfig.from_dict(config)


def test_observation_keys_are_checked_against_what_the_policy_reads():
    """Validation reads the env's observation keys (``EnvConfig.observation_keys``, the one place
    that decides them), not the switches; the messages name the key and the flag to pass."""
    TrainConfig().validate()
    TrainConfig().replace(policy="proto", mask_prior=False).validate()
    with pytest.raises(ValueError, match=r"policy='proto' has no input for the observation "
                                         r"key\(s\) mask_prior, prior_click.*--no-mask-prior"):
        TrainConfig().replace(policy="proto").validate()
    with pytest.raises(ValueError, match=r"image_embedding observation key needs "
                                         r"segmenter='sam2'.*--no-obs-image-embedding"):
        TrainConfig().replace(obs_image_embedding=True).validate()


def test_the_flag_named_for_each_optional_key_removes_it():
    from gpu_env.obs_spec import OBSERVATION

    without = {e.name: e.without_flag for e in OBSERVATION if e.without_flag}
    on = TrainConfig.from_cli(["--obs-image-embedding", "--mode", "simulated_user"])
    assert set(without) <= set(on.env.observation_keys)
    for key, flag in without.items():
        off = TrainConfig.from_cli(["--obs-image-embedding", "--mode", "simulated_user",
                                    *flag.split()])
        assert key not in off.env.observation_keys, flag


SAVED_KEYS = {  # the keys of every section of config.json before the shared sections
    "data": "augment_copies augment_seed dataset eval_images eval_split image_size shard_data "
            "train_images train_split",
    "env": "action_mask boundary_metric boundary_tolerance boundary_weight grid_size "
           "heatmap_sigma max_clicks mode obs_image_embedding obs_mask_prior obs_prior_click "
           "obs_sam_prob obs_size target_dice use_mask_input",
    "policy": "kind patch_stem prior_click_scale prior_distance prior_steps prior_width width",
    "ppo": "anneal_lr bc_lr bc_steps clip_coef clip_vloss ent_coef gae_lambda gamma "
           "learning_rate max_grad_norm norm_adv num_envs num_minibatches num_steps "
           "total_timesteps update_epochs vf_coef",
    "run": "autocast checkpoint_every compile device eval_clicks eval_every exp_name "
           "keep_checkpoints log_every out_dir overwrite progress resume seed tensorboard",
    "segmenter": "feature_cache kind sam2_checkpoint sam2_config sam2_image_size sam2_seed",
}


def test_inherited_shared_sections_keep_the_saved_sections_flat():
    """``DataConfig``, ``SegmenterConfig``, ``PolicyConfig`` and ``RunConfig`` inherit the settings
    they share with other commands: ``to_dict()`` (config.json, checkpoints) has the same keys and
    values as before, and the inherited settings are flat flags of ``sam2click-train``."""
    saved = TrainConfig().to_dict()
    assert {k: sorted(v) for k, v in saved.items()} == {
        k: v.split() for k, v in SAVED_KEYS.items()}
    assert saved["run"]["device"] == "auto" and saved["run"]["progress"] is True
    assert saved["policy"]["prior_steps"] == 1200 and saved["data"]["dataset"] == "synthetic"
    cfg = TrainConfig.from_cli(["--device", "cpu", "--overwrite", "--no-progress",
                                "--prior-steps", "3", "--prior-width", "4", "--dataset", "x",
                                "--augment-copies", "2", "--sam2-config", "t",
                                "--sam2-seed", "5"])
    assert (cfg.run.device, cfg.run.overwrite, cfg.run.progress) == ("cpu", True, False)
    assert (cfg.policy.prior_steps, cfg.policy.prior_width) == (3, 4)
    assert (cfg.data.dataset, cfg.data.augment_copies) == ("x", 2)
    assert (cfg.segmenter.sam2_config, cfg.segmenter.sam2_seed) == ("t", 5)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
