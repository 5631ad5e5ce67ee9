"""The library API as a researcher in Jupyter meets it (helper 142's review): the types its
functions return and name can be reached from the package, its results show and read back, its
documented examples hold, every public function says what it raises, and a wrong argument is one
typed error that says what to do."""

from __future__ import annotations

import inspect
import re

import pandas as pd
import pytest

TEXTS = ["A brown dog on the beach.", "two cats on a sofa", "a hot dog", "nothing here"]


@pytest.fixture(autouse=True)
def temporary_runs_here(tmp_path, monkeypatch):
    """Runs made with out=None (a new temporary folder each) go under the test's own folder, not
    the machine's /tmp, where they would outlive the test session."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    """One tiny audit (four captions, a random tiny model on six Animal images), whose coverage,
    zero-shot and report runs the tests read."""
    import clipaudit
    from tests.tiny_clip import write_animal_audit_inputs

    root = tmp_path_factory.mktemp("library-review")
    images, spec = write_animal_audit_inputs(root)
    return clipaudit.run_audit(
        pd.DataFrame({"text": TEXTS}), images, spec, root / "audit",
        coverage={"column": "text"},
        zeroshot={"groups": ["Animal"], "cache_dir": None, "workers": 0, "device": "cpu"},
        report={"n_bootstrap": 0}, progress=False, echo=lambda line: None,
    )  # fmt: skip


def test_the_types_the_api_returns_and_names_are_reachable_from_the_package(audit):
    """``help(clipaudit.run_audit)`` says it returns an ``AuditRun``; ``clipaudit.AuditRun`` (for
    ``isinstance`` or ``help``) was an AttributeError, as were the other result types."""
    import clipaudit

    run = audit
    results = {
        "CoverageResult": run.coverage,
        "ZeroShotRun": run.zeroshot,
        "Report": run.report,
        "AuditRun": run,
    }
    for name, result in results.items():
        assert name in clipaudit.__all__ and name in dir(clipaudit)
        assert getattr(clipaudit, name) is type(result)
    returned = {
        inspect.signature(getattr(clipaudit, name)).return_annotation
        for name in clipaudit.__all__
        if inspect.isfunction(getattr(clipaudit, name))
    }
    # a class's name, not a typing form ("Any", "list[str]")
    classes = {r for r in returned if re.fullmatch(r"[A-Z]\w+", str(r)) and r != "Any"}
    assert classes == {"Registry", "CoverageResult", "CalibrationReport", "ZeroShotRun", "Report",
                       "AuditRun"}  # fmt: skip
    assert classes <= set(clipaudit.__all__)


def test_the_package_docstring_makes_each_file_before_it_reads_it():
    """``help(clipaudit)`` counted with ``calibration="minilm.json"`` one line before the line
    that makes minilm.json, and said nothing of the errors a call raises."""
    import clipaudit

    doc = clipaudit.__doc__
    assert doc.index('clipaudit.calibrate("gold.jsonl", "minilm.json")') < doc.index(
        'calibration="minilm.json"'
    )
    assert doc.index('"runs/zs")') < doc.index("[coverage, awareness]")
    assert "clipaudit.errors.ClipAuditError" in doc
    for name in re.findall(r"clipaudit\.(\w+)\(", doc):
        assert name in clipaudit.__all__, name


def test_the_readme_forms_of_captions_and_settings_count_alike(tmp_path):
    """The README's claims: a DataFrame with column=, texts=, a parquet path (str or Path),
    CaptionSources, settings as keywords or as a dict given by position, all count the same."""
    import clipaudit

    frame = pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS})
    frame.to_parquet(tmp_path / "captions.parquet")
    parquet = tmp_path / "captions.parquet"
    runs = [
        clipaudit.count_coverage(frame, column="text", progress=False),
        clipaudit.count_coverage(frame, "cai2025", None, {"column": "text", "progress": False}),
        clipaudit.count_coverage(texts=TEXTS, progress=False),
        clipaudit.count_coverage(str(parquet), column="text", progress=False),
        clipaudit.count_coverage(parquet, settings={"column": "text"}, progress=False),
        clipaudit.count_coverage(
            clipaudit.CaptionSources([parquet]), column="text", progress=False
        ),
    ]
    # the README's comment on coverage.groups.head()
    assert list(runs[0].groups.columns) == [
        "group", "category", "count", "rate", "n_concepts", "mean_concept_rate"
    ]  # fmt: skip
    counts = runs[0].concepts.set_index("concept")["count"]
    # "a hot dog" is no dog; "cats" is a cat
    assert (counts["dog"], counts["cat"], counts["brown"], counts["beach"]) == (1, 1, 1, 1)
    assert counts.sum() == sum(map(len, clipaudit.match_captions(TEXTS)))
    for run in runs[1:]:
        pd.testing.assert_frame_equal(run.concepts, runs[0].concepts)
    # out=None: each call a run folder of its own, none reused
    assert len({run.out_dir for run in runs}) == len(runs)
    assert not any(run.reused for run in runs)


def test_every_run_reads_back_and_shows_in_jupyter(audit):
    """Each kind of run made here (coverage, zero-shot, report, audit) read back with load_run is
    the same type with the same tables; each shows in a notebook as short text and as HTML."""
    import clipaudit

    run = audit
    made = {
        run.out / "coverage": (run.coverage, ("concepts", "groups", "categories")),
        run.out / "zeroshot": (run.zeroshot, ("concepts", "groups")),
        run.out / "report": (run.report, ()),
        run.out: (run, ()),
    }
    for path, (result, tables) in made.items():
        back = clipaudit.load_run(path)
        assert type(back) is type(result)
        for name in tables:
            pd.testing.assert_frame_equal(getattr(back, name), getattr(result, name))
        # what a notebook shows: repr as text, _repr_html_ as HTML
        assert len(repr(back)) < 300 and str(path) in repr(back)
        assert 0 < len(back._repr_html_()) < 20_000
    for name, table in run.report.tables.items():
        assert list(clipaudit.load_run(run.out / "report").tables[name].columns) == list(
            table.columns
        )
    rendered = run.report
    assert rendered.to_html() == (rendered.out / "report.html").read_text(encoding="utf-8")
    assert rendered.to_markdown() == (rendered.out / "report.md").read_text(encoding="utf-8")
    assert rendered.to_json() == (rendered.out / "report.json").read_text(encoding="utf-8")
    # built twice with out=None: two report folders, the second no reuse of the first
    first = clipaudit.build_report([run.coverage, run.zeroshot], n_bootstrap=0)
    second = clipaudit.build_report([run.coverage, run.zeroshot], n_bootstrap=0)
    assert first.out != second.out and not second.reused
    pd.testing.assert_frame_equal(first.tables["groups"], second.tables["groups"])


def test_import_clipaudit_loads_no_heavy_library():
    import subprocess
    import sys

    script = (
        "import sys, clipaudit\n"
        "heavy = {'torch', 'pandas', 'open_clip', 'pyarrow', 'numpy', 'spacy', 'faiss'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---- defects the review found in modules it did not own, fixed there -------------------------


def _refused(call, message: str) -> None:
    import clipaudit
    from clipaudit.errors import ClipAuditError

    with pytest.raises(ClipAuditError, match=message):
        call(clipaudit)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # coverage.py: class CoverageSettings(CheckedFields)
        (lambda c: c.CoverageSettings(colum="text"), r"no setting 'colum' \(did you mean 'column'"),
        # models.py: class ModelSpec(CheckedFields)
        (lambda c: c.ModelSpec("RN50", pretraind="openai"), r"no setting 'pretraind' \(did you mean 'pretrained'"),
        # registry.py / runs.py: @keyword_checked on load_registry, list_registries, load_run
        (lambda c: c.load_registry(name="cai2025"), r"load_registry\(\) has no option 'name'"),
        (lambda c: c.list_registries("cai2025"), r"list_registries\(\): .*takes .* by position"),
        (lambda c: c.load_run(path="runs/x", out="runs/y"), r"load_run\(\) has no option 'out'"),
        # coverage.py, zeroshot.py: too many positional arguments (functions with **options)
        (lambda c: c.count_coverage(["a dog"], "cai2025", None, None, True), r"count_coverage\(\): .*by position"),
        (lambda c: c.run_zeroshot("RN50", "images", None, True), r"run_zeroshot\(\): .*by position"),
    ],
)  # fmt: skip
def test_a_wrong_keyword_or_one_argument_too_many_is_a_typed_error(call, message, tmp_path):
    _refused(call, message)


def test_match_captions_refuses_a_dataframe_instead_of_matching_its_column_names():
    """``match_captions(df)`` returned ``[[], []]``: one empty list per column name, not per
    caption, with no word that a DataFrame is no list of captions."""
    import clipaudit
    from clipaudit.errors import InputError

    frame = pd.DataFrame({"id": [1, 2], "text": ["a dog", "a cat"]})

    with pytest.raises(InputError, match=r"DataFrame.*df\[column\]|DataFrame.*Series"):
        clipaudit.match_captions(frame)


def test_a_dataframes_id_column_is_the_one_named(tmp_path):
    """``count_coverage(df, id_column="image_id")``, a column the DataFrame has, failed with "no
    id column 'image_id'" in a temporary file the user never made: the DataFrame was staged with
    its ``id`` column only."""
    import clipaudit

    frame = pd.DataFrame({"image_id": [7, 9], "id": [1, 2], "text": ["a dog", "a cat"]})
    run = clipaudit.count_coverage(
        frame, column="text", id_column="image_id", per_caption=True, progress=False
    )
    assert run.matches()["id"].astype(str).tolist() == ["7", "9"]


def _resolves(dotted: str) -> bool:
    """Whether ``clipaudit.a.b`` names something: an attribute, else a package's submodule."""
    import importlib
    import importlib.util

    thing = importlib.import_module("clipaudit")
    for part in dotted.split(".")[1:]:
        if hasattr(thing, part):
            thing = getattr(thing, part)
        elif hasattr(thing, "__path__") and importlib.util.find_spec(f"{thing.__name__}.{part}"):
            thing = importlib.import_module(f"{thing.__name__}.{part}")
        else:
            return False
    return True


def test_every_name_the_public_docstrings_give_exists():
    """``help(clipaudit.run_zeroshot)`` says a failed run raises
    ``clipaudit.runs.RunFailedError``, which does not exist: ``except`` it is an
    AttributeError (it is ``clipaudit.errors.RunFailedError``)."""
    import clipaudit

    docs = {name: inspect.getdoc(getattr(clipaudit, name)) or "" for name in clipaudit.__all__}
    docs["clipaudit"] = clipaudit.__doc__
    unknown = [
        (name, ref)
        for name, doc in docs.items()
        for ref in sorted(set(re.findall(r"clipaudit(?:\.\w+)+", doc)))
        if not _resolves(ref)
    ]
    assert unknown == []


def test_what_the_results_say_of_themselves_reads_right(audit):
    import clipaudit

    one = clipaudit.count_coverage(texts=["a dog"], progress=False)
    assert "1 caption," in repr(one)
    assert re.search(r"1 model\b.*1 group\b", repr(audit.zeroshot))
    # every result names its folder the same way (CoverageResult alone said out_dir)
    assert all(hasattr(r, "out") for r in (one, audit.zeroshot, audit.report))


def test_every_public_function_says_what_it_raises():
    import clipaudit
    from clipaudit import errors

    kinds = [n for n, c in vars(errors).items() if isinstance(c, type) and n.endswith("Error")]
    silent = [
        name
        for name in clipaudit.__all__
        if inspect.isfunction(getattr(clipaudit, name))
        and name != "list_registries"  # takes nothing, raises nothing
        and not any(kind in (inspect.getdoc(getattr(clipaudit, name)) or "") for kind in kinds)
    ]
    assert silent == []


def test_a_coverage_setting_given_to_run_audit_says_where_it_goes(tmp_path, monkeypatch):
    """``run_audit(df, images, models, colum="text")`` (or ``column=``) listed run_audit's
    options, not that coverage settings go in ``coverage={"column": ...}``."""
    monkeypatch.chdir(tmp_path)
    _refused(
        lambda c: c.run_audit(["a dog"], "images", "RN50", column="text"),
        r"coverage=\{'column': ",
    )
