import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from fastsurface.cli import main
from tests.helpers import REPOSITORY, SMALL_RUN


def readme_demo_arguments() -> list[str]:
    """The arguments of the README's `fastsurface run` command."""
    readme = (REPOSITORY / "README.md").read_text()
    command = re.search(r"fastsurface (run[^\n`&|]*)", readme).group(1)
    return shlex.split(command)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_readme_demo_command_writes_a_figure_with_surface_and_path(tmp_path):
    arguments = readme_demo_arguments()
    output = tmp_path / arguments[arguments.index("--output") + 1]
    arguments[arguments.index("--output") + 1] = str(output)
    done = subprocess.run(
        [sys.executable, "-m", "fastsurface", *arguments, *SMALL_RUN],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    html = output.read_text()
    assert '"type":"surface"' in html and '"type":"scatter3d"' in html
    assert "grid      16 x 16 = 256 points" in done.stdout and f"wrote     {output}" in done.stdout
    assert "lowest    loss" in done.stdout
    assert [p.name for p in tmp_path.iterdir()] == [output.name]  # no temporary file left behind


def test_the_grid_grows_over_the_path_by_default_and_the_summary_says_so(tmp_path, capsys):
    output, small_window = tmp_path / "f.html", ["--w1", "-1", "1", "--w2", "-1", "1"]
    assert main(["run", "--output", str(output), *small_window, "--no-fit-trajectory", *SMALL_RUN]) == 0
    assert "leaves the grid (w1 spans [-1.306, -1], grid [-1, 0.75])" in capsys.readouterr().out
    assert main(["run", "--output", str(output), *small_window, *SMALL_RUN]) == 0
    out = capsys.readouterr().out
    assert "w1 in [-1.5, 0.75], w2 in [-1, 0.75]" in out and "leaves the grid" not in out
    assert "window    [-1, 1) x [-1, 1) grown along w1 to cover the SGD path" in out
    assert main(["run", "--output", str(output), *SMALL_RUN]) == 0  # the article's window holds this short path
    out = capsys.readouterr().out
    assert "grid      16 x 16 = 256 points" in out and "window    [-2, 2) x [-2, 2) holds the whole SGD path" in out


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        (["--step", "0"], "`--step`"),
        (["--w1", "1", "-1"], "`--w1`"),
        (["--lr", "-1"], "`--lr`"),
        (["--epochs", "0"], "`--epochs`"),
        (["--device", "cuda:7"], "`--device`"),
        (["--output", "/nonexistent/dir/f.html"], "`--output`"),
        (["--output", "figure.png"], "`--output`"),
        (["--test-size", "1.5"], "`--test-size`"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_a_nonzero_exit(tmp_path, capsys, arguments, name):
    base = ["run", "--output", str(tmp_path / "f.html"), *SMALL_RUN]
    assert main(base + arguments) == 2
    captured = capsys.readouterr()
    assert name in captured.err and "Traceback" not in captured.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_bench_prints_one_table_and_writes_json(tmp_path, capsys):
    output = tmp_path / "bench.json"
    arguments = ["bench", "--device", "cpu", "--steps", "0.5", "0.25", "--methods", "closed_form", "vmap"]
    assert main([*arguments, "--repeats", "1", "--naive-rows", "1", "--json", str(output)]) == 0
    table = capsys.readouterr().out
    assert "closed_form" in table and "vmap" in table and "extrapolated" in table and "tanh ceiling" in table
    result = json.loads(output.read_text())
    rows = {(row["method"], row["step"]): row for row in result["rows"]}
    assert set(rows) == {(m, s) for m in ("closed_form", "vmap", "naive") for s in (0.5, 0.25)}
    assert rows[("vmap", 0.25)]["points"] == 256 and rows[("vmap", 0.25)]["samples"] == 2000
    assert rows[("naive", 0.5)]["speedup"] == 1.0 and rows[("vmap", 0.5)]["speedup"] > 0


@pytest.mark.slow
def test_bench_skips_cases_estimated_beyond_the_time_limit(capsys):
    assert (
        main(
            [
                "bench",
                "--device",
                "cpu",
                "--steps",
                "0.5",
                "0.001",
                "--methods",
                "vmap",
                "--repeats",
                "1",
                "--naive-rows",
                "1",
                "--max-seconds",
                "0.5",
            ]
        )
        == 0
    )
    assert "skipped: est." in capsys.readouterr().out


@pytest.mark.slow
def test_bench_model_prints_one_table_and_writes_json(tmp_path, capsys):
    output = tmp_path / "bench.json"
    arguments = ["bench", "--model", "mlp-2-8-1-tanh", "cnn-digits", "--device", "cpu", "--grid", "3"]
    assert main([*arguments, "--samples", "32", "--repeats", "1", "--json", str(output)]) == 0
    table = capsys.readouterr().out
    assert "mlp-2-8-1-tanh" in table and "cnn-digits" in table and "of sgemm" in table and "ceilings measured" in table
    result = json.loads(output.read_text())
    assert [row["case"] for row in result["rows"]] == ["mlp-2-8-1-tanh", "cnn-digits"]
    assert all(row["points"] == 9 and row["samples"] == 32 and row["error"] < 1e-5 for row in result["rows"])
    ceilings = result["machine"]["ceilings"]["cpu"]
    assert set(ceilings) == {"sgemm_flops_per_second", "tanh_per_second", "relu_per_second"}


@pytest.mark.slow
def test_bench_basins_prints_one_table_and_writes_json(tmp_path, capsys):
    output = tmp_path / "bench.json"
    arguments = ["bench", "--basins", "--device", "cpu", "--grid", "4", "--epochs", "1", "--json", str(output)]
    assert main(arguments) == 0
    table = capsys.readouterr().out
    assert "vs plain" in table and "4 x 4 starts over [-2, 2)^2, 1 epochs" in table and "baselines timed" in table
    result = json.loads(output.read_text())
    (row,) = result["rows"]
    assert (row["device"], row["runs"], row["steps_per_run"], row["note"]) == ("cpu", 16, 125, "")
    assert set(result["machine"]["ceilings"]["cpu"]) == {"tanh_per_second"}


def test_ranges_in_scientific_notation(tmp_path, capsys):
    arguments = ["run", "--output", str(tmp_path / "f.html"), "--w1", "-1e0", "1e0", "--w2", "-2.5e-1", "2.5e-1"]
    arguments.append("--no-fit-trajectory")  # the window as given
    assert main([*arguments, *SMALL_RUN]) == 0
    assert "w1 in [-1, 0.75], w2 in [-0.25, 0]" in capsys.readouterr().out


@pytest.mark.multiprocess
def test_help_imports_no_machinery_of_any_command():
    """The command modules import torch, numpy, plotly and the engine only inside a handler.
    The package's ``__init__`` imports all of them today, so this loads the CLI under a bare
    ``fastsurface`` package."""
    script = f"""
import json, sys, types
package = types.ModuleType("fastsurface")
package.__path__ = [{str(REPOSITORY / "fastsurface")!r}]
sys.modules["fastsurface"] = package
from fastsurface.cli import main
for command in ([], ["run"], ["surface"], ["show"], ["bench"]):
    try:
        main([*command, "--help"])
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert "fastsurface.cli.bench" in loaded
    assert [name for name in loaded if name.split(".")[0] in ("torch", "numpy", "plotly", "tqdm")] == []
    light = {"fastsurface", "fastsurface._support", "fastsurface._support.choices", "fastsurface._support.files"}
    package = {name for name in loaded if name.startswith("fastsurface") and not name.startswith("fastsurface.cli")}
    assert package <= light | {"fastsurface.errors"}


@pytest.mark.parametrize(("chosen", "expected"), [(None, "1"), ("0", "0")])
def test_the_command_puts_torch_s_large_blocks_on_huge_pages_unless_the_user_chose(monkeypatch, chosen, expected):
    """The command's process sets torch's THP_MEM_ALLOC_ENABLE before torch allocates (a
    tile's temporaries of megabytes then fault in 2 MB at a time); a value the user set stays."""
    import fastsurface.__main__ as entry
    import fastsurface.cli

    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "restored after the test")
    if chosen is None:
        monkeypatch.delenv("THP_MEM_ALLOC_ENABLE")
    else:
        monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", chosen)
    seen = []
    monkeypatch.setattr(fastsurface.cli, "main", lambda: seen.append(os.environ.get("THP_MEM_ALLOC_ENABLE")) or 0)
    monkeypatch.setattr(sys, "argv", ["fastsurface", "--help"])
    with pytest.raises(SystemExit) as ended:
        entry.run()
    assert ended.value.code == 0 and seen == [expected]
