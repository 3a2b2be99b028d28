#!/usr/bin/env bash
# One GPU session's worth of measurements, run from the repository root on a bare GPU machine that has
# PyTorch but none of ray/gymnasium/diffusers: install the wheels built by shared/tools/device-wheels (.whl/),
# then the SD-1.5-shaped benchmark (bench_gpu_sd.py) and N env runners sharing the GPU (bench_scaling.py).
# Results go to $OUT (default bench/gpu-out).
#   bash bench/gpu_device_run.sh             # SD-1.5 shapes: overhead, throughput, paper loop, fast path; GPU scaling
#   bash bench/gpu_device_run.sh backbones   # SDXL and ModelScope text-to-video shapes: throughput and peak memory
#   bash bench/gpu_device_run.sh compiled    # a FIND iteration with --compile-unet vs the plain eager pipeline
#   bash bench/gpu_device_run.sh compare     # FIND vs DDPO (Ray Train, use_gpu) on the shapes world, seed 0 then 0-2
#   bash bench/gpu_device_run.sh ddpo-phases # where a DDPO iteration's time goes on the GPU (12 iterations, seed 0)
MODE=${1:-sd15}
set -uo pipefail
OUT=${OUT:-bench/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import ray, diffusers, gymnasium" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
  # find_rl.envs / find_rl.tuning are package-dir mappings in pyproject.toml; without an install, link them
  ln -sfn ../envs find_rl/envs && ln -sfn ../tuning find_rl/tuning
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1
python3 -c "import torch, ray, diffusers, transformers; print('torch', torch.__version__, 'ray', ray.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
if [ "$MODE" = compiled ]; then  # FIND with --compile-unet vs the plain eager pipeline, same batch
  timeout 300 python3 bench/bench_gpu_sd.py --out "$OUT" --find-compile --skip throughput paper fastpath --iterations 2 2>&1 \
    | grep -v -e "Loading weights" -e "Writing model" | tee "$OUT/gpu_bench_compiled.log"
  exit 0
fi
if [ "$MODE" = compare ]; then  # python -m find_rl.evaluate --methods ... --device cuda; finished runs are reused
  for seeds in 0 0,1,2; do
    timeout "${COMPARE_TIMEOUT:-240}" python3 -m find_rl.evaluate --methods base,ddpo,find --seeds "$seeds" --device cuda \
      --ddpo-workers 1 --threads 4 --out /tmp/gpu-compare 2>&1 | grep -v -e WARNING -e "core_worker.cc" -e "Loading weights" \
      | tee -a "$OUT/compare.log"
    cp /tmp/gpu-compare/report.md /tmp/gpu-compare/results.json /tmp/gpu-compare/summary.json \
      /tmp/gpu-compare/alignment_vs_wall.png "$OUT/" 2>/dev/null
  done
  exit 0
fi
if [ "$MODE" = ddpo-phases ]; then
  timeout 200 python3 -m find_rl.evaluate --methods ddpo --seeds 0 --iterations 12 --samples 64 --device cuda \
    --ddpo-workers 1 --threads 4 --out /tmp/ddpo-phases 2>&1 | grep -v -e WARNING -e "core_worker.cc" > "$OUT/ddpo_phases.log"
  python3 bench/ddpo_phases.py /tmp/ddpo-phases/runs/ddpo_s0/method.json | tee "$OUT/ddpo_phases.txt"
  exit 0
fi
if [ "$MODE" = backbones ]; then
  timeout 190 python3 bench/bench_gpu_sd.py --preset sdxl --out "$OUT/sdxl" --skip overhead paper fastpath \
    --batches 4x20 8x20 --iterations 2 2>&1 | grep -v -e "Loading weights" -e "Writing model" | tee "$OUT/sdxl.log"
  rm -rf /tmp/find_rl_bench_models
  timeout 130 python3 bench/bench_gpu_sd.py --preset modelscope --out "$OUT/modelscope" --skip overhead paper fastpath \
    --batches 2x20 4x20 --iterations 2 2>&1 | grep -v -e "Loading weights" -e "Writing model" | tee "$OUT/modelscope.log"
  exit 0
fi
timeout 400 python3 bench/bench_gpu_sd.py --out "$OUT" --iterations 2 2>&1 | grep -v -e "Loading weights" -e "Writing model" | tee "$OUT/gpu_bench.log"
timeout 130 python3 bench/bench_scaling.py --device cuda --runners 1 2 4 --samples-per-prompt 128 --repeats 3 \
  --json "$OUT/scaling_gpu.json" 2>&1 | grep -v -e WARNING -e "core_worker.cc" | tee "$OUT/scaling_gpu.log"
