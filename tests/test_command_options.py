"""Settings the commands share, declared once: composed sections, aliases, overrides."""

from __future__ import annotations

from dataclasses import fields

import pytest

from gpu_env.datasets.config import DataConfig
from ppo.command_options import (AgentConfig, DeviceConfig, OverwriteConfig, ProgressConfig,
                                 SplitConfig, overrides_of)
from ppo.config import MaskPriorConfig, PolicyConfig, RunConfig, TrainConfig


def declared(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def test_training_sections_inherit_the_shared_declarations():
    shared = declared(DeviceConfig) | declared(OverwriteConfig) | declared(ProgressConfig)
    assert shared <= declared(RunConfig)
    assert declared(MaskPriorConfig) <= declared(PolicyConfig)
    assert TrainConfig().run.device == DeviceConfig().device
    assert TrainConfig().policy.prior_steps == MaskPriorConfig().prior_steps


def test_evaluate_parses_overrides_of_the_runs_data_settings():
    from scripts.evaluate import parse

    args = parse(["--checkpoint", "x.pt"])
    assert args.agent.checkpoint == "x.pt" and dict(args.data) == {}
    args = parse(["--checkpoint", "x.pt", "--dataset", "synthetic:7", "--eval-split", "test",
                  "--eval-images", "5"])
    assert dict(args.data) == {"dataset": "synthetic:7", "eval_split": "test", "eval_images": 5}
    cfg = TrainConfig().replace(**args.data)
    assert (cfg.data.dataset, cfg.data.eval_split, cfg.data.eval_images) == ("synthetic:7", "test", 5)
    with pytest.raises(SystemExit) as stop:  # the agent checkpoint is required here
        parse([])
    assert stop.value.code == 2


def test_overrides_of_refuses_a_setting_the_section_lacks():
    with pytest.raises(ValueError, match="no_such"):
        overrides_of(DataConfig, "dataset", "no_such")


def test_render_and_embed_share_split_and_agent_with_their_own_defaults():
    import tyro

    from scripts.embed import parse
    from scripts.render import DatasetSheet, EpisodeStrips

    assert parse([]).split == SplitConfig("all") == SplitConfig()
    assert DatasetSheet().split == SplitConfig("train") and EpisodeStrips().agent == AgentConfig()
    sheet = tyro.cli(tyro.conf.OmitArgPrefixes[DatasetSheet], args=["--split", "val", "--count", "3"])
    assert sheet.split.split == "val" and sheet.count == 3


def test_baselines_sizes_the_learned_clicker_with_the_mask_prior_section():
    import tyro

    from scripts.baselines import BaselineConfig

    cfg = tyro.cli(tyro.conf.OmitArgPrefixes[BaselineConfig],
                   args=["--prior-steps", "2", "--prior-width", "4"])
    assert cfg.prior == MaskPriorConfig(prior_steps=2, prior_width=4)
    assert BaselineConfig().prior == MaskPriorConfig()
