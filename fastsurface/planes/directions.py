"""Planes and lines through any model's parameters from the parameters alone: interpolation and random.

Every constructor returns a ``Plane`` (``θ(w1, w2) = θ₀ + w1·d₁ + w2·d₂``) whose origin is the
model's parameters (buffers are never touched); evaluate it with ``loss_surface(model,
data, a_values, b_values, plane=plane)``. A line is a plane whose second direction is
zero; ``loss_line`` evaluates one.

Random directions follow Li et al. 2018, "Visualizing the Loss Landscape of Neural
Nets": Gaussian entries, then normalised so that the direction has the scale of the
weights it moves (see ``random_direction``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fastsurface.errors import FastsurfaceError, check_bool, check_choice, check_seed
from fastsurface.planes.plane import Plane, TensorDict, check_model

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
    check_model(model)
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
    return Plane(theta0, _difference("first", theta1, theta0), _difference("second", theta2, theta0))


def interpolation_line(start: nn.Module, end: nn.Module) -> Plane:
    """The line ``θ₀ + t(θ₁ - θ₀)`` from ``start`` (``t = 0``) to ``end`` (``t = 1``)."""
    theta0 = parameters_of(start)
    theta1 = _same_layout("end", parameters_of(end), theta0)
    return line_plane(theta0, _difference("end", theta1, theta0))


def line_plane(origin: TensorDict, direction: TensorDict, label: str = "t") -> Plane:
    """A 1-D line as a plane whose second direction is zero (coordinate ``w2`` has no effect)."""
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
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("one_dim", one_dim, ONE_DIM)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise FastsurfaceError(f"`generator` must be a CPU torch.Generator, got {generator!r:.100}")
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
    check_bool("orthogonal", orthogonal)
    check_seed("seed", seed)
    generator = torch.Generator().manual_seed(int(seed))
    first = random_direction(model, generator, normalization, one_dim)
    second = random_direction(model, generator, normalization, one_dim)
    if orthogonal:  # checked a bool above
        second = _orthogonalised(second, first)
    moving = [name for name in first if first[name].any() or second[name].any()]
    if not moving:
        raise FastsurfaceError(_ZERO_DIRECTIONS.format(normalization=normalization, one_dim=one_dim))
    theta = parameters_of(model)
    return Plane({n: theta[n] for n in moving}, {n: first[n] for n in moving}, {n: second[n] for n in moving})


def random_line(model: nn.Module, seed: int = 0, normalization: str | None = "filter", one_dim: str = "zero") -> Plane:
    """One seeded random direction through ``model`` (the first of ``random_plane``'s), as a line."""
    check_seed("seed", seed)
    direction = random_direction(model, torch.Generator().manual_seed(int(seed)), normalization, one_dim)
    if not any(d.any() for d in direction.values()):
        raise FastsurfaceError(_ZERO_DIRECTIONS.format(normalization=normalization, one_dim=one_dim))
    return line_plane(parameters_of(model), direction)


def _difference(argument: str, theta: TensorDict, theta0: TensorDict) -> TensorDict:
    """The direction ``theta - theta0``, refused when it is zero (the model at ``argument``
    has the origin's parameters: a coordinate that moves nothing)."""
    direction = {name: theta[name] - t for name, t in theta0.items()}
    if not any(bool(d.any()) for d in direction.values()):
        raise FastsurfaceError(
            f"`{argument}` has the same parameters as the origin model, so its direction is zero and its coordinate "
            "would move nothing; pass a different model (a trained copy, another checkpoint)"
        )
    return direction


def _same_layout(argument: str, tensors: TensorDict, reference: TensorDict) -> TensorDict:
    for name, value in (("origin", reference), (argument, tensors)):
        if not isinstance(value, Mapping) or not all(isinstance(t, torch.Tensor) for t in value.values()):
            raise FastsurfaceError(f"`{name}` must map parameter names to tensors, got {type(value).__name__}")
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
