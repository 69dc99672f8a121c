"""Building a SAM2 model from a shipped config and a local checkpoint (or seeded random weights).

``sam2`` is imported lazily, inside functions only: its ``__init__`` initialises hydra's global
config module as an import side effect. :func:`build_sam` loads the yaml with OmegaConf,
instantiates it with ``hydra.utils.instantiate`` (applying the same image-prediction overrides
as ``sam2.build_sam.build_sam2``) and clears the global hydra state again if importing ``sam2``
was what set it. ``sam2.build_sam`` itself is not used (it needs that global state);
``sam2.sam2_image_predictor`` is never imported (it pulls torchvision).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import pickle
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "SAM2LoadError",
    "build_sam",
    "checkpoint_fingerprint",
    "resolve_config",
    "shipped_configs",
]

# The overrides ``sam2.build_sam.build_sam2(apply_postprocessing=True)`` applies for image
# prediction: fall back to the best multimask output when the single mask is unstable.
_IMAGE_PREDICTION_OVERRIDES: dict[str, Any] = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}

# Short names → canonical SAM2.1 config stems.
_SIZE_ALIASES: dict[str, str] = {
    "t": "t", "tiny": "t",
    "s": "s", "small": "s",
    "b+": "b+", "b": "b+", "base+": "b+", "base_plus": "b+", "base-plus": "b+", "bplus": "b+",
    "l": "l", "large": "l",
}
_SIZE_WORDS = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}


class SAM2LoadError(ValueError):
    """A SAM2 config or checkpoint could not be resolved or loaded (the message says why and
    what to do)."""


# --------------------------------------------------------------------------------------------
# Config resolution
# --------------------------------------------------------------------------------------------


def _sam2_package_dir() -> Path:
    # find_spec locates the package without executing sam2/__init__ (no hydra side effect).
    spec = importlib.util.find_spec("sam2")
    if spec is None or not spec.submodule_search_locations:
        raise SAM2LoadError("the `sam2` package is not installed; install sam2==1.1.0")
    return Path(list(spec.submodule_search_locations)[0])


def shipped_configs() -> dict[str, Path]:
    """Canonical name (yaml stem, e.g. ``"sam2.1_hiera_b+"``) → path, for every model config
    shipped in the installed ``sam2`` package (SAM2.1 and SAM2.0)."""
    root = _sam2_package_dir() / "configs"
    out: dict[str, Path] = {}
    for sub in ("sam2.1", "sam2"):
        for p in sorted((root / sub).glob("*.yaml")):
            out[p.stem] = p
    return out


def resolve_config(config: str | Path) -> tuple[str, Path]:
    """``(canonical name, yaml path)`` for a short name (``"t"``, ``"tiny"``, ``"b+"``,
    ``"base_plus"``, ``"sam2.1_hiera_l"``…), a shipped config's stem or package-relative path
    (``"configs/sam2.1/sam2.1_hiera_t.yaml"``), or a yaml file path."""
    shipped = shipped_configs()
    raw = str(config).strip()
    p = Path(raw)
    if p.suffix == ".yaml" and p.is_file():
        return p.stem, p
    if p.suffix == ".yaml" and (_sam2_package_dir() / p).is_file():
        return p.stem, _sam2_package_dir() / p
    key = p.stem if p.suffix == ".yaml" else raw
    if key in shipped:
        return key, shipped[key]
    low = key.lower()
    m = re.fullmatch(r"(?:sam2\.1[_-])?(?:hiera[_-])?(.+)", low)
    size = _SIZE_ALIASES.get(m.group(1)) if m else None
    if size is not None:
        name = f"sam2.1_hiera_{size}"
        if name in shipped:
            return name, shipped[name]
    valid = ", ".join(sorted(shipped))
    short = ", ".join(f"{k} ({v})" for k, v in _SIZE_WORDS.items())
    raise SAM2LoadError(
        f"unknown SAM2 config {raw!r}. Valid names: {valid}; short names for SAM2.1: {short}; "
        "or the path of a SAM2 model yaml file."
    )


# --------------------------------------------------------------------------------------------
# Hydra / sam2 import guard
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_global_hydra() -> Iterator[None]:
    """Run a block that may import ``sam2`` (whose ``__init__`` initialises hydra globally),
    and clear hydra's global state afterwards if it was not initialised before."""
    from hydra.core.global_hydra import GlobalHydra

    was_initialised = GlobalHydra.instance().is_initialized()
    try:
        yield
    finally:
        if not was_initialised and GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()


def _load_model_cfg(path: Path, image_size: int | None) -> Any:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    if "model" not in cfg:
        raise SAM2LoadError(f"{path} has no top-level `model:` section; not a SAM2 model config")
    extra = cfg.model.get("sam_mask_decoder_extra_args") or {}
    extra = {**OmegaConf.to_container(OmegaConf.create(extra)), **_IMAGE_PREDICTION_OVERRIDES}
    OmegaConf.update(cfg, "model.sam_mask_decoder_extra_args", extra, force_add=True)
    if image_size is not None:
        OmegaConf.update(cfg, "model.image_size", int(image_size), force_add=True)
    OmegaConf.resolve(cfg)
    return cfg


def _check_image_size(image_size: int | None) -> None:
    # Hiera tiles its 8x8 window position embedding over the stride-4 grid and pools three
    # times by 2, so the side must be a multiple of 32 (and the stride-16 grid non-empty).
    if image_size is None:
        return
    if not isinstance(image_size, int) or image_size < 64 or image_size % 32 != 0:
        raise SAM2LoadError(
            f"image_size={image_size!r} is not supported: Hiera needs a multiple of 32, >= 64 "
            "(e.g. 128, 256, 512, 1024). Omit --sam2-image-size to keep the config's 1024."
        )


# --------------------------------------------------------------------------------------------
# Checkpoint
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signature:
    """Shape facts that tell the shipped SAM2 configs apart."""

    embed_dim: int
    depth: int
    window0: int
    bkg: tuple[int, int]
    v21: bool  # SAM2.1 checkpoints carry `no_obj_embed_spatial`


def _config_signature(path: Path) -> _Signature:
    import inspect

    from omegaconf import OmegaConf

    with _no_global_hydra():
        from sam2.modeling.backbones.hieradet import Hiera

    defaults = {k: v.default for k, v in inspect.signature(Hiera).parameters.items()}
    trunk = OmegaConf.load(path).model.image_encoder.trunk
    model = OmegaConf.load(path).model
    stages = trunk.get("stages", defaults["stages"])
    window_spec = trunk.get("window_spec", defaults["window_spec"])
    bkg = trunk.get("window_pos_embed_bkg_spatial_size", defaults["window_pos_embed_bkg_spatial_size"])
    return _Signature(
        embed_dim=int(trunk.get("embed_dim", defaults["embed_dim"])),
        depth=int(sum(stages)),
        window0=int(window_spec[0]),
        bkg=(int(bkg[0]), int(bkg[1])),
        v21=bool(model.get("no_obj_embed_spatial", False)),
    )


def _state_dict_signature(sd: Mapping[str, Any]) -> _Signature | None:
    try:
        pe = sd["image_encoder.trunk.pos_embed"].shape
        pw = sd["image_encoder.trunk.pos_embed_window"].shape
    except (KeyError, AttributeError):
        return None
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    return _Signature(
        embed_dim=int(pe[1]), depth=len(blocks), window0=int(pw[-1]), bkg=(int(pe[2]), int(pe[3])),
        v21="no_obj_embed_spatial" in sd,
    )


def _likely_configs(sd: Mapping[str, Any]) -> list[str]:
    sig = _state_dict_signature(sd)
    if sig is None:
        return []
    return [name for name, p in shipped_configs().items() if _config_signature(p) == sig]


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise SAM2LoadError(
            f"SAM2 checkpoint not found: {path}. Download the official file (e.g. "
            "sam2.1_hiera_base_plus.pt) and pass its local path to --sam2-checkpoint, or omit "
            "--sam2-checkpoint for random weights (tests and benchmarks only)."
        )
    if not path.is_file():
        raise SAM2LoadError(f"SAM2 checkpoint path {path} is not a file; pass the .pt file "
                            "itself to --sam2-checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler refused an object
        raise SAM2LoadError(
            f"{path} holds objects other than tensors and plain data ({_load_reason(e)}); such "
            "a file is never unpickled, as that could run code from it. Pass the official SAM2 "
            ".pt file (a dict {'model': state_dict} of tensors) to --sam2-checkpoint."
        ) from None
    except Exception as e:  # torch raises several types (zip, EOF, a text file's bytes)
        raise SAM2LoadError(
            f"{path} is not a readable torch checkpoint ({type(e).__name__}: {_load_reason(e)}); "
            "it may be truncated or another kind of file. Pass the official SAM2 .pt file (a "
            "dict {'model': state_dict} of tensors) to --sam2-checkpoint."
        ) from None
    if not isinstance(obj, dict) or "model" not in obj or not isinstance(obj["model"], Mapping):
        what = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
        hint = (
            " It looks like a bare state_dict: save it as {'model': state_dict}."
            if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())
            else ""
        )
        raise SAM2LoadError(
            f"{path} holds {what}, not the official SAM2 checkpoint format {{'model': state_dict}}.{hint}"
        )
    return dict(obj["model"])


def _load_reason(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one line, without PyTorch's advice on
    loading the file unsafely (``weights_only=False``, safe globals): a checkpoint of unknown
    origin must not get that advice."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
        text = text.split("Please use", 1)[0].split("Check the documentation", 1)[0]
    elif "weights_only" in text:
        return "it holds objects other than tensors and plain data"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    first = " ".join(lines[0].split()).rstrip(". ") if lines else type(err).__name__
    return first[:200]


def _check_keys(model: torch.nn.Module, sd: Mapping[str, Any], path: Path, config_name: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shape_bad = sorted(
        k for k in set(own) & set(sd)
        if not isinstance(sd[k], torch.Tensor) or tuple(sd[k].shape) != tuple(own[k].shape)
    )
    if not (missing or unexpected or shape_bad):
        return
    likely = _likely_configs(sd)
    guess = (
        f" Its key set and shapes match the shipped config(s) {', '.join(likely)}: pass "
        f"--sam2-config {likely[0]}."
        if likely else " Its key set/shapes match none of the shipped SAM2 configs."
    )
    raise SAM2LoadError(
        f"checkpoint {path} does not fit config {config_name!r}: {len(missing)} missing keys "
        f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}), "
        f"{len(shape_bad)} shape mismatches (e.g. {shape_bad[:3]}).{guess}"
    )


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def build_sam(
    config: str | Path = "sam2.1_hiera_b+",
    checkpoint: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    image_size: int | None = None,
) -> torch.nn.Module:
    """A ``sam2.modeling.sam2_base.SAM2Base`` in eval mode, configured as ``build_sam2`` does for
    image prediction (dynamic multimask via stability on).

    Args:
      config: short name (``"t"``, ``"tiny"``, ``"b+"``, ``"base_plus"``, ``"sam2.1_hiera_l"``…)
        or a yaml path; see :func:`resolve_config`.
      checkpoint: official ``{"model": state_dict}`` file, strict key match; ``None`` keeps the
        random initialisation (drawn from ``seed`` without touching the global RNG).
      device: where the model is moved.
      seed: seed of the random initialisation (also used, and irrelevant, with a checkpoint).
      image_size: optional override of the 1024 input side (multiple of 32), for small tests.
    """
    config_name, path = resolve_config(config)
    _check_image_size(image_size)
    ckpt_path = Path(checkpoint).expanduser() if checkpoint is not None else None
    state = _read_checkpoint(ckpt_path) if ckpt_path is not None else None

    cfg = _load_model_cfg(path, image_size)
    from hydra.utils import instantiate

    with _no_global_hydra(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = instantiate(cfg.model, _recursive_=True)

    if state is not None:
        _check_keys(model, state, ckpt_path, config_name)
        model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def checkpoint_fingerprint(
    path: str | Path | None, config: str | Path, seed: int = 0, image_size: int | None = None
) -> str:
    """Identity of a model's weights, stored in feature caches: ``"sha256:<hex>"`` of the
    checkpoint file, or ``"random:<config>:<seed>:<image_size>"`` for random weights."""
    config_name, cfg_path = resolve_config(config)
    if path is None:
        if image_size is None:
            from omegaconf import OmegaConf

            image_size = int(OmegaConf.load(cfg_path).model.image_size)
        return f"random:{config_name}:{seed}:{image_size}"
    p = Path(path).expanduser()
    if not p.is_file():
        raise SAM2LoadError(f"cannot fingerprint checkpoint {p}: no such file")
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"
