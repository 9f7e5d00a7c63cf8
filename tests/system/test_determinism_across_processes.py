"""Same inputs and seeds give the same numbers, bit for bit, on CPU, across processes."""

import hashlib
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

# Data, split, SGD path and surface of a small seed problem, as one digest of their bytes.
SCRIPT = """
import hashlib, fastsurface as fs
train, test = fs.train_test_split(*fs.piecewise_dataset(500, seed=7), seed=3)
model = fs.ANN(1, 1, 1)
path = fs.train_sgd(model, train, test, epochs=1, seed=5, device="cpu")
surface = fs.loss_surface(model, test, fs.axis(-2, 2, 0.2), fs.axis(-1, 1.5, 0.1), device="cpu", tile_points=37)
parts = (*train, *test, path.w1, path.w2, path.loss, surface.loss)
print(hashlib.sha256(b"".join(part.tobytes() for part in parts)).hexdigest())
"""


def _digest_here():
    namespace = {}
    lines = SCRIPT.strip().splitlines()
    exec("\n".join(lines[:-1]), namespace)  # the script's computation, in this process
    parts = namespace["parts"]
    return hashlib.sha256(b"".join(part.tobytes() for part in parts)).hexdigest()


def test_two_processes_and_this_one_agree_bit_for_bit():
    runs = [subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    digests = {run.communicate()[0].strip() for run in runs}
    assert [run.returncode for run in runs] == [0, 0]
    assert digests == {_digest_here()}
