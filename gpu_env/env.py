"""The batched click environment, raw fast path: pure functions over an explicit state.

``ClickEnv`` holds only constants (segmenter, device-resident GT and images, per-image initial
episode data); the per-episode state is a ``TensorDict`` with ``batch_size=[B]`` passed in and
returned, gymnax-style. Nothing here reads a tensor value on the host: resets are masked
selects, image draws are gathers keyed by per-row counter-based RNG (``gpu_env.rng``), and the
segmenter is called once per step for the whole batch.

The state's keys, shapes, dtypes, initial values and meanings are declared once, in
``gpu_env.state_spec`` (``STATE``); code names them by its constants (``state[DICE]``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import Tensor

from gpu_env import observation as O
from gpu_env import oracle, rng
from gpu_env.obs_spec import ACTION_MASK, GT_ERROR, IMAGE_EMBEDDING, MASK_PRIOR, OBS, PRIOR_CLICK, SAM_PROB
from gpu_env.config import EnvConfig
from gpu_env.state_spec import (BOUNDARY, CLICKED, DICE, EPISODE, HEAT, IMAGE_ID, KEY, LABELS,
                                 LOGITS, MASK, NUM_CLICKS, POINTS, STEP, empty_state)
from gpu_env.datasets.base import SegDataset
from gpu_env.datasets.io import resize_images, resize_masks
from gpu_env.metrics import dice as dice_score
from gpu_env.prior_click import prior_click_distance
from gpu_env.row_chunks import by_rows, rows_per_pass
from gpu_env.reward import boundary_gt_terms, boundary_score, step_reward
from gpu_env import actions
from sam_batch.segmenter import Segmenter, points_from_pixels


class ClickEnv:
    """Constants of a batched click environment and the pure reset/step/observe functions.

    Args:
      segmenter: the batched SAM2 decoder or the weight-free stand-in; its images must be the
        dataset's images in the same order.
      dataset: images and GT masks (moved to the segmenter's device).
      config: episode semantics and observed keys (docs/design.md); the default is the
        training run's (``EnvConfig()``), whose ``mask_prior`` key needs ``set_mask_prior``.
      image_pool: optional subset of dataset indices that resets draw from (default: all).
      init_chunk: batch size used to precompute the per-image initial episode.
      row_chunk: ``step``/``step_autoreset``/``observe``/``reset`` process at most this many rows
        at a time and concatenate (rows are independent: the same result bitwise; tested). None:
        ``gpu_env.row_chunks.rows_per_pass`` decides at each call (32 on a CPU while the process
        returns freed memory to the OS, where whole-batch temporaries would be faulted in afresh
        every step; the whole batch otherwise). A multiple of the segmenter's CPU chunk (16/4).
    """

    def __init__(self, segmenter: Segmenter, dataset: SegDataset, config: EnvConfig = EnvConfig(),
                 *, image_pool: Tensor | None = None, init_chunk: int = 256,
                 row_chunk: int | None = None):
        if segmenter.num_images != len(dataset):
            raise ValueError(
                f"segmenter holds {segmenter.num_images} images but the dataset has "
                f"{len(dataset)}: build the segmenter (or feature cache) from this dataset."
            )
        if segmenter.mask_size % config.grid_size != 0:
            raise ValueError(
                f"grid_size={config.grid_size} must divide the segmenter's mask size "
                f"{segmenter.mask_size}."
            )
        self.segmenter = segmenter
        self.config = config
        self.device = torch.device(segmenter.device)
        if row_chunk is not None and row_chunk < 1:
            raise ValueError(f"row_chunk={row_chunk} must be >= 1 (or None for the device default)")
        self._row_chunk = row_chunk
        self.num_images = len(dataset)
        self.mask_size = M = segmenter.mask_size
        self.input_size = segmenter.input_size
        dev = self.device
        self.gt = resize_masks(dataset.masks.to(dev).bool(), M)  # [N, M, M]
        self.rgb = resize_images(dataset.images.to(dev), config.obs_size)  # [N, 3, S, S]
        pool = torch.arange(self.num_images, device=dev) if image_pool is None else image_pool
        self.image_pool = pool.to(dev, torch.int64)
        # GT-only halves of the boundary metric, once per image (not once per step).
        self.gt_terms = boundary_gt_terms(self.gt, config)
        self._precompute_initial(init_chunk)
        self.mask_prior: Tensor | None = None  # [N, 1, S, S], see set_mask_prior

    @property
    def row_chunk(self) -> int | None:
        """Rows per pass now (the class docstring's ``row_chunk``)."""
        return rows_per_pass(self._row_chunk, self.device)

    def set_mask_prior(self, probs: Tensor) -> None:
        """Install the per-image mask prior ``probs [N, 1, S, S]`` (probabilities in [0, 1], one
        map per dataset image, computed from the image alone) observed under ``mask_prior``.
        Views made by ``with_config`` before this call keep the maps they had."""
        N, S = self.num_images, self.config.obs_size
        if not isinstance(probs, Tensor) or tuple(probs.shape) != (N, 1, S, S):
            got = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
            raise ValueError(f"mask prior must be a [{N}, 1, {S}, {S}] tensor (one map per image "
                             f"at the observation size), got {got}.")
        self.mask_prior = probs.to(self.device, torch.float32)

    # ------------------------------------------------------------------ constants
    def _precompute_initial(self, chunk: int) -> None:
        """The first click (oracle on GT) and its decode depend only on the image, so each is
        computed once here; a reset is then a gather, never a decode."""
        M, G = self.mask_size, self.config.grid_size
        click = oracle.first_click_in_boxes(self.gt)  # = first_click(gt), a fraction of the work
        self.first_point = points_from_pixels(click.rows, click.cols, M, self.input_size)
        self.first_cell = (click.rows // (M // G)) * G + click.cols // (M // G)
        logits, dice, boundary = [], [], []
        for lo in range(0, self.num_images, chunk):
            ids = torch.arange(lo, min(lo + chunk, self.num_images), device=self.device)
            out = self.segmenter.decode(
                ids, self.first_point[ids][:, None], torch.ones_like(ids)[:, None], multimask=True
            )
            lg = out.logits.to(torch.float32)
            mask = lg[:, 0] > 0
            logits.append(lg)
            dice.append(dice_score(mask, self.gt[ids]))
            boundary.append(boundary_score(mask, self.gt[ids], self.config,
                                           tuple(t[ids] for t in self.gt_terms)))
        self.init_logits = torch.cat(logits)
        self.init_mask = self.init_logits[:, 0] > 0  # [N, M, M]
        self.init_dice = torch.cat(dice)
        self.init_boundary = torch.cat(boundary)
        # The first click's heatmaps, once per image: a reset gathers them (the same values
        # as adding the click to empty maps, which the test reference does; parity-tested).
        S, N = self.config.obs_size, self.num_images
        self.init_heat = O.add_click(
            torch.zeros(N, 2, S, S, device=self.device), self.first_point,
            torch.ones(N, dtype=torch.int64, device=self.device),
            torch.ones(N, dtype=torch.bool, device=self.device), self.input_size,
            self.config.heatmap_sigma)

    def with_config(self, config: EnvConfig) -> "ClickEnv":
        """A view of this env with another ``max_clicks``/``target_dice`` (sharing every
        precomputed constant); other fields must match, since the constants depend on them."""
        fixed = ("grid_size", "obs_size", "boundary_metric", "boundary_tolerance")
        for name in fixed:
            if getattr(config, name) != getattr(self.config, name):
                raise ValueError(f"with_config cannot change {name}; build a new ClickEnv.")
        other = copy.copy(self)
        other.config = config
        return other

    @property
    def num_actions(self) -> int:
        return self.config.num_actions

    # ------------------------------------------------------------------ state
    def initial_state(self, batch_size: int, seed: int = 0) -> TensorDict:
        """A state of ``batch_size`` freshly reset rows; row ``i``'s draws depend only on
        ``(seed, i)`` and its own history."""
        cfg = self.config
        state = empty_state(batch_size, max_points=cfg.max_points, mask_size=self.mask_size,
                            obs_size=cfg.obs_size, grid_size=cfg.grid_size, device=self.device)
        state[KEY] = rng.row_keys(seed, torch.arange(batch_size, device=self.device))
        B = batch_size
        return self.reset(state, torch.ones(B, dtype=torch.bool, device=self.device))

    @by_rows
    def reset(self, state: TensorDict, rows: Tensor, image_ids: Tensor | None = None) -> TensorDict:
        """Start new episodes in ``rows`` (``[B]`` bool); every other row is returned bitwise
        unchanged. Images are drawn from the pool with each row's own key, or taken from
        ``image_ids [B]`` when given (evaluation over a fixed list). Every field of a fresh
        episode is a gather of a per-image constant (``tests/reference/env_ref.reset_reference``
        builds them from the episode's definition instead; parity-tested bitwise)."""
        key, image_ids = self._draw(state, image_ids)
        B, K = state[LABELS].shape
        slot0 = torch.arange(K, device=self.device) == 0
        fresh = TensorDict(
            {
                IMAGE_ID: image_ids,
                KEY: key,
                POINTS: torch.where(slot0[None, :, None], self.first_point[image_ids][:, None], 0.0),
                LABELS: torch.where(slot0[None], 1, -1).expand(B, K),
                NUM_CLICKS: torch.ones(B, dtype=torch.int64, device=self.device),
                STEP: torch.zeros(B, dtype=torch.int64, device=self.device),
                LOGITS: self.init_logits[image_ids],
                MASK: self.init_mask[image_ids],
                DICE: self.init_dice[image_ids],
                BOUNDARY: self.init_boundary[image_ids],
                HEAT: self.init_heat[image_ids],
                CLICKED: F.one_hot(self.first_cell[image_ids], self.config.grid_size ** 2).bool(),
                EPISODE: state[EPISODE] + 1,
            },
            batch_size=state.batch_size,
            device=self.device,
        )
        return fresh.where(rows, state)

    def _draw(self, state: TensorDict, image_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        """Each row's advanced RNG key and its new episode's image (drawn from the pool with
        the row's key unless ``image_ids`` is given)."""
        key, bits = rng.advance(state[KEY])
        if image_ids is None:
            image_ids = self.image_pool[rng.randint_below(bits, self.image_pool.numel())]
        return key, image_ids.to(self.device, torch.int64)

    # ------------------------------------------------------------------ dynamics
    def finished(self, state: TensorDict) -> tuple[Tensor, Tensor]:
        """``(terminated, truncated)`` of each row's episode as it stands."""
        truncated = state[STEP] >= self.config.max_clicks
        if self.config.target_dice is None:
            terminated = torch.zeros_like(truncated)
        else:
            terminated = state[DICE] >= self.config.target_dice
        return terminated, truncated & ~terminated

    def decode_action(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``action [B]`` -> ``(point [B, 2], sam_label [B], cell [B])`` (docs/design.md coding)."""
        return actions.decode(action, self.config.grid_size, self.input_size)

    def step(self, state: TensorDict, action: Tensor) -> tuple[TensorDict, TensorDict]:
        """Apply one grid click per row (``action [B]``, docs/design.md coding). Rows whose episode
        has already ended are left unchanged (zero reward). Returns ``(next_state, out)`` with
        ``out`` holding ``reward``, ``terminated``, ``truncated``, ``done``, ``dice`` and
        ``boundary`` (all ``[B]``)."""
        return self.step_click(state, *self.decode_action(action))

    @by_rows
    def step_click(self, state: TensorDict, point: Tensor, label: Tensor, cell: Tensor
                   ) -> tuple[TensorDict, TensorDict]:
        """``step`` for an arbitrary click: ``point [B, 2]`` in the prompt frame, SAM2
        ``label [B]`` (1 fg / 0 bg) and the grid ``cell [B]`` it falls in (for the clicked-cell
        record). Used by ``step`` and by the pixel-exact oracle in evaluation."""
        cfg = self.config
        term0, trunc0 = self.finished(state)
        active = ~(term0 | trunc0)
        K = state[LABELS].shape[1]
        slot = F.one_hot(state[NUM_CLICKS].clamp(max=K - 1), K).bool() & active[:, None]
        points = torch.where(slot[..., None], point[:, None], state[POINTS])
        labels = torch.where(slot, label[:, None], state[LABELS])
        use_prev = torch.full_like(active, cfg.use_mask_input)
        out = self.segmenter.decode(
            state[IMAGE_ID], points, labels, mask_input=state[LOGITS],
            has_mask_input=use_prev, multimask=False,
        )
        logits = torch.where(active[:, None, None, None], out.logits.to(torch.float32),
                             state[LOGITS])
        mask = logits[:, 0] > 0
        ids = state[IMAGE_ID]
        gt = self.gt[ids]
        dice = dice_score(mask, gt)
        boundary = boundary_score(mask, gt, cfg, tuple(t[ids] for t in self.gt_terms))
        reward = step_reward(dice, state[DICE], boundary, state[BOUNDARY], cfg.boundary_weight)
        reward = torch.where(active, reward, 0.0)
        heat = O.add_click(state[HEAT], point, label, active, self.input_size, cfg.heatmap_sigma)
        clicked = state[CLICKED] | (F.one_hot(cell, cfg.grid_size ** 2).bool() & active[:, None])
        nxt = state.clone(recurse=False)
        nxt.update(
            {
                POINTS: points,
                LABELS: labels,
                NUM_CLICKS: state[NUM_CLICKS] + active.long(),
                STEP: state[STEP] + active.long(),
                LOGITS: logits,
                MASK: mask,
                DICE: torch.where(active, dice, state[DICE]),
                BOUNDARY: torch.where(active, boundary, state[BOUNDARY]),
                HEAT: heat,
                CLICKED: clicked,
            }
        )
        terminated, truncated = self.finished(nxt)
        info = TensorDict(
            {
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                "done": terminated | truncated,
                "dice": nxt[DICE],
                "boundary": nxt[BOUNDARY],
            },
            batch_size=state.batch_size,
            device=self.device,
        )
        return nxt, info

    @by_rows
    def step_autoreset(self, state: TensorDict, action: Tensor) -> tuple[TensorDict, TensorDict, TensorDict]:
        """Step, observe the result (the final observation of rows that just finished, kept
        for bootstrapping), then reset finished rows. Returns ``(state, out, final_obs)``."""
        nxt, out = self.step(state, action)
        final_obs = self.observe(nxt)
        return self.reset(nxt, out["done"]), out, final_obs

    # ------------------------------------------------------------------ observation
    def action_mask(self, state: TensorDict) -> Tensor:
        """``[B, 2*G*G]`` bool, True = allowed. No click on an already-clicked cell; in
        simulated-user mode fg only on cells with false negatives and bg only on cells with
        false positives (rows with no such cell fall back to every unclicked cell)."""
        G = self.config.grid_size
        free = ~state[CLICKED]
        allowed = torch.cat((free, free), dim=1)
        if self.config.mode != "simulated_user":
            return allowed
        gt = self.gt[state[IMAGE_ID]]
        err = torch.stack((gt & ~state[MASK], ~gt & state[MASK]), dim=1).float()
        cells = F.adaptive_max_pool2d(err, G).flatten(2).bool()  # [B, 2, G*G]
        consistent = cells.flatten(1) & allowed
        any_ok = consistent.any(dim=1, keepdim=True)
        return torch.where(any_ok, consistent, allowed)

    @by_rows
    def observe(self, state: TensorDict) -> TensorDict:
        """The observation TensorDict: the keys of ``config.observation_keys`` in that order
        (``gpu_env.obs_spec`` declares each key's shape, dtype and meaning; ``OBSERVERS`` maps
        each to the method computing it)."""
        ids = state[IMAGE_ID]
        obs = {key: self.OBSERVERS[key](self, state, ids) for key in self.config.observation_keys}
        return TensorDict(obs, batch_size=state.batch_size, device=self.device)

    def _planes(self, state: TensorDict, ids: Tensor) -> Tensor:
        return O.six_channels(self.rgb[ids], state[MASK], state[HEAT])

    def _sam_prob(self, state: TensorDict, ids: Tensor) -> Tensor:
        return O.resize_prob(state[LOGITS], self.config.obs_size)

    def _image_embedding(self, state: TensorDict, ids: Tensor) -> Tensor:
        emb = self.segmenter.image_embedding(ids)
        if emb is None:
            raise ValueError(
                "obs_image_embedding=True needs a segmenter with cached SAM2 image "
                "embeddings; the weight-free segmenter has none. Turn the option off."
            )
        return emb

    def _mask_prior(self, state: TensorDict, ids: Tensor) -> Tensor:
        if self.mask_prior is None:
            raise ValueError(
                "obs_mask_prior=True but no mask prior is installed: call "
                "env.set_mask_prior(probs) first (gpu_env.make installs one; "
                "ppo.prior.attach_prior does it for a policy that owns a MaskPrior), or turn the "
                "option off (obs_mask_prior=False)."
            )
        return self.mask_prior[ids]

    def _prior_click(self, state: TensorDict, ids: Tensor) -> Tensor:
        # observed only with the mask prior, whose check covers a missing prior
        return prior_click_distance(self._mask_prior(state, ids), state[MASK],
                                    self.config.grid_size)

    def _gt_error(self, state: TensorDict, ids: Tensor) -> Tensor:
        gt, S = self.gt[ids], self.config.obs_size
        fn = O.resize_mask(gt & ~state[MASK], S)
        fp = O.resize_mask(~gt & state[MASK], S)
        return torch.stack((fn, fp), dim=1)

    def _action_mask(self, state: TensorDict, ids: Tensor) -> Tensor:
        return self.action_mask(state)

    OBSERVERS = {OBS: _planes, SAM_PROB: _sam_prob, IMAGE_EMBEDDING: _image_embedding,
                 MASK_PRIOR: _mask_prior, PRIOR_CLICK: _prior_click, GT_ERROR: _gt_error,
                 ACTION_MASK: _action_mask}
    """The method computing each observation key (``gpu_env.obs_spec.OBSERVATION``)."""

    # ------------------------------------------------------------------ validation
    def validate_action(self, action: Tensor, batch_size: int) -> Tensor:
        """Check an action tensor at an API boundary (host reads allowed here)."""
        if not isinstance(action, Tensor):
            raise TypeError(f"action must be a torch.Tensor of int64, got {type(action).__name__}")
        if action.is_floating_point() or action.is_complex() or action.dtype == torch.bool:
            raise TypeError(
                f"action must be an integer tensor (int64 indices in [0, {self.num_actions})), "
                f"got dtype {action.dtype}; pass action.long() of a categorical sample."
            )
        if tuple(action.shape) != (batch_size,):
            raise ValueError(
                f"action must have shape ({batch_size},) (one action per episode), got "
                f"{tuple(action.shape)}."
            )
        bad = (action < 0) | (action >= self.num_actions)
        if bool(bad.any()):
            first = int(action[bad][0])
            raise ValueError(
                f"action {first} is out of range: expected 0 <= a < {self.num_actions} "
                f"(label * {self.config.grid_size ** 2} + row * {self.config.grid_size} + col)."
            )
        return action.to(self.device, torch.int64)
