"""What count_coverage is given in a notebook: the mistakes a researcher makes with captions in
memory and settings, each refused saying what was expected and the fix, and nothing counted."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import clipaudit
from clipaudit.coverage import CoverageSettings
from clipaudit.errors import InputError, SettingsError


def test_a_dict_of_columns_is_refused_not_its_keys_counted_as_captions(tmp_path):
    with pytest.raises(InputError, match=r"a dict \(keys 'text'\).*pandas\.DataFrame"):
        clipaudit.count_coverage({"text": ["a dog", "a cat"]}, out=tmp_path / "a", progress=False)
    with pytest.raises(InputError, match=r"texts= takes caption strings.*got a dict"):
        clipaudit.count_coverage(texts={"text": ["a dog"]}, out=tmp_path / "b", progress=False)
    assert not (tmp_path / "a" / "manifest.json").exists()


def test_settings_may_be_a_dict_of_their_fields_as_run_audit_takes_them(tmp_path):
    frame = pd.DataFrame({"text": ["a dog on a sofa", "a red cat", "a bus"]})
    result = clipaudit.count_coverage(frame, "cai2025", tmp_path / "run", {"column": "text"})
    counts = result.concepts.set_index("concept")["count"]
    assert counts["dog"] == 1 and counts["red"] == 1 and counts["cat"] == 1 and counts["bus"] == 1
    assert result.manifest["n_captions_read"] == 3
    with pytest.raises(SettingsError, match=r"'colum' \(did you mean 'column'"):
        clipaudit.count_coverage(frame, "cai2025", tmp_path / "typo", {"colum": "text"})
    with pytest.raises(SettingsError, match=r"settings must be CoverageSettings, a dict .*got str"):
        clipaudit.count_coverage(frame, "cai2025", tmp_path / "str", "text")
    assert CoverageSettings.of(None, "settings") == CoverageSettings()


@pytest.mark.parametrize("given", ["list", "series", "texts"])
def test_a_column_for_captions_that_have_none_is_refused_naming_no_staged_file(given, tmp_path):
    captions = ["a red cat", "a dog"]
    arguments = {
        "list": {"captions": captions},
        "series": {"captions": pd.Series(captions)},
        "texts": {"texts": captions},
    }[given]
    with pytest.raises(InputError) as info:
        clipaudit.count_coverage(**arguments, out=tmp_path / "run", column="foo", progress=False)
    message = str(info.value)
    assert "column='foo'" in message and "drop column=" in message
    assert "inputs" not in message and ".parquet" not in message
    # the column the staged captions do have is no mistake
    result = clipaudit.count_coverage(
        **arguments, out=tmp_path / "ok", column="caption", progress=False
    )
    assert result.manifest["n_captions_read"] == 2


def test_a_run_folder_given_as_captions_is_named_as_a_run(tmp_path):
    zeroshot = tmp_path / "zs"
    zeroshot.mkdir()
    manifest = {"kind": "zeroshot", "status": "complete", "clipaudit_version": "0.1.0"}
    (zeroshot / "manifest.json").write_text(json.dumps(manifest))
    pd.DataFrame({"path": ["x.jpg"], "caption": ["a dog"]}).to_parquet(zeroshot / "p.parquet")
    with pytest.raises(InputError) as info:
        clipaudit.count_coverage(zeroshot, out=tmp_path / "run", progress=False)
    assert str(info.value) == (
        f"{str(zeroshot)!r} is a clipaudit run folder (a zeroshot run), not captions; give the "
        "caption files or folder the run should count"
    )
    with pytest.raises(InputError, match=r"is a clipaudit run folder \(a zeroshot run\)"):
        clipaudit.count_coverage([str(zeroshot)], out=tmp_path / "run2", progress=False)
