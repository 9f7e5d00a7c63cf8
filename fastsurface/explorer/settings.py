"""What the explorer's page may ask for, validated before any work is queued.

A request is a JSON object of plain values: numbers, integers, choices, pairs of
numbers, flags. Nothing in it is run as code: models and data come only from the
Python side (``fs.explore``). Each field is checked here for its type and
range, with a message that names the field as the page sends it; the library checks
the rest when it runs (``axis``, ``train_sgd``, ``loss_surface``'s memory guard), and
both raise ``FastsurfaceError``, which the server answers with HTTP 400.

A missing field takes the explorer's default; an unknown field is refused.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeGuard

import numpy as np

import fastsurface as fs
from fastsurface.errors import FastsurfaceError, check_positive_int, check_seed

OPTIMISERS = ("sgd", "momentum", "adam")
REDUCTIONS = ("mean", "batch_mean")
VIEWS = ("surface", "contour", "heatmap")
DOWNLOADS = ("html", "png", "npz")
# Grid points one surface request may ask for (a 500 x 500 grid): a page redraws larger
# grids slowly, and the engine's single worker would be held for everyone else.
MAX_GRID_POINTS = 250_000
# Points per axis after a zoom: the new window is recomputed on a grid of at most this
# many values per axis (200 x 200 = 40,000 points).
ZOOM_POINTS = 200
# Seed data sets larger than this are refused: each request reads the whole test split.
MAX_SAMPLES = 1_000_000
# Optimiser steps one path request may take (200 epochs of the seed's 8,000 training
# samples in batches of 64): longer training would hold the worker for minutes.
MAX_TRAINING_STEPS = 25_000
# Paths one download may draw.
MAX_PATHS = 20
# Starts per axis of a basin map ("many starts"): at most 60 x 60 = 3,600 runs, trained
# together by train_many in seconds (its eager route; the compiled one compiles first).
MAX_BASIN_POINTS = 60
# A client's id and a path's id: short, printable, no markup.
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class SeedData:
    """The seed problem's data: ``samples`` drawn with ``seed``, split 80/20 with ``split_seed``."""

    samples: int
    seed: int
    split_seed: int


@dataclass(frozen=True)
class Evaluation:
    """How losses are reduced: ``reduction`` over test batches of ``batch_size``
    (also the training batch size), on the seed data ``data`` (``None``: the
    explorer's fixed data from Python)."""

    data: SeedData | None
    reduction: str
    batch_size: int


@dataclass(frozen=True)
class SurfaceSettings:
    """One surface: the window ``w1 × w2`` (stops excluded) at ``step`` on both axes."""

    w1: tuple[float, float]
    w2: tuple[float, float]
    step: float
    evaluation: Evaluation

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """The grid's two axes, float64, shapes ``(n1,)`` and ``(n2,)``."""
        return fs.axis(*self.w1, self.step), fs.axis(*self.w2, self.step)


@dataclass(frozen=True)
class PathSettings:
    """One training path: ``epochs`` of ``optimiser`` at learning rate ``lr`` from ``start``."""

    start: tuple[float, float]
    lr: float
    epochs: int
    optimiser: str
    evaluation: Evaluation

    def name(self) -> str:
        """The path's legend entry, e.g. ``"sgd lr=0.01, 25 epochs from (-1, -1)"``."""
        return (
            f"{self.optimiser} lr={self.lr:g}, {self.epochs} epoch{'s' if self.epochs > 1 else ''} "
            f"from ({self.start[0]:.4g}, {self.start[1]:.4g})"
        )


@dataclass(frozen=True)
class BasinSettings:
    """A basin map ("many starts"): a run of ``epochs`` of ``optimiser`` at learning rate
    ``lr`` from every point of a ``points`` x ``points`` grid over ``surface``'s window,
    on its data, drawn over that surface."""

    surface: SurfaceSettings
    lr: float
    epochs: int
    optimiser: str
    points: int

    def starts(self) -> tuple[np.ndarray, np.ndarray]:
        """The start grid's axes: ``points`` evenly spaced values across each side of
        the window (stops excluded, as ``axis``), float64."""
        return tuple(  # type: ignore[return-value]
            start + (stop - start) * np.arange(self.points) / self.points
            for start, stop in (self.surface.w1, self.surface.w2)
        )


@dataclass(frozen=True)
class Ticket:
    """Who asks: ``client`` (one page) and its request number ``seq`` for one kind of
    work. A queued request is dropped when a higher ``seq`` of the same client and kind
    has arrived; ``None`` for a request that is never dropped (no ``client`` sent)."""

    client: str
    seq: int


@dataclass(frozen=True)
class SurfaceRequest:
    """A surface to compute and how to colour and annotate it."""

    ticket: Ticket | None
    settings: SurfaceSettings
    log_color: bool
    critical_points: bool


@dataclass(frozen=True)
class PathRequest:
    """A path to train; ``path`` names the page's path it replaces (its kind of work)."""

    ticket: Ticket | None
    path: str
    settings: PathSettings


@dataclass(frozen=True)
class BasinRequest:
    """A basin map to compute, and how to colour and annotate its surface."""

    ticket: Ticket | None
    surface: SurfaceRequest
    settings: BasinSettings


@dataclass(frozen=True)
class DownloadRequest:
    """A file of the page's current view: the surface, its paths (the last one is the
    3-D view's and the ``.npz`` file's), the view and the file format."""

    ticket: Ticket | None
    surface: SurfaceRequest
    paths: tuple[PathSettings, ...]
    view: str
    format: str


class Fields:
    """A request's JSON object, read field by field with the explorer's defaults for
    missing ones; ``finish`` refuses any field that was not read."""

    def __init__(self, body: object, defaults: Mapping[str, object], what: str = "the request") -> None:
        if not isinstance(body, dict):
            raise FastsurfaceError(f"{what} must be a JSON object, got {_shown(body)}")
        self._body, self._defaults, self._what, self._read = body, defaults, what, set[str]()

    def raw(self, name: str) -> object:
        """The field as sent, or its default."""
        self._read.add(name)
        if name in self._body:
            return self._body[name]
        if name not in self._defaults:
            raise FastsurfaceError(f"{self._what} needs the field `{name}`")
        return self._defaults[name]

    def number(self, name: str) -> float:
        value = self.raw(name)
        if not _is_number(value) or not _finite(value):
            raise FastsurfaceError(f"`{name}` must be a finite number, got {_shown(value)}")
        return float(value)

    def integer(self, name: str) -> int:
        value = self.raw(name)
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise FastsurfaceError(f"`{name}` must be an integer, got {_shown(value)}")
        return int(value)

    def pair(self, name: str) -> tuple[float, float]:
        value = self.raw(name)
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(_is_number(v) and _finite(v) for v in value)
        ):
            raise FastsurfaceError(f"`{name}` must be two finite numbers, got {_shown(value)}")
        return float(value[0]), float(value[1])

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        value = self.raw(name)
        if value not in options:
            raise FastsurfaceError(f"`{name}` must be one of {', '.join(map(repr, options))}, got {_shown(value)}")
        return str(value)

    def flag(self, name: str) -> bool:
        value = self.raw(name)
        if not isinstance(value, bool):
            raise FastsurfaceError(f"`{name}` must be true or false, got {_shown(value)}")
        return value

    def identifier(self, name: str) -> str:
        value = self.raw(name)
        if not isinstance(value, str) or not _IDENTIFIER.match(value):
            raise FastsurfaceError(f"`{name}` must be 1 to 64 letters, digits, '-' or '_', got {_shown(value)}")
        return value

    def has(self, name: str) -> bool:
        return name in self._body

    def finish(self) -> None:
        unknown = sorted(set(self._body) - self._read)
        if unknown:
            known = ", ".join(sorted(self._read))
            names = ", ".join(f"`{json.dumps(n)[1:-1]}`" for n in unknown)  # escaped: a lone surrogate cannot be sent
            raise FastsurfaceError(f"{self._what} has unknown field(s) {names}; it takes {known}")


def surface_request(body: object, defaults: Mapping[str, object], seed_data: bool) -> SurfaceRequest:
    """A surface request, checked: see ``surface_fields`` for the fields."""
    fields = Fields(body, defaults)
    request = SurfaceRequest(_ticket(fields), *surface_fields(fields, seed_data))
    fields.finish()
    return request


def surface_fields(fields: Fields, seed_data: bool) -> tuple[SurfaceSettings, bool, bool]:
    """``w1``, ``w2`` (``[start, stop]``), ``step``, the evaluation fields (see
    ``evaluation``), ``log_color`` and ``critical_points``. The grid must have at least
    2 values per axis and at most ``MAX_GRID_POINTS`` points."""
    windows = {name: fields.pair(name) for name in ("w1", "w2")}
    for name, (start, stop) in windows.items():
        if not start < stop:
            raise FastsurfaceError(f"`{name}` must be [start, stop] with start < stop, got [{start:g}, {stop:g}]")
    settings = SurfaceSettings(windows["w1"], windows["w2"], fields.number("step"), evaluation(fields, seed_data))
    first, second = settings.axes()
    for name, values in (("w1", first), ("w2", second)):
        if len(values) < 2:
            raise FastsurfaceError(
                f"`step` of {settings.step:g} leaves {len(values)} value in `{name}`'s window "
                f"[{windows[name][0]:g}, {windows[name][1]:g}); a surface needs at least 2 per axis"
            )
    if len(first) * len(second) > MAX_GRID_POINTS:
        raise FastsurfaceError(
            f"`step` of {settings.step:g} gives a {len(first)} x {len(second)} grid, more than the "
            f"{MAX_GRID_POINTS:,} points the explorer computes per request; raise `step` or narrow the window"
        )
    return settings, fields.flag("log_color"), fields.flag("critical_points")


def evaluation(fields: Fields, seed_data: bool) -> Evaluation:
    """``reduction``, ``batch_size`` and, for the seed problem only, ``samples``,
    ``seed`` and ``split_seed``."""
    data = None
    if seed_data:
        samples = fields.integer("samples")
        check_positive_int("samples", samples)
        if samples > MAX_SAMPLES:
            raise FastsurfaceError(f"`samples` must be at most {MAX_SAMPLES:,} in the explorer, got {samples:,}")
        data = SeedData(samples, fields.integer("seed"), fields.integer("split_seed"))
        check_seed("seed", data.seed)
        check_seed("split_seed", data.split_seed)
    reduction = fields.choice("reduction", REDUCTIONS)
    batch_size = fields.integer("batch_size")
    check_positive_int("batch_size", batch_size)
    return Evaluation(data, reduction, batch_size)


def path_request(body: object, defaults: Mapping[str, object], seed_data: bool) -> PathRequest:
    """A path request: ``path`` (the page's id of the path) and the fields of ``path_fields``."""
    fields = Fields(body, defaults)
    request = PathRequest(_ticket(fields), fields.identifier("path"), path_fields(fields, seed_data))
    fields.finish()
    return request


def path_fields(fields: Fields, seed_data: bool) -> PathSettings:
    """``start`` (``[w1, w2]``), ``lr`` (> 0), ``epochs`` (>= 1), ``optimiser`` and the
    evaluation fields."""
    start = fields.pair("start")
    return PathSettings(start, *training_fields(fields), evaluation(fields, seed_data))


def training_fields(fields: Fields) -> tuple[float, int, str]:
    """``lr`` (> 0), ``epochs`` (>= 1) and ``optimiser``."""
    lr = fields.number("lr")
    if lr <= 0:
        raise FastsurfaceError(f"`lr` must be a finite number > 0, got {lr!r}")
    epochs = fields.integer("epochs")
    check_positive_int("epochs", epochs)
    return lr, epochs, fields.choice("optimiser", OPTIMISERS)


def basins_request(body: object, defaults: Mapping[str, object], seed_data: bool) -> BasinRequest:
    """A basin map: the fields of a surface request (its window and evaluation), ``lr``,
    ``epochs`` and ``optimiser`` (``training_fields``), and ``points``, the starts per
    axis (2 to ``MAX_BASIN_POINTS``); the runs train on the surface's data."""
    fields = Fields(body, defaults)
    ticket = _ticket(fields)
    surface = SurfaceRequest(None, *surface_fields(fields, seed_data))
    lr, epochs, optimiser = training_fields(fields)
    points = fields.integer("points")
    if not 2 <= points <= MAX_BASIN_POINTS:
        raise FastsurfaceError(f"`points` must be an integer from 2 to {MAX_BASIN_POINTS}, got {points}")
    request = BasinRequest(ticket, surface, BasinSettings(surface.settings, lr, epochs, optimiser, points))
    fields.finish()
    return request


def download_request(body: object, defaults: Mapping[str, object], seed_data: bool) -> DownloadRequest:
    """A download: ``surface`` (the fields of a surface request), ``paths`` (a list of
    objects with the fields of ``path_fields``), ``view`` and ``format``."""
    fields = Fields(body, defaults)
    ticket = _ticket(fields)
    surface_body = Fields(fields.raw("surface"), defaults, "`surface`")
    surface = SurfaceRequest(None, *surface_fields(surface_body, seed_data))
    surface_body.finish()
    listed = fields.raw("paths")
    if not isinstance(listed, list) or len(listed) > MAX_PATHS:
        raise FastsurfaceError(f"`paths` must be a list of at most {MAX_PATHS} paths, got {_shown(listed)}")
    paths = []
    for number, entry in enumerate(listed):
        path_body = Fields(entry, defaults, f"`paths[{number}]`")
        paths.append(path_fields(path_body, seed_data))
        path_body.finish()
    request = DownloadRequest(
        ticket, surface, tuple(paths), fields.choice("view", VIEWS), fields.choice("format", DOWNLOADS)
    )
    fields.finish()
    return request


def _ticket(fields: Fields) -> Ticket | None:
    """``client`` and ``seq``, both or neither."""
    if not fields.has("client") and not fields.has("seq"):
        return None
    ticket = Ticket(fields.identifier("client"), fields.integer("seq"))
    if ticket.seq < 0:
        raise FastsurfaceError(f"`seq` must be an integer >= 0, got {ticket.seq}")
    return ticket


def _is_number(value: object) -> TypeGuard[numbers.Real]:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # a JSON integer beyond float64
        return False


def _shown(value: object) -> str:
    """``value`` as the page sent it (JSON), shortened."""
    text = json.dumps(value) if isinstance(value, (str, int, float, list, dict, type(None))) else repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
