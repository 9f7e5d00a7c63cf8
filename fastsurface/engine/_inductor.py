"""The ``torch.compile`` backend of the compiled kernels: inductor, with a faster
vectorised ``tanh`` on CPU that keeps ``tanh``'s relative accuracy.

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

from collections.abc import Callable, Sequence
from typing import Any

import torch

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


Backend = Callable[[torch.fx.GraphModule, Sequence[torch.Tensor]], Any]


def backend(device: torch.device) -> str | Backend:
    """The ``backend`` argument of ``torch.compile`` for kernels on ``device``."""
    if device.type != "cpu":
        return "inductor"
    return _inductor_with_accurate_tanh


def _inductor_with_accurate_tanh(graph: torch.fx.GraphModule, inputs: Sequence[torch.Tensor]) -> Any:
    # Decomposing while retracing, not by compile_fx's ``decompositions``, puts the new
    # operations into the graph itself, which inductor's on-disk cache keys on. The trace
    # runs on the real inputs (one eager tile at compile time): a fake-tensor trace
    # clashed with dynamo's shape environment on a CNN's graph.
    from torch._inductor.compile_fx import compile_fx
    from torch.fx.experimental.proxy_tensor import make_fx

    table = {torch.ops.aten.tanh.default: _float32_tanh}
    traced = make_fx(graph, decomposition_table=table, tracing_mode="real")(*inputs)
    return compile_fx(traced, list(inputs))


def compile_traced(
    function: Callable[..., tuple[torch.Tensor, ...]], inputs: Sequence[torch.Tensor]
) -> tuple[Callable[..., Any], bool]:
    """``function`` (tensors in, a flat tuple of tensors out) traced on ``inputs`` into one
    graph and compiled by inductor for them, without dynamo; and whether the graph reads
    nothing but its inputs (no tensor it closed over was baked in as a constant).

    The result skips dynamo's guards and wrappers, about a millisecond a call on a small
    graph, which is most of a step's overhead when the step's kernel takes two: call it
    with tensors of exactly ``inputs``' shapes, strides, dtypes and devices (inductor's
    code asserts sizes and strides), under ``torch.no_grad``. The trace runs ``function``
    once on ``inputs``; it is compiled for inference (no autograd through it), with
    ``accurate_tanh`` on CPU as ``backend`` compiles.
    """
    from torch._guards import TracingContext, tracing
    from torch._inductor.compile_fx import compile_fx
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    table = {torch.ops.aten.tanh.default: _float32_tanh} if inputs[0].device.type == "cpu" else {}
    # Inductor's on-disk graph cache needs a shape environment, which only dynamo sets up:
    # without one every process would generate and build the C++ again (about 10 s).
    context = TracingContext(FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv()))
    with torch.no_grad():
        traced = make_fx(function, decomposition_table=table, tracing_mode="real")(*inputs)
        self_contained = all(node.op != "get_attr" for node in traced.graph.nodes)
        with tracing(context):
            compiled = compile_fx(traced, list(inputs))
    assert callable(compiled)  # what compile_fx makes of a graph module
    return compiled, self_contained


def _float32_tanh(x: torch.Tensor) -> torch.Tensor:
    # Fitted for float32: in float64 its 2e-8 would cost eight digits, so other dtypes keep tanh.
    return accurate_tanh(x) if x.dtype == torch.float32 else NotImplemented
