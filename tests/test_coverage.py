"""Coverage runs: counts checked by hand, per-caption matches, examples, resume after kill -9,
refusing a different run, bad shards, and the command line."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipaudit import lexical
from clipaudit.coverage import CaptionSources, CoverageSettings, count_coverage
from clipaudit.errors import InputError, RunFailedError, RunFolderError, SettingsError
from clipaudit.registry import load_registry

REPO = Path(__file__).resolve().parent.parent

TINY_REGISTRY = """\
registry: tiny
version: "1"
groups:
  - {name: Animal, category: common}
  - {name: Color, category: common}
  - {name: Emotion, category: rare}
concepts:
  - name: dog
    group: Animal
    gloss: a dog
    synonyms: [dog, puppy]
    negative_contexts: [hot dog]
    paper_synonyms: [dog]
  - {name: cat, group: Animal, gloss: a cat, synonyms: [cat, kitten], paper_synonyms: [cat]}
  - {name: red, group: Color, gloss: red colour, synonyms: [red], paper_synonyms: [red]}
  - {name: happy, group: Emotion, gloss: glad, synonyms: [happy, smiling], paper_synonyms: [happy]}
"""

# (line of the jsonl corpus, concepts under curated, concepts under paper); None: not a caption
ZOO = [
    ({"id": 10, "caption": "A dog chasing a cat."}, ["dog", "cat"], ["dog", "cat"]),
    ({"id": 11, "caption": None}, None, None),
    ({"id": 12, "caption": "Two puppies and a kitten"}, ["dog", "cat"], []),
    ({"id": 13, "caption": "a red hot dog on a plate"}, ["red"], ["dog", "red"]),
    ({"id": 14, "caption": 42}, None, None),
    ({"id": 15, "caption": ""}, [], []),
    ({"id": 16, "caption": "   "}, [], []),
    ({"id": 17}, None, None),
    ({"id": 18, "caption": "The happy child"}, ["happy"], ["happy"]),
    ('{"id": 19, "caption": "broken', None, None),
    ({"id": 20, "caption": "Concatenated credits"}, [], ["cat", "red"]),
    ({"id": 21, "caption": "x" * 80}, None, None),
    ({"id": 22, "caption": "A smiling red cat"}, ["cat", "red", "happy"], ["cat", "red"]),
]
MAX_CHARS = 60


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("registry") / "tiny.yaml"
    path.write_text(TINY_REGISTRY)
    return load_registry(path)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "zoo.jsonl"
    lines = [row if isinstance(row, str) else json.dumps(row) for row, _, _ in ZOO]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(sources, registry, out, **options):
    options = {"max_caption_chars": MAX_CHARS, "progress": False, **options}
    return count_coverage(sources, registry, out, CoverageSettings(**options))


@pytest.mark.parametrize(
    ("profile", "column"),
    [("curated", 1), ("paper", 2)],
)
def test_counts_rates_and_summaries_match_a_hand_count(tiny, zoo, tmp_path, profile, column):
    result = run([zoo], tiny, tmp_path / "run", profile=profile)
    read = [row[column] for row in ZOO if row[column] is not None]
    # by hand: 13 rows; 8 captions read (2 of them empty); 5 skipped, one per reason
    assert len(read) == 8
    manifest = result.manifest
    assert (manifest["n_rows"], manifest["n_captions_read"], manifest["n_empty"]) == (13, 8, 2)
    assert manifest["n_skipped"] == 5
    assert manifest["skipped_reasons"] == {
        "bad_json": 1,
        "missing": 1,
        "not_string": 1,
        "null": 1,
        "too_long": 1,
    }
    expected_counts = {
        "curated": {"dog": 2, "cat": 3, "red": 2, "happy": 2},
        "paper": {"dog": 2, "cat": 3, "red": 3, "happy": 1},
    }[profile]
    expected_concepts = pd.DataFrame(
        {
            "concept": ["dog", "cat", "red", "happy"],
            "group": ["Animal", "Animal", "Color", "Emotion"],
            "category": ["common", "common", "common", "rare"],
            "count": [expected_counts[c] for c in ("dog", "cat", "red", "happy")],
            "rate": [expected_counts[c] / 8 for c in ("dog", "cat", "red", "happy")],
        }
    )
    pd.testing.assert_frame_equal(result.concepts, expected_concepts, check_dtype=False)
    # captions mentioning at least one concept of the group / category, counted by hand
    group_counts = {"curated": [3, 2, 2], "paper": [4, 3, 1]}[profile]
    mean_rates = {
        "curated": [(2 + 3) / 2 / 8, 2 / 8, 2 / 8],
        "paper": [(2 + 3) / 2 / 8, 3 / 8, 1 / 8],
    }[profile]
    expected_groups = pd.DataFrame(
        {
            "group": ["Animal", "Color", "Emotion"],
            "category": ["common", "common", "rare"],
            "count": group_counts,
            "rate": [n / 8 for n in group_counts],
            "n_concepts": [2, 1, 1],
            "mean_concept_rate": mean_rates,
        }
    )
    pd.testing.assert_frame_equal(result.groups, expected_groups, check_dtype=False)
    category_counts = {"curated": [4, 2], "paper": [4, 1]}[profile]
    common_mean = sum(expected_counts[c] for c in ("dog", "cat", "red")) / 3 / 8
    expected_categories = pd.DataFrame(
        {
            "category": ["common", "rare"],
            "count": category_counts,
            "rate": [n / 8 for n in category_counts],
            "n_concepts": [3, 1],
            "mean_concept_rate": [common_mean, expected_counts["happy"] / 8],
        }
    )
    pd.testing.assert_frame_equal(result.categories, expected_categories, check_dtype=False)
    for name, frame in (("concepts", result.concepts), ("groups", result.groups)):
        on_disk = pd.read_csv(tmp_path / "run" / f"{name}.csv")
        pd.testing.assert_frame_equal(on_disk, frame, check_dtype=False)
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / f"{name}.parquet"), frame)
    assert "n_captions_read" in manifest["rate_denominator"]
    assert manifest["inputs"][0]["files"][0]["bytes"] == zoo.stat().st_size


def test_per_caption_matches_have_one_row_per_caption_read(tiny, zoo, tmp_path):
    run([zoo], tiny, tmp_path / "run", per_caption=True)
    matches = pq.read_table(tmp_path / "run" / "matches.parquet")
    assert matches.schema.field("id").type == pa.int64()
    expected = [
        {"input": 0, "file": str(zoo), "id": row["id"], "concepts": curated}
        for row, curated, _ in ZOO
        if curated is not None
    ]
    assert matches.to_pylist() == expected
    assert not list((tmp_path / "run" / "units").glob("*.matches.parquet"))  # merged, removed


def test_txt_ids_are_row_numbers_and_examples_are_the_smallest_crc_captions(tiny, tmp_path):
    captions = [f"a cat number {i}" for i in range(30)] + ["a cat number 3", "no animal here"]
    path = tmp_path / "cats.txt"
    path.write_text("\n".join(captions) + "\n")
    result = run([path], tiny, tmp_path / "run", per_caption=True, examples_per_concept=3)
    ids = pq.read_table(tmp_path / "run" / "matches.parquet").column("id").to_pylist()
    assert ids == list(range(32))
    distinct = sorted(set(captions[:30]), key=lambda c: (zlib.crc32(c.encode()), c))[:3]
    chosen = result.examples["concepts"]["cat"]
    assert chosen["count"] == 31
    assert [e["caption"] for e in chosen["examples"]] == distinct
    assert [e["id"] for e in chosen["examples"]] == [captions.index(c) for c in distinct]
    assert result.examples["concepts"]["dog"]["examples"] == []
    on_disk = json.loads((tmp_path / "run" / "examples.json").read_text())
    assert on_disk == result.examples


@pytest.mark.parametrize(("batch_rows", "shard_rows"), [(10_000, 250_000), (7, 50)])
def test_examples_and_counts_do_not_depend_on_batches(tiny, tmp_path, batch_rows, shard_rows):
    animals, colours = ["cat", "dog", "kitten", "puppy", "hot dog"], ["red", "blue"]
    captions = [
        f"a {colours[i % 2]} {animals[i % 5]} number {i % 23}" for i in range(460)
    ]  # each twice
    path = tmp_path / "animals.txt"
    path.write_text("\n".join(captions) + "\n")
    result = run(
        [path],
        tiny,
        tmp_path / "run",
        examples_per_concept=4,
        batch_rows=batch_rows,
        shard_rows=shard_rows,
    )
    # by hand: which captions mention each concept ("hot dog" is no dog)
    mentions = {
        "cat": lambda c: " cat " in c or " kitten " in c,
        "dog": lambda c: (" dog " in c and "hot dog" not in c) or " puppy " in c,
        "red": lambda c: " red " in c,
        "happy": lambda c: False,
    }
    for concept, mentioned in mentions.items():
        found = [c for c in captions if mentioned(c)]
        smallest = sorted(set(found), key=lambda c: (zlib.crc32(c.encode()), c))[:4]
        chosen = result.examples["concepts"][concept]
        assert chosen["count"] == len(found)
        assert [e["caption"] for e in chosen["examples"]] == smallest
        assert [e["id"] for e in chosen["examples"]] == [captions.index(c) for c in smallest]
    assert result.manifest["n_with_any_concept"] == sum(
        any(mentioned(c) for mentioned in mentions.values()) for c in captions
    )


def test_sharding_and_workers_do_not_change_results(tiny, zoo, tmp_path):
    whole = run([zoo], tiny, tmp_path / "whole", per_caption=True)
    split = run([zoo], tiny, tmp_path / "split", per_caption=True, shard_rows=2)
    assert split.manifest["n_shards"] == 7 and whole.manifest["n_shards"] == 1
    assert_same_outputs(tmp_path / "whole", tmp_path / "split")


def outputs(run_dir: Path) -> dict:
    """Everything a run's results consist of (the manifest without its timings and settings)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    found = {
        name: (run_dir / name).read_bytes()
        for name in ("concepts.csv", "groups.csv", "categories.csv")
    }
    for name in ("concepts", "groups", "categories"):
        found[f"{name}.parquet"] = pd.read_parquet(run_dir / f"{name}.parquet").to_dict("list")
    # rows name the input and the file they were read from: the same files elsewhere (a URL, a
    # copy, named one by one or as a folder) by the file's name
    examples = json.loads((run_dir / "examples.json").read_text())
    for entry in examples["concepts"].values():
        entry["examples"] = [_where_by_name(example) for example in entry["examples"]]
    found["examples.json"] = examples
    if (run_dir / "matches.parquet").exists():
        rows = pq.read_table(run_dir / "matches.parquet").to_pylist()
        found["matches"] = [_where_by_name(row) for row in rows]
    counts = ("n_rows", "n_captions_read", "n_empty", "n_skipped", "skipped_reasons")
    found["manifest"] = {k: manifest[k] for k in (*counts, "n_with_any_concept", "status")}
    return found


def _where_by_name(row: dict) -> dict:
    file = row["file"]
    named = None if file is None else file.rstrip("/").rsplit("/", 1)[-1]
    return {**{k: v for k, v in row.items() if k != "input"}, "file": named}


def assert_same_outputs(a: Path, b: Path) -> None:
    first, second = outputs(a), outputs(b)
    assert first.keys() == second.keys()
    for key in first:
        assert first[key] == second[key], key


def write_synthetic_corpus(folder: Path, n_files: int, rows_per_file: int) -> None:
    """Captions from templates over registry words and non-matching words, seeded."""
    import numpy as np

    rng = np.random.default_rng(7)
    words = [
        "dog",
        "puppies",
        "cat",
        "red",
        "grey",
        "beach",
        "kitchen",
        "hot dog",
        "rain",
        "train",
        "happy",
        "furry",
        "sunset",
        "truck",
        "woman",
        "table",
        "that",
        "phone",
    ]
    folder.mkdir(parents=True)
    for part in range(n_files):
        picks = rng.integers(0, len(words), size=(rows_per_file, 3))
        captions = [f"a {words[a]} and a {words[b]} near the {words[c]}" for a, b, c in picks]
        ids = np.arange(part * rows_per_file, (part + 1) * rows_per_file)
        table = pa.table({"id": pa.array(ids, pa.int64()), "caption": captions})
        pq.write_table(table, folder / f"part-{part:03d}.parquet", row_group_size=10_000)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "clipaudit", "coverage", *args]


def test_a_run_killed_with_sigkill_resumes_to_identical_outputs(tmp_path):
    import psutil

    corpus = tmp_path / "corpus"
    write_synthetic_corpus(corpus, n_files=3, rows_per_file=80_000)
    args = cli(
        "count",
        str(corpus),
        "--out",
        str(tmp_path / "killed"),
        "--workers",
        "2",
        "--per-caption",
        "--shard-rows",
        "10000",
        "--no-progress",
    )
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shards = tmp_path / "killed" / "units"
    deadline = time.monotonic() + 60
    while not list(shards.glob("*.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "no shard finished within a minute"
        time.sleep(0.005)
    workers = psutil.Process(process.pid).children(recursive=True)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(shards.glob("*.json")))
    assert 1 <= finished < 24, "the kill came after the end: the test needs a larger corpus"
    assert json.loads((tmp_path / "killed" / "manifest.json").read_text())["status"] == "running"
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, f"orphaned workers still running after the kill: {alive}"

    # resumed with one worker, in-process: the worker count is not part of the run's identity
    args[args.index("--workers") + 1] = "1"
    resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "caption coverage per group" in resumed.stdout
    assert "reused from an earlier session" in resumed.stdout
    timings = json.loads((tmp_path / "killed" / "manifest.json").read_text())["timings"]
    assert timings["shards_resumed"] >= finished >= 1 and timings["shards_this_session"] >= 1
    assert timings["shards_resumed"] + timings["shards_this_session"] == 24

    reference = tmp_path / "uninterrupted"  # in-process, one worker, bigger shards
    run([corpus], load_registry(), reference, per_caption=True, max_caption_chars=10_000)
    assert_same_outputs(tmp_path / "killed", reference)


def test_a_run_folder_of_a_different_run_is_refused_unless_overwritten(tiny, zoo, tmp_path):
    out = tmp_path / "run"
    first = run([zoo], tiny, out)
    again = run([zoo], tiny, out, workers=2, skip_bad=True)  # neither changes results: reused
    assert again.reused and again.manifest == first.manifest
    with pytest.raises(RunFolderError, match=r"coverage.profile: 'curated' -> 'paper'"):
        run([zoo], tiny, out, profile="paper")
    assert not (out / ".lock").exists()  # refused, and no lock left behind
    paper = count_coverage(
        [zoo],
        tiny,
        out,
        CoverageSettings(profile="paper", max_caption_chars=MAX_CHARS),
        overwrite=True,
        progress=False,
    )
    assert paper.manifest["profile"] == "paper" and not paper.reused
    assert len(list((out / "units").glob("*.json"))) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"not empty but holds no clipaudit run"):
        run([zoo], tiny, other)
    zeroshot_like = tmp_path / "zs"
    zeroshot_like.mkdir()
    (zeroshot_like / "manifest.json").write_text('{"kind": "zeroshot", "status": "complete"}')
    with pytest.raises(RunFolderError, match=r"holds a zeroshot run, not a coverage run"):
        run([zoo], tiny, zeroshot_like)


def write_parts(folder: Path, parts: dict[str, list[str]]) -> None:
    folder.mkdir(exist_ok=True)
    for name, captions in parts.items():
        ids = [f"{name}-{i}" for i in range(len(captions))]
        pq.write_table(pa.table({"id": ids, "caption": captions}), folder / f"{name}.parquet")


def test_a_fixed_removed_or_added_shard_is_all_that_is_recounted(tiny, tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "run"
    parts = interrupted_run(tiny, corpus, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "c.parquet" in manifest["reason"]
    assert not (out / ".lock").exists()

    write_parts(corpus, {"c": parts["c"]})  # c fixed: it alone is counted, a and b are reused
    fixed = run([corpus], tiny, out, per_caption=True)
    assert fixed.manifest["timings"]["shards_this_session"] == 1
    assert fixed.manifest["timings"]["shards_resumed"] == 2
    expected = "pyahocorasick" if lexical._scan is None else "compiled"
    assert fixed.manifest["timings"]["automaton"] == expected  # which pass ran, provenance

    (corpus / "a.parquet").unlink()  # a removed, d added, after the run was complete
    write_parts(corpus, {"d": ["a red dog", "nothing"]})
    changed = run([corpus], tiny, out, per_caption=True)
    timings = changed.manifest["timings"]
    assert (timings["shards_this_session"], timings["shards_resumed"]) == (1, 2)
    # a's record is kept (its file may come back), counted nowhere: the outputs are a clean run's
    assert (timings["shards_kept_unused"], timings["shards_removed"]) == (1, 0)
    run([corpus], tiny, tmp_path / "clean", per_caption=True)
    assert_same_outputs(out, tmp_path / "clean")
    assert changed.n_captions_read == 4 + 20_000 + 2
    assert changed.concepts.set_index("concept")["count"].to_dict() == {
        "dog": 5,
        "cat": 20_000,
        "red": 1,
        "happy": 4,
    }


def test_shards_kept_are_those_of_inputs_no_longer_named_not_those_counted_again(tiny, tmp_path):
    """Text files have no ids: their rows are numbered across the corpus. Dropping the first
    file moves the ids of the two after it, which are counted again: 1 shard is no longer in
    the inputs (its record kept, not counted) and 2 replace their earlier counts; a file
    rewritten in place replaces 1."""
    from clipaudit.cli.coverage import session_line

    files = []
    for name in ("a", "b", "c"):
        files.append(tmp_path / f"{name}.txt")
        files[-1].write_text(f"a red cat {name}\na dog\n")
    out = tmp_path / "run"
    run(files, tiny, out)
    dropped = run(files[1:], tiny, out).manifest["timings"]
    assert (dropped["shards_this_session"], dropped["shards_resumed"]) == (2, 0)
    assert (dropped["shards_kept_unused"], dropped["shards_replaced"]) == (1, 2)
    assert dropped["shards_removed"] == 0
    line = session_line(dropped, reused=False)
    assert "2 shards counted (2 of them recounted: their file, their row-number ids" in line
    assert "removed" not in line
    assert ", 1 no longer in the inputs kept (--prune removes)" in line
    os.utime(files[2], ns=(1, 1))  # the same text, another time: another identity
    touched = run(files[1:], tiny, out).manifest["timings"]
    assert (touched["shards_this_session"], touched["shards_resumed"]) == (1, 1)
    assert (touched["shards_kept_unused"], touched["shards_replaced"]) == (1, 1)
    assert "no longer in the inputs removed" not in session_line(touched, reused=False)
    assert len(list((out / "units").glob("*.json"))) == 3  # a's kept, b's and c's counted now


def counting_shards(monkeypatch) -> list[str]:
    """The labels of the shards counted from now on (workers=1 counts inline, in this process)."""
    import clipaudit.coverage as coverage_module

    counted, process = [], coverage_module._process_shard

    def counting(shard):
        counted.append(shard.label)
        return process(shard)

    monkeypatch.setattr(coverage_module, "_process_shard", counting)
    return counted


def test_a_recount_with_fewer_inputs_keeps_the_others_records_and_reuses_them(
    tiny, tmp_path, monkeypatch
):
    """Nothing computed is lost: an input no longer named keeps its record (and matches), not
    counted in the results, which equal a fresh run's over the inputs named; named again, it is
    reused, not counted again, and the outputs equal a fresh run's over all of them."""
    corpus, out = tmp_path / "corpus", tmp_path / "run"
    write_parts(corpus, {"a": ["a red cat", "a dog"], "b": ["a happy puppy"] * 3,
                         "c": ["a kitten", "a red car", "nothing"]})  # fmt: skip
    files = [corpus / f"{name}.parquet" for name in "abc"]
    run(files, tiny, out, per_caption=True)
    records = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")}
    assert len(records) == 3

    counted = counting_shards(monkeypatch)
    fewer = run(files[:2], tiny, out, per_caption=True)
    timings = fewer.manifest["timings"]
    assert counted == [] and not fewer.reused
    assert (timings["shards_kept_unused"], timings["shards_replaced"]) == (1, 0)
    assert timings["shards_removed"] == 0
    c_record = only(out / "units", "c-*.json")
    assert c_record.stat().st_mtime_ns == records[c_record.name]
    assert only(out / "units", "c-*.matches.parquet")  # what a per-caption resume needs
    assert [i["spec"] for i in fewer.manifest["inputs"]] == [str(f) for f in files[:2]]
    assert fewer.manifest["n_shards"] == 2 and fewer.n_captions_read == 2 + 3
    run(files[:2], tiny, tmp_path / "fresh-ab", per_caption=True)
    assert_same_outputs(out, tmp_path / "fresh-ab")
    # the same inputs again: the complete run is reused, kept records notwithstanding
    assert run(files[:2], tiny, out, per_caption=True).reused

    counted.clear()  # the fresh run's shards
    again = run(files, tiny, out, per_caption=True)
    assert counted == []  # c's kept record reused: no shard counted
    assert (again.manifest["timings"]["shards_resumed"], again.manifest["n_shards"]) == (3, 3)
    assert again.manifest["timings"]["shards_kept_unused"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.json")} == records
    run(files, tiny, tmp_path / "fresh-abc", per_caption=True)
    assert_same_outputs(out, tmp_path / "fresh-abc")


def test_a_changed_input_replaces_its_records_named_or_not_and_prune_reclaims_the_rest(
    tiny, tmp_path, monkeypatch
):
    """Only records replaced by a count of the same input are deleted: a file rewritten (here
    from two row groups to one, so that one old shard has no new one of its label) replaces
    all of its records; one changed while not named replaces them when named again. ``prune``
    deletes the records of the inputs no longer named."""
    corpus, out = tmp_path / "corpus", tmp_path / "run"
    (corpus).mkdir()
    a, b = corpus / "a.parquet", corpus / "b.parquet"
    pq.write_table(pa.table({"caption": ["a red cat", "a dog", "a kitten", "nothing"]}), a,
                   row_group_size=2)  # fmt: skip
    pq.write_table(pa.table({"caption": ["a happy puppy", "a cat"]}), b)
    first = run([a, b], tiny, out, shard_rows=2)
    assert first.manifest["n_shards"] == 3
    pq.write_table(pa.table({"caption": ["a red dog", "a dog", "a cat", "x"]}), a)  # one group
    counted = counting_shards(monkeypatch)
    rewritten = run([a, b], tiny, out, shard_rows=2)
    timings = rewritten.manifest["timings"]
    assert counted == [str(a)]
    assert (timings["shards_replaced"], timings["shards_kept_unused"]) == (2, 0)
    assert len(list((out / "units").glob("a-*.json"))) == 1

    run([a], tiny, out, shard_rows=2)  # b kept, then changed while not named
    pq.write_table(pa.table({"caption": ["a happy kitten", "a red cat", "a dog"]}), b)
    counted.clear()
    named = run([a, b], tiny, out, shard_rows=2)
    assert counted == [str(b)]
    assert (named.manifest["timings"]["shards_replaced"], named.manifest["n_shards"]) == (1, 2)
    assert len(list((out / "units").glob("*.json"))) == 2
    run([a, b], tiny, tmp_path / "fresh", shard_rows=2)
    assert_same_outputs(out, tmp_path / "fresh")

    settings = CoverageSettings(max_caption_chars=MAX_CHARS, progress=False, shard_rows=2)
    pruned = count_coverage([a], tiny, out, settings, prune=True)  # b's record reclaimed
    timings = pruned.manifest["timings"]
    assert (timings["shards_removed"], timings["shards_kept_unused"]) == (1, 0)
    assert [p.name for p in (out / "units").glob("*.json")] == [
        only(out / "units", "a-*.json").name
    ]
    assert count_coverage([a], tiny, out, settings, prune=True).reused  # nothing left to prune


def test_prune_removes_the_captions_given_in_memory_that_are_no_longer_counted(tiny, tmp_path):
    out = tmp_path / "run"
    settings = CoverageSettings(progress=False)
    count_coverage(texts=["a red cat", "a dog"], registry=tiny, out=out, settings=settings)
    other = count_coverage(texts=["a happy puppy"], registry=tiny, out=out, settings=settings)
    assert other.manifest["timings"]["shards_kept_unused"] == 1
    assert len(list((out / "inputs").glob("captions-*.parquet"))) == 2  # kept for a rerun
    with pytest.raises(SettingsError, match="prune must be True or False, got 'no'"):
        count_coverage(texts=["a happy puppy"], registry=tiny, out=out, prune="no")
    pruned = count_coverage(texts=["a happy puppy"], registry=tiny, out=out, settings=settings,
                            prune=True)  # fmt: skip
    assert pruned.manifest["timings"]["shards_removed"] == 1
    (staged,) = (out / "inputs").glob("captions-*.parquet")
    assert pruned.manifest["inputs"][0]["spec"] == str(staged)
    assert pruned.concepts.set_index("concept")["count"].to_dict() == {
        "dog": 1, "cat": 0, "red": 0, "happy": 1,
    }  # fmt: skip


def test_a_full_or_read_only_disk_stops_the_run_with_the_fix_and_a_rerun_resumes(
    tiny, tmp_path, monkeypatch, capsys
):
    import errno

    from clipaudit import coverage, runs
    from clipaudit.cli import main

    corpus, out = tmp_path / "corpus", tmp_path / "run"
    write_parts(corpus, {"a": ["a red cat", "a dog"], "b": ["a happy puppy"], "c": ["a cat"]})
    written, write_unit = [], coverage.write_unit

    def full_after_one(units, key, identity, record):
        if written:  # the disk fills up after the first shard's record
            raise OSError(errno.ENOSPC, "Error writing bytes to file")
        written.append(key)
        write_unit(units, key, identity, record)

    monkeypatch.setattr(coverage, "write_unit", full_after_one)
    with pytest.raises(RunFolderError) as stopped:
        run([corpus], tiny, out, per_caption=True)
    assert str(stopped.value).startswith(
        f"cannot write into the run folder {out} (No space left on device); free space"
    )
    assert "run the same command again" in str(stopped.value)
    monkeypatch.setattr(coverage, "write_unit", write_unit)
    resumed = run([corpus], tiny, out, per_caption=True)
    timings = resumed.manifest["timings"]
    assert (timings["shards_resumed"], timings["shards_this_session"]) == (1, 2)
    run([corpus], tiny, tmp_path / "clean", per_caption=True)
    assert_same_outputs(out, tmp_path / "clean")

    def read_only(path):  # a folder on a read-only mount (as root, a chmod would not do)
        raise OSError(errno.EROFS, "Read-only file system", str(path / ".lock"))

    monkeypatch.setattr(runs, "_acquire_lock", read_only)
    with pytest.raises(SystemExit) as exited:
        main(["coverage", "count", str(corpus), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    assert err.startswith(f"error: cannot write {out / '.lock'} (Read-only file system); ")


def test_shards_counted_by_other_matching_code_are_counted_again(tiny, tmp_path, monkeypatch):
    """A run resumed after the matcher's code changed (an upgrade, the version unchanged) reuses
    no shard the old code counted; the outputs are those of a clean run."""
    import clipaudit.coverage as coverage_module

    corpus = tmp_path / "corpus"
    write_parts(corpus, {"a": ["a red cat", "a dog"], "b": ["a happy puppy"] * 3})
    out = tmp_path / "run"
    first = run([corpus], tiny, out)
    assert first.manifest["timings"]["shards_this_session"] == 2
    same = run([corpus], tiny, out)  # the same code: nothing recounted
    assert same.reused
    lexicon = lexical.code_identity()[0]
    monkeypatch.setattr(coverage_module, "code_identity", lambda: (lexicon, "other code"))
    upgraded = run([corpus], tiny, out)  # the complete run is counted again, not reused
    timings = upgraded.manifest["timings"]
    assert not upgraded.reused
    assert (timings["shards_this_session"], timings["shards_resumed"]) == (2, 0)
    run([corpus], tiny, tmp_path / "clean")
    assert_same_outputs(out, tmp_path / "clean")


def test_a_wrong_column_then_the_right_one_starts_over(tiny, tmp_path):
    path = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"text": ["a red cat", "a dog"]}), path)
    out = tmp_path / "run"
    with pytest.raises(InputError, match=r"no caption column 'txt' \(did you mean 'text'\?\)"):
        run([path], tiny, out, column="txt")
    assert not out.exists()  # the column is checked before a run folder is made
    result = run([path], tiny, out, column="text")
    assert result.manifest["status"] == "complete"
    assert result.concepts.set_index("concept")["count"].to_dict()["cat"] == 1


def test_a_run_where_every_shard_failed_is_failed(tiny, tmp_path):
    from clipaudit.errors import RunFailedError

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.parquet").write_bytes(b"not parquet at all")
    out = tmp_path / "run"
    with pytest.raises(RunFailedError, match=r"no shard of the corpus could be read"):
        run([corpus], tiny, out, skip_bad=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    result = subprocess.run(
        cli("count", str(corpus), "--out", str(out), "--skip-bad", "--no-progress"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "no shard of the corpus could be read" in result.stderr


def test_a_run_whose_only_captions_were_in_skipped_shards_names_them_not_the_column(tiny, tmp_path):
    """Every shard holding captions is unreadable (skipped), the one read holds two nulls: the
    failure names the skipped shards and the fix, not a caption column that is right."""
    corpus = corpus_with_a_corrupt_shard(tmp_path / "corpus")
    for name in ("a", "c"):
        pq.write_table(pa.table({"caption": pa.array([None], pa.string())}), corpus / f"{name}.parquet")  # fmt: skip
    with pytest.raises(RunFailedError) as failed:
        run([corpus], tiny, tmp_path / "run", skip_bad=True)
    message = str(failed.value)
    assert message.startswith(
        f"no caption was read: 1 shard(s) could not be read ({corpus / 'b.parquet'}: unreadable "
        "parquet data"
    )
    assert "the other shards' 2 rows hold no caption (2 null); fix or replace" in message
    assert "--column" not in message


def test_a_corpus_copied_elsewhere_resumes_and_the_manifest_names_the_copy(tiny, tmp_path):
    """The copy's shards are the ones counted (same content and times): none is counted again,
    but the complete run is not handed back as it was, naming the inputs of another session."""
    import shutil

    first = tmp_path / "first"
    first.mkdir()
    (first / "a.jsonl").write_text('{"id": 1, "caption": "a red cat"}\n')
    (first / "b.jsonl").write_text('{"id": 2, "caption": "a dog"}\n')
    out = tmp_path / "run"
    before = run([first], tiny, out, per_caption=True)
    copy = shutil.copytree(first, tmp_path / "copy")  # copy2: times kept
    after = run([copy], tiny, out, per_caption=True)
    assert not after.reused and after.manifest["timings"]["shards_this_session"] == 0
    assert after.manifest["timings"]["shards_resumed"] == 2
    assert after.manifest["inputs"][0]["spec"] == str(copy)
    assert [f["path"] for f in after.manifest["inputs"][0]["files"]] == [
        str(copy / "a.jsonl"),
        str(copy / "b.jsonl"),
    ]
    assert after.manifest["corpus"] == "copy"
    assert after.concepts.equals(before.concepts)
    assert after.matches().equals(before.matches())
    assert run([copy], tiny, out, per_caption=True).reused  # now it holds this very run


def test_a_run_folder_inside_its_corpus_folder_is_no_input(tiny, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.table({"caption": ["a red cat", "a dog"]}), corpus / "part.parquet")
    first = run([corpus], tiny, corpus / "run")
    again = run([corpus], tiny, corpus / "run")  # its own tables would be no caption shards
    assert again.reused and again.n_captions_read == first.n_captions_read == 2


def test_texts_of_a_pandas_string_column_take_its_missing_values_as_no_caption(tiny, tmp_path):
    texts = pd.Series(["a red cat", None, "a dog"], dtype="string")
    result = count_coverage(texts=texts, registry=tiny, out=tmp_path / "run", progress=False)
    assert (result.manifest["n_rows"], result.n_captions_read) == (3, 2)
    assert result.manifest["skipped_reasons"] == {"null": 1}


def test_a_dataframe_of_non_text_captions_is_refused_and_mixed_ids_are_text(tiny, tmp_path):
    with pytest.raises(InputError, match=r"caption column 'caption' holds int 3 \(row 1\)"):
        run(pd.DataFrame({"caption": ["a dog", 3, None]}), tiny, tmp_path / "a")
    frame = pd.DataFrame({"caption": ["a dog", None, "a cat"], "id": ["a1", 7, None]})
    result = run(frame, tiny, tmp_path / "b", per_caption=True)
    matches = pd.read_parquet(result.out_dir / "matches.parquet")
    assert result.n_captions_read == 2 and matches["id"].iloc[0] == "a1"
    assert pd.isna(matches["id"].iloc[1])  # the cat has no id


@pytest.mark.parametrize("per_bucket", [None, 2])
def test_null_and_repeated_ids_are_counted_in_the_manifest(tiny, tmp_path, monkeypatch, per_bucket):
    """Two files numbered from 0 each (a common way to get one id twice), a record without an id,
    and an id given once as a number and once as text: matches.parquet keeps every row, and the
    manifest says how many cannot be joined back by id. ``per_bucket``: the ids spread over
    several files, as a large corpus's are."""
    from clipaudit import coverage

    if per_bucket is not None:
        monkeypatch.setattr(coverage, "_IDS_PER_BUCKET", per_bucket)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = {
        "a.jsonl": [(0, "a dog"), (1, "a cat"), (None, "a red cat"), ("x", "a puppy")],
        "b.jsonl": [(0, "a kitten"), (1, "a dog"), (2, "red"), ("1", "a cat"), (None, "x")],
    }
    for name, pairs in rows.items():
        lines = [{"caption": c} if i is None else {"id": i, "caption": c} for i, c in pairs]
        (corpus / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = run([corpus], tiny, tmp_path / "run", per_caption=True)
    ids = pq.read_table(result.out_dir / "matches.parquet").column("id").to_pylist()
    assert ids[:4] == ["0", "1", None, "x"] and len(ids) == 9  # text: "x" is no number
    # nulls: one per file; repeated: b's 0 and 1, and its "1" (a third 1)
    assert result.manifest["ids"] == {"n_null": 2, "n_repeated": 3, "inputs": [0]}
    assert not list((tmp_path / "run").glob(".*.tmp"))
    plain = run([corpus], tiny, tmp_path / "plain")
    assert plain.manifest["ids"] is None  # no per-caption output: ids name no row


def test_ids_arrow_cannot_hold_are_kept_as_text(tiny, tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text(
        '{"id": 18446744073709551615, "caption": "a dog"}\n{"id": 5, "caption": "a cat"}\n'
    )
    listed = tmp_path / "listed.parquet"
    pq.write_table(pa.table({"id": pa.array([[1, 2], [3]]), "caption": ["a dog", "a cat"]}), listed)
    for path, ids in ((big, ["18446744073709551615", "5"]), (listed, ["[1, 2]", "[3]"])):
        result = run([path], tiny, tmp_path / path.stem, per_caption=True)
        matches = pd.read_parquet(result.out_dir / "matches.parquet")
        assert matches["id"].tolist() == ids
        assert [list(c) for c in matches["concepts"]] == [["dog"], ["cat"]]


def test_a_run_that_reads_no_caption_is_failed_and_says_why(tiny, tmp_path):
    from clipaudit.errors import RunFailedError

    # JSON lines: their types are known only once read (a parquet column of numbers is refused
    # when planned, before anything is read)
    path = tmp_path / "ids.jsonl"
    rows = [{"id": 1, "caption": "a red cat"}, {"id": 2, "caption": "a dog"}, {"id": 3}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "run"
    with pytest.raises(RunFailedError, match=r"holds 3 rows \(3 not_string\) in column 'id'"):
        run([path], tiny, out, column="id")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "--column" in manifest["reason"]
    # read back, it says why and the fix it holds, not "run it again to resume it"
    from clipaudit.runs import load_run

    with pytest.raises(
        RunFolderError,
        match=r"failed \(no caption was read.*--column.*\), not complete; do what its reason says$",
    ):
        load_run(out)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(RunFailedError, match=r"holds 0 rows \(its files are empty\)") as err:
        run([tmp_path / "empty.txt"], tiny, tmp_path / "empty-run")
    assert "--column" not in str(err.value)  # a text file has no columns to name
    (tmp_path / "long.txt").write_text("a red cat on a mat\n" * 2)
    with pytest.raises(RunFailedError, match=r"holds 2 lines, all skipped \(2 too_long\)") as err:
        run([tmp_path / "long.txt"], tiny, tmp_path / "long-run", max_caption_chars=5)
    assert "--max-chars" in str(err.value) and "--column" not in str(err.value)


@pytest.mark.parametrize(
    "form", ["dataframe", "list", "texts", "generator", "path string", "paths"]
)
def test_every_caption_input_form_counts_the_same(tiny, tmp_path, form):
    captions = ["A red cat.", "a hot dog", "Two puppies", "nothing here"]
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(captions) + "\n")
    given = {
        "dataframe": pd.DataFrame({"text": captions, "other": range(4)}),
        "list": list(captions),
        "generator": (c for c in captions),
        "path string": str(path),
        "paths": [path],
        "texts": None,
    }[form]
    options = {"column": "text"} if form == "dataframe" else {}
    if form == "texts":
        options["texts"] = list(captions)
    result = count_coverage(
        given, registry=tiny, out=tmp_path / "run", progress=False, per_caption=True, **options
    )
    assert result.concepts.set_index("concept")["count"].to_dict() == {
        "dog": 1,
        "cat": 1,
        "red": 1,
        "happy": 0,
    }
    assert result.matches()["concepts"].map(list).tolist() == [["cat", "red"], [], ["dog"], []]
    again = count_coverage(
        captions if form == "generator" else given,
        registry=tiny,
        out=tmp_path / "run",
        progress=False,
        per_caption=True,
        **options,
    )
    assert again.reused  # the same in-memory captions are the same input


def test_unknown_settings_and_ambiguous_inputs_are_refused(tiny, tmp_path):
    with pytest.raises(SettingsError, match=r"unknown coverage setting 'colum' \(did you mean"):
        count_coverage(["a cat"], tiny, tmp_path / "a", colum="text")
    with pytest.raises(InputError, match=r"mixes caption sources"):
        count_coverage(["a cat", "captions.parquet"], tiny, tmp_path / "b")
    with pytest.raises(InputError, match=r"the DataFrame: no caption column 'caption'"):
        count_coverage(
            pd.DataFrame({"caption_text": ["a cat"]}), tiny, tmp_path / "c", column="caption"
        )


def test_texts_are_always_captions_and_strings_naming_paths_are_sources(
    tiny, tmp_path, monkeypatch
):
    """texts= reads captions whatever they say ("." is no folder there); in a list given as
    captions, strings that each name a path are sources, and an error says how to mean captions."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.md").write_text("a red cat\n")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "c.txt").write_text("a dog\n")
    options = {"registry": tiny, "progress": False}
    texts = [".", "notes.md", "corpus", "a red cat", None]
    result = count_coverage(texts=texts, out=tmp_path / "texts", **options)
    assert result.n_captions_read == 4 and result.manifest["skipped_reasons"] == {"null": 1}
    counts = result.concepts.set_index("concept")["count"].to_dict()
    assert counts == {"dog": 0, "cat": 1, "red": 1, "happy": 0}
    assert (
        count_coverage(texts=pd.Series(["."]), out=tmp_path / "series", **options).n_captions_read
        == 1
    )
    # given as captions: each string names a path, so they are sources (the folder's a dog)
    folder = count_coverage(["corpus"], out=tmp_path / "folder", **options)
    assert folder.concepts.set_index("concept")["count"]["dog"] == 1
    with pytest.raises(InputError, match=r"unknown file type '\.md'.*pass them as texts="):
        count_coverage(["notes.md"], out=tmp_path / "md", **options)
    # the same captions as a list or as texts= are the same input: the run is reused
    count_coverage(["a red cat", "a dog"], out=tmp_path / "same", **options)
    assert count_coverage(texts=["a red cat", "a dog"], out=tmp_path / "same", **options).reused
    for kwargs, refused in [
        ({}, "got neither"),
        ({"captions": ["a cat"], "texts": ["a dog"]}, "not both"),
        ({"texts": "a red cat"}, r"got one str 'a red cat': wrap it in a list"),
        ({"texts": pd.DataFrame({"caption": ["a cat"]})}, "pass a DataFrame as captions"),
        ({"texts": ["a cat", 7]}, r"texts= holds int 7 \(item 1\)"),
        ({"texts": []}, "texts= is empty"),
    ]:
        with pytest.raises(InputError, match=refused):
            count_coverage(**kwargs, out=tmp_path / "refused", **options)
    assert not (tmp_path / "refused").exists()


def test_split_is_for_hugging_face_datasets_and_no_other_run_s_identity(tiny, zoo, tmp_path):
    """--split selects a split of a Hugging Face dataset: given for other inputs it is refused
    (it selects nothing), a run recorded with one resumes whatever it said, and a saved
    DatasetDict counted with another split recounts its shards as a changed input does."""
    out = tmp_path / "run"
    first = run([zoo], tiny, out)
    with pytest.raises(SettingsError, match=r"'validation' selects a split of a Hugging Face "
                                            r"dataset.*zoo\.jsonl' is a jsonl source"):  # fmt: skip
        run([zoo], tiny, out, hf_split="validation")
    with pytest.raises(SettingsError, match="selects a split"):
        count_coverage(texts=["a dog"], registry=tiny, out=tmp_path / "texts", hf_split="test")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["settings"]["coverage"]["hf_split"] = "validation"  # as recorded by earlier versions
    (out / "manifest.json").write_text(json.dumps(manifest))
    again = run([zoo], tiny, out)
    assert again.reused and again.concepts.equals(first.concepts)

    import datasets

    splits = {"train": ["a dog", "a red cat"], "val": ["a cat", "a smiling cat", "a dog"]}
    saved = tmp_path / "dict"
    datasets.DatasetDict(
        {name: datasets.Dataset.from_dict({"caption": rows}) for name, rows in splits.items()}
    ).save_to_disk(str(saved))
    train = run([saved], tiny, tmp_path / "hf")
    val = run([saved], tiny, tmp_path / "hf", hf_split="val")  # another split: recounted
    assert (train.n_captions_read, val.n_captions_read) == (2, 3) and not val.reused
    assert val.concepts.set_index("concept")["count"].to_dict() == {
        "dog": 1, "cat": 2, "red": 0, "happy": 1
    }  # fmt: skip
    assert val.manifest["inputs"][0]["split"] == "val" and len(val.manifest["units"]) == 1
    assert run([saved], tiny, tmp_path / "hf", hf_split="val").reused


def corpus_with_a_corrupt_shard(corpus: Path) -> Path:
    """a.parquet and c.parquet fine, b.parquet (between them) with a corrupt data page."""
    corpus.mkdir()
    for name in ("a", "c"):
        pq.write_table(pa.table({"caption": ["a red cat"] * 4}), corpus / f"{name}.parquet")
    pq.write_table(
        pa.table({"caption": [f"a dog number {i}" for i in range(20_000)]}), corpus / "b.parquet"
    )
    data = bytearray((corpus / "b.parquet").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 200] = b"\xab" * 200
    (corpus / "b.parquet").write_bytes(bytes(data))
    return corpus


def test_bad_shards_stop_the_run_keeping_finished_work_or_are_skipped(tiny, tmp_path):
    corpus = corpus_with_a_corrupt_shard(tmp_path / "corpus")
    with pytest.raises(InputError, match=r"b\.parquet: unreadable parquet data.*--skip-bad"):
        run([corpus], tiny, tmp_path / "run")
    assert list((tmp_path / "run" / "units").glob("a-*.json"))  # a.parquet is kept
    result = run([corpus], tiny, tmp_path / "run", skip_bad=True)
    assert result.manifest["timings"]["shards_resumed"] >= 1
    assert result.manifest["n_captions_read"] == 8
    assert result.manifest["n_rows"] == 20_008  # the skipped shard's rows are known
    assert [s["shard"] for s in result.manifest["skipped_shards"]] == [str(corpus / "b.parquet")]
    assert result.concepts.set_index("concept")["count"].to_dict() == {
        "dog": 0,
        "cat": 8,
        "red": 8,
        "happy": 0,
    }


def test_the_rate_per_cpu_second_counts_the_rows_its_shards_read_not_the_skipped(tiny, tmp_path):
    """A skipped shard's rows are the corpus's (n_rows), but no CPU second was spent counting
    them: the manifest's captions per CPU second is over the counted shards' rows alone."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.table({"caption": [f"a red cat {i}" for i in range(30_000)]}), corpus / "a.parquet")  # fmt: skip
    pq.write_table(pa.table({"caption": [f"a dog {i}" for i in range(30_000)]}), corpus / "b.parquet")  # fmt: skip
    data = bytearray((corpus / "b.parquet").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 200] = b"\xab" * 200
    (corpus / "b.parquet").write_bytes(bytes(data))
    result = run([corpus], tiny, tmp_path / "run", skip_bad=True)
    assert result.manifest["n_rows"] == 60_000 and result.n_captions_read == 30_000
    (unit,) = [json.loads(p.read_text()) for p in (tmp_path / "run" / "units").glob("*.json")]
    assert unit["cpu_seconds"] > 0
    timings = result.manifest["timings"]
    assert timings["captions_per_cpu_s"] == round(30_000 / unit["cpu_seconds"], 1)


def test_a_shard_without_the_caption_column_is_a_bad_shard(tiny, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.table({"caption": ["a red cat", "a dog"]}), corpus / "a.parquet")
    pq.write_table(pa.table({"alt": ["a cat"]}), corpus / "b.parquet")
    (corpus / "c.jsonl").write_text('{"alt": "a dog"}\n')  # a folder reads one kind: parquet
    with pytest.raises(InputError, match=r"b\.parquet.*no caption column"):
        run([corpus], tiny, tmp_path / "run")
    result = run([corpus], tiny, tmp_path / "run", skip_bad=True)
    (skipped,) = result.manifest["skipped_shards"]
    assert (
        skipped["shard"] == str(corpus / "b.parquet") and "no caption column" in skipped["reason"]
    )
    assert result.n_captions_read == 2
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"alt": "a dog"}\n')
    with pytest.raises(RunFailedError, match="no shard of the corpus could be read"):
        run([jsonl], tiny, tmp_path / "run2", skip_bad=True)


def test_caption_files_of_another_kind_in_a_folder_are_listed_as_not_read(tmp_path, capsys):
    from clipaudit.cli import main

    corpus = tmp_path / "corpus"
    (corpus / "more").mkdir(parents=True)
    pq.write_table(pa.table({"caption": ["a red cat", "a dog"]}), corpus / "a.parquet")
    (corpus / "more" / "c.jsonl").write_text('{"caption": "a dog"}\n')
    (corpus / "notes.txt").write_text("a cat\n")
    main(["coverage", "count", str(corpus), "--out", str(tmp_path / "run"), "--no-progress"])
    printed = " ".join(capsys.readouterr().out.split())
    assert "2 caption files of another kind not read (e.g. more/c.jsonl)" in printed
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["inputs"][0]["left_out"] == ["more/c.jsonl", "notes.txt"]
    assert manifest["n_captions_read"] == 2


def test_compressed_caption_files_in_a_folder_are_listed_with_the_fix(tmp_path, capsys):
    from clipaudit.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "part-0.jsonl").write_text('{"caption": "a dog"}\n')
    for n in (1, 2):  # gzipped shards beside one decompressed: once counted silently as one
        (corpus / f"part-{n}.jsonl.gz").write_bytes(gzip.compress(b'{"caption": "a cat"}\n'))
    main(["coverage", "count", str(corpus), "--out", str(tmp_path / "run"), "--no-progress"])
    printed = " ".join(capsys.readouterr().out.split())
    assert "2 compressed caption files not read (e.g. part-1.jsonl.gz): decompress them" in printed
    assert "of another kind" not in printed
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["inputs"][0]["left_out"] == ["part-1.jsonl.gz", "part-2.jsonl.gz"]
    assert manifest["n_captions_read"] == 1


def test_a_resume_with_nothing_left_to_count_starts_no_engine(tiny, tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"caption": ["a red cat", "a dog"]}), path)
    out = tmp_path / "run"
    run([path], tiny, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(status="failed", reason="interrupted during the merge")
    (out / "manifest.json").write_text(json.dumps(manifest))
    resumed = run([path], tiny, out, engine="ray")  # every shard is done: Ray never starts
    timings = resumed.manifest["timings"]
    assert timings["engine"] == "local" and timings["shards_this_session"] == 0


def test_settings_are_checked_when_made():
    with pytest.raises(SettingsError, match=r"unknown profile 'papers'.*did you mean 'paper'"):
        CoverageSettings(profile="papers")
    with pytest.raises(
        SettingsError, match=r"workers \(--workers\) must be a positive integer, got 0"
    ):
        CoverageSettings(workers=0)
    # a switch that is no bool: "no" would have counted as on (and shown the progress bar)
    with pytest.raises(
        SettingsError,
        match=r"^progress \(--progress/--no-progress\) must be True or False, got 'no'$",
    ):
        count_coverage(texts=["a red cat"], progress="no")
    with pytest.raises(SettingsError, match=r"per_caption \(--per-caption\) must be True or False"):
        CoverageSettings(per_caption=1)


def test_laion_embeddings_and_a_store_are_not_both_taken(tmp_path):
    (tmp_path / "emb").mkdir()
    with pytest.raises(SettingsError, match=r"read in place.*drop one of them"):
        CoverageSettings(
            method="semantic", embeddings=str(tmp_path / "emb"), embedding_store="store"
        )


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path):
    result = subprocess.run(
        cli("count", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "run")),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.parquet' does not exist" in lines[0], result.stderr


def test_tables_are_written_as_pandas_would_write_them(tmp_path):
    """The merge builds its tables without pandas (pyarrow's own constructors import it); the
    files read as the DataFrame's: CSV byte for byte, parquet frame for frame."""
    from clipaudit.provenance import arrow_table, write_table

    columns = {
        "concept": ["dog", 'a "quoted", comma', "café"],
        "count": [3, 0, 12_345_678_901],
        "rate": [0.1, float("nan"), 1e-05],
        "mean_concept_rate": [2 / 3, 0.0, float("nan")],
    }
    write_table(arrow_table(columns), tmp_path / "ours")
    frame = pd.DataFrame(columns)
    assert (tmp_path / "ours.csv").read_text("utf-8") == frame.to_csv(index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ours.parquet"), frame)
    with pytest.raises(TypeError, match="column 'count': expected int, float or str"):
        arrow_table({"count": [1, None]})


def test_a_count_imports_neither_pandas_nor_arrow_compute(zoo, tmp_path):
    """pandas (about 0.2 s) and pyarrow.compute (40 ms) are fixed costs of every count that
    needs neither: a count from the command line, of a parquet file with null captions and of a
    jsonl file, then the same count again (the run is reused) and the result's repr."""
    (tmp_path / "tiny.yaml").write_text(TINY_REGISTRY)
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"caption": ["a dog", None, "two red cats", None, "a kitten"]}), nulls)
    registry = str(tmp_path / "tiny.yaml")
    code = (
        "import sys; from clipaudit.cli import main; from clipaudit import count_coverage\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as stop:\n    assert not stop.code, stop\n"
        "again = count_coverage(sys.argv[3], sys.argv[5], sys.argv[7], max_caption_chars=60)\n"
        "assert again.reused and '4 concepts' in repr(again)\n"
        "print(sorted({'pandas', 'pyarrow.compute'} & set(sys.modules)))"
    )
    for name, source in (("parquet", nulls), ("jsonl", zoo)):
        out = tmp_path / name
        args = ["coverage", "count", str(source), "--registry", registry, "--out", str(out)]
        result = subprocess.run(
            [sys.executable, "-c", code, *args, "--max-chars", str(MAX_CHARS)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
    counts = pd.read_csv(tmp_path / "parquet" / "concepts.csv").set_index("concept")["count"]
    assert counts.to_dict() == {"dog": 1, "cat": 2, "red": 1, "happy": 0}
    manifest = json.loads((tmp_path / "parquet" / "manifest.json").read_text())
    assert manifest["n_captions_read"] == 3 and manifest["skipped_reasons"] == {"null": 2}


def test_caption_sources_are_read_as_sources_whatever_they_name(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "c.txt").write_text("a dog\na red cat\n")
    options = {"registry": tiny, "progress": False}
    result = count_coverage(CaptionSources(["corpus"]), out=tmp_path / "ok", **options)
    assert result.concepts.set_index("concept")["count"].to_dict()["dog"] == 1
    # a plain list naming nothing is captions; as CaptionSources, it is a missing source
    assert count_coverage(["a dog"], out=tmp_path / "captions", **options).n_captions_read == 1
    with pytest.raises(InputError, match="caption source 'a dog' does not exist") as error:
        count_coverage(CaptionSources(["a dog"]), out=tmp_path / "missing", **options)
    assert "texts=" not in str(error.value)
    with pytest.raises(InputError, match=r"caption sources hold int 3 \(item 1\)"):
        CaptionSources(["corpus", 3])
    assert CaptionSources(tmp_path / "corpus") == (str(tmp_path / "corpus"),)


def test_batch_rows_default_to_larger_batches_when_nothing_is_embedded():
    assert CoverageSettings().rows_per_batch == 50_000
    assert CoverageSettings(method="both").rows_per_batch == 10_000  # the store's layout
    assert CoverageSettings(batch_rows=7, method="checked").rows_per_batch == 7
    with pytest.raises(SettingsError, match="must be a positive integer, got 0"):
        CoverageSettings(batch_rows=0)


def test_a_caption_with_a_lone_surrogate_is_one_clear_error(tiny, tmp_path):
    """In-memory text a bad decode left (a lone surrogate) cannot be staged as UTF-8: an
    InputError that shows it, whether given as texts= or as a list of captions."""
    bad = ["a cat", "a dog \ud800 here"]
    for number, options in enumerate(({"texts": bad}, {"captions": bad})):
        with pytest.raises(InputError, match=r"not valid Unicode text .*position 6"):
            count_coverage(**options, registry=tiny, out=tmp_path / str(number), progress=False)


def interrupted_run(tiny, corpus: Path, out: Path) -> dict[str, list[str]]:
    """A per-caption run stopped by a corrupt third part after the first two finished (their
    records and matches files kept); returns the parts' captions, to write c fixed."""
    parts = {
        "a": ["a red cat", "a dog"] * 3,
        "b": ["a happy puppy"] * 4,
        "c": [f"two kittens number {i}" for i in range(20_000)],
    }
    write_parts(corpus, parts)
    data = bytearray((corpus / "c.parquet").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 200] = b"\xab" * 200  # a corrupt data page
    (corpus / "c.parquet").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"c\.parquet: unreadable parquet data.*--skip-bad"):
        run([corpus], tiny, out, per_caption=True)
    return parts


def only(folder: Path, pattern: str) -> Path:
    (found,) = folder.glob(pattern)
    return found


@pytest.mark.parametrize("damage", ["counts edited", "not an object", "matches cut short"])
def test_a_shard_damaged_by_hand_is_counted_again(tiny, tmp_path, damage):
    """Hand damage of a finished shard (its record edited, its matches file cut short) makes it
    count again; it was merged as it stood (other counts) or stopped the merge (a traceback)."""
    corpus, out = tmp_path / "corpus", tmp_path / "run"
    parts = interrupted_run(tiny, corpus, out)
    record = only(out / "units", "a-*.json")
    if damage == "counts edited":
        edited = json.loads(record.read_text())
        edited["concepts"]["cat"] = 1000
        record.write_text(json.dumps(edited))
    elif damage == "not an object":
        record.write_text("[1, 2]")
    else:
        matches = only(out / "units", "a-*.matches.parquet")
        matches.write_bytes(matches.read_bytes()[:-20])
    write_parts(corpus, {"c": parts["c"]})
    resumed = run([corpus], tiny, out, per_caption=True)
    timings = resumed.manifest["timings"]
    assert (timings["shards_this_session"], timings["shards_resumed"]) == (2, 1)  # a and c
    assert resumed.concepts.set_index("concept")["count"].to_dict()["cat"] == 3 + 20_000
    run([corpus], tiny, tmp_path / "clean", per_caption=True)
    assert_same_outputs(out, tmp_path / "clean")


def test_a_matches_file_damaged_inside_stops_the_merge_naming_it(tiny, tmp_path):
    corpus, out = tmp_path / "corpus", tmp_path / "run"
    parts = interrupted_run(tiny, corpus, out)
    matches = only(out / "units", "a-*.matches.parquet")
    data = bytearray(matches.read_bytes())
    data[4:40] = b"\xab" * 36  # its data page: the footer, read to resume, is whole
    matches.write_bytes(bytes(data))
    write_parts(corpus, {"c": parts["c"]})
    with pytest.raises(RunFolderError) as info:
        run([corpus], tiny, out, per_caption=True)
    message = str(info.value)
    assert message.startswith(f"{matches} cannot be read (") and "\n" not in message
    assert message.endswith(
        "delete that file and run the same command again to count its shard again"
    )
    matches.unlink()  # the fix the message gives
    run([corpus], tiny, out, per_caption=True)
    run([corpus], tiny, tmp_path / "clean", per_caption=True)
    assert_same_outputs(out, tmp_path / "clean")


def test_a_run_stopped_between_its_merge_and_its_manifest_recounts_nothing(
    tiny, zoo, tmp_path, monkeypatch
):
    """matches.parquet written, the manifest not yet complete: the shards' own matches files
    are still there, so the rerun only merges again."""
    from clipaudit.runs import RunFolder

    complete = RunFolder.complete

    def stopped(self, **fields):
        if self.kind == "coverage":
            raise KeyboardInterrupt
        return complete(self, **fields)

    out = tmp_path / "run"
    monkeypatch.setattr(RunFolder, "complete", stopped)
    with pytest.raises(KeyboardInterrupt):
        run([zoo], tiny, out, per_caption=True, shard_rows=3)
    monkeypatch.setattr(RunFolder, "complete", complete)
    assert (out / "matches.parquet").is_file()
    resumed = run([zoo], tiny, out, per_caption=True, shard_rows=3)
    timings = resumed.manifest["timings"]
    assert timings["shards_this_session"] == 0 and timings["shards_resumed"] > 1
    assert not list((out / "units").glob("*.matches.parquet"))  # merged, then removed
    run([zoo], tiny, tmp_path / "clean", per_caption=True, shard_rows=3)
    assert_same_outputs(out, tmp_path / "clean")


@pytest.mark.parametrize(
    "damage", ["matches cut short", "units listed wrong", "tables removed or cut short"]
)
def test_a_complete_run_damaged_by_hand_is_made_whole_again(tiny, zoo, tmp_path, damage):
    """Rerun on a complete run whose outputs were damaged: it said "complete" over a cut matches
    file, or failed with a traceback; now what is damaged is counted or merged again."""
    out = tmp_path / "run"
    run([zoo], tiny, out, per_caption=True, shard_rows=3)
    run([zoo], tiny, tmp_path / "clean", per_caption=True, shard_rows=3)
    n_shards = len(list((out / "units").glob("*.json")))
    if damage == "matches cut short":
        data = (out / "matches.parquet").read_bytes()
        (out / "matches.parquet").write_bytes(data[: len(data) // 2])
    elif damage == "units listed wrong":
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["units"] = "abc"
        (out / "manifest.json").write_text(json.dumps(manifest))
    else:
        (out / "groups.csv").unlink()
        data = (out / "concepts.parquet").read_bytes()
        (out / "concepts.parquet").write_bytes(data[: len(data) // 2])
    again = run([zoo], tiny, out, per_caption=True, shard_rows=3)
    counted = 0 if damage == "tables removed or cut short" else n_shards  # merged, or counted
    assert not again.reused and again.manifest["timings"]["shards_this_session"] == counted
    assert_same_outputs(out, tmp_path / "clean")
    assert run([zoo], tiny, out, per_caption=True, shard_rows=3).reused


def test_a_run_of_some_groups_is_not_resumed_with_others(tiny, tmp_path):
    """``registry.select`` keeps the file's hash (zero-shot and the report join by it): a run of
    the Animal concepts resumed with the Color ones returned the Animal counts."""
    registry = load_registry(tiny)
    texts = ["a red dog", "a cat"]
    out = tmp_path / "run"
    animals = count_coverage(texts=texts, registry=registry.select(["Animal"]), out=out)
    assert animals.concepts.set_index("concept")["count"].to_dict() == {"dog": 1, "cat": 1}
    with pytest.raises(RunFolderError, match=r"registry\.groups"):
        count_coverage(texts=texts, registry=registry.select(["Color"]), out=out)
    whole = count_coverage(texts=texts, registry=registry, out=tmp_path / "whole")
    assert "groups" not in whole.manifest["settings"]["registry"]  # the file's hash says it all


def test_a_worker_killed_mid_run_is_one_message_and_the_rerun_resumes(tmp_path):
    """The out-of-memory killer takes a worker: the pool breaks, the command says so in one line
    (no traceback, exit 2), and the same command finishes the run from the shards kept."""
    import psutil

    corpus = tmp_path / "corpus"
    write_synthetic_corpus(corpus, n_files=3, rows_per_file=80_000)
    args = cli("count", str(corpus), "--out", str(tmp_path / "run"), "--workers", "2",
               "--shard-rows", "10000", "--no-progress")  # fmt: skip
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "run" / "units").glob("*.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "no shard finished within a minute"
        time.sleep(0.005)
    workers = [p for p in psutil.Process(process.pid).children(recursive=True)
               if "resource_tracker" not in " ".join(p.cmdline())]  # fmt: skip
    assert workers, "the run ended before a worker could be killed: the test needs more rows"
    os.kill(workers[0].pid, signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr.decode() and len(stderr.decode().splitlines()) == 1
    assert "a worker process died while counting" in stderr.decode()
    resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["timings"]["shards_resumed"] >= 1
    assert manifest["n_rows"] == 240_000


def test_a_column_named_as_the_default_resolves_it_resumes_the_run(tiny, tmp_path):
    """`--column caption` on a run counted without it (which read `caption` too) was refused as
    another run (coverage.column: None -> 'caption'): what is counted is compared, not how it was
    typed, in either order; another column is still counted anew."""
    path = tmp_path / "c.parquet"
    pq.write_table(
        pa.table({"id": [3, 4], "caption": ["a red cat", "a dog"], "alt": ["a cat", "x"]}), path
    )
    for first, then in (({}, {"column": "caption"}), ({"column": "caption"}, {})):
        out = tmp_path / f"run-{len(first)}"
        counted = run([path], tiny, out, **first)
        again = run([path], tiny, out, **then)
        assert again.reused and again.concepts.equals(counted.concepts)
        named_id = run([path], tiny, out, id_column="id", **then)
        assert named_id.reused
    other = run([path], tiny, tmp_path / "run-1", column="alt")
    assert not other.reused
    assert other.concepts.set_index("concept")["count"].to_dict() == {
        "dog": 0,
        "cat": 1,
        "red": 0,
        "happy": 0,
    }
    assert other.manifest["inputs"][0]["columns"] == [{"caption": "alt", "id": "id"}]


def test_per_caption_rows_say_which_input_they_came_from(tiny, tmp_path):
    """Two files with ids from 0 each: matches.parquet held bare ids, said 2 repeated and told
    to name a unique id column, which neither corpus has. Each per-caption row (matches,
    examples) now names its input (index into the manifest's inputs) and file: (input, id) joins
    back, and ids repeated across inputs are no repeats; within one input they still are."""
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    captions = {first: ["a dog", "a red cat"], second: ["a cat", "a kitten", "a puppy"]}
    for path, texts in captions.items():
        pq.write_table(pa.table({"id": list(range(len(texts))), "caption": texts}), path)
    folder = tmp_path / "folder"
    folder.mkdir()
    pq.write_table(pa.table({"id": [0], "caption": ["a happy dog"]}), folder / "x.parquet")
    pq.write_table(pa.table({"id": [0], "caption": ["a cat"]}), folder / "y.parquet")
    result = run([first, second, folder], tiny, tmp_path / "run", per_caption=True)
    matches = pq.read_table(result.out_dir / "matches.parquet").to_pylist()
    files = [str(first), str(second), str(folder / "x.parquet"), str(folder / "y.parquet")]
    inputs = [0, 1, 2, 2]
    expected = []
    paths = [first, second, *sorted(folder.iterdir())]
    for index, file, path in zip(inputs, files, paths, strict=True):
        table = pq.read_table(path).to_pylist()
        matcher = lexical.build_matcher(tiny, "curated")
        expected += [
            {
                "input": index,
                "file": file,
                "id": row["id"],
                "concepts": matcher.match(row["caption"]),
            }
            for row in table
        ]
    assert [{k: m[k] for k in ("input", "file", "id")} for m in matches] == [
        {k: e[k] for k in ("input", "file", "id")} for e in expected
    ]
    assert [sorted(m["concepts"]) for m in matches] == [sorted(e["concepts"]) for e in expected]
    specs = [record["spec"] for record in result.manifest["inputs"]]
    assert specs == [str(first), str(second), str(folder)]
    # the two files of the folder each hold id 0: repeated within input 2, and only there
    assert result.manifest["ids"] == {"n_null": 0, "n_repeated": 1, "inputs": [2]}
    by_origin = {(m["input"], m["id"]) for m in matches}
    assert len(by_origin) == len(matches) - 1
    cats = result.examples["concepts"]["cat"]["examples"]
    for example in cats:
        source = pq.read_table(example["file"]).to_pylist()
        assert {"id": example["id"], "caption": example["caption"]} in source
        assert files.index(example["file"]) >= 0 and example["input"] in (0, 1, 2)
    assert {(e["input"], e["caption"]) for e in cats} >= {(0, "a red cat"), (1, "a cat")}
    alone = run([first, second], tiny, tmp_path / "two", per_caption=True)
    assert alone.manifest["ids"] == {"n_null": 0, "n_repeated": 0, "inputs": []}


def test_a_dataframe_holding_two_caption_columns_is_refused_unless_one_is_named(tiny, tmp_path):
    """As a file is: with caption and TEXT both there and no column named, which one is counted
    is not guessed."""
    frame = pd.DataFrame({"caption": ["a red cat"], "TEXT": ["a dog"]})
    with pytest.raises(InputError) as refused:
        count_coverage(frame, tiny, tmp_path / "a")
    message = str(refused.value)
    assert "holds more than one caption column (caption, TEXT)" in message
    assert "column=" in message
    counts = run(frame, tiny, tmp_path / "b", column="TEXT").concepts.set_index("concept")
    assert (counts["count"]["dog"], counts["count"]["cat"]) == (1, 0)


def test_a_same_size_edit_inside_a_file_with_its_time_restored_is_recounted_with_verify_inputs(
    tiny, tmp_path
):
    """An input is known by its size, time and edges (first and last 64 KiB): an edit of the
    same size inside it, its time put back, leaves those as they were. --verify-inputs hashes
    every byte, so the edited file is counted again, not resumed from the earlier count."""
    path = tmp_path / "captions.txt"
    filler = ["a plain wall"] * 12_000  # ~150 KiB: the edit lies between the hashed edges
    path.write_text("\n".join([*filler[:6000], "a red car", *filler[6000:]]) + "\n")
    out = tmp_path / "run"
    first = run([path], tiny, out, verify_inputs=True)
    assert first.concepts.set_index("concept")["count"]["cat"] == 0
    stat = path.stat()
    data = path.read_bytes()
    assert data.count(b"a red car") == 1 and 1 << 16 < data.index(b"a red car") < len(data) - (
        1 << 16
    )
    path.write_bytes(data.replace(b"a red car", b"a red cat"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = run([path], tiny, out, verify_inputs=True)
    assert not again.reused and again.concepts.set_index("concept")["count"]["cat"] == 1
