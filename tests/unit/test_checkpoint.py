import copy
import functools

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface.runs import checkpoint as checkpoint_module
from fastsurface.runs.checkpoint import Checkpoint, plan_blocks
from tests.helpers import assert_close
from tests.unit.test_trusted_files import ZIP_DAMAGE, damage_zip_directory


@pytest.fixture
def problem():
    return fs.ANN(1, 1, 1), fs.piecewise_dataset(300), fs.axis(-2, 2, 0.5), fs.axis(-1, 1, 0.25)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_checkpointed_surface_matches_the_engine(tmp_path, problem, dtype):
    model, data, w1, w2 = problem
    direct = fs.loss_surface(model, data, w1, w2, dtype=dtype)
    blocked = fs.resumable_loss_surface(model, data, w1, w2, checkpoint_dir=tmp_path, block_rows=3, dtype=dtype)
    # Tiles fall differently on a block than on the whole grid, so float32 may differ in the last bits.
    assert_close(blocked.loss, direct.loss, rtol=1e-6 if dtype == torch.float32 else 1e-12)
    assert (blocked.labels, blocked.reduction, blocked.samples, blocked.dtype) == (
        direct.labels,
        direct.reduction,
        direct.samples,
        direct.dtype,
    )
    assert list(tmp_path.iterdir()) == []


def test_finished_blocks_are_not_computed_again(tmp_path, problem, monkeypatch):
    model, data, w1, w2 = problem
    run = Checkpoint.open(tmp_path, model, data, w1, w2, block_rows=2)
    assert run.compute(run.blocks[:2]) == 2
    computed = []
    evaluate = checkpoint_module.grid_surface
    monkeypatch.setattr(
        checkpoint_module,
        "grid_surface",
        lambda m, d, rows, *a, **k: computed.append(rows[0]) or evaluate(m, d, rows, *a, **k),
    )
    again = Checkpoint.open(tmp_path, model, data, w1, w2, block_rows=2)
    assert again.folder == run.folder and again.finished() == list(run.blocks[:2])
    assert again.compute() == 2 and computed == [w1[4], w1[6]]


def test_blocks_shared_between_workers_assemble_the_same_surface(tmp_path, problem):
    model, data, w1, w2 = problem
    workers = [Checkpoint.open(tmp_path, model, data, w1, w2, block_rows=1) for _ in range(3)]
    for rank, worker in enumerate(workers):
        assert worker.pending() == list(worker.blocks[rank:]) or rank > 0
        worker.compute(worker.blocks[rank :: len(workers)])
    assert workers[0].pending() == []
    alone = fs.resumable_loss_surface(model, data, w1, w2, checkpoint_dir=tmp_path / "alone", block_rows=1)
    assert workers[1].assemble().loss.tobytes() == alone.loss.tobytes()


# Ways a block file gets damaged: truncated, or a byte of its zip directory that zipfile cannot read past.
BLOCK_DAMAGE = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:-10]),
    **{case: functools.partial(damage_zip_directory, case=case) for case in ZIP_DAMAGE},
}


@pytest.mark.parametrize("damage", sorted(BLOCK_DAMAGE))
def test_a_damaged_block_is_computed_again(tmp_path, problem, damage):
    model, data, w1, w2 = problem
    run = Checkpoint.open(tmp_path, model, data, w1, w2, block_rows=3)
    run.compute()
    reference = run.assemble().loss
    BLOCK_DAMAGE[damage](run.block_path(run.blocks[1]))
    assert run.pending() == [run.blocks[1]]
    assert run.compute() == 1
    assert run.assemble().loss.tobytes() == reference.tobytes()


def test_other_arguments_make_another_run(tmp_path, problem):
    model, data, w1, w2 = problem
    folders = {
        Checkpoint.open(tmp_path, model, data, w1, w2, block_rows=2).folder,
        Checkpoint.open(tmp_path, model, data, w1, w2, block_rows=3).folder,
        Checkpoint.open(tmp_path, model, data, w1, w2, block_rows=2, reduction="batch_mean").folder,
        Checkpoint.open(tmp_path, model, data, w1, w2[:-1], block_rows=2).folder,
        Checkpoint.open(tmp_path, model, (data[0], data[1] + 1), w1, w2, block_rows=2).folder,
        Checkpoint.open(tmp_path, model, data, w1, w2, block_rows=2, dtype="float64").folder,
    }
    assert len(folders) == 6


def _scaled_error(prediction, target, scale):
    return scale * (prediction - target).square().mean(1)


class _ScaledError:
    def __init__(self, scale):
        self.scale = scale

    def __call__(self, prediction, target):
        return _scaled_error(prediction, target, self.scale)


class _Applied(torch.nn.Module):
    """Two weights and an activation function kept as a plain attribute."""

    def __init__(self, function):
        super().__init__()
        self.first, self.second, self.function = (
            torch.nn.Linear(1, 1, bias=False),
            torch.nn.Linear(1, 1, bias=False),
            function,
        )

    def forward(self, x):
        function = self.function() if isinstance(self.function, type) else self.function
        return self.second(function(self.first(x)))


def test_models_and_losses_that_differ_off_their_tensors_make_another_run(tmp_path, problem):
    """Same weights, other parameter-free layer or attribute; two lambdas under one name;
    an explicit key with other options."""
    _, data, w1, w2 = problem
    torch.manual_seed(0)
    tanh = torch.nn.Sequential(torch.nn.Linear(1, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    relu = copy.deepcopy(tanh)
    relu[1] = torch.nn.ReLU()
    slope = copy.deepcopy(tanh)
    slope[1] = torch.nn.LeakyReLU(0.1)
    steeper = copy.deepcopy(slope)
    steeper[1].negative_slope = 0.2
    plane = fs.entry_plane(tanh, "0.weight[0, 0]", "2.weight[0, 1]")
    folders = {Checkpoint.open(tmp_path, m, data, w1, w2, plane=plane).folder for m in (tanh, relu, slope, steeper)}
    assert len(folders) == 4
    losses = (
        lambda p, t: (p - t).abs().mean(1),
        lambda p, t: (p - t).square().mean(1),
        functools.partial(_scaled_error, scale=1.0),
        functools.partial(_scaled_error, scale=100.0),
        _ScaledError(1.0),
        _ScaledError(100.0),
    )
    folders = {Checkpoint.open(tmp_path, tanh, data, w1, w2, plane=plane, loss=loss).folder for loss in losses}
    assert len(folders) == len(losses)
    base = _Applied(torch.tanh)  # every variant below has base's weights: only the difference counts
    variants = [copy.deepcopy(base) for _ in range(8)]
    for variant, function in zip(variants[1:4], (torch.relu, torch.nn.Tanh, torch.nn.ReLU), strict=True):
        variant.function = function
    variants[4]._scale = 2.0  # a private setting the forward might read
    variants[5].register_buffer("offset", torch.ones(1), persistent=False)
    for variant, value in zip(variants[6:], (1.0, 2.0), strict=True):
        variant.helpers = [torch.nn.Linear(1, 1)]  # an unregistered module: its weights still count
        torch.nn.init.constant_(variant.helpers[0].weight, value)
    folders = [Checkpoint.open(tmp_path, m, data, w1, w2).folder for m in variants]
    assert len(set(folders)) == len(variants)
    assert Checkpoint.open(tmp_path, copy.deepcopy(base), data, w1, w2).folder == folders[0]
    keyed = {
        Checkpoint.open(tmp_path, tanh, data, w1, w2, plane=plane, key="k", **options).folder
        for options in ({}, {"reduction": "batch_mean"}, {"dtype": "float64"})
    }
    assert len(keyed) == 3


def test_the_key_ignores_weights_the_plane_overrides(tmp_path, problem):
    _, data, w1, w2 = problem
    first, second = fs.ANN(1, 1, 1), fs.ANN(1, 1, 1)  # different random weights, both on the plane
    assert (
        Checkpoint.open(tmp_path, first, data, w1, w2).folder == Checkpoint.open(tmp_path, second, data, w1, w2).folder
    )
    wide = fs.ANN(1, 2, 1)
    plane = fs.entry_plane(wide, "net.Layer_1.weight[0, 0]", "net.Layer_1.weight[1, 0]")
    before = Checkpoint.open(tmp_path, wide, data, w1, w2, plane=plane).folder
    with torch.no_grad():
        wide.net.Layer_2.weight[0, 1] += 1  # a parameter off the plane: it changes the numbers
    assert Checkpoint.open(tmp_path, wide, data, w1, w2, plane=plane).folder != before


def test_unfinished_runs_do_not_assemble_and_iterables_need_a_key(tmp_path, problem):
    model, data, w1, w2 = problem
    with pytest.raises(fs.FastsurfaceError, match="unfinished"):
        Checkpoint.open(tmp_path, model, data, w1, w2).assemble()
    loader = [(torch.as_tensor(data[0][:50]), torch.as_tensor(data[1][:50, None]))]
    with pytest.raises(fs.FastsurfaceError, match="`key`"):
        Checkpoint.open(tmp_path, model, loader, w1, w2)
    keyed = fs.resumable_loss_surface(model, loader, w1, w2, checkpoint_dir=tmp_path, key="my run")
    assert np.isfinite(keyed.loss).all()
    with pytest.raises(fs.FastsurfaceError, match="`options`"):
        Checkpoint.open(tmp_path, model, data, w1, w2, tiles=3)


def test_blocks_cover_every_row_once():
    for rows in range(1, 12):
        for size in range(1, 14):
            blocks = plan_blocks(rows, size)
            assert [b.start for b in blocks[1:]] == [b.stop for b in blocks[:-1]]
            assert blocks[0].start == 0 and blocks[-1].stop == rows
