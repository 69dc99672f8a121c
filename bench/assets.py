"""What a benchmark session shares, built on first use: the dataset, the SAM2 model and its
features, the segmenters (through ``sam_batch.factory``), the batched envs, the prototype-style
baseline envs and their measured rates."""

from __future__ import annotations

import functools
import time

import torch

from bench.measure import PeakMemory, sync
from bench.options import BenchOptions
from bench.summary import Results
from gpu_env.config import PROTOTYPE_ENV, EnvConfig
from gpu_env.env import ClickEnv
from sam_batch.config import SegmenterConfig
from sam_batch.factory import build_sam2_model, build_segmenter

SEGMENTERS = ("weightfree", "sam2")
SAM2_CONFIG = "sam2.1_hiera_b+"
"""SAM2.1 b+ with random weights (seed 0): the checkpoint's architecture and cost."""


def load_bench_dataset(count: int, split: str = "train"):
    """``count`` synthetic polyp images at 256 (the project's embedded dataset)."""
    from gpu_env.datasets import load_dataset

    return load_dataset("synthetic", split=split, size=256, count=count)


def segmenter_config(name: str) -> SegmenterConfig:
    """The benchmarks' config of segmenter ``name`` (one of ``SEGMENTERS``), for
    ``sam_batch.factory``: SAM2 is ``SAM2_CONFIG`` with random weights of seed 0."""
    if name not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {name!r}; expected one of {SEGMENTERS}")
    return SegmenterConfig(kind=name, sam2_config=SAM2_CONFIG, sam2_checkpoint=None, sam2_seed=0)


class BenchAssets:
    """Everything a session shares, each built on first use: the dataset, SAM2 b+ (random
    weights, same architecture and cost as the checkpoint) and its features from the real image
    encoder (encoded once), the segmenters, the batched envs and the baseline envs."""

    def __init__(self, opts: BenchOptions, results: Results) -> None:
        self.opts, self.results = opts, results
        self._segmenters: dict[tuple[str, bool], object] = {}
        self._envs: dict[tuple[str, bool, EnvConfig | None], ClickEnv] = {}

    @functools.cached_property
    def data(self):
        t0 = time.perf_counter()
        data = load_bench_dataset(self.opts.images)
        self.results.setup["dataset_s"] = time.perf_counter() - t0
        return data

    @functools.cached_property
    def sam2_model(self) -> torch.nn.Module:
        return build_sam2_model(segmenter_config("sam2"), self.opts.device)

    @functools.cached_property
    def sam2_features(self):
        from sam_batch.encoder import encode_images

        images = [self.data.load_original(i)[0] for i in range(len(self.data))]
        model = self.sam2_model
        t0 = time.perf_counter()
        feats = encode_images(model, images, batch_size=4, dtype=self.opts.feature_dtype)
        sync(self.opts.device)
        self.results.setup["encode_s_per_image"] = (time.perf_counter() - t0) / len(images)
        return feats

    def segmenter(self, name: str, compiled: bool = False):
        """The named segmenter over the benchmark images (``compiled``: torch.compile'd decode),
        built by ``sam_batch.factory.build_segmenter``; SAM2 over the session's model and its
        features (encoded once)."""
        key = (name, compiled)
        if key not in self._segmenters:
            cfg = segmenter_config(name)
            sam2 = cfg.kind == "sam2"
            seg = build_segmenter(cfg, self.data.images, self.opts.device,
                                  model=self.sam2_model if sam2 else None,
                                  features=self.sam2_features if sam2 else None,
                                  max_chunk=self.opts.decode_chunk, compile=compiled and sam2)
            if compiled and not sam2:  # the geodesic decode has no compile switch of its own
                seg.decode = torch.compile(seg.decode, fullgraph=True, dynamic=False,
                                           mode=self.opts.compile_mode)
            self._segmenters[key] = seg
        return self._segmenters[key]

    def env(self, name: str, config: EnvConfig = PROTOTYPE_ENV, compiled: bool = False) -> ClickEnv:
        """The batched env of a segmenter (``compiled``: over its torch.compile'd decode); other
        configs share the precomputed constants when ``ClickEnv.with_config`` allows."""
        base_key = (name, compiled, None)
        if base_key not in self._envs:
            self._envs[base_key] = ClickEnv(self.segmenter(name, compiled), self.data, config)
        key = (name, compiled, config)
        if key not in self._envs:
            try:
                self._envs[key] = self._envs[base_key].with_config(config)
            except ValueError:
                self._envs[key] = ClickEnv(self.segmenter(name, compiled), self.data, config)
        return self._envs[key]

    def baseline_env(self, name: str, config: EnvConfig = PROTOTYPE_ENV):
        """The prototype-style env over the same images (and, for SAM2, the same weights and
        features) as the batched env."""
        from references.prototype_baseline import (EpisodeData, PrototypeClickEnv, SAM2Predictor,
                                              WeightFreePredictor)

        if name == "sam2":
            predictor = SAM2Predictor(self.sam2_model, self.sam2_features)
        else:
            predictor = WeightFreePredictor(self.segmenter("weightfree"))
        data = EpisodeData.from_dataset(self.data, predictor.mask_size, config.obs_size)
        return PrototypeClickEnv(predictor, data, config, seed=0)


class BaselineRates:
    """The prototype-style baseline's env steps/s per segmenter, measured once per session on
    the benchmark device (``bench_env.test_prototype_baseline`` stores its measurement here;
    a batched case that runs first triggers the same measurement itself)."""

    def __init__(self, assets: BenchAssets) -> None:
        self.assets = assets
        self.results = assets.results

    def episodes(self, name: str) -> tuple[int, int]:
        """``(warm-up, timed)`` episodes: seconds on a CPU, ~1 s of steady state on a GPU."""
        if self.assets.opts.device.type == "cuda":
            return 2, 20
        return (1, 2) if name == "sam2" else (2, 20)

    def store(self, name: str, entry: dict) -> None:
        self.results.baseline[name] = entry

    def rate(self, name: str) -> float:
        if name not in self.results.baseline:
            from references.prototype_baseline import run_episodes

            env = self.assets.baseline_env(name)
            warm, timed = self.episodes(name)
            run_episodes(env, warm, seed=1)
            with PeakMemory(self.assets.opts.device) as mem:
                t0 = time.perf_counter()
                steps = run_episodes(env, timed, seed=2)
                seconds = time.perf_counter() - t0
            self.store(name, {"segmenter": name, "steps_per_s": steps / seconds,
                              "ms_per_step": 1e3 * seconds / steps, **mem.result})
        return self.results.baseline[name]["steps_per_s"]
