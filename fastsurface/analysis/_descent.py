"""SGD steps on a plane's two coordinates ``(a, b)``, as ``train_sgd`` takes them.

On the plane ``θ(a, b) = θ₀ + a·d₁ + b·d₂``, so a batch loss ``L`` has the coordinate
gradient ``g = (⟨∇θ L, d₁⟩, ⟨∇θ L, d₂⟩)``, and a step is ``torch.optim.SGD``'s
``c ← c − lr·g`` in the compute dtype. Two routes compute ``g``:

- ``AutogradDescent``: any model, loss and device. The moving parameters of the private
  copy are set to ``θ(a, b)`` in place and autograd differentiates the model itself; no
  parameter dictionary or ``functional_call`` per step.
- ``TanhStackDescent``: the mean squared error of a plain ``Linear → Tanh → Linear``
  stack on the CPU, its forward and backward pass written out in NumPy, which costs a
  microsecond or two an operation where torch's dispatch and autograd cost tens.
  ``TwoWeightDescent`` is its seed case (``ANN(1, 1, 1)``: one input, one tanh unit, one
  output, no biases), where every matrix product is a scalar product: eleven NumPy
  calls on preallocated vectors a step, so the seed's 3,125 steps take a few hundredths
  of a second.

A descent is handed an epoch's rows at once and takes one step per ``batch_size`` of
them, so the NumPy routes convert each epoch to arrays once, not each batch.

Both give the path that autograd through ``(a, b)`` gives, to the dtype's rounding: the
same parameter values, the same products, sums possibly added in another order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch import nn

from fastsurface.engine._losses import Loss, squared_error
from fastsurface.planes.plane import Plane
from fastsurface.seed.model import ANN


class PlaneDescent(Protocol):
    """SGD on a plane's coordinates, one batch at a time."""

    def steps(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[None]:
        """One SGD step on the batch mean of the per-sample loss of each run of
        ``batch_size`` rows of ``(x, y)`` in turn (the last may be shorter), yielding
        after each step."""

    def position(self) -> torch.Tensor:
        """The coordinates ``(a, b)`` now, a copy of shape ``(2,)`` in the compute dtype."""


def plane_descent(
    module: nn.Module, plane: Plane, loss: Loss, *, lr: float, start: tuple[float, float]
) -> PlaneDescent:
    """The fastest exact route for ``module`` (the private copy, on the plane's device and
    in its dtype), ``plane`` and ``loss``, starting from ``start`` with learning rate ``lr``."""
    layers = tanh_stack(module)
    if layers is not None and loss.per_sample is squared_error and plane.device.type == "cpu":
        if all(weight.shape == (1, 1) and bias is None for weight, bias in layers):
            return TwoWeightDescent(module, layers, plane, lr=lr, start=start)
        return TanhStackDescent(module, layers, plane, lr=lr, start=start)
    return AutogradDescent(module, plane, loss, lr=lr, start=start)


class AutogradDescent:
    """The general route: autograd on ``module`` with its moving parameters set in place.

    The parameters the plane does not move stop requiring gradients (the module is a
    private copy), so backward computes only what ``g`` needs.
    """

    def __init__(self, module: nn.Module, plane: Plane, loss: Loss, *, lr: float, start: tuple[float, float]) -> None:
        parameters = dict(module.named_parameters())
        for parameter in parameters.values():
            parameter.requires_grad_(False)
        self.moving = [parameters[name].requires_grad_(True) for name in plane.origin]
        self.module, self.plane, self.loss, self.lr = module, plane, loss, lr
        self.coordinates = torch.tensor(start, dtype=plane.dtype, device=plane.device)

    def steps(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[None]:
        for batch in zip(x.split(batch_size), y.split(batch_size), strict=True):
            self._step(*batch)
            yield

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            for parameter, value in zip(self.moving, self.plane.params(*self.coordinates).values(), strict=True):
                parameter.copy_(value)
        with torch.enable_grad():
            batch_loss = self.loss.per_sample(self.module(x), y).mean()
            gradients = torch.autograd.grad(batch_loss, self.moving, allow_unused=True)
        with torch.no_grad():
            slope = torch.stack([self._along(gradients, self.plane.first), self._along(gradients, self.plane.second)])
            self.coordinates.add_(slope, alpha=-self.lr)  # torch.optim.SGD's update, operation for operation

    def _along(self, gradients: tuple[torch.Tensor | None, ...], direction: dict[str, torch.Tensor]) -> torch.Tensor:
        """``⟨∇θ L, d⟩``: a parameter the loss does not use adds nothing."""
        total = torch.zeros((), dtype=self.coordinates.dtype, device=self.coordinates.device)
        for gradient, step in zip(gradients, direction.values(), strict=True):
            if gradient is not None:
                total = total + (gradient * step).sum()
        return total

    def position(self) -> torch.Tensor:
        return self.coordinates.clone()


# A linear layer's (weight, bias); bias None without one.
LinearParameters = tuple[torch.Tensor, torch.Tensor | None]


def tanh_stack(module: nn.Module) -> list[LinearParameters] | None:
    """The parameters of the two linear layers of ``module`` when all it computes is
    ``Linear → Tanh → Linear``, else ``None``.

    Recognised: an ``nn.Sequential`` of exactly ``nn.Linear``, ``nn.Tanh``, ``nn.Linear``
    (those classes, not subclasses), or the seed ``ANN`` holding one; linear layers with
    plain, unshared ``weight`` and ``bias`` (no parametrization, no tied weights); no
    module hook (its own or global) and no ``forward`` replaced on an instance.
    """
    stack = module.net if type(module) is ANN else module
    if type(stack) is not nn.Sequential or [type(layer) for layer in stack] != [nn.Linear, nn.Tanh, nn.Linear]:
        return None
    if _global_hooks() or any(_hooked(part) for part in module.modules()):
        return None
    parameters = [parameter for _, parameter in module.named_parameters(remove_duplicate=False)]
    if len({id(parameter) for parameter in parameters}) != len(parameters):
        return None
    layers: list[LinearParameters] = []
    for layer in (stack[0], stack[2]):
        weight, bias = layer._parameters.get("weight"), layer._parameters.get("bias")
        if weight is None or set(layer._parameters) != {"weight", "bias"}:
            return None
        layers.append((weight, bias))
    return layers


def _hooked(module: nn.Module) -> bool:
    hooks = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks)
    return any(hooks) or "forward" in vars(module)


def _global_hooks() -> bool:
    hooks = nn.modules.module
    return any(
        (
            hooks._global_forward_hooks,
            hooks._global_forward_pre_hooks,
            hooks._global_backward_hooks,
            hooks._global_backward_pre_hooks,
        )
    )


class _NumpyDescent:
    """What the NumPy routes share: the stack's parameters ``W₁, c₁, W₂, c₂`` as one flat
    vector ``θ = θ₀ + a·d₁ + b·d₂`` (``d`` is 0 outside the plane's moving parameters),
    in the compute dtype, and an epoch converted to arrays once. On a
    diverging path NumPy warns of overflow unless the caller silences it (``train_sgd``
    does, and reports the divergence itself)."""

    def __init__(
        self,
        module: nn.Module,
        layers: list[LinearParameters],
        plane: Plane,
        *,
        lr: float,
        start: tuple[float, float],
    ) -> None:
        names = {id(parameter): name for name, parameter in module.named_parameters()}
        parts = [parameter for pair in layers for parameter in pair if parameter is not None]
        origin, first, second = (
            torch.cat([source.get(names[id(p)], fill(p)).reshape(-1) for p in parts]).numpy()
            for source, fill in (
                (plane.origin, torch.Tensor.detach),
                (plane.first, torch.zeros_like),
                (plane.second, torch.zeros_like),
            )
        )
        self.origin, self.first, self.second = origin, first, second
        self.start = np.array(start, dtype=origin.dtype)
        self.rate = origin.dtype.type(-lr)
        self._prepare(layers)

    def _prepare(self, layers: list[LinearParameters]) -> None:
        """The route's own state (views, work vectors), once the shared state is set."""
        raise NotImplementedError

    def steps(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[None]:
        inputs, targets = self._rows(x.numpy()), self._rows(y.numpy())  # both in the compute dtype
        for start in range(0, len(inputs), batch_size):
            end = start + batch_size
            self._step(inputs[start:end], targets[start:end])
            yield

    def _rows(self, values: np.ndarray) -> np.ndarray:
        """An epoch's inputs or targets, ``(N, ...)``, as ``_step`` takes them."""
        return values

    def _step(self, x: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def position(self) -> torch.Tensor:
        raise NotImplementedError


class TanhStackDescent(_NumpyDescent):
    """The stack's route: ``p = tanh(x W₁ᵀ + c₁) W₂ᵀ + c₂`` and its mean squared error,
    differentiated by hand in NumPy, in the compute dtype, on the CPU.

    ``θ`` and its gradient are written in place through fixed views, so that a step is
    about twenty NumPy operations. With ``e = p − y`` over ``B`` samples of ``k``
    elements, autograd's chain is ``∂L/∂p = (1/B/k)·(2e)``, ``∂L/∂W₂ = (∂L/∂p)ᵀ t``,
    ``∂L/∂h = (∂L/∂p W₂)·(1 − t²)``, ``∂L/∂W₁ = (∂L/∂h)ᵀ x``, the biases summing the same
    rows; each written as torch writes it, so only sums may round differently.
    """

    def _prepare(self, layers: list[LinearParameters]) -> None:
        self.coordinates = self.start
        self.directions = np.stack([self.first, self.second])
        self.theta, self.gradient = np.empty_like(self.origin), np.empty_like(self.origin)
        self.parameters = _views(self.theta, layers)
        self.gradients = _views(self.gradient, layers)

    def _step(self, x: np.ndarray, y: np.ndarray) -> None:
        a, b = self.coordinates
        np.add(self.origin, a * self.first, out=self.theta)
        self.theta += b * self.second
        self._backward(x, y)
        self.coordinates = self.coordinates + self.rate * (self.directions @ self.gradient)

    def _backward(self, x: np.ndarray, y: np.ndarray) -> None:
        """Write ``∂L/∂θ`` of the batch's mean squared error into ``self.gradient``."""
        (weight_in, bias_in), (weight_out, bias_out) = self.parameters
        (grad_weight_in, grad_bias_in), (grad_weight_out, grad_bias_out) = self.gradients
        hidden = x @ weight_in.T if bias_in is None else x @ weight_in.T + bias_in
        activation = np.tanh(hidden)
        prediction = activation @ weight_out.T if bias_out is None else activation @ weight_out.T + bias_out
        scale = self.theta.dtype.type(1) / len(y) / (y.size // len(y))
        outer = (scale * (2 * (prediction - y))).reshape(-1, prediction.shape[-1])
        features = activation.reshape(-1, activation.shape[-1])
        inner = (outer @ weight_out) * (1 - features * features)
        np.matmul(outer.T, features, out=grad_weight_out)
        np.matmul(inner.T, x.reshape(-1, x.shape[-1]), out=grad_weight_in)
        for bias, rows in ((grad_bias_out, outer), (grad_bias_in, inner)):
            if bias is not None:
                np.sum(rows, axis=0, out=bias)

    def position(self) -> torch.Tensor:
        return torch.from_numpy(self.coordinates.copy())


class TwoWeightDescent(_NumpyDescent):
    """The seed's stack, ``p = w₂·tanh(w₁·x)`` with scalar weights, as ``TanhStackDescent``
    computes it with every matrix product a scalar one: per sample the same products in
    the same order (``∂L/∂p = (2/B)·e``, ``∂L/∂h = (∂L/∂p·w₂)·(1 − t²)``; ``2/B·e`` equals
    ``1/B·(2e)`` exactly, doubling being exact), the two sums ``Σ ∂L/∂p·t`` and
    ``Σ ∂L/∂h·x`` as ``np.dot`` adds them, and the weights and the update in scalars of
    the compute dtype. Eleven NumPy calls a step on vectors allocated once per batch size.
    """

    def _prepare(self, layers: list[LinearParameters]) -> None:
        self.one = self.origin.dtype.type(1)
        # Scalars of the compute dtype: a NumPy scalar's arithmetic costs a tenth of a
        # microsecond, unpacking a NumPy vector two.
        self.vectors = tuple(tuple(vector) for vector in (self.origin, self.first, self.second))
        self.point = tuple(self.start)
        self.work: dict[int, tuple[np.floating, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def _rows(self, values: np.ndarray) -> np.ndarray:
        return values.reshape(len(values))  # (N, 1) -> (N,): one input, one output

    def _step(self, x: np.ndarray, y: np.ndarray) -> None:
        (o1, o2), (f1, f2), (s1, s2) = self.vectors
        a, b = self.point
        w1, w2 = o1 + a * f1 + b * s1, o2 + a * f2 + b * s2  # θ₀ + a·d₁ + b·d₂, as Plane.params adds it
        twice_scale, hidden, activation, outer, inner = self._work(len(y))
        multiply, subtract, dot = np.multiply, np.subtract, np.dot  # outputs passed by position: faster
        multiply(x, w1, hidden)
        np.tanh(hidden, activation)
        multiply(activation, w2, outer)
        subtract(outer, y, outer)
        multiply(outer, twice_scale, outer)
        grad_w2 = dot(outer, activation)
        multiply(activation, activation, hidden)
        subtract(self.one, hidden, hidden)
        multiply(outer, w2, inner)
        multiply(inner, hidden, inner)
        grad_w1 = dot(inner, x)
        self.point = (a + self.rate * (grad_w1 * f1 + grad_w2 * f2), b + self.rate * (grad_w1 * s1 + grad_w2 * s2))

    def position(self) -> torch.Tensor:
        return torch.from_numpy(np.array(self.point, dtype=self.origin.dtype))

    def _work(self, size: int) -> tuple[np.floating, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For a batch of ``size``: ``2/B`` and four work vectors (the hidden values, the
        activations, ``∂L/∂p`` and ``∂L/∂h``), made once per batch size."""
        if size not in self.work:
            dtype = self.origin.dtype
            vectors = [np.empty(size, dtype=dtype) for _ in range(4)]
            self.work[size] = (2 * (self.one / size), *vectors)
        return self.work[size]


def _views(flat: np.ndarray, layers: list[LinearParameters]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``(weight, bias)`` of each layer as views of ``flat``, where the layers' parameters
    lie one after the other."""
    views, end = [], 0
    for weight, bias in layers:
        weight_view = flat[end : end + weight.numel()].reshape(weight.shape)
        end += weight.numel()
        bias_view = None if bias is None else flat[end : end + bias.numel()]
        end += 0 if bias is None else bias.numel()
        views.append((weight_view, bias_view))
    return views
