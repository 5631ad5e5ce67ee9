"""A clipaudit run folder inside a caption folder is never read as captions: an audit written
into the folder it counts (its zero-shot tables, a coverage run's staged captions) would
otherwise be counted, or refused for a column it lacks, when the audit is run again."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from clipaudit.coverage import count_coverage
from tests.test_audit import _models
from tests.test_audit_inputs_first import ZEROSHOT
from tests.test_coverage import run, tiny  # noqa: F401 (a fixture)


def test_a_run_folder_inside_a_caption_folder_is_left_out(tiny, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"caption": ["a red cat", "a dog"]}), data / "a.parquet")
    # a run of captions given in memory stages them as parquet inside its own folder
    count_coverage(texts=["a cat", "a cat", "a cat"], registry=tiny, out=data / "earlier")
    assert list((data / "earlier").rglob("*.parquet"))  # the files that would be read
    counted = run([data], tiny, tmp_path / "run")
    assert counted.concepts.set_index("concept")["count"].to_dict()["cat"] == 1
    assert counted.n_captions_read == 2


def test_an_audit_written_into_the_folder_it_counts_runs_again(audit_runs, tmp_path):
    """The second call finds the audit done: its zero-shot and report tables, inside the caption
    folder, are not read as captions (they were refused for a column they lack)."""
    import clipaudit

    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"caption": ["a red cat", "a dog"]}), data / "a.parquet")
    config, trained, _ = _models(audit_runs)
    options = dict(zeroshot=ZEROSHOT, progress=False, echo=lambda _: None)
    first = clipaudit.run_audit(
        data, audit_runs["images"], (config, trained), data / "audit", **options
    )
    assert list((data / "audit" / "zeroshot").rglob("*.parquet"))  # what would have been read
    again = clipaudit.run_audit(
        data, audit_runs["images"], (config, trained), data / "audit", **options
    )
    assert again.coverage.reused and again.coverage.n_captions_read == 2
    assert again.manifest == first.manifest  # found done, whole
