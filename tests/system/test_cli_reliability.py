"""The command line during start-up: light to import, and Ctrl-C while the engine loads
gives one line and exit status 130, not a traceback."""

import signal
import subprocess
import sys
import time

import pytest


def test_ctrl_c_while_the_engine_loads_is_one_line_and_130(tmp_path):
    command = [sys.executable, "-m", "fastsurface", "run", "--output", str(tmp_path / "f.html")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # inside the handler's imports (torch, the engine) or its work: both must end cleanly
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 130, error
    assert error.strip().count("\n") == 0 and error.startswith("fastsurface: interrupted"), error
    assert not (tmp_path / "f.html").exists()


def test_importing_the_package_loads_no_engine():
    code = "import sys, fastsurface; print(sorted(m for m in ('torch', 'plotly', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _cli(capsys, *arguments):
    from fastsurface.cli import main

    status = main(list(arguments))
    return status, capsys.readouterr().err


def test_empty_paths_are_refused_not_taken_for_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for flags in (["run", "--output", ""], ["surface", "--checkpoint-dir", "", "--step", "0.5"]):
        status, error = _cli(capsys, *flags)
        assert status == 2 and error.count("\n") == 1 and flags[1] in error, error
    assert list(tmp_path.iterdir()) == []


def test_critical_points_on_a_too_coarse_grid_are_refused_before_training(tmp_path, capsys, monkeypatch):
    import fastsurface as fs

    monkeypatch.setattr(fs, "train_sgd", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    status, error = _cli(
        capsys, "run", "--critical-points", "--w1", "0", "1", "--step", "0.5", "--output", str(tmp_path / "f.html")
    )
    assert status == 2 and "`--critical-points`" in error


def test_bench_keeps_to_max_seconds_whatever_the_repeats(capsys):
    started = time.perf_counter()
    status, _ = _cli(
        capsys,
        "bench",
        "--device",
        "cpu",
        "--steps",
        "0.5",
        "--methods",
        "closed_form",
        "--repeats",
        "1000000000",
        "--max-seconds",
        "1",
        "--naive-rows",
        "1",
    )
    assert status == 0 and time.perf_counter() - started < 300  # a guard against a hang, not a timing assertion


LONG = "y" * 300


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["surface", "--save", LONG + ".npz"], "`--save` is too long a file name"),
        (["run", "--output", LONG + ".html"], "`--output` is too long a file name"),
        (["show", LONG + ".npz"], "`path` cannot be used: File name too long"),
        (["surface", "--checkpoint-dir", LONG], "`--checkpoint-dir` cannot be used: File name too long"),
        (["surface", "--save", "\udcff.npz"], "`--save` must be a name in UTF-8"),  # argv bytes that are not UTF-8
        (["show", "\udcff.npz"], "`path` must be a name in UTF-8"),
    ],
    ids=[
        "save-too-long",
        "output-too-long",
        "show-too-long",
        "checkpoint-dir-too-long",
        "save-not-utf-8",
        "show-not-utf-8",
    ],
)
def test_file_names_the_system_cannot_take_are_one_line_errors(tmp_path, capsys, monkeypatch, flags, says):
    monkeypatch.chdir(tmp_path)
    status, error = _cli(capsys, *flags, *(["--step", "0.5", "--samples", "200"] if flags[0] != "show" else []))
    assert status == 2 and error.count("\n") == 1 and error.startswith(f"fastsurface: error: {says}"), error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.multiprocess
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    import fastsurface as fs

    surface = fs.loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(50), [0.0, 1.0], [0.0, 1.0])
    provenance = {f"fact{i}": "x" * 500 for i in range(400)}  # 200 kB to print: more than a pipe holds
    saved = fs.save(tmp_path / "s.npz", surface=surface, provenance=provenance)
    command = [sys.executable, "-m", "fastsurface", "show", str(saved)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        first = process.stdout.readline()  # as `fastsurface show FILE | head -1` reads it
        process.stdout.close()
        error = process.stderr.read()
    assert process.returncode == 1 and error == "", error
    assert first.startswith(f"file      {saved}: fastsurface format")
