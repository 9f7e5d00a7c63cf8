"""Surface files: ``.npz`` archives with a JSON metadata entry, never unpickled.

A file (format version 2) is a zip archive of ``.npy`` entries that ``numpy.load(path,
allow_pickle=False)`` also reads:

- ``metadata``: UTF-8 JSON as a ``uint8`` array: ``format``, ``format_version``, the
  non-array fields of each stored object, the plane's labels and parameter names,
  ``provenance`` (package versions, plus what the caller adds: seed, ...), the list of
  array entries with dtype and shape, and ``content_sha256``;
- ``surface/w1``, ``surface/w2``, ``surface/loss_tensor`` (a ``Surface``),
  ``trajectory/w1`` ... ``trajectory/step`` (a ``Trajectory``),
  ``trajectories/positions`` ... (the arrays of a ``Trajectories``: many runs),
  ``plane/origin/<parameter>``, ``plane/first/<parameter>``, ``plane/second/<parameter>``.

Version 2 adds the surface's ``data_description`` (a JSON object, or null) and stores the
surface's own plane (``Surface.plane``) unless another is given; a loaded surface carries the
file's plane. Files of version 1 load as before, their surfaces without a data description.
A callable loss (``Surface.loss_function``) is code and is never stored: its name is.

``content_sha256`` hashes the metadata (without itself and ``timing``) and every array's
name, dtype, shape and bytes, so a truncated, corrupt or edited file is refused on load. It
guards against accidents and naive edits, not against a forger who recomputes it.

Wall-clock times are not part of what a file holds unless asked for (``timing=True``, then
in a ``timing`` field outside the hash), so equal work gives byte-identical files; a surface
loaded from a file without them has ``seconds`` NaN.

Every field is checked on save and again on load, against the same rules (types, the
loss grid's shape against its axes, a path's arrays of one length), so ``save`` refuses
what ``load`` would refuse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import types
import typing
import zipfile
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import torch

from fastsurface._support.choices import REDUCTIONS
from fastsurface._support.devices import resolve_dtype
from fastsurface._support.files import atomic_write, check_readable, check_writable
from fastsurface._support.memory import usable_bytes
from fastsurface._version import __version__
from fastsurface.engine.axes import axis_problem
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane
from fastsurface.results import DataDescription, Surface, Trajectories, Trajectory

FORMAT = "fastsurface"
FORMAT_VERSION = 2
_METADATA = "metadata"
_HASH = "content_sha256"
# Wall-clock times, kept only when asked for, outside the content hash.
_TIMING = "timing"
_KINDS: dict[str, type] = {"surface": Surface, "trajectory": Trajectory, "trajectories": Trajectories}
# The kinds whose `seconds` is a wall-clock time.
_TIMED = ("surface", "trajectories")
_PLANE_PARTS = ("origin", "first", "second")
# Fields of a Surface a file does not hold as such: the plane is stored apart, code never.
_NOT_STORED = ("plane", "loss_function")
# The array fields of each stored kind that must fit together.
_ARRAYS = {
    "surface": ("w1", "w2", "loss_tensor"),
    "trajectory": ("w1", "w2", "loss", "step"),
    "trajectories": ("positions", "loss", "step", "diverged_step", "residual", "group"),
}
_Stored = TypeVar("_Stored", Surface, Trajectory, Trajectories)
# A fixed entry time, so that equal contents give byte-identical files.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# Caps on what a load reads before trusting a file: the metadata entry, an .npy header, the
# ratio of a deflated entry (ours are stored), the whole archive's expanded size.
_MAX_METADATA = 16 * 2**20
_MAX_HEADER = 2**16
_MAX_RATIO = 100
_MAX_FILE_BYTES = 2**40
# What zipfile and numpy raise on a damaged archive (a corrupt directory or header, a failed CRC,
# a truncated entry), a flipped byte included: a compression method, zip version or flag
# zipfile does not support (NotImplementedError), an encryption flag (RuntimeError).
_DAMAGED = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    MemoryError,
    NotImplementedError,
    RuntimeError,
)
# The longest wall-clock time a file may record (about 32 years): more is an edited or damaged field.
_MAX_SECONDS = 1e9


@dataclass(frozen=True)
class Saved:
    """What a surface file holds; ``surface``, ``trajectory`` and ``trajectories`` may each be absent.

    Attributes:
        surface: the stored ``Surface``; its ``loss_tensor`` is a CPU float64 tensor.
        trajectory: the stored ``Trajectory``.
        trajectories: the stored ``Trajectories`` (many runs, ``train_many``).
        plane: the stored ``Plane`` (CPU tensors in their saved dtype).
        metadata: the file's verified JSON metadata; ``metadata["provenance"]`` holds
            the package versions and what the caller passed as ``provenance``.
    """

    surface: Surface | None
    trajectory: Trajectory | None
    plane: Plane | None
    metadata: dict[str, Any]
    trajectories: Trajectories | None = None


def save(
    path: str | os.PathLike[str],
    *,
    surface: Surface | None = None,
    trajectory: Trajectory | None = None,
    trajectories: Trajectories | None = None,
    plane: Plane | None = None,
    provenance: dict[str, Any] | None = None,
    timing: bool = False,
) -> Path:
    """Write a surface, a trajectory and/or many runs' trajectories to ``path`` (``.npz``), atomically.

    Args:
        path: the file; its folder must exist. An existing file is replaced only once
            the new one is complete.
        surface, trajectory, trajectories: what to store; at least one.
        plane: the plane they were computed on, stored with its direction tensors;
            ``surface.plane`` by default (a surface carries its plane). A plane other
            than the surface's own is refused.
        provenance: JSON-serialisable facts about the run (``seed``, data size, ...);
            the fastsurface, torch, numpy and Python versions are added (and cannot be
            overridden).
        timing: also store the ``seconds`` of the surface and the trajectories, outside the content hash (then two
            runs of equal work give files that differ in that field only).

    Returns:
        The path written.

    >>> import tempfile, fastsurface as fs
    >>> s = fs.loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(50), fs.axis(0, 1, 0.5), fs.axis(0, 1, 0.5))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     written = save(f"{folder}/s.npz", surface=s, provenance={"seed": 42})
    ...     load(written).metadata["provenance"]["seed"]
    42
    """
    target = check_writable("path", path, (".npz",))
    stored = {"surface": surface, "trajectory": trajectory, "trajectories": trajectories}
    if all(value is None for value in stored.values()):
        raise FastsurfaceError("`surface`, `trajectory` or `trajectories` must be given, got none")
    for kind, value in stored.items():
        if value is not None and not isinstance(value, _KINDS[kind]):
            raise FastsurfaceError(
                f"`{kind}` must be a fastsurface {_KINDS[kind].__name__}, got {type(value).__name__}"
            )
    if plane is not None and not isinstance(plane, Plane):
        raise FastsurfaceError(f"`plane` must be a fastsurface Plane, got {type(plane).__name__}")
    plane = _stored_plane(surface, plane)
    if not isinstance(timing, bool):
        raise FastsurfaceError(f"`timing` must be True or False, got {timing!r}")
    for kind, value in stored.items():
        if value is not None:
            _check_fields(kind, {f.name: getattr(value, f.name) for f in _stored_fields(value)}, blame=kind)
    if plane is not None:
        _check_plane_listing({"labels": list(plane.labels), "parameters": list(plane.origin)}, blame="plane")
    arrays: dict[str, np.ndarray | torch.Tensor] = {}
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "provenance": _provenance(provenance),
    }
    for kind, value in stored.items():
        if value is not None:
            metadata[kind] = _flatten(kind, value, arrays)
    times = {f"{kind}.seconds": metadata[kind].pop("seconds") for kind in _TIMED if kind in metadata}
    if timing and times:  # otherwise not part of the file: equal work, equal bytes
        metadata[_TIMING] = times
    if plane is not None:
        metadata["plane"] = {"labels": list(plane.labels), "parameters": list(plane.origin)}
        for part in _PLANE_PARTS:
            for name, tensor in getattr(plane, part).items():
                arrays[f"plane/{part}/{name}"] = tensor
    tensors = {name for name, array in arrays.items() if isinstance(array, torch.Tensor)}
    values = {name: _as_array(array) for name, array in arrays.items()}
    metadata["arrays"] = {
        name: {"dtype": array.dtype.str, "shape": list(array.shape), "tensor": name in tensors}
        for name, array in values.items()
    }
    metadata[_HASH] = _content_hash(metadata, values)
    entries: dict[str, np.ndarray] = {_METADATA: np.frombuffer(_canonical(metadata), dtype=np.uint8), **values}
    atomic_write(target, lambda file: _write_archive(file, entries))
    return target


def load(path: str | os.PathLike[str]) -> Saved:
    """Read a file written by ``save``, refusing anything it cannot trust.

    Nothing is ever unpickled. Refused with ``FastsurfaceError``: a missing file, a
    truncated or corrupt archive (zip CRC or ``content_sha256`` mismatch), an entry
    holding Python objects (pickles), an unknown or extra entry, a newer format version.
    """
    source = check_readable("path", path)
    metadata, entries = _read_archive(source)
    _verified_metadata(source, metadata, entries)
    try:
        plane = _rebuild_plane(metadata, entries)
        surface = _rebuild("surface", Surface, metadata, entries)
        return Saved(
            surface=None if surface is None else dataclasses.replace(surface, plane=plane),
            trajectory=_rebuild("trajectory", Trajectory, metadata, entries),
            trajectories=_rebuild("trajectories", Trajectories, metadata, entries),
            plane=plane,
            metadata=metadata,
        )
    except (KeyError, TypeError, ValueError) as error:
        reason = error if isinstance(error, FastsurfaceError) else repr(error)  # a refusal reads as it is
        raise FastsurfaceError(f"`path` {str(path)!r} does not hold a valid fastsurface file: {reason}") from error


def _stored_plane(surface: Surface | None, plane: Plane | None) -> Plane | None:
    """The plane a file stores: ``plane``, else the surface's own; refused when both are
    given and differ (the file would describe a surface by another plane)."""
    own = None if surface is None else surface.plane
    if plane is not None and own is not None and not plane.same_as(own):
        raise FastsurfaceError(
            "`plane` differs from the plane the surface was computed on (`surface.plane`); leave `plane` out to "
            "store the surface's own"
        )
    return own if plane is None else plane


def _stored_fields(value: Surface | Trajectory | Trajectories) -> list[dataclasses.Field[Any]]:
    """The fields a file holds for ``value``."""
    return [f for f in fields(value) if f.name not in _NOT_STORED]


def _provenance(extra: dict[str, Any] | None) -> dict[str, Any]:
    if extra is not None and not isinstance(extra, dict):
        raise FastsurfaceError(f"`provenance` must be a dict, got {type(extra).__name__}")
    own = {
        "fastsurface_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
    }
    clashing = sorted(set(own) & set(extra or {}))
    if clashing:
        raise FastsurfaceError(f"`provenance` must not set the fields fastsurface records itself, got {clashing}")
    facts = {**own, **(extra or {})}
    try:
        _canonical(facts)
    except (TypeError, ValueError) as error:
        raise FastsurfaceError(f"`provenance` must hold JSON values only, got {extra!r}") from error
    return facts


def _as_array(array: np.ndarray | torch.Tensor) -> np.ndarray:
    """A tensor as a CPU NumPy array; an array as it is."""
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array


def _flatten(
    kind: str, value: Surface | Trajectory | Trajectories, arrays: dict[str, np.ndarray | torch.Tensor]
) -> dict[str, Any]:
    """Array and tensor fields go to ``arrays`` as ``kind/field``; the rest is returned as JSON values."""
    scalars: dict[str, Any] = {}
    for field in _stored_fields(value):
        item = getattr(value, field.name)
        if isinstance(item, (np.ndarray, torch.Tensor)):
            arrays[f"{kind}/{field.name}"] = item
        else:
            scalars[field.name] = _json_value(item)
    return scalars


def _json_value(item: object) -> object:
    """A field's value as JSON: a NumPy scalar as a number, a tuple as a list, a dataclass
    (a ``DataDescription``) as an object of its fields."""
    if isinstance(item, np.generic):  # a NumPy scalar, e.g. a count given as np.int64
        return item.item()
    if isinstance(item, tuple):
        return [_json_value(part) for part in item]
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {f.name: _json_value(getattr(item, f.name)) for f in fields(item)}
    return item


def _rebuild(kind: str, cls: type[_Stored], metadata: dict[str, Any], entries: dict[str, np.ndarray]) -> _Stored | None:
    if kind not in metadata:
        return None
    if not isinstance(metadata[kind], dict):
        raise FastsurfaceError(f"the file's {kind} metadata must be a JSON object, got {type(metadata[kind]).__name__}")
    arrays = {
        name.removeprefix(f"{kind}/"): torch.from_numpy(array) if metadata["arrays"][name]["tensor"] else array
        for name, array in entries.items()
        if name.startswith(f"{kind}/")
    }
    seconds = _stored_seconds(kind, metadata) if kind in _TIMED else None
    return _built(kind, cls, metadata[kind], arrays, seconds, blame="path")


def _built(
    kind: str,
    cls: type[_Stored],
    scalars: dict[str, Any],
    arrays: dict[str, np.ndarray | torch.Tensor],
    seconds: float | None,
    blame: str,
) -> _Stored:
    """A stored object from its JSON fields ``scalars`` and its ``arrays``, every field
    checked (``seconds``, where not ``None``, in place of a stored one)."""
    values: dict[str, Any] = {} if seconds is None else {"seconds": seconds}
    hints = typing.get_type_hints(cls)
    for field in fields(cls):
        if field.name in _NOT_STORED:
            continue
        if field.name in arrays:
            values[field.name] = arrays[field.name]
        elif field.name in scalars and field.name not in values:
            values[field.name] = _from_json(hints[field.name], scalars[field.name])
        elif field.default is MISSING and field.name not in values:  # later fields keep their defaults
            raise FastsurfaceError(
                f"`{blame}`: the {kind} has no {field.name!r}: it is not a complete fastsurface file"
            )
    _check_fields(kind, values, blame=blame)
    return cls(**values)


def surface_fields(surface: Surface) -> dict[str, Any]:
    """What a file holds of ``surface`` besides its axes and losses, as JSON values,
    checked as ``save`` checks them (for other file formats: ``interchange``)."""
    _check_fields("surface", {f.name: getattr(surface, f.name) for f in _stored_fields(surface)}, blame="surface")
    return _flatten("surface", surface, {})


def surface_from_fields(
    scalars: dict[str, Any], w1: np.ndarray, w2: np.ndarray, loss: np.ndarray, blame: str
) -> Surface:
    """A ``Surface`` from ``surface_fields``' JSON values and its arrays, checked as ``load``
    checks a file's; ``seconds`` NaN where not given."""
    arrays: dict[str, np.ndarray | torch.Tensor] = {"w1": w1, "w2": w2, "loss_tensor": torch.from_numpy(loss)}
    seconds = None if "seconds" in scalars else math.nan
    return _built("surface", Surface, scalars, arrays, seconds, blame)


def _from_json(hint: Any, stored: object) -> object:
    """A JSON value as the field's type takes it: lists as tuples, an object as a
    ``DataDescription`` where the field holds one (its fields' types are checked
    afterwards, by ``_fits``)."""
    if isinstance(stored, dict) and DataDescription in (typing.get_args(hint) or (hint,)):
        names = [f.name for f in fields(DataDescription)]
        if sorted(stored) != sorted(names):
            raise FastsurfaceError(f"the file's data description must have the fields {names}, got {sorted(stored)}")
        values: dict[str, Any] = {name: _from_json(Any, stored[name]) for name in names}
        return DataDescription(**values)
    return tuple(_from_json(Any, item) for item in stored) if isinstance(stored, list) else stored


def _stored_seconds(kind: str, metadata: dict[str, Any]) -> float:
    """The ``seconds`` of ``kind`` if the file keeps it (``timing``, or a file from before
    timings left the content), else NaN. The ``timing`` field lies outside the content hash,
    so a plain edit reaches it: its value is checked here, naming the field."""
    if "seconds" in metadata[kind]:  # a file from before timings left the content
        field, seconds = f"{kind} seconds", metadata[kind]["seconds"]
    else:
        timing = metadata.get(_TIMING, {})
        if not isinstance(timing, dict):
            raise FastsurfaceError(f"`path`: the file's {_TIMING} must be a JSON object, got {timing!r:.200}")
        field, seconds = f"{_TIMING} {kind}.seconds", timing.get(f"{kind}.seconds")
    if seconds is None:
        return math.nan
    problem = f"must be a number, got {seconds!r:.200}" if type(seconds) not in (int, float) else _seconds(seconds)
    if problem is not None:
        raise FastsurfaceError(f"`path`: the file's {field} {problem}")
    return float(seconds)


def _check_fields(kind: str, values: dict[str, Any], blame: str) -> None:
    """Refuse values a ``Surface`` or ``Trajectory`` of a file cannot hold: each field's type
    from the class's annotations, then the arrays' shapes against each other, then the values
    themselves (``_VALUE_RULES``, ``axis_problem``): a file edited and re-signed, which the
    content hash cannot catch, must not load what no computation gives."""
    hints = typing.get_type_hints(_KINDS[kind])
    for name, value in values.items():
        if not _fits(hints[name], value):
            raise FastsurfaceError(f"`{blame}`: the {kind}'s {name} must be {hints[name]}, got {value!r:.200}")
    shapes = {name: tuple(np.shape(value)) for name, value in values.items() if name in _ARRAYS[kind]}
    if not _shapes_fit(kind, shapes):
        raise FastsurfaceError(
            f"`{blame}`: the {kind}'s arrays must fit together (a surface: 1-D axes and a loss of shape "
            "(len(w1), len(w2)); a trajectory: 1-D arrays of one length; trajectories: positions (K, T, 2), "
            f"loss and residual (K, T), step (T,), diverged_step and group (K,)), got shapes {shapes}"
        )
    for name, value in values.items():
        rule = _grid_axis if name in _AXES.get(kind, ()) else _VALUE_RULES.get(name)
        problem = None if rule is None else rule(value)
        if problem is not None:
            raise FastsurfaceError(f"`{blame}`: the {kind}'s {name} {problem}")


def _grid_axis(value: np.ndarray | torch.Tensor) -> str | None:
    """A surface's axis: floating-point numbers (a ``Surface`` holds float64 axes), by ``axis_problem``."""
    return _floating(value) or axis_problem(_as_array(value))


def _floating(value: np.ndarray | torch.Tensor) -> str | None:
    """Floating-point numbers: what every computation gives, and what analyses write into."""
    dtype = _as_array(value).dtype
    return None if dtype.kind == "f" else f"must hold floating-point numbers, got dtype {dtype}"


def _reduction(value: str) -> str | None:
    """One of the reductions the engine computes: analyses read the loss's meaning from it."""
    return None if value in REDUCTIONS else f"must be one of {list(REDUCTIONS)}, got {value!r:.100}"


def _compute_dtype(value: str) -> str | None:
    """A compute dtype fastsurface evaluates in (``resolve_dtype``'s rule), which analyses continue in."""
    try:
        resolve_dtype(value)
    except FastsurfaceError:
        return f"must be 'float32' or 'float64', got {value!r:.100}"
    return None


def _device(value: str) -> str | None:
    """A device torch can name, available here or not (a file saved on a GPU loads anywhere),
    but not ``meta``, which holds shapes without values: no loss is computed there."""
    try:
        computable = torch.device(value).type != "meta"
    except (RuntimeError, TypeError, ValueError):
        computable = False
    return None if computable else f"must name a device such as 'cpu' or 'cuda:0', got {value!r:.100}"


def _count(value: int) -> str | None:
    """A count of samples, batches or points: never negative."""
    return None if value >= 0 else f"must be a count >= 0, got {value!r}"


def _seconds(value: float) -> str | None:
    """A wall-clock time, or NaN where it was not recorded."""
    if math.isnan(value) or 0 <= value <= _MAX_SECONDS:
        return None
    return f"must be NaN (not recorded) or a time from 0 to {_MAX_SECONDS:,.0f} seconds, got {value!r}"


# What a stored field's value must be beyond its type, by field name, for every kind that has
# the field (``_fits`` has checked the type): each rule says what is wrong, or returns None.
_VALUE_RULES: dict[str, Callable[[Any], str | None]] = {
    "loss_tensor": _floating,
    "loss": _floating,
    "reduction": _reduction,
    "dtype": _compute_dtype,
    "device": _device,
    "samples": _count,
    "batches": _count,
    "tile_points": _count,
    "seconds": _seconds,
}
# The fields that are a grid's axes, by kind (a trajectory's w1 and w2 are a path, in any order).
_AXES = {"surface": ("w1", "w2")}


def _shapes_fit(kind: str, shapes: dict[str, tuple[int, ...]]) -> bool:
    if kind == "surface":
        axes = len(shapes["w1"]) == len(shapes["w2"]) == 1
        return axes and shapes["loss_tensor"] == shapes["w1"] + shapes["w2"]
    if kind == "trajectory":
        return len(shapes["w1"]) == 1 and len(set(shapes.values())) == 1
    positions = shapes["positions"]
    if len(positions) != 3 or positions[2] != 2:
        return False
    runs, records = positions[:2]
    expected = {"loss": (runs, records), "residual": (runs, records), "step": (records,)}
    expected |= {"diverged_step": (runs,), "group": (runs,)}
    return all(shapes[name] == shape for name, shape in expected.items())


def _fits(hint: Any, value: object) -> bool:
    """Whether ``value`` has the type a field's annotation names (bool is not a number)."""
    if isinstance(value, torch.Tensor):
        return hint in (np.ndarray, torch.Tensor) and not value.is_complex() and value.dtype != torch.bool
    if hint in (np.ndarray, torch.Tensor):
        return isinstance(value, np.ndarray) and value.dtype.kind in "fiu"
    if dataclasses.is_dataclass(hint):
        nested = typing.get_type_hints(hint)
        return type(value) is hint and all(_fits(nested[name], getattr(value, name)) for name in nested)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(option, value) for option in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            return isinstance(value, tuple) and all(_fits(items[0], item) for item in value)
        return isinstance(value, tuple) and len(value) == len(items) and all(map(_fits, items, value))
    if hint is float:
        return type(value) in (int, float) or isinstance(value, np.floating)
    if hint is int:
        return type(value) is int or isinstance(value, np.integer)
    return type(value) is hint


def _check_plane_listing(listing: object, blame: str) -> None:
    """A plane's labels (two strings) and parameter names (strings, at least one)."""
    labels = listing.get("labels") if isinstance(listing, dict) else None
    names = listing.get("parameters") if isinstance(listing, dict) else None
    if not (
        isinstance(labels, list)
        and len(labels) == 2
        and all(isinstance(label, str) for label in labels)
        and isinstance(names, list)
        and names
        and all(isinstance(name, str) for name in names)
    ):
        raise FastsurfaceError(
            f"`{blame}`: a plane must have two string labels and named parameters, got {listing!r:.200}"
        )


def _rebuild_plane(metadata: dict[str, Any], entries: dict[str, np.ndarray]) -> Plane | None:
    if "plane" not in metadata:
        return None
    _check_plane_listing(metadata["plane"], blame="path")
    names = metadata["plane"]["parameters"]
    parts = [{name: torch.from_numpy(entries[f"plane/{part}/{name}"]) for name in names} for part in _PLANE_PARTS]
    origin, first, second = parts
    return Plane(origin, first, second, labels=tuple(metadata["plane"]["labels"]))


def _canonical(metadata: dict[str, Any]) -> bytes:
    return json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _content_hash(metadata: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(_canonical({key: value for key, value in metadata.items() if key not in (_HASH, _TIMING)}))
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"\n{name} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _write_archive(file: BinaryIO, entries: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in entries.items():
            with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.ascontiguousarray(array), allow_pickle=False)


def _read_archive(source: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The parsed metadata and every array entry, each checked before a byte of its data is read: the zip
    directory (names, sizes, compression ratio) against caps and the metadata's listing,
    and each ``.npy`` header's shape and dtype against the entry's size and the listing."""
    try:
        with zipfile.ZipFile(source) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            _check_directory(source, infos)
            metadata = _parsed_metadata(source, _read_entry(source, archive, infos[f"{_METADATA}.npy"], None))
            listed = _listed_arrays(source, metadata)
            unlisted = sorted(set(infos) - {f"{name}.npy" for name in listed} - {f"{_METADATA}.npy"})
            if unlisted:
                raise FastsurfaceError(f"`path` {str(source)!r} holds entries its metadata does not list: {unlisted}")
            missing = sorted(name for name in listed if f"{name}.npy" not in infos)
            if missing:
                raise FastsurfaceError(f"`path` {str(source)!r} lacks entries its metadata lists: {missing}")
            return metadata, {
                name: _read_entry(source, archive, infos[f"{name}.npy"], layout) for name, layout in listed.items()
            }
    except FastsurfaceError:
        raise
    except _DAMAGED as error:
        raise FastsurfaceError(
            f"`path` {str(source)!r} is not a readable fastsurface file (truncated or corrupt?): {error}"
        ) from error


def _check_directory(source: Path, infos: dict[str, zipfile.ZipInfo]) -> None:
    """Refuse a directory that cannot be ours or would not fit: names, sizes, ratios."""
    if f"{_METADATA}.npy" not in infos:
        raise FastsurfaceError(f"`path` {str(source)!r} is not a fastsurface file: it has no metadata entry")
    total = 0
    for name, info in infos.items():
        if not name.endswith(".npy"):
            raise FastsurfaceError(f"`path` {str(source)!r} holds an entry that is not an array: {name!r}")
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > _MAX_RATIO * max(info.compress_size, 1):
            raise FastsurfaceError(
                f"`path` {str(source)!r} entry {name!r} expands {info.file_size:,} bytes from {info.compress_size:,} "
                f"(more than {_MAX_RATIO}x): refused as a decompression bomb"
            )
        total += info.file_size
    limit = read_limit()
    if infos[f"{_METADATA}.npy"].file_size > _MAX_METADATA or total > limit:
        raise FastsurfaceError(
            f"`path` {str(source)!r} would expand to {total:,} bytes, more than the {limit:,} this process may read "
            f"(metadata at most {_MAX_METADATA:,}); it is not a surface file this machine can load"
        )


def read_limit() -> int:
    """Bytes a load may expand to (of any file format): the memory guard's share of what is free now."""
    limits = usable_bytes(torch.device("cpu"))
    return _MAX_FILE_BYTES if limits is None else min(_MAX_FILE_BYTES, limits[0] // 2)


def _listed_arrays(source: Path, metadata: dict[str, Any]) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
    """The arrays the metadata lists, by name: ``(dtype, shape)``, each checked for type."""
    listing = metadata.get("arrays")
    if not isinstance(listing, dict):
        raise FastsurfaceError(f"`path` {str(source)!r} has metadata without a valid `arrays` listing")
    layouts = {}
    for name, layout in listing.items():
        shape = layout.get("shape") if isinstance(layout, dict) else None
        dtype = layout.get("dtype") if isinstance(layout, dict) else None
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape) and isinstance(dtype, str)):
            raise FastsurfaceError(f"`path` {str(source)!r} lists array {name!r} with an invalid layout: {layout!r}")
        try:
            layouts[name] = (np.dtype(dtype), tuple(shape))
        except TypeError as error:
            raise FastsurfaceError(f"`path` {str(source)!r} lists array {name!r} with dtype {dtype!r}") from error
    return layouts


def _read_entry(
    source: Path,
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    layout: tuple[np.dtype[Any], tuple[int, ...]] | None,
) -> np.ndarray:
    """One ``.npy`` entry; its header (and ``layout``, the metadata's dtype and shape, when
    given) must account for the entry's size exactly before its data are read."""
    with archive.open(info) as stream:  # zipfile checks the entry's CRC as it reads
        version = np.lib.format.read_magic(stream)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(stream, max_header_size=_MAX_HEADER)
        if dtype.hasobject:
            raise FastsurfaceError(
                f"`path` {str(source)!r} entry {info.filename!r} holds Python objects (a pickle); "
                "fastsurface never unpickles a file"
            )
        data_bytes = math.prod(shape) * dtype.itemsize
        if stream.tell() + data_bytes != info.file_size or (layout is not None and layout != (dtype, shape)):
            raise FastsurfaceError(
                f"`path` {str(source)!r} entry {info.filename!r} claims {dtype} {shape}, which does not match "
                f"its {info.file_size:,} bytes or the metadata's listing"
            )
        values = np.frombuffer(stream.read(data_bytes), dtype=dtype)
    return (values.reshape(shape[::-1]).T if fortran else values.reshape(shape)).copy()  # own, writable memory


def _parsed_metadata(source: Path, entry: np.ndarray) -> dict[str, Any]:
    try:
        metadata = json.loads(entry.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise FastsurfaceError(f"`path` {str(source)!r} has unreadable metadata: {error}") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise FastsurfaceError(f"`path` {str(source)!r} is not a fastsurface file")
    return metadata


def _verified_metadata(source: Path, metadata: dict[str, Any], entries: dict[str, np.ndarray]) -> None:
    version = metadata.get("format_version")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise FastsurfaceError(
            f"`path` {str(source)!r} has format version {version!r}; this fastsurface reads versions 1 to "
            f"{FORMAT_VERSION} (a newer file needs a newer fastsurface)"
        )
    if metadata.get(_HASH) != _content_hash(metadata, entries):
        raise FastsurfaceError(
            f"`path` {str(source)!r} fails its content check (`{_HASH}`): it was altered or damaged after it was saved"
        )
