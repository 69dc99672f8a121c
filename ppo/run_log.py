"""A run's log: ``progress.csv`` (one row per logged iteration, kept across resumes) and
optional TensorBoard scalars and rendered episodes.

Every row is added by rewriting the file atomically (``sam_batch.atomic_io.atomic_write``: old
rows plus the new one to a temporary file, then a rename): a full disk or a kill leaves the
previous rows intact and never a half-written line. The file stays small (a row per
``log_every`` iterations), so the rewrite costs nothing next to an iteration. On resume the rows
after the checkpoint's iteration are cut (``cut_progress``): the resumed run logs them again.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sam_batch.atomic_io import atomic_write

__all__ = ["RunLog", "append_row", "cut_progress"]


def append_row(path: Path, fields: list[str], row: dict) -> None:
    """Add ``row`` to the CSV at ``path`` (with a header if the file is new), atomically."""
    old = path.read_bytes() if path.exists() else b""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    if not old:
        w.writeheader()
    w.writerow(row)
    new = buf.getvalue().encode()

    def write(f):
        f.write(old)
        f.write(new)

    atomic_write(path, write, binary=True, what="training log")


def cut_progress(path: Path, iteration: int) -> int:
    """Drop the rows of ``progress.csv`` logged after ``iteration`` (and any incomplete row a
    kill left); returns how many rows were dropped. No-op without the file."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return 0
    header = next(csv.reader([lines[0]]))
    if not header or header[0] != "iteration":
        return 0
    keep = [lines[0]]
    for line in lines[1:]:
        cells = next(csv.reader([line]), [])
        try:
            complete = len(cells) == len(header) and line.endswith("\n")
            if complete and int(cells[0]) <= iteration:
                keep.append(line)
        except ValueError:
            pass
    dropped = len(lines) - len(keep)
    if dropped:
        atomic_write(path, lambda f: f.write("".join(keep)), what="training log")
    return dropped


class RunLog:
    """CSV (``progress.csv``, appended across resumes) and optional TensorBoard scalars."""

    def __init__(self, run_dir: Path, tensorboard: bool, resumed_at: int = 0):
        """``resumed_at``: the global step of the checkpoint a resumed run starts from. The
        TensorBoard events an earlier (killed or longer) run logged after it are purged
        (``SummaryWriter(purge_step=...)``), so that no step shows twice, as ``progress.csv``
        is cut back (``cut_progress``)."""
        self.path = run_dir / "progress.csv"
        self.fields: list[str] | None = None
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # Steps > resumed_at will be logged again; the checkpoint's own step is not.
            self.writer = SummaryWriter(log_dir=str(run_dir / "tb"),
                                        purge_step=resumed_at + 1 if resumed_at else None)

    def write(self, row: dict) -> None:
        if self.fields is None:
            self.fields = list(row)
        append_row(self.path, self.fields, row)
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("iteration", "global_step"):
                    self.writer.add_scalar(k, v, row["global_step"])

    def write_eval(self, global_step: int, dice: float, episodes: list[dict], env,
                   data) -> None:
        """A quick evaluation: its mean final Dice and, in TensorBoard, its recorded episodes
        rendered one strip per episode (``gpu_env.visualize.episode_strip``)."""
        if self.writer is None:
            return
        import numpy as np

        from gpu_env.visualize import episode_strip

        self.writer.add_scalar("eval_dice", dice, global_step)
        if episodes:
            strips = [episode_strip(data.images[ep["image_id"]].cpu(),
                                    env.gt[ep["image_id"]].cpu().numpy(), ep, env.input_size)
                      for ep in episodes]
            width = max(s.shape[1] for s in strips)
            strips = [np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0))) for s in strips]
            self.writer.add_image("eval/episodes", np.concatenate(strips), global_step,
                                  dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
