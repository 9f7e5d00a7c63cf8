import copy

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from tests.helpers import assert_close


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1))


def _data(rng, n=40):
    return rng.normal(size=(n, 2)).astype(np.float32), rng.normal(size=(n, 1)).astype(np.float32)


def _flat(model):
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()]).numpy()


def _flat_plane(model, plane):
    """The plane's origin over all parameters (the model's values where it moves none) and
    its two directions as columns, shape ``(D,)`` and ``(D, 2)``."""
    parameters = dict(model.named_parameters())
    origin = np.concatenate(
        [plane.origin.get(n, p.detach().double()).reshape(-1).numpy() for n, p in parameters.items()]
    )
    span = [
        np.concatenate([d.get(n, torch.zeros(p.shape)).double().reshape(-1).numpy() for n, p in parameters.items()])
        for d in (plane.first, plane.second)
    ]
    return origin, np.stack(span, axis=1)


def test_recorded_vectors_equal_a_plain_training_loop(rng):
    model, (x, y) = _model(), _data(rng)
    before = _flat(model)
    path = fs.record_path(
        model, (x, y), optimizer=lambda p: torch.optim.Adam(p, lr=0.05), epochs=2, batch_size=16, record="step", seed=3
    )
    assert np.array_equal(_flat(model), before)
    reference = copy.deepcopy(model)
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.05)
    generator, expected = torch.Generator().manual_seed(3), [_flat(reference)]
    xs, ys = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(2):
        order = torch.randperm(len(xs), generator=generator)
        for start in range(0, len(xs), 16):
            index = order[start : start + 16]
            optimizer.zero_grad()
            ((reference(xs[index]) - ys[index]) ** 2).mean().backward()
            optimizer.step()
            expected.append(_flat(reference))
    assert_close(path.vectors, np.stack(expected), rtol=0, atol=0)
    assert path.step.tolist() == list(range(7))


def test_record_choices(rng):
    model, data = _model(), _data(rng)
    assert fs.record_path(model, data, epochs=3, batch_size=16).step.tolist() == [0, 3, 6, 9]
    assert fs.record_path(model, data, epochs=3, batch_size=16, record=[2, 5, 9]).step.tolist() == [2, 5, 9]
    with pytest.raises(fs.FastsurfaceError, match="`record`"):
        fs.record_path(model, data, record="never")


def test_projection_recovers_in_plane_points_and_measures_the_distance_off_it(rng):
    model = _model()
    plane = fs.random_plane(model, seed=1)
    names = list(dict(model.named_parameters()))
    coordinates = rng.normal(size=(5, 2))
    off = [rng.normal(size=p.shape) for p in model.parameters()]
    models = []
    for k, (a, b) in enumerate(coordinates):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in moved.named_parameters():
                if name in plane.origin:
                    p.copy_(plane.origin[name] + a * plane.first[name] + b * plane.second[name])
                if k == 4:
                    p.add_(torch.as_tensor(off[names.index(name)], dtype=p.dtype))
        models.append(moved)
    path = fs.ParameterPath.from_models(models)
    projected = fs.project_path(model, plane, path)
    assert_close(np.stack([projected.a, projected.b])[:, :4].T, coordinates[:4], rtol=1e-5, atol=1e-5)
    assert_close(projected.residual[:4], np.zeros(4), rtol=0, atol=1e-5)
    # Reference: least squares on the full flattened vectors with numpy.
    origin, span = _flat_plane(model, plane)
    solution, *_ = np.linalg.lstsq(span, path.vectors[4] - origin, rcond=None)
    residual = np.linalg.norm(path.vectors[4] - origin - span @ solution)
    assert_close([projected.a[4], projected.b[4], projected.residual[4]], [*solution, residual], rtol=1e-8)
    assert 0 < projected.relative_residual[4] <= 1


def test_projected_losses_lie_on_the_surface_and_draw(rng):
    model, data = _model(), _data(rng)
    path = fs.record_path(model, data, epochs=4, batch_size=8)
    principal = fs.pca_plane(path)
    assert principal.explained_variance_ratio.shape == (2,) and principal.explained_variance_ratio.sum() <= 1 + 1e-12
    projected = fs.project_path(model, principal.plane, path, data, device="cpu")
    for a, b, loss in zip(projected.a, projected.b, projected.loss, strict=True):
        surface = fs.loss_surface(model, data, [a], [b], plane=principal.plane, device="cpu")
        assert_close(loss, surface.loss[0, 0], rtol=1e-6)
    figure = fs.plot_surface(
        fs.loss_surface(model, data, [-1.0, 0.0], [-1.0, 0.0], plane=principal.plane), projected.trajectory()
    )
    assert len(figure.data) == 2


def test_pca_of_a_planar_path_explains_all_variance(rng):
    model = _model()
    plane = fs.random_plane(model, seed=2, normalization=None, one_dim="keep")
    models = []
    for a, b in rng.normal(size=(6, 2)):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in moved.named_parameters():
                p.copy_(plane.origin[name] + a * plane.first[name] + b * plane.second[name])
        models.append(moved)
    principal = fs.pca_plane(fs.ParameterPath.from_models(models))
    assert principal.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(fs.FastsurfaceError, match="`path`"):
        fs.pca_plane(fs.ParameterPath.from_models(models[:2]))


def test_dropout_draws_from_the_seed_and_leaves_the_global_generator_alone(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    data = _data(rng)
    paths = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        state = torch.random.get_rng_state()
        paths.append(fs.record_path(model, data, epochs=2, seed=3).vectors)
        assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(*paths)
    assert not np.array_equal(paths[0], fs.record_path(model, data, epochs=2, seed=4).vectors)
