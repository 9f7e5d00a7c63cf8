"""The compiled kernels' tanh: relative accuracy over all of float32, and surfaces with
small activations, where an only absolutely accurate tanh would fail."""

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface.engine._inductor import CompiledFunction, accurate_tanh
from fastsurface.engine._kernels import compile_available
from tests.helpers import assert_close

# Relative error bound of accurate_tanh, float32 (Sleef's tanhf is within 6e-8).
TANH_RTOL = 4e-7
CPU = torch.device("cpu")
NEEDS_COMPILER = pytest.mark.skipif(not compile_available(CPU), reason="needs a C++ compiler")
# The first compilation in a process costs seconds, whichever test it falls on: all compiled cases are slow.
COMPILED = [NEEDS_COMPILER, pytest.mark.slow]


def _float32_sweep() -> torch.Tensor:
    """Every scale float32 has, both signs, dense from 8.5 to the input clamp at 9.5."""
    magnitudes = torch.logspace(-45, 38, 200_000, dtype=torch.float64).float()
    clamp = torch.linspace(8.5, 9.5, 100_001, dtype=torch.float32)
    positive = torch.cat([magnitudes, clamp, torch.linspace(0, 12, 100_001)])
    return torch.cat([positive, -positive])


def _compiled_tanh(x: torch.Tensor) -> torch.Tensor:
    return CompiledFunction(torch.tanh, key=None)(x)


def _relative_error(got: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    want = torch.tanh(x.double())
    return ((got.double() - want).abs() / want.abs()).nan_to_num(0.0)


EAGER_AND_COMPILED = pytest.mark.parametrize(
    "tanh", [accurate_tanh, pytest.param(_compiled_tanh, marks=COMPILED)], ids=["eager", "compiled"]
)


@EAGER_AND_COMPILED
def test_tanh_is_relatively_accurate_on_all_of_float32(tanh):
    x = _float32_sweep()
    got = tanh(x)
    assert float(_relative_error(got, x).max()) <= TANH_RTOL
    assert torch.equal(got == 0, x == 0) and float(got.abs().max()) <= 1.0


@pytest.mark.slow
@NEEDS_COMPILER
def test_compiled_tanh_on_every_positive_float32_below_9_5():
    # Exhaustive (about 1.1e9 values, ~30 s): the bound holds everywhere, not just on a
    # sweep. Odd symmetry is exact (the clamp and x² are symmetric), and beyond 9.5 the
    # result is the clamp's.
    top = int(np.array(9.5, dtype=np.float32).view(np.int32))
    step = 1 << 25
    worst = 0.0
    for start in range(0, top, step):
        x = torch.arange(start, start + step, dtype=torch.int32).view(torch.float32)  # past top: still finite
        worst = max(worst, float(_relative_error(_compiled_tanh(x), x).max()))
    assert worst <= TANH_RTOL


@pytest.mark.slow
@NEEDS_COMPILER
def test_compiled_float64_tanh_keeps_float64_accuracy():
    x = _float32_sweep().double()
    assert_close(_compiled_tanh(x), torch.tanh(x), rtol=1e-15)


@EAGER_AND_COMPILED
def test_tanh_keeps_signed_zeros_infinities_and_nan(tanh):
    x = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan")])
    got = tanh(x)
    assert got[:4].tolist() == [0.0, -0.0, 1.0, -1.0]
    assert torch.signbit(got[1]) and not torch.signbit(got[0])
    assert torch.isnan(got[4])


@pytest.mark.slow
@NEEDS_COMPILER
def test_compiled_surface_with_small_activations_matches_float64(rng):
    # A teacher with tiny weights: activations ~1e-5. A tanh with an absolute error of
    # 1e-7 (inductor's own decomposition) is off by ~1e-2 relative in each activation.
    x = rng.normal(1, 4.5, 200)
    y = 2e-3 * np.tanh(1e-5 * x)
    w1 = np.linspace(0.5e-5, 1.5e-5, 9)
    w2 = np.linspace(1e-3, 3e-3, 7)
    compiled = fs.loss_surface(fs.ANN(1, 1, 1), (x, y), w1, w2, method="compiled", tile_points=64, device="cpu")
    exact = fs.loss_surface(fs.ANN(1, 1, 1), (x, y), w1, w2, method="vmap", dtype=torch.float64, device="cpu")
    off_minimum = exact.loss > 1e-3 * exact.loss.max()
    assert_close(compiled.loss[off_minimum], exact.loss[off_minimum], rtol=2e-5)
