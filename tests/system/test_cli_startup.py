"""The command line during start-up: light to import, and Ctrl-C while the engine loads
gives one line and exit status 130, not a traceback."""

import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.multiprocess


@pytest.mark.slow
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
