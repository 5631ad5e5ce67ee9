"""Caption sources as check_captions takes them, and the clipaudit run folders a caption folder
leaves out: a one-shot iterable of paths is read once, a user's own manifest.json never hides
the captions beside it, and a run folder given as captions (or linked from a caption folder) is
never counted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipaudit.coverage import check_captions, count_coverage
from clipaudit.errors import InputError
from clipaudit.runs import run_folder_kind
from tests.test_coverage import run, tiny  # noqa: F401 (a fixture)


def _captions(path: Path, captions: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"caption": captions}), path)
    return path


def test_a_generator_of_caption_paths_is_read_as_its_list_is(tiny, tmp_path):  # noqa: F811
    one = _captions(tmp_path / "a.parquet", ["a red cat", "a dog"])
    two = _captions(tmp_path / "b.parquet", ["a cat"])
    checked = check_captions((p for p in [one, two]), out=tmp_path / "run")
    assert checked.looked_at[0] == [str(one), str(two)]
    counted = run((p for p in [one, two]), tiny, tmp_path / "run")
    assert counted.n_captions_read == 3
    assert counted.concepts.set_index("concept")["count"].to_dict()["cat"] == 2


@pytest.mark.parametrize("kind", ["report", "audit"])
def test_a_users_manifest_naming_a_run_kind_hides_no_captions(tiny, tmp_path, kind):  # noqa: F811
    """Another tool's manifest.json may say "kind": "report": the folder is still read, and
    named as captions, not refused as a clipaudit run."""
    data = tmp_path / "data"
    _captions(data / "a.parquet", ["a red cat"])
    _captions(data / "part1" / "b.parquet", ["a dog", "a cat"])
    for folder in (data, data / "part1"):
        (folder / "manifest.json").write_text(json.dumps({"kind": kind, "files": ["b.parquet"]}))
        assert run_folder_kind(folder) is None
    counted = run([data], tiny, tmp_path / "run")
    assert counted.n_captions_read == 3
    assert counted.concepts.set_index("concept")["count"].to_dict()["cat"] == 2


def test_a_run_folder_given_or_linked_as_captions_is_never_counted(tiny, tmp_path):  # noqa: F811
    earlier = tmp_path / "earlier"
    count_coverage(texts=["a cat"] * 3, registry=tiny, out=earlier, progress=False)
    assert run_folder_kind(earlier) == "coverage"
    data = tmp_path / "data"
    _captions(data / "a.parquet", ["a red cat", "a dog"])
    os.symlink(earlier, data / "link")  # a linked folder is not followed, a run or not
    for given in (earlier, data / "link"):
        with pytest.raises(InputError) as info:
            check_captions([data / "a.parquet", given], out=tmp_path / "refused")
        assert str(info.value) == (
            f"{str(given)!r} is a clipaudit run folder (a coverage run), not captions; give the "
            "caption files or folder the run should count"
        )
    counted = run([data], tiny, tmp_path / "run")
    assert counted.n_captions_read == 2 and not (tmp_path / "refused").exists()


def test_a_run_whose_manifest_is_damaged_is_refused_not_counted(tiny, tmp_path):  # noqa: F811
    """Its manifest cut short, a run inside a caption folder is no longer known as one: its
    tables are refused for the caption column they lack (naming the file), before any folder is
    made, never counted as captions."""
    data = tmp_path / "data"
    _captions(data / "a.parquet", ["a red cat", "a dog"])
    count_coverage(texts=["a cat"] * 3, registry=tiny, out=data / "earlier", progress=False)
    manifest = data / "earlier" / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    assert run_folder_kind(data / "earlier") is None
    with pytest.raises(InputError, match="no caption column") as checked:
        check_captions(data, out=tmp_path / "run")
    with pytest.raises(InputError) as counted:
        run([data], tiny, tmp_path / "run")
    assert str(counted.value) == str(checked.value)
    assert str(data / "earlier" / "categories.parquet") in str(checked.value)
    assert not (tmp_path / "run").exists()
