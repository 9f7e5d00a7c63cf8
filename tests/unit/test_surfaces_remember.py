"""Surfaces that remember how they were made (issue 17, item 2): the plane, a callable loss
and a description of the data travel with a ``Surface``, and the functions that continue
from it (``critical_points``, ``refine``, ``save``/``load``) use them by default."""

import dataclasses

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface._support.identity import describe_data
from fastsurface.runs import storage
from tests.helpers import small_mlp
from tests.unit.test_trusted_files import _metadata, _rewritten

AXIS = np.linspace(-1.0, 1.0, 9)


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = small_mlp()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 3)).astype(np.float32)
    y = np.tanh(x[:, :2] - x[:, 2:]).astype(np.float32)
    plane = fs.random_plane(model, seed=3)
    surface = fs.loss_surface(model, (x, y), AXIS, AXIS, plane=plane, reduction="batch_mean", batch_size=32)
    return model, (x, y), plane, surface


def test_a_surface_carries_its_plane_loss_and_a_description_of_its_data(problem):
    _, _, plane, surface = problem
    assert surface.plane is plane and surface.loss_function is None and surface.loss_name == "mse"
    description = surface.data_description
    assert (description.samples, description.input_shape, description.target_shape) == (96, (3,), (2,))
    assert (description.input_dtype, description.target_dtype) == ("float32", "float32")
    seed = fs.loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(40), AXIS, AXIS)
    assert seed.plane.same_as(fs.default_plane(fs.ANN(1, 1, 1)))


def test_the_fingerprint_is_of_the_values_in_any_dtype_array_type_or_device(problem):
    _, (x, y), _, surface = problem
    fingerprint = surface.data_description.fingerprint
    assert describe_data((torch.from_numpy(x).double(), torch.from_numpy(y))).fingerprint == fingerprint
    assert describe_data([x.astype(np.float64), y]).fingerprint == fingerprint
    changed = x.copy()
    changed[95, 2] = np.nextafter(changed[95, 2], np.float32(np.inf))
    assert describe_data((changed, y)).fingerprint != fingerprint
    assert describe_data((x.reshape(96, 3, 1), y)).fingerprint != fingerprint  # shapes count
    assert describe_data(iter([(x, y)])) is None  # an iterable cannot be read twice


def test_critical_points_and_refine_use_the_surfaces_plane_and_reduction(problem):
    model, data, plane, surface = problem
    assert fs.critical_points(surface, model, data, batch_size=32) == fs.critical_points(
        surface, model, data, plane=plane, reduction="batch_mean", batch_size=32
    )
    window = ((-0.25, 0.25), (0.0, 0.5))
    remembered = fs.refine(surface, model, data, window, 0.125, batch_size=32)
    told = fs.refine(surface, model, data, window, 0.125, plane=plane, reduction="batch_mean", batch_size=32)
    np.testing.assert_array_equal(remembered.loss, told.loss)
    assert remembered.plane is plane and remembered.data_description == surface.data_description
    direct = fs.loss_surface(
        model, data, remembered.w1, remembered.w2, plane=plane, reduction="batch_mean", batch_size=32
    )
    np.testing.assert_allclose(remembered.loss, direct.loss, rtol=1e-6)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda x, y: (x + 1, y), "fingerprint"),
        (lambda x, y: (x[:64], y[:64]), "samples 96 recorded, 64 given"),
        (lambda x, y: (x, y.reshape(96, 2, 1)), "target_shape"),
    ],
)
def test_other_data_are_refused_before_any_work_naming_what_differs(problem, change, named):
    model, (x, y), _, surface = problem
    for call in (
        lambda data: fs.critical_points(surface, model, data, batch_size=32),
        lambda data: fs.refine(surface, model, data, ((0, 0.5), (0, 0.5)), 0.25, batch_size=32),
    ):
        with pytest.raises(fs.FastsurfaceError, match=f"`data` must be the data the surface.*{named}"):
            call(change(x, y))


def test_an_explicit_plane_must_be_the_surfaces_own(problem):
    model, data, plane, surface = problem
    copy = plane.to(torch.device("cpu"), torch.float64)  # the same plane in another dtype counts as it
    assert fs.critical_points(surface, model, data, plane=copy, batch_size=32) == fs.critical_points(
        surface, model, data, batch_size=32
    )
    with pytest.raises(fs.FastsurfaceError, match="`plane` differs from the plane the surface was computed on"):
        fs.critical_points(surface, model, data, plane=fs.random_plane(model, seed=4), batch_size=32)


def test_a_surface_without_its_plane_says_so_rather_than_blaming_the_weights(problem):
    model, data, _, surface = problem
    with pytest.raises(fs.FastsurfaceError, match="this surface does not carry its plane"):
        fs.critical_points(dataclasses.replace(surface, plane=None), model, data, batch_size=32)


def test_save_and_load_keep_the_plane_and_the_description(problem, tmp_path):
    model, data, plane, surface = problem
    loaded = fs.load(fs.save(tmp_path / "s.npz", surface=surface)).surface
    assert loaded.plane.same_as(plane) and loaded.data_description == surface.data_description
    for part in ("origin", "first", "second"):
        for name, tensor in getattr(plane, part).items():
            assert torch.equal(getattr(loaded.plane, part)[name], tensor)
    assert fs.critical_points(loaded, model, data, batch_size=32) == fs.critical_points(
        surface, model, data, batch_size=32
    )
    with pytest.raises(fs.FastsurfaceError, match="`plane` differs"):
        fs.save(tmp_path / "t.npz", surface=surface, plane=fs.random_plane(model, seed=4))


def test_a_version_1_file_still_loads_without_a_description(problem, tmp_path):
    _, _, _, surface = problem
    path = fs.save(tmp_path / "s.npz", surface=surface)
    metadata = _metadata(path)
    del metadata["surface"]["data_description"]
    loaded = fs.load(_rewritten(path, {**metadata, "format_version": 1})).surface
    assert loaded.data_description is None and loaded.plane.same_as(surface.plane)
    np.testing.assert_array_equal(loaded.loss, surface.loss)


@pytest.mark.parametrize(
    "description",
    [
        {"samples": "96"},
        {"samples": True},
        {"input_shape": [2.0]},
        {"fingerprint": 7},
        {"target_dtype": None},
        {"extra": 1},
    ],
    ids=repr,
)
def test_a_description_of_the_wrong_types_is_refused_on_load(problem, tmp_path, description):
    _, _, _, surface = problem
    path = fs.save(tmp_path / "s.npz", surface=surface)
    metadata = _metadata(path)
    metadata["surface"]["data_description"] |= description
    with pytest.raises(fs.FastsurfaceError, match=r"data description|data_description"):
        fs.load(_rewritten(path, metadata))


def test_a_description_of_the_wrong_types_is_refused_on_save(problem, tmp_path):
    _, _, _, surface = problem
    wrong = dataclasses.replace(surface.data_description, samples="96")
    with pytest.raises(fs.FastsurfaceError, match="data_description"):
        fs.save(tmp_path / "s.npz", surface=dataclasses.replace(surface, data_description=wrong))


def test_a_checkpointed_surface_remembers_as_a_direct_one_and_its_blocks_hold_no_plane(problem, tmp_path):
    model, data, plane, _ = problem
    run = fs.Checkpoint.open(tmp_path, model, data, AXIS, AXIS, block_rows=3, plane=plane, reduction="batch_mean")
    run.compute()
    assembled = run.assemble()
    assert assembled.plane is plane and assembled.data_description == describe_data(data)
    assert all("plane" not in _metadata(run.block_path(block)) for block in run.blocks)
    assert storage.FORMAT_VERSION == 2


def test_a_data_sharded_surface_describes_the_whole_data_not_a_share(problem):
    model, data, plane, surface = problem
    sharded = fs.sharded_loss_surface(model, data, AXIS, AXIS, shard="data", plane=plane, reduction="batch_mean")
    assert sharded.surface.plane is plane and sharded.surface.data_description == surface.data_description
