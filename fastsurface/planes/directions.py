"""Planes and lines through any model's parameters: interpolation, random, PCA, Hessian.

Every constructor returns a ``Plane`` (``θ(a, b) = θ₀ + a·d₁ + b·d₂``) whose origin is the
model's parameters (buffers are never touched); evaluate it with ``loss_surface(model,
data, a_values, b_values, plane=plane)``. A line is a plane whose second direction is
zero; ``loss_line`` evaluates one.

Random directions follow Li et al. 2018, "Visualizing the Loss Landscape of Neural
Nets": Gaussian entries, then normalised so that the direction has the scale of the
weights it moves (see ``random_direction``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vjp

from fastsurface._support.copying import private_copy
from fastsurface.engine._losses import Loss, PerSampleLoss, resolve_loss
from fastsurface.engine._stream import pair_tensors
from fastsurface.engine._tiles import PROBE_SAMPLES, model_errors
from fastsurface.engine.evaluate import evaluate_points
from fastsurface.errors import FastsurfaceError, check_positive_int, check_seed
from fastsurface.planes.plane import Plane, TensorDict

NORMALIZATIONS = (None, "filter", "layer", "model")
ONE_DIM = ("zero", "keep")
_ZERO_DIRECTIONS = (
    "`model`: every random direction is zero with normalization={normalization!r} and one_dim={one_dim!r}: the "
    "parameters they may move are all zero ('filter' and 'layer' scale a direction to its weights' norms) or "
    "have at most one dimension (one_dim='zero' leaves those still); try normalization=None or 'model', or "
    "one_dim='keep'"
)


def parameters_of(model: nn.Module) -> TensorDict:
    """Detached float64 copies of ``model``'s parameters, by name (``named_parameters()`` order)."""
    if not isinstance(model, nn.Module):
        raise FastsurfaceError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    return {name: p.detach().to("cpu", torch.float64).clone() for name, p in model.named_parameters()}


def interpolation_plane(origin: nn.Module, first: nn.Module, second: nn.Module) -> Plane:
    """The plane through three models of one architecture: ``θ₀ + a(θ₁ - θ₀) + b(θ₂ - θ₀)``.

    ``(0, 0)`` is ``origin``, ``(1, 0)`` is ``first``, ``(0, 1)`` is ``second``. Evaluate it
    with ``origin`` as the model (its buffers are used).

    >>> from fastsurface import ANN
    >>> plane = interpolation_plane(ANN(1, 2, 1), ANN(1, 2, 1), ANN(1, 2, 1))
    >>> sorted(plane.origin), plane.labels
    (['net.Layer_1.weight', 'net.Layer_2.weight'], ('a', 'b'))
    """
    theta0 = parameters_of(origin)
    theta1 = _same_layout("first", parameters_of(first), theta0)
    theta2 = _same_layout("second", parameters_of(second), theta0)
    return Plane(
        theta0,
        {name: theta1[name] - t for name, t in theta0.items()},
        {name: theta2[name] - t for name, t in theta0.items()},
    )


def interpolation_line(start: nn.Module, end: nn.Module) -> Plane:
    """The line ``θ₀ + t(θ₁ - θ₀)`` from ``start`` (``t = 0``) to ``end`` (``t = 1``)."""
    theta0 = parameters_of(start)
    theta1 = _same_layout("end", parameters_of(end), theta0)
    return line_plane(theta0, {name: theta1[name] - t for name, t in theta0.items()})


def line_plane(origin: TensorDict, direction: TensorDict, label: str = "t") -> Plane:
    """A 1-D line as a plane whose second direction is zero (coordinate ``b`` has no effect)."""
    _same_layout("direction", direction, origin)
    zero = {name: torch.zeros_like(t) for name, t in direction.items()}
    return Plane(dict(origin), dict(direction), zero, (label, "unused"))


def random_direction(
    model: nn.Module,
    generator: torch.Generator,
    normalization: str | None = "filter",
    one_dim: str = "zero",
) -> TensorDict:
    """A Gaussian direction in ``model``'s parameter space, normalised as Li et al. 2018.

    Entries are drawn ``N(0, 1)`` in float64 from ``generator``, parameter by parameter in
    ``named_parameters()`` order, then normalised against the weights ``θ``:

    - ``"filter"``: each filter ``d[i]`` (a slice along dim 0: a row of a linear weight,
      an output channel of a convolution) is scaled to ``‖θ[i]‖``;
    - ``"layer"``: each parameter tensor is scaled to ``‖θ_l‖``;
    - ``"model"``: the whole direction is scaled to ``‖θ‖``;
    - ``None``: left as drawn.

    Parameters with at most one dimension (biases, norm scales) follow ``one_dim``:
    ``"zero"`` sets their direction to 0 (Li et al.'s ``ignore='biasbn'``); ``"keep"``
    moves them: under ``"filter"`` and ``"layer"`` the direction is the parameter itself
    (Li et al.'s code, as a vector has no filters), under ``"model"`` and ``None`` they
    are random like every other entry.

    Returns:
        float64 tensors on the CPU, by parameter name, each of the parameter's shape.
    """
    _check_choice("normalization", normalization, NORMALIZATIONS)
    _check_choice("one_dim", one_dim, ONE_DIM)
    theta = parameters_of(model)
    drawn = {name: torch.randn(t.shape, generator=generator, dtype=torch.float64) for name, t in theta.items()}
    direction = {}
    for name, t in theta.items():
        if t.ndim <= 1 and one_dim == "zero":
            direction[name] = torch.zeros_like(t)
        elif t.ndim <= 1 and normalization in ("filter", "layer"):
            direction[name] = t.clone()
        elif normalization == "filter":
            direction[name] = _scaled_to(drawn[name], t, dims=tuple(range(1, t.ndim)))
        elif normalization == "layer":
            direction[name] = _scaled_to(drawn[name], t, dims=tuple(range(t.ndim)))
        else:
            direction[name] = drawn[name]
    if normalization == "model":
        scale = _norm(theta.values()) / _norm(direction.values())
        direction = {name: d * scale for name, d in direction.items()}
    return direction


def random_plane(
    model: nn.Module,
    seed: int = 0,
    normalization: str | None = "filter",
    one_dim: str = "zero",
    orthogonal: bool = False,
) -> Plane:
    """Two seeded random directions through ``model``'s parameters (Li et al. 2018).

    ``d₁`` then ``d₂`` are drawn by ``random_direction`` from one private generator seeded
    with ``seed`` (global RNG untouched). With ``orthogonal=True``, ``d₂`` loses its
    component along ``d₁`` (Gram–Schmidt over all entries) and is rescaled to its
    normalised length; its filter norms then hold only approximately. Parameters whose
    directions are both zero are left out of the plane (they keep the model's values).

    >>> from fastsurface import ANN
    >>> plane = random_plane(ANN(1, 3, 1), seed=1)
    >>> plane.first["net.Layer_1.weight"].shape
    torch.Size([3, 1])
    """
    check_seed("seed", seed)
    generator = torch.Generator().manual_seed(seed)
    first = random_direction(model, generator, normalization, one_dim)
    second = random_direction(model, generator, normalization, one_dim)
    if orthogonal:
        second = _orthogonalised(second, first)
    moving = [name for name in first if first[name].any() or second[name].any()]
    if not moving:
        raise FastsurfaceError(_ZERO_DIRECTIONS.format(normalization=normalization, one_dim=one_dim))
    theta = parameters_of(model)
    return Plane({n: theta[n] for n in moving}, {n: first[n] for n in moving}, {n: second[n] for n in moving})


def random_line(model: nn.Module, seed: int = 0, normalization: str | None = "filter", one_dim: str = "zero") -> Plane:
    """One seeded random direction through ``model`` (the first of ``random_plane``'s), as a line."""
    check_seed("seed", seed)
    direction = random_direction(model, torch.Generator().manual_seed(seed), normalization, one_dim)
    if not any(d.any() for d in direction.values()):
        raise FastsurfaceError(_ZERO_DIRECTIONS.format(normalization=normalization, one_dim=one_dim))
    return line_plane(parameters_of(model), direction)


class PrincipalPlane(NamedTuple):
    """The plane of a trajectory's top-2 principal components.

    Attributes:
        plane: origin at the chosen trajectory point; ``d₁``, ``d₂`` unit vectors over all
            parameters (coordinates are distances in parameter space).
        explained_variance_ratio: share of the trajectory's variance along ``d₁`` and
            ``d₂``, float64, shape ``(2,)``.
    """

    plane: Plane
    explained_variance_ratio: np.ndarray


def pca_plane(path: Any, origin: int = -1) -> PrincipalPlane:
    """The top-2 principal components of a recorded parameter path (Li et al. 2018, §7).

    The rows ``θ_i`` of ``path.vectors`` are centred on their mean and decomposed by SVD;
    the two leading right singular vectors are the directions. The plane passes through
    ``θ_origin`` (the final point by default, as Li et al. do).

    Args:
        path: a ``fastsurface.analysis.paths.ParameterPath`` with at least 3 points.
        origin: index of the path point the plane passes through.
    """
    vectors = torch.as_tensor(path.vectors, dtype=torch.float64)
    if vectors.ndim != 2 or len(vectors) < 3:
        raise FastsurfaceError(f"`path` must hold at least 3 parameter vectors, got shape {tuple(vectors.shape)}")
    if (
        not isinstance(origin, numbers.Integral)
        or isinstance(origin, bool)
        or not -len(vectors) <= origin < len(vectors)
    ):
        raise FastsurfaceError(f"`origin` must index one of the {len(vectors)} path points, got {origin}")
    centred = vectors - vectors.mean(dim=0)
    _, singular, right = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.square()
    ratio = (variance[:2] / variance.sum()).numpy()
    return PrincipalPlane(
        Plane(path.unflatten(vectors[origin]), path.unflatten(right[0]), path.unflatten(right[1]), ("pc1", "pc2")),
        ratio,
    )


@dataclass(frozen=True)
class HessianPlane:
    """The plane of the top-2 Hessian eigenvectors at a model's parameters.

    Attributes:
        plane: origin ``θ₀``; ``d₁``, ``d₂`` unit eigenvectors over all parameters, for
            the largest and second-largest eigenvalue (sign: largest-magnitude entry > 0).
        eigenvalues: the two eigenvalues, float64, shape ``(2,)``.
        iterations: Lanczos steps taken, for both eigenvectors together.
    """

    plane: Plane
    eigenvalues: np.ndarray
    iterations: int


def hessian_plane(
    model: nn.Module,
    data: tuple[object, object],
    *,
    loss: str | PerSampleLoss = "mse",
    iterations: int = 50,
    chunk_samples: int = 4096,
    seed: int = 0,
) -> HessianPlane:
    """The top-2 eigenvectors of the Hessian of the mean loss at ``model``'s parameters.

    Hessian-vector products come from ``torch.func`` (reverse-over-reverse: ``vjp`` of
    ``grad``, which for a symmetric Hessian is ``H v``; ``jvp`` of ``grad`` warns about
    ``torch.jit.script`` in torch 2.13) in float64 on the CPU, summed over chunks of ``chunk_samples`` samples, in
    eval mode. Lanczos iteration with full re-orthogonalisation, started from a seeded
    random vector, runs up to ``min(iterations, parameter count)`` steps for the top
    eigenpair, then again on the complement of that eigenvector for the second, so that a
    repeated top eigenvalue (a multi-output linear layer's Hessian has them) is found twice.
    The model must fit the data as in ``loss_surface`` (targets of the predictions' shape
    for MSE), checked on a forward pass before any work.

    Args:
        model: any module; only read.
        data: an ``(x, y)`` pair of arrays/tensors.
        loss: per-sample loss as in ``loss_surface``; the Hessian is of its mean.
        iterations: most Lanczos steps per eigenvector, >= 2.
        chunk_samples: samples per Hessian-vector product pass.
        seed: seed of the start vector (a private generator).
    """
    check_positive_int("iterations", iterations)
    check_positive_int("chunk_samples", chunk_samples)
    if iterations < 2:
        raise FastsurfaceError(f"`iterations` must be >= 2 to find two eigenvectors, got {iterations}")
    theta = parameters_of(model)
    product = _hessian_vector_product(model, theta, data, resolve_loss(loss), chunk_samples)
    size = sum(t.numel() for t in theta.values())
    if size < 2:
        raise FastsurfaceError(f"`model` must have at least 2 parameter entries for a Hessian plane, got {size}")
    generator = torch.Generator().manual_seed(seed)
    steps = min(iterations, size)
    starts = torch.randn(2, size, generator=generator, dtype=torch.float64)
    value1, vector1, taken1 = _lanczos_top(product, starts[0], steps, [])
    value2, vector2, taken2 = _lanczos_top(product, starts[1], steps, [vector1])
    if value2 > value1:  # too few steps to converge on the first: keep the documented order
        (value1, vector1), (value2, vector2) = (value2, vector2), (value1, vector1)
    unflatten = _unflattener(theta)
    plane = Plane(theta, unflatten(vector1), unflatten(vector2), ("h1", "h2"))
    return HessianPlane(plane, torch.stack([value1, value2]).numpy(), taken1 + taken2)


class Line(NamedTuple):
    """Losses along a line: ``loss[k]`` at coordinate ``t[k]`` (float64, shape ``(T,)``)."""

    t: np.ndarray
    loss: np.ndarray


def loss_line(model: nn.Module, data: object, t: Sequence[float] | np.ndarray, *, line: Plane, **kwargs: Any) -> Line:
    """Loss at ``θ₀ + t_k·d₁`` for every ``t_k``, by the engine (``evaluate_points``).

    Args:
        line: a plane; only its first direction is used (``b = 0``).
        t: coordinates along the line, 1-D, finite.
        **kwargs: ``loss``, ``reduction``, ``batch_size``, ``device``, ``dtype``, ... as in
            ``evaluate_points``.

    >>> from fastsurface import ANN, piecewise_dataset
    >>> model = ANN(1, 2, 1)
    >>> line = loss_line(model, piecewise_dataset(100), [-1.0, 0.0, 1.0], line=random_line(model), device="cpu")
    >>> line.loss.shape
    (3,)
    """
    try:
        coordinates = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise FastsurfaceError(f"`t` must be numbers, got {t!r}") from error
    if coordinates.ndim != 1 or len(coordinates) == 0:
        raise FastsurfaceError(f"`t` must be a non-empty 1-D sequence of coordinates, got shape {coordinates.shape}")
    points = np.stack([coordinates, np.zeros_like(coordinates)], axis=1)
    evaluation = evaluate_points(model, line, data, points, **kwargs)
    return Line(coordinates, evaluation.loss.cpu().numpy())


def _check_choice(argument: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        raise FastsurfaceError(f"`{argument}` must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _same_layout(argument: str, tensors: TensorDict, reference: TensorDict) -> TensorDict:
    layout = {name: tuple(t.shape) for name, t in tensors.items()}
    expected = {name: tuple(t.shape) for name, t in reference.items()}
    if layout != expected:
        raise FastsurfaceError(
            f"`{argument}` must have the parameters of the origin model (names and shapes) {expected}, got {layout}"
        )
    return tensors


def _scaled_to(direction: torch.Tensor, weight: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``direction`` with the norm over ``dims`` of each remaining index equal to ``weight``'s."""
    target = torch.linalg.vector_norm(weight, dim=dims, keepdim=True)
    return direction * (target / torch.linalg.vector_norm(direction, dim=dims, keepdim=True))


def _norm(tensors: Any) -> torch.Tensor:
    return torch.sqrt(sum(t.square().sum() for t in tensors))


def _orthogonalised(second: TensorDict, first: TensorDict) -> TensorDict:
    dot = sum((second[n] * first[n]).sum() for n in first)
    length = _norm(second.values())
    projected = {n: second[n] - dot / _norm(first.values()) ** 2 * first[n] for n in first}
    scale = length / _norm(projected.values())
    return {n: t * scale for n, t in projected.items()}


def _unflattener(reference: TensorDict) -> Callable[[torch.Tensor], TensorDict]:
    names = list(reference)
    sizes = [reference[n].numel() for n in names]

    def unflatten(vector: torch.Tensor) -> TensorDict:
        parts = torch.split(vector, sizes)
        return {n: part.reshape(reference[n].shape).clone() for n, part in zip(names, parts, strict=True)}

    return unflatten


def _hessian_vector_product(
    model: nn.Module, theta: TensorDict, data: tuple[object, object], loss: Loss, chunk: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> H v`` for the Hessian of the mean per-sample loss over ``data``, flattened."""
    module = private_copy(model).to("cpu", torch.float64).eval()
    x, y = (t.to("cpu", torch.float64 if t.dtype.is_floating_point else torch.int64) for t in pair_tensors(data))
    with torch.no_grad(), model_errors(x):
        probe = module(x[:PROBE_SAMPLES])
    loss.check_shapes(probe, y[:PROBE_SAMPLES])
    loss.check_targets(probe, y)
    unflatten = _unflattener(theta)
    flat = torch.cat([t.reshape(-1) for t in theta.values()])

    def chunk_loss(vector: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return loss.per_sample(functional_call(module, unflatten(vector), (xs,)), ys).sum() / len(x)

    def product(v: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(flat)
        for start in range(0, len(x), chunk):
            xs, ys = x[start : start + chunk], y[start : start + chunk]
            total += vjp(lambda p, xs=xs, ys=ys: grad(chunk_loss)(p, xs, ys), flat)[1](v)[0]
        return total

    return product


def _lanczos_top(
    product: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int, deflated: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The top Ritz pair of a symmetric operator on the complement of the unit vectors
    ``deflated`` (Lanczos with full re-orthogonalisation, against them too).

    Returns the eigenvalue (0-d), its unit eigenvector ``(D,)`` (largest-magnitude entry
    positive) and the steps taken.
    """
    known = list(deflated)

    def orthogonalised(vector: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(known, dim=1)
        for _ in range(2):  # twice is enough (Kahan–Parlett)
            vector = vector - stacked @ (stacked.T @ vector)
        return vector

    first = orthogonalised(start) if known else start
    if first.norm() <= 1e-12 * start.norm():
        raise FastsurfaceError("`seed`: its start vector lies in the span already found; try another seed")
    basis = [first / first.norm()]
    alphas, betas = [], []
    for k in range(steps):
        w = product(basis[k])
        alphas.append(torch.dot(w, basis[k]))
        known.append(basis[k])
        w = orthogonalised(w)
        beta = w.norm()
        if k == steps - 1 or beta <= 1e-12 * max(1.0, float(abs(alphas[-1]))):
            break
        betas.append(beta)
        basis.append(w / beta)
    tridiagonal = torch.diag(torch.stack(alphas))
    if betas:
        off = torch.stack(betas)
        tridiagonal = tridiagonal + torch.diag(off, 1) + torch.diag(off, -1)
    values, ritz = torch.linalg.eigh(tridiagonal)
    vector = torch.stack(basis[: len(alphas)], dim=1) @ ritz[:, -1]
    return values[-1], vector * torch.sign(vector[vector.abs().argmax()]), len(alphas)
