"""FLOPs and memory traffic of one env step, and the GPU limits they imply.

* **FLOPs** come from ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions,
  attention; elementwise ops count 0). Each module's *self* FLOPs (its total minus its
  children's) are grouped by name prefix, e.g. SAM2's ``mask_decoder.transformer`` vs
  ``mask_decoder.output_upscaling``. SAM2.1 b+ at 1024: ~3.6 GFLOP per decode.
* **Bytes** come from ``Traffic``, a ``TorchDispatchMode`` that adds up, per aten op, the bytes
  of its tensor inputs (read) and outputs (written); view ops move nothing. That is what an
  unfused eager execution moves through memory (caches hide some of it; a fused kernel moves
  far less). It also tracks the peak of live bytes allocated inside the block (each output
  storage is counted until the last Python tensor on it dies): an estimate of the block's
  transient memory that works on the CPU, where torch keeps no allocator statistics.
* **Limits**: ``roofline`` turns FLOPs and bytes per item into the compute- and memory-bound
  rates of a device. H200: 790 TFLOP/s bf16 dense (measured on large matmuls),
  4.8 TB/s HBM3e (spec). One b+ decode is then bounded near 220k decodes/s by compute, and an
  eager decode moving ~300 MiB near 15k/s by memory.

``cost_report`` measures all of it for the env's step on small inputs (FLOPs and bytes per row
do not depend on feature values, so random features stand in for encoded ones).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

GPU_PEAKS = {
    # name fragment: (dense bf16 FLOP/s, memory bytes/s)
    "H200": (790e12, 4.8e12),  # bf16: measured dense matmul; HBM3e spec
    "H100": (790e12, 3.35e12),  # SXM; same tensor cores as H200, HBM3
    "A100": (312e12, 2.0e12),  # spec sheet (80 GB SXM)
}
DEFAULT_PEAK = GPU_PEAKS["H200"]

# SAM2 decoder groups (module-name fragments, first match wins) for the FLOP breakdown.
SAM2_GROUPS = (("transformer", "mask_decoder.transformer"),
               ("upsampling", "mask_decoder.output_upscaling"),
               ("prompt_encoder", "prompt_encoder"),
               ("heads", "mask_decoder"))


def peaks_for(device_name: str) -> tuple[float, float]:
    """``(bf16 FLOP/s, bytes/s)`` of a GPU named like ``torch.cuda.get_device_name``."""
    for key, value in GPU_PEAKS.items():
        if key.lower() in device_name.lower():
            return value
    return DEFAULT_PEAK


# ---------------------------------------------------------------------------------- FLOPs
@dataclass
class FlopReport:
    total: int
    """FLOPs of the whole call."""
    by_group: dict[str, int]
    """Self FLOPs summed per group (``other`` = outside every group's modules)."""


def _self_flops(counts: dict[str, dict]) -> dict[str, int]:
    """Module name -> FLOPs not attributed to a deeper module (``FlopCounterMode`` totals are
    inclusive, and a module called through a functional path may lack its parents' entries)."""
    totals = {k: sum(v.values()) for k, v in counts.items() if k != "Global"}
    own = dict(totals)
    for name, flops in totals.items():
        parents = [p for p in totals if name.startswith(p + ".")]
        if parents:
            own[max(parents, key=len)] -= flops
    return own


def count_flops(fn: Callable[[], object], groups: tuple[tuple[str, str], ...] = ()) -> FlopReport:
    """FLOPs of ``fn()`` (run once, under no_grad by the caller if wanted)."""
    counter = FlopCounterMode(display=False, depth=None)
    with counter:
        fn()
    by_group: dict[str, int] = {}
    for name, flops in _self_flops(counter.get_flop_counts()).items():
        group = next((g for g, frag in groups if frag in name), "other")
        by_group[group] = by_group.get(group, 0) + flops
    return FlopReport(total=int(counter.get_total_flops()),
                      by_group={k: v for k, v in by_group.items() if v})


# ---------------------------------------------------------------------------------- bytes
def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class Traffic(TorchDispatchMode):
    """Bytes read/written by every aten op inside the block, and the peak of live bytes
    allocated inside it (see the module docstring for what these numbers mean)."""

    def __init__(self) -> None:
        super().__init__()
        self.read = 0
        self.written = 0
        self.ops = 0
        self.live = 0
        self.peak_live = 0
        self._storages: dict[int, list[int]] = {}  # data_ptr -> [nbytes, python refs]

    def _release(self, ptr: int) -> None:
        entry = self._storages.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._storages[ptr]

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        ptr, size = storage.data_ptr(), storage.nbytes()
        if ptr == 0 or size == 0:
            return
        entry = self._storages.get(ptr)
        if entry is None:
            entry = self._storages[ptr] = [size, 0]
            self.live += size
            self.peak_live = max(self.peak_live, self.live)
        entry[1] += 1
        weakref.finalize(t, self._release, ptr)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not getattr(func, "is_view", False):
            ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            self.read += sum(_nbytes(t) for t in ins)
            self.written += sum(_nbytes(t) for t in outs)
        for t in outs:
            if t.device.type != "meta":
                ptr = t.untyped_storage().data_ptr()
                if ptr in self._storages or not getattr(func, "is_view", False):
                    self._track(t)
        return out


def count_traffic(fn: Callable[[], object]) -> Traffic:
    """Run ``fn()`` under ``Traffic`` and return the counter."""
    counter = Traffic()
    with counter:
        fn()
    return counter


# ---------------------------------------------------------------------------------- limits
def roofline(flops_per_item: float, bytes_per_item: float,
             peak: tuple[float, float] = DEFAULT_PEAK) -> dict[str, float]:
    """Items/s allowed by compute and by memory bandwidth on a device of ``peak`` =
    ``(FLOP/s, bytes/s)``, and which bound binds."""
    flop_s, byte_s = peak
    compute = flop_s / flops_per_item if flops_per_item else float("inf")
    memory = byte_s / bytes_per_item if bytes_per_item else float("inf")
    return {"compute_bound_per_s": compute, "memory_bound_per_s": memory,
            "bound_per_s": min(compute, memory),
            "binding": "compute" if compute <= memory else "memory",
            "arithmetic_intensity": flops_per_item / bytes_per_item if bytes_per_item else float("inf")}


def achieved_fraction(items_per_s: float, flops_per_item: float,
                      peak: tuple[float, float] = DEFAULT_PEAK) -> float:
    """Achieved FLOP/s as a fraction of the device's bf16 peak."""
    return items_per_s * flops_per_item / peak[0]


# ---------------------------------------------------------------------------------- the env step
@dataclass
class StepCost:
    """Per-row costs of one env step (``step_autoreset``) at a probe batch size."""

    segmenter: str
    decode_flops: float
    decode_flops_by_group: dict[str, float]
    step_flops: float
    step_bytes_eager: float
    """Bytes read + written per row by the eager step (every aten op's tensors)."""
    step_bytes_minimal: float
    """Bytes a fused step must touch per row: the state read and written, the observation
    written, the row's GT and features read."""
    decode_bytes_eager: float
    step_peak_live_bytes: float
    """Peak transient bytes per row allocated inside the step (``Traffic.peak_live``)."""
    probe_batch: int

    def to_dict(self) -> dict:
        return asdict(self)


def _state_bytes(td) -> int:
    return sum(_nbytes(t) for t in td.values(include_nested=True, leaves_only=True))


def feature_bytes_per_image(segmenter) -> int:
    """Device bytes of one image's cached features (0 for the weight-free segmenter, whose
    per-image step costs are counted with the env's constants)."""
    feats = getattr(segmenter, "features", None)
    if feats is None:
        return 0
    return sum(_nbytes(t[0]) for t in feats)


@torch.no_grad()
def step_cost(env, name: str, batch: int = 2, seed: int = 0) -> StepCost:
    """Measure the per-row FLOPs and bytes of ``env``'s step and decode at ``batch`` rows."""
    state = env.initial_state(batch, seed)
    g = torch.Generator().manual_seed(seed)
    action = torch.randint(0, env.num_actions, (batch,), generator=g).to(env.device)
    state, _, _ = env.step_autoreset(state, action)  # a mid-episode state (two clicks)
    ones = torch.ones(batch, dtype=torch.bool, device=env.device)

    def decode():
        return env.segmenter.decode(state["image_id"], state["points"], state["labels"],
                                    mask_input=state["logits"], has_mask_input=ones, multimask=False)

    dec = count_flops(decode, SAM2_GROUPS)
    step = count_flops(lambda: env.step_autoreset(state, action))
    dec_traffic = count_traffic(decode)
    step_traffic = count_traffic(lambda: env.step_autoreset(state, action))
    obs = env.observe(state)
    minimal = (2 * _state_bytes(state) + _state_bytes(obs)) / batch
    minimal += _nbytes(env.gt[0]) + feature_bytes_per_image(env.segmenter)
    return StepCost(
        segmenter=name,
        decode_flops=dec.total / batch,
        decode_flops_by_group={k: v / batch for k, v in dec.by_group.items()},
        step_flops=step.total / batch,
        step_bytes_eager=(step_traffic.read + step_traffic.written) / batch,
        step_bytes_minimal=minimal,
        decode_bytes_eager=(dec_traffic.read + dec_traffic.written) / batch,
        step_peak_live_bytes=step_traffic.peak_live / batch,
        probe_batch=batch,
    )


def policy_flops(policy: torch.nn.Module, observation: dict[str, torch.Tensor]) -> float:
    """Forward FLOPs per row of a policy network on an observation batch (keyword inputs)."""
    batch = next(iter(observation.values())).shape[0]
    with torch.no_grad():
        report = count_flops(lambda: policy(**observation))
    return report.total / batch


def cost_report(device: torch.device | str = "cpu", batch: int = 2, images: int = 2) -> dict:
    """FLOPs and bytes per env step for both segmenters (SAM2.1 b+ with random weights and
    random fp16 features; the weight-free segmenter), the default spatial policy's forward
    FLOPs, and the roofline rates on an H200. Takes seconds on a CPU."""
    from gpu_env.config import PROTOTYPE_ENV
    from gpu_env.env import ClickEnv
    from ppo.config import TrainConfig
    from ppo.policies import build_policy
    from sam_batch.encoder import SAM2Features, feature_shapes
    from sam_batch.factory import build_sam2_model, build_segmenter

    from bench.assets import SEGMENTERS, load_bench_dataset, segmenter_config

    device = torch.device(device)
    data = load_bench_dataset(images)
    model = build_sam2_model(segmenter_config("sam2"), device)
    g = torch.Generator().manual_seed(0)
    feats = SAM2Features(*(torch.randn(images, *s, generator=g).to(device, torch.float16)
                           for s in feature_shapes(model)))
    segmenters = {name: build_segmenter(segmenter_config(name), data.images, device, model=model,
                                        features=feats)
                  for name in SEGMENTERS}
    out: dict = {"steps": {}, "roofline_h200": {}}
    for name, seg in segmenters.items():
        env = ClickEnv(seg, data, PROTOTYPE_ENV)
        cost = step_cost(env, name, batch)
        out["steps"][name] = cost.to_dict()
        out["roofline_h200"][name] = {
            "decode_eager": roofline(cost.decode_flops, cost.decode_bytes_eager),
            "step_eager": roofline(cost.step_flops, cost.step_bytes_eager),
            "step_minimal_bytes": roofline(cost.step_flops, cost.step_bytes_minimal),
        }
    cfg = TrainConfig().replace(device=str(device))
    env = ClickEnv(segmenters["weightfree"], data, cfg.env)
    policy = build_policy(cfg.policy, cfg.env, cfg.run.seed, device)
    if getattr(policy, "prior", None) is not None:  # the training policy observes its prior's maps
        from ppo.prior import attach_prior

        attach_prior(policy, env)
    obs = env.observe(env.initial_state(batch, 0))
    out["policy"] = {"name": cfg.policy.kind, "forward_flops_per_row": policy_flops(
        policy, {k: obs[k] for k in policy.in_keys})}
    out["peaks"] = {"bf16_flop_s": DEFAULT_PEAK[0], "bytes_s": DEFAULT_PEAK[1], "device": "H200"}
    return out
