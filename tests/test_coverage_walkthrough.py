"""A power user's walkthrough of ``clipaudit coverage``: the bad inputs met on the way each give one
message naming the thing and the fix.

The semantic runs use the tiny OpenCLIP encoder of tests/tiny_clip.py (the fixtures of
tests/test_coverage_semantic.py).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipaudit.errors import InputError
from tests.test_coverage_semantic import (  # noqa: F401  (fixtures)
    corpus,
    encoder_spec,
    planted,
    semantic_run,
    tiny,
)


@pytest.mark.parametrize(
    "content",
    [
        # the labelled captions given as --calibration instead of to coverage calibrate
        '{"id": 1, "caption": "a dog", "concepts": ["dog"]}\n'
        '{"id": 2, "caption": "a cat", "concepts": ["cat"]}\n',
        # another clipaudit JSON (coverage eval --json)
        json.dumps({"gold": {"n_captions": 2}, "profiles": {}}),
        "",
    ],
    ids=["gold-jsonl", "eval-json", "empty"],
)
def test_a_file_that_is_no_calibration_says_how_to_make_one(tmp_path, content):
    from clipaudit.semantic.calibration import Calibration

    path = tmp_path / "thresholds.json"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        Calibration.load(path)
    message = str(err.value)
    assert str(path) in message
    assert "clipaudit coverage calibrate" in message  # the fix: fit one
    assert "\n" not in message


def test_laion_embeddings_that_are_not_there_say_what_to_give(tmp_path):
    from clipaudit.semantic.store import LaionEmbeddings

    # a folder of metadata alone: the text_emb files are elsewhere
    pq.write_table(pa.table({"caption": ["a dog"]}), tmp_path / "metadata_0.parquet")
    with pytest.raises(InputError) as err:
        LaionEmbeddings(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "text_emb_N.npy" in message
    # a path that is not there
    with pytest.raises(InputError) as err:
        LaionEmbeddings(tmp_path / "nope")
    assert "text_emb_N.npy" in str(err.value) and "does not exist" in str(err.value)
    # embeddings without their metadata
    emb = tmp_path / "emb"
    emb.mkdir()
    np.save(emb / "text_emb_0.npy", np.ones((1, 4), np.float16))
    with pytest.raises(InputError) as err:
        LaionEmbeddings(emb)
    assert "metadata_N.parquet" in str(err.value) and str(emb) in str(err.value)


def test_index_of_a_run_whose_input_moved_names_it_and_the_fix(
    tiny,  # noqa: F811
    corpus,  # noqa: F811
    encoder_spec,  # noqa: F811
    planted,  # noqa: F811
    tmp_path,
):
    """coverage index reads the run's captions again from its inputs: an input moved since the
    count is named with why it is read and what to do, not as a bare "does not exist"."""
    from clipaudit.coverage_semantic import index_run

    counted = tmp_path / "animals.parquet"
    shutil.copy(corpus, counted)
    run = tmp_path / "run"
    semantic_run(counted, tiny, run, encoder_spec, planted["path"], method="semantic")
    counted.rename(tmp_path / "moved.parquet")
    with pytest.raises(InputError) as err:
        index_run(run, progress=False)
    message = str(err.value)
    assert str(counted) in message
    assert "index" in message and "reads" in message  # why it is read
    assert "put it back" in message and "coverage count" in message  # the fixes
    (tmp_path / "moved.parquet").rename(counted)
    assert index_run(run, progress=False).n == len(planted["captions"])


@pytest.mark.parametrize("option", ["column", "id_column"])
def test_a_column_named_for_text_files_alone_is_refused(tmp_path, option):
    """A .txt file has no columns (a line is a caption); --column or --id-column naming one for a
    corpus of text files alone was passed over without a word."""
    from clipaudit.coverage import CoverageSettings, count_coverage

    captions = tmp_path / "captions.txt"
    captions.write_text("a dog on a sofa\na cat\n")
    with pytest.raises(InputError) as err:
        count_coverage(
            [captions], "cai2025", tmp_path / "run",
            CoverageSettings(progress=False, workers=1, **{option: "captoin"}),
        )  # fmt: skip
    message = str(err.value)
    flag = "--" + option.replace("_", "-")
    assert "'captoin'" in message and flag in message and str(captions) in message
    assert "drop" in message  # the fix


def test_a_column_named_for_text_files_beside_jsonl_is_read_from_the_jsonl(tmp_path):
    """Beside a file with columns the option is that file's: the text file is counted as lines."""
    import pandas as pd

    from clipaudit.coverage import CoverageSettings, count_coverage

    (tmp_path / "a.txt").write_text("a dog\na cat\n")
    (tmp_path / "b.jsonl").write_text('{"TXT": "a giraffe"}\n{"TXT": "a red car"}\n')
    result = count_coverage(
        [tmp_path / "a.txt", tmp_path / "b.jsonl"], "cai2025", tmp_path / "run",
        CoverageSettings(progress=False, workers=1, column="TXT"),
    )  # fmt: skip
    assert result.manifest["n_captions_read"] == 4
    counts = pd.read_csv(tmp_path / "run" / "concepts.csv").set_index("concept")["count"]
    assert (counts["dog"], counts["cat"], counts["giraffe"], counts["car"]) == (1, 1, 1, 1)


def test_calibrate_shows_a_bar_over_every_text_it_encodes(tmp_path, encoder_spec, capfd):  # noqa: F811
    """coverage calibrate encoded for tens of seconds (MiniLM on a CPU; minutes for a CLIP text
    tower) without a word: its bar counts the concepts' texts and glosses and the captions."""
    from clipaudit.coverage_semantic import calibrate
    from tests.test_coverage import TINY_REGISTRY

    registry = tmp_path / "tiny.yaml"
    registry.write_text(TINY_REGISTRY)
    captions = ["a dog", "a puppy on a red sofa", "a cat", "a smiling kitten", "", "a red car"]
    labels = [["dog"], ["dog", "red"], ["cat"], ["cat", "happy"], [], ["red"]]
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        "".join(
            json.dumps({"id": i, "caption": c, "concepts": labels[i]}) + "\n"
            for i, c in enumerate(captions)
        )
    )
    # texts embedded: dog, puppy, a dog; cat, kitten, a cat; red, red colour; happy, smiling,
    # glad (prompts, synonyms and gloss, distinct), the 4 glosses again alone, and 6 captions
    total = 3 + 3 + 2 + 3 + 4 + len(captions)
    capfd.readouterr()
    calibrate(gold, tmp_path / "c.json", encoder=encoder_spec, registry=registry, folds=2,
              min_positives=1, progress=True)  # fmt: skip
    err = capfd.readouterr().err
    assert f"{total}/{total}" in err and "calibrate: encoding" in err
    calibrate(gold, tmp_path / "d.json", encoder=encoder_spec, registry=registry, folds=2,
              min_positives=1)  # fmt: skip
    assert "calibrate: encoding" not in capfd.readouterr().err  # the library is quiet by default
