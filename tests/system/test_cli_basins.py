"""``fastsurface basins``: the seed basin map from the command line."""

from __future__ import annotations

import numpy as np
import pytest

import fastsurface as fs
from fastsurface.cli import main

SMALL = ["--step", "0.5", "--samples", "1000", "--epochs", "2", "--no-progress"]


def test_the_command_writes_the_map_and_the_runs(tmp_path, capsys):
    output, saved = tmp_path / "map.html", tmp_path / "runs.npz"
    arguments = ["basins", "--output", str(output), "--save", str(saved), "--watershed", "--optimizer", "adam"]
    assert main([*arguments, "--lr", "0.05", *SMALL]) == 0
    summary = capsys.readouterr().out
    assert "runs      64 starts on a 8 x 8 grid, Adam(lr=0.05)" in summary and "attractor 0:" in summary
    assert "geometric basin(s)" in summary and f"wrote     {saved}" in summary
    html = output.read_text()
    assert '"type":"heatmap"' in html and "watershed boundaries" in html and "attractors" in html
    stored = fs.load(saved)
    assert stored.trajectories is not None and stored.trajectories.grid_shape == (8, 8)
    assert stored.surface is not None and np.array_equal(stored.surface.w1, stored.trajectories.grid_w1)
    assert stored.metadata["provenance"]["optimizer"] == "adam"


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        (["--lr", "0"], "`--lr`"),
        (["--epochs", "0"], "`--epochs`"),
        (["--tolerance", "-1"], "`--tolerance`"),
        (["--sample-paths", "0"], "`--sample-paths`"),
        (["--output", "map.png"], "`--output`"),
        (["--save", "runs.txt"], "`--save`"),
        (["--step", "5"], "`--step`"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, capsys, arguments, name):
    assert main(["basins", "--output", str(tmp_path / "m.html"), *SMALL, *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("fastsurface: error: ") and name in error and error.count("\n") == 1
    assert not (tmp_path / "m.html").exists()


def test_help_lists_the_optimizers(capsys):
    with pytest.raises(SystemExit):
        main(["basins", "--help"])
    assert "{sgd,momentum,nesterov,adam,adamw,rmsprop,adagrad}" in capsys.readouterr().out
