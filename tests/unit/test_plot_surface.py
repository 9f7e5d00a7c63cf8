import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

import fastsurface as fs


@pytest.fixture(scope="module")
def drawn():
    train, test = fs.train_test_split(*fs.piecewise_dataset(800))
    model = fs.ANN(1, 1, 1)
    surface = fs.loss_surface(model, test, fs.axis(-3, 1, 0.5), fs.axis(0.5, 2, 0.25))  # 8 x 6
    path = fs.train_sgd(model, train, test, epochs=3)
    return surface, path, fs.plot_surface(surface, path)


def test_each_axis_carries_the_weight_that_varies_along_it(drawn):
    surface, _, figure = drawn
    trace = figure.data[0]
    assert isinstance(trace, go.Surface) and trace.surfacecolor is None  # coloured by z, the loss
    assert np.array_equal(trace.x, surface.w1) and np.array_equal(trace.y, surface.w2)
    z = np.asarray(trace.z)
    assert z.shape == (len(surface.w2), len(surface.w1))
    # plotly: z[row][col] is the value at (x=x[col], y=y[row])
    for row in range(len(surface.w2)):
        for col in range(len(surface.w1)):
            assert z[row][col] == surface.loss[col, row]
    scene = figure.layout.scene
    assert (scene.xaxis.title.text, scene.yaxis.title.text, scene.zaxis.title.text) == ("w1", "w2", "Loss")


def test_the_path_uses_the_same_axes(drawn):
    _, path, figure = drawn
    line = figure.data[1]
    assert isinstance(line, go.Scatter3d) and line.mode == "lines+markers"
    assert np.array_equal(line.x, path.w1) and np.array_equal(line.y, path.w2) and np.array_equal(line.z, path.loss)


def test_the_article_look_by_default_and_overrides(drawn):
    surface, _, figure = drawn
    layout = figure.layout
    assert (layout.width, layout.height) == (None, None)  # sized by its container: fills a browser window
    assert layout.template == pio.templates["plotly_dark"]
    assert (layout.scene.aspectratio.x, layout.scene.aspectratio.y, layout.scene.aspectratio.z) == (1, 1, 0.5)
    assert figure.data[1].line.color == "red" and figure.data[1].marker.color == "yellow"
    restyled = fs.plot_surface(surface, width=500, line_color="blue")
    assert restyled.layout.width == 500 and len(restyled.data) == 1
    with pytest.raises(fs.FastsurfaceError, match="`style`"):
        fs.plot_surface(surface, colour="red")
