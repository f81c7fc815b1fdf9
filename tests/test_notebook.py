"""notebooks/churn.ipynb runs end to end on the real data, says true things and leaves no trace."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "churn.ipynb"
#: Where a notebook that misbehaves would leave files: itself, the MLflow store, the reports.
WATCHED_DIRS = ("notebooks", ".xgbops", "reports", "mlruns", "mlartifacts")


def _code_cells(notebook: NotebookNode) -> list[NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _tagged(notebook: NotebookNode, tag: str) -> NotebookNode:
    cells = [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _text(cell: NotebookNode) -> str:
    """What a cell printed, plus the plain-text form of its results."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def _snapshot() -> dict[str, tuple[int, int] | None]:
    """Top-level entries of the repository, and size and mtime of each file in WATCHED_DIRS."""
    state: dict[str, tuple[int, int] | None] = {
        path.name: None for path in REPO.iterdir() if not path.name.startswith(".coverage")
    }
    for name in WATCHED_DIRS:
        for path in sorted((REPO / name).rglob("*")):
            if path.is_file():
                stat = path.stat()
                state[str(path.relative_to(REPO))] = (stat.st_size, stat.st_mtime_ns)
    return state


def test_notebook_is_stored_without_outputs() -> None:
    """Outputs stay out of git, so a diff of the notebook shows only changed code and text."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    stored = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not stored, f"clear the outputs of cells {stored} before committing the notebook"


@pytest.mark.slow
def test_notebook_runs_and_fits_a_good_first_model() -> None:
    """Every cell runs in a fresh kernel, the data passes, the model is good, the plots show."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    before = _snapshot()
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the traceback, if a cell fails
    after = _snapshot()

    cells = _code_cells(notebook)
    errors = [out for cell in cells for out in cell.outputs if out.output_type == "error"]
    assert not errors, errors
    assert all(cell.execution_count is not None for cell in cells)

    data_check = _text(_tagged(notebook, "data-check"))
    assert "Data check PASSED" in data_check, data_check

    metrics = _text(_tagged(notebook, "metrics"))
    match = re.search(r"^roc_auc\s+(\d+\.\d+)\s*$", metrics, flags=re.MULTILINE)
    assert match, f"no roc_auc line in the metrics output:\n{metrics}"
    assert float(match.group(1)) >= 0.85, metrics

    images = sum("image/png" in out.get("data", {}) for cell in cells for out in cell.outputs)
    assert images >= 3, f"only {images} inline PNG images"

    changed = sorted(
        (before.keys() ^ after.keys())
        | {k for k in before.keys() & after.keys() if before[k] != after[k]}
    )
    assert not changed, f"the notebook wrote inside the repository: {changed}"
