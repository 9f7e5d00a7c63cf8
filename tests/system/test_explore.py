"""The explorer's server: its answers equal the library's, bad values are refused with the
library's messages, stale requests are dropped, and the server starts, warns and stops.

Requests go through Starlette's TestClient (in process); the last tests start the real
uvicorn server on a free loopback port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

import fastsurface as fs
from fastsurface._support import memory
from fastsurface.explorer import settings
from fastsurface.explorer.latest import LatestWins, StoppingError, SupersededError
from fastsurface.explorer.problem import SeedProblem, model_at
from fastsurface.views.export import check_image_export
from fastsurface.views.planar import loss_colouring
from tests.helpers import assert_close, small_mlp

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
from starlette.testclient import TestClient

from fastsurface.explorer.server import build_app

# Real servers, threads and subprocesses: the system tier, outside the quick one.
pytestmark = pytest.mark.multiprocess

# Small seed data, so that paths train in well under a second.
DATA = {"samples": 1000, "seed": 3, "split_seed": 1, "batch_size": 32}
WINDOW = {"w1": [-1.5, 1.0], "w2": [-1.0, 2.0], "step": 0.1}
LOOPBACK = "http://127.0.0.1"


@pytest.fixture(scope="module")
def problem():
    return SeedProblem()


@pytest.fixture(scope="module")
def client(problem):
    with TestClient(build_app(problem, warm_up=False), base_url=LOOPBACK) as client:
        yield client


@pytest.fixture(scope="module")
def split():
    return fs.train_test_split(*fs.piecewise_dataset(DATA["samples"], seed=DATA["seed"]), seed=DATA["split_seed"])


def decoded(array: dict) -> np.ndarray:
    assert array["dtype"] == "float64"
    return np.frombuffer(base64.b64decode(array["base64"]), dtype="<f8").reshape(array["shape"])


def answer(client, endpoint: str, body: dict) -> dict:
    response = client.post(f"/api/{endpoint}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("reduction", ["mean", "batch_mean"])
def test_the_surface_is_loss_surface_bit_for_bit(client, split, reduction):
    surface = answer(client, "surface", {**WINDOW, **DATA, "reduction": reduction})
    expected = fs.loss_surface(
        fs.ANN(1, 1, 1), split[1], fs.axis(-1.5, 1.0, 0.1), fs.axis(-1.0, 2.0, 0.1), reduction=reduction, batch_size=32
    )
    assert surface["w1"] == expected.w1.tolist() and surface["w2"] == expected.w2.tolist()
    np.testing.assert_array_equal(decoded(surface["loss"]), expected.loss)
    assert surface["colour"] is None and surface["critical_points"] == []
    assert (surface["method"], surface["samples"], surface["labels"]) == (expected.method, 200, ["w1", "w2"])


def test_log_colour_and_critical_points_are_the_library_ones(client, split):
    body = {"w1": [-3.0, 3.0], "w2": [-2.0, 2.0], "step": 0.1, **DATA, "log_color": True, "critical_points": True}
    surface = answer(client, "surface", body)
    model = fs.ANN(1, 1, 1)
    expected = fs.loss_surface(model, split[1], fs.axis(-3, 3, 0.1), fs.axis(-2, 2, 0.1), batch_size=32)
    colour, colorbar = loss_colouring(expected.loss, log_color=True)
    np.testing.assert_array_equal(decoded(surface["colour"]), colour)
    assert surface["colorbar"] == colorbar
    points = fs.critical_points(expected, model, split[1], batch_size=32)
    assert len(points) > 0
    assert surface["critical_points"] == [
        {"w1": p.w1, "w2": p.w2, "loss": p.loss, "kind": p.kind, "eigenvalues": list(p.eigenvalues)} for p in points
    ]


def test_an_sgd_path_is_train_sgd_bit_for_bit(client, split):
    body = {"path": "p1", "start": [0.5, -1.25], "lr": 0.02, "epochs": 3, "optimiser": "sgd", **DATA}
    path = answer(client, "path", body)
    expected = fs.train_sgd(fs.ANN(1, 1, 1), *split, lr=0.02, epochs=3, start=(0.5, -1.25), batch_size=32)
    assert path["w1"] == expected.w1.tolist() and path["w2"] == expected.w2.tolist()
    assert path["loss"] == expected.loss.tolist() and path["step"] == expected.step.tolist()
    assert path["name"] == "sgd lr=0.02, 3 epochs from (0.5, -1.25)"


def test_a_basin_map_is_the_library_one(client, split):
    body = {**WINDOW, **DATA, "points": 4, "lr": 0.02, "epochs": 2, "optimiser": "momentum"}
    basins = answer(client, "basins", body)
    grid = (np.linspace(-1.5, 1.0, 4, endpoint=False), np.linspace(-1.0, 2.0, 4, endpoint=False))
    make = lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9)  # noqa: E731
    runs = fs.train_many(fs.ANN(1, 1, 1), *split, grid=grid, optimizer=make, epochs=2, batch_size=32, evaluate="final")
    expected = fs.basin_map(runs)
    assert (basins["runs"], basins["diverged"], basins["method"]) == (16, int(expected.diverged.sum()), runs.method)
    assert basins["attractors"] == [
        {"w1": w1, "w2": w2, "size": size}
        for (w1, w2), size in zip(expected.attractors.tolist(), expected.sizes.tolist(), strict=True)
    ]
    figure = go.Figure(basins["figure"])  # plotly's own check of the figure
    assert figure.data[0].name == "fate" and figure.layout.width is None
    x = basins["figure"]["data"][0]["x"]  # a typed array, as plotly writes NumPy arrays
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]), grid[0])


@pytest.mark.parametrize(
    ("optimiser", "make"),
    [
        ("momentum", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)),
        ("adam", lambda p: torch.optim.Adam(p, lr=0.01)),
    ],
)
def test_other_optimisers_train_the_model_with_record_path(client, split, optimiser, make):
    body = {"path": "p2", "start": [1.0, 0.5], "lr": 0.01, "epochs": 2, "optimiser": optimiser, **DATA}
    path = answer(client, "path", body)
    model = fs.ANN(1, 1, 1)
    with torch.no_grad():
        model.net.Layer_1.weight.fill_(1.0)
        model.net.Layer_2.weight.fill_(0.5)
    recorded = fs.record_path(model, split[0], optimizer=make, epochs=2, batch_size=32)
    # The seed plane's directions are the two weights: projecting keeps the recorded values.
    assert_close(np.stack([path["w1"], path["w2"]], axis=1), recorded.vectors, rtol=1e-12)
    points = np.stack([path["w1"], path["w2"]], axis=1)
    losses = fs.evaluate_points(model, fs.default_plane(model), split[1], points, batch_size=32).loss
    assert path["loss"] == losses.cpu().numpy().tolist()
    assert path["step"] == recorded.step.tolist()


def test_a_model_from_python_is_served_with_its_plane(rng):
    model = small_mlp()
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = rng.normal(size=(64, 2)).astype(np.float32)
    plane = fs.random_plane(model, seed=1)
    explorer = fs.explore(model, (x, y), plane=plane, window=((-1, 1), (-0.5, 0.5)), block=False, open_browser=False)
    with explorer, urllib.request.urlopen(explorer.url + "api/config") as reply:
        config = json.loads(reply.read())
        surface = _post(explorer.url + "api/surface", {"step": 0.25})
        path = _post(explorer.url + "api/path", {"path": "a", "start": [0.5, -0.25], "epochs": 2, "optimiser": "adam"})
    assert config["seed_data"] is False and config["labels"] == list(plane.labels)
    expected = fs.loss_surface(model, (x, y), fs.axis(-1, 1, 0.25), fs.axis(-0.5, 0.5, 0.25), plane=plane)
    np.testing.assert_array_equal(decoded(surface["loss"]), expected.loss)
    recorded = fs.record_path(
        model_at(model, plane, (0.5, -0.25)), (x, y), optimizer=lambda p: torch.optim.Adam(p, lr=0.01), epochs=2
    )
    projected = fs.project_path(model, plane, recorded, (x, y))
    assert path["w1"] == projected.a.tolist() and path["w2"] == projected.b.tolist()
    assert path["loss"] == projected.loss.tolist()


def test_model_at_moves_the_plane_coordinates():
    model = small_mlp()
    plane = fs.random_plane(model, seed=2)
    moved = dict(model_at(model, plane, (0.5, -2.0)).named_parameters())
    for name, value in plane.params(torch.tensor(0.5), torch.tensor(-2.0)).items():
        assert_close(moved[name].detach(), value, rtol=1e-6, atol=1e-7)
    assert not any(p is q for p, q in zip(model.parameters(), moved.values(), strict=True))


REFUSED = [
    ("surface", {"step": -1}, "`step` must be > 0, got -1.0"),
    ("surface", {"step": 0}, "`step` must be > 0"),
    ("surface", {"step": "0.1"}, '`step` must be a finite number, got "0.1"'),
    ("surface", {"step": None}, "`step` must be a finite number, got null"),
    ("surface", {"w1": [1, 0]}, "`w1` must be [start, stop] with start < stop, got [1, 0]"),
    ("surface", {"w2": [0, 1, 2]}, "`w2` must be two finite numbers, got [0, 1, 2]"),
    ("surface", {"step": 5}, "`step` of 5 leaves 1 value in `w1`'s window [-2, 2)"),
    ("surface", {"step": 0.5, "w2": [0, 0.4]}, "leaves 1 value in `w2`'s window [0, 0.4)"),
    ("surface", {"step": 0.001}, "4000 x 4000 grid, more than the 250,000 points"),
    ("surface", {"samples": 0}, "`samples` must be a positive integer, got 0"),
    ("surface", {"samples": 10**7}, "`samples` must be at most 1,000,000"),
    ("surface", {"seed": -1}, "`seed` must be an integer in [0, 2**32), got -1"),
    ("surface", {"split_seed": 1.5}, "`split_seed` must be an integer, got 1.5"),
    ("surface", {"reduction": "sum"}, "`reduction` must be one of 'mean', 'batch_mean', got \"sum\""),
    ("surface", {"batch_size": 0}, "`batch_size` must be a positive integer, got 0"),
    ("surface", {"log_color": 1}, "`log_color` must be true or false, got 1"),
    ("surface", {"stepp": 0.1}, "unknown field(s) `stepp`"),
    ("surface", {"client": "a b", "seq": 1}, "`client` must be 1 to 64 letters"),
    ("surface", {"client": "a", "seq": -1}, "`seq` must be an integer >= 0"),
    ("surface", {"client": "a"}, "needs the field `seq`"),
    ("surface", {"samples": 1}, "`test_size`"),  # train_test_split's own check, run on the worker
    ("path", {}, "needs the field `path`"),
    ("path", {"path": "p", "lr": 0}, "`lr` must be a finite number > 0, got 0.0"),
    ("path", {"path": "p", "epochs": 2.5}, "`epochs` must be an integer, got 2.5"),
    ("path", {"path": "p", "epochs": 0}, "`epochs` must be a positive integer, got 0"),
    ("path", {"path": "p", "epochs": 1000}, "125,000 optimiser steps, more than the 25,000"),
    ("path", {"path": "p", "start": [0]}, "`start` must be two finite numbers"),
    ("path", {"path": "p", "optimiser": "rmsprop"}, "`optimiser` must be one of 'sgd', 'momentum', 'adam'"),
    ("path", {"path": "p", "lr": 1e6, "epochs": 1, **DATA}, "diverge"),  # train_sgd's own check
    ("basins", {"points": 1}, "`points` must be an integer from 2 to 60, got 1"),
    ("basins", {"points": 61}, "`points` must be an integer from 2 to 60, got 61"),
    ("basins", {"points": 2.5}, "`points` must be an integer, got 2.5"),
    ("basins", {"lr": 0}, "`lr` must be a finite number > 0"),
    ("basins", {"epochs": 1000}, "125,000 optimiser steps, more than the 25,000"),
    ("basins", {"start": [0, 0]}, "unknown field(s) `start`"),
    # Found by fuzzing the server (session of 2026-11-30): each was an HTTP 500.
    ("surface", {"step": 10**400}, "`step` must be a finite number"),
    ("path", {"path": "p", "start": [10**400, 0]}, "`start` must be two finite numbers"),
    ("path", {"path": "p", "lr": 1e39, "optimiser": "momentum", "epochs": 1, **DATA}, "`lr` holds 1e+39"),
    ("path", {"path": "p", "lr": 3e38, "optimiser": "adam", "epochs": 1, **DATA}, "`optimizer` fails to step"),
    ("basins", {"lr": 1e39, "epochs": 1, "points": 2}, "`lr` holds 1e+39"),
    ("download", {"surface": {}, "paths": [], "view": "contour"}, "needs the field `format`"),
    ("download", {"surface": [], "paths": [], "view": "contour", "format": "html"}, "`surface` must be a JSON object"),
    ("download", {"surface": {}, "paths": {}, "view": "contour", "format": "html"}, "`paths` must be a list"),
    ("download", {"surface": {}, "paths": [{"lr": -1}], "view": "contour", "format": "html"}, "`lr` must be"),
    ("download", {"surface": {"x": 1}, "paths": [], "view": "contour", "format": "html"}, "`surface` has unknown"),
    ("download", {"surface": {}, "paths": [], "view": "cube", "format": "html"}, "`view` must be one of"),
    ("download", {"surface": {}, "paths": [], "view": "contour", "format": "gif"}, "`format` must be one of"),
]


@pytest.mark.parametrize(("endpoint", "body", "message"), REFUSED, ids=[f"{e}-{m[:30]}" for e, _, m in REFUSED])
def test_bad_values_are_refused_with_a_message_and_the_server_keeps_serving(client, endpoint, body, message):
    response = client.post(f"/api/{endpoint}", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert client.post("/api/surface", json={"step": 0.5}).status_code == 200


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "the request body must be JSON"),
        ('{"step": NaN}', "`step` must be a finite number, got NaN"),
        ("[0.1]", "the request must be a JSON object, got [0.1]"),
        ("[" * 30000 + "]" * 30000, "the request body must be JSON: maximum recursion depth"),
        ('{"\\ud800": 1}', "unknown field(s) `\\ud800`"),  # a lone surrogate, escaped in the message
    ],
)
def test_bodies_that_are_no_json_object_are_refused(client, content, message):
    response = client.post("/api/surface", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400 and message in response.json()["error"]


def test_only_json_bodies_of_bounded_size_from_loopback_hosts_are_read(problem, client):
    plain = client.post("/api/surface", content="{}", headers={"content-type": "text/plain"})
    assert plain.status_code == 415 and "application/json" in plain.json()["error"]
    huge = client.post("/api/surface", json={"padding": "x" * 100_000})
    assert huge.status_code == 413
    assert client.get("/api/config", headers={"host": "attacker.example"}).status_code == 400
    with TestClient(build_app(problem, loopback=False, warm_up=False), base_url="http://attacker.example") as open_:
        assert open_.get("/api/config").status_code == 200


def test_the_memory_guard_refuses_work_that_does_not_fit(client, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 * 2**20)
    response = client.post("/api/surface", json={**WINDOW, "step": 0.011})
    assert response.status_code == 400
    assert "this run may use on cpu" in response.json()["error"]  # loss_surface's memory guard


def test_a_queued_request_is_dropped_when_a_newer_one_of_its_kind_arrives():
    async def burst():
        worker, gate, ran = LatestWins(), threading.Event(), []

        def work(name):
            def run():
                ran.append(name)
                return name

            return run

        holding = asyncio.ensure_future(worker.run(None, 0, gate.wait))  # the worker is busy
        moves = [asyncio.ensure_future(worker.run(("page", "surface"), seq, work(seq))) for seq in (1, 2, 3)]
        other_kind = asyncio.ensure_future(worker.run(("page", "path", "p1"), 1, work("p1")))
        other_page = asyncio.ensure_future(worker.run(("other", "surface"), 1, work("other")))
        await asyncio.sleep(0.05)
        late = worker.run(("page", "surface"), 2, work("late"))  # older than one already queued
        with pytest.raises(SupersededError, match="arrived after request 3"):
            await late
        assert worker.keys_in_use == 3
        gate.set()
        results = await asyncio.gather(holding, *moves, other_kind, other_page, return_exceptions=True)
        worker.close()
        return results, ran, worker.keys_in_use

    results, ran, keys = asyncio.run(burst())
    assert [type(r) for r in results[1:3]] == [SupersededError, SupersededError]
    assert results[3:] == [3, "p1", "other"] and ran == [3, "p1", "other"]
    assert keys == 0  # nothing is kept per client once its requests are answered


def test_stopping_finishes_the_running_job_and_answers_the_queued_ones():
    async def stop_while_busy():
        worker, gate = LatestWins(), threading.Event()
        running = asyncio.ensure_future(worker.run(None, 0, lambda: gate.wait() and "finished"))
        queued = asyncio.ensure_future(worker.run(("page", "surface"), 1, lambda: "ran"))
        await asyncio.sleep(0.05)
        worker.close()
        await asyncio.wait([queued], timeout=5)
        answered_first = queued.done() and not running.done()  # not after the running job
        gate.set()
        results = await asyncio.gather(running, queued, return_exceptions=True)
        with pytest.raises(StoppingError):
            await worker.run(None, 0, lambda: "too late")
        return (*results, answered_first)

    finished, queued, answered_first = asyncio.run(stop_while_busy())
    assert finished == "finished" and isinstance(queued, StoppingError) and answered_first


def test_a_request_older_than_one_in_progress_is_answered_409(problem, monkeypatch):
    gate, started = threading.Event(), threading.Event()
    original = problem.surface

    def held(settings_):
        started.set()
        gate.wait()
        return original(settings_)

    monkeypatch.setattr(problem, "surface", held)
    with TestClient(build_app(problem, warm_up=False), base_url=LOOPBACK) as client:
        replies = {}
        newer = threading.Thread(
            target=lambda: replies.update(newer=client.post("/api/surface", json={"client": "c", "seq": 2}))
        )
        newer.start()
        assert started.wait(60)
        older = client.post("/api/surface", json={"client": "c", "seq": 1})
        gate.set()
        newer.join()
    assert older.status_code == 409 and older.json()["superseded"] is True
    assert replies["newer"].status_code == 200


def test_a_figure_draws_every_path_also_when_their_legend_names_agree(client):
    """A name leaves out the batch size: two paths differing only there are both drawn."""
    path = {"start": [0.0, 1.0], "epochs": 2, **DATA}
    body = {"surface": {**WINDOW, **DATA}, "paths": [path, {**path, "batch_size": 16}], "format": "html"}
    html = client.post("/api/download", json={**body, "view": "contour"})
    assert html.status_code == 200
    assert "sgd lr=0.01, 2 epochs from (0, 1)" in html.text and "sgd lr=0.01, 2 epochs from (0, 1) (2)" in html.text


def test_downloads_are_the_library_files(client, split, tmp_path):
    surface = {**WINDOW, **DATA}
    paths = [{"start": [0.0, 1.0], "epochs": 2, **DATA}, {"start": [1.0, 1.0], "epochs": 2, **DATA}]
    html = client.post("/api/download", json={"surface": surface, "paths": paths, "view": "heatmap", "format": "html"})
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert 'filename="loss_surface-heatmap.html"' in html.headers["content-disposition"]
    assert "sgd lr=0.01, 2 epochs from (1, 1)" in html.text and "Plotly.newPlot" in html.text
    npz = client.post("/api/download", json={"surface": surface, "paths": paths, "view": "surface", "format": "npz"})
    assert npz.status_code == 200
    (tmp_path / "s.npz").write_bytes(npz.content)
    stored = fs.load(tmp_path / "s.npz")
    expected = fs.loss_surface(
        fs.ANN(1, 1, 1), split[1], fs.axis(-1.5, 1.0, 0.1), fs.axis(-1.0, 2.0, 0.1), batch_size=32
    )
    np.testing.assert_array_equal(stored.surface.loss, expected.loss)
    last = fs.train_sgd(fs.ANN(1, 1, 1), *split, epochs=2, start=(1.0, 1.0), batch_size=32)
    np.testing.assert_array_equal(stored.trajectory.w1, last.w1)
    assert stored.metadata["provenance"]["explore"]["paths"][1]["start"] == [1.0, 1.0]


def test_a_png_is_rendered_where_kaleido_finds_a_browser(client):
    body = {"surface": {"step": 0.5}, "paths": [], "view": "contour", "format": "png"}
    response = client.post("/api/download", json=body)
    try:
        check_image_export()
    except fs.FastsurfaceError as missing:
        assert response.status_code == 400 and response.json()["error"] == str(missing)
        return
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")


def test_the_page_its_assets_and_plotly_js_are_served_offline(client):
    import plotly.offline

    page = client.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="plotly.min.js">' in page.text
    assert client.get("/plotly.min.js").content == plotly.offline.get_plotlyjs().encode()
    assert "AbortController" in client.get("/static/explore.js").text
    assert client.get("/static/missing.js").status_code == 404
    config = client.get("/api/config").json()
    assert config["defaults"]["w1"] == [-2.0, 2.0] and config["seed_data"] is True
    assert config["zoom_points"] == settings.ZOOM_POINTS


def test_explore_serves_on_a_free_loopback_port_and_stops():
    with fs.explore(block=False, open_browser=False) as explorer:
        assert explorer.url.startswith("http://127.0.0.1:") and explorer.port > 0
        with urllib.request.urlopen(explorer.url) as page:
            assert b"fastsurface explorer" in page.read()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(explorer.url, timeout=5)


def test_a_host_other_than_loopback_is_served_with_a_warning(capsys):
    explorer = fs.explore(host="0.0.0.0", block=False, open_browser=False)
    with explorer, urllib.request.urlopen(explorer.url + "api/config") as reply:
        assert reply.status == 200
    assert "warning: serving on 0.0.0.0, not a loopback address" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"model": small_mlp()}, "`model` and `data` go together"),
        ({"plane": None, "train": ([1.0], [1.0])}, "`train` needs `model` and `data`"),
        ({"port": -1}, "`port` must be an integer in [0, 65535]"),
        ({"port": True}, "`port` must be an integer"),
        ({"host": ""}, "`host` must be a host name"),
        ({"window": (0, 1)}, "`w1` must be two finite numbers"),
        ({"window": 3}, "`window` must be ((w1_start, w1_stop), (w2_start, w2_stop))"),
        ({"step": 0}, "`step` must be > 0"),
        ({"model": small_mlp(), "data": (np.zeros((4, 3)), np.zeros((4, 2)))}, "`plane` is required"),
        ({"model": fs.ANN(1, 1, 1), "data": (np.zeros((4, 3)), np.zeros((4, 1)))}, "shape"),
    ],
)
def test_explore_refuses_bad_arguments_before_serving(arguments, message):
    with pytest.raises(fs.FastsurfaceError, match=re.escape(message)):
        fs.explore(**arguments, block=False, open_browser=False)


def test_a_port_in_use_is_refused():
    explorer = fs.explore(block=False, open_browser=False)
    in_use = f"`port` {explorer.port} on `host` '127.0.0.1' cannot be used"
    with explorer, pytest.raises(fs.FastsurfaceError, match=re.escape(in_use)):
        fs.explore(port=explorer.port, block=False, open_browser=False)


def test_the_command_serves_until_ctrl_c_and_exits_130_with_one_line():
    """Also while engine work runs: the worker's job is not torn down under torch."""
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "fastsurface", "explore", "--no-browser", "--host", "127.0.0.1"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        line = server.stdout.readline()
        assert line.startswith("fastsurface explorer at http://127.0.0.1:") and "(Ctrl-C stops it)" in line
        url = line.split()[3]
        with urllib.request.urlopen(url + "api/config", timeout=60) as reply:
            assert json.loads(reply.read())["seed_data"] is True
        training = threading.Thread(target=_post_quietly, args=(url + "api/path", {"path": "p", "epochs": 3}))
        training.start()
        time.sleep(0.5)  # the path is queued behind the warm-up or training
        server.send_signal(signal.SIGINT)
        _, errors = server.communicate(timeout=120)
        training.join()
    finally:
        server.kill()
    assert server.returncode == 130
    assert errors == "fastsurface: explorer stopped\n"


def test_the_command_names_its_flags_in_errors(capsys):
    from fastsurface.cli import main

    assert main(["explore", "--no-browser", "--port", "70000"]) == 2
    assert "fastsurface: error: `--port` must be an integer in [0, 65535]" in capsys.readouterr().err


def _post_quietly(url: str, body: dict) -> None:
    """POST ``body``, ignoring a server that stops meanwhile."""
    with contextlib.suppress(OSError):
        _post(url, body)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())


def test_the_web_packages_load_only_when_a_server_starts():
    script = "import sys, fastsurface, fastsurface.cli; print(sorted({'starlette', 'uvicorn'} & set(sys.modules)))"
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, check=True)
    assert loaded.stdout.strip() == "[]"


def test_only_the_top_layer_imports_the_explorer():
    package = Path(fs.__file__).parent
    importers = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if "fastsurface.explorer" in path.read_text() and "explorer" not in path.relative_to(package).parts
    }
    assert importers == {"__init__.py", "cli/explore.py"}
