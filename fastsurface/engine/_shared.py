"""Forward passes that share, across the points of a plane, what those points share.

For a model that is an ``nn.Sequential`` (nested ``nn.Sequential``s are flattened), the
plane ``θ₀ + a·d₁ + b·d₂`` moves the parameters of some of its layers. Two things are then
the same for every point, and computed once per chunk of samples instead of once per point:

- **the frozen prefix**: the layers before the first one the plane moves see the same
  inputs and parameters at every point, so their output ``h`` is the same;
- **the first moving layer**, when it is an ``nn.Linear`` or ``nn.Conv1d/2d/3d`` (a map
  linear in its weight and bias): its output at ``(a, b)`` is
  ``L(h; W₀, c₀) + a·L(h; D₁, e₁) + b·L(h; D₂, e₂)``, three products for the whole plane
  (``W``, ``c``: weight and bias; ``D``, ``e``: their directions). Equal to the product with
  the moved weights up to float rounding (a different order of the same sums).

The layers after that run per point: as batched products (features first, samples last)
where they are plain ``nn.Linear`` layers and elementwise activations, else under ``vmap``
(``functional_call``). Nothing here applies where it could change a result: other model
classes, hooks (on the model, its nested ``nn.Sequential``s or the shared layer, or global
ones), parametrised or lazy layers, and layers in training mode that behave differently
there (batch statistics and dropout masks belong to each point; the engine never asks in
train mode).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.modules import module as module_internals

from fastsurface.engine._losses import Loss
from fastsurface.planes.plane import Plane
from fastsurface.seed.model import ANN

# Layers whose output is linear in (weight, bias) for fixed inputs.
_LINEAR_IN_WEIGHTS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Activations applied value by value: they run on a tile's (T, S, ...) tensor as they are.
_ELEMENTWISE = (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus)
# Activations applied in place to a tile's activations, which are always the batched
# suffix's own temporaries: no allocation (and no page faults) for a new tensor each layer.
_IN_PLACE: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    nn.ReLU: torch.relu_,
    nn.Tanh: torch.tanh_,
    nn.Sigmoid: torch.sigmoid_,
}
# Modules that compute the same in training and eval mode: only these may be shared while
# in training mode (a callee's model may be; the engine's copy never is). Dropout, batch
# statistics and the like must be drawn or taken per point.
_MODE_FREE = (
    *_LINEAR_IN_WEIGHTS,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Softplus,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.LayerNorm,
)


@dataclass(frozen=True)
class _Layer:
    """One layer of the flattened sequence, with the plane's parameters it uses:
    ``(its own name for the parameter, the plane's name)``."""

    module: nn.Module
    moving: tuple[tuple[str, str], ...]


class SharedForward:
    """The model's forward pass cut where the plane starts moving it (see the module docstring).

    ``share(x)`` computes, once per chunk of inputs ``x`` ``(S, ...)``, what every point
    shares; ``predictions`` the model's outputs at a tile of points from it.
    """

    def __init__(self, prefix: list[nn.Module], shared: _Layer | None, suffix: list[_Layer], plane: Plane) -> None:
        self.prefix, self.shared, self.suffix_layers, self.plane = prefix, shared, suffix, plane
        self.terms = _terms(shared, plane) if shared is not None else None
        self.needed = sorted({name for layer in suffix for _, name in layer.moving})
        self.batchable = all(_batchable(layer.module) for layer in suffix)
        self.tiled_pools = [_is_tiled_max_pool(layer.module) for layer in suffix]  # decided once, not per tile

    def share(self, x: torch.Tensor) -> torch.Tensor:
        """What every point shares for inputs ``x``: the prefix's output ``h``, or the
        shared layer's three terms stacked, shape ``(3, *output shape)``; for a batchable
        suffix, features first: ``(3, features, S, ...)``."""
        h = x
        for layer in self.prefix:
            h = layer(h)
        if self.terms is None:
            return h
        terms = torch.stack([self.terms(h, k) for k in range(3)])
        return terms.movedim(-1, 1).contiguous() if self.batchable else terms

    def predictions(
        self, a: torch.Tensor, b: torch.Tensor, shared: torch.Tensor, buffers: TileBuffers | None = None
    ) -> torch.Tensor:
        """The model's outputs at the tile's points ``a``, ``b`` ``(T,)``, from ``share``'s
        tensor: shape ``(T, S, ...)``; with ``buffers``, the batched layers write into them
        (the result is then a view of them, valid until their next use).

        The shared layer's outputs are ``t₀ + a·t₁ + b·t₂``, elementwise (two passes, where
        a product with the ``(T, 3)`` coefficients, a GEMM of depth 3, ran at a fraction of
        the memory's speed; and a point's values do not depend on the tile). The layers
        after it run as batched operations where they are plain ``nn.Linear`` layers and
        elementwise activations (a batched matrix product with the bias fused, about twice
        as fast as the same under ``vmap``), else per point under ``vmap``."""
        if self.terms is None:  # the cut layer is not shared, so it runs per point
            return vmap(self.suffix, in_dims=(0, 0, None))(a, b, shared)
        if not self.batchable:
            return vmap(self.suffix)(a, b, self.shared_output(a, b, shared))
        out = None if buffers is None else buffers.take(0, (len(a), *shared.shape[1:]), shared)
        return self._batched_suffix(a, b, self.shared_output(a, b, shared, out), buffers).movedim(1, -1)

    @staticmethod
    def shared_output(
        a: torch.Tensor, b: torch.Tensor | None, shared: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The shared layer's output at the points ``(a, b)`` (``b`` 0 where None), shape
        ``(T, *shared.shape[1:])``: ``t₀ + a·t₁ + b·t₂`` elementwise, into ``out`` if given."""
        shape = (len(a), *(1 for _ in shared.shape[1:]))
        h = torch.addcmul(shared[0], a.reshape(shape), shared[1], out=out)
        return h if b is None else h.addcmul_(b.reshape(shape), shared[2])

    def suffix(self, a: torch.Tensor, b: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The model's output at plane point ``(a, b)`` (0-d; vmap-safe) from the input ``h``
        of the layers after the cut."""
        plane = self.plane
        moving = {name: plane.origin[name] + a * plane.first[name] + b * plane.second[name] for name in self.needed}
        for layer, tiled_pool in zip(self.suffix_layers, self.tiled_pools, strict=True):
            parameters = {own: moving[name] for own, name in layer.moving}
            if parameters:
                h = functional_call(layer.module, parameters, (h,))
            else:
                h = _tiled_max_pool(layer.module, h) if tiled_pool else layer.module(h)
        return h

    def last_input(self, a: torch.Tensor, shared: torch.Tensor, moving: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last layer's input at the points ``(a, 0)`` ``(T,)``, features first: shape
        ``(T, in, S, ...)``, from ``share``'s tensor and ``moved(a)``; for a cut at a shared
        layer before the last one, and a batchable suffix (``closed_form_ready``)."""
        h = self.shared_output(a, None, shared)
        for layer in self.suffix_layers[:-1]:
            h = self.batched_layer(layer, moving, h)
        return h

    @property
    def batched(self) -> bool:
        """Whether ``predictions`` runs every layer after the cut as batched products, the
        shared layer's three terms included."""
        return self.terms is not None and self.batchable

    @property
    def closed_form_ready(self) -> bool:
        """Whether ``last_input`` applies: a shared layer, then batchable layers, the last
        one after the shared one."""
        return self.batched and bool(self.suffix_layers)

    def moved(self, a: torch.Tensor, b: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The suffix's moving parameters at the points ``(a, b)`` (``b`` 0 where None),
        each of shape ``(T, *parameter shape)``."""
        plane = self.plane
        moving = {}
        for name in self.needed:
            shape = (len(a), *(1 for _ in plane.origin[name].shape))
            value = plane.origin[name] + a.reshape(shape) * plane.first[name]
            moving[name] = value if b is None else value + b.reshape(shape) * plane.second[name]
        return moving

    def _batched_suffix(
        self, a: torch.Tensor, b: torch.Tensor, h: torch.Tensor, buffers: TileBuffers | None
    ) -> torch.Tensor:
        """``suffix`` for a whole tile, features first: ``h`` of shape ``(T, features, S, ...)``
        (in ``buffers``' slot 0, if given: each linear layer then writes into the slot its
        input is not in)."""
        moving = self.moved(a, b)
        slot = 0
        for layer in self.suffix_layers:
            out = None
            if buffers is not None and isinstance(layer.module, nn.Linear):
                slot = 1 - slot
                out = buffers.take(slot, (len(h), layer.module.out_features, *h.shape[2:]), h)
            h = self.batched_layer(layer, moving, h, out)
        return h

    @staticmethod
    def layer_parameters(
        layer: _Layer, moving: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """An ``nn.Linear`` layer's weight and bias at a tile's points (``moving``: the
        plane's moved parameters there, ``(T, ...)`` each), and whether the bias is per point."""
        module, own = layer.module, dict(layer.moving)
        assert isinstance(module, nn.Linear)  # the caller's check
        weight = moving[own["weight"]] if "weight" in own else module.weight
        bias = moving[own["bias"]] if "bias" in own else module.bias
        return weight, bias, "bias" in own

    @staticmethod
    def batched_layer(
        layer: _Layer, moving: dict[str, torch.Tensor], h: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One batchable layer at a tile's points: ``moving`` holds the plane's moved
        parameters at them, ``(T, ...)`` each; ``h`` ``(T, features, S, ...)`` (features
        first) is the suffix's own temporary, which an activation may overwrite; a linear
        layer writes into ``out`` if given."""
        if not isinstance(layer.module, nn.Linear):
            in_place = _IN_PLACE.get(type(layer.module))
            return layer.module(h) if in_place is None else in_place(h)
        weight, bias, batched_bias = SharedForward.layer_parameters(layer, moving)
        return batched_linear(h, weight, bias, batched_bias, out)


def batched_linear(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    batched_bias: bool,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.linear`` at each of ``T`` points, features first: ``h`` ``(T, in, S, ...)``,
    ``weight`` ``(T, out, in)`` or ``(out, in)``, ``bias`` ``(T, out)``, ``(out,)`` or
    ``None``; shape ``(T, out, S, ...)``, written into ``out`` (contiguous, not ``h``) if given.

    Features first, each point's product is ``W (out, in) @ h (in, M)`` with the long
    dimension last: measured on a 32-wide layer over 474 samples, 20 % faster than
    ``h (M, in) @ Wᵀ``, and a one-output layer 3× faster (a row times a matrix, not a
    matrix times a column)."""
    count, inputs = len(h), h.shape[1]
    flat = h.reshape(count, inputs, -1)  # (T, in, M)
    weight = weight.expand(count, *weight.shape[-2:])
    column = None if bias is None else bias.reshape(-1, bias.shape[-1], 1).expand(count, bias.shape[-1], 1)
    into = None if out is None else out.view(count, weight.shape[1], flat.shape[2])
    if inputs == 1:  # one input: a product per output and no sum, where a depth-1 GEMM is slow
        result = torch.mul(weight, flat, out=into) if column is None else torch.addcmul(column, weight, flat, out=into)
    elif column is None:
        result = torch.bmm(weight, flat, out=into)
    else:
        result = torch.baddbmm(column, weight, flat, out=into)
    return result.reshape(count, result.shape[1], *h.shape[2:])


def _is_tiled_max_pool(layer: nn.Module) -> bool:
    """Whether ``layer`` is a plain ``nn.MaxPool2d`` whose windows tile the image (kernel =
    stride, no padding or dilation, no indices, floor mode, no hooks)."""
    if type(layer) is not nn.MaxPool2d or _hooked(layer):
        return False
    kernel, stride = nn.modules.utils._pair(layer.kernel_size), nn.modules.utils._pair(layer.stride)
    plain = nn.modules.utils._pair(layer.padding) == (0, 0) and nn.modules.utils._pair(layer.dilation) == (1, 1)
    return kernel == stride and plain and not layer.return_indices and not layer.ceil_mode


def _tiled_max_pool(layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``layer(h)`` for a ``_is_tiled_max_pool`` layer as elementwise maxima of strided
    slices, equal bit for bit (NaN included: both propagate it). Under ``vmap`` the pooling
    kernel ran at about 0.2 G values/s on a small CNN's 4 × 4 maps; the maxima ran 6× faster."""
    assert isinstance(layer, nn.MaxPool2d)  # _is_tiled_max_pool's rule
    kh, kw = nn.modules.utils._pair(layer.kernel_size)
    rows, columns = h.shape[-2] // kh * kh, h.shape[-1] // kw * kw
    out = None
    for i in range(kh):
        for j in range(kw):
            window = h[..., i:rows:kh, j:columns:kw]
            out = window if out is None else torch.maximum(out, window)
    assert out is not None
    return out


def shared_forward(module: nn.Module, plane: Plane) -> SharedForward | None:
    """The model's forward pass cut for sharing, or ``None`` where nothing can be shared
    safely (then the engine evaluates every layer per point, as before)."""
    layers = _flattened(module)
    if layers is None or global_forward_hooks():
        return None
    moving_names = _moving_names(module, plane)
    cut = next((i for i, layer in enumerate(layers) if _uses(layer, moving_names)), None)
    if cut is None:
        return None
    if not all(_mode_free(layer) for layer in layers[: cut + 1]):
        return None
    shared = _shareable(layers[cut], moving_names)
    if cut == 0 and shared is None:
        return None  # nothing before the first moving layer and that layer not linear: no gain
    rest = [_Layer(layer, _own_moving(layer, moving_names)) for layer in layers[cut + (shared is not None) :]]
    return SharedForward(layers[:cut], shared, rest, plane)


class TileBuffers:
    """Two flat buffers that a tile's batched layers write into in turn, kept across tiles:
    a fresh tensor of a few MB per layer and tile is, under glibc's default malloc, mapped
    and faulted in page by page (measured on an 8 → 32 → 32 → 1 MLP, 41 × 41 points: about
    200,000 page faults in one surface, which took 1.0 s against 0.4 s without them). A
    buffer grows to the largest tile it has served and is reused, so one ``TileBuffers``
    serves one call at a time."""

    def __init__(self) -> None:
        self._flat = [torch.empty(0), torch.empty(0)]

    def take(self, slot: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A tensor of ``shape`` in buffer ``slot`` (0 or 1), with ``like``'s dtype and device;
        its values are whatever the buffer last held."""
        size = math.prod(shape)
        flat = self._flat[slot]
        if flat.numel() < size or flat.dtype != like.dtype or flat.device != like.device:
            flat = self._flat[slot] = torch.empty(size, dtype=like.dtype, device=like.device)
        return flat[:size].view(shape)


class SharedKernel:
    """The engine's kernel on a ``SharedForward``: ``(a, b, x, y, w) -> (T,)`` per-point
    weighted loss sums (``(T, W)`` for combined losses), as ``vmap_kernel``'s; the shared
    tensors are made once per chunk."""

    def __init__(self, forward: SharedForward, loss: Loss) -> None:
        self.forward = forward
        self._chunk: torch.Tensor | None = None
        self._shared = torch.empty(0)
        self._buffers = TileBuffers()
        self.loss = loss

    def __call__(
        self, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        if x is not self._chunk:
            self._chunk, self._shared = x, self.forward.share(x)
        return self.loss.tile_sums(self.forward.predictions(a, b, self._shared, self._buffers), y, w)


def _flattened(module: nn.Module) -> list[nn.Module] | None:
    """The layers of an ``nn.Sequential`` without hooks, nested ones expanded (the seed's
    ``ANN``, whose forward is its ``net``'s, counts as its ``net``); else ``None``."""
    if type(module) is ANN and not _hooked(module) and "forward" not in vars(module):
        return _flattened(module.net)
    if type(module) is not nn.Sequential or _hooked(module):
        return None
    layers: list[nn.Module] = []
    for child in module:
        if type(child) is nn.Sequential:
            inner = _flattened(child)
            if inner is None:
                return None
            layers += inner
        else:
            layers.append(child)
    return layers


def _batchable(layer: nn.Module) -> bool:
    """Whether ``_batched_suffix`` runs the layer: a plain ``nn.Linear`` or an elementwise
    activation (any leading dimensions), without hooks."""
    if _hooked(layer):
        return False
    if type(layer) is nn.Linear:
        return not set(layer._parameters) - {"weight", "bias"}
    return type(layer) in _ELEMENTWISE


def _mode_free(layer: nn.Module) -> bool:
    """Whether the layer computes what it computes in eval mode (type by type)."""
    return all(not m.training or type(m) in _MODE_FREE for m in layer.modules())


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def global_forward_hooks() -> bool:
    """Whether forward hooks or pre-hooks are registered for every module
    (``nn.modules.module.register_module_forward_hook``): they may change any layer's output."""
    return bool(module_internals._global_forward_hooks or module_internals._global_forward_pre_hooks)


def _moving_names(module: nn.Module, plane: Plane) -> dict[int, str]:
    """The plane's name of each parameter it moves, by the parameter's identity."""
    by_name = dict(module.named_parameters())
    return {id(by_name[name]): name for name in plane.origin}


def _uses(layer: nn.Module, moving: dict[int, str]) -> bool:
    return any(id(p) in moving for p in layer.parameters())


def _own_moving(layer: nn.Module, moving: dict[int, str]) -> tuple[tuple[str, str], ...]:
    """``(the layer's name, the plane's name)`` of each moving parameter the layer uses;
    a parameter tied to another layer's appears under each of its names."""
    return tuple((own, moving[id(p)]) for own, p in layer.named_parameters(remove_duplicate=False) if id(p) in moving)


def _shareable(layer: nn.Module, moving: dict[int, str]) -> _Layer | None:
    """The layer, when its output is linear in its parameters and nothing else can change it."""
    if type(layer) not in _LINEAR_IN_WEIGHTS or _hooked(layer):
        return None
    if set(layer._parameters) - {"weight", "bias"} or layer._parameters.get("weight") is None:
        return None
    return _Layer(layer, _own_moving(layer, moving))


def _terms(layer: _Layer, plane: Plane) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``(h, k) -> L(h; weight, bias)`` of the origin (k = 0) or a direction (k = 1, 2): a
    direction is zero in the layer's parameters the plane does not move."""
    module = layer.module
    names = dict(layer.moving)
    parts = (plane.origin, plane.first, plane.second)

    def value(own: str, k: int) -> torch.Tensor | None:
        fixed = module._parameters.get(own)
        if own in names:
            return parts[k][names[own]]
        if k == 0 or fixed is None:
            return fixed
        return torch.zeros_like(fixed) if own == "weight" else None

    def term(h: torch.Tensor, k: int) -> torch.Tensor:
        weight, bias = value("weight", k), value("bias", k)
        assert weight is not None  # _shareable's rule
        if isinstance(module, nn.Linear):
            return F.linear(h, weight, bias)
        return module._conv_forward(h, weight, bias)  # type: ignore[operator]

    return term
