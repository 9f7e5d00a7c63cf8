"""Files you can trust at any size: refusal before reading, the same rules for save and load,
equal work in equal bytes, and no stale temporaries (issue: Reliability II)."""

import dataclasses
import io
import json
import math
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface._support import files
from fastsurface.runs import storage


@pytest.fixture(scope="module")
def surface():
    return fs.loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(100), fs.axis(0, 1, 0.25), fs.axis(0, 1, 0.5))


@pytest.fixture
def saved(tmp_path, surface):
    return fs.save(tmp_path / "s.npz", surface=surface, plane=fs.default_plane(fs.ANN(1, 1, 1)))


def _entries(path):
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _metadata(path):
    return json.loads(np.load(io.BytesIO(_entries(path)["metadata.npy"])).tobytes())


def _rewritten(path, metadata, sign=True, arrays=None):
    """``path`` with its metadata replaced, and the entries of ``arrays`` (by name) with their
    listing; its content hash recomputed (re-signed) unless not ``sign``."""
    entries = _entries(path)
    for name, array in (arrays or {}).items():
        entries[f"{name}.npy"] = _npy(array)
        listed = {**metadata["arrays"][name], "dtype": array.dtype.str, "shape": list(array.shape)}
        metadata = {**metadata, "arrays": {**metadata["arrays"], name: listed}}
    if sign:
        stored = {name.removesuffix(".npy"): np.load(io.BytesIO(raw)) for name, raw in entries.items()}
        del stored["metadata"]
        metadata = {**metadata, "content_sha256": storage._content_hash(metadata, stored)}
    entries["metadata.npy"] = _npy(np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8))
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in entries.items():
            archive.writestr(name, raw)
    return path


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


BOMB = """
import resource, sys, time, zipfile
import fastsurface as fs
from fastsurface.runs import storage  # the engine's libraries load before the limit is set
path = sys.argv[1]
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + 512 * 2**20, resource.RLIM_INFINITY))
started = time.perf_counter()
try:
    fs.load(path)
except fs.FastsurfaceError as error:
    print(f"refused in {time.perf_counter() - started:.3f} s: {error}")
"""


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_decompression_bomb_is_refused_from_the_zip_directory_within_bounded_memory(saved):
    zeros = bytes(16 * 2**20)
    with (
        zipfile.ZipFile(saved, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("extra.npy", "w", force_zip64=True) as entry,
    ):
        for _ in range(64):  # 1 GiB of zeros, a few MB on disk
            entry.write(zeros)
    assert saved.stat().st_size < 8 * 2**20
    done = subprocess.run([sys.executable, "-c", BOMB, str(saved)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # under a 512 MiB address-space margin, no MemoryError
    assert "refused in" in done.stdout and "decompression bomb" in done.stdout


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_lying_npy_header_is_refused_before_its_data_are_read(saved):
    entries = _entries(saved)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    entries["surface/w1.npy"] = header.getvalue() + bytes(64)
    with zipfile.ZipFile(saved, "w") as archive:
        for name, raw in entries.items():
            archive.writestr(name, raw)
    assert saved.stat().st_size < 8192
    done = subprocess.run([sys.executable, "-c", BOMB, str(saved)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused in" in done.stdout and "does not match" in done.stdout


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: {**m, "surface": [1, 2]}, id="list-for-a-dict"),
        pytest.param(lambda m: {**m, "surface": {**m["surface"], "samples": "100"}}, id="string-count"),
        pytest.param(lambda m: {**m, "surface": {**m["surface"], "train_mode": 1}}, id="number-for-a-bool"),
        pytest.param(lambda m: {**m, "surface": {**m["surface"], "labels": ["w1", 2]}}, id="number-label"),
        pytest.param(lambda m: {**m, "format_version": True}, id="bool-version"),
        pytest.param(lambda m: {**m, "arrays": []}, id="list-of-arrays"),
        pytest.param(
            lambda m: {**m, "arrays": {**m["arrays"], "surface/w1": {"dtype": "<f8", "shape": "4"}}}, id="string-shape"
        ),
        pytest.param(
            lambda m: {**m, "plane": {"labels": [1, 2], "parameters": m["plane"]["parameters"]}}, id="plane-labels"
        ),
        pytest.param(lambda m: {**m, "plane": "w1"}, id="plane-string"),
        pytest.param(lambda m: {**m, "timing": {"surface.seconds": "fast"}}, id="string-seconds"),
    ],
)
def test_re_signed_metadata_of_the_wrong_type_is_refused_cleanly(saved, change):
    _rewritten(saved, change(_metadata(saved)))
    with pytest.raises(fs.FastsurfaceError, match="path"):
        fs.load(saved)


def test_save_refuses_what_load_would_refuse(tmp_path, surface):
    misshapen = dataclasses.replace(surface, loss_tensor=surface.loss_tensor[:, :1])
    with pytest.raises(fs.FastsurfaceError, match=r"`surface`.*shape"):
        fs.save(tmp_path / "bad.npz", surface=misshapen)
    with pytest.raises(fs.FastsurfaceError, match=r"`surface`.*labels"):
        fs.save(tmp_path / "bad.npz", surface=dataclasses.replace(surface, labels=(1, 2)))
    with pytest.raises(fs.FastsurfaceError, match=r"`surface`.*samples"):
        fs.save(tmp_path / "bad.npz", surface=dataclasses.replace(surface, samples=2.5))
    plane = fs.default_plane(fs.ANN(1, 1, 1))
    with pytest.raises(fs.FastsurfaceError, match="`plane`"):
        fs.save(tmp_path / "bad.npz", surface=surface, plane=dataclasses.replace(plane, labels=(None, "w2")))
    with pytest.raises(fs.FastsurfaceError, match="`provenance`"):
        fs.save(tmp_path / "bad.npz", surface=surface, provenance={"fastsurface_version": "9.9"})
    assert not any(tmp_path.iterdir())


def test_equal_work_gives_equal_bytes_and_timings_stay_outside_the_content(tmp_path):
    data = fs.piecewise_dataset(100)
    runs = [fs.loss_surface(fs.ANN(1, 1, 1), data, fs.axis(0, 1, 0.25), fs.axis(0, 1, 0.5)) for _ in range(2)]
    written = [fs.save(tmp_path / f"{i}.npz", surface=run) for i, run in enumerate(runs)]
    assert written[0].read_bytes() == written[1].read_bytes()
    assert np.isnan(fs.load(written[0]).surface.seconds)
    timed = [fs.save(tmp_path / f"timed{i}.npz", surface=run, timing=True) for i, run in enumerate(runs)]
    assert [fs.load(path).surface.seconds for path in timed] == [run.seconds for run in runs]
    assert len({_metadata(path)["content_sha256"] for path in (*written, *timed)}) == 1


def test_stale_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path, monkeypatch):
    target = tmp_path / "figure.html"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".figure.html.fastsurface-{dead.stdout.strip()}-abc123.tmp"
    alive = tmp_path / f".figure.html.fastsurface-{os.getppid()}-def456.tmp"  # a running process's: kept
    foreign = tmp_path / ".figure.html.tmp"  # not ours by name: kept
    for path in (stale, alive, foreign):
        path.write_bytes(b"x" * 1000)
        os.utime(path, (files._STARTED - 60, files._STARTED - 60))
    files.atomic_write_text(target, "done")
    assert target.read_text() == "done"
    assert not stale.exists() and alive.exists() and foreign.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, alive.name, foreign.name])


def test_a_temporary_newer_than_this_process_is_left_alone(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    fresh = tmp_path / f".out.html.fastsurface-{dead.stdout.strip()}-abc123.tmp"
    fresh.write_bytes(b"x")  # written after this process started: maybe a writer we cannot see
    files.atomic_write_text(tmp_path / "out.html", "done")
    assert fresh.exists()


def test_a_symbolic_link_is_written_through(tmp_path):
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    fs.save(link, surface=fs.loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(50), [0.0, 1.0], [1.0]))
    assert link.is_symlink() and fs.load(target).surface.loss.shape == (2, 1)


def test_a_name_too_long_for_its_temporary_is_refused_before_any_work(tmp_path):
    longest = os.pathconf(tmp_path, "PC_NAME_MAX")
    name = "s" * (longest - 10) + ".npz"
    with pytest.raises(fs.FastsurfaceError, match="too long"):
        files.check_writable("path", tmp_path / name, (".npz",))
    with pytest.raises(fs.FastsurfaceError, match="empty"):
        files.check_writable("output", "", (".html",))


def test_a_plain_numpy_reader_still_reads_every_entry(saved, surface):
    with np.load(saved, allow_pickle=False) as archive:
        assert np.array_equal(archive["surface/loss_tensor"], surface.loss)
    assert torch.equal(fs.load(saved).surface.loss_tensor, surface.loss_tensor.cpu())


# One byte of a zip central-directory record (its offset there, the new value) that zipfile
# cannot read past: a compression method or zip version it does not know (NotImplementedError),
# the flags of patched data or strong encryption (NotImplementedError), of encryption (RuntimeError).
ZIP_DAMAGE = {
    "compression-method": (10, lambda byte: 99),
    "zip-version": (6, lambda byte: 200),
    "patched-data-flag": (8, lambda byte: byte | 0x20),
    "strong-encryption-flag": (8, lambda byte: byte | 0x40),
    "encryption-flag": (8, lambda byte: byte | 0x01),
}


def damage_zip_directory(path, case):
    """``path`` with one byte of its first central-directory record changed as ``ZIP_DAMAGE[case]`` says."""
    offset, change = ZIP_DAMAGE[case]
    raw = bytearray(path.read_bytes())
    where = raw.index(b"PK\x01\x02") + offset
    raw[where] = change(raw[where])
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("case", sorted(ZIP_DAMAGE))
def test_an_archive_zipfile_cannot_read_is_refused_as_corrupt(saved, case):
    damage_zip_directory(saved, case)
    with pytest.raises(fs.FastsurfaceError, match=r"`path` .* \(truncated or corrupt\?\)"):
        fs.load(saved)


# Values of a surface's fields that no computation gives (field, value or a function of the
# surface, what the refusal names): their types are right, so only a check of values catches them.
IMPOSSIBLE_VALUES = {
    "w1-decreasing": ("w1", lambda s: s.w1[::-1].copy(), "w1 must be strictly increasing"),
    "w1-repeated": ("w1", lambda s: np.full_like(s.w1, 0.5), "w1 must be strictly increasing"),
    "w1-nan": ("w1", lambda s: np.full_like(s.w1, np.nan), "w1 must hold finite values only"),
    "w2-integers": ("w2", lambda s: np.arange(len(s.w2)), "w2 must hold floating-point numbers"),
    "integer-loss": ("loss_tensor", lambda s: torch.zeros(s.loss.shape, dtype=torch.int32), "loss_tensor must hold"),
    "reduction-sum": ("reduction", "sum", "reduction must be one of"),
    "device-meta": ("device", "meta", "device must name a device"),
    "device-unknown": ("device", "abacus", "device must name a device"),
    "dtype-complex": ("dtype", "complex64", "dtype must be 'float32' or 'float64'"),
    "negative-samples": ("samples", -5, "samples must be a count"),
    "negative-batches": ("batches", -1, "batches must be a count"),
    "negative-tile-points": ("tile_points", -1, "tile_points must be a count"),
    "negative-seconds": ("seconds", -5.0, "seconds must be NaN"),
}


def _impossible(surface, case):
    field, value, named = IMPOSSIBLE_VALUES[case]
    return field, value(surface) if callable(value) else value, named


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE_VALUES))
def test_values_no_computation_gives_are_refused_by_save_and_in_a_re_signed_file(tmp_path, saved, surface, case):
    field, value, named = _impossible(surface, case)
    with pytest.raises(fs.FastsurfaceError, match=f"`surface`: the surface's {named}"):
        fs.save(tmp_path / "bad.npz", surface=dataclasses.replace(surface, **{field: value}))
    assert not (tmp_path / "bad.npz").exists()
    metadata = _metadata(saved)
    if isinstance(value, (np.ndarray, torch.Tensor)):
        _rewritten(saved, metadata, arrays={f"surface/{field}": np.asarray(value)})
    else:
        _rewritten(saved, {**metadata, "surface": {**metadata["surface"], field: value}})
    with pytest.raises(fs.FastsurfaceError, match=f"`path`.*{named}"):
        fs.load(saved)


@pytest.mark.parametrize(
    ("timing", "named"),
    [
        ({"surface.seconds": -5.0}, r"timing surface\.seconds must be NaN \(not recorded\) or a time from 0"),
        ({"surface.seconds": math.inf}, r"timing surface\.seconds must be NaN \(not recorded\) or a time from 0"),
        ({"surface.seconds": 1e300}, r"timing surface\.seconds must be NaN \(not recorded\) or a time from 0"),
        ([12.5], "timing must be a JSON object"),
    ],
    ids=["negative", "infinite", "absurd", "not-an-object"],
)
def test_a_timing_edited_outside_the_content_hash_is_refused_naming_the_field(tmp_path, surface, timing, named):
    timed = fs.save(tmp_path / "timed.npz", surface=surface, timing=True)
    _rewritten(timed, {**_metadata(timed), "timing": timing}, sign=False)
    with pytest.raises(fs.FastsurfaceError, match=f"`path`.*the file's {named}"):
        fs.load(timed)


def test_a_time_not_recorded_saves_with_timing_and_loads_as_not_recorded(tmp_path, surface):
    unrecorded = dataclasses.replace(surface, seconds=math.nan)
    assert math.isnan(fs.load(fs.save(tmp_path / "s.npz", surface=unrecorded, timing=True)).surface.seconds)


LONG = "y" * 300
# File names the operating system cannot take, with what the refusal says; `{}` is the suffix.
BAD_NAMES = {
    "name-too-long": (LONG + "{}", "too long"),
    "folder-name-too-long": (LONG + "/s{}", "too long"),
    "nul-byte": ("a\0b{}", "NUL byte"),
    "not-utf-8": ("\udcff{}", "UTF-8"),  # what Python makes of argv bytes that are not UTF-8
}
# Every public function that takes a file or folder name: (call, suffix, the argument's name).
NAMED_PATHS = {
    "save": (lambda s, p: fs.save(p, surface=s), ".npz", "path"),
    "load": (lambda s, p: fs.load(p), ".npz", "path"),
    "save_hdf5": (lambda s, p: fs.save_hdf5(p, s), ".h5", "path"),
    "load_hdf5": (lambda s, p: fs.load_hdf5(p), ".h5", "path"),
    "save_vtk": (lambda s, p: fs.save_vtk(p, s), ".vts", "path"),
    "write_figure": (lambda s, p: fs.write_figure(fs.plot_contour(s), p), ".html", "path"),
    "checkpoint_dir": (
        lambda s, p: fs.resumable_loss_surface(
            fs.ANN(1, 1, 1), fs.piecewise_dataset(50), [0.0], [0.0], checkpoint_dir=p
        ),
        "",
        "checkpoint_dir",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_NAMES))
@pytest.mark.parametrize("call", sorted(NAMED_PATHS))
def test_names_the_system_cannot_take_are_refused_naming_the_argument(tmp_path, monkeypatch, surface, call, name):
    monkeypatch.chdir(tmp_path)
    function, suffix, argument = NAMED_PATHS[call]
    pattern, says = BAD_NAMES[name]
    with pytest.raises(fs.FastsurfaceError, match=f"`{argument}`.*{says}"):
        function(surface, pattern.format(suffix))
    assert list(tmp_path.iterdir()) == []
