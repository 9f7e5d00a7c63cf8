"""Critical points of a loss surface: minima, maxima and saddles, located off-grid.

Candidates come from the grid (a point below, above, or alternating around its
eight neighbours) and from its cells (both finite-difference gradient components
take both signs at the four corners: a saddle between grid points, whose nearest
grid points alternate only twice around their rings); each is then refined by
Newton steps on the exact loss in plane coordinates, with gradient and Hessian from
``torch.func``, and classified by the signs of the Hessian's eigenvalues.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, jacrev, vmap

from fastsurface._support.choices import Reduction
from fastsurface._support.copying import copy_inputs_if_written, private_copy
from fastsurface._support.devices import DeviceLike, DTypeLike
from fastsurface._support.identity import describe_data
from fastsurface.engine import _stream as stream
from fastsurface.engine._losses import PerSampleLoss
from fastsurface.engine._tiles import check_fits, model_errors
from fastsurface.engine.axes import as_axis
from fastsurface.engine.evaluate import check_prediction_shape
from fastsurface.engine.options import DEFAULT_BATCH_SIZE, EvalOptions
from fastsurface.errors import FastsurfaceError, check_positive_int
from fastsurface.planes.plane import Plane, check_model, check_plane, default_plane
from fastsurface.results import CriticalPoint, Surface

# An eigenvalue this small relative to the largest one counts as zero (kind "degenerate").
_ZERO_EIGENVALUE = 1e-6
# A Newton iterate has converged when its step is below this, relative to 1 + |point|.
_STEP_TOLERANCE = 1e-11
# ... and its gradient norm is below this, relative to the grid's scale of loss change.
_GRADIENT_TOLERANCE = 1e-7
# Points evaluated together in one vmap call, and samples per data chunk: the Hessian
# of a chunk holds a few forward passes per point and sample.
_POINTS_PER_CALL = 64
_CHUNK_SAMPLES = 2048
# The eight neighbours of a grid point in cyclic order, for the sign-change test.
_RING = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))

# points (K, 2) float64 -> (value (K,), gradient (K, 2), Hessian (K, 2, 2)), float64
Derivatives = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def critical_points(
    surface: Surface,
    model: nn.Module,
    data: object,
    *,
    plane: Plane | None = None,
    loss: str | PerSampleLoss | None = None,
    reduction: Reduction | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: DeviceLike = "auto",
    dtype: DTypeLike = torch.float64,
    max_iterations: int = 50,
) -> list[CriticalPoint]:
    """Minima, maxima and saddles of the loss inside ``surface``'s grid.

    The loss refined here is the one ``surface`` shows, evaluated exactly (not
    interpolated): the same model, plane, per-sample loss and reduction, on ``data``
    (which a surface does not keep). ``data`` is read once and held on ``device``.

    Args:
        surface: the grid whose neighbourhoods give the candidates.
        model, data, batch_size, device: as in ``loss_surface``; a pair of data is checked
            against ``surface.data_description`` (sample count, shapes, a fingerprint).
        plane: the surface's own (``surface.plane``) by default; a model with two
            weights has a default plane for surfaces that carry none.
        loss: the surface's per-sample loss by default (a callable loss must be passed
            again to a surface loaded from a file).
        reduction: ``surface.reduction`` by default.
        dtype: compute dtype of the Newton steps; float64 by default, so that points
            are located to about 1e-8.
        max_iterations: Newton steps per candidate before it is dropped.

    Returns:
        The critical points inside the grid's extent, sorted by loss, one per location
        (candidates converging within half a grid step of each other are merged).

    Raises:
        FastsurfaceError: for a piecewise-constant loss (an accuracy), whose exact
            gradient and Hessian are zero at every candidate and its grid neighbours.

    >>> from fastsurface import ANN, piecewise_dataset, axis, loss_surface
    >>> data = piecewise_dataset(500)
    >>> surface = loss_surface(ANN(1, 1, 1), data, axis(-1, 1, 0.1), axis(-1, 1, 0.1))
    >>> [(p.kind, round(p.w1, 6), round(p.w2, 6)) for p in critical_points(surface, ANN(1, 1, 1), data)]
    [('saddle', 0.0, 0.0)]
    """
    plane, options = surface_options(
        surface, model, plane, loss, reduction, batch_size=batch_size, device=device, dtype=dtype
    )
    check_positive_int("max_iterations", max_iterations)
    if surface.train_mode:
        raise FastsurfaceError("`surface` was evaluated with train_mode=True; critical points are found in eval mode")
    check_same_data(surface, data, batch_size)
    derivatives = _model_derivatives(model, plane, data, options)
    return find_critical_points(surface.loss, surface.w1, surface.w2, derivatives, max_iterations=max_iterations)


def critical_points_of(
    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    w1: Sequence[float] | np.ndarray,
    w2: Sequence[float] | np.ndarray,
    *,
    max_iterations: int = 50,
) -> list[CriticalPoint]:
    """Critical points of an analytic function of two coordinates, on the grid ``w1 × w2``.

    Args:
        function: ``(w1, w2) -> loss`` on 0-d float64 tensors, written with torch
            operations (it is differentiated twice and vmapped).
        w1, w2: grid axes, 1-D, strictly increasing, at least 3 values each.
        max_iterations: Newton steps per candidate.

    >>> from fastsurface import axis
    >>> points = critical_points_of(lambda a, b: a**2 - b**2, axis(-1, 1, 0.3), axis(-1, 1, 0.3))
    >>> [(p.kind, p.eigenvalues) for p in points]
    [('saddle', (-2.0, 2.0))]
    """
    first, second = as_axis("w1", w1), as_axis("w2", w2)
    check_positive_int("max_iterations", max_iterations)
    check_fits((len(first), len(second)), torch.device("cpu"), EvalOptions().budget, None)  # one vmap over the grid

    def point_value(point: torch.Tensor) -> torch.Tensor:
        return function(point[0], point[1])

    grid = torch.cartesian_prod(torch.as_tensor(first), torch.as_tensor(second))
    try:
        values = vmap(point_value)(grid).reshape(len(first), len(second))
    except (TypeError, RuntimeError, ValueError, AttributeError) as error:
        raise FastsurfaceError(
            f"`function` must map two 0-d float64 tensors to a 0-d tensor with torch operations; it failed: {error}"
        ) from error
    if not values.dtype.is_floating_point:
        raise FastsurfaceError(f"`function` must return real floating-point values, got {values.dtype}")
    second_order = vmap(_value_gradient_hessian(point_value))

    def derivatives(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hessian, (gradient, value) = second_order(points)
        return value, gradient, hessian

    return find_critical_points(values.numpy(), first, second, derivatives, max_iterations=max_iterations)


def check_surface(surface: object) -> None:
    """Refuse anything but a ``Surface``."""
    if not isinstance(surface, Surface):
        raise FastsurfaceError(f"`surface` must be a fastsurface.Surface, got {type(surface).__name__}")


def surface_options(
    surface: Surface,
    model: nn.Module,
    plane: Plane | None,
    loss: str | PerSampleLoss | None,
    reduction: Reduction | None,
    **options: object,
) -> tuple[Plane, EvalOptions]:
    """The plane and evaluation options that reproduce ``surface``, checked against it;
    ``None`` stands for the surface's own plane, loss and reduction (a callable loss is
    remembered by the surface that computed it, not by one loaded from a file). ``options``
    are the other evaluation options."""
    check_surface(surface)
    plane = _surface_plane(surface, model, plane)
    check_plane(model, plane)
    if tuple(plane.labels) != tuple(surface.labels):
        raise FastsurfaceError(
            f"`plane` must be the surface's plane: its labels are {plane.labels}, the surface's {surface.labels}"
        )
    remembered = surface.loss_function if surface.loss_function is not None else surface.loss_name
    if loss is None and isinstance(remembered, str) and remembered not in ("mse", "cross_entropy"):
        raise FastsurfaceError(
            f"`loss` must be given: the surface used the callable loss {surface.loss_name!r}, which a surface "
            "loaded from a file cannot hold; pass it again"
        )
    chosen = EvalOptions.from_keywords(
        {
            "loss": remembered if loss is None else loss,
            "reduction": surface.reduction if reduction is None else reduction,
            **options,
        }
    )
    return plane, chosen


def _surface_plane(surface: Surface, model: nn.Module, plane: Plane | None) -> Plane:
    """``plane``, else the surface's own, else the model's default (a two-weight model);
    an explicit plane must be the surface's own where it carries one."""
    if plane is None and surface.plane is not None:
        return surface.plane
    if plane is None:
        check_model(model)
        if sum(p.numel() for p in model.parameters()) != 2:
            raise FastsurfaceError(
                "`plane` is required: this surface does not carry its plane (it was built by hand or loaded from "
                "a file saved without one) and `model` has no default plane (only a model with exactly two weights "
                "has one); pass the plane the surface was computed on"
            )
        return default_plane(model)
    check_plane(model, plane)
    if surface.plane is not None and not plane.same_as(surface.plane):
        raise FastsurfaceError(
            "`plane` differs from the plane the surface was computed on (its origin, directions or labels); "
            "leave `plane` out to use the surface's own"
        )
    return plane


def check_same_data(surface: Surface, data: object, batch_size: int, counts: tuple[int, int] | None = None) -> None:
    """Refuse data or a batch size other than ``surface``'s: for a pair, before any work,
    against the surface's data description (sample count, per-sample shapes, fingerprint
    of the values) and batch count; for any data, from the ``(samples, batches)`` an
    evaluation saw (``counts``). Batches count where they change the loss
    (``"batch_mean"``, training mode)."""
    if counts is None:
        if not stream.is_pair(data):
            return
        _check_description(surface, data)
        counts = (len(data[0]), math.ceil(len(data[0]) / batch_size))
    samples, batches = counts
    batches_matter = surface.reduction == "batch_mean" or surface.train_mode
    if samples != surface.samples or (batches_matter and batches != surface.batches):
        raise FastsurfaceError(
            f"`data` and `batch_size` must be the surface's: it was evaluated on {surface.samples} samples in "
            f"{surface.batches} batches, these give {samples} samples in {batches} batches"
        )


def _check_description(surface: Surface, data: object) -> None:
    recorded = surface.data_description
    given = describe_data(data)
    if recorded is None or given is None:
        return
    differences = recorded.differences(given)
    if differences:
        raise FastsurfaceError(
            f"`data` must be the data the surface was evaluated on (`surface.data_description`); these differ: "
            f"{'; '.join(differences)}"
        )


def find_critical_points(
    grid_loss: np.ndarray,
    w1: np.ndarray,
    w2: np.ndarray,
    derivatives: Derivatives,
    *,
    max_iterations: int = 50,
) -> list[CriticalPoint]:
    """Grid candidates of ``grid_loss`` refined by Newton steps on ``derivatives``.

    Args:
        grid_loss: losses on the grid, shape ``(len(w1), len(w2))``.
        w1, w2: the grid axes, float64.
        derivatives: exact value, gradient and Hessian at points ``(K, 2)``.
        max_iterations: Newton steps per candidate.
    """
    if grid_loss.shape != (len(w1), len(w2)) or min(grid_loss.shape) < 3:
        raise FastsurfaceError(
            f"`surface` (or `w1` x `w2`) must be a grid of at least 3 x 3 points to hold a neighbourhood, "
            f"got shape {grid_loss.shape}"
        )
    rows, columns = grid_candidates(grid_loss)
    if len(rows):
        rows, columns = _differentiable(rows, columns, w1, w2, derivatives)
    centres = torch.as_tensor(cell_candidates(grid_loss, w1, w2, (rows, columns)))
    if len(centres):
        centres = centres[~torch.as_tensor(_exactly_flat(derivatives, centres))]
    start = torch.cat([torch.as_tensor(np.stack([w1[rows], w2[columns]], axis=1)), centres])
    if len(start) == 0:
        return []
    spacing = min(np.diff(w1).min(), np.diff(w2).min())
    points, iterations, converged = _newton(start, derivatives, max_iterations, max_step=spacing)
    value, gradient, hessian = _grouped(derivatives, points)
    finite_loss = grid_loss[np.isfinite(grid_loss)]
    gradient_scale = (finite_loss.max() - finite_loss.min()) / spacing if finite_loss.size else 1.0
    inside = (points[:, 0] >= w1[0]) & (points[:, 0] <= w1[-1]) & (points[:, 1] >= w2[0]) & (points[:, 1] <= w2[-1])
    small_gradient = gradient.norm(dim=1) <= _GRADIENT_TOLERANCE * max(1.0, float(gradient_scale))
    keep = (converged & inside & small_gradient & torch.isfinite(value)).nonzero().flatten().tolist()
    found = [_classified(points[k], value[k], gradient[k], hessian[k], int(iterations[k])) for k in keep]
    return _merged(sorted(found, key=lambda p: p.loss), distance=spacing / 2)


def grid_candidates(grid_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interior grid points that look critical against their eight neighbours.

    A point is a candidate when it is below or level with all eight and strictly below
    one (a minimum), the same above (a maximum), or when the signs of ``neighbour - centre`` change
    at least four times around the ring (a saddle; equal neighbours are skipped).

    Returns:
        ``(rows, columns)``: index arrays, int64.

    >>> saddle = np.array([[0.0, -1, 0], [1, 0, 1], [0, -1, 0]])
    >>> grid_candidates(saddle)
    (array([1]), array([1]))
    """
    centre = grid_loss[1:-1, 1:-1]
    neighbours = np.stack(
        [grid_loss[1 + di : grid_loss.shape[0] - 1 + di, 1 + dj : grid_loss.shape[1] - 1 + dj] for di, dj in _RING]
    )
    with np.errstate(invalid="ignore"):  # inf - inf: such points are dropped as not finite below
        differences = neighbours - centre[None]
    finite = np.isfinite(differences).all(axis=0) & np.isfinite(centre)
    # Non-strict with one strict neighbour, so a valley floor of equal values still yields
    # candidates (the seed surface is exactly flat along w2 = 0), while a plateau does not.
    lowest = (differences >= 0).all(axis=0) & (differences > 0).any(axis=0)
    highest = (differences <= 0).all(axis=0) & (differences < 0).any(axis=0)
    rows, columns = np.nonzero(finite & (lowest | highest | (_sign_changes(np.sign(differences)) >= 4)))
    return rows + 1, columns + 1


def cell_candidates(
    grid_loss: np.ndarray, w1: np.ndarray, w2: np.ndarray, points: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Centres of the grid cells where each component of the finite-difference gradient
    (``np.gradient``) is positive at one corner and negative at another: the gradient's
    two zero lines both cross the cell, as they do at a critical point inside it. Cells
    with a corner among the candidate grid ``points`` ``(rows, columns)`` are left to them.

    Returns:
        The cells' centres ``(w1, w2)``, float64, shape ``(K, 2)``.

    >>> w = np.array([-1.5, -0.5, 0.5, 1.5])
    >>> none = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    >>> cell_candidates(np.multiply.outer(w, w), w, w, none)  # the saddle of a·b, between grid points
    array([[0., 0.]])
    """
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, which takes neither sign
        gradients = np.gradient(grid_loss, w1, w2)
    taken = np.zeros(grid_loss.shape, dtype=bool)
    taken[points] = True
    crossed = ~(taken[:-1, :-1] | taken[1:, :-1] | taken[:-1, 1:] | taken[1:, 1:])
    for gradient in gradients:
        corners = np.stack([gradient[:-1, :-1], gradient[1:, :-1], gradient[:-1, 1:], gradient[1:, 1:]])
        crossed &= (corners > 0).any(axis=0) & (corners < 0).any(axis=0)
    rows, columns = np.nonzero(crossed)
    return np.stack([(w1[rows] + w1[rows + 1]) / 2, (w2[columns] + w2[columns + 1]) / 2], axis=1)


def _differentiable(
    rows: np.ndarray, columns: np.ndarray, w1: np.ndarray, w2: np.ndarray, derivatives: Derivatives
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates whose derivatives say something: a candidate differs from a neighbour
    on the grid, so a gradient and Hessian exactly zero there and at all eight neighbours
    mean a loss that steps between constant pieces (an accuracy, a count), with no critical
    point to locate. Such candidates are dropped; refused when they are all there is."""
    start = torch.as_tensor(np.stack([w1[rows], w2[columns]], axis=1))
    flat = _exactly_flat(derivatives, start)
    if not flat.any():
        return rows, columns
    ring = np.array(_RING)
    around = torch.as_tensor(
        np.stack([w1[rows[flat][:, None] + ring[:, 0]], w2[columns[flat][:, None] + ring[:, 1]]], axis=-1)
    )
    stepwise = flat.copy()
    stepwise[flat] = _exactly_flat(derivatives, around.reshape(-1, 2)).reshape(-1, len(_RING)).all(axis=1)
    if stepwise.all():
        raise FastsurfaceError(
            f"`surface`: its loss is piecewise constant on this plane: at every one of the {len(rows)} grid "
            f"candidates (e.g. ({w1[rows[0]]:g}, {w2[columns[0]]:g})) and at their neighbours the exact gradient and "
            "Hessian are zero while the grid's values step, as for an accuracy; it has no critical points to locate "
            "(fastsurface.watershed(surface) gives its basins)"
        )
    return rows[~stepwise], columns[~stepwise]


def _exactly_flat(derivatives: Derivatives, points: torch.Tensor) -> np.ndarray:
    """Whether the gradient and Hessian are exactly zero at each point ``(K, 2)``; shape ``(K,)``."""
    _, gradient, hessian = _grouped(derivatives, points)
    return ((gradient == 0).all(dim=1) & (hessian == 0).flatten(1).all(dim=1)).numpy()


def _sign_changes(signs: np.ndarray) -> np.ndarray:
    """Sign changes around the ring (axis 0), zeros skipped; shape ``signs.shape[1:]``."""
    changes = np.zeros(signs.shape[1:], dtype=np.int64)
    last = np.zeros(signs.shape[1:])
    first = np.zeros(signs.shape[1:])
    for sign in signs:
        changes += (sign != 0) & (last != 0) & (sign != last)
        first = np.where(first == 0, sign, first)
        last = np.where(sign != 0, sign, last)
    return changes + ((first != 0) & (last != 0) & (first != last))


def _newton(
    start: torch.Tensor, derivatives: Derivatives, max_iterations: int, max_step: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Newton iterations for ``gradient = 0`` from each row of ``start`` (K, 2).

    Steps longer than ``max_step`` are shortened to it so a candidate cannot jump far
    across the grid; a singular Hessian is pseudo-inverted.

    Returns:
        ``(points, iterations, converged)``, shapes ``(K, 2)``, ``(K,)``, ``(K,)``.
    """
    points = start.clone()
    iterations = torch.zeros(len(points), dtype=torch.int64)
    converged = torch.zeros(len(points), dtype=torch.bool)
    failed = torch.zeros(len(points), dtype=torch.bool)
    for _ in range(max_iterations):
        active = (~converged & ~failed).nonzero().flatten()
        if len(active) == 0:
            break
        _, gradient, hessian = _grouped(derivatives, points[active])
        finite = torch.isfinite(gradient).all(dim=1) & torch.isfinite(hessian).flatten(1).all(dim=1)
        failed[active[~finite]] = True
        active, gradient, hessian = active[finite], gradient[finite], hessian[finite]
        step = -(torch.linalg.pinv(hessian) @ gradient.unsqueeze(-1)).squeeze(-1)
        length = step.norm(dim=1, keepdim=True)
        step = torch.where(length > max_step, step * (max_step / length), step)
        points[active] += step
        iterations[active] += 1
        converged[active] = step.norm(dim=1) <= _STEP_TOLERANCE * (1 + points[active].norm(dim=1))
    return points, iterations, converged


def _grouped(derivatives: Derivatives, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``derivatives`` over ``points`` in groups of ``_POINTS_PER_CALL``, on the CPU in float64."""
    parts = [derivatives(points[start : start + _POINTS_PER_CALL]) for start in range(0, len(points), _POINTS_PER_CALL)]
    value, gradient, hessian = (torch.cat([part[i] for part in parts]).cpu().to(torch.float64) for i in range(3))
    return value, gradient, hessian


def _classified(
    point: torch.Tensor, value: torch.Tensor, gradient: torch.Tensor, hessian: torch.Tensor, iterations: int
) -> CriticalPoint:
    low, high = torch.linalg.eigvalsh((hessian + hessian.T) / 2).tolist()
    zero = _ZERO_EIGENVALUE * max(abs(low), abs(high))
    if low > zero:
        kind = "minimum"
    elif high < -zero:
        kind = "maximum"
    elif low < -zero and high > zero:
        kind = "saddle"
    else:
        kind = "degenerate"
    return CriticalPoint(
        w1=float(point[0]),
        w2=float(point[1]),
        loss=float(value),
        kind=kind,
        eigenvalues=(low, high),
        gradient_norm=float(gradient.norm()),
        iterations=iterations,
    )


def _merged(points: list[CriticalPoint], distance: float) -> list[CriticalPoint]:
    """One point per location: drop any within ``distance`` of an earlier one."""
    kept: list[CriticalPoint] = []
    for point in points:
        if all(math.hypot(point.w1 - other.w1, point.w2 - other.w2) > distance for other in kept):
            kept.append(point)
    return kept


def _value_gradient_hessian(
    function: Callable[..., torch.Tensor],
) -> Callable[..., tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]]:
    """``(point, *rest) -> (Hessian (2, 2), (gradient (2,), value ()))`` of a scalar function
    of its first argument, reverse mode over reverse mode (forward mode would import torch
    decompositions that warn of a deprecation on first use)."""

    def gradient_with_aux(
        point: torch.Tensor, *rest: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        gradient, value = grad_and_value(function)(point, *rest)
        return gradient, (gradient, value)

    return jacrev(gradient_with_aux, has_aux=True)


def _model_derivatives(model: nn.Module, plane: Plane, data: object, options: EvalOptions) -> Derivatives:
    """Exact derivatives of the reduced loss: chunk sums of weighted per-sample losses
    divided by the sample or batch count, as the engine reduces (see ``stream``)."""
    if not isinstance(model, nn.Module):
        raise FastsurfaceError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    resolved, compute, objective = options.compute_device, options.compute_dtype, options.objective
    # Parameters off the plane are constants here; left requiring grad, they would make
    # every derivative (and then the Newton iterates) carry an autograd graph.
    module = private_copy(model).to(device=resolved, dtype=compute).eval().requires_grad_(False)
    local_plane = plane.to(resolved, compute)
    held = list(
        stream.chunks(
            data,
            reduction=options.reduction,
            batch_size=options.batch_size,
            chunk_samples=lambda _: _CHUNK_SAMPLES,
            device=resolved,
            dtype=compute,
        )
    )
    if not held:
        raise FastsurfaceError("`data` must hold at least one batch, got none")
    with model_errors(held[0].x):
        copy_inputs_if_written(module, held[0].x[: stream.PROBE_SAMPLES])  # every Newton step reruns the same inputs
    probe = check_prediction_shape(module, local_plane, objective, held[0].x, held[0].y)
    for chunk in held[1:]:
        objective.check_targets(probe, chunk.y)
    count = sum(c.samples for c in held) if options.reduction == "mean" else sum(c.batches for c in held)

    def chunk_sum(point: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        prediction = functional_call(module, local_plane.params(point[0], point[1]), (x,))
        return objective.per_sample(prediction, y) @ weight

    second_order = vmap(_value_gradient_hessian(chunk_sum), in_dims=(0, None, None, None))

    def derivatives(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        local = points.to(device=resolved, dtype=compute)
        value = torch.zeros(len(points), dtype=torch.float64, device=resolved)
        gradient = torch.zeros(len(points), 2, dtype=torch.float64, device=resolved)
        hessian = torch.zeros(len(points), 2, 2, dtype=torch.float64, device=resolved)
        for chunk in held:
            chunk_hessian, (chunk_gradient, chunk_value) = second_order(local, chunk.x, chunk.y, chunk.weight)
            value += chunk_value
            gradient += chunk_gradient
            hessian += chunk_hessian
        return value / count, gradient / count, hessian / count

    return derivatives
