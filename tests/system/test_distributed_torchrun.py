"""Sharding a surface over processes with torch.distributed (gloo on CPU, under torchrun)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fastsurface as fs
from tests.helpers import assert_close

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


SURFACE = ["-m", "fastsurface", "surface", "--step", "0.05", "--samples", "3000", "--no-progress"]


QUIET = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _run(command, tmp_path, **kwargs):
    return subprocess.run(command, cwd=tmp_path, env=QUIET, capture_output=True, text=True, **kwargs)


def _surface_file(tmp_path, name, *arguments, ranks=1):
    launcher = TORCHRUN if ranks > 1 else [sys.executable]
    done = _run([*launcher, *SURFACE, *arguments, "--save", name], tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    return fs.load(tmp_path / name).surface, done.stdout


def test_two_ranks_give_the_single_process_file(tmp_path):
    single, _ = _surface_file(tmp_path, "one.npz", "--block-rows", "7")
    grid, out = _surface_file(tmp_path, "grid.npz", "--block-rows", "7", "--shard", "grid", ranks=2)
    assert "grid sharding over 2 rank(s), 12 block(s)" in out
    assert grid.loss.tobytes() == single.loss.tobytes()
    assert (grid.samples, grid.batches, grid.method) == (single.samples, single.batches, single.method)
    data, out = _surface_file(tmp_path, "data.npz", "--block-rows", "7", "--shard", "data", ranks=2)
    assert "data sharding over 2 rank(s)" in out
    assert_close(data.loss, single.loss, rtol=1e-12)  # the float64 sums are added in another order
    assert (data.samples, data.batches) == (single.samples, single.batches)


def test_data_sharding_keeps_batch_mean_exact(tmp_path):
    arguments = ["--reduction", "batch_mean", "--batch-size", "70", "--dtype", "float64", "--method", "vmap"]
    single, _ = _surface_file(tmp_path, "one.npz", *arguments)
    data, _ = _surface_file(tmp_path, "data.npz", *arguments, "--shard", "data", ranks=2)
    assert_close(data.loss, single.loss, rtol=1e-12)
    assert data.batches == single.batches == 9  # 600 test samples in batches of 70


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of ``rank`` among the launcher's children (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environment = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher_pid and f"RANK={rank}".encode() in environment:
            return int(entry.name)
    return None


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_job_restarted_after_a_rank_died_reuses_the_finished_blocks(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    arguments = [
        *SURFACE,
        "--step",
        "0.01",
        "--method",
        "vmap",
        "--block-rows",
        "8",
        "--checkpoint-dir",
        str(checkpoints),
    ]
    launcher = subprocess.Popen(
        [*TORCHRUN, *arguments, "--save", "s.npz"],
        cwd=tmp_path,
        env=QUIET,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(checkpoints.glob("*/block-*.npz"))) < 6:
        time.sleep(0.05)
    victim = _rank_pid(launcher.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0 and not (tmp_path / "s.npz").exists()
    finished = len(list(checkpoints.glob("*/block-*.npz")))
    assert 6 <= finished < 50
    resumed, out = _surface_file(tmp_path, "s.npz", *arguments[len(SURFACE) :], ranks=2)
    assert f"50 block(s), {finished} reused" in out
    straight, _ = _surface_file(tmp_path, "straight.npz", "--step", "0.01", "--method", "vmap", "--block-rows", "8")
    assert resumed.loss.tobytes() == straight.loss.tobytes()


TWO_CALLS = """
import os
import fastsurface as fs
data = fs.piecewise_dataset(100, seed=5)
for call in range(3):
    run = fs.sharded_loss_surface(fs.ANN(1, 1, 1), data, fs.axis(-2, 2, 0.5), fs.axis(-1, 1, 0.5), shard="grid",
                                  block_rows=2, device="cpu")
    if os.environ["RANK"] == "0" and run.ranks == 2:
        fs.save(f"call{call}.npz", surface=run.surface)
"""


def test_several_calls_in_one_torchrun_job_share_its_process_group(tmp_path):
    """Torch names a re-made default group as the first: joining and leaving per call broke
    the second call (gloo's connectFullMesh refused, or a hang)."""
    (tmp_path / "calls.py").write_text(TWO_CALLS)
    done = _run([*TORCHRUN, "calls.py"], tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    single = fs.loss_surface(
        fs.ANN(1, 1, 1), fs.piecewise_dataset(100, seed=5), fs.axis(-2, 2, 0.5), fs.axis(-1, 1, 0.5)
    )
    for call in range(3):
        assert fs.load(tmp_path / f"call{call}.npz").surface.loss.tobytes() == single.loss.tobytes()
