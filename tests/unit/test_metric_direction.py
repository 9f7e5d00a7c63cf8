"""Metrics are not losses: a surface knows its metric and which way is better, keeps both in
its file (older files load as losses), and every summary names the metric."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import fastsurface as fs
from fastsurface.cli import main
from fastsurface.runs import storage
from fastsurface.views.planar import loss_colouring


@pytest.fixture(scope="module")
def accuracy_surface():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 2)), rng.integers(0, 3, size=60)
    w = np.linspace(-3, 3, 7)
    return fs.loss_surface(model, (x, y), w, w, plane=fs.random_plane(model, seed=0), loss="accuracy")


def test_the_metric_and_its_direction_round_trip_through_a_file(tmp_path, accuracy_surface):
    loaded = fs.load(fs.save(tmp_path / "a.npz", surface=accuracy_surface)).surface
    assert (loaded.metric, loaded.higher_is_better) == ("accuracy", True)
    assert loaded.best() == accuracy_surface.best() and loaded.best()[2] == accuracy_surface.loss.max()


def test_a_file_from_before_the_fields_loads_as_a_loss(tmp_path, accuracy_surface):
    path = fs.save(tmp_path / "old.npz", surface=accuracy_surface)
    metadata, entries = storage._read_archive(path)
    del metadata["surface"]["metric"], metadata["surface"]["higher_is_better"]
    metadata["content_sha256"] = storage._content_hash(metadata, entries)
    with open(path, "wb") as file:
        storage._write_archive(file, {"metadata": np.frombuffer(storage._canonical(metadata), np.uint8), **entries})
    loaded = fs.load(path).surface
    assert (loaded.metric, loaded.higher_is_better) == ("loss", False)


@pytest.mark.parametrize(("field", "value"), [("metric", 3), ("higher_is_better", "yes")])
def test_save_refuses_a_metric_field_of_the_wrong_type(tmp_path, accuracy_surface, field, value):
    with pytest.raises(fs.FastsurfaceError, match=f"surface's {field} must be"):
        fs.save(tmp_path / "bad.npz", surface=dataclasses.replace(accuracy_surface, **{field: value}))


def test_show_names_the_metric_and_its_best_point(tmp_path, capsys, accuracy_surface):
    path = fs.save(tmp_path / "a.npz", surface=accuracy_surface)
    assert main(["show", str(path)]) == 0
    shown = capsys.readouterr().out
    a, b, best = accuracy_surface.best()
    assert "mean accuracy" in shown and "loss" not in shown
    first, second = accuracy_surface.labels
    assert f"highest   accuracy {best:.6g} at {first}={a:.4g}, {second}={b:.4g}" in shown


def test_figures_name_the_metric(accuracy_surface):
    (trace,) = fs.plot_contour(accuracy_surface).data
    assert trace.colorbar.title.text == "accuracy" and "accuracy=" in trace.hovertemplate
    _, bar = loss_colouring(np.array([[0.5, 1.0]]), True, "accuracy")
    assert bar["title"]["text"] == "accuracy (log)"
    three_d = fs.plot_surface(accuracy_surface)
    assert three_d.layout.scene.zaxis.title.text == "Accuracy" and three_d.data[0].colorbar.title.text == "accuracy"
