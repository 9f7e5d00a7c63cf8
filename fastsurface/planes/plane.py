"""Planes through parameter space: ``θ(w1, w2) = θ₀ + w1·d₁ + w2·d₂``.

The ``Plane`` type itself lives in the leaf ``fastsurface.results`` (a ``Surface`` carries
its plane, and a file loads one without the engine); it is re-exported here with the
functions that build and check planes.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from fastsurface.errors import FastsurfaceError
from fastsurface.results import Plane as Plane
from fastsurface.results import TensorDict as TensorDict

_ENTRY = re.compile(r"^\s*([\w.]+)\s*(?:\[([\d\s,]*)\])?\s*$")


def unflatten(vector: torch.Tensor, names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> TensorDict:
    """A flat parameter vector, shape ``(D,)`` with ``D`` the shapes' total size, as a copy
    of each parameter by name, in ``names`` order."""
    parts = torch.split(vector, [math.prod(shape) for shape in shapes])
    return {name: part.reshape(shape).clone() for name, part, shape in zip(names, parts, shapes, strict=True)}


def unflattener(reference: TensorDict) -> Callable[[torch.Tensor], TensorDict]:
    """``unflatten`` into ``reference``'s names and shapes."""
    return partial(unflatten, names=tuple(reference), shapes=tuple(tuple(t.shape) for t in reference.values()))


def entry_plane(model: nn.Module, first: str, second: str, labels: tuple[str, str] | None = None) -> Plane:
    """The axis-aligned plane spanned by two scalar entries of ``model``'s parameters.

    Coordinates are the entries' absolute values, as in the seed article: the point
    ``(w1, w2)`` sets entry ``first`` to ``w1`` and entry ``second`` to ``w2`` and keeps
    every other parameter entry at the model's value.

    Args:
        model: any module; it is only read.
        first, second: entries written as ``"name[i, j]"`` with ``name`` from
            ``model.named_parameters()``; the index may be left out for a parameter
            with one element (``"scale"``).
        labels: axis names; the entry strings by default.

    >>> from fastsurface import ANN
    >>> entry_plane(ANN(1, 1, 1), "net.Layer_1.weight[0, 0]", "net.Layer_2.weight[0, 0]").labels
    ('net.Layer_1.weight[0, 0]', 'net.Layer_2.weight[0, 0]')
    """
    check_model(model)
    parameters = dict(model.named_parameters())
    name_a, index_a = _parse_entry("first", first, parameters)
    name_b, index_b = _parse_entry("second", second, parameters)
    if (name_a, index_a) == (name_b, index_b):
        raise FastsurfaceError(f"`first` and `second` must be different entries, both are {first!r}")
    origin = {name: parameters[name].detach().clone() for name in dict.fromkeys((name_a, name_b))}
    first_dir = {name: torch.zeros_like(t) for name, t in origin.items()}
    second_dir = {name: torch.zeros_like(t) for name, t in origin.items()}
    for name, index, direction in ((name_a, index_a, first_dir), (name_b, index_b, second_dir)):
        origin[name][index] = 0
        direction[name][index] = 1
    if labels is not None and (
        not isinstance(labels, (tuple, list)) or len(labels) != 2 or not all(isinstance(s, str) for s in labels)
    ):
        raise FastsurfaceError(f"`labels` must be two strings, got {labels!r}")
    return Plane(origin, first_dir, second_dir, (labels[0], labels[1]) if labels else (first.strip(), second.strip()))


def check_plane(model: nn.Module, plane: object) -> None:
    """Refuse a plane that does not slice ``model``: every parameter it moves must be a
    parameter of ``model`` with the same shape (torch would otherwise run the plane's
    tensors in place of the model's, silently computing another network's loss), and
    both directions must hold exactly those parameters, in those shapes (a broadcasting
    direction would move a parameter along another line)."""
    if not isinstance(plane, Plane):
        raise FastsurfaceError(f"`plane` must be a fastsurface Plane (see entry_plane), got {type(plane).__name__}")
    check_model(model)
    if not plane.origin:
        raise FastsurfaceError("`plane` moves no parameter: its origin is empty")
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    for name, tensor in plane.origin.items():
        if name not in shapes:
            raise FastsurfaceError(
                f"`plane` moves {name!r}, which is no parameter of `model` (parameters: {', '.join(shapes)})"
            )
        if not isinstance(tensor, torch.Tensor) or not tensor.dtype.is_floating_point:
            raise FastsurfaceError(
                f"`plane`: its origin must hold real floating-point tensors, got {name!r} of "
                f"{getattr(tensor, 'dtype', type(tensor).__name__)}"
            )
        if tuple(tensor.shape) != shapes[name]:
            raise FastsurfaceError(
                f"`plane` moves {name!r} with shape {list(tensor.shape)}, "
                f"but `model` has it with shape {list(shapes[name])}"
            )
    for label, direction in (("first", plane.first), ("second", plane.second)):
        if direction.keys() != plane.origin.keys():
            raise FastsurfaceError(
                f"`plane`: its {label} direction must have the origin's parameters "
                f"({', '.join(plane.origin)}), got {', '.join(direction) or 'none'}"
            )
        for name, tensor in direction.items():
            if not isinstance(tensor, torch.Tensor) or not tensor.dtype.is_floating_point:
                raise FastsurfaceError(
                    f"`plane`: its {label} direction must hold real floating-point tensors, got {name!r} of "
                    f"{getattr(tensor, 'dtype', type(tensor).__name__)}"
                )
            if tensor.shape != plane.origin[name].shape:
                raise FastsurfaceError(
                    f"`plane`: its {label} direction has {name!r} with shape {list(tensor.shape)}, "
                    f"but the origin has shape {list(plane.origin[name].shape)}"
                )


def check_model(model: object) -> None:
    """Refuse anything but an ``nn.Module`` whose parameters hold values (not on the ``meta``
    device, where tensors have shapes only)."""
    if not isinstance(model, nn.Module):
        raise FastsurfaceError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if any(t.device.type == "meta" for t in (*model.parameters(), *model.buffers())):
        raise FastsurfaceError("`model` has tensors on the meta device (shapes without values); load its weights first")


def default_plane(model: nn.Module) -> Plane:
    """The plane of a model with exactly two scalar weights (the seed ``ANN(1, 1, 1)``).

    Coordinates ``w1`` and ``w2`` are the two entries in ``named_parameters()`` order.
    """
    check_model(model)
    count = sum(parameter.numel() for parameter in model.parameters())
    if count != 2:
        raise FastsurfaceError(
            f"`plane` is required: `model` has {count} parameter entries, and only a model "
            "with exactly two has a default plane; pass e.g. "
            "plane=fastsurface.entry_plane(model, 'layer.weight[0, 0]', 'other.weight[0, 1]')"
        )
    entries = [
        (name, index) for name, p in model.named_parameters() for index in itertools.product(*map(range, p.shape))
    ]
    first, second = (f"{name}[{', '.join(map(str, index))}]" for name, index in entries)
    return entry_plane(model, first, second, labels=("w1", "w2"))


def _parse_entry(argument: str, entry: str, parameters: dict[str, nn.Parameter]) -> tuple[str, tuple[int, ...]]:
    match = _ENTRY.match(entry) if isinstance(entry, str) else None
    if match is None:
        raise FastsurfaceError(f"`{argument}` must look like 'name[i, j]', got {entry!r}")
    name, index_text = match.group(1), match.group(2)
    if name not in parameters:
        known = ", ".join(parameters) or "none"
        raise FastsurfaceError(f"`{argument}` names no parameter of `model`: {name!r} (parameters: {known})")
    shape = tuple(parameters[name].shape)
    index = tuple(int(i) for i in index_text.split(",") if i.strip()) if index_text is not None else ()
    if index_text is None and parameters[name].numel() == 1:
        index = (0,) * len(shape)
    if len(index) != len(shape) or any(not 0 <= i < s for i, s in zip(index, shape, strict=True)):
        raise FastsurfaceError(
            f"`{argument}` index {list(index)} does not fit parameter {name!r} of shape {list(shape)}"
        )
    return name, index
