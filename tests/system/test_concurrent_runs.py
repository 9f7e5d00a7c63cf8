"""Two processes in one run: the same checkpointed command started twice at once."""

import subprocess
import sys

import numpy as np
import pytest

import fastsurface as fs
from tests.system.test_checkpoint_processes import COMMAND, SLOW_CLI


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_same_checkpointed_command_twice_at_once_finishes_both_with_one_result(tmp_path):
    shared = tmp_path / "ck"
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", SLOW_CLI, *COMMAND, "--checkpoint-dir", str(shared), "--save", "surface.npz"],
            cwd=tmp_path / name,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [error for _, error in outputs]
    files = [tmp_path / name / "surface.npz" for name in ("first", "second")]
    assert np.array_equal(fs.load(files[0]).surface.loss, fs.load(files[1]).surface.loss)
    assert files[0].read_bytes() == files[1].read_bytes()  # equal work, equal bytes: no timings inside
    assert list(shared.iterdir()) == []  # the last one out removed the run's folder


def test_a_run_whose_folder_another_run_removed_makes_it_again(tmp_path):
    model, data = fs.ANN(1, 1, 1), fs.piecewise_dataset(100)
    first = fs.Checkpoint.open(tmp_path, model, data, fs.axis(0, 1, 0.5), fs.axis(0, 1, 0.5), block_rows=1)
    first.compute()
    first.remove()
    second = fs.Checkpoint.open(tmp_path, model, data, fs.axis(0, 1, 0.5), fs.axis(0, 1, 0.5), block_rows=1)
    assert second.folder == first.folder and second.folder.is_dir() and second.pending() == list(second.blocks)


def test_a_process_still_in_the_run_keeps_the_folder_until_it_finishes(tmp_path):
    model, data = fs.ANN(1, 1, 1), fs.piecewise_dataset(100)
    axes = fs.axis(0, 1, 0.5), fs.axis(0, 1, 0.5)
    early, late = (fs.Checkpoint.open(tmp_path, model, data, *axes, block_rows=1) for _ in range(2))
    early.compute()
    early.remove()
    assert late.folder.is_dir() and late.pending() == []  # the finished blocks are still there to reuse
    assert np.array_equal(late.assemble().loss, fs.loss_surface(model, data, *axes).loss)
    late.remove()
    assert not late.folder.exists()
