"""The closed form of a mean-squared-error surface along a coordinate that enters the
model's output linearly (the seed's ``w2``).

If the second direction ``d₂`` moves only the parameters of the layer that produces the
model's output, and that layer is an ``nn.Linear``, the prediction is exactly affine in
``b``: ``p(a, b) = r(a) + b·e(a)``, with ``r`` the prediction at ``(a, 0)`` and
``e = F.linear(h, d₂W, d₂bias)`` its slope along ``b`` (``h`` is the output layer's
input). Each sample's squared error is then a quadratic in ``b``, and so is any
weighted sum of them::

    L(a, b) = A·(b − s)² − 2·B·(b − s) + C,   A = Σ w·e²,  B = Σ w·e·ρ,  C = Σ w·ρ²,
    ρ = y − r − s·e   (the residual at b = s)

``A``, ``B``, ``C`` take one forward pass per value of ``a`` (O(|a|·n) work, not
O(|a|·|b|·n)), summed in float64, where products of float32 values are exact; the grid
follows from three outer products. Both reductions are weighted sums, so both are
exact. The roles of ``a`` and ``b`` swap when it is the first direction that lies in the
output layer.

The centre ``s(a)`` is the minimum along ``b`` estimated on the first samples: about the
origin (``s = 0``), a deep minimum (``L ≪ C``) would come out of cancelling terms, off by
about ``eps·C/L`` relative (measured: 3e-6 in float64 where the fit left noise of 1e-5),
where about ``s`` the terms are small beside ``L``. Only float64 predictions get a
centre: float32 ones carry rounding of about ``eps₃₂·sqrt(C/L)`` relative, more than the
cancellation's ``eps₆₄·C/L`` wherever ``C/L < 1e17``, so for them ``s = 0`` and no pass is
spent on it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from fastsurface.engine._losses import Loss, squared_error
from fastsurface.engine._shared import batched_linear, global_forward_hooks, shared_forward
from fastsurface.engine._stream import Chunk
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane


def linear_coordinate(module: nn.Module, plane: Plane, loss: Loss, x: torch.Tensor) -> tuple[int | None, str]:
    """Which coordinate (0 for ``a``, 1 for ``b``) the prediction is affine in, and why.

    The rule: the loss is the built-in ``"mse"``; the coordinate's direction is non-zero
    only in parameters of one ``nn.Linear`` (exactly that class, with plain ``weight`` and
    ``bias`` and no forward hooks, its own or global); those parameters are not shared
    with another module; and on a forward pass over the example inputs ``x`` that layer runs once, its output
    tensor is the model's output and is not modified in place afterwards, and its input
    does not depend on its own parameters (checked with autograd, and by moving them,
    which also catches reads through ``.detach()``). Every later forward pass checks
    again that the layer ran once and made the output. ``b`` is tried first.

    Returns:
        ``(coordinate, "")`` when one applies, else ``(None, reason)``.
    """
    if loss.per_sample is not squared_error:
        return None, f"the loss is {loss.name!r}, not 'mse'"
    reasons = []
    for coordinate, direction in ((1, plane.second), (0, plane.first)):
        reason = _output_layer_obstacle(module, direction, x)
        if not reason:
            return coordinate, ""
        reasons.append(f"{plane.labels[coordinate]}: {reason}")
    return None, "; ".join(reasons)


def _output_layer_obstacle(module: nn.Module, direction: dict[str, torch.Tensor], x: torch.Tensor) -> str:
    owners = _moving_modules(direction)
    if len(owners) != 1:
        return "its direction spans several modules"
    layer = module.get_submodule(owners.pop())
    if type(layer) is not nn.Linear:
        return f"its direction lies in a {type(layer).__name__}, not an nn.Linear"
    if set(layer._parameters) - {"weight", "bias"} or layer._parameters.get("weight") is None:
        return "its layer's weight is computed from other parameters (e.g. nn.utils.weight_norm)"
    if layer._forward_hooks or layer._forward_pre_hooks:
        return "its layer has forward hooks, which may change its input or output"
    if global_forward_hooks():
        return "global forward hooks are registered, which may change its layer's input or output"
    own = list(layer.parameters())
    if sum(any(p is q for q in own) for _, p in module.named_parameters(remove_duplicate=False)) != len(own):
        return "its layer shares parameters with another module"
    return _output_obstacle(module, layer, own, x)


def _output_obstacle(module: nn.Module, layer: nn.Linear, own: list[nn.Parameter], x: torch.Tensor) -> str:
    names = _names(layer, module)
    with torch.enable_grad():
        leaves = [p.detach().requires_grad_(True) for p in own]
        calls, output = _layer_calls(module, layer, dict(zip(names, leaves, strict=True)), x)
    if len(calls) != 1 or output is not calls[0][1]:
        return "its layer's output is not the model's output"
    features, _, version = calls[0]
    if output._version != version:  # e.g. ReLU(inplace=True) after the layer: same tensor, other values
        return "its layer's output is modified in place after the layer"
    if features.requires_grad:
        with torch.enable_grad():
            grads = torch.autograd.grad(features.sum(), leaves, allow_unused=True)
        if any(g is not None for g in grads):
            return "its layer's input depends on the layer's own parameters"
    # Reads that autograd cannot see (.detach(), .data, no_grad, argmax) show when the
    # parameters move: by seeded random amounts of their own scale, so that their order and
    # signs change too; with gradients on again, so that the same kernels run (some layers
    # take a differently rounded fast path without them).
    generator = torch.Generator(device=x.device).manual_seed(0)
    with torch.enable_grad():
        moved_parameters = [_moved(p.detach(), generator).requires_grad_(True) for p in own]
        moved, _ = _layer_calls(module, layer, dict(zip(names, moved_parameters, strict=True)), x)
    if len(moved) != 1 or not _same(moved[0][0], features):
        return "its layer's input depends on the layer's own parameters"
    return ""


def _moved(parameter: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    scale = float(parameter.abs().max()) + 1 if parameter.numel() else 1.0
    noise = torch.randn(parameter.shape, generator=generator, device=parameter.device, dtype=parameter.dtype)
    return parameter + scale * noise


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN equal to NaN."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _layer_calls(
    module: nn.Module, layer: nn.Module, parameters: dict[str, torch.Tensor], x: torch.Tensor
) -> tuple[list[tuple[torch.Tensor, torch.Tensor, int]], object]:
    """``(input, output, output version)`` of each call of ``layer`` in a forward pass with
    ``parameters``, and the model's output."""
    calls: list[tuple[torch.Tensor, torch.Tensor, int]] = []
    handle = layer.register_forward_hook(lambda _m, inputs, output: calls.append((inputs[0], output, output._version)))
    try:
        output = functional_call(module, parameters, (x,))
    finally:
        handle.remove()
    return calls, output


def _moving_modules(direction: dict[str, torch.Tensor]) -> set[str]:
    """Names of the modules whose parameters ``direction`` moves (non-zero entries)."""
    return {name.rpartition(".")[0] for name, tensor in direction.items() if bool(tensor.ne(0).any())}


def _names(layer: nn.Module, module: nn.Module) -> list[str]:
    by_identity = {id(p): name for name, p in module.named_parameters()}
    return [by_identity[id(p)] for p in layer.parameters()]


# Entries of the grid made per block of rows (a few MB of temporaries).
_GRID_BLOCK = 2**18
# Bytes of float64 rows converted at a time for the Gram sums (two buffers of this size,
# kept between calls): a seed-sized tile (80 values × 2,000 samples) fits in one block.
_GRAM_BLOCK_BYTES = 2**22
# Elements per Gram block, whatever the tile's count of values: a value's sums then add
# the same blocks in the same order on a grid and at listed points, bit for bit.
_GRAM_BLOCK_ELEMENTS = 2**14
# Elements on which the centre ``s`` of the quadratic is estimated (the module docstring).
_CENTRE_ELEMENTS = 256


def affine_second(plane: Plane, coordinate: int) -> Plane:
    """``plane`` with the affine ``coordinate`` (``linear_coordinate``'s) as its second one."""
    return plane if coordinate == 1 else Plane(plane.origin, plane.second, plane.first, plane.labels[::-1])


class ClosedFormKernel:
    """The closed form's work on a tile of values of the free coordinate, for one model and
    plane (the affine coordinate second, ``affine_second``): the predictions ``r`` and
    slopes ``e`` and their weighted Gram sums. Built once and kept by an ``Evaluator``
    across calls, with its float64 workspace and the float64 targets and weights of the
    chunk it last saw.

    Args:
        module: the evaluation copy of the model (the per-value route adds a forward hook
            to its output layer during each call).
        plane: the plane, with the affine coordinate as its second one.
    """

    def __init__(self, module: nn.Module, plane: Plane) -> None:
        self.predict = _shared_prediction_and_slope(module, plane) or vmap(
            _prediction_and_slope(module, plane), in_dims=(0, None)
        )
        self._workspace = torch.empty(0, dtype=torch.float64, device=plane.device)
        self._chunk: Chunk | None = None
        self._target = self._weight = self._workspace
        self._uniform: float | None = None  # the chunk's one weight, where all are equal

    def sums(self, a: torch.Tensor, chunk: Chunk, centre: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``[A, B, C]`` over ``chunk`` at the values ``a`` ``(T,)`` about ``centre`` ``(T,)``,
        float64, shape ``(3, T)``, and the centre (estimated on this chunk where None)."""
        if chunk is not self._chunk:  # targets and weights in the predictions' (feature-major) order
            # A sample's loss is the mean over its elements: weigh each element by w / k.
            y = chunk.y.to(torch.float64)
            weight = (chunk.weight.to(torch.float64) / y[0].numel()).reshape(-1, *(1 for _ in y.shape[1:]))
            self._chunk = chunk
            self._uniform = float(weight[0]) if bool((weight == weight[0]).all()) else None
            self._weight = weight.expand_as(y).movedim(-1, 0).reshape(-1)
            self._target = y.movedim(-1, 0).reshape(-1)
        predicted = self.predict(a, chunk.x)
        if predicted.dtype != torch.float64:  # the module docstring: no centre in float32
            gram = self._weighted_gram(predicted, None)
            centre = torch.zeros(len(a), dtype=torch.float64, device=a.device)
        else:
            if centre is None:
                centre = self._centre(predicted[:, :, :_CENTRE_ELEMENTS])
            gram = self._weighted_gram(predicted, centre)
        return torch.stack([gram[:, 1, 1], gram[:, 0, 1], gram[:, 0, 0]]), centre

    def _centre(self, head: torch.Tensor) -> torch.Tensor:
        """The minimum along ``b`` on the first elements ``head`` ``(T, 2, k)`` (the
        module docstring's ``s``), 0 where it is not finite."""
        gram = self._weighted_gram(head, None)
        centre = gram[:, 0, 1] / gram[:, 1, 1]
        return centre.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)

    def _weighted_gram(self, predicted: torch.Tensor, centre: torch.Tensor | None) -> torch.Tensor:
        """``[[C, B], [B, A]]`` per value about ``centre`` ``(T,)`` (0 where None), float64,
        shape ``(T, 2, 2)``, from ``predicted`` rows ``(r, e)`` of shape ``(T, 2, E)``.

        Rows become ``(y - r - centre·e, e)`` in float64, where products of float32 values
        are exact. They are converted in blocks of elements (and groups of values) into two
        buffers kept between calls: fresh float64 copies of a whole tile would be
        megabytes, and allocating them each call cost more page faults than the arithmetic
        (measured on the seed's 80 × 80 grid: 0.3 ms a call with kept buffers, 0.8 ms with
        1 MB blocks allocated each call).
        """
        values, _, elements = predicted.shape
        block = min(elements, _GRAM_BLOCK_ELEMENTS)
        group = min(values, max(1, _GRAM_BLOCK_BYTES // (16 * block)))
        if self._workspace.numel() < 4 * group * block:
            self._workspace = torch.empty(4 * group * block, dtype=torch.float64, device=predicted.device)
        gram = torch.zeros(values, 2, 2, dtype=torch.float64, device=predicted.device)
        for first in range(0, values, group):
            last = min(values, first + group)
            part = None if centre is None else centre[first:last]
            for start in range(0, elements, block):
                self._add_block(gram[first:last], predicted[first:last, :, start : start + block], part, start)
        return gram if self._uniform is None else gram.mul_(self._uniform)

    def _add_block(self, gram: torch.Tensor, predicted: torch.Tensor, centre: torch.Tensor | None, start: int) -> None:
        """Add one block of elements (from ``start``) to ``gram``, as ``_weighted_gram`` says."""
        values, _, count = predicted.shape
        size = 2 * values * count
        rows = self._workspace[:size].view(values, 2, count)
        rows.copy_(predicted)
        torch.sub(self._target[start : start + count], rows[:, 0], out=rows[:, 0])
        if centre is not None:
            rows[:, 0].addcmul_(centre[:, None], rows[:, 1], value=-1)
        if self._uniform is None:
            weighted = self._workspace[size : 2 * size].view(values, 2, count)
            gram.baddbmm_(torch.mul(rows, self._weight[start : start + count], out=weighted), rows.transpose(1, 2))
        else:  # equal weights (the usual case): one product fewer per element
            gram.baddbmm_(rows, rows.transpose(1, 2))


class ClosedFormSums:
    """Accumulates ``A``, ``B``, ``C`` (float64) for every value of the free coordinate.

    Args:
        kernel: the model's and plane's ``ClosedFormKernel``.
        free: values of the other coordinate, shape ``(n,)``, compute dtype.
        tile: values of the free coordinate evaluated per kernel call.
    """

    def __init__(self, kernel: ClosedFormKernel, free: torch.Tensor, tile: int) -> None:
        self.kernel = kernel
        self.free = free
        self.tile = tile
        self.sums = torch.zeros(3, len(free), dtype=torch.float64, device=free.device)
        self.centre: torch.Tensor | None = None  # per value, from the first chunk

    def add(self, chunk: Chunk, done: Callable[[], object]) -> None:
        """Add ``chunk``'s weighted sums, calling ``done`` after each tile."""
        centres = [self.sums.new_empty(0)]  # no tile where there are no values
        for start in range(0, len(self.free), self.tile):
            stop = min(len(self.free), start + self.tile)
            given = None if self.centre is None else self.centre[start:stop]
            sums, centre = self.kernel.sums(self.free[start:stop], chunk, given)
            self.sums[:, start:stop] += sums
            centres.append(centre)
            done()
        if self.centre is None:
            self.centre = torch.cat(centres)

    def grid(self, linear: torch.Tensor) -> torch.Tensor:
        """Weighted loss sums on ``free × linear``, float64, shape ``(n, len(linear))``.

        Made in blocks of rows, so that temporaries stay small beside the result; each
        entry is computed exactly as ``at`` computes a point, bit for bit.
        """
        values = linear.to(torch.float64)
        grid = torch.empty(len(self.free), len(values), dtype=torch.float64, device=values.device)
        rows = max(1, _GRID_BLOCK // len(values))
        for start in range(0, len(self.free), rows):
            a, b, c = self.sums[:, start : start + rows, None]
            grid[start : start + rows] = _quadratic(a, b, c, values - self._centres()[start : start + rows, None])
        return grid

    def at(self, linear: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Weighted loss sums at the points ``(free[rows[p]], linear[p])``, float64, shape
        ``(len(linear),)``; ``rows`` are int64 indices into ``free``."""
        a, b, c = self.sums[:, rows]
        return _quadratic(a, b, c, linear.to(torch.float64) - self._centres()[rows])

    def _centres(self) -> torch.Tensor:
        assert self.centre is not None  # every evaluation adds a chunk
        return self.centre


def _quadratic(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``A·u² − 2·B·u + C`` at the ``offsets`` ``u = b − s`` from the centre."""
    return a * (offsets * offsets) - (2 * b) * offsets + c


def _slope_layer(module: nn.Module, plane: Plane) -> tuple[nn.Linear, torch.Tensor, torch.Tensor | None]:
    """The output layer and the second direction's weight and bias in it (the bias None
    where the direction has none)."""
    (layer_name,) = _moving_modules(plane.second)
    layer = module.get_submodule(layer_name)
    assert isinstance(layer, nn.Linear)  # linear_coordinate's rule
    prefix = f"{layer_name}." if layer_name else ""  # "" when the model is the layer itself
    return layer, plane.second.get(f"{prefix}weight", torch.zeros_like(layer.weight)), plane.second.get(f"{prefix}bias")


def _shared_prediction_and_slope(module: nn.Module, plane: Plane) -> Callable[..., torch.Tensor] | None:
    """``(a, x) -> [p(a, 0), e(a)]`` for a tile of values ``a`` ``(T,)``, shape ``(T, 2, E)``
    (``E``: output elements of the chunk, feature-major), on a ``SharedForward``
    (``_shared``): the layers before the first moving one and its three products once per
    chunk, the rest as batched products, and the output layer's two products as one; None
    where that does not apply (then ``_prediction_and_slope`` runs per value)."""
    forward = shared_forward(module, plane)
    layer, slope_weight, slope_bias = _slope_layer(module, plane)
    if forward is None or not forward.closed_form_ready or forward.suffix_layers[-1].module is not layer:
        return None
    kept: list[torch.Tensor] = []  # the chunk's inputs and what its points share

    def predictions_and_slopes(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not kept or kept[0] is not x:
            kept[:] = [x, forward.share(x)]
        moving = forward.moved(a)
        h = forward.last_input(a, kept[1], moving)
        weight, bias, _ = forward.layer_parameters(forward.suffix_layers[-1], moving)
        shape = (len(a), *layer.weight.shape)
        weights = torch.cat([weight.expand(shape), slope_weight.expand(shape)], dim=1)
        both = batched_linear(h, weights, _both_biases(len(a), layer, bias, slope_bias), batched_bias=True)
        return both.reshape(len(a), 2, -1)

    return predictions_and_slopes


def _both_biases(
    count: int, layer: nn.Linear, bias: torch.Tensor | None, slope_bias: torch.Tensor | None
) -> torch.Tensor | None:
    """The output layer's bias at ``count`` points beside the slope's, shape ``(count, 2·out)``;
    None where neither has one."""
    if bias is None and slope_bias is None:
        return None
    zeros = layer.weight.new_zeros(layer.out_features)
    at_points = (zeros if bias is None else bias).expand(count, layer.out_features)
    return torch.cat([at_points, (zeros if slope_bias is None else slope_bias).expand(count, -1)], dim=1)


def _prediction_and_slope(module: nn.Module, plane: Plane) -> Callable[..., torch.Tensor]:
    """``(a, x) -> [p(a, 0), e(a)]`` for one value ``a``, shape ``(2, E)`` (feature-major): the prediction at
    ``b = 0`` and its exact slope along ``b``, ``e = F.linear(h, d₂W, d₂bias)`` with ``h``
    the output layer's input, from one forward pass."""
    layer, weight, bias = _slope_layer(module, plane)
    # Parameters the free coordinate does not move stay unbatched under vmap: the same values
    # (θ₀ + a·0 = θ₀), but a plain product instead of a batched one per value.
    moved = {name for name, tensor in plane.first.items() if bool(tensor.ne(0).any())}

    def per_value(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        parameters = {
            name: origin + a * plane.first[name] if name in moved else origin for name, origin in plane.origin.items()
        }
        calls, prediction = _layer_calls(module, layer, parameters, x)
        if len(calls) != 1 or prediction is not calls[0][1]:
            raise FastsurfaceError(
                "`method` 'closed_form' does not apply to these data: on a later chunk the output layer "
                f"ran {len(calls)} time(s) or did not produce the output (the model's structure depends on its "
                "inputs); use method='vmap'"
            )
        return torch.stack([prediction, F.linear(calls[0][0], weight, bias)]).movedim(-1, 1).reshape(2, -1)

    return per_value
