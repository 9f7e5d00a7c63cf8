"""Surfaces in the field's formats (issue 17, item 8): Li et al.'s HDF5 layout, written and
read back (files written by hand in that layout too), and VTK structured grids for ParaView."""

import dataclasses
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface.cli import main
from fastsurface.runs.interchange import hdf5_surfaces
from tests.helpers import small_mlp

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def surface():
    torch.manual_seed(0)
    model = small_mlp()
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    data = (x, np.tanh(x[:, :2]))
    plane = fs.random_plane(model, seed=1)
    return fs.loss_surface(model, data, np.linspace(-1, 1, 7), np.linspace(-0.5, 1.5, 5), plane=plane)


def _li_function(x, y):
    return 1.0 + x**2 + 3.0 * x * y + np.sin(y)


def _write_li(path, x, y, values=None, shape=None, **extra):
    """A file as Li et al.'s plot_surface.py writes one: values in meshgrid(x, y) order,
    declared with shape (len(x), len(y)), a `dir_file` string beside them."""
    xx, yy = np.meshgrid(x, y)
    flat = _li_function(xx, yy).ravel() if values is None else values
    with h5py.File(path, "w") as file:
        file["dir_file"] = "directions.h5"
        file["xcoordinates"] = x
        file["ycoordinates"] = y
        file["train_loss"] = flat.reshape((len(x), len(y)) if shape is None else shape)
        file["train_acc"] = np.full((len(x), len(y)), 90.0)
        for key, value in extra.items():
            file[key] = value
    return path


def test_a_surface_comes_back_from_hdf5_as_it_went(surface, tmp_path):
    path = fs.save_hdf5(tmp_path / "s.h5", {"train_loss": surface, "test_loss": surface})
    loaded = fs.load_hdf5(path, "test_loss")
    np.testing.assert_array_equal(loaded.loss, surface.loss)
    np.testing.assert_array_equal(loaded.w1, surface.w1)
    np.testing.assert_array_equal(loaded.w2, surface.w2)
    for field in ("labels", "loss_name", "reduction", "samples", "batches", "dtype", "method", "data_description"):
        assert getattr(loaded, field) == getattr(surface, field), field
    assert math.isnan(loaded.seconds) and loaded.plane is None
    assert hdf5_surfaces(path) == ["test_loss", "train_loss"]


def test_the_file_is_in_li_et_als_layout(surface, tmp_path):
    path = fs.save_hdf5(tmp_path / "s.h5", surface)
    with h5py.File(path, "r") as file:
        x, y, values = file["xcoordinates"][()], file["ycoordinates"][()], file["train_loss"][()]
    xx, yy = np.meshgrid(x, y)  # as Li et al.'s plot_2D.py and h52vtp.py read it
    assert values.shape == xx.shape == (5, 7)
    for row, column in np.ndindex(values.shape):
        i, j = np.flatnonzero(surface.w1 == xx[row, column])[0], np.flatnonzero(surface.w2 == yy[row, column])[0]
        assert values[row, column] == surface.loss[i, j]


@pytest.mark.parametrize("declared", ["li", "meshgrid"])
def test_a_file_written_by_hand_in_li_et_als_layout_is_read_at_the_right_points(tmp_path, declared):
    x, y = np.linspace(-1, 1, 6), np.linspace(-2, 0, 4)  # not square: the order matters
    shape = None if declared == "li" else (len(y), len(x))
    loaded = fs.load_hdf5(_write_li(tmp_path / "li.h5", x, y, shape=shape))
    np.testing.assert_array_equal(loaded.loss, _li_function(x[:, None], y[None, :]))
    assert (loaded.labels, loaded.loss_name, loaded.method, loaded.samples) == (
        ("x", "y"),
        "train_loss",
        "loss-landscape",
        0,
    )
    assert hdf5_surfaces(tmp_path / "li.h5") == ["train_acc", "train_loss"]  # dir_file is no surface
    np.testing.assert_array_equal(fs.load_hdf5(tmp_path / "li.h5", "train_acc").loss, np.full((6, 4), 90.0))
    assert fs.plot_contour(loaded).data  # the views take it


def test_show_prints_every_surface_of_an_hdf5_file(tmp_path, capsys):
    path = _write_li(tmp_path / "li.h5", np.linspace(-1, 1, 3), np.linspace(0, 1, 3))
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 surface(s)" in out and "surface   train_acc" in out and "surface   train_loss" in out
    lowest = _li_function(np.linspace(-1, 1, 3)[:, None], np.linspace(0, 1, 3)[None]).min()
    assert f"lowest    loss {lowest:.6g} at x=-1, y=1" in out


SQUARE = np.arange(3.0)
FIELDS = {"labels": ["a", "b"], "loss_name": "l", "reduction": "mean", "device": "cpu", "dtype": "float64"}
FIELDS |= {"samples": "many", "batches": 0, "method": "m", "tile_points": 0}
# name: (x axis as written, a change to the written file, what the refusal names)
BAD_FILES = {
    "no-y": (SQUARE, lambda f: f.__delitem__("ycoordinates"), "ycoordinates"),
    "unsorted": (np.array([0.0, 2.0, 1.0]), None, "strictly increasing"),
    "nan-axis": (np.array([0.0, np.nan, 1.0]), None, "finite"),
    "2-d-axis": (SQUARE, lambda f: _replace(f, "xcoordinates", np.zeros((3, 1))), "1-D"),
    "text-axis": (SQUARE, lambda f: _replace(f, "xcoordinates", np.array([b"a", b"b", b"c"])), "real numbers"),
    "wrong-size": (SQUARE, lambda f: _replace(f, "train_loss", np.zeros((3, 4))), "not the 9"),
    "wrong-shape": (SQUARE, lambda f: _replace(f, "train_loss", np.zeros(9)), "must have shape"),
    "complex": (SQUARE, lambda f: _replace(f, "train_loss", np.zeros((3, 3), complex)), "real numbers"),
    "group": (SQUARE, lambda f: (f.__delitem__("train_loss"), f.create_group("train_loss")), "as a dataset"),
    "bad-json": (SQUARE, lambda f: f["train_loss"].attrs.__setitem__("fastsurface", "{"), "not JSON"),
    "bad-field": (SQUARE, lambda f: f["train_loss"].attrs.__setitem__("fastsurface", json.dumps(FIELDS)), "samples"),
    "empty-axis": (SQUARE, lambda f: _replace(f, "xcoordinates", h5py.Empty("f8")), "empty"),
    "empty-surface": (SQUARE, lambda f: _replace(f, "train_loss", h5py.Empty("f8")), "empty"),
}


def _replace(file, key, value):
    del file[key]
    file[key] = value


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_hdf5_files_are_refused_naming_the_field(tmp_path, case):
    x, damage, named = BAD_FILES[case]
    path = _write_li(tmp_path / "bad.h5", x, SQUARE)
    if damage is not None:
        with h5py.File(path, "r+") as file:
            damage(file)
    with pytest.raises(fs.FastsurfaceError, match=named):
        fs.load_hdf5(path)


def test_an_empty_dataset_is_not_listed_as_a_surface(tmp_path):
    path = _write_li(tmp_path / "li.h5", SQUARE, SQUARE, nothing=h5py.Empty("f8"))
    assert hdf5_surfaces(path) == ["train_acc", "train_loss"]


@pytest.mark.parametrize(
    "error",
    [
        TypeError("Unknown string encoding (value 14)"),
        ValueError("Insufficient precision in available types to represent (63, 52, 11, 0, 52)"),
        RuntimeError("Unable to synchronously check link existence (unable to offset into local heap data block)"),
        KeyError("Unable to synchronously open object (bad object header version number)"),
        OSError("Unable to synchronously read data (wrong B-tree signature)"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_what_h5py_raises_on_a_damaged_file_is_refused_naming_the_file(surface, tmp_path, monkeypatch, error):
    """What h5py raised on byte flips of a file ``save_hdf5`` wrote (found by fuzzing)."""
    path = fs.save_hdf5(tmp_path / "s.h5", surface)

    def damaged(*args, **kwargs):
        raise error

    monkeypatch.setattr(h5py.Dataset, "__getitem__", damaged)
    for read in (fs.load_hdf5, hdf5_surfaces):
        with pytest.raises(fs.FastsurfaceError, match=f"`path` {re.escape(repr(str(path)))} is not a readable HDF5"):
            read(path)


FLIPPED = """
import sys
import fastsurface as fs
try:
    fs.load_hdf5(sys.argv[1])
except fs.FastsurfaceError as error:
    print("refused:", error)
"""


@pytest.mark.multiprocess
@pytest.mark.parametrize("offset", [753, 873, 1113, 1914])
def test_a_file_with_a_flipped_byte_loads_or_is_refused(tmp_path, offset):
    """Byte flips of this file that made h5py raise TypeError, ValueError or RuntimeError; each
    in its own process, as another flip (1913) crashes HDF5 itself, which no caller can catch."""
    surface = fs.loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(100), fs.axis(-2, 2, 1), fs.axis(-2, 2, 1))
    raw = bytearray(fs.save_hdf5(tmp_path / "s.h5", surface).read_bytes())
    raw[offset] ^= 0xFF
    (tmp_path / "s.h5").write_bytes(bytes(raw))
    done = subprocess.run([sys.executable, "-c", FLIPPED, str(tmp_path / "s.h5")], capture_output=True, text=True)
    if done.returncode < 0:  # another HDF5 lays the file out otherwise, and the flip hit a spot it crashes on
        pytest.skip(f"HDF5 itself was killed by signal {-done.returncode}; no caller can catch that")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_other_bad_reads_and_writes_are_refused(surface, tmp_path, monkeypatch):
    (tmp_path / "not.h5").write_bytes(b"not an HDF5 file at all")
    with pytest.raises(fs.FastsurfaceError, match="not a readable HDF5 file"):
        fs.load_hdf5(tmp_path / "not.h5")
    path = _write_li(tmp_path / "li.h5", np.arange(3.0), np.arange(3.0))
    with pytest.raises(
        fs.FastsurfaceError, match=r"'test_loss' is not in .*its surfaces: dir_file, train_acc, train_loss"
    ):
        fs.load_hdf5(path, "test_loss")
    with pytest.raises(fs.FastsurfaceError, match=r"`path` must end in \.h5 or \.hdf5"):
        fs.save_hdf5(tmp_path / "s.npz", surface)
    shifted = fs.loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(20), [0.0, 1.0], [0.0, 2.0])
    with pytest.raises(fs.FastsurfaceError, match="other axes"):
        fs.save_hdf5(tmp_path / "s.h5", {"train_loss": surface, "test_loss": shifted})
    with pytest.raises(fs.FastsurfaceError, match="name of an axis"):
        fs.save_hdf5(tmp_path / "s.h5", surface, name="xcoordinates")
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if the extra were not installed
    with pytest.raises(fs.FastsurfaceError, match=r"pip install 'fastsurface\[hdf5\]'"):
        fs.save_hdf5(tmp_path / "s.h5", surface)
    assert not (tmp_path / "s.h5").exists()


COMPONENTS = "NumberOfComponents"


def _parsed_vtk(path):
    root = ElementTree.parse(path).getroot()
    grid = root.find("StructuredGrid")
    arrays = {
        array.get("Name"): np.array(array.text.split(), dtype=np.float64).reshape(
            -1, int(array.get("NumberOfComponents"))
        )
        for array in root.iter("DataArray")
    }
    return root.get("type"), grid.get("WholeExtent"), arrays


def test_vtk_holds_the_surface_as_a_structured_grid(surface, tmp_path):
    kind, extent, arrays = _parsed_vtk(fs.save_vtk(tmp_path / "s.vts", surface))
    assert (kind, extent) == ("StructuredGrid", "0 6 0 4 0 0")
    points = arrays["Points"]
    for i, j in np.ndindex(surface.loss.shape):  # point i + n1 * j, bit for bit through the decimal text
        assert tuple(points[i + 7 * j]) == (surface.w1[i], surface.w2[j], surface.loss[i, j])
    np.testing.assert_array_equal(arrays["loss"][:, 0], points[:, 2])
    assert "vtkGhostType" not in arrays


def test_vtk_hides_non_finite_losses(surface, tmp_path):
    loss = surface.loss.copy()
    loss[2, 3], loss[0, 0] = np.nan, np.inf
    holed = dataclasses.replace(surface, loss_tensor=torch.from_numpy(loss))
    _, _, arrays = _parsed_vtk(fs.save_vtk(tmp_path / "s.vts", holed))
    ghosts = arrays["vtkGhostType"][:, 0]
    assert ghosts[2 + 7 * 3] == ghosts[0] == 2 and ghosts.sum() == 4
    assert arrays["Points"][0, 2] == np.nanmin(np.where(np.isfinite(loss), loss, np.nan))
    with pytest.raises(fs.FastsurfaceError, match=r"`path` must end in \.vts"):
        fs.save_vtk(tmp_path / "s.vtk", surface)
