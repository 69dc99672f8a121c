"""How long ``gymnasium.make("SAM2Click-v0")`` takes, as a user's script sees it.

Each round starts a fresh interpreter (so imports count), in an empty working folder, that
imports gymnasium and the registration module and builds the default env: the main job's task
(1,024 synthetic frames, weight-free segmenter, the bundled mask prior). Two cases in one run:

* ``cold``: an empty frame cache (``$SAM2CLICK_CACHE_DIR``), so the frames are rendered and the
  cache is written -- a first use;
* ``warm``: the frames come from the cache written by an earlier round -- every later use.

The interpreter is this one (``sys.executable``): run the file with a venv that has the wheel
installed, from outside the checkout, to time the installed package; ``extra_info["package"]``
records where ``gpu_env`` was imported from. Marked ``slow`` (about two minutes on 2 cores):

    python -m pytest bench/bench_make.py -m slow -p no:cacheprovider --benchmark-only
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

_SCRIPT = """
import json, time
t0 = time.perf_counter()
import gymnasium
import gpu_env.gym_registration
env = gymnasium.make("SAM2Click-v0", progress=False)
seconds = time.perf_counter() - t0
import gpu_env, torch
core = env.unwrapped.env
print(json.dumps({"seconds": seconds, "package": gpu_env.__file__, "images": core.num_images,
                  "max_clicks": core.config.max_clicks, "threads": torch.get_num_threads(),
                  "keys": list(env.observation_space.keys())}))
"""


def _build(work, cache) -> dict:
    env = {**os.environ, "SAM2CLICK_CACHE_DIR": str(cache)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=work, env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _case(benchmark, tmp_path, warm: bool) -> None:
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    results = []
    if warm:
        _build(work, cache)  # fills the cache

    def setup():
        if not warm and cache.exists():
            shutil.rmtree(cache)
        return (), {}

    benchmark.pedantic(lambda: results.append(_build(work, cache)), setup=setup, rounds=3,
                       iterations=1)
    last = results[-1]
    assert last["images"] == 1024 and last["max_clicks"] == 10
    benchmark.extra_info.update(
        in_script_seconds=[round(r["seconds"], 2) for r in results], package=last["package"],
        threads=last["threads"], observation_keys=last["keys"],
        frame_cache="warm" if warm else "cold")


def test_gymnasium_make_cold(benchmark, tmp_path):
    _case(benchmark, tmp_path, warm=False)


def test_gymnasium_make_warm(benchmark, tmp_path):
    _case(benchmark, tmp_path, warm=True)
