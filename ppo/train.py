"""The PPO train loop: collect on the device, GAE, clipped-PPO minibatch epochs, repeat.

Host reads happen only every ``log_every`` iterations (statistics, the non-finite flags) and
at checkpoints; the per-step and per-minibatch work never leaves the device.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from tensordict import TensorDict
from tqdm.auto import tqdm

from gpu_env.obs_spec import ACTION_MASK
from gpu_env.env import ClickEnv
from gpu_env.state_spec import DICE, IMAGE_ID
from sam_batch.atomic_io import atomic_write
from ppo import distributed as dist_utils
from ppo.checkpoint import CheckpointKeeper, capture_generators, restore_generators
from ppo.config import PPOConfig, TrainConfig
from ppo.factory import RunEnvs, build_envs, resolve_device, warn_slow_cpu_bf16
from ppo.gae import compute_gae
from ppo.loss import lr_at, make_ppo_loss, ppo_update
from ppo.prior import attach_prior, policy_prior, pretrain_prior
from ppo.policies import STATE_VALUE, ActorCritic, build_policy, make_actor_critic
from ppo.resume import ResumeError, load_for_resume
from ppo.rollout import EpisodeStats, allocate_buffer, collect, shared_phase
from ppo.run_dir import RunLock, check_new_run, overwrite_notice, remove_run_files
from ppo.run_log import RunLog, cut_progress

NONFINITE_WHERE = ("rewards", "advantages", "loss")


class NonFiniteError(FloatingPointError):
    """A NaN/inf appeared in training; the message names where."""


class CompiledStep:
    """The train env as the rollout sees it under ``compile``: every attribute is the env's,
    except ``step``, a ``torch.compile`` of it held here (the env object is not modified).

    A graph break is an error (``fullgraph=True``). If the backend cannot generate code for the
    captured graph, the step warns once, naming the error, and stays eager: Inductor's CPU (C++)
    backend in torch 2.13 fails to compile the boolean boundary morphology (``CppCompileError``
    on mixed ``VecMask`` types), while the policy compiles and CUDA uses Triton instead."""

    def __init__(self, env: ClickEnv, **compile_kw):
        self.env = env
        self.compiled = torch.compile(env.step, fullgraph=True, dynamic=False, **compile_kw)
        self.fallback: str | None = None  # why the step runs eager, once the backend failed

    def step(self, *args, **kwargs):
        if self.fallback is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:
                from torch._dynamo.exc import BackendCompilerFailed
                from torch._inductor.exc import InductorError
                if not isinstance(err, (InductorError, BackendCompilerFailed)):
                    raise
                self.fallback = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                warnings.warn(f"--compile: the env step could not be compiled on "
                              f"{self.env.device} ({self.fallback}); it runs eager, the policy "
                              f"stays compiled.", RuntimeWarning, stacklevel=2)
        return self.env.step(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.env, name)


UNTRAINED_PRIOR = (
    "--prior-steps 0: the mask prior stays untrained (random weights), so the agent's mask "
    "prior input and prior_click map carry no information, and the learned clicker baseline is "
    "left out of the tables. Pass --prior-steps N (N > 0) to train it, or --no-mask-prior to "
    "train the agent without one.")
"""The warning of a run whose policy reads a mask prior that is never trained."""


def warn_partial_iteration(ppo: PPOConfig) -> str | None:
    """Warn (and return the message) when ``--total-timesteps`` is not a whole number of
    iterations: training runs whole iterations of ``num_envs x num_steps`` env steps, at least
    one, so it would silently train more (or fewer) steps than asked."""
    total, batch, iters = ppo.total_timesteps, ppo.batch_size, ppo.num_iterations
    if total == iters * batch:
        return None
    what = "less than one iteration" if total < batch else "not a whole number of iterations"
    msg = (f"--total-timesteps {total} is {what} of {batch} env steps (--num-envs {ppo.num_envs} "
           f"x --num-steps {ppo.num_steps}): training runs {iters} iteration(s) = "
           f"{iters * batch} env steps. Pass a multiple of {batch} to silence this.")
    warnings.warn(msg, UserWarning, stacklevel=3)
    return msg


class Trainer:
    """One training run (see ``TrainConfig``); ``run()`` trains and returns the final stats."""

    def __init__(self, cfg: TrainConfig, envs: RunEnvs | None = None):
        cfg.validate()
        self.cfg = cfg
        warn_partial_iteration(cfg.ppo)
        requested = resolve_device(cfg.run.device)
        self.ctx = dist_utils.context(requested)  # gloo for a CPU run even where CUDA exists
        self.device = dist_utils.device_for(self.ctx, requested)
        warn_slow_cpu_bf16(cfg.run.autocast, self.device)
        self.run_dir = Path(cfg.run.out_dir) / cfg.run.exp_name
        # Refuse a checkpoint that cannot continue under this config, and a folder holding
        # another run, before building anything (see ppo/resume.py and ppo/run_dir.py).
        resumed = (load_for_resume(cfg.run.resume, cfg, map_location=self.device)
                   if cfg.run.resume else None)
        check_new_run(self.run_dir, resume=cfg.run.resume, overwrite=cfg.run.overwrite)
        self.lock = RunLock(self.run_dir)
        self.claimed = False  # this trainer has prepared its folder (overwrite, progress cut)
        # num_envs is the global batch: each rank steps its own num_envs / world_size rows.
        self.local_envs = dist_utils.check_batch_split(cfg.ppo.num_envs, cfg.ppo.num_steps,
                                                       cfg.ppo.num_minibatches, self.ctx)
        self.envs = envs if envs is not None else build_envs(
            cfg, self.device, rank=self.ctx.rank, world_size=self.ctx.world_size,
            held_out=self.ctx.rank == 0)
        self.env: ClickEnv = self.envs.train_env
        self.ppo_cfg = cfg.ppo
        self.policy = build_policy(cfg.policy, cfg.env, cfg.run.seed, self.device)
        dist_utils.broadcast_parameters(self.ctx, self.policy)
        self.attach_prior()  # the untrained prior's maps until pre-training (or a resume)
        if policy_prior(self.policy) is not None and cfg.policy.prior_steps == 0 and resumed is None:
            warnings.warn(UNTRAINED_PRIOR, UserWarning, stacklevel=2)
        # Sampling and minibatch order: one generator per rank, seeded from (seed, rank).
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(dist_utils.rank_seed(cfg.run.seed, self.ctx))
        masked = ACTION_MASK in cfg.env.observation_keys
        self.ac: ActorCritic = make_actor_critic(self.policy, generator=self.generator,
                                                 use_action_mask=masked)
        self.loss_module = make_ppo_loss(self.ac.actor, self.ac.critic, self.ppo_cfg)
        if cfg.run.compile:  # parity of both paths vs eager is checked in bench/bench_train.py
            self.policy.compile(fullgraph=True, dynamic=False)
            self.env = CompiledStep(self.env)  # the env itself is left as it is
        self.optimizer = torch.optim.Adam(self.trainable(), lr=cfg.ppo.learning_rate, eps=1e-5)
        self.state = self.env.initial_state(self.local_envs, dist_utils.rank_seed(cfg.run.seed, self.ctx))
        self.initial_dice = self.state[DICE].clone()
        self.stats = EpisodeStats(self.local_envs, self.device)
        self.nonfinite = torch.zeros(len(NONFINITE_WHERE), dtype=torch.bool, device=self.device)
        with torch.no_grad():
            example = self.ac.policy_value(self.env.observe(self.state).clone())
        self.buffer = allocate_buffer(example, cfg.ppo.num_steps)
        for key in ("advantage", "value_target"):
            self.buffer[key] = torch.zeros_like(self.buffer[STATE_VALUE])
        self.iteration = 0
        self.global_step = 0
        self.keeper = CheckpointKeeper(self.run_dir, keep_last=cfg.run.keep_checkpoints,
                                       every=cfg.run.checkpoint_every)
        self.last_logged: dict = {}
        self.prior_stats: dict = {}
        if resumed is not None:
            self.load(resumed)

    # ------------------------------------------------------------------ checkpoints
    def rank_state_dict(self) -> dict:
        """What differs between ranks: the sampler, env rows and episode statistics."""
        return {
            "generators": capture_generators({"sampler": self.generator}),
            "env_state": self.state.to_dict(),
            "initial_dice": self.initial_dice,
            "stats": self.stats.state_dict(),
        }

    def state_dict(self) -> dict:
        """This process's training state (a checkpoint of a multi-process run adds every
        rank's ``rank_state_dict`` under ``"ranks"``, see ``save``)."""
        return {
            "model": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.rank_state_dict(),
            "counters": {"iteration": self.iteration, "global_step": self.global_step,
                         "world_size": self.ctx.world_size},
            "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
        }

    def load(self, checkpoint: str | os.PathLike | Mapping) -> None:
        """Restore everything for an exact continuation (policy, optimizer, generator, env
        state, statistics, counters) from a checkpoint path (checked by ``load_for_resume``)
        or its loaded state. A multi-process checkpoint restores each rank's own rows and
        sampler. One written with another world size (or data sharding) restores the weights
        and optimizer exactly and re-keys the env rows and sampler per rank."""
        ck = checkpoint if isinstance(checkpoint, Mapping) else load_for_resume(
            checkpoint, self.cfg, map_location=self.device)
        self.policy.load_state_dict(ck["model"])
        self.attach_prior()
        self.optimizer.load_state_dict(ck["optimizer"])
        counters = ck["counters"]
        self.iteration, self.global_step = counters["iteration"], counters["global_step"]
        self.keeper.load_state_dict(ck)
        # Saved rows index the saving rank's images: reusable only with the same ranks/shards.
        same_rows = counters.get("world_size", 1) == self.ctx.world_size and (
            not self.ctx.enabled
            or TrainConfig.from_dict(json.loads(ck["config"])).data.shard_data == self.cfg.data.shard_data)
        if same_rows:
            mine = ck["ranks"][self.ctx.rank] if "ranks" in ck else ck
            self.check_rows_fit(mine["env_state"][IMAGE_ID])
            restore_generators({"sampler": self.generator}, mine["generators"])
            self.state = TensorDict(mine["env_state"], batch_size=[self.local_envs],
                                    device=self.device)
            self.initial_dice = mine["initial_dice"].to(self.device)
            self.stats.load_state_dict(mine["stats"])
        else:  # other ranks or shards: new rollouts, same learner state
            seed = dist_utils.rank_seed(self.cfg.run.seed + self.iteration, self.ctx)
            self.generator.manual_seed(seed)
            self.state = self.env.initial_state(self.local_envs, seed)
            self.initial_dice = self.state[DICE].clone()

    def check_rows_fit(self, image_ids: torch.Tensor) -> None:
        """The saved env rows index training images; a split with fewer images than the
        checkpoint's rows use (a folder dataset whose files changed) cannot continue them."""
        have = len(self.envs.train_data)
        if image_ids.numel() and int(image_ids.max()) >= have:
            raise ResumeError(
                f"cannot resume from {self.cfg.run.resume}: its episodes use training image "
                f"{int(image_ids.max())} but {self.cfg.data.dataset!r} split "
                f"{self.cfg.data.train_split!r} now has {have} images; the dataset changed since "
                f"the checkpoint. Restore the images, or start a new run.")

    @contextlib.contextmanager
    def claim_folder(self) -> Iterator[None]:
        """Hold the run folder's lock (rank 0) while training and evaluating in it; on the
        first claim, apply ``--overwrite`` (removing only the previous run's files, and saying
        which) and cut ``progress.csv`` back to a resumed checkpoint's iteration."""
        if self.ctx.rank != 0:
            yield
            return
        with self.lock:
            if not self.claimed:
                # Again under the lock: another run may have filled the folder since __init__.
                run = self.cfg.run
                check_new_run(self.run_dir, resume=run.resume, overwrite=run.overwrite)
                if run.overwrite:
                    removed = remove_run_files(self.run_dir)
                    if removed:
                        print(overwrite_notice(self.run_dir, removed), flush=True)
                if run.resume:
                    cut_progress(self.run_dir / "progress.csv", self.iteration)
                self.claimed = True
            yield

    def save(self, metric: float | None) -> None:
        """Rank 0 writes the checkpoint, with every rank's rollout state (a collective)."""
        ranks = dist_utils.gather_to_rank0(self.ctx, self.rank_state_dict())
        if self.ctx.rank == 0:
            state = self.state_dict() if ranks is None else {**self.state_dict(), "ranks": ranks}
            self.keeper.save(self.iteration, state, metric)

    # ------------------------------------------------------------------ one iteration
    def iterate(self) -> TensorDict:
        """Collect ``T x B`` steps and run the PPO update; returns device-side loss stats."""
        cfg = self.cfg
        with self.precision():
            self.state, self.initial_dice = collect(self.env, self.state, self.ac, self.buffer,
                                                    self.stats, self.initial_dice,
                                                    shared_phase(self.env, self.state))
        buf = self.buffer
        adv, target = compute_gae(buf["reward"], buf[STATE_VALUE][..., 0], buf["next_value"],
                                  buf["terminated"], buf["done"], cfg.ppo.gamma, cfg.ppo.gae_lambda)
        buf["advantage"] = adv[..., None]
        buf["value_target"] = target[..., None]
        lr = lr_at(self.iteration, cfg.ppo.num_iterations, cfg.ppo.learning_rate) if cfg.ppo.anneal_lr else None
        with self.precision():
            out = ppo_update(self.loss_module, self.optimizer, buf, self.ppo_cfg,
                             generator=self.generator, lr=lr,
                             grad_hook=dist_utils.grad_allreduce_hook(self.ctx, self.policy))
        loss_sum = sum(out[k].sum() for k in out.keys() if k.startswith("loss_"))
        self.nonfinite |= torch.stack((~torch.isfinite(buf["reward"]).all(),
                                       ~torch.isfinite(adv).all(), ~torch.isfinite(loss_sum)))
        self.iteration += 1
        self.global_step += cfg.ppo.num_steps * cfg.ppo.num_envs
        return out

    def precision(self):
        """bf16 autocast of decode, policy and loss when ``cfg.run.autocast == "bf16"`` (the
        parameters, optimizer, metrics and rewards stay fp32)."""
        if self.cfg.run.autocast == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def trainable(self) -> list[torch.nn.Parameter]:
        """The parameters PPO and behaviour cloning update (not the frozen mask prior)."""
        return [p for p in self.policy.parameters() if p.requires_grad]

    def attach_prior(self) -> None:
        """Install the policy's mask-prior maps in every env of the run (no-op without one)."""
        attach_prior(self.policy, self.env, self.envs.train_env, self.envs.eval_env)

    def pretrain_prior(self) -> None:
        """Supervised pre-training of the mask prior on the training split (rank 0's weights
        win in a multi-process run), then its maps are installed."""
        stats = pretrain_prior(self.policy, self.envs.train_env, steps=self.cfg.policy.prior_steps,
                               seed=self.cfg.run.seed, progress=self.cfg.run.progress and self.ctx.rank == 0)
        if stats is None:
            return
        dist_utils.broadcast_parameters(self.ctx, self.policy)
        self.attach_prior()
        self.prior_stats = {"prior_steps": stats.steps, "prior_seconds": stats.seconds,
                            "prior_loss": stats.final_loss}

    def warm_start(self) -> None:
        """Behaviour cloning from the oracle (``cfg.ppo.bc_steps`` updates with its own Adam, so
        PPO's optimizer starts fresh); every rank clones on its own rows, rank 0's weights win."""
        from ppo.bc import behaviour_cloning

        opt = torch.optim.Adam(self.trainable(), lr=self.cfg.ppo.bc_lr)
        bar = tqdm(total=self.cfg.ppo.bc_steps, desc="behaviour cloning", leave=False,
                   disable=not (self.cfg.run.progress and self.ctx.rank == 0))
        with self.precision():
            behaviour_cloning(self.env, self.policy, opt, self.cfg.ppo.bc_steps, self.local_envs,
                              seed=dist_utils.rank_seed(self.cfg.run.seed + 7919, self.ctx),
                              max_grad_norm=self.cfg.ppo.max_grad_norm, progress=lambda: bar.update())
        bar.close()
        dist_utils.broadcast_parameters(self.ctx, self.policy)

    def check_finite(self) -> None:
        """Host read of the non-finite flags (all ranks agree); raises naming where."""
        flags = dist_utils.any_across_ranks(self.ctx, self.nonfinite)
        if bool(flags.any()):
            where = [w for w, f in zip(NONFINITE_WHERE, flags.tolist()) if f]
            raise NonFiniteError(
                f"non-finite values in {', '.join(where)} before iteration {self.iteration} "
                f"(since the last check); training stopped and the last good checkpoint "
                f"{self.keeper.last} was kept. Lower the learning rate or check the inputs."
            )

    # ------------------------------------------------------------------ the loop
    def run(self, stop_at: int | None = None) -> dict:
        """Train until ``cfg.ppo.num_iterations`` (or until iteration ``stop_at``, e.g. to split a
        run in two for the resume test), holding the run folder (``claim_folder``); returns
        the last logged statistics row."""
        with self.claim_folder():
            return self.train_loop(stop_at)

    def train_loop(self, stop_at: int | None = None) -> dict:
        """``run`` without claiming the folder."""
        cfg = self.cfg
        end = cfg.ppo.num_iterations if stop_at is None else min(stop_at, cfg.ppo.num_iterations)
        rank0 = self.ctx.rank == 0
        if rank0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
            atomic_write(self.run_dir / "config.json", lambda f: f.write(text), what="run config")
        log = RunLog(self.run_dir, cfg.run.tensorboard, resumed_at=self.global_step) if rank0 else None
        if self.iteration == 0:  # not again on resume; a no-op without a prior or steps
            self.pretrain_prior()
        if cfg.ppo.bc_steps and self.iteration == 0:  # not again on resume
            self.warm_start()
        bar = tqdm(total=cfg.ppo.num_iterations * cfg.ppo.batch_size, initial=self.global_step,
                   unit="step", desc="train", disable=not (cfg.run.progress and rank0),
                   dynamic_ncols=True)
        t0, steps0 = time.perf_counter(), self.global_step
        loss_stats = None
        try:
            while self.iteration < end:
                loss_stats = self.iterate()
                bar.update(cfg.ppo.batch_size)
                last = self.iteration == end
                if self.iteration % cfg.run.log_every == 0 or last:
                    self.check_finite()
                    row = self._log_row(loss_stats, time.perf_counter() - t0,
                                        self.global_step - steps0)
                    t0, steps0 = time.perf_counter(), self.global_step
                    self.last_logged = row
                    if log is not None:
                        log.write(row)
                    bar.set_postfix(sps=f"{row['sps']:.0f}", reward=f"{row['mean_reward']:.3f}",
                                    dice=f"{row['final_dice']:.3f}", refresh=False)
                if self.iteration % cfg.run.checkpoint_every == 0 or last:
                    self.check_finite()
                    metric = self.quick_eval(log) if (rank0 and cfg.run.eval_every and (
                        self.iteration % cfg.run.eval_every == 0 or last)) else None
                    self.save(metric)
        except RuntimeError as err:
            # A collective that failed because another rank aborted: say which and why.
            cause = dist_utils.peer_failure(self.ctx)
            if cause is None:
                raise
            raise dist_utils.PeerFailedError(
                f"rank {self.ctx.rank} stopped because another process failed: {cause}"
            ) from err
        finally:
            bar.close()
            if log is not None:
                log.close()
        return self.last_logged

    def _log_row(self, loss_stats: TensorDict, seconds: float, steps: int) -> dict:
        episodes = self.stats.read(steps // self.ctx.world_size)
        means = {k: v.float().mean() for k, v in loss_stats.items()}
        host = {k: float(v) for k, v in means.items()}
        host = dist_utils.mean_across_ranks(self.ctx, {**episodes, **host})
        return {"iteration": self.iteration, "global_step": self.global_step,
                "sps": steps / max(seconds, 1e-9),
                "lr": self.optimizer.param_groups[0]["lr"], **host}

    @torch.no_grad()
    def quick_eval(self, log: "RunLog | None" = None, episodes: int = 4) -> float:
        """Greedy agent, held-out images, ``max_clicks`` clicks: mean final Dice (for best.pt).
        With a ``log``, the Dice is logged as ``eval_dice`` and ``episodes`` rendered episodes
        go to TensorBoard as one image (``eval/episodes``)."""
        from ppo.evaluate import agent_curves

        env, data = self.envs.eval_env, self.envs.eval_data
        curves = agent_curves(env, data, self.policy, name="agent",
                              num_clicks=self.cfg.env.max_clicks + 1, progress=False,
                              original_resolution=False, record=episodes)
        metric = float(curves.dice[:, -1].mean())
        if log is not None:
            log.write_eval(self.global_step, metric, curves.episodes, env, data)
        return metric


def train(cfg: TrainConfig) -> Trainer:
    """Train per ``cfg`` and return the trainer (policy, envs, last logged statistics)."""
    trainer = Trainer(cfg)
    trainer.run()
    return trainer

