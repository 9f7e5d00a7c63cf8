"""What fastsurface computes: surfaces, optimiser paths in plane coordinates, critical points,
and what a surface is computed on: its plane and a description of its data.

A leaf module: it imports nothing of the package, so loading a file or drawing a figure
never pulls in the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

TensorDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Plane:
    """A 2-D affine slice of a model's parameters; buffers are never touched.

    Only the parameters a direction moves are stored: ``origin``, ``first`` and
    ``second`` share their keys (parameter names as in ``model.named_parameters()``)
    and each key's three tensors share the parameter's shape. Every other parameter
    keeps the model's own value.

    Attributes:
        origin: ``θ₀`` of the moving parameters.
        first: ``d₁``, the direction of the first coordinate ``w1``.
        second: ``d₂``, the direction of the second coordinate ``w2``.
        labels: names of the two coordinates, used on axes and in messages.
    """

    origin: TensorDict
    first: TensorDict
    second: TensorDict
    labels: tuple[str, str] = ("a", "b")

    def params(self, w1: torch.Tensor, w2: torch.Tensor) -> TensorDict:
        """The moving parameters at coordinates ``(w1, w2)`` (0-d tensors; vmap-safe)."""
        return {name: self.origin[name] + w1 * self.first[name] + w2 * self.second[name] for name in self.origin}

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the plane's tensors."""
        return next(iter(self.origin.values())).dtype

    @property
    def device(self) -> torch.device:
        """The device of the plane's tensors."""
        return next(iter(self.origin.values())).device

    def to(self, device: torch.device, dtype: torch.dtype) -> Plane:
        """A copy with every tensor on ``device`` in ``dtype``."""

        def move(tensors: TensorDict) -> TensorDict:
            return {name: t.detach().to(device=device, dtype=dtype) for name, t in tensors.items()}

        return Plane(move(self.origin), move(self.first), move(self.second), self.labels)

    def same_as(self, other: Plane) -> bool:
        """Whether ``other`` has the same labels, parameters and values (compared on the
        CPU in float64, so a copy in another dtype or on another device counts as the same)."""
        names = list(self.origin)
        if tuple(self.labels) != tuple(other.labels) or any(
            list(part) != names for part in (other.origin, other.first, other.second)
        ):
            return False
        return all(
            torch.equal(mine[name].detach().to("cpu", torch.float64), theirs[name].detach().to("cpu", torch.float64))
            for mine, theirs in ((self.origin, other.origin), (self.first, other.first), (self.second, other.second))
            for name in self.origin
        )


@dataclass(frozen=True)
class DataDescription:
    """What identifies an ``(x, y)`` pair of evaluation data, without holding it.

    Attributes:
        samples: number of samples (axis 0).
        input_shape, target_shape: one sample's input and target shape (``x.shape[1:]``).
        input_dtype, target_dtype: the dtypes as given, e.g. ``"float32"`` (recorded, not
            compared: the engine casts inputs to its compute dtype).
        fingerprint: SHA-256 (16 hex digits) of the inputs' and targets' shapes and values
            as float64, so equal values give equal fingerprints in any dtype, array type
            or device.
    """

    samples: int
    input_shape: tuple[int, ...]
    input_dtype: str
    target_shape: tuple[int, ...]
    target_dtype: str
    fingerprint: str

    def differences(self, other: DataDescription) -> list[str]:
        """What differs from ``other``, in words (empty when they match); dtypes do not count."""
        compared = ("samples", "input_shape", "target_shape", "fingerprint")
        return [
            f"{name} {getattr(self, name)!r} recorded, {getattr(other, name)!r} given"
            for name in compared
            if getattr(self, name) != getattr(other, name)
        ]


@dataclass(frozen=True)
class Surface:
    """Losses on a grid of plane coordinates.

    ``loss[i, j]`` is the loss at ``(w1[i], w2[j])``: rows follow the first
    coordinate, columns the second.

    Attributes:
        w1: first coordinate's values, float64, shape ``(n1,)``.
        w2: second coordinate's values, float64, shape ``(n2,)``.
        loss_tensor: the losses as computed, float64 on the compute device, shape
            ``(n1, n2)``; use it to avoid a device-to-host copy.
        labels: names of the two coordinates (``("w1", "w2")`` for the seed model).
        loss_name: the per-sample loss, e.g. ``"mse"``.
        reduction: ``"mean"`` or ``"batch_mean"``.
        device: the device the losses were computed on, e.g. ``"cpu"``.
        dtype: compute dtype of the forward passes, e.g. ``"float32"``.
        samples: number of evaluation samples.
        batches: number of evaluation batches (what ``batch_mean`` averages over).
        seconds: wall-clock time of the evaluation.
        method: the engine path that ran, e.g. ``"vmap"``.
        tile_points: grid points evaluated together in one kernel call.
        train_mode: whether the model ran in training mode (``loss_surface``'s
            ``train_mode``).
        plane: the plane the surface was computed on (the object passed, or the seed
            model's default plane), so that ``critical_points``, ``refine`` and ``save``
            need not be told again; ``None`` where unknown.
        loss_function: the callable per-sample loss, when ``loss`` was one (a string loss
            is ``loss_name``); ``None`` otherwise, and after ``load`` (a file cannot hold
            code).
        data_description: what identifies the evaluation data (an ``(x, y)`` pair); ``None``
            for an iterable of batches (which cannot be read twice to check) and for
            surfaces from older files. Functions continuing from the surface check the
            data they are given against it.
        metric: what the values are, as summaries name them: ``"loss"`` for a loss,
            ``"accuracy"``, or the name given to ``metric_surfaces``.
        higher_is_better: whether higher values are better (an accuracy), else lower
            (a loss); ``best`` follows it.
    """

    w1: np.ndarray
    w2: np.ndarray
    loss_tensor: torch.Tensor = field(repr=False)
    labels: tuple[str, str]
    loss_name: str
    reduction: str
    device: str
    dtype: str
    samples: int
    batches: int
    seconds: float
    method: str
    tile_points: int
    train_mode: bool = False
    # What the surface was computed on (surfaces that remember); defaults for older callers and files.
    plane: Plane | None = field(default=None, repr=False)
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    data_description: DataDescription | None = None
    metric: str = "loss"
    higher_is_better: bool = False

    @cached_property
    def loss(self) -> np.ndarray:
        """The losses as a float64 numpy array of shape ``(len(w1), len(w2))``."""
        return self.loss_tensor.detach().cpu().numpy()

    def argmin(self) -> tuple[float, float, float]:
        """``(w1, w2, value)`` at the lowest finite value on the grid, whichever way is
        better (for an accuracy it is the worst point: use ``best``)."""
        loss = np.where(np.isfinite(self.loss), self.loss, np.inf)
        i, j = np.unravel_index(np.argmin(loss), loss.shape)
        return float(self.w1[i]), float(self.w2[j]), float(self.loss[i, j])

    def best(self) -> tuple[float, float, float]:
        """``(w1, w2, value)`` at the best finite value on the grid: the highest if
        ``higher_is_better``, else the lowest (``argmin``); the first in row-major order
        on ties."""
        if not self.higher_is_better:
            return self.argmin()
        values = np.where(np.isfinite(self.loss), self.loss, -np.inf)
        i, j = np.unravel_index(np.argmax(values), values.shape)
        return float(self.w1[i]), float(self.w2[j]), float(self.loss[i, j])


@dataclass(frozen=True)
class Trajectory:
    """An optimiser's path in plane coordinates, with the test loss at each point.

    Attributes:
        w1, w2: coordinates, float64, shape ``(P,)``.
        loss: test loss at each point, computed by the surface engine with the same
            reduction, float64, shape ``(P,)``.
        step: optimiser steps taken before each point, int64, shape ``(P,)``.
        labels: names of the two coordinates.
        reduction: reduction of ``loss``.
        record: how the points were chosen: ``"epoch"`` (``epochs + 1`` points),
            ``"step"`` (one per step, plus the start) or ``"path"`` (a recorded
            parameter path projected onto the plane by ``project_path``).
    """

    w1: np.ndarray
    w2: np.ndarray
    loss: np.ndarray
    step: np.ndarray
    labels: tuple[str, str]
    reduction: str
    record: str


CRITICAL_KINDS = ("minimum", "maximum", "saddle", "degenerate")


@dataclass(frozen=True)
class CriticalPoint:
    """A point of the plane where the loss's gradient vanishes.

    Attributes:
        w1, w2: plane coordinates (the surface's first and second axis).
        loss: the exact loss there, float64.
        kind: ``"minimum"``, ``"maximum"``, ``"saddle"`` or ``"degenerate"`` (an
            eigenvalue within a relative 1e-6 of zero).
        eigenvalues: the Hessian's eigenvalues in ascending order.
        gradient_norm: the gradient's Euclidean norm there (close to 0).
        iterations: Newton steps taken from the grid candidate.
    """

    w1: float
    w2: float
    loss: float
    kind: str
    eigenvalues: tuple[float, float]
    gradient_norm: float
    iterations: int


@dataclass(frozen=True)
class Trajectories:
    """``K`` optimiser runs in plane coordinates, recorded at the same steps (``train_many``).

    Attributes:
        positions: plane coordinates ``(w1, w2)`` of each run at each recorded step,
            float64, shape ``(K, T, 2)``; NaN from a run's divergence on.
        loss: test loss at each position, computed by the surface engine with the
            surface's reduction (so it lies on the surface), float64, shape ``(K, T)``;
            NaN where the position is NaN, and where it was not evaluated (with
            ``evaluated == "final"``, every column but the last).
        step: optimiser steps taken before each record, int64, shape ``(T,)``.
        diverged_step: the step at which a run's training loss or parameters stopped
            being finite (the run stopped there), ``-1`` for a run that never did,
            int64, shape ``(K,)``.
        residual: distance from each run's parameter vector to its projection on the
            plane (``project_path``'s residual), float64, shape ``(K, T)``; 0 for runs
            restricted to the plane.
        final_parameters: each run's parameters after training, flattened in
            ``named_parameters()`` order (as ``ParameterPath.vectors``), float64, shape
            ``(K, D)``; NaN rows for diverged runs; ``None`` for runs restricted to the
            plane, whose parameters are the plane's at their final position.
        group: index into ``group_names`` of each run's optimiser, int64, shape ``(K,)``.
        group_names: a description of each optimiser group, e.g. ``"SGD(lr=0.01)"``.
        grid_w1, grid_w2: axes of the start grid when the runs started from one (run
            ``i * len(grid_w2) + j`` starts at ``(grid_w1[i], grid_w2[j])``), else ``None``.
        labels: names of the two coordinates.
        reduction: reduction of ``loss``.
        record: how the steps were chosen: ``"epoch"``, ``"step"`` or ``"steps"`` (listed).
        space: ``"full"`` (trained in the full parameter space, positions projected
            onto the plane) or ``"plane"`` (trained on the two coordinates).
        evaluated: ``"recorded"`` (losses at every record) or ``"final"`` (at the last).
        method: how the training steps ran: ``"vmap"`` or ``"compiled"``.
        device: the device the runs were trained on, e.g. ``"cpu"``.
        dtype: the training dtype, e.g. ``"float32"``.
        seconds: wall-clock time of the training and the loss evaluation.
    """

    positions: np.ndarray
    loss: np.ndarray
    step: np.ndarray
    diverged_step: np.ndarray
    residual: np.ndarray
    final_parameters: np.ndarray | None
    group: np.ndarray
    group_names: tuple[str, ...]
    grid_w1: np.ndarray | None
    grid_w2: np.ndarray | None
    labels: tuple[str, str]
    reduction: str
    record: str
    space: str
    evaluated: str
    method: str
    device: str
    dtype: str
    seconds: float

    @property
    def count(self) -> int:
        """The number of runs ``K``."""
        return int(self.positions.shape[0])

    @property
    def w1(self) -> np.ndarray:
        """First coordinates, shape ``(K, T)``."""
        return self.positions[..., 0]

    @property
    def w2(self) -> np.ndarray:
        """Second coordinates, shape ``(K, T)``."""
        return self.positions[..., 1]

    @property
    def diverged(self) -> np.ndarray:
        """Whether each run diverged, bool, shape ``(K,)``."""
        return self.diverged_step >= 0

    @property
    def final(self) -> np.ndarray:
        """Each run's last recorded position, shape ``(K, 2)`` (NaN if it diverged)."""
        return self.positions[:, -1]

    @property
    def final_loss(self) -> np.ndarray:
        """Each run's test loss at its last recorded position, shape ``(K,)``."""
        return self.loss[:, -1]

    @property
    def grid_shape(self) -> tuple[int, int] | None:
        """``(len(grid_w1), len(grid_w2))`` for runs started from a grid, else ``None``."""
        if self.grid_w1 is None or self.grid_w2 is None:
            return None
        return len(self.grid_w1), len(self.grid_w2)

    def steps_to_converge(self, tolerance: float) -> np.ndarray:
        """Each run's settling step: the first recorded step from which every later
        recorded position lies within ``tolerance`` (Euclidean distance in plane
        coordinates) of the run's last one; ``-1`` for a diverged run.

        It is measured against where the run ended, so a run still drifting at the end
        settles late; it is as fine as the records (``record="step"`` for step accuracy).

        Returns:
            int64, shape ``(K,)``.
        """
        distance = np.linalg.norm(self.positions - self.final[:, None, :], axis=-1)
        outside = ~(distance <= tolerance)  # NaN (diverged) counts as outside
        records = outside.shape[1]
        last_outside = np.where(outside.any(axis=1), records - 1 - np.argmax(outside[:, ::-1], axis=1), -1)
        settled = self.step[np.minimum(last_outside + 1, records - 1)]
        return np.where(self.diverged, -1, settled).astype(np.int64)

    def trajectory(self, run: int) -> Trajectory:
        """Run ``run`` as a ``Trajectory`` (its finite records), for the path views."""
        kept = np.isfinite(self.positions[run]).all(axis=1)
        return Trajectory(
            w1=self.positions[run, kept, 0],
            w2=self.positions[run, kept, 1],
            loss=self.loss[run, kept],
            step=self.step[kept],
            labels=self.labels,
            reduction=self.reduction,
            record=self.record,
        )


@dataclass(frozen=True)
class BasinMap:
    """The fate of an optimiser started from every point of a grid (``basin_map``).

    End points of runs that did not diverge are grouped into attractors by single
    linkage: two runs share an attractor when a chain of end points joins them with
    every link at most ``tolerance`` long.

    Attributes:
        w1, w2: the start grid's axes, float64, shapes ``(n1,)`` and ``(n2,)``.
        attractor: label of the attractor each start reaches (0 the largest basin,
            then by size), ``-1`` where the run diverged, int64, shape ``(n1, n2)``.
        attractors: each attractor's location, the mean of its end points, float64,
            shape ``(A, 2)``.
        sizes: number of starts that reach each attractor, int64, shape ``(A,)``.
        final_loss: test loss at each run's end point, float64, shape ``(n1, n2)``.
        converge_step: each run's settling step (``Trajectories.steps_to_converge``
            with ``tolerance``), ``-1`` where it diverged, int64, shape ``(n1, n2)``.
        steps: optimiser steps each run took.
        tolerance: the linkage and settling distance, in plane coordinates.
        labels: names of the two coordinates.
        optimizer: the optimiser's description, e.g. ``"SGD(lr=0.01)"``.
    """

    w1: np.ndarray
    w2: np.ndarray
    attractor: np.ndarray
    attractors: np.ndarray
    sizes: np.ndarray
    final_loss: np.ndarray
    converge_step: np.ndarray
    steps: int
    tolerance: float
    labels: tuple[str, str]
    optimizer: str

    @property
    def diverged(self) -> np.ndarray:
        """Where the run diverged, bool, shape ``(n1, n2)``."""
        return self.attractor < 0


@dataclass(frozen=True)
class Watershed:
    """The steepest-descent basins of a surface and the persistence of its minima.

    Attributes:
        w1, w2: the surface's axes.
        basin: label of the minimum each grid point descends to (0 the lowest, then by
            loss), ``-1`` at non-finite losses, int64, shape ``(n1, n2)``.
        minima: each minimum's coordinates (for a flat minimum, its first point in
            row-major order), float64, shape ``(M, 2)``.
        minimum_loss: the loss at each minimum, float64, shape ``(M,)``.
        persistence: ``merge_loss - minimum_loss``: how far the loss must rise before
            the basin joins one with a lower minimum (``inf`` for the lowest minimum
            of each connected finite region), float64, shape ``(M,)``.
        merge_loss: the loss of the lowest pass into such a basin (``inf`` if none),
            float64, shape ``(M,)``.
        merged_into: the basin it joins there, ``-1`` if none, int64, shape ``(M,)``.
    """

    w1: np.ndarray
    w2: np.ndarray
    basin: np.ndarray
    minima: np.ndarray
    minimum_loss: np.ndarray
    persistence: np.ndarray
    merge_loss: np.ndarray
    merged_into: np.ndarray

    def merged(self, min_persistence: float) -> np.ndarray:
        """``basin`` with every basin of persistence below ``min_persistence`` merged
        into the one it joins (repeatedly), so that only basins at least that deep keep
        their labels; shape ``(n1, n2)``, ``-1`` at non-finite losses."""
        kept = np.arange(len(self.minima))
        target = np.where(self.persistence < min_persistence, self.merged_into, kept)
        while not np.array_equal(target[target], target):  # a merged basin's target may merge too
            target = target[target]
        return np.append(target, -1)[self.basin]  # label -1 (non-finite) indexes the appended -1


@dataclass(frozen=True)
class TrainTest:
    """One metric's surfaces on training and on test data, and their gap
    (``train_test_surfaces``).

    Attributes:
        train, test: the metric on the training and on the test data, on the same grid
            and plane.
        gap: the generalisation gap at each point, oriented so that positive means worse
            on the test data: ``test - train`` for a loss, ``train - test`` for a
            higher-is-better metric; lower is better. Its counts, device and method are
            the test pass's, its ``seconds`` both passes'.
    """

    train: Surface
    test: Surface
    gap: Surface
