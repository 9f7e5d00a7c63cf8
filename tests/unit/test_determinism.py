"""Same inputs and seeds give the same numbers, bit for bit, on CPU, in one process
(across processes: ``tests/system/test_determinism_across_processes.py``)."""

import pytest
import torch

import fastsurface as fs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tile_points", [None, 13])
@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_repeated_surfaces_are_identical(dtype, tile_points, reduction):
    data = fs.piecewise_dataset(700, seed=1)
    runs = [
        fs.loss_surface(
            fs.ANN(1, 1, 1),
            data,
            fs.axis(-2, 2, 0.5),
            fs.axis(-2, 2, 0.4),
            dtype=dtype,
            tile_points=tile_points,
            reduction=reduction,
            device="cpu",
        ).loss
        for _ in range(2)
    ]
    assert runs[0].tobytes() == runs[1].tobytes()


@pytest.mark.parametrize("record", ["epoch", "step"])
def test_repeated_training_is_identical(record):
    train, test = fs.train_test_split(*fs.piecewise_dataset(600))
    paths = [fs.train_sgd(fs.ANN(1, 1, 1), train, test, epochs=2, record=record, device="cpu") for _ in range(2)]
    for field in ("w1", "w2", "loss", "step"):
        assert getattr(paths[0], field).tobytes() == getattr(paths[1], field).tobytes()
