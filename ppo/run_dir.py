"""A run folder is owned by one run: what it holds, starting over in it, and its lock.

``scripts.train`` writes ``config.json``, ``progress.csv``, checkpoints (``last.pt``, ``best.pt``,
``ckpt_<iter>.pt``), the end-of-training evaluation (``eval/``) and TensorBoard event files
(``tb/``) into ``<out_dir>/<exp_name>``. A second run into a folder that holds these would replace
some of them and mix others (``progress.csv``, the periodic checkpoints), so a new run refuses such
a folder unless told to continue it (``--resume``) or to replace it (``--overwrite``, which removes
exactly the files listed above and nothing else the user put there).

Two live runs in one folder are stopped by ``run.lock`` (pid, host, start time), created
atomically (a hard link of a complete temporary file, which fails if the lock exists). A lock
left by a process that is gone (same host, pid not running) is taken over with a warning; a
run removes its own lock when it ends, also by an exception.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
import uuid
import warnings
from pathlib import Path

from sam_batch.atomic_io import unlink_quietly

__all__ = ["RunFolderError", "RunLockedError", "RunLock", "check_new_run", "check_results_folder",
           "overwrite_notice", "remove_run_files", "run_files"]

LOCK_NAME = "run.lock"
RUN_FILES = ("config.json", "progress.csv", "last.pt", "best.pt")
"""Files a training run writes at the top of its folder (besides ``ckpt_<iter>.pt``)."""
EVAL_FILES = ("results.json", "results.csv", "dice_vs_clicks.png")
"""What the end-of-training evaluation writes into ``<run>/eval``."""
_CHECKPOINT = re.compile(r"ckpt_\d+\.pt")
_TEMPORARY = re.compile(r"\.(config\.json|progress\.csv|last\.pt|best\.pt|ckpt_\d+\.pt)\..*\.tmp")
_TENSORBOARD = re.compile(r"events\.out\.tfevents\..*")


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked; the message says what to pass instead."""


class RunLockedError(RunFolderError):
    """Another live run holds the folder's lock."""


def run_files(run_dir: str | os.PathLike) -> list[Path]:
    """The files (and ``eval``/``tb`` folders' files) of a training run in ``run_dir``: what
    ``--overwrite`` removes. Empty if the folder does not exist or holds no run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for p in sorted(run_dir.iterdir()):
        if p.is_file() and (p.name in RUN_FILES or _CHECKPOINT.fullmatch(p.name)
                            or _TEMPORARY.fullmatch(p.name)):
            found.append(p)
    found += [p for name in EVAL_FILES if (p := run_dir / "eval" / name).is_file()]
    tb = run_dir / "tb"
    if tb.is_dir():
        found += sorted(p for p in tb.iterdir() if p.is_file() and _TENSORBOARD.fullmatch(p.name))
    return found


def _describe(files: list[Path], run_dir: Path, limit: int = 8) -> str:
    names = [str(p.relative_to(run_dir)) for p in files]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_new_run(run_dir: str | os.PathLike, *, resume: str | None, overwrite: bool) -> None:
    """Refuse to start in ``run_dir`` if that would replace or mix with another run's files.

    Allowed: an empty or new folder; ``overwrite`` (its run files are removed later, by
    ``remove_run_files``); ``resume`` from a checkpoint inside this folder, or from elsewhere
    into a folder holding no run. Read-only, so every rank of a multi-process run can call it
    and all come to the same answer (on a shared or single-node file system).
    """
    run_dir = Path(run_dir)
    files = [p for p in run_files(run_dir) if not p.name.startswith(".")]
    if resume is not None:
        inside = Path(resume).resolve().parent == run_dir.resolve()
        if inside and overwrite:
            raise RunFolderError(
                f"--resume {resume} and --overwrite contradict each other: --overwrite would "
                f"delete the checkpoint being resumed. Pass only --resume to continue that run, "
                f"or only --overwrite to start it over.")
        if inside or not files or overwrite:
            return
        raise RunFolderError(
            f"{run_dir} already holds another run ({_describe(files, run_dir)}) and the "
            f"checkpoint {resume} is not in it: resume into the checkpoint's own folder "
            f"(--out-dir/--exp-name), choose a new --exp-name, or pass --overwrite to delete "
            f"that run's files first.")
    if not files or overwrite:
        return
    last = run_dir / "last.pt"
    how = (f"to continue it pass --resume {last}; " if last.is_file() else "")
    raise RunFolderError(
        f"{run_dir} already holds a run ({_describe(files, run_dir)}); {how}to start it over "
        f"pass --overwrite (deletes those files); or choose another --exp-name or --out-dir.")


def remove_run_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the previous run's files in ``run_dir`` (``run_files``; nothing else) and the
    ``eval``/``tb`` folders if that leaves them empty. Returns what was removed."""
    run_dir = Path(run_dir)
    files = run_files(run_dir)
    for p in files:
        unlink_quietly(p)
    for sub in ("eval", "tb"):
        try:
            (run_dir / sub).rmdir()
        except OSError:  # absent, or holds files that are not the run's
            pass
    return files


def overwrite_notice(run_dir: Path, removed: list[Path]) -> str:
    """One line saying what ``--overwrite`` removed and that the rest stayed."""
    kept = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME) \
        if run_dir.is_dir() else []
    return (f"--overwrite: removed the previous run's files from {run_dir}: "
            f"{_describe(removed, run_dir, limit=20)}"
            + (f" (kept: {', '.join(kept)})" if kept else ""))


# ---- the lock ----------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return True  # cannot tell: assume alive (never take over a live run's folder)
    return True


class RunLock:
    """``<run>/run.lock`` while a run uses its folder: ``acquire()``/``release()`` or ``with``.

    Re-entrant for the same object (``Trainer.run`` inside ``scripts.train``'s lock).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.token = uuid.uuid4().hex
        self.depth = 0

    def info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}

    def _create(self) -> bool:
        """Atomically create the lock with its full content; False if it exists."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".run.lock.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.info(), f)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            except OSError:  # no hard links here: exclusive create, then write
                try:
                    fd2 = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd2, "w") as f:
                    json.dump(self.info(), f)
            return True
        finally:
            unlink_quietly(tmp)

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        """Take the lock, taking over one left by a dead process on this host.

        Raises:
            RunLockedError: naming the live run (pid, host, start time) that holds it.
        """
        if self.depth:
            self.depth += 1
            return
        for _ in range(3):  # a takeover can race with another run's; re-check each time
            if self._create():
                self.depth = 1
                return
            held = self._read()
            if held is None:  # released meanwhile
                continue
            if not self._stale(held):
                when = held.get("started", "an unknown time")
                who = (f"process {held.get('pid')} on {held.get('host')}, started {when}"
                       if held else "a run whose lock file is unreadable")
                raise RunLockedError(
                    f"{self.path.parent} is in use by another training run ({who}): two runs "
                    f"in one folder would mix their checkpoints and logs. Wait for it to end, "
                    f"or use another --exp-name or --out-dir. If that run is no longer "
                    f"running, delete {self.path}.")
            # Take over: move the stale lock aside (only one racer can), then check it was
            # the stale one and not a lock a faster racer just created.
            aside = self.path.with_name(f".{LOCK_NAME}.{self.token}.stale")
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            try:
                moved = json.loads(aside.read_text())
            except (OSError, ValueError):
                moved = {}
            if moved != held:  # a live lock: put it back and report it next round
                try:
                    os.link(aside, self.path)
                except OSError:
                    pass
                unlink_quietly(aside)
                continue
            unlink_quietly(aside)
            warnings.warn(
                f"{self.path}: taking over the lock of process {held.get('pid')} on "
                f"{held.get('host')} (started {held.get('started')}), which is no longer "
                f"running; the run it left is continued or replaced as requested.",
                stacklevel=2)
        raise RunLockedError(f"could not take the lock {self.path}: other runs keep taking it; "
                             f"use another --exp-name or --out-dir.")

    @staticmethod
    def _stale(held: dict) -> bool:
        """True only where we can tell: same host and the pid is not running."""
        if not held or held.get("host") != socket.gethostname():
            return False
        pid = held.get("pid")
        return isinstance(pid, int) and not _pid_alive(pid)

    def release(self) -> None:
        """Drop the lock (only if it is still ours)."""
        if self.depth == 0:
            return
        self.depth -= 1
        if self.depth:
            return
        held = self._read()
        if held and held.get("token") == self.token:
            unlink_quietly(self.path)

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---- evaluation folders ------------------------------------------------------------------

def check_results_folder(out: str | os.PathLike, *, overwrite: bool) -> None:
    """Refuse to write evaluation results into ``out`` if it already holds some, unless
    ``overwrite`` (``scripts.evaluate --overwrite``)."""
    out = Path(out)
    found = [name for name in EVAL_FILES if (out / name).is_file()]
    if found and not overwrite:
        raise RunFolderError(
            f"{out} already holds evaluation results ({', '.join(found)}); pass --overwrite "
            f"to replace them, or --out <another folder>.")
