import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from fastsurface.analysis.critical import grid_candidates
from tests.helpers import DEVICES, assert_close

# (a, b) -> (kind, eigenvalues) of every critical point, for analytic surfaces.
SADDLE = {(0.0, 0.0): ("saddle", (-2.0, 2.0))}
DOUBLE_WELL = {
    (-1.0, 0.0): ("minimum", (2.0, 8.0)),
    (1.0, 0.0): ("minimum", (2.0, 8.0)),
    (0.0, 0.0): ("saddle", (-4.0, 2.0)),
}
# (a² - 1)² - (b² - 1)²: every kind, nine points.
EGG_CRATE = {
    **{(a, 0.0): ("minimum", (4.0, 8.0)) for a in (-1.0, 1.0)},
    **{(0.0, b): ("maximum", (-8.0, -4.0)) for b in (-1.0, 1.0)},
    **{(a, b): ("saddle", (-8.0, 8.0)) for a in (-1.0, 1.0) for b in (-1.0, 1.0)},
    (0.0, 0.0): ("saddle", (-4.0, 4.0)),
}
CASES = [
    (lambda a, b: a**2 - b**2, SADDLE),
    (lambda a, b: (a**2 - 1) ** 2 + b**2, DOUBLE_WELL),
    (lambda a, b: (a**2 - 1) ** 2 - (b**2 - 1) ** 2, EGG_CRATE),
]


def assert_found(points, expected, tolerance=1e-4):
    """Each expected point found once, with its kind, within ``tolerance``; nothing else."""
    assert len(points) == len(expected), [(p.kind, p.w1, p.w2) for p in points]
    for (a, b), (kind, eigenvalues) in expected.items():
        (match,) = [p for p in points if np.hypot(p.w1 - a, p.w2 - b) < tolerance]
        assert match.kind == kind
        if eigenvalues is not None:
            assert_close(match.eigenvalues, eigenvalues, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("function", "expected"), CASES)
def test_analytic_surfaces_every_point_with_its_kind_off_the_grid(rng, function, expected):
    # Grids offset at random, with different steps, so no critical point is a grid point.
    first = fs.axis(-1.6 + rng.uniform(0, 0.1), 1.6, 0.1 + rng.uniform(0, 0.02))
    second = fs.axis(-1.5 + rng.uniform(0, 0.1), 1.5, 0.07 + rng.uniform(0, 0.02))
    points = fs.critical_points_of(function, first, second)
    assert_found(points, expected, tolerance=1e-8)
    assert all(p.gradient_norm < 1e-8 for p in points)
    assert [p.loss for p in points] == sorted(p.loss for p in points)


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (lambda a, b: a * b, (0.0, 0.0)),
        (lambda a, b: a**2 - b**2, (0.0, 0.0)),
        (lambda a, b: (a - 0.3) * (b + 0.2), (0.3, -0.2)),
    ],
)
@pytest.mark.parametrize(
    "w",  # the saddle on a grid point, at a cell's centre (grid values symmetric about it), off-centre
    [np.linspace(-1.0, 1.0, 21), np.linspace(-1.05, 1.05, 22), np.linspace(-1.02, 0.98, 21)],
    ids=["on-point", "cell-centre", "off-centre"],
)
def test_a_saddle_between_grid_points_is_found(function, expected, w):
    saddles = [(p.w1, p.w2) for p in fs.critical_points_of(function, w, w) if p.kind == "saddle"]
    assert len(saddles) == 1
    assert_close(np.array(saddles[0]), np.array(expected), rtol=0, atol=1e-9)


def test_a_seed_surface_shows_the_same_saddles_on_coarse_and_fine_grids():
    data = fs.piecewise_dataset(200, seed=3)  # saddles at w1 ≈ ±1.24, between the coarse grid's points

    def saddles(count):
        w = np.linspace(-2, 2, count)
        surface = fs.loss_surface(fs.ANN(1, 1, 1), data, w, w, reduction="batch_mean", batch_size=48)
        found = fs.critical_points(surface, fs.ANN(1, 1, 1), data, batch_size=48)
        return np.array(sorted((p.w1, p.w2) for p in found if p.kind == "saddle"))

    coarse, fine = saddles(21), saddles(81)
    assert len(coarse) == len(fine) == 3
    assert_close(coarse, fine, rtol=0, atol=1e-8)


def test_points_outside_the_grid_are_not_reported():
    points = fs.critical_points_of(lambda a, b: (a**2 - 1) ** 2 + b**2, fs.axis(0.3, 2, 0.1), fs.axis(-1, 1, 0.1))
    assert_found(points, {(1.0, 0.0): ("minimum", (2.0, 8.0))})


def seed_saddles(x, y):
    """The seed surface's critical points in w1 × w2 = [-3, 3] × [-2, 2], from float64 numpy.

    The loss of ``w2 * tanh(w1 * x)`` has gradient ``(0, -2 mean(y tanh(w1 x)))`` on the
    line ``w2 = 0``, so the roots of ``g(w1) = mean(y tanh(w1 x))`` are critical; ``w1 = 0``
    is one. Off that line there are none in this window (the loss falls towards
    ``w1 -> 0, |w2| -> inf``). Roots found by bisection.
    """
    x, y = x.astype(np.float64), y.astype(np.float64)

    def g(w1):
        return np.mean(y * np.tanh(w1 * x))

    roots = [0.0]
    for low, high in ((1.0, 3.0), (-3.0, -1.0)):
        assert np.sign(g(low)) != np.sign(g(high))
        for _ in range(200):
            middle = (low + high) / 2
            low, high = (middle, high) if np.sign(g(middle)) == np.sign(g(low)) else (low, middle)
        roots.append((low + high) / 2)
    return {(root, 0.0): ("saddle", None) for root in roots}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seed_surface_saddles(seed_split, dtype):
    _, test = seed_split
    model = fs.ANN(1, 1, 1)
    surface = fs.loss_surface(model, test, fs.axis(-3, 3, 0.1), fs.axis(-2, 2, 0.1), dtype=dtype)
    points = fs.critical_points(surface, model, test, device="cpu")
    assert_found(points, seed_saddles(*test))
    origin = next(p for p in points if p.w1 == 0)
    xy = -2 * np.mean(test[0].astype(np.float64) * test[1])  # Hessian at 0: [[0, c], [c, 0]]
    assert_close(origin.eigenvalues, (-abs(xy), abs(xy)), rtol=1e-10)


def linear_model_and_data(rng, n=300):
    model = nn.Linear(1, 1)
    x = rng.normal(0, 2, n)
    y = 1.5 * x - 0.7 + rng.normal(0, 0.5, n)
    plane = fs.entry_plane(model, "weight[0, 0]", "bias[0]", labels=("weight", "bias"))
    return model, (x, y), plane


def weighted_least_squares(x, y, weight):
    """float64 minimiser of sum(weight * (w x + c - y)²) and the Hessian of its mean."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    root = np.sqrt(weight)
    solution = np.linalg.lstsq(design * root[:, None], y * root, rcond=None)[0]
    return solution, 2 * (design * weight[:, None]).T @ design


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_a_general_model_minimum_is_the_least_squares_fit(rng, reduction, device):
    model, (x, y), plane = linear_model_and_data(rng)
    batch = 64
    sizes = np.minimum(batch, len(x) - np.arange(0, len(x), batch))
    weight = np.repeat(1.0 / sizes, sizes) if reduction == "batch_mean" else np.ones(len(x))
    count = len(sizes) if reduction == "batch_mean" else len(x)
    (w, c), hessian = weighted_least_squares(x, y, weight)
    surface = fs.loss_surface(
        model,
        (x, y),
        fs.axis(0, 3, 0.13),
        fs.axis(-2, 1, 0.11),
        plane=plane,
        reduction=reduction,
        batch_size=batch,
        device=device,
    )
    points = fs.critical_points(surface, model, (x, y), plane=plane, batch_size=batch, device=device)
    assert_found(points, {(w, c): ("minimum", tuple(np.linalg.eigvalsh(hessian / count)))})
    residual = w * x + c - y
    assert_close(points[0].loss, np.sum(weight * residual**2) / count, rtol=1e-12)


def test_a_callable_loss_is_remembered_by_its_surface_and_asked_for_once_forgotten(rng):
    model, (x, y), plane = linear_model_and_data(rng)

    def negated_squared_error(prediction, target):
        return -(prediction - target).square().reshape(len(target), -1).mean(dim=1)

    surface = fs.loss_surface(
        model, (x, y), fs.axis(0, 3, 0.13), fs.axis(-2, 1, 0.11), plane=plane, loss=negated_squared_error
    )
    forgotten = dataclasses.replace(surface, loss_function=None)  # as a surface loaded from a file
    with pytest.raises(fs.FastsurfaceError, match="`loss` must be given"):
        fs.critical_points(forgotten, model, (x, y))
    (point,) = fs.critical_points(surface, model, (x, y))
    assert [point] == fs.critical_points(forgotten, model, (x, y), plane=plane, loss=negated_squared_error)
    (w, c), _ = weighted_least_squares(x, y, np.ones(len(x)))
    assert point.kind == "maximum" and np.hypot(point.w1 - w, point.w2 - c) < 1e-8


def test_an_mlp_plane_points_are_where_the_engines_finite_differences_vanish(rng):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    x = rng.normal(0, 2, 400)
    data = (x, np.sin(x) + rng.normal(0, 0.1, 400))
    plane = fs.entry_plane(mlp, "0.weight[0, 0]", "2.weight[0, 1]")
    a, b = mlp[0].weight[0, 0].item(), mlp[2].weight[0, 1].item()
    surface = fs.loss_surface(mlp, data, fs.axis(a - 2, a + 2, 0.2), fs.axis(b - 2, b + 2, 0.2), plane=plane)
    points = fs.critical_points(surface, mlp, data, plane=plane)
    assert points and all(p.kind in ("minimum", "saddle") for p in points)
    h = 1e-3
    steps = np.array([[0, 0], [h, 0], [-h, 0], [0, h], [0, -h], [h, h], [-h, -h], [h, -h], [-h, h]])
    for point in points:
        centre = np.array([point.w1, point.w2])
        around = fs.evaluate_points(mlp, plane, data, centre + steps, dtype="float64").loss.numpy()
        c, east, west, north, south, ne, sw, se, nw = around
        gradient = [(east - west) / (2 * h), (north - south) / (2 * h)]
        cross = (ne + sw - se - nw) / (4 * h * h)
        hessian = np.array([[east - 2 * c + west, 0], [0, north - 2 * c + south]]) / h**2 + [[0, cross], [cross, 0]]
        assert_close(point.loss, c, rtol=1e-12)
        assert np.abs(gradient).max() < 1e-6 * max(1.0, np.abs(np.linalg.eigvalsh(hessian)).max())
        assert_close(point.eigenvalues, np.linalg.eigvalsh(hessian), rtol=1e-4, atol=1e-6)


def test_grid_candidates_minimum_maximum_saddle_and_flat_valley():
    bowl = np.add.outer(np.arange(-2, 3) ** 2, np.arange(-2, 3) ** 2).astype(float)
    assert grid_candidates(bowl) == (np.array([2]), np.array([2]))
    assert grid_candidates(-bowl) == (np.array([2]), np.array([2]))
    valley = np.add.outer(np.zeros(5), np.arange(-2, 3) ** 2).astype(float)  # flat along rows
    assert grid_candidates(valley)[0].tolist() == [1, 2, 3]
    assert grid_candidates(np.ones((5, 5)))[0].size == 0  # a plateau has no candidate
    holed = bowl.copy()
    holed[1, 1], holed[3, 3] = np.inf, np.nan  # overflowed or undefined losses: no candidate beside them
    assert grid_candidates(holed)[0].size == 0


def test_the_caller_model_and_global_state_are_untouched(rng):
    model, data, plane = linear_model_and_data(rng)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    surface = fs.loss_surface(model, data, fs.axis(0, 3, 0.25), fs.axis(-2, 1, 0.25), plane=plane)
    fs.critical_points(surface, model, data, plane=plane)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(state, torch.random.get_rng_state()) and torch.get_default_dtype() == torch.float32


def test_bad_input_is_refused_with_the_argument_named(rng):
    model, data, plane = linear_model_and_data(rng)
    surface = fs.loss_surface(model, data, fs.axis(0, 3, 0.25), fs.axis(-2, 1, 0.25), plane=plane)
    other = fs.entry_plane(model, "weight[0, 0]", "bias[0]")
    with pytest.raises(fs.FastsurfaceError, match="`plane`"):
        fs.critical_points(surface, model, data, plane=other)
    with pytest.raises(fs.FastsurfaceError, match="`surface`"):
        fs.critical_points(surface.loss, model, data, plane=plane)
    with pytest.raises(fs.FastsurfaceError, match="`max_iterations`"):
        fs.critical_points(surface, model, data, plane=plane, max_iterations=0)
    with pytest.raises(fs.FastsurfaceError, match="`reduction`"):
        fs.critical_points(surface, model, data, plane=plane, reduction="sum")
    with pytest.raises(fs.FastsurfaceError, match="3 x 3"):
        fs.critical_points_of(lambda a, b: a * b, [0.0, 1.0], [0.0, 1.0, 2.0])
