import pytest

from tests.helpers import REPOSITORY

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("sklearn")  # the real-data section's digits (dev extra)
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]  # a Jupyter kernel runs the notebook

NOTEBOOK = REPOSITORY / "examples" / "fastsurface_tour.ipynb"


def test_the_tour_notebook_runs_from_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's future path layout, without its warning
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # stored clean
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "saddle" in printed and "contour.html" in printed and "per-class accuracy" in printed
