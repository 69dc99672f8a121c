"""Building SAM2: config names, hydra/RNG hygiene, random weights, checkpoint loading errors."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sam_batch.model import SAM2LoadError, build_sam, checkpoint_fingerprint, resolve_config, shipped_configs
from references.sam_fixtures import TINY_CONFIG, TINY_SIZE, tiny_model


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("t", "sam2.1_hiera_t"), ("tiny", "sam2.1_hiera_t"), ("sam2.1_hiera_t", "sam2.1_hiera_t"),
        ("hiera_tiny", "sam2.1_hiera_t"), ("S", "sam2.1_hiera_s"), ("b+", "sam2.1_hiera_b+"),
        ("base_plus", "sam2.1_hiera_b+"), ("sam2.1_hiera_base_plus", "sam2.1_hiera_b+"),
        ("large", "sam2.1_hiera_l"), ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_l"),
        ("sam2_hiera_s", "sam2_hiera_s"),
    ],
)
def test_resolve_config_names(name: str, canonical: str) -> None:
    got, path = resolve_config(name)
    assert got == canonical
    assert path.is_file() and path.stem == canonical


def test_resolve_config_path(tmp_path: Path) -> None:
    src = shipped_configs()["sam2.1_hiera_t"]
    dst = tmp_path / "my_model.yaml"
    dst.write_text(src.read_text())
    assert resolve_config(dst) == ("my_model", dst)


def test_unknown_config_lists_valid_names() -> None:
    with pytest.raises(SAM2LoadError, match="unknown SAM2 config 'hiera_xl'") as e:
        build_sam("hiera_xl")
    for name in ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"):
        assert name in str(e.value)


def test_bad_image_size() -> None:
    with pytest.raises(SAM2LoadError, match="image_size=100"):
        build_sam("t", image_size=100)


def test_build_leaves_no_hydra_state_and_no_torchvision() -> None:
    # A fresh interpreter: importing/using sam2 through build_sam must not leave hydra's global
    # config module initialised, must not import torchvision, and must not move the global RNG.
    code = (
        "import sys, torch\n"
        "from hydra.core.global_hydra import GlobalHydra\n"
        "import sam_batch.model as m\n"
        "assert 'sam2' not in sys.modules, 'sam2 imported eagerly'\n"
        "torch.manual_seed(123); before = torch.random.get_rng_state()\n"
        "model = m.build_sam('t', image_size=128)\n"
        "assert 'sam2' in sys.modules\n"
        "assert not GlobalHydra.instance().is_initialized(), 'hydra global state leaked'\n"
        "assert 'torchvision' not in sys.modules, 'torchvision imported'\n"
        "assert torch.equal(before, torch.random.get_rng_state()), 'global RNG moved'\n"
        "print('ok', type(model).__name__, model.training)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok SAM2Base False"


def test_random_weights_deterministic_and_rng_untouched() -> None:
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    a = build_sam("t", seed=3, image_size=128)
    b = build_sam("t", seed=3, image_size=128)
    c = build_sam("t", seed=4, image_size=128)
    assert torch.equal(state, torch.random.get_rng_state())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["sam_mask_decoder.iou_token.weight"], sc["sam_mask_decoder.iou_token.weight"])


def test_image_prediction_overrides_and_size() -> None:
    m = tiny_model()
    assert m.image_size == TINY_SIZE
    assert m.sam_prompt_encoder.image_embedding_size == (TINY_SIZE // 16, TINY_SIZE // 16)
    md = m.sam_mask_decoder
    assert md.dynamic_multimask_via_stability is True
    assert md.dynamic_multimask_stability_delta == 0.05
    assert md.dynamic_multimask_stability_thresh == 0.98
    assert not m.training


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"model": build_sam("t", seed=11, image_size=128).state_dict()}, p)
    return p


def test_checkpoint_round_trip_and_fingerprint(tiny_ckpt: Path) -> None:
    m = build_sam(TINY_CONFIG, tiny_ckpt, seed=0, image_size=128)
    ref = torch.load(tiny_ckpt, weights_only=True)["model"]
    own = m.state_dict()
    assert set(own) == set(ref) and all(torch.equal(own[k], ref[k]) for k in ref)
    assert checkpoint_fingerprint(tiny_ckpt, "t") == "sha256:" + hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    assert checkpoint_fingerprint(None, "tiny", seed=5, image_size=128) == "random:sam2.1_hiera_t:5:128"
    assert checkpoint_fingerprint(None, "b+", seed=0) == "random:sam2.1_hiera_b+:0:1024"


def test_missing_checkpoint(tmp_path: Path) -> None:
    p = tmp_path / "sam2.1_hiera_base_plus.pt"
    with pytest.raises(SAM2LoadError, match=r"not found: .*sam2\.1_hiera_base_plus\.pt.*omit --sam2-checkpoint"):
        build_sam("t", p, image_size=128)


def test_non_checkpoint_file(tmp_path: Path) -> None:
    p = tmp_path / "notes.pt"
    p.write_text("this is not a checkpoint")
    with pytest.raises(SAM2LoadError, match=r"notes\.pt is not a readable torch checkpoint"):
        build_sam("t", p, image_size=128)


def test_checkpoint_without_model_key(tmp_path: Path, tiny_ckpt: Path) -> None:
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(tiny_ckpt, weights_only=True)["model"], bare)
    with pytest.raises(SAM2LoadError, match=r"bare state_dict.*\{'model': state_dict\}"):
        build_sam("t", bare, image_size=128)
    other = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], other)
    with pytest.raises(SAM2LoadError, match=r"holds list"):
        build_sam("t", other, image_size=128)


def test_key_mismatch_names_likely_config(tiny_ckpt: Path) -> None:
    # A hiera_t checkpoint loaded with the hiera_s config: the error counts the mismatch and
    # names the config whose key set/shapes the file matches.
    with pytest.raises(SAM2LoadError) as e:
        build_sam("s", tiny_ckpt, image_size=128)
    msg = str(e.value)
    assert "does not fit config 'sam2.1_hiera_s'" in msg
    assert "missing keys" in msg and "image_encoder.trunk.blocks." in msg
    assert "pass --sam2-config sam2.1_hiera_t" in msg


def test_key_mismatch_unknown_layout(tmp_path: Path, tiny_ckpt: Path) -> None:
    sd = torch.load(tiny_ckpt, weights_only=True)["model"]
    sd["extra.weight"] = torch.zeros(1)
    sd.pop("sam_mask_decoder.iou_token.weight")
    p = tmp_path / "edited.pt"
    torch.save({"model": sd}, p)
    with pytest.raises(SAM2LoadError, match=r"1 missing keys .*iou_token.*1 unexpected keys .*extra\.weight"):
        build_sam("t", p, image_size=128)
