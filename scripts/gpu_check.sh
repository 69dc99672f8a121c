#!/usr/bin/env bash
# The whole GPU check in one call of at most 10 minutes on a fresh GPU machine.
#
# The machine has python3, torch (CUDA), numpy, pytest and pytest-benchmark and reaches no
# package registry: the project's other dependencies travel as wheels in .whl/, filled
# beforehand with `pip download` on a machine that reaches one. Then, on the GPU machine, from the repository root:
#   bash scripts/gpu_check.sh
# It installs the wheels into /tmp/site, runs `pytest -m gpu`, the GPU benchmark (SAM2 b+ with
# random weights and the weight-free segmenter; B = 256 .. 16384; eager fp32, bf16 + compile,
# CUDA graphs) and writes the reports (JSON + Markdown + log, with FLOP and bandwidth
# accounting) under bench-results/ and a copy under $OUT (default bench-results/gpu_check/).
# Each phase has its own time limit, so a hang in one cannot eat the others' time.
#
# GPU_CHECK_DEVICE=cpu runs the same plumbing on a CPU (tiny plan) to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-results/gpu_check}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
say() { echo "[$(date +%T)] $*" | tee -a "$LOG"; }
status=0
phase() {  # phase <seconds> <name> <command...>: run with a time limit, keep going on failure
    local limit=$1 name=$2; shift 2
    say "start $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tail -n 25
    local rc=${PIPESTATUS[0]}
    say "end $name: exit $rc"
    [ "$rc" -eq 0 ] || status=1
}

if ls .whl/*.whl >/dev/null 2>&1; then
    say "installing $(ls .whl/*.whl | wc -l) wheels into /tmp/site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        || { say "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    say "no .whl/ here: using the installed environment"
    export PYTHONPATH=$PWD
fi
PY=${PYTHON:-python3}
$PY - <<'PY' | tee -a "$LOG"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
PY
command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

if [ "$DEVICE" = cuda ]; then
    phase 150 pytest_gpu $PY -m pytest -q -p no:cacheprovider -m gpu tests
    # eager fp32: env steps (B 256..16384, both segmenters, side by side with the prototype
    # loop), components, PPO update and iteration; then the opt-in fast paths, parity-gated
    phase 240 bench_eager $PY -m scripts.bench --device cuda --no-slow \
        --paths bench/bench_env.py bench/bench_components.py bench/bench_train.py
    phase 120 bench_bf16_compile $PY -m scripts.bench --device cuda --bf16 --compile --no-slow \
        --paths bench/bench_env.py
    phase 60 bench_cuda_graphs $PY -m scripts.bench --device cuda --cuda-graphs --no-slow \
        --paths bench/bench_env.py --select "env_step"
else  # plumbing check on a CPU: the smallest cases only
    phase 300 pytest_gpu_markers $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_env_fast_paths.py
    phase 600 bench_eager $PY -m scripts.bench --device cpu --no-slow --threads 1 \
        --paths bench/bench_env.py --select "weightfree and (baseline or 16)"
fi
cp bench-results/"$(date +%F)"_* "$OUT"/ 2>/dev/null
say "reports: $(ls bench-results/"$(date +%F)"_* 2>/dev/null | tr '\n' ' ')"
say "done, status $status"
exit $status
