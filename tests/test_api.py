"""The library API as the README shows it: its lines run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_api_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Library API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_api_lines_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    captions = pd.DataFrame(
        {"text": ["A brown dog on the beach.", "two cats on a sofa", "a hot dog"], "id": [7, 8, 9]}
    )
    namespace = {"captions": captions}
    exec(compile(readme_api_block(), "README.md", "exec"), namespace)
    assert namespace["clipaudit"].match_captions(["A brown dog on the beach."]) == [
        ["dog", "brown", "beach"]
    ]
    coverage, run = namespace["coverage"], namespace["run"]
    counts = coverage.concepts.set_index("concept")["count"]
    assert (counts["dog"], counts["cat"], counts["brown"], counts["beach"]) == (1, 1, 1, 1)
    assert coverage.n_captions_read == 3 and (tmp_path / "runs" / "x" / "groups.csv").is_file()
    pd.testing.assert_frame_equal(run.groups, coverage.groups)


@pytest.mark.parametrize("form", ["list", "path", "paths", "series"])
def test_every_input_form_and_registry_form_works(tmp_path, form):
    import clipaudit

    texts = ["A brown dog on the beach.", "nothing to see"]
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(texts) + "\n")
    registry = {
        "list": "cai2025",
        "path": clipaudit.load_registry().path,
        "paths": clipaudit.load_registry(),
        "series": "cai2025",
    }[form]
    given = {"list": texts, "path": str(path), "paths": [path], "series": pd.Series(texts)}[form]
    result = clipaudit.count_coverage(given, registry=registry, out=tmp_path / "run")
    assert result.concepts.set_index("concept")["count"]["dog"] == 1
    assert clipaudit.match_captions("A brown dog.", registry=registry) == ["dog", "brown"]
    shown = repr(result)
    assert len(shown) < 300 and "2 captions" in shown
    assert len(result._repr_html_()) < 5000
    assert len(repr(clipaudit.load_registry())) < 300


def test_load_run_refuses_incomplete_and_foreign_folders(tmp_path):
    import clipaudit
    from clipaudit.errors import RunFolderError

    with pytest.raises(RunFolderError, match="holds no clipaudit run"):
        clipaudit.load_run(tmp_path)
    (tmp_path / "manifest.json").write_text('{"kind": "coverage", "status": "running"}')
    with pytest.raises(RunFolderError, match="coverage run that is running, not complete"):
        clipaudit.load_run(tmp_path)
    (tmp_path / "manifest.json").write_text('{"kind": "mystery", "status": "complete"}')
    with pytest.raises(RunFolderError, match="unknown kind 'mystery'"):
        clipaudit.load_run(tmp_path)


def test_the_public_names_are_listed_before_they_load():
    import clipaudit

    assert set(clipaudit.__all__) <= set(dir(clipaudit))
    for name in clipaudit.__all__:
        assert getattr(clipaudit, name) is not None
