"""Worker functions for ``tests/test_distributed.py``, importable by spawned processes.

``launch`` starts one process per rank (``multiprocessing`` "forkserver", i.e. fresh
processes, not forks of the test process), each running ``entry``:
it sets the variables ``torchrun`` would set, runs one worker, and leaves what the worker
returns in ``<out>/<tag>_rank<r>.pt`` or, if it raised, ``"<Type>: <message>"`` in
``<out>/<tag>_rank<r>.err``. Processes are watched, not joined blindly, so a hang fails the
test instead of the test run.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Seconds a collective may wait in the test processes: a backstop far above the fail-fast
# times the tests demand, far below the 600 s default.
DIST_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def param_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in ``state_dict`` order."""
    return state_digest(module.state_dict())


def state_digest(state: dict) -> str:
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_folder_dataset(root: Path, train: int, val: int, size: int = 48) -> Path:
    """A tiny image/mask folder (``images/``, ``masks/``, ``train.txt``, ``val.txt``) of
    ``size``-pixel frames, each with one bright ellipse as the object."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    names = [f"img{i:02d}" for i in range(train + val)]
    for name in names:
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        ry, rx = rng.uniform(0.12, 0.3, 2) * size
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img = rng.uniform(20, 90, (size, size, 3))
        img[mask] += rng.uniform(60, 140, 3)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    (root / "train.txt").write_text("\n".join(names[:train]) + "\n")
    (root / "val.txt").write_text("\n".join(names[train:]) + "\n")
    return root


# ----------------------------------------------------------------------------------- launching


def entry(rank: int, world: int, port: int, out: str, tag: str, worker: str, kwargs: dict) -> None:
    """One rank: torchrun's environment, then ``worker(**kwargs)`` from this module."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      SAM2RL_DIST_TIMEOUT=str(DIST_TIMEOUT_S))
    torch.set_num_threads(1)  # two ranks share two cores
    from ppo import distributed as dist_utils

    ctx = dist_utils.context(torch.device("cpu"))  # gloo, as a --device cpu run
    try:
        result = globals()[worker](ctx=ctx, **kwargs)
    except BaseException as err:
        Path(out, f"{tag}_rank{rank}.err").write_text(
            f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}")
        dist_utils.abort_all(ctx, f"{type(err).__name__}: {err}")  # as scripts.train does
        sys.exit(1)
    torch.save(result, Path(out, f"{tag}_rank{rank}.pt"))
    dist_utils.shutdown(ctx)


@dataclass
class Outcome:
    exitcodes: list[int | None]
    exit_times: list[float | None]
    """Seconds after launch at which each process had exited (None: killed at the deadline)."""
    results: list[Any]
    errors: list[str | None]


def launch(out: Path, tag: str, worker: str, world: int = 2, timeout: float = 150.0,
           **kwargs: Any) -> Outcome:
    """Run ``worker`` on ``world`` spawned ranks; kill whatever still runs after ``timeout``."""
    import torch.multiprocessing as mp

    # Forkserver: one clean server process imports the heavy modules once (it never runs
    # torch's thread pools, so forking it is safe); every rank then starts in well under a
    # second instead of re-importing torch/torchrl (seconds of CPU each on a loaded machine).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.dist_workers", "ppo.train", "scripts.train"])
    port = free_port()
    procs = [ctx.Process(target=entry, args=(r, world, port, str(out), tag, worker, kwargs))
             for r in range(world)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    times: list[float | None] = [None] * world
    while time.monotonic() - t0 < timeout and any(t is None for t in times):
        for r, p in enumerate(procs):
            if times[r] is None and not p.is_alive():
                times[r] = time.monotonic() - t0
        time.sleep(0.05)
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join()
    results, errors = [], []
    for r in range(world):
        pt, err = out / f"{tag}_rank{r}.pt", out / f"{tag}_rank{r}.err"
        results.append(torch.load(pt, weights_only=False) if pt.exists() else None)
        errors.append(err.read_text() if err.exists() else None)
    return Outcome([p.exitcode for p in procs], times, results, errors)


# ------------------------------------------------------------------------------------ workers


def train_and_record(ctx, cfg) -> dict:
    """A Trainer run; digests of the parameters at the start and after every update, and
    what each rank holds (its env rows, its training images)."""
    from ppo.train import Trainer

    trainer = Trainer(cfg)
    digests = [param_digest(trainer.policy)]
    iterate = trainer.iterate

    def recording_iterate():
        out = iterate()
        digests.append(param_digest(trainer.policy))
        return out

    trainer.iterate = recording_iterate
    trainer.run()
    return {"digests": digests, "rank": ctx.rank, "world_size": ctx.world_size,
            "local_envs": trainer.local_envs, "image_ids": list(trainer.envs.train_data.ids),
            "has_eval_env": trainer.envs.eval_env is not None,
            "env_state": {k: v.clone() for k, v in trainer.state.items()}}


def build_learner(cfg, state: dict, norm_adv: bool):
    """Policy (weights ``state``), ClipPPOLoss and Adam as the Trainer builds them, with one
    epoch of one minibatch."""
    from dataclasses import replace

    from ppo.loss import make_ppo_loss
    from ppo.policies import make_actor_critic
    from ppo.policies import build_policy

    policy = build_policy(cfg.policy, cfg.env, cfg.run.seed, torch.device("cpu"))
    policy.load_state_dict(state)
    ac = make_actor_critic(policy, generator=torch.Generator().manual_seed(0),
                           use_action_mask=cfg.env.action_mask)
    ppo_cfg = replace(cfg.ppo, update_epochs=1, num_minibatches=1, norm_adv=norm_adv)
    loss = make_ppo_loss(ac.actor, ac.critic, ppo_cfg)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.ppo.learning_rate, eps=1e-5)
    return policy, loss, optimizer, ppo_cfg


def one_update(cfg, state: dict, batch, grad_hook_ctx=None) -> dict:
    """One ``ppo_update`` on ``batch``; the final weights. With ``grad_hook_ctx`` the
    gradients are averaged over its ranks."""
    from ppo import distributed as dist_utils
    from ppo.loss import ppo_update

    policy, loss, optimizer, ppo_cfg = build_learner(cfg, state, norm_adv=False)
    hook = None if grad_hook_ctx is None else dist_utils.grad_allreduce_hook(grad_hook_ctx, policy)
    ppo_update(loss, optimizer, batch, ppo_cfg, generator=torch.Generator().manual_seed(1),
               grad_hook=hook)
    return {k: v.clone() for k, v in policy.state_dict().items()}


def update_on_half(ctx, cfg, state: dict, batch_path: str) -> dict:
    """This rank's half of the env columns of a saved ``[T, B]`` rollout, one update with the
    gradient all-reduce."""
    batch = torch.load(batch_path, weights_only=False)
    cols = batch.batch_size[1] // ctx.world_size
    half = batch[:, ctx.rank * cols:(ctx.rank + 1) * cols].clone()
    return one_update(cfg, state, half, grad_hook_ctx=ctx)


def main_with_fault(ctx, argv: list[str], fault: str | None, fault_rank: int = 1) -> int:
    """``scripts.train.main(argv)``; on ``fault_rank`` first inject ``fault``: ``"nan"``
    (its rewards become NaN) or ``"raise"`` (an exception in the second iteration)."""
    import scripts.train as entry_point
    from gpu_env.env import ClickEnv
    from ppo.train import Trainer

    if ctx.rank == fault_rank and fault == "nan":
        step = ClickEnv.step

        def poisoned(self, state, action):
            nxt, out = step(self, state, action)
            out["reward"] = out["reward"] * float("nan")
            return nxt, out

        ClickEnv.step = poisoned
    elif ctx.rank == fault_rank and fault == "raise":
        iterate = Trainer.iterate

        def failing(self):
            if self.iteration == 1:
                raise RuntimeError(f"injected failure on rank {ctx.rank}")
            return iterate(self)

        Trainer.iterate = failing
    return entry_point.main(argv)
