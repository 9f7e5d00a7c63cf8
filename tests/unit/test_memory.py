import pytest
import torch

import fastsurface as fs
from fastsurface._support import memory
from fastsurface.engine import _tiles
from fastsurface.engine.options import DEFAULT_BUDGET

GIB = 2**30
CPU = torch.device("cpu")


@pytest.fixture
def machine(monkeypatch):
    """Pretend the host has ``available`` bytes free."""

    def set_available(available):
        monkeypatch.setattr(memory, "available_bytes", lambda device: available)

    return set_available


def test_the_defaults_fit_a_24_gb_machine_with_room_to_spare(machine):
    machine(24 * 10**9)
    surface = fs.loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(100))  # the default 80 x 80 grid
    assert surface.loss.shape == (80, 80)
    machine(GIB)  # and even a machine with 1 GiB free
    _tiles.check_fits((80, 80), CPU, DEFAULT_BUDGET["cpu"], None)


def test_a_grid_beyond_the_available_memory_is_refused_before_any_work(machine):
    machine(24 * 10**9)
    _tiles.check_fits((30_000, 30_000), CPU, 256 * 2**20, None)  # 14.4 GB of float64 sums and results
    with pytest.raises(fs.FastsurfaceError, match=r"`w1` x `w2`: a 40000 x 40000 grid needs about 23.8 GiB"):
        _tiles.check_fits((40_000, 40_000), CPU, 256 * 2**20, None)


def test_budget_and_tile_size_are_held_to_the_available_memory(machine):
    machine(10 * GIB)
    with pytest.raises(fs.FastsurfaceError, match="`memory_budget`"):
        _tiles.check_fits((10, 10), CPU, 9 * GIB, None)
    assert _tiles.working_bytes(2**20, 1024) == 4 * 2**20
    with pytest.raises(fs.FastsurfaceError, match="`tile_points`"):
        _tiles.check_fits((10, 10), CPU, GIB, 256 * 9)


def test_unknown_available_memory_refuses_nothing(machine):
    machine(None)
    _tiles.check_fits((10**6, 10**6), CPU, 2**60, None)


def test_the_host_reading_is_plausible():
    available = memory.available_bytes(CPU)
    assert available is None or 0 < available < 2**50
