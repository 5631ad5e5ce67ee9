"""The notebooks run top to bottom against the current library (their code cells, in order)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_code_cells_run_in_order(notebook, monkeypatch):
    monkeypatch.chdir(notebook.parent)  # notebooks use paths relative to their folder
    cells = json.loads(notebook.read_text())["cells"]
    namespace: dict = {"__name__": "__notebook__"}
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            # a failing cell raises here, naming the notebook and cell
            exec(compile(source, f"{notebook.name}[cell {index}]", "exec"), namespace)
