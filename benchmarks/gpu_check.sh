#!/usr/bin/env bash
# The GPU check of BENCHMARKS.md (benchmarks/gpu_check.py), under 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh [OMNIGLOT_DIR]      # from the repository root
#
# Needs torch with CUDA, numpy, pyyaml and gymnasium; Ray for the workers' part (skipped,
# and said so, without it). distmeta runs from this checkout (PYTHONPATH), not installed.
# Writes $OUT/gpu_check.json (or bench_out/gpu_check.json) and prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/envs${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-bench_out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
exec timeout 480 python3 benchmarks/gpu_check.py --data-dir "${1:-../shared/data/omniglot}" \
    --json-out "$out/gpu_check.json"
