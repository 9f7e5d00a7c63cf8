import base64
import copy
import datetime
import json
import shutil
import struct
import sys

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

import fastsurface as fs
from fastsurface.cli import main
from fastsurface.views import export
from fastsurface.views.surface import surface_figure
from tests.helpers import SMALL_RUN

has_browser = pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("google-chrome") is None, reason="needs Chromium or Chrome"
)


@pytest.fixture(scope="module")
def figure():
    return go.Figure(go.Contour(z=[[1, 2, 3], [3, 4, 5]]), layout={"width": 320, "height": 240})


@pytest.fixture(scope="module")
def drawn():
    """A small seed surface with its path and critical points, as plain figure data."""
    train, test = fs.train_test_split(*fs.piecewise_dataset(500))
    model = fs.ANN(1, 1, 1)
    surface = fs.loss_surface(model, test, fs.axis(-2, 2, 0.2), fs.axis(-2, 2, 0.25))
    path = fs.train_sgd(model, train, test, epochs=2)
    points = fs.critical_points(surface, model, test)
    assert points  # so that their traces are compared too
    return surface_figure(surface, path, critical_points=points, log_color=True)


def plotted(html: str) -> list[object]:
    """The data, layout and config a page hands to ``Plotly.newPlot``, with plotly's binary
    arrays (``{"dtype": ..., "bdata": ...}``) decoded to lists."""
    decoder, rest = json.JSONDecoder(), html[html.index("Plotly.newPlot(") :]
    rest = rest[rest.index(",") + 1 :].lstrip()
    arguments = []
    for _ in range(3):
        value, end = decoder.raw_decode(rest)
        arguments.append(_decoded(value))
        rest = rest[end:].lstrip(", ")
    return arguments


def _decoded(value: object) -> object:
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return (
            array.reshape([int(n) for n in value["shape"].split(",")]).tolist() if "shape" in value else array.tolist()
        )
    if isinstance(value, dict):
        return {key: _decoded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decoded(item) for item in value]
    return value


def test_plain_figure_data_is_written_as_plotly_writes_the_validated_figure(tmp_path, drawn):
    ours = fs.write_figure(drawn, tmp_path / "plain.html").read_text()
    plotlys = fs.write_figure(go.Figure(copy.deepcopy(drawn)), tmp_path / "validated.html").read_text()  # it edits
    data, layout, config = plotted(ours)
    assert (data, layout, config) == tuple(plotted(plotlys))
    assert [trace["type"] for trace in data] == ["surface", "scatter3d", "scatter3d"]
    assert config == {"responsive": True} and "width" not in layout and "height" not in layout
    assert fs.write_figure(drawn, tmp_path / "again.html").read_text() == ours  # the same figure, the same file


def test_a_plain_figure_fills_the_window_unless_it_has_a_size(tmp_path, drawn):
    page = fs.write_figure(drawn, tmp_path / "fill.html").read_text()
    assert "html, body {height: 100%; margin: 0; overflow: hidden;}" in page
    assert '<div style="height:100%; width:100%;">' in page
    sized = {**drawn, "layout": {**drawn["layout"], "width": 640, "height": 480}}
    page = fs.write_figure(sized, tmp_path / "sized.html").read_text()
    assert '<div style="height:480px; width:640px;">' in page and "overflow" not in page[: page.index("<body>")]


def test_a_plotly_figure_fills_the_window_unless_it_has_a_size(tmp_path, figure):
    """The 2-D views set no size (as the 3-D one): their page fills the window; a sized figure keeps its size."""
    surface = fs.loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(100), fs.axis(-1, 1, 0.5), fs.axis(-1, 1, 0.5))
    contour = fs.plot_contour(surface)
    assert (contour.layout.width, contour.layout.height) == (None, None)
    page = fs.write_figure(contour, tmp_path / "fill.html").read_text()
    head = page[: page.index("<body>")]
    assert "html, body, body > div {height: 100%; margin: 0; overflow: hidden;}" in head
    assert 'class="plotly-graph-div" style="height:100%; width:100%;"' in page
    page = fs.write_figure(figure, tmp_path / "sized.html").read_text()
    assert 'style="height:240px; width:320px;"' in page and "overflow" not in page[: page.index("<body>")]


def test_plain_data_becomes_safe_json(tmp_path):
    label = "</script><script>alert(1)</script>"
    figure = {"data": [{"type": "scatter", "x": np.arange(3), "y": np.array([1.0, np.nan, np.inf]), "name": label}]}
    page = fs.write_figure(figure, tmp_path / "safe.html").read_text()
    (trace,), layout, _ = plotted(page)
    assert trace == {"type": "scatter", "x": [0, 1, 2], "y": [1.0, None, None], "name": label}  # plotly's nulls
    assert "alert(1)</script>" not in page
    assert layout["template"] == pio.templates[pio.templates.default].to_plotly_json()  # plotly's default


@pytest.mark.parametrize("name", ["plotly_white", "seaborn", "registered", "plotly_dark+presentation"])
def test_template_names_are_resolved_as_plotly_resolves_them(tmp_path, name):
    pio.templates["registered"] = go.layout.Template(layout={"font": {"size": 21}})
    try:
        page = fs.write_figure({"data": [], "layout": {"template": name}}, tmp_path / "t.html").read_text()
        assert plotted(page)[1]["template"] == pio.templates[name].to_plotly_json()
    finally:
        del pio.templates["registered"]


@pytest.mark.parametrize(
    ("figure", "match"),
    [
        ({"data": [], "frames": []}, "only 'data' and 'layout'"),
        ({"data": [{"type": "scatter", "x": [datetime.date(2020, 1, 1)]}]}, "NumPy arrays.*date"),
    ],
)
def test_plain_figures_that_need_plotly_are_refused_clearly(tmp_path, figure, match):
    with pytest.raises(fs.FastsurfaceError, match=match):
        fs.write_figure(figure, tmp_path / "figure.html")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("plain", [False, True], ids=["figure", "plain-data"])
def test_html_embeds_plotly_js_by_default_and_loads_it_from_the_cdn_on_request(tmp_path, figure, plain):
    figure = figure.to_plotly_json() if plain else figure
    offline = fs.write_figure(figure, tmp_path / "offline.html")
    small = fs.write_figure(figure, tmp_path / "small.htm", plotlyjs="cdn")
    offline_text, small_text = offline.read_text(), small.read_text()
    assert 'src="https://cdn.plot.ly' not in offline_text and offline.stat().st_size > 1_000_000
    assert 'src="https://cdn.plot.ly/plotly-' in small_text and small.stat().st_size < 50_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["offline.html", "small.htm"]  # no temporary left


@pytest.mark.slow
@has_browser
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_static_images_through_kaleido(tmp_path, figure, suffix):
    pytest.importorskip("kaleido")
    written = fs.write_figure(figure, tmp_path / f"figure{suffix}")
    content = written.read_bytes()
    if suffix == ".png":
        assert content[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", content[16:24]) == (320, 240)  # the IHDR chunk: the figure's size
    else:
        assert content.startswith(b"<svg") and b'width="320"' in content[:400]
    assert [p.name for p in tmp_path.iterdir()] == [written.name]


def test_a_missing_browser_is_a_clear_error_before_any_rendering(tmp_path, figure, monkeypatch):
    pytest.importorskip("kaleido")
    from choreographer.browsers.chromium import Chromium

    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **_: None))
    with pytest.raises(fs.FastsurfaceError, match="apt-get install chromium"):
        fs.write_figure(figure, tmp_path / "figure.png")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_kaleido_is_a_clear_error(tmp_path, figure, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # makes `import kaleido` fail
    with pytest.raises(fs.FastsurfaceError, match=r"pip install 'fastsurface\[image\]'"):
        fs.write_figure(figure, tmp_path / "figure.svg")


@pytest.mark.parametrize(
    ("name", "plotlyjs", "match"),
    [("figure.pdf", "embed", "`path` must end in"), ("figure.html", "inline", "`plotlyjs`")],
)
def test_bad_paths_and_options_are_refused(tmp_path, figure, name, plotlyjs, match):
    with pytest.raises(fs.FastsurfaceError, match=match):
        fs.write_figure(figure, tmp_path / name, plotlyjs=plotlyjs)


def test_the_command_writes_one_file_per_view_and_lists_critical_points(tmp_path, capsys):
    output = tmp_path / "figure.html"
    views = "surface,contour,heatmap,animation"
    assert main(["run", "--output", str(output), "--view", views, "--critical-points", "--log-color", *SMALL_RUN]) == 0
    out = capsys.readouterr().out
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(f"figure-{view}.html" for view in views.split(","))
    assert "critical  1 point(s) inside the grid:" in out and "saddle     loss" in out
    assert all(f"wrote     {tmp_path / name}" in out for name in written)
    animation = (tmp_path / "figure-animation.html").read_text()
    assert "Plotly.addFrames" in animation and '"sliders"' in animation


def test_the_command_writes_an_image_with_the_default_name(tmp_path, capsys, monkeypatch):
    pytest.importorskip("kaleido")
    from choreographer.browsers.chromium import Chromium

    # The rendering itself is tested above; here only the wiring, without a browser.
    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **_: "/usr/bin/true"))
    monkeypatch.setattr(go.Figure, "to_image", lambda self, format: f"<svg>{format}</svg>".encode())
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--format", "svg", "--view", "contour", *SMALL_RUN]) == 0
    assert (tmp_path / "loss_surface.svg").read_bytes() == b"<svg>svg</svg>"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--format", "png", "--output", "figure.html"], "`--output` must end in .png"),
        (["--format", "svg", "--output", "figure.png"], "`--output` must end in .svg"),
    ],
)
def test_the_output_must_match_the_format(tmp_path, capsys, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *arguments, *SMALL_RUN]) == 2
    assert message in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_an_unknown_view_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--view", "contour,globe", *SMALL_RUN])
    assert exit_info.value.code == 2 and "--view" in capsys.readouterr().err


def test_without_a_browser_the_command_fails_before_any_work(tmp_path, capsys, monkeypatch):
    pytest.importorskip("kaleido")
    from choreographer.browsers.chromium import Chromium

    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **_: None))
    monkeypatch.setattr(export, "atomic_write", lambda *_: pytest.fail("wrote a file"))
    assert main(["run", "--format", "png", "--output", str(tmp_path / "f.png"), *SMALL_RUN]) == 2
    err = capsys.readouterr().err
    assert "apt-get install chromium" in err and "Traceback" not in err


def test_an_interrupted_run_changes_no_output(tmp_path, capsys, monkeypatch):
    """Several figures and a saved file are published together: an interruption after the
    first figure leaves every output as it was, and no temporary file."""
    output, saved = tmp_path / "figure.html", tmp_path / "run.npz"
    output.with_name("figure-contour.html").write_text("old")
    written = []

    def interrupted_after_one(figure, path, **options):
        if written:
            raise KeyboardInterrupt
        written.append(export.write_figure(figure, path, **options))

    monkeypatch.setattr("fastsurface.write_figure", interrupted_after_one)
    arguments = ["run", "--output", str(output), "--view", "contour,heatmap", "--save", str(saved), *SMALL_RUN]
    assert main(arguments) == 130
    assert "no output was written" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["figure-contour.html"]
    assert output.with_name("figure-contour.html").read_text() == "old"


def test_figures_refuse_what_they_cannot_draw(monkeypatch):
    surface = fs.loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(100), [0.0, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(fs.FastsurfaceError, match="`trajectory`"):
        fs.plot_animation(surface, None)
    with pytest.raises(fs.FastsurfaceError, match="`figure`"):
        fs.write_figure(None, "figure.html")
    monkeypatch.setattr("fastsurface._support.memory.available_bytes", lambda device: 1000)
    for draw in (fs.plot_surface, fs.plot_contour):
        with pytest.raises(fs.FastsurfaceError, match="`surface`: a figure of 6 grid points needs"):
            draw(surface)


def test_nested_blocks_publish_with_the_outer_one(tmp_path):
    from fastsurface._support.files import all_or_nothing, atomic_write_text

    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("old a")
    with pytest.raises(KeyboardInterrupt), all_or_nothing():
        with all_or_nothing():
            atomic_write_text(first, "new a")
        atomic_write_text(second, "new b")
        raise KeyboardInterrupt
    assert first.read_text() == "old a" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with all_or_nothing() as published:
        atomic_write_text(first, "new a")
        atomic_write_text(second, "new b")
    assert published == [first, second] and first.read_text() == "new a"
