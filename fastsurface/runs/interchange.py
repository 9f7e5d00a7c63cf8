"""Surfaces in the field's file formats: Li et al.'s HDF5 layout, and VTK for ParaView.

**HDF5, Li et al.'s layout** (``tomgoldstein/loss-landscape``, whose ``plot_2D.py`` and
``h52vtp.py`` read it): datasets ``xcoordinates`` ``(nx,)`` and ``ycoordinates`` ``(ny,)``
beside one dataset per surface, named ``train_loss``, ``train_acc``, ``test_loss``,
``test_acc`` or anything else. Its values are in the order of ``numpy.meshgrid(x, y)``
flattened, the order in which that code computes them: the value at ``(x[i], y[j])`` is at
flat position ``j * nx + i``. Its readers take the dataset as ``Z[j, i]``, shape ``(ny,
nx)``, which is what ``save_hdf5`` writes (``surface.loss.T``); its own writer declares the
shape ``(nx, ny)``, the same thing for the square grids it is used with, and ``load_hdf5``
reads either shape by that flat order. fastsurface's own fields (labels, loss name,
reduction, counts, data description) ride along as a JSON attribute ``fastsurface`` of each
dataset, which Li et al.'s code ignores; a file without them loads with neutral defaults.
Needs ``h5py`` (``pip install 'fastsurface[hdf5]'``).

**VTK** (``save_vtk``): an XML ``StructuredGrid`` (``.vts``) whose points are ``(w1, w2,
loss)``, so ParaView shows the surface in 3-D as it opens, with the loss as point data
``loss`` for colouring. Li et al.'s ``h52vtp`` writes polygon data (``.vtp``) listing every
quadrilateral; a structured grid says the same with its extent alone, ParaView reads it
natively, and it is plain XML that fastsurface writes itself, with no dependency.
Non-finite losses have no height: their points are hidden (VTK's ``vtkGhostType``, hidden
point) and drawn at the lowest finite loss.

Every file is written atomically (``fastsurface._support.files``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastsurface._support.files import atomic_write, atomic_write_text, check_readable, check_writable
from fastsurface.engine.axes import axis_problem
from fastsurface.errors import FastsurfaceError
from fastsurface.results import Surface
from fastsurface.runs.storage import read_limit, surface_fields, surface_from_fields

X, Y = "xcoordinates", "ycoordinates"
# The JSON attribute holding fastsurface's own fields of a surface.
_FIELDS = "fastsurface"
_HDF5_SUFFIXES = (".h5", ".hdf5")
# VTK's ghost-point flag for a hidden point (vtkDataSetAttributes::HIDDENPOINT).
_HIDDEN_POINT = 2


def save_hdf5(
    path: str | os.PathLike[str], surfaces: Surface | Mapping[str, Surface], *, name: str = "train_loss"
) -> Path:
    """Write surfaces in Li et al.'s HDF5 layout (see the module's description), atomically.

    Args:
        path: the file, ``.h5`` or ``.hdf5``; its folder must exist.
        surfaces: one ``Surface``, stored as ``name``, or several by dataset name (e.g.
            ``{"train_loss": loss, "train_acc": accuracy}``) on the same axes.
        name: the dataset of a single surface.

    Returns:
        The path written.
    """
    target = check_writable("path", path, _HDF5_SUFFIXES)
    if not isinstance(name, str) or not name:
        raise FastsurfaceError(f"`name` must be a non-empty dataset name (a string), got {name!r:.100}")
    named = (
        {name: surfaces} if isinstance(surfaces, Surface) else dict(surfaces) if isinstance(surfaces, Mapping) else {}
    )
    if not named or not all(isinstance(key, str) and key for key in named):
        raise FastsurfaceError(
            f"`surfaces` must be a Surface or a mapping of dataset names to Surfaces, got {type(surfaces).__name__}"
        )
    first = next(iter(named.values()))
    for key, surface in named.items():
        if not isinstance(surface, Surface):
            raise FastsurfaceError(f"`surfaces`: {key!r} must be a fastsurface Surface, got {type(surface).__name__}")
        if key in (X, Y):
            raise FastsurfaceError(f"`surfaces`: {key!r} is the name of an axis in this layout; name the surface else")
        if not (np.array_equal(surface.w1, first.w1) and np.array_equal(surface.w2, first.w2)):
            raise FastsurfaceError(f"`surfaces`: {key!r} has other axes than the first surface; one file, one grid")
    # Without wall-clock seconds, as `save` keeps them out: equal work, equal files.
    fields = {key: json.dumps(_without_seconds(surface_fields(surface))) for key, surface in named.items()}
    h5py = _h5py()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        file[X] = np.asarray(first.w1, dtype=np.float64)
        file[Y] = np.asarray(first.w2, dtype=np.float64)
        for key, surface in named.items():
            file[key] = np.ascontiguousarray(surface.loss.T, dtype=np.float64)
            file[key].attrs[_FIELDS] = fields[key]
    atomic_write(target, lambda out: out.write(buffer.getbuffer()))
    return target


def load_hdf5(path: str | os.PathLike[str], name: str = "train_loss") -> Surface:
    """Read one surface of a file in Li et al.'s HDF5 layout, checking every field.

    Refused with ``FastsurfaceError``: a file that is not HDF5 or that h5py cannot read
    (damaged); missing, non-numeric, empty (null dataspace),
    non-1-D, non-finite or unsorted (not strictly increasing) coordinates; a missing
    dataset ``name`` (the message lists those there are); values that are not real
    numbers or whose shape is neither ``(ny, nx)`` nor ``(nx, ny)``; more data than this
    process may read; a ``fastsurface`` attribute whose fields do not check.

    Args:
        path: the file.
        name: the dataset, e.g. ``"train_loss"`` or ``"test_acc"``.

    Returns:
        A ``Surface`` with ``w1 = xcoordinates``, ``w2 = ycoordinates`` and ``loss`` of
        shape ``(nx, ny)``. Without fastsurface's fields: labels ``("x", "y")``, loss name
        ``name``, reduction ``"mean"`` (Li et al. average over samples), method
        ``"loss-landscape"``, device ``"cpu"``, dtype ``"float64"`` (values are read as
        float64), counts 0 (unknown), ``seconds`` NaN.
    """
    source = check_readable("path", path)
    if not isinstance(name, str) or not name:
        raise FastsurfaceError(f"`name` must be a dataset name, got {name!r}")
    with _hdf5_file(source) as file:
        w1, w2 = (_coordinates(source, file, key) for key in (X, Y))
        values, attribute = _values(source, file, name, (len(w1), len(w2)))
    loss = values.reshape(len(w2), len(w1)).T.copy()  # meshgrid order: x varies fastest
    return surface_from_fields(_fields(source, name, attribute, values.dtype), w1, w2, loss, blame="path")


def hdf5_surfaces(path: str | os.PathLike[str]) -> list[str]:
    """The names of the datasets of an HDF5 file in Li et al.'s layout that hold surfaces:
    real numbers, as many as the axes make (``dir_file``, a string, is left out)."""
    source = check_readable("path", path)
    h5py = _h5py()
    with _hdf5_file(source) as file:
        sizes = [len(_coordinates(source, file, key)) for key in (X, Y)]
        return sorted(
            key
            for key, item in file.items()
            if key not in (X, Y)
            and isinstance(item, h5py.Dataset)
            and item.dtype.kind in "fiu"
            and item.shape is not None
            and math.prod(item.shape) == math.prod(sizes)
        )


def save_vtk(path: str | os.PathLike[str], surface: Surface) -> Path:
    """Write ``surface`` as a VTK XML structured grid (``.vts``) for ParaView, atomically.

    Point ``i + n1 * j`` is ``(w1[i], w2[j], loss[i, j])``; the point data ``loss`` holds
    the loss again, for colouring; non-finite losses are hidden points (see the module's
    description). Values are written as decimal text with 17 significant digits, so they
    read back as the same float64 numbers.

    Returns:
        The path written.
    """
    target = check_writable("path", path, (".vts",))
    if not isinstance(surface, Surface):
        raise FastsurfaceError(f"`surface` must be a fastsurface Surface, got {type(surface).__name__}")
    loss = surface.loss.T.ravel()  # w1 varies fastest, as VTK's first extent
    finite = np.isfinite(loss)
    height = np.where(finite, loss, loss[finite].min() if finite.any() else 0.0)
    first, second = np.meshgrid(surface.w1, surface.w2)
    points = np.stack([first.ravel(), second.ravel(), height], axis=1)
    n1, n2 = len(surface.w1), len(surface.w2)
    extent = f"0 {n1 - 1} 0 {n2 - 1} 0 0"
    ghosts = (
        ""
        if finite.all()
        else _data_array("UInt8", "vtkGhostType", 1, np.where(finite, 0, _HIDDEN_POINT).astype(np.uint8), "%d")
    )
    text = (
        '<?xml version="1.0"?>\n'
        '<VTKFile type="StructuredGrid" version="1.0" byte_order="LittleEndian">\n'
        f"  <!-- fastsurface: {_xml_text(surface.labels[0])} and {_xml_text(surface.labels[1])} on x and y, "
        f"{_xml_text(surface.loss_name)} ({surface.reduction}) on z -->\n"
        f'  <StructuredGrid WholeExtent="{extent}">\n'
        f'    <Piece Extent="{extent}">\n'
        '      <PointData Scalars="loss">\n'
        f"{_data_array('Float64', 'loss', 1, height, '%.17g')}{ghosts}"
        "      </PointData>\n"
        "      <Points>\n"
        f"{_data_array('Float64', 'Points', 3, points, '%.17g')}"
        "      </Points>\n"
        "    </Piece>\n"
        "  </StructuredGrid>\n"
        "</VTKFile>\n"
    )
    atomic_write_text(target, text)
    return target


def _without_seconds(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if key != "seconds"}


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as error:
        raise FastsurfaceError(
            "HDF5 files need h5py, an optional dependency: pip install 'fastsurface[hdf5]'"
        ) from error
    return h5py


@contextlib.contextmanager
def _hdf5_file(source: Path) -> Iterator[Any]:
    """``source`` open for reading. What h5py raises on a file that is not HDF5 (``OSError``)
    or on a damaged one, from deeper in the library (``TypeError``, ``ValueError``,
    ``RuntimeError``, ``KeyError``: what byte flips of a saved file gave), is refused naming
    the file; fastsurface's own refusals pass through as they are. A flip that crashes HDF5
    itself (a segmentation fault) or sends it into an endless loop is beyond any caller's reach."""
    h5py = _h5py()
    try:
        with h5py.File(source, "r") as file:
            yield file
    except FastsurfaceError:
        raise
    except (OSError, TypeError, ValueError, RuntimeError, KeyError) as error:
        raise FastsurfaceError(
            f"`path` {str(source)!r} is not a readable HDF5 file (damaged?): {type(error).__name__}: {error}"
        ) from error


def _coordinates(source: Path, file: Any, key: str) -> np.ndarray:
    """A coordinate dataset: real numbers forming an axis (``axes.axis_problem``: the rule
    of fastsurface's own files, so a surface read here saves, and one saved there reads here)."""
    values = _dataset(source, file, key, f"{key} (an axis of the grid)").astype(np.float64)
    problem = axis_problem(values)
    if problem is not None:
        raise FastsurfaceError(f"`path` {str(source)!r}: {key} {problem}")
    return values


def _values(source: Path, file: Any, name: str, sizes: tuple[int, int]) -> tuple[np.ndarray, object]:
    """Dataset ``name``'s values (checked against the axes' sizes) and its fastsurface attribute."""
    if name not in file:
        known = sorted(key for key in file if key not in (X, Y))
        raise FastsurfaceError(f"`name` {name!r} is not in {str(source)!r}; its surfaces: {', '.join(known) or 'none'}")
    nx, ny = sizes
    values = _dataset(source, file, name, f"the surface {name!r}", expected=nx * ny)
    if values.shape not in ((ny, nx), (nx, ny)):
        raise FastsurfaceError(
            f"`path` {str(source)!r}: {name} must have shape ({ny}, {nx}) (or ({nx}, {ny}), as Li et al.'s code "
            f"declares it) for {nx} xcoordinates and {ny} ycoordinates, got {values.shape}"
        )
    return values.astype(np.float64).ravel(), file[name].attrs.get(_FIELDS)


def _dataset(source: Path, file: Any, key: str, what: str, expected: int | None = None) -> np.ndarray:
    """A dataset of real numbers, its size checked before it is read."""
    h5py = _h5py()
    item = file.get(key)
    if not isinstance(item, h5py.Dataset):
        raise FastsurfaceError(f"`path` {str(source)!r} must hold {what} as a dataset {key!r}; it has none")
    if item.dtype.kind not in "fiu":
        raise FastsurfaceError(f"`path` {str(source)!r}: {key} must hold real numbers, got dtype {item.dtype}")
    if item.shape is None:  # h5py.Empty: a null dataspace, no values at all
        raise FastsurfaceError(f"`path` {str(source)!r}: {key} must hold values, got an empty (null) dataset")
    size = math.prod(item.shape)
    if (expected is not None and size != expected) or size * 8 > read_limit():
        raise FastsurfaceError(
            f"`path` {str(source)!r}: {key} holds {size:,} values"
            + (f", not the {expected:,} its axes make" if expected is not None and size != expected else "")
            + ("; more than this process may read" if size * 8 > read_limit() else "")
        )
    return np.asarray(item[()])


def _fields(source: Path, name: str, attribute: object, dtype: np.dtype[Any]) -> dict[str, Any]:
    """fastsurface's fields of the surface: from its attribute, else neutral defaults."""
    if attribute is None:
        return {
            "labels": ["x", "y"],
            "loss_name": name,
            "reduction": "mean",
            "device": "cpu",
            "dtype": str(dtype),
            "samples": 0,
            "batches": 0,
            "method": "loss-landscape",
            "tile_points": 0,
        }
    try:
        fields = json.loads(attribute.decode() if isinstance(attribute, bytes) else str(attribute))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise FastsurfaceError(f"`path` {str(source)!r}: {name}'s {_FIELDS} attribute is not JSON: {error}") from error
    if not isinstance(fields, dict):
        raise FastsurfaceError(f"`path` {str(source)!r}: {name}'s {_FIELDS} attribute must be a JSON object")
    return fields


def _data_array(kind: str, name: str, components: int, values: np.ndarray, number: str) -> str:
    body = io.StringIO()
    np.savetxt(body, np.asarray(values).reshape(-1, components), fmt=number)
    return (
        f'        <DataArray type="{kind}" Name="{name}" NumberOfComponents="{components}" format="ascii">\n'
        f"{body.getvalue()}        </DataArray>\n"
    )


def _xml_text(text: str) -> str:
    """``text`` safe inside an XML comment (no ``--``, no markup)."""
    return text.replace("--", "- -").replace("<", "&lt;").replace(">", "&gt;")
