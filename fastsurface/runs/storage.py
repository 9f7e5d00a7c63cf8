"""Surface files: ``.npz`` archives with a JSON metadata entry, never unpickled.

A file (format version 1) is a zip archive of ``.npy`` entries that ``numpy.load(path,
allow_pickle=False)`` also reads:

- ``metadata``: UTF-8 JSON as a ``uint8`` array: ``format``, ``format_version``, the
  non-array fields of each stored object, the plane's labels and parameter names,
  ``provenance`` (package versions, plus what the caller adds: seed, ...), the list of
  array entries with dtype and shape, and ``content_sha256``;
- ``surface/w1``, ``surface/w2``, ``surface/loss_tensor`` (a ``Surface``),
  ``trajectory/w1`` ... ``trajectory/step`` (a ``Trajectory``),
  ``trajectories/positions`` ... (the arrays of a ``Trajectories``: many runs),
  ``plane/origin/<parameter>``, ``plane/first/<parameter>``, ``plane/second/<parameter>``.

``content_sha256`` hashes the metadata (without itself) and every array's name, dtype,
shape and bytes, so a truncated, corrupt or edited file is refused on load. It guards
against accidents and naive edits, not against a forger who recomputes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import zipfile
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import torch

from fastsurface._support.files import atomic_write, check_writable
from fastsurface._version import __version__
from fastsurface.errors import FastsurfaceError
from fastsurface.planes.plane import Plane
from fastsurface.results import Surface, Trajectories, Trajectory

FORMAT = "fastsurface"
FORMAT_VERSION = 1
_METADATA = "metadata"
_HASH = "content_sha256"
_KINDS: dict[str, type] = {"surface": Surface, "trajectory": Trajectory, "trajectories": Trajectories}
_PLANE_PARTS = ("origin", "first", "second")
_Stored = TypeVar("_Stored", Surface, Trajectory, Trajectories)
# A fixed entry time, so that equal contents give byte-identical files.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


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
) -> Path:
    """Write a surface, a trajectory and/or many runs' trajectories to ``path`` (``.npz``), atomically.

    Args:
        path: the file; its folder must exist. An existing file is replaced only once
            the new one is complete.
        surface, trajectory, trajectories: what to store; at least one.
        plane: the plane they were computed on, stored with its direction tensors.
        provenance: JSON-serialisable facts about the run (``seed``, data size, ...);
            the fastsurface, torch, numpy and Python versions are added.

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
    arrays: dict[str, np.ndarray | torch.Tensor] = {}
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "provenance": _provenance(provenance),
    }
    for kind, value in stored.items():
        if value is not None:
            metadata[kind] = _flatten(kind, value, arrays)
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
    source = Path(path)
    if not source.is_file():
        raise FastsurfaceError(f"`path` must be an existing file, got {str(path)!r}")
    entries = _read_archive(source)
    metadata = _verified_metadata(source, entries)
    try:
        return Saved(
            surface=_rebuild("surface", Surface, metadata, entries),
            trajectory=_rebuild("trajectory", Trajectory, metadata, entries),
            trajectories=_rebuild("trajectories", Trajectories, metadata, entries),
            plane=_rebuild_plane(metadata, entries),
            metadata=metadata,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise FastsurfaceError(f"`path` {str(path)!r} does not hold a valid fastsurface file: {error!r}") from error


def _provenance(extra: dict[str, Any] | None) -> dict[str, Any]:
    if extra is not None and not isinstance(extra, dict):
        raise FastsurfaceError(f"`provenance` must be a dict, got {type(extra).__name__}")
    facts = {
        "fastsurface_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        **(extra or {}),
    }
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
    for field in fields(value):
        item = getattr(value, field.name)
        if isinstance(item, (np.ndarray, torch.Tensor)):
            arrays[f"{kind}/{field.name}"] = item
        elif isinstance(item, np.generic):  # a NumPy scalar, e.g. a count given as np.int64
            scalars[field.name] = item.item()
        else:
            scalars[field.name] = list(item) if isinstance(item, tuple) else item
    return scalars


def _rebuild(kind: str, cls: type[_Stored], metadata: dict[str, Any], entries: dict[str, np.ndarray]) -> _Stored | None:
    if kind not in metadata:
        return None
    values: dict[str, Any] = {}
    for field in fields(cls):
        name = f"{kind}/{field.name}"
        if name in entries:
            values[field.name] = (
                torch.from_numpy(entries[name]) if metadata["arrays"][name]["tensor"] else entries[name]
            )
        elif field.name in metadata[kind]:
            stored = metadata[kind][field.name]
            values[field.name] = tuple(stored) if isinstance(stored, list) else stored
        elif field.default is MISSING:  # a field added later keeps its default in older files
            raise FastsurfaceError(f"the file's {kind} has no {field.name!r}: it is not a complete fastsurface file")
    return cls(**values)


def _rebuild_plane(metadata: dict[str, Any], entries: dict[str, np.ndarray]) -> Plane | None:
    if "plane" not in metadata:
        return None
    names = metadata["plane"]["parameters"]
    parts = [{name: torch.from_numpy(entries[f"plane/{part}/{name}"]) for name in names} for part in _PLANE_PARTS]
    origin, first, second = parts
    return Plane(origin, first, second, labels=tuple(metadata["plane"]["labels"]))


def _canonical(metadata: dict[str, Any]) -> bytes:
    return json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _content_hash(metadata: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(_canonical({key: value for key, value in metadata.items() if key != _HASH}))
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


def _read_archive(source: Path) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(source) as archive:
            return {
                info.filename.removesuffix(".npy"): _read_entry(source, archive, info) for info in archive.infolist()
            }
    except FastsurfaceError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        raise FastsurfaceError(
            f"`path` {str(source)!r} is not a readable fastsurface file (truncated or corrupt?): {error}"
        ) from error


def _read_entry(source: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    if not info.filename.endswith(".npy"):
        raise FastsurfaceError(f"`path` {str(source)!r} holds an entry that is not an array: {info.filename!r}")
    buffer = io.BytesIO(archive.read(info))  # zipfile checks the entry's CRC here
    version = np.lib.format.read_magic(buffer)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    dtype = header(buffer)[2]
    if dtype.hasobject:
        raise FastsurfaceError(
            f"`path` {str(source)!r} entry {info.filename!r} holds Python objects (a pickle); "
            "fastsurface never unpickles a file"
        )
    buffer.seek(0)
    return np.lib.format.read_array(buffer, allow_pickle=False).copy()  # own, writable memory


def _verified_metadata(source: Path, entries: dict[str, np.ndarray]) -> dict[str, Any]:
    if _METADATA not in entries:
        raise FastsurfaceError(f"`path` {str(source)!r} is not a fastsurface file: it has no metadata entry")
    try:
        metadata = json.loads(entries.pop(_METADATA).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise FastsurfaceError(f"`path` {str(source)!r} has unreadable metadata: {error}") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise FastsurfaceError(f"`path` {str(source)!r} is not a fastsurface file")
    version = metadata.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise FastsurfaceError(
            f"`path` {str(source)!r} has format version {version!r}; this fastsurface reads versions 1 to "
            f"{FORMAT_VERSION} (a newer file needs a newer fastsurface)"
        )
    if metadata.get(_HASH) != _content_hash(metadata, entries):
        raise FastsurfaceError(
            f"`path` {str(source)!r} fails its content check (`{_HASH}`): it was altered or damaged after it was saved"
        )
    if sorted(entries) != sorted(metadata.get("arrays", {})):
        raise FastsurfaceError(f"`path` {str(source)!r} holds entries its metadata does not list")
    return metadata
