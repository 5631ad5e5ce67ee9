"""README claims checked by running them (helper 152, session 21)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipaudit import count_coverage
from clipaudit.cli import main

# dog's only paper synonym is also hound's, listed later: the paper profile counts it for hound
SHADOWED = """\
registry: shadowed
version: "1.0"
groups:
  - {name: Animal, category: common}
  - {name: Pet, category: common}
concepts:
  - {name: dog, group: Animal, gloss: a dog, synonyms: [dog], paper_synonyms: [dog]}
  - {name: cat, group: Animal, gloss: a cat, synonyms: [cat], paper_synonyms: [cat]}
  - {name: hound, group: Pet, gloss: a hound, synonyms: [hound], paper_synonyms: [dog]}
  - {name: kitten, group: Pet, gloss: a kitten, synonyms: [kitten], paper_synonyms: [kitten]}
"""


def test_validate_notes_a_concept_whose_paper_synonyms_a_later_concept_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: "`validate` also prints `note:` lines for ... concepts the `paper` profile never
    counts"; a concept whose every paper synonym a later concept lists is one of them."""
    path = tmp_path / "shadowed.yaml"
    path.write_text(SHADOWED, encoding="utf-8")
    counted = count_coverage(
        ["a dog", "a cat"], path, tmp_path / "run", profile="paper", progress=False
    )
    counts = dict(zip(counted.concepts["concept"], counted.concepts["count"], strict=True))
    assert counts["dog"] == 0 and counts["hound"] == 1  # the premise: dog is never counted
    capsys.readouterr()
    try:
        main(["concepts", "validate", str(path)])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    printed = capsys.readouterr()
    notes = [
        line
        for line in " ".join((printed.out + printed.err).split()).split("note: ")[1:]
        if "'paper' profile" in line
    ]
    assert code == 0
    assert any("dog" in note for note in notes), printed.out
