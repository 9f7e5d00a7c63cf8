"""Several metrics in one compiled pass against each metric's own compiled pass.

The fused kernel takes each metric's weighted sum as a reduction of its own, as the kernel
of that metric alone does: the sums agree bit for bit (on CPU; on CUDA the tolerance is
the compute dtype's rounding, as Triton may order a fused reduction differently)."""

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from fastsurface.engine._kernels import compile_available
from tests.helpers import DEVICES, assert_close

pytestmark = [
    pytest.mark.skipif(not compile_available(torch.device("cpu")), reason="needs a C++ compiler"),
    pytest.mark.slow,  # a compilation per metric and one for all of them
]


@pytest.mark.parametrize("device", DEVICES)
def test_one_compiled_pass_gives_each_metric_its_separate_compiled_pass(rng, device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
    x, y = rng.normal(size=(700, 4)).astype(np.float32), rng.integers(0, 3, size=700)
    plane = fs.random_plane(model, seed=1)
    w = np.linspace(-1, 1, 9)
    metrics = {"loss": "cross_entropy", "accuracy": "accuracy", "smoothed": nn.CrossEntropyLoss(label_smoothing=0.1)}
    common = {"plane": plane, "method": "compiled", "device": device, "tile_points": 32}
    together = fs.metric_surfaces(model, (x, y), w, w, metrics=metrics, **common)
    for name, metric in metrics.items():
        alone = fs.loss_surface(model, (x, y), w, w, loss=metric, **common)
        assert together[name].method == alone.method == "compiled"
        if device == "cpu":
            assert np.array_equal(together[name].loss, alone.loss), name
        else:
            assert_close(together[name].loss, alone.loss, rtol=1e-6, atol=1e-7)
