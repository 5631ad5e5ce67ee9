"""The notebooks run top to bottom against the current library (their code cells, in order).

A notebook that reads run folders made elsewhere says so in its metadata (``clipaudit.needs_runs``)
and is skipped here: the test that makes its runs executes it in a real kernel
(tests/test_report.py, ``test_the_notebook_runs_in_a_real_kernel``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_code_cells_run_in_order(notebook, monkeypatch):
    monkeypatch.chdir(notebook.parent)  # notebooks use paths relative to their folder
    document = json.loads(notebook.read_text())
    needs = document.get("metadata", {}).get("clipaudit", {}).get("needs_runs")
    if needs:
        pytest.skip(f"{notebook.name} needs runs ({needs}); tests/test_report.py runs it with them")
    cells = document["cells"]
    namespace: dict = {"__name__": "__notebook__"}
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            # a failing cell raises here, naming the notebook and cell
            exec(compile(source, f"{notebook.name}[cell {index}]", "exec"), namespace)
