import dataclasses
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface.cli import main
from fastsurface.runs import storage

PROVENANCE = {"seed": 42, "split_seed": 0, "note": "round trip"}


@pytest.fixture(scope="module")
def results():
    train, test = fs.train_test_split(*fs.piecewise_dataset(400))
    model = fs.ANN(1, 1, 1)
    path = fs.train_sgd(model, train, test, epochs=2)
    surface = fs.loss_surface(model, test, fs.axis(-2, 1, 0.5), fs.axis(0, 2, 0.25))  # 6 x 8
    return surface, path, fs.default_plane(model)


@pytest.fixture
def saved(tmp_path, results):
    surface, path, plane = results
    return fs.save(
        tmp_path / "run.npz", surface=surface, trajectory=path, plane=plane, provenance=PROVENANCE, timing=True
    )


def _same(actual, expected):
    """Dataclasses with equal fields, arrays equal in type, dtype, shape and every bit."""
    assert type(actual) is type(expected)
    for field in dataclasses.fields(expected):
        a, e = getattr(actual, field.name), getattr(expected, field.name)
        if isinstance(e, (np.ndarray, torch.Tensor)):
            assert type(a) is type(e) and a.dtype == e.dtype and a.shape == e.shape, field.name
            assert _host(a).tobytes() == _host(e).tobytes(), field.name
        else:
            assert a == e, field.name


def _host(values):
    return values.cpu().numpy() if isinstance(values, torch.Tensor) else values


def test_round_trip_gives_identical_arrays_and_metadata(saved, results):
    surface, path, plane = results
    loaded = fs.load(saved)
    _same(loaded.surface, surface)
    _same(loaded.trajectory, path)
    assert loaded.plane.labels == plane.labels
    for part in ("origin", "first", "second"):
        expected = getattr(plane, part)
        assert {k: v.tolist() for k, v in getattr(loaded.plane, part).items()} == {
            k: v.tolist() for k, v in expected.items()
        }
    provenance = loaded.metadata["provenance"]
    assert {key: provenance[key] for key in PROVENANCE} == PROVENANCE
    assert provenance["fastsurface_version"] == fs.__version__ and provenance["torch_version"] == torch.__version__
    assert loaded.metadata["format_version"] == storage.FORMAT_VERSION


def test_a_loaded_surface_is_usable_and_plain_numpy_reads_the_file(saved, results):
    loaded = fs.load(saved)
    assert loaded.surface.argmin() == results[0].argmin()
    fs.plot_surface(loaded.surface, loaded.trajectory)
    with np.load(saved, allow_pickle=False) as archive:
        assert np.array_equal(archive["surface/loss_tensor"], results[0].loss)
        assert json.loads(archive["metadata"].tobytes())["surface"]["reduction"] == "mean"


def test_a_trajectory_alone_round_trips(tmp_path, results):
    written = fs.save(tmp_path / "path.npz", trajectory=results[1])
    loaded = fs.load(written)
    assert loaded.surface is None and loaded.plane is None
    _same(loaded.trajectory, results[1])


def test_equal_contents_give_byte_identical_files(tmp_path, results):
    surface, path, plane = results
    first = fs.save(tmp_path / "a.npz", surface=surface, trajectory=path, plane=plane, provenance=PROVENANCE)
    second = fs.save(tmp_path / "b.npz", surface=surface, trajectory=path, plane=plane, provenance=PROVENANCE)
    assert first.read_bytes() == second.read_bytes()


class _Marker:
    """Unpickling this would create a file: proof that no unpickling happened."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _rewrite(path, change):
    """Rewrite the archive at ``path`` with ``change(entries)`` applied to its raw entries."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    change(entries)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def _npy(array, allow_pickle=False):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_a_pickled_object_is_refused_and_never_unpickled(tmp_path, saved):
    marker = tmp_path / "unpickled"
    payload = np.array([_Marker(marker)], dtype=object)
    _rewrite(saved, lambda entries: entries.update({"surface/w1.npy": _npy(payload, allow_pickle=True)}))
    with pytest.raises(fs.FastsurfaceError, match=r"`path`.*pickle"):
        fs.load(saved)
    assert not marker.exists()


def test_a_plain_pickle_file_is_refused(tmp_path):
    target = tmp_path / "s.npz"
    target.write_bytes(pickle.dumps({"loss": [1.0]}))
    with pytest.raises(fs.FastsurfaceError, match="`path`"):
        fs.load(target)


@pytest.mark.parametrize("kept", [0, 100, 0.5, 0.99])
def test_a_truncated_file_is_refused(saved, kept):
    data = saved.read_bytes()
    saved.write_bytes(data[: kept if isinstance(kept, int) else int(len(data) * kept)])
    with pytest.raises(fs.FastsurfaceError, match="`path`"):
        fs.load(saved)


def test_a_corrupt_byte_is_refused(saved, results):
    data = bytearray(saved.read_bytes())
    where = bytes(data).index(results[0].loss.tobytes()[:16])  # inside the loss values
    data[where + 5] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(fs.FastsurfaceError, match="`path`"):
        fs.load(saved)


def _edit_metadata(entries, edit):
    metadata = json.loads(np.lib.format.read_array(io.BytesIO(entries["metadata.npy"])).tobytes())
    edit(metadata)
    entries["metadata.npy"] = _npy(np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8))


def test_edited_metadata_is_refused(saved):
    _rewrite(saved, lambda entries: _edit_metadata(entries, lambda m: m["surface"].update(reduction="batch_mean")))
    with pytest.raises(fs.FastsurfaceError, match="content_sha256"):
        fs.load(saved)


def test_edited_values_with_a_valid_zip_are_refused(saved, results):
    edited = results[0].loss.copy()
    edited[0, 0] = 0.0
    _rewrite(saved, lambda entries: entries.update({"surface/loss_tensor.npy": _npy(edited)}))
    with pytest.raises(fs.FastsurfaceError, match="content_sha256"):
        fs.load(saved)


def test_an_extra_entry_is_refused(saved):
    _rewrite(saved, lambda entries: entries.update({"extra.npy": _npy(np.zeros(3))}))
    with pytest.raises(fs.FastsurfaceError, match="`path`"):
        fs.load(saved)


def test_a_newer_format_version_is_refused_with_advice(saved):
    def newer(metadata):
        metadata["format_version"] = storage.FORMAT_VERSION + 1

    _rewrite(saved, lambda entries: _edit_metadata(entries, newer))
    with pytest.raises(fs.FastsurfaceError, match="newer fastsurface"):
        fs.load(saved)


def test_a_plain_npz_is_not_taken_for_a_surface_file(tmp_path):
    target = tmp_path / "plain.npz"
    np.savez(target, loss=np.zeros((2, 2)))
    with pytest.raises(fs.FastsurfaceError, match="no metadata"):
        fs.load(target)


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, saved, results, monkeypatch):
    before = saved.read_bytes()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", fail)
    with pytest.raises(KeyboardInterrupt):
        fs.save(saved, surface=results[0])
    assert saved.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [saved.name]


def test_the_cli_saves_and_shows_a_verified_file(tmp_path, capsys):
    saved = tmp_path / "run.npz"
    arguments = ["--step", "0.5", "--samples", "300", "--epochs", "1", "--no-progress", "--seed", "7"]
    assert main(["run", *arguments, "--output", str(tmp_path / "f.html"), "--save", str(saved)]) == 0
    assert f"wrote     {saved}" in capsys.readouterr().out
    assert main(["show", str(saved)]) == 0
    shown = capsys.readouterr().out
    assert "content verified" in shown and "path      2 points (epoch)" in shown and "seed = 7" in shown
    assert "\nprovenance\n" in shown and "\n          batch_size = 64\n" in shown
    saved.write_bytes(saved.read_bytes()[:-50])
    assert main(["show", str(saved)]) == 2
    assert capsys.readouterr().err.startswith("fastsurface: error: `path`")


def test_train_mode_and_numpy_counts_round_trip(tmp_path, results):
    surface = dataclasses.replace(results[0], train_mode=True, samples=np.int64(80), batches=np.int64(2))
    stored = fs.load(fs.save(tmp_path / "s.npz", surface=surface)).surface
    assert stored.train_mode is True and (stored.samples, stored.batches) == (80, 2)
