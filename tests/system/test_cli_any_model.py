"""The command line on a user's own model file: an MLP and a small CNN defined in a
temporary ``.py`` file, data from loader functions, surfaces on random, PCA and Hessian
planes, each checked against the library's result for the same settings, bit for bit
(the same computations in the same process, on the CPU)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsurface as fs
from fastsurface.cli import main

USER_CODE = """
import torch
from torch import nn


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


def mlp_seeded(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


def mlp_end():
    return mlp_seeded(5)


def mlp_other_end():
    return mlp_seeded(6)


def cnn():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def regression():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(48, 3, generator=g)
    return x, torch.sin(x[:, :2])


def regression_batches():
    x, y = regression()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 48, 16)]


def images():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 1, 6, 6, generator=g)
    return x, (x.mean(dim=(1, 2, 3)) > 0).long()


def raising():
    raise RuntimeError("no weights here")


def not_a_model():
    return 3


def generator_of_batches():
    yield from regression_batches()
"""

# (model factory, data loader, loss) of each user model.
MODELS = {"mlp": ("mlp", "regression", "mse"), "cnn": ("cnn", "images", "cross_entropy")}
GRID = ["--w1", "-1", "1", "--w2", "-1", "1", "--step", "0.5"]
TRAINING = ["--optimizer", "adam", "--lr", "0.05", "--epochs", "3", "--batch-size", "16", "--train-seed", "0"]


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    file = tmp_path / "user_models.py"
    file.write_text(USER_CODE)
    return file


def _user(file: Path, name: str) -> object:
    """``name`` from the user file, imported independently of the command line."""
    spec = importlib.util.spec_from_file_location("user_models_reference", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)()


def _trained(model: torch.nn.Module, vector: np.ndarray) -> torch.nn.Module:
    trained = copy.deepcopy(model)
    torch.nn.utils.vector_to_parameters(torch.as_tensor(vector, dtype=torch.float32), trained.parameters())
    return trained


def _library_plane(kind: str, model: torch.nn.Module, data: object, path: object, loss: str) -> fs.Plane:
    if kind == "random":
        return fs.random_plane(model, seed=0)
    if kind == "pca":
        return fs.pca_plane(path).plane
    return fs.hessian_plane(model, data, loss=loss).plane


@pytest.mark.parametrize("plane", ["random", "pca", "hessian"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_run_on_a_user_model_saves_the_librarys_surface(tmp_path, user_file, capsys, name, plane):
    factory, loader, loss = MODELS[name]
    saved = tmp_path / "s.npz"
    arguments = ["run", "--model", f"{user_file}:{factory}", "--data", f"{user_file}:{loader}", "--loss", loss]
    arguments += ["--plane", plane, *GRID, *TRAINING, "--device", "cpu", "--no-progress", "--no-fit-trajectory"]
    assert main([*arguments, "--output", str(tmp_path / "f.html"), "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    assert f"plane     {plane}" in out and "grid      4 x 4 = 16 points" in out

    model, data = _user(user_file, factory), _user(user_file, loader)
    path = fs.record_path(
        model, data, optimizer=lambda p: torch.optim.Adam(p, lr=0.05), epochs=3, loss=loss, batch_size=16, seed=0
    )
    trained = _trained(model, path.vectors[-1])
    library_plane = _library_plane(plane, trained, data, path, loss)
    grid = fs.axis(-1, 1, 0.5)
    expected = fs.loss_surface(trained, data, grid, grid, plane=library_plane, loss=loss, device="cpu")
    projected = fs.project_path(trained, library_plane, path, data, loss=loss, device="cpu")

    stored = fs.load(saved)
    assert stored.surface is not None and stored.trajectory is not None and stored.plane is not None
    np.testing.assert_array_equal(stored.surface.loss, expected.loss)  # exactly: the same computation
    np.testing.assert_array_equal(stored.trajectory.loss, projected.loss)
    for part in ("origin", "first", "second"):
        for key, tensor in getattr(library_plane, part).items():
            torch.testing.assert_close(getattr(stored.plane, part)[key], tensor, rtol=0, atol=0)


def test_surface_on_a_user_model_with_its_plane_flags(tmp_path, user_file, capsys):
    saved = tmp_path / "s.npz"
    arguments = ["surface", "--model", f"{user_file}:mlp", "--data", f"{user_file}:regression_batches", *GRID]
    arguments += ["--plane", "random", "--plane-seed", "3", "--normalization", "layer", "--orthogonal"]
    assert main([*arguments, "--reduction", "batch_mean", "--no-progress", "--save", str(saved)]) == 0
    assert "plane     random, seed 3, layer normalisation" in capsys.readouterr().out
    model, batches = _user(user_file, "mlp"), _user(user_file, "regression_batches")
    plane = fs.random_plane(model, seed=3, normalization="layer", orthogonal=True)
    grid = fs.axis(-1, 1, 0.5)
    expected = fs.loss_surface(model, batches, grid, grid, plane=plane, reduction="batch_mean", device="auto")
    np.testing.assert_array_equal(fs.load(saved).surface.loss, expected.loss)


def test_entries_and_interpolation_planes(tmp_path, user_file, capsys):
    common = ["surface", "--model", f"{user_file}:mlp", "--data", f"{user_file}:regression", *GRID, "--no-progress"]
    saved = tmp_path / "e.npz"
    assert main([*common, "--plane", "entries", "--entries", "0.weight[1, 2]", "2.bias[0]", "--save", str(saved)]) == 0
    model, data = _user(user_file, "mlp"), _user(user_file, "regression")
    grid = fs.axis(-1, 1, 0.5)
    plane = fs.entry_plane(model, "0.weight[1, 2]", "2.bias[0]")
    np.testing.assert_array_equal(
        fs.load(saved).surface.loss, fs.loss_surface(model, data, grid, grid, plane=plane).loss
    )
    ends = [f"{user_file}:mlp_end", f"{user_file}:mlp_other_end"]
    for count, library_plane in (
        (1, fs.interpolation_line(model, _user(user_file, "mlp_end"))),
        (2, fs.interpolation_plane(model, _user(user_file, "mlp_end"), _user(user_file, "mlp_other_end"))),
    ):
        assert main([*common, "--plane", "interpolation", "--plane-end", *ends[:count], "--save", str(saved)]) == 0
        expected = fs.loss_surface(model, data, grid, grid, plane=library_plane)
        np.testing.assert_array_equal(fs.load(saved).surface.loss, expected.loss)
    assert "plane     interpolation from the model to" in capsys.readouterr().out


BAD = [
    (["--model", "{file}"], "`--model`", "a colon"),
    (["--model", "{folder}/missing.py:mlp"], "`--model`", "must be an existing file"),
    (["--model", "{folder}/" + "m" * 300 + ".py:mlp"], "`--model`", "File name too long"),
    (["--model", "{file}:absent"], "`--model`", "has no 'absent'"),
    (["--model", "{file}:raising"], "`--model`", "RuntimeError: no weights here"),
    (["--model", "{file}:not_a_model"], "`--model`", "must return a torch.nn.Module, got int"),
    (["--model", "no_such_package.module:f"], "`--model`", "cannot import"),
    (["--data", "{file}:not_a_model"], "`--data`", "returned the wrong thing"),
    (["--data", "{file}:generator_of_batches"], "`--data`", "one-shot iterator"),
    (["--model", "{file}:mlp", "--data", "{file}:images"], "`--model`", "fails on the inputs"),
    (["--model", "{file}:mlp", "--plane", "entries"], "`--entries`", "needs it"),
    (["--data", "{file}:regression_batches", "--plane", "hessian"], "`--plane`", "(x, y) pair"),
    (["--model", "{file}:mlp", "--plane", "pca"], "`--plane`", "at least 3 recorded points, got 2 (`--epochs` 1)"),
    (["--model", "{file}:mlp", "--plane", "weights"], "`--plane`", "exactly two parameter entries"),
    (["--model", "{file}:mlp", "--loss", "hinge"], "`--loss`", "'mse'"),
    (["--model", "{file}:mlp", "--lr", "-1"], "`--lr`", "> 0"),
]


@pytest.mark.parametrize(("flags", "named", "says"), BAD)
def test_bad_specs_are_one_line_naming_the_flag_and_write_nothing(tmp_path, user_file, capsys, flags, named, says):
    flags = [flag.format(file=user_file, folder=tmp_path) for flag in flags]
    if "--data" not in flags:
        flags += ["--data", f"{user_file}:regression"]
    outputs = tmp_path / "out"
    outputs.mkdir()
    arguments = ["run", *flags, *GRID, "--epochs", "1", "--no-progress"]
    assert main([*arguments, "--output", str(outputs / "f.html"), "--save", str(outputs / "s.npz")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"fastsurface: error: {named}") and says in error, error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert list(outputs.iterdir()) == []


def test_surface_refuses_pca_without_a_training_path(user_file, capsys):
    arguments = ["surface", "--model", f"{user_file}:mlp", "--data", f"{user_file}:regression", "--plane", "pca"]
    assert main([*arguments, *GRID, "--no-progress"]) == 2
    assert "`fastsurface run --plane pca`" in capsys.readouterr().err


def test_help_says_that_a_spec_runs_the_users_code(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--model SPEC" in text and "runs its code, with your permissions" in text and "--plane" in text
