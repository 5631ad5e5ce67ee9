"""An audit looks at its caption sources before it makes its run folder: a missing caption file,
a wrong column, a damaged parquet file, a folder without captions or captions of the wrong type
is refused with the error the coverage stage itself raises, and no audit folder (nor, with
out=None, a temporary one) is left behind."""

from __future__ import annotations

import re
import tempfile

import pandas as pd
import pytest

from clipaudit.coverage import CaptionSources, CoverageSettings, check_captions, count_coverage
from clipaudit.errors import ClipAuditError, InputError
from tests.test_audit import _models

ZEROSHOT = {"cache_dir": None, "device": "cpu", "workers": 0}
NAMED = " (given as --captions, or captions= in Python)"


@pytest.fixture
def sources(tmp_path):
    good = tmp_path / "good.parquet"
    pd.DataFrame({"id": [1, 2], "caption": ["a dog", "a red cat"]}).to_parquet(good)
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(good.read_bytes()[:-12])  # the footer cut off, as a copy killed midway
    empty = tmp_path / "no_captions"
    empty.mkdir()
    (empty / "notes.md").write_text("no captions here\n")
    return {"good": good, "damaged": damaged, "empty": empty, "missing": tmp_path / "gone.parquet"}


# captions (a key of `sources`, or a value), coverage settings, and a part of the message
BAD = {
    "missing file": ("missing", {}, "does not exist"),
    "wrong column": ("good", {"column": "captoin"}, r"no caption column 'captoin' \(did you mean"),
    "damaged parquet": ("damaged", {}, "unreadable parquet file"),
    "folder without captions": ("empty", {}, "holds no caption files"),
    "wrong type": (42, {}, "captions must be a path"),
}


def _captions(sources: dict, given: object) -> object:
    return CaptionSources([sources[given]]) if isinstance(given, str) else given


def _stage_error(captions: object, settings: dict, out) -> ClipAuditError:
    """What the coverage stage alone raises for these captions (the audit's default registry)."""
    with pytest.raises(ClipAuditError) as info:
        count_coverage(captions, out=out, settings=CoverageSettings(progress=False, **settings))
    return info.value


@pytest.mark.parametrize("case", list(BAD))
def test_bad_captions_are_refused_before_the_audit_folder_is_made(
    audit_runs, sources, tmp_path, case
):
    import clipaudit

    given, settings, message = BAD[case]
    captions = _captions(sources, given)
    expected = _stage_error(captions, settings, tmp_path / "coverage-alone")
    assert isinstance(expected, InputError)
    config, trained, _ = _models(audit_runs)
    out = tmp_path / "audit"
    with pytest.raises(type(expected), match=message) as info:
        clipaudit.run_audit(
            captions, audit_runs["images"], (config, trained), out, coverage=settings,
            zeroshot=ZEROSHOT, progress=False, echo=lambda _: None,
        )  # fmt: skip
    # a source that cannot be found is named as the audit's user gave it
    named = case in ("missing file", "folder without captions")
    assert str(info.value) == str(expected) + (NAMED if named else "")
    assert not out.exists()


def test_bad_captions_leave_no_temporary_folder_with_out_none(
    audit_runs, sources, tmp_path, monkeypatch
):
    import clipaudit

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    config, trained, _ = _models(audit_runs)
    with pytest.raises(InputError, match="does not exist"):
        clipaudit.run_audit(
            CaptionSources([sources["missing"]]), audit_runs["images"], (config, trained),
            zeroshot=ZEROSHOT, progress=False, echo=lambda _: None,
        )  # fmt: skip
    assert list(temporary.iterdir()) == []


def test_check_captions_makes_no_folder_and_takes_what_count_coverage_takes(sources, tmp_path):
    out = tmp_path / "run"
    named = check_captions(CaptionSources([sources["good"]]), out=out, shard_rows=1)
    assert named.frame is None and named.settings.shard_rows == 1
    specs, _, inputs, shards = named.looked_at
    assert specs == [str(sources["good"])] and [i["kind"] for i in inputs] == ["parquet"]
    assert [shard.n_rows for shard in shards] == [2]  # one row group of the file's 2 rows
    in_memory = check_captions(texts=["a dog", None])
    assert in_memory.looked_at is None
    assert in_memory.frame["caption"].fillna("-").tolist() == ["a dog", "-"]
    table = check_captions(pd.DataFrame({"text": ["a dog"]}), {"column": "text"})
    assert list(table.frame["text"]) == ["a dog"]
    with pytest.raises(InputError, match="no caption column 'captoin'"):
        check_captions([sources["good"]], column="captoin", out=out)
    with pytest.raises(InputError, match="either as captions"):
        check_captions(["a dog"], texts=["a cat"])
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing file", "wrong column"])
def test_the_audit_command_names_a_bad_caption_source_in_one_line(
    audit_runs, sources, tmp_path, in_process, case
):
    given, settings, message = BAD[case]
    config, trained, _ = _models(audit_runs)
    out = tmp_path / "audit"
    column = ["--column", settings["column"]] if settings else []
    code, _, stderr = in_process(
        "audit", "-c", str(sources[given]), "-i", audit_runs["images"], "-m", config,
        "--pretrained", trained, "-o", str(out), "--device", "cpu", "--no-cache", "--quiet",
        *column,
    )  # fmt: skip
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert str(sources[given]) in line
    assert re.search(message, line)
    assert not out.exists()


def test_a_generator_of_caption_paths_is_audited_as_its_list_is(audit_runs, sources, tmp_path):
    """The audit reads its caption sources twice (its own check, then the coverage stage): a
    generator used up by the check would leave the stage no captions at all."""
    import clipaudit

    config, trained, _ = _models(audit_runs)
    audited = clipaudit.run_audit(
        (path for path in [sources["good"]]), audit_runs["images"], (config, trained),
        tmp_path / "audit", zeroshot=ZEROSHOT, progress=False, echo=lambda _: None,
    )  # fmt: skip
    assert audited.coverage.n_captions_read == 2  # "a dog", "a red cat"
    counts = audited.coverage.concepts.set_index("concept")["count"]
    assert (counts["dog"], counts["cat"], counts["red"]) == (1, 1, 1)
    assert audited.manifest["status"] == "complete"
