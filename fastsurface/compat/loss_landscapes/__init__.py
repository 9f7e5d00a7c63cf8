"""A drop-in for the public API of ``loss-landscapes`` 3.0.6, vectorised, non-mutating.

Switch by changing one import::

    import fastsurface.compat.loss_landscapes as loss_landscapes  # was: import loss_landscapes

``point``, ``linear_interpolation``, ``random_line``, ``planar_interpolation``,
``random_plane``, ``metrics.Loss``, ``metrics.LossPerturbations``, ``metrics.Metric``,
``metrics.MetricPipeline``, ``ModelWrapper``, ``SimpleModelWrapper``,
``GeneralModelWrapper`` and ``wrap_model`` keep the package's signatures and give its
numbers (to the rounding of the model's dtype: it walks the grid by repeated in-place
additions, fastsurface computes each point as ``θ₀ + a·d₁ + b·d₂``).

The package's conventions, reproduced (read from its 3.0.6 source, ``main.py`` and
``model_interface/model_parameters.py``):

- **Parameters**: ``p for module in wrapper.modules for p in module.parameters()``;
  buffers are never moved. A parameter of two listed modules is two entries: it gets
  two direction draws, counts twice in norms, and moves by the sum of both steps.
- **Steps before evaluating**: ``linear_interpolation`` and ``random_line`` add one
  step and then evaluate, so ``result[k]`` is at ``k + 1`` steps: the start point is never
  evaluated and ``linear_interpolation`` ends exactly at ``model_end``.
- **Interpolation steps**: ``d = (θ_end - θ_start) / steps``.
- **Uniform directions**: random directions are ``torch.rand`` (uniform on [0, 1), not
  Gaussian), drawn from torch's *global* generator, one call per parameter in order, in
  the first parameter's dtype, on the CPU. ``random_plane`` draws ``d₁`` and then a second
  uniform vector from which it removes its projection on ``d₁`` (``orthogonal_to``). Seed
  with ``torch.manual_seed`` as you would for the package; this is the one place where
  fastsurface consumes global random state, so that the same seed gives the same plane.
- **Normalisation** (``normalization=``):
  ``'filter'``: every slice ``d[f]`` along dim 0 of a parameter with two or more
  dimensions is scaled to ``‖θ[f]‖``; a 1-D parameter (bias, norm scale) is treated
  entry by entry (each entry is a "filter"), so its direction becomes ``|θ_f|``
  (sign of the positive uniform draw); fastsurface applies the same rule to 0-d
  parameters, on which the package fails. ``'layer'``: each parameter tensor scaled
  to ``‖θ_l‖``. ``'model'``: the package rescales parameter by parameter, re-measuring the
  whole direction's norm after each, so parameters get different factors; reproduced
  as written. ``None``: no normalisation. Where the package would divide by a zero norm
  (raising ``ZeroDivisionError``), fastsurface uses 0.
- **Span scaling**: after normalisation every random direction is rescaled to a total
  length of ``‖θ₀‖ / distance / steps`` per step, so the whole span is ``‖θ₀‖ / distance``
  and its normalisation only shapes the direction: a larger ``distance`` is a *smaller*
  span.
- **Centring**: ``random_plane`` starts at ``θ₀ - (steps/2)·(d₁ + d₂)``, so the model sits
  near the centre (exactly at ``i = j = steps/2`` for even ``steps``).
- **Row-alternating traversal**: the planes are walked with in-place additions, even rows
  forwards (step along ``d₂``, then evaluate) and odd rows backwards (evaluate, then step
  back), so even rows are offset by one step along ``d₂``: ``result[i, j]`` is at
  ``origin + i·d₁ + (j + [i even])·d₂``.
- **Metric values**: ``metrics.Loss`` is ``loss_fn(model(inputs), target).item()`` over the
  whole ``inputs`` at once (``inputs`` may be any object the wrapper's forward takes);
  results are ``np.array`` of the values, shape ``(steps,)`` or ``(steps, steps)``, then
  ``(..., k)`` for a ``MetricPipeline`` of ``k`` metrics and the value's own shape for
  array-valued metrics; an integer or boolean loss keeps its type.
- **Degenerate arguments**: ``steps=0`` gives an empty array for the interpolations;
  ``distance=inf`` a zero direction; ``steps`` and ``distance`` may be numpy or 0-d torch
  numbers.
- **Train/eval mode**: the model is evaluated in the mode it is in, as the package does.

Differences, on purpose:

- The caller's model is never modified. The package leaves its parameters at the last
  grid point and switches off their ``requires_grad`` unless ``deepcopy_model=True``; here
  every evaluation runs on a private copy, and ``deepcopy_model`` is accepted and moot.
- ``metrics.Loss`` (and a pipeline of them) is evaluated at all points at once
  (``torch.func.vmap`` over tiles of points, 256 MiB of working memory per tile on CPU,
  1 GiB on CUDA). Any other ``Metric`` (a ``Loss`` subclass that overrides ``__call__``
  included), and a ``Loss`` whose model or loss cannot run so (BatchNorm updating running
  statistics or dropout, in training mode; a loss that is not one number), is evaluated
  point by point on the copy, as the package does; a failed vectorised attempt draws no
  random numbers and leaves buffers as they were.
- Because the caller's model does not move, a custom ``Metric`` must evaluate the wrapper
  it is handed; one that evaluates a model it holds itself sees the same point each time
  (in the package it follows the moving model).
- A bad argument raises ``fastsurface.FastsurfaceError`` (a ``ValueError``) before any
  work, where the package raises ``AttributeError`` or ``ZeroDivisionError`` after drawing.
- ``ModelWrapper.get_module_parameters`` returns a list of tensors, not the package's
  ``ModelParameters`` vector type; the package's ``loss_landscapes.landscapes`` and
  ``loss_landscapes.trajectories`` modules cannot be imported (they import a top-level
  ``common`` package that does not exist) and have no counterpart here, nor do
  ``metrics.LossGradient`` and ``metrics.ExpectedReturnMetric``, which fail in 3.0.6, or
  the internal ``model_interface`` package.
"""

from fastsurface.compat.loss_landscapes import metrics
from fastsurface.compat.loss_landscapes.main import (
    linear_interpolation,
    planar_interpolation,
    point,
    random_line,
    random_plane,
)
from fastsurface.compat.loss_landscapes.model_wrapper import (
    GeneralModelWrapper,
    ModelWrapper,
    SimpleModelWrapper,
    wrap_model,
)

__all__ = [
    "GeneralModelWrapper",
    "ModelWrapper",
    "SimpleModelWrapper",
    "linear_interpolation",
    "metrics",
    "planar_interpolation",
    "point",
    "random_line",
    "random_plane",
    "wrap_model",
]
