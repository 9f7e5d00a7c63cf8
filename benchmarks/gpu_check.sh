#!/usr/bin/env bash
# One command for a machine with CUDA: the CUDA correctness tests against the CPU, the
# bench table (CPU and CUDA, every path, steps 0.05 / 0.01 / 0.001), the model bench table
# (`bench --model`: MLPs and a digits-sized CNN, CPU and CUDA, against loss-landscapes and a
# per-point loop, with sgemm and activation ceilings), the drop-in against loss-landscapes on
# CUDA, the seed's 200 x 200 basin map (40,000 SGD runs) on CUDA as a pytest benchmark, then the
# `bench --basins` table of the same map on CPU and CUDA (against the article's training loop and
# a train_sgd loop, with tanh ceilings and peak memory). At most 12.5 minutes (the timeouts).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Needs torch with CUDA, numpy, pytest, pytest-benchmark; plotly, tqdm, hypothesis and
# loss-landscapes are installed from ./wheels when that folder exists (for machines
# without a package index; `pip download --no-deps -d wheels ...` them beforehand).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check_out}}
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
if [ -d wheels ]; then
  python -m pip install -q --no-index --find-links wheels plotly tqdm hypothesis
  python -m pip install -q --no-index --no-deps --find-links wheels loss-landscapes==3.0.6 || true
fi
python -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Every step runs even when an earlier one fails; the exit status says whether all passed.
status=0
# CUDA cases of the unit tests (they compare against CPU results) and the compiled kernel.
timeout 120 python -m pytest -q -p no:cacheprovider tests -k "cuda or compiled" 2>&1 | tee "$out/cuda_tests.txt" || status=1
timeout 105 python -m fastsurface bench --device cpu --device cuda --steps 0.05 0.01 0.001 \
  --repeats 3 --max-seconds 20 --json "$out/bench.json" 2>&1 | tee "$out/bench.txt" || status=1
timeout 135 python -m fastsurface bench --model --device cpu --device cuda --repeats 3 --max-seconds 10 \
  --json "$out/bench_model.json" 2>&1 | tee "$out/bench_model.txt" || status=1
# The model cases' pytest-benchmark twins are left out: the table above holds their numbers.
timeout 60 python -m pytest -q -s -p no:cacheprovider benchmarks/test_any_model.py -k "cuda and drop_in" \
  --benchmark-json="$out/any_model.json" 2>&1 | tee "$out/any_model.txt" || status=1
timeout 150 python -m pytest -q -s -p no:cacheprovider benchmarks/test_basins.py -k cuda \
  --benchmark-json="$out/basins.json" 2>&1 | tee "$out/basins.txt" || status=1
# After the pytest run, whose CUDA compilation the on-disk inductor cache keeps; the CPU's compiles here.
timeout 180 python -m fastsurface bench --basins --device cpu --device cuda \
  --json "$out/bench_basins.json" 2>&1 | tee "$out/bench_basins.txt" || status=1
exit $status
