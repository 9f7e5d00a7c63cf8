"""``fastsurface bench --model``: the engine on real models, against loss-landscapes 3.0.6 and a
per-point loop, with this machine's ceilings measured in the same run.

The cases (``BENCH_MODELS``): MLPs of several widths with ``tanh`` and ReLU on regression data
(standard normal inputs and targets, mean squared error), and a CNN sized for scikit-learn's
8 × 8 digits (2,758 parameters) on synthetic digits-shaped data (ten seeded 8 × 8 prototypes
plus noise, values in [0, 1], ten classes, cross-entropy), so that scikit-learn is not needed.
Models, data and the plane are seeded (global random state untouched). Each case is evaluated
on a filter-normalised random plane (``random_plane(model, seed=0)``: biases fixed) at
``grid × grid`` points over [-1, 1]² by three contestants, on every device asked for:

- **fastsurface**: ``loss_surface`` with its defaults (``method="auto"``; the table names the
  method that ran);
- **the per-point loop**, the obvious reference: for each point, ``vector_to_parameters`` writes
  ``θ₀ + w1·d₁ + w2·d₂`` into a copy of the model, one forward pass over all samples, and the mean
  loss is read with ``.item()``;
- **loss-landscapes 3.0.6**, when importable: ``planar_interpolation`` through the model at
  ``θ₀``, ``θ₀ + d₁`` and ``θ₀ + d₂`` with ``steps=grid``. Its loop is ``random_plane``'s (an
  in-place step, one forward pass, ``.item()`` per point), but it stays on the model's device
  (``random_plane`` draws its directions on the CPU and cannot move a CUDA model) and its
  points are known, so its numbers are checked too.

Rounds are interleaved (fastsurface, loop, package, then again), each timed with the device
synchronised, after one warm-up of each; each contestant's median is reported, and a contestant
stops once its rounds took ``max_seconds``. Where the whole grid would take the loop longer than
that (estimated from its first row), the loop runs on evenly spaced rows and its time is
extrapolated, and the package, which runs the same loop, is skipped.

What is timed is checked: the loop's losses, and the package's on its first two rows (one of
each of its row conventions), are compared with the engine's at the same points; the largest
relative difference is the row's ``error``, and its note flags one above ``TOLERANCE``.

**FLOPs, counted honestly**: 2 per multiply-accumulate of every ``nn.Linear`` and ``nn.Conv2d``
in one forward pass of one sample (read from the layers' output shapes on a probe), times points
× samples; bias additions, activations, pooling and the loss are not counted. This is the work of
the brute-force grid, the same for every contestant, so a route that shares work between points
(the closed form, a shared first layer) shows an effective rate that may pass the machine's.

**Ceilings**, measured in the same run on each device (``fastsurface.seed.bench``): sgemm, one
``torch.mm`` of two square float32 matrices, in FLOP/s; and the throughput of the case's
activation, ``tanh`` or ReLU over 50 M float32 values (memory-bound: a fused kernel can pass
100 %). ``of sgemm`` is the grid's FLOP/s over sgemm's; ``of act`` is its activation values per
second (points × samples × the case's activation outputs per sample) over the ceiling's.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils import vector_to_parameters

from fastsurface._support.choices import BENCH_MODELS
from fastsurface._support.memory import format_bytes, usable_bytes
from fastsurface.engine._tiles import check_fits
from fastsurface.engine.evaluate import evaluate_points, loss_surface
from fastsurface.engine.options import EvalOptions
from fastsurface.errors import FastsurfaceError, check_choice, check_positive_int
from fastsurface.planes.directions import random_plane
from fastsurface.planes.plane import Plane
from fastsurface.results import Surface
from fastsurface.seed.bench import Activation, activation_rate, aligned, maybe, median_seconds, sgemm_rate

# Largest relative difference from the engine's losses that the check accepts: float32 sums
# of the same per-sample losses in another order differ by about 1e-6.
TOLERANCE = 1e-4
_CRITERIA: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": functional.mse_loss,
    "cross_entropy": functional.cross_entropy,
}
_FLOAT32_BYTES = 4
# Points of the loop's first row that warm it up and estimate its time on the whole grid.
_PROBE_POINTS = 16


@dataclass(frozen=True)
class _Spec:
    """How a case is built: the model (from a seeded global generator), its input shape
    per sample, its loss and its activation."""

    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    loss: str
    activation: Activation


def _mlp(widths: tuple[int, ...], activation: type[nn.Module]) -> Callable[[], nn.Module]:
    """``widths[0] -> ... -> widths[-1] -> 1`` with ``activation`` after every hidden layer."""

    def build() -> nn.Module:
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise(widths):
            layers += [nn.Linear(fan_in, fan_out), activation()]
        return nn.Sequential(*layers, nn.Linear(widths[-1], 1))

    return build


def _digits_cnn() -> nn.Module:
    """Two 3 × 3 convolutions, a 2 × 2 pooling and two linear layers for 1 × 8 × 8 images
    and ten classes: 2,758 parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 20),
        nn.ReLU(),
        nn.Linear(20, 10),
    )


_SPECS: dict[str, _Spec] = {
    "mlp-2-8-1-tanh": _Spec(_mlp((2, 8), nn.Tanh), (2,), "mse", "tanh"),
    "mlp-10-32-32-1-tanh": _Spec(_mlp((10, 32, 32), nn.Tanh), (10,), "mse", "tanh"),
    "mlp-8-32-32-1-relu": _Spec(_mlp((8, 32, 32), nn.ReLU), (8,), "mse", "relu"),
    "mlp-8-128-128-1-relu": _Spec(_mlp((8, 128, 128), nn.ReLU), (8,), "mse", "relu"),
    "cnn-digits": _Spec(_digits_cnn, (1, 8, 8), "cross_entropy", "relu"),
}


@dataclass(frozen=True)
class ModelCase:
    """A benchmark case: a seeded model and data, both on the CPU in float32.

    Attributes:
        name: one of ``BENCH_MODELS``.
        model: the network, freshly initialised from seed 0.
        x: inputs, shape ``(samples, *input_shape)``.
        y: targets: shape ``(samples, 1)`` for the MLPs (mean squared error), class indices
            of shape ``(samples,)`` for the CNN (cross-entropy).
        loss: ``"mse"`` or ``"cross_entropy"``.
        activation: the activation of every hidden layer, ``"tanh"`` or ``"relu"``.
    """

    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss: str
    activation: Activation


def model_case(name: str, samples: int) -> ModelCase:
    """The case ``name`` (one of ``BENCH_MODELS``) with ``samples`` samples, built the same
    way every time, without touching the global random state."""
    check_choice("model", name, BENCH_MODELS)
    check_positive_int("samples", samples)
    spec = _SPECS[name]
    generator = torch.Generator().manual_seed(0)
    if spec.loss == "mse":
        x = torch.randn(samples, *spec.input_shape, generator=generator)
        y = torch.randn(samples, 1, generator=generator)
    else:
        x, y = _digits(samples, generator)
    return ModelCase(name, _seeded(spec.build), x, y, spec.loss, spec.activation)


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with torch's default initialisation drawn from seed 0; the caller's global
    generator state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def _digits(samples: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits-shaped data: ten 8 × 8 prototypes with sklearn's pixel range 0..16, each
    sample its class's prototype plus Gaussian noise (σ = 4), clipped and scaled to [0, 1]."""
    prototypes = torch.randint(0, 17, (10, 1, 8, 8), generator=generator).float()
    labels = torch.randint(0, 10, (samples,), generator=generator)
    noise = 4 * torch.randn(samples, 1, 8, 8, generator=generator)
    return (prototypes[labels] + noise).clamp(0, 16) / 16, labels


@dataclass(frozen=True)
class ForwardCost:
    """What one forward pass of one sample does (the module docstring's counting rule).

    Attributes:
        flops: 2 per multiply-accumulate of every ``nn.Linear`` and ``nn.Conv2d``.
        activations: output values of every ``nn.Tanh`` and ``nn.ReLU``.
        values: the input's values plus every leaf module's output values.
    """

    flops: int
    activations: int
    values: int


def forward_cost(model: nn.Module, sample: torch.Tensor) -> ForwardCost:
    """Count ``model``'s forward work on one sample, ``sample`` of shape ``(1, ...)``, from the
    shapes of one forward pass (hooks on the leaf modules)."""
    counts = {"macs": 0, "activations": 0, "values": sample.numel()}

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        counts["values"] += output.numel()
        if isinstance(module, nn.Linear):
            counts["macs"] += output.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            counts["macs"] += output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, (nn.Tanh, nn.ReLU)):
            counts["activations"] += output.numel()

    leaves = [module for module in model.modules() if not list(module.children())]
    handles = [module.register_forward_hook(hook) for module in leaves]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return ForwardCost(2 * counts["macs"], counts["activations"], counts["values"])


class PerPointLoop:
    """The per-point loop: a private copy of the model whose parameters are overwritten with
    ``vector_to_parameters(θ₀ + w1·d₁ + w2·d₂)`` at each point, then one forward pass over all
    samples and the mean loss as a Python float.

    Args:
        model: the network (copied; parameters in ``named_parameters`` order).
        plane: the plane; parameters it does not move keep the model's values.
        x, y: the data, on the device the loop runs on.
        loss: ``"mse"`` or ``"cross_entropy"`` (mean over samples).
    """

    def __init__(self, model: nn.Module, plane: Plane, x: torch.Tensor, y: torch.Tensor, loss: str) -> None:
        self.module = copy.deepcopy(model).to(x.device).eval()
        self.x, self.y = x, y
        self.criterion = _CRITERIA[loss]
        parameters = dict(self.module.named_parameters())

        def flat(part: dict[str, torch.Tensor], default: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
            tensors = [part[name] if name in part else default(value) for name, value in parameters.items()]
            return torch.cat([tensor.detach().reshape(-1) for tensor in tensors]).to(x)

        self.origin = flat(plane.origin, lambda value: value)
        self.first = flat(plane.first, torch.zeros_like)
        self.second = flat(plane.second, torch.zeros_like)

    def at(self, w1: float, w2: float) -> nn.Module:
        """The private copy, moved to the point ``(w1, w2)``."""
        vector_to_parameters(self.origin + w1 * self.first + w2 * self.second, self.module.parameters())
        return self.module

    def losses(self, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
        """Losses at ``w1 × w2``, float64 of shape ``(len(w1), len(w2))``, point by point."""
        out = np.empty((len(w1), len(w2)))
        with torch.no_grad():
            for i, a in enumerate(w1):
                for j, b in enumerate(w2):
                    out[i, j] = self.criterion(self.at(float(a), float(b))(self.x), self.y).item()
        return out


def loss_landscapes_points(steps: int) -> np.ndarray:
    """The plane coordinates of ``planar_interpolation(start, θ₀ + d₁, θ₀ + d₂, steps=steps)``'s
    entries, shape ``(steps, steps, 2)``: row ``i`` is ``w1 = i / steps``; its entry ``j`` is
    at ``w2 = (j + 1) / steps`` in even rows and ``j / steps`` in odd ones (the package steps
    ``d₂ / steps`` forwards before each even row's evaluations and backwards before each odd
    row's, and stores odd rows reversed)."""
    rows, columns = np.meshgrid(np.arange(steps), np.arange(steps), indexing="ij")
    return np.stack([rows / steps, (columns + (rows % 2 == 0)) / steps], axis=-1)


def loss_landscapes_package() -> ModuleType | None:
    """The loss-landscapes package with its metrics, or None where it is not installed."""
    try:
        package = importlib.import_module("loss_landscapes")
        importlib.import_module("loss_landscapes.metrics")
    except ImportError:
        return None
    return package


@dataclass(frozen=True)
class ModelRow:
    """One line of the table: one case on one device. Seconds are medians of interleaved rounds.

    ``loop_seconds`` is for the whole grid, extrapolated from ``loop_rows`` rows where fewer
    than the grid's; ``package_*`` are None where loss-landscapes is missing or skipped (the
    note says which); ``error`` is the largest relative difference of the loop's and the
    package's losses from the engine's at the same points.
    """

    case: str
    device: str
    parameters: int
    points: int
    samples: int
    method: str
    seconds: float
    gflop: float
    gflop_per_second: float
    sgemm_fraction: float
    activation: str
    activation_fraction: float
    loop_seconds: float
    loop_rows: int
    loop_speedup: float
    package_seconds: float | None
    package_speedup: float | None
    error: float
    note: str


def run_model_bench(
    models: Sequence[str],
    devices: Sequence[torch.device],
    grid: int = 41,
    samples: int = 2_000,
    repeats: int = 3,
    max_seconds: float = 60.0,
) -> dict[str, Any]:
    """Time every case on every device; returns ``{"rows": [...], "machine": {...}, "grid",
    "samples"}`` (the rows as dicts of ``ModelRow``'s fields, the machine's ceilings per device).

    Every argument is checked, and every grid and data set against the memory available on its
    device, before anything is timed.
    """
    for name in models:
        check_choice("model", name, BENCH_MODELS)
    for label, value in (("grid", grid), ("samples", samples), ("repeats", repeats)):
        check_positive_int(label, value)
    if not 0 < max_seconds < math.inf:
        raise FastsurfaceError(f"`max_seconds` must be a finite number > 0, got {max_seconds}")
    for device in devices:
        _check_fits(models, device, grid, samples)
    package = loss_landscapes_package()
    ceilings = {str(device): measure_ceilings(device, repeats, max_seconds) for device in devices}
    rows = [
        measure_case(
            place(model_case(name, samples), device, grid), repeats, max_seconds, ceilings[str(device)], package
        )
        for device in devices
        for name in models
    ]
    return {
        "rows": [asdict(row) for row in rows],
        "machine": machine(ceilings, package),
        "grid": grid,
        "samples": samples,
    }


def machine(ceilings: dict[str, dict[str, float]], package: ModuleType | None) -> dict[str, Any]:
    """What the table's footer and the JSON say of the machine: torch's version and threads,
    loss-landscapes' version (None: not installed), the ceilings per device, the CUDA devices."""
    described: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loss_landscapes": None if package is None else _version("loss-landscapes"),
        "ceilings": ceilings,
    }
    if torch.cuda.is_available():
        described["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return described


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:  # importable without being installed (a path entry)
        return "unknown version"


def _check_fits(models: Sequence[str], device: torch.device, grid: int, samples: int) -> None:
    """Refuse a grid or a data set that cannot fit on ``device``: the engine's guard for the grid,
    and for the data one forward pass over all samples as the loop runs it (the input and every
    layer's output, float32)."""
    check_fits((grid, grid), device, EvalOptions(device=device).budget, None, name="`grid`")
    limits = usable_bytes(device)
    if limits is None:
        return
    usable, available = limits
    for name in models:
        spec = _SPECS[name]
        needed = samples * _FLOAT32_BYTES * forward_cost(_seeded(spec.build), torch.zeros(1, *spec.input_shape)).values
        if needed > usable:
            raise FastsurfaceError(
                f"`samples`: a forward pass of {name} over {samples:,} samples needs about {format_bytes(needed)}, "
                f"more than the {format_bytes(usable)} this run may use on {device} ({format_bytes(available)} "
                "available); use fewer samples"
            )


def measure_ceilings(device: torch.device, repeats: int, max_seconds: float = math.inf) -> dict[str, float]:
    """``device``'s sgemm FLOP/s and ``tanh`` and ReLU values per second, measured now."""
    return {
        "sgemm_flops_per_second": sgemm_rate(device, repeats, max_seconds),
        "tanh_per_second": activation_rate(device, "tanh", repeats, max_seconds),
        "relu_per_second": activation_rate(device, "relu", repeats, max_seconds),
    }


@dataclass(frozen=True)
class PlacedCase:
    """A case ready to time on one device.

    Attributes:
        case: the model, its data on the CPU, its loss and activation.
        plane: ``random_plane(case.model, seed=0)``.
        axis: both coordinates' values, float64 of shape ``(grid,)``, evenly over [-1, 1].
        x, y: the data on the device.
    """

    case: ModelCase
    plane: Plane
    axis: np.ndarray
    x: torch.Tensor
    y: torch.Tensor

    def surface(self) -> Surface:
        """fastsurface's surface of the ``grid × grid`` points, with ``loss_surface``'s defaults."""
        model, loss = self.case.model, self.case.loss
        return loss_surface(
            model, (self.x, self.y), self.axis, self.axis, plane=self.plane, loss=loss, device=self.x.device
        )


def place(case: ModelCase, device: torch.device, grid: int) -> PlacedCase:
    """``case`` on ``device``, on its plane's ``grid × grid`` points."""
    return PlacedCase(
        case, random_plane(case.model, seed=0), np.linspace(-1, 1, grid), case.x.to(device), case.y.to(device)
    )


def measure_case(
    placed: PlacedCase, repeats: int, max_seconds: float, ceilings: dict[str, float], package: ModuleType | None
) -> ModelRow:
    """Time ``placed`` against the loop and ``package`` (loss-landscapes, or None), check their
    losses against the engine's, and make its row; ``ceilings`` are its device's."""
    case, axis, device, grid = placed.case, placed.axis, placed.x.device, len(placed.axis)
    loop = PerPointLoop(case.model, placed.plane, placed.x, placed.y, case.loss)
    results: dict[str, Any] = {}
    works = {"engine": lambda: results.__setitem__("engine", placed.surface())}
    works["engine"]()  # warm-up: caches, CUDA context, a compilation where `auto` takes one
    probe = min(grid, _PROBE_POINTS)
    row_seconds = grid / probe * median_seconds(lambda: loop.losses(axis[:1], axis[:probe]), device, 1, math.inf)
    rows = np.arange(grid)
    if row_seconds * grid > max_seconds:
        rows = np.unique(np.linspace(0, grid - 1, max(1, int(max_seconds / row_seconds))).round().astype(int))
    works["loop"] = lambda: results.__setitem__("loop", loop.losses(axis[rows], axis))
    note = _package_note(package, row_seconds * grid, max_seconds)
    if not note:
        assert package is not None  # no note: installed and within the time allowed
        package_plane = package_work(package, loop, grid)
        works["package"] = lambda: results.__setitem__("package", package_plane())
    seconds = _interleaved(works, device, repeats, max_seconds)
    errors = [_relative_difference(results["loop"], results["engine"].loss[rows])]
    errors += _package_errors(placed, results)
    return _row(placed, results["engine"].method, seconds, len(rows), max(errors), ceilings, note)


def _package_note(package: ModuleType | None, loop_estimate: float, max_seconds: float) -> str:
    if package is None:
        return "loss-landscapes not installed"
    if loop_estimate > max_seconds:
        return f"loss-landscapes skipped: est. {loop_estimate:.0f} s"
    return ""


def package_work(package: ModuleType, loop: PerPointLoop, steps: int) -> Callable[[], np.ndarray]:
    """A call of loss-landscapes' ``planar_interpolation`` through ``θ₀``, ``θ₀ + d₁``, ``θ₀ + d₂``
    (copies of the loop's model, made now) on the loop's data, returning its losses, shape
    ``(steps, steps)``; it copies the corners itself (``deepcopy_model=True``), so it can be
    called again."""
    corners = [copy.deepcopy(loop.at(w1, w2)) for w1, w2 in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0))]
    metric = package.metrics.Loss(loop.criterion, loop.x, loop.y)
    return lambda: np.asarray(package.planar_interpolation(*corners, metric, steps=steps, deepcopy_model=True))


def _package_errors(placed: PlacedCase, results: dict[str, Any]) -> list[float]:
    """The package's largest relative difference from the engine on its first two rows, at
    the points it evaluated (none where it did not run)."""
    if "package" not in results:
        return []
    case = placed.case
    points = loss_landscapes_points(len(placed.axis))[:2].reshape(-1, 2)
    evaluation = evaluate_points(
        case.model, placed.plane, (placed.x, placed.y), points, loss=case.loss, device=placed.x.device
    )
    return [_relative_difference(results["package"][:2].reshape(-1), evaluation.loss.cpu().numpy())]


def _relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), np.finfo(np.float32).tiny)))


def _interleaved(
    works: Mapping[str, Callable[[], object]], device: torch.device, repeats: int, max_seconds: float
) -> dict[str, float]:
    """Median seconds of each work over up to ``repeats`` rounds that run each once in turn;
    a work leaves the rounds once its own took ``max_seconds``."""
    times: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(repeats):
        running = [name for name in works if sum(times[name]) < max_seconds]
        if not running:
            break
        for name in running:
            times[name].append(median_seconds(works[name], device, 1, math.inf))
    return {name: statistics.median(spent) for name, spent in times.items()}


def _row(
    placed: PlacedCase,
    method: str,
    seconds: dict[str, float],
    loop_rows: int,
    error: float,
    ceilings: dict[str, float],
    note: str,
) -> ModelRow:
    case, grid = placed.case, len(placed.axis)
    points, samples = grid * grid, len(case.x)
    cost = forward_cost(case.model, case.x[:1])
    flops = cost.flops * points * samples
    rate = flops / seconds["engine"]
    loop_seconds = seconds["loop"] * grid / loop_rows
    package_seconds = seconds.get("package")
    activation_ceiling = ceilings[f"{case.activation}_per_second"]
    notes = [note] if note else []
    if loop_rows < grid:
        notes.append(f"loop extrapolated from {loop_rows} rows")
    if error > TOLERANCE:
        notes.append(f"losses differ by {error:.1e} > {TOLERANCE:g}")
    return ModelRow(
        case=case.name,
        device=str(placed.x.device),
        parameters=sum(parameter.numel() for parameter in case.model.parameters()),
        points=points,
        samples=samples,
        method=method,
        seconds=seconds["engine"],
        gflop=flops / 1e9,
        gflop_per_second=rate / 1e9,
        sgemm_fraction=rate / ceilings["sgemm_flops_per_second"],
        activation=case.activation,
        activation_fraction=cost.activations * points * samples / seconds["engine"] / activation_ceiling,
        loop_seconds=loop_seconds,
        loop_rows=loop_rows,
        loop_speedup=loop_seconds / seconds["engine"],
        package_seconds=package_seconds,
        package_speedup=None if package_seconds is None else package_seconds / seconds["engine"],
        error=error,
        note="; ".join(notes),
    )


def format_model_table(result: dict[str, Any]) -> str:
    """The rows as an aligned text table, with the counting rule and the ceilings below it."""
    header = (
        "case",
        "device",
        "params",
        "method",
        "seconds",
        "GFLOP/s",
        "of sgemm",
        "of act",
        "loop s",
        "vs loop",
        "l-l s",
        "vs l-l",
        "error",
        "",
    )
    lines = [header]
    for row in result["rows"]:
        lines.append(
            (
                row["case"],
                row["device"],
                f"{row['parameters']:,}",
                row["method"],
                f"{row['seconds']:.3g}",
                f"{row['gflop_per_second']:.3g}",
                _percent(row["sgemm_fraction"]),
                f"{_percent(row['activation_fraction'])} {row['activation']}",
                f"{row['loop_seconds']:.3g}",
                f"{row['loop_speedup']:.2f}x",
                maybe(row["package_seconds"], "{:.3g}"),
                maybe(row["package_speedup"], "{:.2f}x"),
                f"{row['error']:.1e}",
                row["note"],
            )
        )
    ceilings = "; ".join(
        f"{device}: sgemm {c['sgemm_flops_per_second'] / 1e9:.3g} GFLOP/s, tanh {c['tanh_per_second']:.3g}/s, "
        f"relu {c['relu_per_second']:.3g}/s"
        for device, c in result["machine"]["ceilings"].items()
    )
    footer = (
        f"{result['grid']} x {result['grid']} points of random_plane(model, seed=0) over [-1, 1]^2, "
        f"{result['samples']:,} samples; seconds: medians of interleaved rounds; loop: vector_to_parameters and "
        f"one forward pass per point; l-l: loss-landscapes {result['machine']['loss_landscapes'] or '(not installed)'} "
        "planar_interpolation (random_plane's loop)",
        "GFLOP: 2 per multiply-accumulate of every Linear and Conv2d, per point and sample (biases, activations, "
        "pooling, loss not counted); error: largest relative difference of the loop's and l-l's losses from "
        "fastsurface's",
        f"ceilings measured in this run, torch threads: {result['machine']['threads']} (torch.mm of square float32 "
        f"matrices; tanh and relu over 50 M float32, memory-bound): {ceilings}",
    )
    return "\n".join([*aligned(lines), *footer])


def _percent(fraction: float) -> str:
    """``fraction`` as a percentage, with two significant digits below 10 %."""
    return f"{100 * fraction:.0f}%" if fraction >= 0.1 else f"{100 * fraction:.2g}%"
