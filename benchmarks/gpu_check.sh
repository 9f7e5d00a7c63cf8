#!/usr/bin/env bash
# One command for a machine with CUDA: the CUDA correctness tests against the CPU, then
# the bench table (CPU and CUDA, every path, steps 0.05 / 0.01 / 0.001). Under 5 minutes.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Needs torch with CUDA, numpy, pytest; plotly and tqdm are installed from ./wheels when
# that folder exists (for machines without a package index), else from the index.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check_out}}
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
if [ -d wheels ]; then
  python -m pip install -q --no-index --find-links wheels plotly tqdm hypothesis
fi
python -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# CUDA cases of the unit tests (they compare against CPU results) and the compiled kernel.
timeout 150 python -m pytest -q -p no:cacheprovider tests -k "cuda or compiled" 2>&1 | tee "$out/cuda_tests.txt"
timeout 130 python -m fastsurface bench --device cpu --device cuda --steps 0.05 0.01 0.001 \
  --repeats 3 --max-seconds 20 --json "$out/bench.json" 2>&1 | tee "$out/bench.txt"
