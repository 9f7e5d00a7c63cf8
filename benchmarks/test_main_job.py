"""The README's main job, ``fastsurface run --output loss_surface.html``, against a bare
``python -c "import torch"``, both as fresh processes in the same run.

Run: ``python -m pytest benchmarks/test_main_job.py -s --benchmark-json=main.json``. Rounds
alternate the two commands, so both see the same machine load; the median of each is
reported, with their ratio and difference, in ``extra_info``, and a breakdown of the job
by stage (measured in separate processes of the same work) is printed.

Both commands run from compiled bytecode, as an installed package does from its second run
on: the environment's ``PYTHONDONTWRITEBYTECODE`` is lifted and bytecode goes to a private
``PYTHONPYCACHEPREFIX``, filled by a warm-up run of each command.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROUNDS = 5
ROOT = Path(__file__).resolve().parents[1]
# The main job's stages, as `fastsurface run` does them, timed in one process.
BREAKDOWN = r"""
import json, sys, time
marks = [time.perf_counter()]
import torch
marks.append(time.perf_counter())
import fastsurface as fs
from fastsurface.cli import main
from fastsurface.analysis.refine import fit_window
from fastsurface.views.surface import surface_figure
marks.append(time.perf_counter())
train, test = fs.train_test_split(*fs.piecewise_dataset(10_000, seed=42), test_size=0.2, seed=0)
model = fs.ANN(1, 1, 1)
path = fs.train_sgd(model, train, test)
marks.append(time.perf_counter())
w1, w2 = fit_window(fs.axis(-2, 2, 0.05), fs.axis(-2, 2, 0.05), path, 0.05)
surface = fs.loss_surface(model, test, w1, w2)
marks.append(time.perf_counter())
figure = surface_figure(surface, path)
marks.append(time.perf_counter())
fs.write_figure(figure, sys.argv[1])
marks.append(time.perf_counter())
stages = ["import torch", "import fastsurface", "data and training", "surface", "figure", "write"]
print(json.dumps(dict(zip(stages, (b - a for a, b in zip(marks, marks[1:]))))))
"""


@pytest.fixture(scope="module")
def environment(tmp_path_factory) -> dict[str, str]:
    """This process's environment, with bytecode cached in a private folder."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _seconds(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def test_main_job_against_import_torch(benchmark, environment, tmp_path):
    output = tmp_path / "loss_surface.html"
    job = [sys.executable, "-m", "fastsurface", "run", "--output", str(output)]
    bare = [sys.executable, "-c", "import torch"]
    for command in (bare, job):  # warm-up: compiles the bytecode
        _seconds(command, environment)
    torch_seconds: list[float] = []
    benchmark.pedantic(
        lambda: subprocess.run(job, env=environment, check=True, capture_output=True),
        setup=lambda: torch_seconds.append(_seconds(bare, environment)),  # not timed as the job
        rounds=ROUNDS,
        iterations=1,
    )
    assert "Plotly.newPlot" in output.read_text()
    job_median, torch_median = benchmark.stats.stats.median, statistics.median(torch_seconds)
    stages = [_stages(environment, tmp_path / "stages.html") for _ in range(ROUNDS)]
    breakdown = {stage: statistics.median(run[stage] for run in stages) for stage in stages[0]}
    benchmark.extra_info.update(
        main_job_seconds=job_median,
        import_torch_seconds=torch_median,
        ratio=job_median / torch_median,
        beyond_import_torch_seconds=job_median - torch_median,
        breakdown_seconds=breakdown,
        rounds=ROUNDS,
    )
    print(
        f"\nfastsurface run: {job_median:.2f} s, import torch: {torch_median:.2f} s (medians of {ROUNDS}): "
        f"ratio {job_median / torch_median:.2f}, {job_median - torch_median:+.2f} s beyond import torch\n"
        + "\n".join(f"  {stage:<20} {seconds:7.3f} s" for stage, seconds in breakdown.items())
    )


def _stages(env: dict[str, str], output: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", BREAKDOWN, str(output)], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout)
