"""The notebooks run top to bottom against the current library (their code cells, in order).

A notebook that reads run folders made elsewhere says so in its metadata (``clipaudit.needs_runs``)
and is skipped by the plain run here: the test that makes its runs executes it in a real kernel
(tests/test_report.py, ``test_the_notebook_runs_in_a_real_kernel``), and the audit notebook's
findings are checked below on the tests' small audit world. Then the docs beside them: the README's
matching-accuracy figures, recomputed, and the tool that makes its report screenshots
(docs/screenshot.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
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


def test_the_coverage_walkthrough_counts_every_word_its_corpus_draws(monkeypatch):
    """The walkthrough draws each group's words at a stated rate and shows the counted rates: a
    drawn word that is no concept of its group ("happy" is no Emotion) counted for nothing, and
    the notebook showed half the emotions it had drawn."""
    namespace = run_code_cells(NOTEBOOK_DIR / "coverage_walkthrough.ipynb", monkeypatch)
    words = [caption.split() for caption in namespace["captions"]["text"]]
    for group, drawn in (
        ("Animal", namespace["animals"]),
        ("Color", namespace["colours"]),
        ("Texture", namespace["textures"]),
        ("Emotion", namespace["emotions"]),
    ):
        expected = sum(any(word in caption for word in drawn) for caption in words)
        assert expected > 0
        assert namespace["groups"].loc[group, "count"] == expected, group


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


def test_the_audit_notebook_names_the_run_its_file_lacks(tmp_path, monkeypatch):
    """A runs file without the random model's run stopped at a bare KeyError: 'zeroshot_random' in
    the third cell; the first code cell now names the missing key and where to read how to make
    it."""
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps({"coverage": "runs/cov", "zeroshot_trained": "runs/zs"}))
    monkeypatch.setenv("CLIPAUDIT_AUDIT_RUNS", str(runs))
    with pytest.raises(ValueError, match=f"{runs} names no zeroshot_random: see the notebook"):
        run_code_cells(NOTEBOOK_DIR / "audit_analysis.ipynb", monkeypatch)


def _odd_half(gold: Path, folder: Path) -> Path:
    """The captions of odd id: the half never read while the matcher's rules were written."""
    lines = [line for line in gold.read_text().splitlines() if json.loads(line)["id"] % 2]
    path = folder / f"{gold.stem}_odd.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_readme_accuracy_figures_are_what_coverage_eval_computes(tmp_path):
    """The README's matching-accuracy table and its forecasts from the odd-id halves, recomputed
    from the labelled files: the fresh LAION half was quoted with the figures of an older matcher
    (0.761 / 0.814) and an interval rounded twice (0.905 printed, 0.91 written for 0.9048)."""
    from clipaudit.goldeval import evaluate_gold
    from clipaudit.registry import load_registry

    readme = " ".join((NOTEBOOK_DIR.parent / "README.md").read_text().split())
    registry = load_registry("cai2025")
    web = NOTEBOOK_DIR.parent / "tests" / "data" / "web_dev"

    def scores(gold: Path, profile: str = "curated") -> tuple[str, str, str]:
        result = evaluate_gold(gold, registry, [profile])["profiles"][profile]
        micro, interval = result["micro"], result["micro_interval"]
        (p_low, p_high), (r_low, r_high) = interval["precision"], interval["recall"]
        return (
            f"{micro['precision']:.3f} / {micro['recall']:.3f}",
            f"{p_low:.2f}-{p_high:.2f}",
            f"{r_low:.2f}-{r_high:.2f}",
        )

    rows = {
        "LAION-400M dev, 400 alt-texts": "laion_dev",
        "Conceptual Captions dev, 400": "cc3m_dev",
        "LAION-400M fresh, 400 alt-texts": "laion_fresh",
        "LAION-400M fresh 2, 400 alt-texts": "laion_fresh2",
    }
    for label, name in rows.items():
        gold = web / f"{name}.jsonl"
        row = f"| {label} (`tests/data/web_dev/{name}.jsonl`) | {scores(gold)[0]} | "
        assert row + f"{scores(gold, 'paper')[0]} |" in readme, label

    coco = NOTEBOOK_DIR.parent.parent / "shared" / "gold" / "coco_dev.jsonl"
    if coco.is_file():  # the real COCO labels live beside the repository, when they are there
        row = (
            f"(`../shared/gold/coco_dev.jsonl`) | {scores(coco)[0]} | {scores(coco, 'paper')[0]} |"
        )
        assert row in readme

    laion, cc3m, fresh = (
        scores(_odd_half(web / f"{n}.jsonl", tmp_path))
        for n in ("laion_dev", "cc3m_dev", "laion_fresh")
    )
    second = scores(web / "laion_fresh2.jsonl")  # scored whole: nothing was read from it
    assert f"LAION {laion[0]}, Conceptual Captions {cc3m[0]}." in readme
    assert f"LAION precision {laion[1]} and recall {laion[2]}" in readme
    assert f"Conceptual Captions {cc3m[1]} and {cc3m[2]}." in readme
    assert f"scores {fresh[0]} ({fresh[1]} / {fresh[2]}) after the rules" in readme
    assert f"gives **{second[0]}** ({second[1]} / {second[2]})" in readme


def test_the_screenshot_tool_names_a_missing_report_and_keeps_the_image(
    tmp_path, monkeypatch, capsys
):
    """A mistyped report path gave a playwright trace from inside the browser; now one line
    naming it, before any browser starts, and the README's image is left as it was."""
    spec = importlib.util.spec_from_file_location(
        "screenshot", NOTEBOOK_DIR.parent / "docs" / "screenshot.py"
    )
    screenshot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screenshot)
    image = tmp_path / "report.png"
    image.write_bytes(b"the README's image")
    missing = tmp_path / "runs" / "report.html"
    monkeypatch.setattr(sys, "argv", ["screenshot.py", str(missing), str(image)])
    with pytest.raises(SystemExit) as stopped:
        screenshot.main()
    assert stopped.value.code == 2
    assert f"{missing} is no file" in capsys.readouterr().err
    assert image.read_bytes() == b"the README's image"
