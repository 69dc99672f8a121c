"""--prior-steps 0 leaves the mask prior untrained: the run says so, and no table shows a
"learned clicker" row computed by an untrained network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppo.train import Trainer
from tests.test_seeds import TINY_FLAGS
from tests.test_train import tiny


def test_a_run_with_an_untrained_mask_prior_warns(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"--prior-steps 0: the mask prior stays untrained.*"
                                         r"--prior-steps N.*--no-mask-prior"):
        Trainer(tiny(tmp_path, "untrained", prior_steps=0))


def test_no_learned_clicker_row_from_an_untrained_prior(tmp_path: Path) -> None:
    from scripts import train

    flags = list(TINY_FLAGS)
    flags[flags.index("--prior-steps") + 1] = "0"
    with pytest.warns(UserWarning, match="--prior-steps 0"):
        assert train.main(["--out-dir", str(tmp_path), *flags]) == 0
    results = json.loads((tmp_path / "tiny" / "eval" / "results.json").read_text())
    names = [r["name"] for r in results["results"]]
    assert names == ["agent (PPO)", "oracle", "oracle (grid)", "no further clicks", "random"]
