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
    namespace = {}  # nothing passed in: the block defines what it uses
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
    with pytest.raises(RunFolderError, match=r"nowhere does not exist; expected a run folder"):
        clipaudit.load_run(tmp_path / "nowhere")
    (tmp_path / "captions.parquet").write_bytes(b"PAR1")
    with pytest.raises(RunFolderError, match=r"captions\.parquet is a file, not a folder"):
        clipaudit.load_run(tmp_path / "captions.parquet")
    (tmp_path / "captions.parquet").unlink()
    (tmp_path / "manifest.json").write_text('{"kind": "coverage", "status": "running"}')
    with pytest.raises(RunFolderError, match="coverage run that is running, not complete"):
        clipaudit.load_run(tmp_path)
    (tmp_path / "manifest.json").write_text('{"kind": "mystery", "status": "complete"}')
    with pytest.raises(RunFolderError, match="unknown kind 'mystery'"):
        clipaudit.load_run(tmp_path)
    # a zero-shot run whose manifest's settings were edited into a string
    columns = {"groups": "model,group,category,macro_f1,accuracy,n_images,n_concepts",
               "concepts": "model,group,concept,precision,recall,f1,support"}  # fmt: skip
    for name, header in columns.items():
        (tmp_path / f"{name}.csv").write_text(header + "\n")
    (tmp_path / "manifest.json").write_text(
        '{"kind": "zeroshot", "status": "complete", "settings": "x"}'
    )
    with pytest.raises(RunFolderError, match=r"cannot be read \(AttributeError: .*damaged"):
        clipaudit.load_run(tmp_path)


def test_the_public_names_are_listed_before_they_load():
    import clipaudit

    assert set(clipaudit.__all__) <= set(dir(clipaudit))
    for name in clipaudit.__all__:
        assert getattr(clipaudit, name) is not None


REGISTRY_FORMS = r"a registry is a built-in name .*, the path of a YAML file or a Registry"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.match_captions(None), "InputError", r"one caption string or an iterable .*got NoneType None"),
        (lambda c: c.match_captions(5), "InputError", r"one caption string or an iterable .*got int 5"),
        (lambda c: c.match_captions(["a cat"], registry=3), "SettingsError", rf"{REGISTRY_FORMS}.*got int 3"),
        (lambda c: c.load_registry(None), "SettingsError", rf"{REGISTRY_FORMS}.*got NoneType None"),
        (lambda c: c.count_coverage(["a cat"], registry=object()), "SettingsError", rf"{REGISTRY_FORMS}.*got object"),
        (lambda c: c.count_coverage(["a cat"], out=5), "SettingsError", r"out \(the run folder\) must be a path or None, got int 5"),
        (lambda c: c.load_run(None), "SettingsError", r"a run folder is a path .*got NoneType None"),
        (lambda c: c.load_registry().concept(3), "SettingsError", r"a concept name must be a string, got int 3"),
        (lambda c: c.CaptionSources(5), "InputError", r"caption sources are a path or an iterable of paths .*got int 5"),
        # each was a bare TypeError, "image source 'None' does not exist", or a switch taken as on
        (lambda c: c.run_zeroshot("RN50", None), "SettingsError", r"images \(the labelled images\) must be a path .*got NoneType None"),
        (lambda c: c.run_zeroshot("RN50", "img", 5), "SettingsError", r"out \(the run folder, or None\) must be a path .*got int 5"),
        (lambda c: c.run_zeroshot("RN50", "img", progress="no"), "SettingsError", r"progress must be True or False, got 'no'"),
        (lambda c: c.run_zeroshot("RN50", "img", groups=5), "SettingsError", r"groups must be a group's name, a list of group names or None .*got int 5"),
        (lambda c: c.run_zeroshot("RN50", "img", groups=[1, 2]), "SettingsError", r"groups must be .*got tuple \(1, 2\)"),
        (lambda c: c.build_report(["a", "b"], 5), "SettingsError", r"out \(the report folder, or None\) must be a path .*got int 5"),
        (lambda c: c.build_report(["a", "b"], progress="no"), "SettingsError", r"progress must be True or False, got 'no'"),
        # pretrained= beside a pair or a ModelSpec was dropped without a word
        (lambda c: c.run_zeroshot(("RN50", "openai"), "img", pretrained="yfcc15m"), "SettingsError", r"pretrained= applies to a model given by name; \('RN50', 'openai'\) names its own"),
        (lambda c: c.run_zeroshot(c.ModelSpec("RN50"), "img", pretrained="openai"), "SettingsError", r"pretrained= applies to a model given by name; ModelSpec"),
    ],
)  # fmt: skip
def test_arguments_of_a_wrong_type_are_typed_errors_that_say_what_is_expected(
    call, error, message, tmp_path, monkeypatch
):
    import clipaudit
    from clipaudit import errors

    monkeypatch.chdir(tmp_path)  # nothing is written, but if it were: not in the checkout
    with pytest.raises(getattr(errors, error), match=message):
        call(clipaudit)
    assert list(tmp_path.iterdir()) == []


def test_submodules_are_reachable_after_a_bare_import():
    """``clipaudit.errors``, ``clipaudit.report`` (and the README's ``clipaudit.semantic``) were
    AttributeErrors in a fresh kernel until something else had imported them."""
    import subprocess
    import sys

    script = (
        "import clipaudit\n"
        "assert issubclass(clipaudit.errors.InputError, clipaudit.errors.ClipAuditError)\n"
        "assert clipaudit.report.build_report is clipaudit.build_report\n"
        "assert callable(clipaudit.semantic.count_semantic)\n"
        "assert clipaudit.semantic.calibration.DEFAULT_THRESHOLDS\n"
        "for name in ('nothing_here', '_private', 'errors.x'):\n"
        "    try:\n"
        "        getattr(clipaudit, name)\n"
        "    except AttributeError as exc:\n"
        "        assert str(exc) == f\"module 'clipaudit' has no attribute {name!r}\", exc\n"
        "    else:\n"
        "        raise SystemExit(f'{name} was found')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=README.parent
    )
    assert done.returncode == 0, done.stderr


def test_in_memory_captions_that_hold_none_are_refused_in_the_apis_terms(tmp_path):
    import clipaudit
    from clipaudit.errors import RunFailedError

    with pytest.raises(RunFailedError) as info:
        clipaudit.count_coverage([None, None], out=tmp_path / "run", progress=False)
    assert str(info.value) == (
        "no caption was read: the 2 captions given were all skipped (2 null); give caption "
        "strings (None or NaN is no caption; one longer than max_caption_chars is skipped)"
    )  # no --column: these captions have no column to name


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c, d: c.run_audit(["a dog"], "images", "RN50", coverrage={}), r"run_audit\(\) has no option 'coverrage' \(did you mean 'coverage'"),
        (lambda c, d: c.run_audit(["a dog"], "images", "RN50", "out", {}), r"run_audit\(\): too many positional arguments; it takes captions, images, models, out by position"),
        (lambda c, d: c.run_audit(["a dog"], "images", "RN50", zeroshot="cpu"), r"zeroshot must be a dict of zeroshot options or None, got str 'cpu'"),
        (lambda c, d: c.run_audit(["a dog"], "images", "RN50", report=["title"]), r"report must be a dict of report options or None, got list"),
        (lambda c, d: c.run_audit(["a dog"], None, "RN50"), r"images \(the labelled images\) must be a path .*got NoneType None"),
        (lambda c, d: c.run_audit(["a dog"], "images", "RN50", 5), r"out \(the run folder, or None\) must be a path .*got int 5"),
        (lambda c, d: c.run_audit(["a dog"], "images", "RN50", "out", overwrite="no"), r"overwrite must be True or False, got 'no'"),
        (lambda c, d: c.run_audit(["a dog"], "images", "RN50", "out", echo="print"), r"echo must be a function .*got 'print'"),
        (lambda c, d: d.run_demo(overwrit=True), r"run_demo\(\) has no option 'overwrit' \(did you mean 'overwrite'"),
        (lambda c, d: d.run_demo("out", {"steps": 10}), r"settings must be DemoSettings\(...\) or None, got dict"),
        (lambda c, d: d.run_demo(5), r"out \(the run folder\) must be a path .*got int 5"),
        (lambda c, d: d.run_demo("out", progress=None), r"progress must be True or False, got None"),
        (lambda c, d: d.DemoSettings(world=5), r"world must be WorldSettings\(...\), got int 5"),
        (lambda c, d: d.DemoSettings(train={"steps": 3}), r"train must be TrainSettings\(...\), got dict"),
        (lambda c, d: d.DemoSettings(sweep="Texture", sweep_rates="0,1"), r"sweep rates must be a sequence of numbers .*got '0,1'"),
        (lambda c, d: d.DemoSettings(sweep="Texture", sweep_rates=0.5), r"sweep rates must be a sequence of numbers .*got 0.5"),
        # the other public functions that take no **options, and overwrite in every run
        (lambda c, d: c.build_report(["run"], titel="x"), r"build_report\(\) has no option 'titel' \(did you mean 'title'"),
        (lambda c, d: c.match_captions("a dog", profle="paper"), r"match_captions\(\) has no option 'profle' \(did you mean 'profile'"),
        (lambda c, d: c.calibrate("gold.jsonl", encodr="st:x"), r"calibrate\(\) has no option 'encodr'"),
        (lambda c, d: c.query_run("run", "origami", treshold=0.5), r"query_run\(\) has no option 'treshold' \(did you mean 'threshold'"),
        (lambda c, d: c.count_coverage(texts=["a dog"], out="out", overwrite="no"), r"overwrite must be True or False, got 'no'"),
    ],
)  # fmt: skip
def test_the_audit_and_the_demo_name_a_wrong_argument_in_a_typed_error(
    call, message, tmp_path, monkeypatch
):
    """Each was a bare TypeError or AttributeError, a misleading message, or (a switch of the
    wrong type) taken as on, before any check of what the audit was given."""
    import clipaudit
    from clipaudit import demo
    from clipaudit.errors import SettingsError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match=message):
        call(clipaudit, demo)
    assert list(tmp_path.iterdir()) == []  # refused before any run folder was made


def test_a_complete_zero_shot_run_whose_tables_were_deleted_writes_them_again(tmp_path):
    """The same call on a complete run whose groups.csv was deleted was a FileNotFoundError
    traceback: the run was taken as complete and its missing table read back."""
    import clipaudit
    from tests.tiny_clip import write_image_folder, write_tiny_checkpoint, write_tiny_config

    images = tmp_path / "images"
    write_image_folder(images, {"Animal": {"dog": 2, "cat": 2}})
    spec = clipaudit.ModelSpec(
        str(write_tiny_config(tmp_path / "models")),
        str(write_tiny_checkpoint(tmp_path / "models" / "random.safetensors")),
    )
    options = {"groups": ("Animal",), "cache_dir": None, "workers": 0, "device": "cpu"}
    first = clipaudit.run_zeroshot(spec, images, tmp_path / "run", progress=False, **options)
    written = (tmp_path / "run" / "groups.csv").read_text()
    (tmp_path / "run" / "groups.csv").unlink()
    again = clipaudit.run_zeroshot(spec, images, tmp_path / "run", progress=False, **options)
    assert (tmp_path / "run" / "groups.csv").read_text() == written
    pd.testing.assert_frame_equal(again.groups, first.groups)
    assert again.manifest["status"] == "complete"
