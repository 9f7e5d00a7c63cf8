import numpy as np
import plotly.graph_objects as go
import pytest
import torch

import fastsurface as fs

W1 = fs.axis(-3, 1, 0.5)  # 8 values
W2 = fs.axis(0.5, 2, 0.25)  # 6 values


def make_surface(loss, labels=("w1", "w2")):
    return fs.Surface(
        w1=W1,
        w2=W2,
        loss_tensor=torch.as_tensor(loss, dtype=torch.float64),
        labels=labels,
        loss_name="mse",
        reduction="mean",
        device="cpu",
        dtype="float64",
        samples=1,
        batches=1,
        seconds=0.0,
        method="vmap",
        tile_points=1,
    )


def make_path(w1, w2, labels=("w1", "w2")):
    w1, w2 = np.asarray(w1, dtype=float), np.asarray(w2, dtype=float)
    return fs.Trajectory(w1, w2, w1**2 + w2, np.arange(len(w1)) * 10, labels, "mean", "epoch")


@pytest.fixture
def surface(rng):
    # Distinct positive values, so a transposed or flipped axis cannot pass.
    return make_surface(np.exp(rng.normal(size=(len(W1), len(W2)))))


POINTS = [
    fs.CriticalPoint(-1.0, 1.0, 0.5, "saddle", (-1.0, 2.0), 0.0, 3),
    fs.CriticalPoint(0.5, 1.5, 0.1, "minimum", (1.0, 2.0), 0.0, 2),
    fs.CriticalPoint(-2.0, 0.75, 0.2, "minimum", (3.0, 4.0), 0.0, 4),
]


@pytest.mark.parametrize(("kind", "trace_type"), [("contour", go.Contour), ("heatmap", go.Heatmap)])
def test_each_axis_carries_the_coordinate_that_varies_along_it(surface, kind, trace_type):
    figure = fs.plot_contour(surface, kind=kind)
    (trace,) = figure.data
    assert isinstance(trace, trace_type)
    assert np.array_equal(trace.x, surface.w1) and np.array_equal(trace.y, surface.w2)
    z, shown = np.asarray(trace.z), np.asarray(trace.customdata)
    assert z.shape == shown.shape == (len(W2), len(W1))
    for row in range(len(W2)):
        for col in range(len(W1)):
            assert z[row][col] == shown[row][col] == surface.loss[col, row]
    assert (figure.layout.xaxis.title.text, figure.layout.yaxis.title.text) == ("w1", "w2")


def test_log_colouring_colours_by_log10_and_labels_ticks_with_losses(surface):
    (trace,) = fs.plot_contour(surface, log_color=True).data
    assert np.allclose(np.asarray(trace.z), np.log10(surface.loss.T), rtol=0, atol=1e-15)
    assert np.array_equal(np.asarray(trace.customdata), surface.loss.T)  # hover shows the loss
    ticks = [float(text) for text in trace.colorbar.ticktext]
    assert np.allclose(10 ** np.asarray(trace.colorbar.tickvals), ticks)
    assert all(surface.loss.min() <= t <= surface.loss.max() for t in ticks) and len(ticks) >= 2
    (surface_trace,) = fs.plot_surface(surface, log_color=True).data
    assert np.array_equal(np.asarray(surface_trace.z), surface.loss.T)  # heights stay the loss
    assert np.allclose(np.asarray(surface_trace.surfacecolor), np.log10(surface.loss.T), atol=1e-15)
    with pytest.raises(fs.FastsurfaceError, match="`log_color`"):
        fs.plot_contour(make_surface(surface.loss - surface.loss.mean()), log_color=True)
    (clipped,) = fs.plot_contour(make_surface(surface.loss - surface.loss.min()), log_color=True).data
    assert "zeros drawn at" in clipped.colorbar.title.text  # a zero loss is drawn at the smallest positive


def test_critical_points_one_marker_trace_per_kind_in_2d_and_3d(surface):
    flat = fs.plot_contour(surface, critical_points=POINTS).data[1:]
    assert [t.name for t in flat] == ["minimum", "saddle"]
    assert list(flat[0].x) == [0.5, -2.0] and list(flat[0].y) == [1.5, 0.75]
    solid = fs.plot_surface(surface, critical_points=POINTS).data[1:]
    assert all(isinstance(t, go.Scatter3d) for t in solid)
    assert list(solid[0].z) == [0.1, 0.2] and list(solid[1].x) == [-1.0]


def test_several_trajectories_overlaid_with_a_legend(surface):
    paths = {"lr 0.01": make_path([-1, 0], [1, 1.5]), "lr 0.1": make_path([0, 0.5, 0.7], [0.6, 0.9, 1.0])}
    figure = fs.plot_contour(surface, paths)
    lines = figure.data[1:]
    assert [t.name for t in lines] == ["lr 0.01", "lr 0.1"]
    assert len({t.line.color for t in lines}) == 2
    assert np.array_equal(lines[1].x, paths["lr 0.1"].w1) and np.array_equal(lines[1].y, paths["lr 0.1"].w2)
    listed = fs.plot_contour(surface, list(paths.values()))
    assert [t.name for t in listed.data[1:]] == ["path 1", "path 2"]
    (single,) = fs.plot_contour(surface, paths["lr 0.1"]).data[1:]
    assert (single.name, single.line.color, single.marker.color) == ("SGD (epoch)", "red", "yellow")
    with pytest.raises(fs.FastsurfaceError, match="`trajectories`"):
        fs.plot_contour(surface, make_path([0], [1], labels=("a", "b")))
    with pytest.raises(fs.FastsurfaceError, match="`trajectories`"):
        fs.plot_contour(surface, {"x": 3})


def test_the_animation_draws_the_path_step_by_step(surface):
    path = make_path(np.linspace(-4, 0, 7), np.linspace(0.5, 1.5, 7))
    figure = fs.plot_animation(surface, path, POINTS)
    assert len(figure.frames) == 7
    moving = figure.frames[0].traces
    assert figure.data[moving[0]].name == "path" and figure.data[moving[1]].name.startswith("step 0")
    for k, frame in enumerate(figure.frames):
        line, head = frame.data
        assert np.array_equal(line.x, path.w1[: k + 1]) and np.array_equal(line.y, path.w2[: k + 1])
        assert list(head.x) == [path.w1[k]] and frame.name == str(k)
    (buttons,) = figure.layout.updatemenus
    assert [b.label for b in buttons.buttons] == ["Play", "Pause"]
    (slider,) = figure.layout.sliders
    assert [s.label for s in slider.steps] == [str(s) for s in path.step]
    assert [list(s.args[0]) for s in slider.steps] == [[str(k)] for k in range(7)]
    low, high = figure.layout.xaxis.range  # fixed, covering the grid and the path
    assert low < -4 and high > W1.max()


def test_a_long_path_is_animated_at_evenly_spaced_points(surface):
    path = make_path(np.linspace(-1, 0, 1000), np.linspace(0.5, 1.5, 1000))
    names = [int(frame.name) for frame in fs.plot_animation(surface, path, max_frames=50).frames]
    assert len(names) == 50 and names[0] == 0 and names[-1] == 999 and names == sorted(names)
    with pytest.raises(fs.FastsurfaceError, match="`max_frames`"):
        fs.plot_animation(surface, path, max_frames=0)


def test_a_refined_surface_plots_on_its_uneven_axes():
    data = fs.piecewise_dataset(200)
    coarse = fs.loss_surface(fs.ANN(1, 1, 1), data, fs.axis(-2, 2, 0.5), fs.axis(-1, 2, 0.5))
    refined = fs.refine(coarse, fs.ANN(1, 1, 1), data, ((-0.3, 0.3), (0.2, 0.6)), 0.1)
    for figure in (fs.plot_contour(refined), fs.plot_surface(refined)):
        trace = figure.data[0]
        assert np.array_equal(trace.x, refined.w1) and np.array_equal(trace.y, refined.w2)
        assert np.array_equal(np.asarray(trace.z), refined.loss.T)


def test_bad_view_options_are_refused(surface):
    with pytest.raises(fs.FastsurfaceError, match="`kind`"):
        fs.plot_contour(surface, kind="3d")
