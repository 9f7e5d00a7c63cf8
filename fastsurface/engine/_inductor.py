"""Compiled kernels: functions of tensors traced once and compiled by inductor without
dynamo (``CompiledFunction``), with a faster vectorised ``tanh`` on CPU that keeps
``tanh``'s relative accuracy.

Inductor's C++ code calls Sleef's ``tanhf`` (1 ulp), which costs several times the rest
of the seed model's fused loop. Its own alternative, ``cpp.use_decompose_tanh``
(``2 / (1 + exp(-2x)) - 1``), is fast but only absolutely accurate: near 0 it is off
by about 1e-7, which would swamp a surface whose activations are small.

``accurate_tanh`` is a rational function, ``x·P(x²)/Q(x²)`` with ``P`` and ``Q`` of
degree 4, on ``x`` clamped to ``[-9.5, 9.5]``, its result clamped to ``[-1, 1]``. The
coefficients were fitted for this module by least squares on the relative error over
42,000 points of ``[0, 9]``, reweighted by Lawson's rule towards minimax (relative
error 2.1e-8 in float64). Evaluated in float32 it is within 4e-7 of ``tanh`` (3.7e-7,
about 3 ulp, over every positive float32, checked exhaustively by
``tests/reference/test_inductor.py``); ±0, ±inf and NaN are preserved. It runs at about 3×
Sleef's speed here (``fastsurface bench``). float64 keeps ``tanh``, and CUDA keeps
Triton's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

from fastsurface.errors import FastsurfaceError

# Inputs are clamped here: float32 tanh is ±1 from about 8.7, and the rational passes
# ±1 (by 2 ulp) before 9.5, so the output clamp makes it exactly ±1, infinities included.
_CLAMP = 9.5
# P and Q in powers of x², lowest first.
_NUMERATOR = (
    0.9999999794861961,
    0.13381022828851133,
    0.0034955844843491866,
    2.060901168701566e-05,
    1.3354548489232407e-08,
)
_DENOMINATOR = (1.0, 0.4671433843286935, 0.02587696912306186, 0.0003285628371544081, 7.776514968755663e-07)


def accurate_tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh(x)`` as a clamped rational function, elementwise, any shape."""
    clamped = x.clamp(-_CLAMP, _CLAMP)
    square = clamped * clamped
    return (clamped * (_horner(_NUMERATOR, square) / _horner(_DENOMINATOR, square))).clamp(-1.0, 1.0)


def _horner(coefficients: tuple[float, ...], value: torch.Tensor) -> torch.Tensor:
    result = torch.full_like(value, coefficients[-1])
    for coefficient in reversed(coefficients[:-1]):
        result = result * value + coefficient
    return result


class UntraceableModelError(FastsurfaceError):
    """The compiled route cannot trace the model: its forward depends on tensor values."""


# Compiled functions kept per process (a key and a layout of the inputs each).
_CACHE_SIZE = 16


@dataclass(frozen=True)
class _Compiled:
    """A compiled flat function (tensors in, tensors out; ``outputs`` nests them back) and
    whether it reads nothing but its inputs."""

    function: Callable[..., Any]
    outputs: TreeSpec
    self_contained: bool


_cache: OrderedDict[Hashable, _Compiled] = OrderedDict()


class CompiledFunction:
    """``function`` (nested tuples, lists and dicts of tensors in and out) compiled by
    inductor without dynamo, once per layout of its inputs (structure, shapes, strides,
    dtypes, devices), with ``accurate_tanh`` for float32 ``tanh`` on CPU.

    Without dynamo a call skips its guards and wrappers, about a millisecond on a small
    graph, and inductor's on-disk cache serves a second process. The function is traced
    with fake tensors: a branch on a tensor's value cannot be traced and is refused
    (``UntraceableModelError``) rather than frozen to the branch taken at the trace. Compiled
    graphs that read nothing but their inputs are shared in the process under ``key``
    (what the function depends on besides its inputs; ``None``: not shared).
    """

    def __init__(self, function: Callable[..., Any], key: Hashable | None) -> None:
        self.function, self.key = function, key
        self.own: dict[Hashable, _Compiled] = {}

    def __call__(self, *arguments: Any) -> Any:
        leaves, spec = tree_flatten(arguments)
        layout = (spec, tuple((t.shape, t.stride(), t.dtype, t.device) for t in leaves))
        shared = None if self.key is None else (self.key, layout)
        found = self.own.get(layout) or (None if shared is None else _cache.get(shared))
        if found is None:
            found = self._compile(spec, leaves)
            self.own[layout] = found
            if shared is not None and found.self_contained:
                _cache[shared] = found
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
        if shared in _cache:
            _cache.move_to_end(shared)
        with torch.no_grad():
            return tree_unflatten(list(found.function(*leaves)), found.outputs)

    def _compile(self, spec: TreeSpec, leaves: list[torch.Tensor]) -> _Compiled:
        outputs: list[TreeSpec] = []

        def flat(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            results, structure = tree_flatten(self.function(*tree_unflatten(list(tensors), spec)))
            outputs.append(structure)
            return tuple(results)

        function, self_contained = _compile_flat(flat, leaves)
        return _Compiled(function, outputs[-1], self_contained)


def _compile_flat(
    function: Callable[..., tuple[torch.Tensor, ...]], inputs: Sequence[torch.Tensor]
) -> tuple[Callable[..., Any], bool]:
    """``function`` traced on fakes of ``inputs`` and compiled for them, for inference;
    and whether the graph reads nothing but its inputs (no tensor it closed over became
    a constant)."""
    from torch._guards import TracingContext, tracing
    from torch._inductor.compile_fx import compile_fx
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode, ShapeEnv

    # What tracing without values raises where the graph would depend on them (other
    # errors are the model's own, and vmap's, and reach the caller as they are).
    data_dependent = (GuardOnDataDependentSymNode, DataDependentOutputException, DynamicOutputShapeException)

    table = {torch.ops.aten.tanh.default: _float32_tanh} if inputs[0].device.type == "cpu" else {}
    with torch.no_grad():
        try:
            traced = make_fx(function, decomposition_table=table, tracing_mode="fake")(*inputs)
        except data_dependent as error:
            raise UntraceableModelError(
                "the compiled route cannot trace this model: its forward depends on tensor values in a way one "
                f"compiled graph cannot follow ({str(error).splitlines()[0]}); use the 'vmap' route"
            ) from error
        self_contained = all(node.op != "get_attr" for node in traced.graph.nodes)
        # Inductor's on-disk graph cache needs a shape environment, which only dynamo sets
        # up: without one every process would generate and build the C++ again (~10 s).
        with tracing(TracingContext(FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv()))):
            compiled = compile_fx(traced, list(inputs))
    assert callable(compiled)  # what compile_fx makes of a graph module
    return compiled, self_contained


def _float32_tanh(x: torch.Tensor) -> torch.Tensor:
    # Fitted for float32: in float64 its 2e-8 would cost eight digits, so other dtypes keep tanh.
    return accurate_tanh(x) if x.dtype == torch.float32 else NotImplemented
