import shutil
import struct
import sys

import plotly.graph_objects as go
import pytest

import fastsurface as fs
from fastsurface.cli import main
from fastsurface.views import export
from tests.helpers import SMALL_RUN

has_browser = pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("google-chrome") is None, reason="needs Chromium or Chrome"
)


@pytest.fixture(scope="module")
def figure():
    return go.Figure(go.Contour(z=[[1, 2, 3], [3, 4, 5]]), layout={"width": 320, "height": 240})


def test_html_embeds_plotly_js_by_default_and_loads_it_from_the_cdn_on_request(tmp_path, figure):
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
