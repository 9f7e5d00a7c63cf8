"""Sharding a surface in one process (over processes under torchrun:
``tests/system/test_distributed_torchrun.py``)."""

import pytest

import fastsurface as fs
from fastsurface.runs.distributed import sharded_loss_surface
from tests.helpers import assert_close


def test_one_process_equals_loss_surface_for_any_block_size(rng):
    data = (rng.normal(size=300), rng.normal(size=300))
    w1, w2 = fs.axis(-2, 2, 0.25), fs.axis(-1, 1, 0.5)
    reference = fs.loss_surface(fs.ANN(1, 1, 1), data, w1, w2, dtype="float64", method="vmap")
    for rows in (1, 5, 16):
        for shard in ("grid", "data"):
            run = sharded_loss_surface(
                fs.ANN(1, 1, 1), data, w1, w2, block_rows=rows, shard=shard, dtype="float64", method="vmap"
            )
            assert run.ranks == 1 and run.shard == shard
            assert_close(run.surface.loss, reference.loss, rtol=1e-12)


def test_shard_and_checkpoint_arguments_are_checked(rng):
    data = (rng.normal(size=30), rng.normal(size=30))
    with pytest.raises(fs.FastsurfaceError, match="`shard`"):
        sharded_loss_surface(fs.ANN(1, 1, 1), data, shard="rows")
    with pytest.raises(fs.FastsurfaceError, match="`checkpoint_dir`"):
        sharded_loss_surface(fs.ANN(1, 1, 1), data, shard="data", checkpoint_dir="somewhere")
