"""Checkpoints across processes: a killed or interrupted command resumes from its finished
blocks, and a run's key is the same in another process."""

import os
import signal
import subprocess
import sys
import time

import pytest

import fastsurface as fs
from fastsurface.cli import main
from fastsurface.runs import checkpoint as checkpoint_module

COMMAND = ["surface", "--step", "0.25", "--samples", "2000", "--block-rows", "1", "--no-progress"]
# The CLI with every block slowed down, so that a signal lands mid-run; the numbers are unchanged.
SLOW_CLI = """
import sys, time
import fastsurface.runs.checkpoint as checkpoint
from fastsurface.cli import main
evaluate = checkpoint.grid_surface
def slow(*args, **kwargs):
    time.sleep(0.25)
    return evaluate(*args, **kwargs)
checkpoint.grid_surface = slow
sys.exit(main(sys.argv[1:]))
"""


def _cli(*arguments, slow=False, cwd):
    head = ["-c", SLOW_CLI] if slow else ["-m", "fastsurface"]
    return subprocess.Popen(
        [sys.executable, *head, *COMMAND, *arguments],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _blocks(folder):
    return sorted(folder.glob("*/block-*.npz"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    done = _cli("--checkpoint-dir", "ck", "--save", "s.npz", cwd=folder)
    assert done.communicate() and done.returncode == 0
    return fs.load(folder / "s.npz").surface


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted, signum):
    killed = _cli("--checkpoint-dir", "ck", "--save", "s.npz", slow=True, cwd=tmp_path)
    deadline = time.monotonic() + 120  # a guard against a hang, not a timing assertion
    while len(_blocks(tmp_path / "ck")) < 3 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signum)
    error = killed.communicate()[1]
    assert killed.returncode == (130 if signum == signal.SIGTERM else -signal.SIGKILL)
    if signum == signal.SIGTERM:
        assert "interrupted; no output was written" in error
    assert not (tmp_path / "s.npz").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no partial or temporary output file
    finished = len(_blocks(tmp_path / "ck"))
    assert 3 <= finished < 16

    resumed = _cli("--checkpoint-dir", "ck", "--save", "s.npz", cwd=tmp_path)
    output = resumed.communicate()[0]
    assert resumed.returncode == 0
    assert f"16 block(s), {finished} reused from ck" in output
    surface = fs.load(tmp_path / "s.npz").surface
    assert surface.loss.tobytes() == uninterrupted.loss.tobytes()
    assert _blocks(tmp_path / "ck") == []  # the run's blocks are removed once the file is saved


def test_ctrl_c_in_the_cli_keeps_finished_blocks_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    evaluate = checkpoint_module.grid_surface
    calls = []

    def interrupted_on_the_fourth_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "grid_surface", interrupted_on_the_fourth_block)
    assert main([*COMMAND, "--checkpoint-dir", "ck", "--save", "s.npz"]) == 130
    assert "run the same command to resume" in capsys.readouterr().err
    assert len(_blocks(tmp_path / "ck")) == 3 and not (tmp_path / "s.npz").exists()
    assert main([*COMMAND, "--checkpoint-dir", "ck", "--save", "s.npz"]) == 0
    assert "3 reused" in capsys.readouterr().out
    assert len(calls) == 4 + 13  # the three finished blocks were not computed again


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_key_is_the_same_in_another_process(tmp_path):
    """Hash seeds differ between processes: a set literal in a model's code must not move the key."""
    script = (
        "import fastsurface as fs, torch\n"
        "from fastsurface.engine.options import EvalOptions\n"
        "from fastsurface.runs.checkpoint import run_key\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)\n"
        "    def forward(self, x):\n"
        "        return self.b(torch.tanh(self.a(x))) if 'tanh' in {'tanh', 'relu', 'gelu'} else x\n"
        "axes = fs.axis(0, 1, 0.5)\n"
        "print(run_key(M(), fs.piecewise_dataset(20), axes, axes, 1, None, EvalOptions()))\n"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(keys) == 1 and len(keys.pop()) == 65
