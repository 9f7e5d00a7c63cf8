"""The ``torch.compile`` backend of the compiled kernels: inductor, with a faster
vectorised ``tanh`` on CPU that keeps ``tanh``'s relative accuracy.

Inductor's C++ code calls Sleef's ``tanhf`` (1 ulp), which costs as much as the rest of
the seed model's fused loop several times over. Its own alternative,
``cpp.use_decompose_tanh`` (``2 / (1 + exp(-2x)) - 1``), is 3× faster but only
absolutely accurate: near 0 it returns ``x`` with an error of about 1e-7, which would
swamp a surface whose activations are small. ``accurate_tanh`` takes the odd Taylor
polynomial where ``|x| < 0.3`` and ``1 - 2 / (exp(2|x|) + 1)`` with ``x``'s sign
elsewhere: relative error within 3e-7 (about 2 ulp) on all of float32, with ±0, ±inf
and NaN preserved, and about 2× Sleef's speed here (accuracy: ``tests/test_inductor.py``;
speed: ``fastsurface bench``). float64 keeps ``tanh``, and CUDA keeps Triton's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# |x| below which the polynomial is used: its truncation error there is below 1e-9
# relative, and above it the exponential form loses at most about 2 bits.
_POLYNOMIAL_BELOW = 0.3
# Taylor coefficients of tanh(x) / x in powers of x²: 1, -1/3, 2/15, -17/315, 62/2835, -1382/155925.
_COEFFICIENTS = (1.0, -1 / 3, 2 / 15, -17 / 315, 62 / 2835, -1382 / 155925)


def accurate_tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh(x)`` from ``exp`` and a polynomial, elementwise, any shape."""
    magnitude = x.abs()
    square = x * x
    series = torch.full_like(x, _COEFFICIENTS[-1])
    for coefficient in reversed(_COEFFICIENTS[:-1]):
        series = series * square + coefficient
    exponential = torch.copysign(1 - 2 / (torch.exp(2 * magnitude) + 1), x)
    return torch.where(magnitude < _POLYNOMIAL_BELOW, x * series, exponential)


Backend = Callable[[torch.fx.GraphModule, Sequence[torch.Tensor]], Any]


def backend(device: torch.device) -> str | Backend:
    """The ``backend`` argument of ``torch.compile`` for kernels on ``device``."""
    if device.type != "cpu":
        return "inductor"
    return _inductor_with_accurate_tanh


def _inductor_with_accurate_tanh(graph: torch.fx.GraphModule, inputs: Sequence[torch.Tensor]) -> Any:
    # Decomposing while retracing, not by compile_fx's ``decompositions``, puts the new
    # operations into the graph itself, which inductor's on-disk cache keys on.
    from torch._inductor.compile_fx import compile_fx
    from torch.fx.experimental.proxy_tensor import make_fx

    table = {torch.ops.aten.tanh.default: _float32_tanh}
    traced = make_fx(graph, decomposition_table=table, tracing_mode="fake")(*inputs)
    return compile_fx(traced, list(inputs))


def _float32_tanh(x: torch.Tensor) -> torch.Tensor:
    # The polynomial's 1e-9 would cost float64 seven digits: other dtypes keep tanh.
    return accurate_tanh(x) if x.dtype == torch.float32 else NotImplemented
