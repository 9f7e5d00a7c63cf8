"""Peak memory stays within the budget whatever the grid size (measured in a subprocess).

Peak resident memory is read with ``getrusage`` after a warm-up, so that libraries
and allocator caches loaded by the first call do not count."""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
import numpy as np
import fastsurface as fs

method, step, samples, budget = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
data = (rng.normal(size=samples), rng.normal(size=samples))
fs.loss_surface(fs.ANN(1, 1, 1), data, [0.0, 1.0], [0.0, 1.0], method=method, memory_budget=budget)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
grid = fs.axis(-2, 2, step)
surface = fs.loss_surface(fs.ANN(1, 1, 1), data, grid, grid, method=method, memory_budget=budget)
assert surface.method == method
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
MIB = 2**20
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def _peak_growth_mib(method: str, step: float, samples: int, budget: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, method, str(step), str(samples), str(budget)],
        capture_output=True,
        text=True,
        check=True,
        # One thread: small tiles under OpenMP spin-waiting crawl on a shared, busy machine.
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return int(done.stdout.split()[-1]) / 1024  # ru_maxrss is in KiB on Linux


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units differ")
def test_a_tiny_budget_bounds_the_brute_force_working_set():
    # 500 x 500 points x 200 samples: untiled, the activations alone would take > 2 GiB.
    growth = _peak_growth_mib("vmap", 0.008, 200, 4 * MIB)
    output = 500 * 500 * 8 / MIB
    assert growth < output + 4 + 40, f"peak grew by {growth:.0f} MiB"


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units differ")
def test_the_closed_form_on_16_million_points_stays_far_below_a_gigabyte():
    growth = _peak_growth_mib("closed_form", 0.001, 2000, 256 * MIB)
    output = 4000 * 4000 * 8 / MIB  # the float64 result itself: 122 MiB
    assert growth < output + 150, f"peak grew by {growth:.0f} MiB"
