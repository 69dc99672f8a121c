"""SAM2 checkpoint errors name the command's flags and never relay PyTorch's advice to load a
file unsafely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sam_batch.model import SAM2LoadError, build_sam
from references.sam_fixtures import tiny_model


class Payload:
    """Any class: loading it would run the unpickler's code paths for arbitrary objects."""


def test_a_checkpoint_with_objects_is_refused_without_unsafe_advice(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"model": Payload()}, bad)  # a pickled class, not plain data
    with pytest.raises(SAM2LoadError) as err:
        build_sam("t", bad, image_size=128)
    text = str(err.value)
    assert str(bad) in text and "--sam2-checkpoint" in text and "never unpickled" in text
    assert "Payload" in text  # what the unpickler objected to
    assert "weights_only" not in text and "safe_globals" not in text


def test_a_missing_checkpoint_names_the_flags(tmp_path: Path) -> None:
    with pytest.raises(SAM2LoadError, match=r"pass its local path to --sam2-checkpoint, or omit "
                                            r"--sam2-checkpoint for random weights") as err:
        build_sam("t", tmp_path / "nope.pt", image_size=128)
    assert "checkpoint=None" not in str(err.value)


def test_a_checkpoint_of_another_config_names_the_config_flag(tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.pt"
    torch.save({"model": tiny_model(128).state_dict()}, ckpt)
    with pytest.raises(SAM2LoadError, match=r"does not fit config 'sam2.1_hiera_s'.*pass "
                                            r"--sam2-config sam2.1_hiera_t\.") as err:
        build_sam("s", ckpt, image_size=128)
    assert "config=" not in str(err.value)


def test_an_unsupported_image_size_names_the_flag() -> None:
    with pytest.raises(SAM2LoadError, match="Omit --sam2-image-size"):
        build_sam("t", None, image_size=100)
