#!/usr/bin/env bash
# CI: build the wheel, install it (not editable) into a fresh venv outside the checkout, and run
# every console command once for real with tiny settings, from a folder that is not the
# checkout. Each command must exit 0 and write what it says it writes.
#
#   .ci/wheel_smoke.sh [python]      # python: the interpreter of the fresh venv (python3.11)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${1:-python3.11}
work=$(mktemp -d "${TMPDIR:-/tmp}/sam2click-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
export SAM2_BUILD_CUDA=0 PIP_CONSTRAINT="$repo/constraints/cpu.txt"
step() { echo; echo "=== $*"; }

# new untracked or ignored files of the checkout (a command that writes into it by default);
# the wheel build's own build/ and egg-info are not a command's
new_files() { (cd "$repo" && git status --porcelain --ignored --untracked-files=all \
               | awk '/^(\?\?|!!) / && !/\.venv\/|__pycache__|\.egg-info\/|^!! build\//' | sort); }
new_files > "$work/before"
step "build the wheel"
"$python" -m venv "$work/build-venv"
"$work/build-venv/bin/pip" install -q "setuptools>=68" wheel
"$work/build-venv/bin/pip" wheel -q --no-deps --no-build-isolation -w "$work/dist" "$repo"
whl=$(ls "$work"/dist/sam2_click_rl-*.whl)
tops=$("$python" - "$whl" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
print(" ".join(sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")})))
EOF
)
echo "top-level names in the wheel: $tops"
[ "$tops" = "gpu_env ppo sam2click_cli sam_batch" ] || { echo "unexpected top-level names: $tops"; exit 1; }

step "install it into a fresh venv (with the benchmark extra)"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$whl[bench]"
bin="$work/venv/bin"
mkdir "$work/run" && cd "$work/run"  # nothing of the checkout on sys.path
"$bin/python" - "$repo" <<'EOF'
import importlib.util, sys
from pathlib import Path
spec = importlib.util.find_spec("sam2click_cli")
assert not Path(spec.origin).resolve().is_relative_to(Path(sys.argv[1]).resolve()), spec.origin
print("sam2click_cli from", spec.origin)
EOF

tiny=(--device cpu --train-images 6 --eval-images 3 --num-envs 4 --num-steps 3
      --total-timesteps 24 --num-minibatches 2 --update-epochs 1 --width 4 --max-clicks 2
      --eval-clicks 3 --no-tensorboard --no-progress --prior-steps 2 --prior-width 4)
exists() { for f in "$@"; do [ -s "$f" ] || { echo "missing output: $f"; exit 1; }; done; }

step "sam2click-train"
"$bin/sam2click-train" "${tiny[@]}" --exp-name tiny
exists runs/tiny/last.pt runs/tiny/config.json runs/tiny/eval/results.json

step "sam2click-train --config (the saved run's settings, one flag overridden)"
"$bin/sam2click-train" --config runs/tiny/config.json --seed 2 --print-config > printed.json
"$bin/python" -c "import json; c = json.load(open('printed.json')); assert c['run']['seed'] == 2 and c['ppo']['num_envs'] == 4, c"

step "sam2click-evaluate"
"$bin/sam2click-evaluate" --checkpoint runs/tiny/last.pt --num-clicks 3 --device cpu
exists runs/tiny/eval_last_val/results.json runs/tiny/eval_last_val/dice_vs_clicks.png

step "sam2click-baselines"
"$bin/sam2click-baselines" --eval-images 3 --train-images 4 --prior-steps 2 --prior-width 4 \
    --num-clicks 3 --device cpu
exists runs/baselines/results.json

step "sam2click-render dataset / episodes"
"$bin/sam2click-render" dataset --count 2
"$bin/sam2click-render" episodes --checkpoint runs/tiny/last.pt --episodes 1 --clicks 2
exists contact_sheet.png runs/episodes/*.png

step "sam2click-embed (random-weight SAM2)"
"$bin/sam2click-embed" --dataset synthetic --count 2 --sam2-config t --sam2-image-size 256 \
    --device cpu --no-progress
exists caches/*/meta.json

step "sam2click-seeds"
"$bin/sam2click-seeds" --seeds 1 2 "${tiny[@]}" --exp-name s
exists runs/s_seeds/seeds.md runs/s_seed1/eval/results.json runs/s_seed2/eval/results.json

step "sam2click-bench (the smallest weight-free env-step cases)"
"$bin/sam2click-bench" --device cpu --no-slow --threads 1 --paths bench/bench_env.py \
    --select "test_env_step and weightfree and B1"
exists bench-results/*.json bench-results/*.md
grep -q '"pytest_exit": 0' bench-results/*.json
grep -q "test_env_step\[weightfree-B1\]" bench-results/*.json

step "nothing was written into the checkout"
new_files > "$work/after"
written=$(comm -13 "$work/before" "$work/after")
[ -z "$written" ] || { echo "a command wrote into the checkout: $written"; exit 1; }
echo; echo "wheel smoke test passed"
