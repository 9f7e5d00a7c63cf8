"""Files you can trust at any size: refusal before reading, the same rules for save and load,
equal work in equal bytes, and no stale temporaries (issue: Reliability II)."""

import dataclasses
import io
import json
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


def _rewritten(path, metadata, sign=True):
    """``path`` with its metadata replaced (and its content hash recomputed: re-signed)."""
    entries = _entries(path)
    arrays = {
        name.removesuffix(".npy"): np.load(io.BytesIO(raw)) for name, raw in entries.items() if name != "metadata.npy"
    }
    if sign:
        metadata = {**metadata, "content_sha256": storage._content_hash(metadata, arrays)}
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8))
    entries["metadata.npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in entries.items():
            archive.writestr(name, raw)
    return path


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
