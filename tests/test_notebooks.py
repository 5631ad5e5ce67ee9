"""The notebooks run top to bottom against the current library (their code cells, in order).

A notebook that reads run folders made elsewhere says so in its metadata (``clipaudit.needs_runs``)
and is skipped by the plain run here: the test that makes its runs executes it in a real kernel
(tests/test_report.py, ``test_the_notebook_runs_in_a_real_kernel``), and the audit notebook's
findings are checked below on the tests' small audit world."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def run_code_cells(notebook: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Execute a notebook's code cells in order in one namespace, from the notebook's folder (its
    paths are relative to it); returns the namespace."""
    monkeypatch.chdir(notebook.parent)
    namespace: dict = {"__name__": "__notebook__"}
    for index, cell in enumerate(json.loads(notebook.read_text())["cells"]):
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            # a failing cell raises here, naming the notebook and cell
            exec(compile(source, f"{notebook.name}[cell {index}]", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_code_cells_run_in_order(notebook, monkeypatch):
    document = json.loads(notebook.read_text())
    needs = document.get("metadata", {}).get("clipaudit", {}).get("needs_runs")
    if needs:
        pytest.skip(f"{notebook.name} needs runs ({needs}); tests/test_report.py runs it with them")
    run_code_cells(notebook, monkeypatch)


def test_the_audit_notebook_says_what_each_corpus_and_model_is(audit_runs, tmp_path, monkeypatch):
    """What the report's numbers were computed with, in the notebook as on the page: the corpus's
    captions and matching profile, each model's checkpoint by its sha256, its prompts and images."""
    import pyarrow.parquet as pq

    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps({**audit_runs, "report": str(tmp_path / "report")}))
    monkeypatch.setenv("CLIPAUDIT_AUDIT_RUNS", str(runs))
    namespace = run_code_cells(NOTEBOOK_DIR / "audit_analysis.ipynb", monkeypatch)

    root = Path(audit_runs["root"])
    corpus = namespace["corpora_made"].loc[Path(audit_runs["coverage"]).name]
    assert corpus["n_captions_read"] == pq.read_metadata(root / "corpus.parquet").num_rows
    assert (corpus["method"], corpus["profile"]) == ("lexical", "curated")
    assert corpus["sources"] == [str(root / "corpus.parquet")]
    images = [p for p in Path(audit_runs["images"]).rglob("*") if p.is_file()]
    models = namespace["models_made"]
    assert sorted(models.index) == ["tiny-clip@random", "tiny-clip@trained"]
    for label, checkpoint in models["pretrained"].items():
        assert (
            models.loc[label, "weights_sha256"]
            == hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
        )
        assert Path(checkpoint).parent == root / "models"
        assert models.loc[label, "templates"] == "none"
        assert models.loc[label, "n_images"] == len(images)
