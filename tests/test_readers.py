"""Caption sources: every reader, column and id choice, bad captions, and bad files."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipaudit import readers
from clipaudit.errors import InputError
from clipaudit.readers import BadShardError, SkippedShard, plan_shards, resolve_sources
from tests.conftest import damaged_saved_datasets


def read_all(specs, **plan_options):
    """(shard keys, captions, ids, rows, skip counts) of reading every shard of ``specs``."""
    max_chars = plan_options.pop("max_caption_chars", 10_000)
    sources = resolve_sources(specs, hf_split=plan_options.pop("hf_split", "train"))
    captions, ids, keys, rows = [], [], [], 0
    skipped = {}
    for shard in plan_shards(sources, **plan_options):
        keys.append(shard.key)
        for batch in shard.read(max_caption_chars=max_chars, batch_rows=2):
            captions += batch.captions
            ids += list(batch.ids)
            rows += batch.n_rows
            for reason, n in batch.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + n
    return keys, captions, ids, rows, skipped


def write_parquet(path, columns, row_group_size=None):
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def test_parquet_file_reads_captions_and_its_id_column(tmp_path):
    path = write_parquet(tmp_path / "a.parquet", {"id": [7, 8, 9], "caption": ["x", "y", "z"]})
    keys, captions, ids, rows, skipped = read_all([path])
    assert (captions, ids, rows, skipped) == (["x", "y", "z"], [7, 8, 9], 3, {})
    assert len(keys) == 1


@pytest.mark.parametrize(
    "encoded",
    [
        lambda values: pa.array(values).dictionary_encode(),  # as pandas' category dtype writes
        lambda values: pa.array(values, pa.large_string()),
        lambda values: pa.array(values, pa.string_view()),
        lambda values: pa.array([None if v is None else v.encode() for v in values], pa.binary()),
    ],
    ids=["dictionary", "large_string", "string_view", "binary"],
)
def test_a_caption_column_of_any_string_encoding_reads_the_same(tmp_path, encoded):
    values = ["a dog", None, "a dog", "x" * 30, "", "un café"]
    path = write_parquet(tmp_path / "a.parquet", {"caption": encoded(values)})
    _, captions, ids, rows, skipped = read_all([path], max_caption_chars=20)
    assert (captions, ids) == (["a dog", "a dog", "", "un café"], [0, 2, 4, 5])
    assert (rows, skipped) == (6, {"null": 1, "too_long": 1})


def test_folder_of_shards_is_read_in_sorted_order_with_global_row_numbers(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    write_parquet(folder / "b.parquet", {"caption": ["b0", "b1"]})
    write_parquet(folder / "a.parquet", {"caption": ["a0", "a1", "a2"]})
    write_parquet(folder / "sub" / "c.parquet", {"caption": ["c0"]})
    (folder / "README.txt").write_text("not captions\n")  # other kinds are ignored beside parquet
    (folder / ".hidden.parquet").write_bytes(b"partial download")
    _, captions, ids, _, _ = read_all([folder])
    assert captions == ["a0", "a1", "a2", "b0", "b1", "c0"]
    assert ids == [0, 1, 2, 3, 4, 5]


def test_row_numbers_continue_across_sources(tmp_path):
    first = write_parquet(tmp_path / "a.parquet", {"TEXT": ["p", "q"]})
    second = tmp_path / "b.txt"
    second.write_text("r\ns\n")
    _, captions, ids, _, _ = read_all([first, second])
    assert captions == ["p", "q", "r", "s"] and ids == [0, 1, 2, 3]


def test_parquet_row_groups_are_grouped_into_shards(tmp_path):
    path = write_parquet(
        tmp_path / "a.parquet", {"caption": [f"c{i}" for i in range(10)]}, row_group_size=3
    )  # row groups of 3, 3, 3, 1
    shards = list(plan_shards(resolve_sources([path]), shard_rows=5))
    assert [(s.start, s.stop, s.first_row, s.n_rows) for s in shards] == [
        (0, 2, 0, 6),
        (2, 4, 6, 4),
    ]
    _, captions, ids, _, _ = read_all([path], shard_rows=5)
    assert captions == [f"c{i}" for i in range(10)] and ids == list(range(10))


def test_caption_column_auto_chosen_or_named_and_a_missing_one_lists_the_columns(tmp_path):
    laion = write_parquet(tmp_path / "laion.parquet", {"SAMPLE_ID": [5, 6], "TEXT": ["t", "u"]})
    _, captions, ids, _, _ = read_all([laion])
    assert captions == ["t", "u"] and ids == [5, 6]  # LAION metadata: TEXT and SAMPLE_ID
    both = write_parquet(tmp_path / "both.parquet", {"caption": ["c"], "alt": ["a"]})
    assert read_all([both])[1] == ["c"]
    assert read_all([both], column="alt")[1] == ["a"]
    with pytest.raises(InputError) as missing:
        read_all([both], column="captoin")
    message = str(missing.value)
    assert "both.parquet" in message and "no caption column 'captoin'" in message
    assert "its columns are caption, alt" in message and "did you mean 'caption'" in message
    nothing = write_parquet(tmp_path / "none.parquet", {"url": ["x"]})
    with pytest.raises(InputError, match=r"looked for caption, TEXT, text; its columns are url"):
        read_all([nothing])


def test_ids_come_from_the_id_column_or_a_named_one_else_row_numbers(tmp_path):
    path = write_parquet(
        tmp_path / "a.parquet", {"key": ["k0", "k1"], "uid": [10, 11], "caption": ["a", "b"]}
    )
    assert read_all([path])[2] == ["k0", "k1"]  # img2dataset's key column
    assert read_all([path], id_column="uid")[2] == [10, 11]
    with pytest.raises(InputError, match=r"no id column 'iid'.*its columns are key, uid, caption"):
        read_all([path], id_column="iid")
    plain = write_parquet(tmp_path / "b.parquet", {"caption": ["a", "b"]})
    assert read_all([plain])[2] == [0, 1]


def test_jsonl_reader_counts_every_kind_of_bad_caption(tmp_path):
    lines = [
        json.dumps({"id": "a", "caption": "good one"}),
        json.dumps({"id": "b", "caption": None}),
        json.dumps({"id": "c", "caption": 42}),
        json.dumps({"id": "d", "text": "no caption key"}),
        '{"id": "e", "caption": "broken',
        json.dumps({"id": "f", "caption": "x" * 51}),
        '{"id": "g", "caption": "lone \\ud800 surrogate"}',
        "",
        json.dumps({"id": "h", "caption": ""}),
        json.dumps({"id": "i", "caption": "  "}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"id": "j", "caption": "caf\u00e9 " + "y" * 45}),  # 50 characters: kept
    ]
    path = tmp_path / "zoo.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8") + b'{"caption": "\xff\xfe"}\n')
    _, captions, ids, rows, skipped = read_all([path], max_caption_chars=50)
    assert captions == ["good one", "", "  ", "caf\u00e9 " + "y" * 45]
    assert ids == ["a", "h", "i", "j"]
    assert rows == 13  # every line is a row, the blank one included
    assert skipped == {
        "null": 1,
        "not_string": 1,
        "missing": 1,
        "bad_json": 2,
        "too_long": 1,
        "not_utf8": 2,
    }


def test_parquet_binary_captions_are_decoded_and_invalid_utf8_is_skipped(tmp_path):
    values = pa.array([b"a red car", b"\xc3\x28 bad", None, "é".encode()], type=pa.binary())
    path = write_parquet(tmp_path / "bin.parquet", {"caption": values})
    _, captions, ids, _, skipped = read_all([path])
    assert captions == ["a red car", "é"] and ids == [0, 3]
    assert skipped == {"not_utf8": 1, "null": 1}


def test_parquet_nulls_and_long_captions_are_counted_and_ids_stay_aligned(tmp_path):
    texts = ["a dog", None, "x" * 51, "", "caf\u00e9 " + "y" * 45, None, "   "]
    with_ids = write_parquet(
        tmp_path / "ids.parquet", {"id": [10, 11, 12, 13, 14, 15, 16], "caption": texts}
    )
    _, captions, ids, rows, skipped = read_all([with_ids], max_caption_chars=50)
    assert captions == ["a dog", "", "caf\u00e9 " + "y" * 45, "   "] and ids == [10, 13, 14, 16]
    assert rows == 7 and skipped == {"null": 2, "too_long": 1}
    numbered = write_parquet(tmp_path / "rows.parquet", {"caption": texts})
    _, _, ids, _, _ = read_all([numbered], max_caption_chars=50)
    assert ids == [0, 3, 4, 6]


def test_txt_lines_keep_row_numbers_and_count_invalid_utf8(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"first\r\n\nthird \xff\nlast without newline")
    _, captions, ids, rows, skipped = read_all([path])
    assert captions == ["first", "", "last without newline"] and ids == [0, 1, 3]
    assert rows == 4 and skipped == {"not_utf8": 1}


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_split_text_files_read_the_same_rows_as_whole_ones(tmp_path, monkeypatch, kind):
    texts = [f"caption number {i}" + "!" * (i % 7) for i in range(23)]
    path = tmp_path / f"c.{kind}"
    lines = texts if kind == "txt" else [json.dumps({"caption": t}) for t in texts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(readers, "_TEXT_BLOCK_BYTES", 7)  # cuts fall inside and across blocks
    keys, captions, ids, rows, _ = read_all([path], shard_rows=5)
    assert len(keys) == 5 and rows == 23
    assert captions == texts and ids == list(range(23))
    shards = list(plan_shards(resolve_sources([path]), shard_rows=5))
    assert [s.n_rows for s in shards] == [5, 5, 5, 5, 3]
    assert [s.first_row for s in shards] == [0, 5, 10, 15, 20]


def test_saved_hugging_face_dataset_is_read_by_row_ranges(tmp_path):
    import datasets

    data = datasets.Dataset.from_dict(
        {"caption": ["a dog", None, "a cat", "a cow", "a hen"], "id": [1, 2, 3, 4, 5]}
    )
    data.save_to_disk(str(tmp_path / "saved"))
    keys, captions, ids, rows, skipped = read_all([tmp_path / "saved"], shard_rows=2)
    assert len(keys) == 3 and rows == 5
    assert captions == ["a dog", "a cat", "a cow", "a hen"] and ids == [1, 3, 4, 5]
    assert skipped == {"null": 1}
    # saved again in the same process (a notebook): read anew, not from the earlier load
    datasets.Dataset.from_dict({"caption": ["a fox"], "id": [9]}).save_to_disk(
        str(tmp_path / "saved")
    )
    assert read_all([tmp_path / "saved"])[1:3] == (["a fox"], [9])
    datasets.DatasetDict({"val": data}).save_to_disk(str(tmp_path / "dict"))
    assert read_all([tmp_path / "dict"], hf_split="val")[1] == captions
    with pytest.raises(InputError, match=r"no split 'train'.*its splits are val"):
        resolve_sources([tmp_path / "dict"])
    for broken in ('{"splits": "val"}', "[1, 2]", "not json"):
        (tmp_path / "dict" / "dataset_dict.json").write_text(broken)
        with pytest.raises(InputError, match=r"dataset_dict\.json' is not a datasets split list"):
            resolve_sources([tmp_path / "dict"], hf_split="va")


def test_a_saved_dataset_records_the_files_it_reads_not_ones_left_from_an_earlier_save(
    tmp_path,
):
    """save_to_disk into a folder saved before with more shards leaves the old arrow files
    there: they are no part of the dataset, and neither its record nor its identity holds them."""
    import datasets

    saved = tmp_path / "saved"
    data = datasets.Dataset.from_dict({"caption": ["a dog", "a cat", "a cow", "a hen"]})
    data.save_to_disk(str(saved), num_shards=2)
    data.select([2]).save_to_disk(str(saved), num_shards=1)
    assert len(list(saved.glob("*.arrow"))) == 3
    loaded = datasets.load_from_disk(str(saved))
    read = sorted(str(Path(f["filename"]).resolve()) for f in loaded.cache_files)
    (source,) = resolve_sources([saved])
    recorded = readers.describe_source(source)["files"]
    assert sorted(str(Path(f["path"]).resolve()) for f in recorded) == read
    keys, captions, _, _, _ = read_all([saved])
    assert captions == ["a cow"]
    (saved / "data-00000-of-00002.arrow").unlink()  # a file it does not read, gone: no recount
    assert read_all([saved])[0] == keys


def test_hf_prefix_streams_a_dataset_through_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "hub_like"
    folder.mkdir()
    records = [{"TEXT": f"caption {i}", "SAMPLE_ID": 100 + i} for i in range(5)]
    (folder / "part.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    keys, captions, ids, rows, _ = read_all([f"hf:{folder}"], shard_rows=2)
    assert len(keys) == 3 and rows == 5
    assert captions == [r["TEXT"] for r in records] and ids == [100, 101, 102, 103, 104]
    # a chunk is known by what it holds: one changed since is read again, not reused
    records[3]["TEXT"] = "caption three, edited"
    (folder / "part.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    changed = read_all([f"hf:{folder}"], shard_rows=2)[0]
    assert changed[0] == keys[0] and changed[1] != keys[1] and changed[2] == keys[2]


def test_a_streamed_dataset_records_the_version_it_read(tmp_path, monkeypatch):
    """A local dataset folder's manifest record holds its data files' identities (an edit shows);
    a hub dataset's, the commit its name resolved to, and the stream reads that commit even if
    the hub moves on between recording and reading."""
    import os

    import datasets

    from clipaudit.coverage import CoverageSettings, count_coverage
    from clipaudit.registry import load_registry

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "hub_like"
    folder.mkdir()
    part = folder / "part.jsonl"
    part.write_text("".join(json.dumps({"caption": f"a dog {i}"}) + "\n" for i in range(3)))
    registry = load_registry("cai2025")
    settings = CoverageSettings(progress=False, shard_rows=2)
    local_run = count_coverage([f"hf:{folder}"], registry, tmp_path / "a", settings)
    [local] = local_run.manifest["inputs"]
    assert [(f["path"], f["bytes"], f["mtime_ns"]) for f in local["files"]] == [
        (str(part), len(part.read_bytes()), os.stat(part).st_mtime_ns)
    ]
    assert "revision" not in local  # a folder has no commit; its files say which version

    commits = iter(["a" * 40, "b" * 40])  # the hub gets a new commit after the first resolution
    asked = []
    real_builder = datasets.load_dataset_builder

    def hub_builder(path, name=None, revision=None, **options):
        """someorg/captions as the hub resolves it: pinned to ``revision``, else its latest."""
        asked.append(revision)
        builder = real_builder(str(folder), name, **options)
        builder.repo_id, builder.hash = "someorg/captions", revision or next(commits)
        return builder

    monkeypatch.setattr(datasets, "load_dataset_builder", hub_builder)
    hub = count_coverage(["hf:someorg/captions"], registry, tmp_path / "b", settings)
    [record] = hub.manifest["inputs"]
    assert record["revision"] == "a" * 40 and "files" not in record
    assert asked == [None, "a" * 40]  # the stream was read at the commit recorded
    assert hub.n_captions_read == 3


def test_hf_prefix_on_a_saved_dataset_folder_says_to_name_the_folder(tmp_path, monkeypatch):
    """datasets.load_dataset refuses a save_to_disk folder ("use load_from_disk"): the error says
    to name the folder without hf:, which reads it (not to check the network)."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"caption": ["a dog", "a cat"], "id": [1, 2]}).save_to_disk(
        str(saved)
    )
    with pytest.raises(InputError, match=r"read without 'hf:'; name the folder itself") as err:
        read_all([f"hf:{saved}"])
    assert "network" not in str(err.value)
    assert read_all([saved])[1:3] == (["a dog", "a cat"], [1, 2])  # as the message says


@pytest.mark.parametrize("loader", ["json", "parquet", "text"])
def test_hf_prefix_on_a_loader_name_is_refused_before_any_file_is_read(
    loader, tmp_path, monkeypatch
):
    """hf:json names datasets' json loader, which with no data files reads every file under the
    working folder (minutes in a repository, garbage counted): refused, naming the fix."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.json").write_text('{"caption": "a dog"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=rf"hf:{loader} names datasets' '{loader}' loader"):
        read_all([f"hf:{loader}"])


def test_a_hub_stream_cut_part_way_is_one_clear_error_after_its_finished_shards(
    tmp_path, monkeypatch
):
    from clipaudit import readers
    from clipaudit.coverage import CoverageSettings, count_coverage
    from clipaudit.readers import ConnectionLostError
    from clipaudit.registry import load_registry

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "hub_like"
    folder.mkdir()
    records = [{"TEXT": f"a dog number {i}"} for i in range(7)]
    (folder / "part.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    opened = readers._open_stream

    class Cut:  # the stream's connection drops after two chunks
        def __init__(self, dataset):
            self.dataset = dataset
            self.column_names = dataset.column_names

        def select_columns(self, columns):
            return Cut(self.dataset.select_columns(columns))

        def iter(self, batch_size):
            chunks = self.dataset.iter(batch_size=batch_size)
            yield next(chunks)
            yield next(chunks)
            raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(readers, "_open_stream", lambda *args: Cut(opened(*args)))
    with pytest.raises(ConnectionLostError, match=r"hub_like \(rows from 4\): reading stopped"):
        read_all([f"hf:{folder}"], shard_rows=2)
    registry = load_registry("cai2025")
    settings = CoverageSettings(progress=False, shard_rows=2)
    with pytest.raises(ConnectionLostError):
        count_coverage([f"hf:{folder}"], registry, tmp_path / "run", settings)
    monkeypatch.setattr(readers, "_open_stream", opened)  # the network is back
    resumed = count_coverage([f"hf:{folder}"], registry, tmp_path / "run", settings)
    assert resumed.manifest["timings"]["shards_resumed"] == 2
    assert resumed.concepts.set_index("concept")["count"]["dog"] == 7


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (  # from Windows: a byte-order mark, CRLF line endings, a quoted caption over two lines
            b'\xef\xbb\xbfSAMPLE_ID,TEXT\r\n7,"a dog, on\r\na beach"\r\n8,a cat\r\n',
            {"SAMPLE_ID": [7, 8], "TEXT": ["a dog, on\r\na beach", "a cat"]},
        ),
        (  # captions pandas reads as missing values or numbers unless told they are text
            b"id,caption\n1,None\n2,NA\n3,null\n4,\n5,nan\n",
            {"id": [1, 2, 3, 4, 5], "caption": ["None", "NA", "null", None, "nan"]},
        ),
        (b"key\ttext\n1\t1984\n2\t2001\n", {"key": [1, 2], "text": ["1984", "2001"]}),
    ],
    ids=["windows", "missing-words", "numbers"],
)
def test_a_csv_file_is_refused_with_a_conversion_that_keeps_its_captions(tmp_path, data, expected):
    """The refusal's own conversion, run as given, makes a parquet file whose columns are named as
    the header names them and whose captions are the text the file holds (an empty field, no
    caption, is null); ids keep their type."""
    source = tmp_path / "meta.csv"
    source.write_bytes(data)
    with pytest.raises(
        InputError, match=r"unknown file type '\.csv'.*convert it to parquet"
    ) as info:
        resolve_sources([source])
    command = re.search(r'python -c "(.*)"\)$', str(info.value)).group(1)
    target = tmp_path / "OUT.parquet"
    code = command.replace("'IN'", repr(str(source))).replace("'OUT.parquet'", repr(str(target)))
    exec(code, {})
    assert pq.read_table(target).to_pydict() == expected


def test_a_missing_source_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"caption source '.*nowhere.parquet' does not exist"):
        resolve_sources([tmp_path / "nowhere.parquet"])
    (tmp_path / "notes.csv").write_text("a,b\n")
    with pytest.raises(InputError, match=r"unknown file type '.csv'"):
        resolve_sources([tmp_path / "notes.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"holds no caption files"):
        resolve_sources([tmp_path / "empty"])


@pytest.mark.parametrize("pattern", ["part-*.parquet", "part-{0,1}.parquet", "part-{0..1}.parquet"])
def test_a_quoted_pattern_that_names_no_file_says_patterns_are_not_expanded(tmp_path, pattern):
    for i in (0, 1):
        write_parquet(tmp_path / f"part-{i}.parquet", {"caption": ["a dog"]})
    spec = str(tmp_path / pattern)
    with pytest.raises(InputError) as refused:
        resolve_sources([spec])
    assert str(refused.value).startswith(
        f"caption source {spec!r} does not exist: patterns (* ? [...] {{a,b}} {{0..9}}) are not "
        "expanded here; name the folder, whose caption files are all read, or let the shell "
        "expand it (leave it unquoted); expected"
    )
    assert read_all([tmp_path])[1] == ["a dog", "a dog"]  # as the message says
    with pytest.raises(InputError) as missing:  # a plain name that is missing: no such hint
        resolve_sources([tmp_path / "part-2.parquet"])
    assert "patterns" not in str(missing.value)


def test_truncated_parquet_stops_with_a_hint_or_is_skipped_with_skip_bad(tmp_path):
    good = write_parquet(tmp_path / "good.parquet", {"caption": ["a", "b"]})
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[:-20])  # footer cut off, as by an interrupted download
    with pytest.raises(BadShardError) as stopped:
        list(plan_shards(resolve_sources([bad, good])))
    assert str(bad) in str(stopped.value) and "--skip-bad" in str(stopped.value)
    planned = list(plan_shards(resolve_sources([bad, good]), skip_bad=True))
    assert isinstance(planned[0], SkippedShard) and planned[0].label == str(bad)
    assert planned[1].first_row == 0  # a shard of unknown size takes no row numbers


def test_a_file_named_twice_is_refused_and_copies_are_counted_apart(tmp_path):
    columns = {"id": [7, 8], "caption": ["a dog", "a cat"]}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_parquet(tmp_path / "a" / "x.parquet", columns)
    write_parquet(tmp_path / "b" / "x.parquet", columns)  # a copy: same content, other path
    for specs in ([one, one], [tmp_path / "a", one]):
        with pytest.raises(InputError, match=r"x\.parquet' is named twice .*name each file"):
            resolve_sources(specs)
    keys, captions, ids, rows, _ = read_all([tmp_path / "a", tmp_path / "b"])
    assert len(set(keys)) == 2 and captions == ["a dog", "a cat"] * 2 and rows == 4
    assert ids == [7, 8, 7, 8]


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_utf16_and_utf32_text_is_refused_and_a_utf8_mark_is_dropped(tmp_path, kind):
    texts = [f"a dog number {i}" for i in range(7)]
    lines = texts if kind == "txt" else [json.dumps({"caption": t}) for t in texts]
    text = "\n".join(lines) + "\n"
    wide = {  # what PowerShell's > and other Windows tools write, byte-order mark first
        "utf-16": "UTF-16",
        "utf-32": "UTF-32",
        "utf-16-be": "UTF-16",
        "utf-32-be": "UTF-32",
    }
    for encoding, name in wide.items():
        path = tmp_path / f"{encoding}.{kind}"
        path.write_bytes(("\ufeff" if encoding.endswith("-be") else "").encode(encoding))
        with path.open("ab") as handle:
            handle.write(text.encode(encoding))
        with pytest.raises(InputError) as refused:
            list(plan_shards(resolve_sources([path])))
        assert str(refused.value) == f"{path} is {name}; re-save it as UTF-8"
        (skipped,) = plan_shards(resolve_sources([path]), skip_bad=True)
        assert isinstance(skipped, SkippedShard) and skipped.reason == str(refused.value)
    marked = tmp_path / f"marked.{kind}"
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    keys, captions, ids, rows, skipped = read_all([marked], shard_rows=3)
    assert len(keys) == 3 and rows == 7 and skipped == {}
    assert captions == texts and ids == list(range(7))


def test_a_jsonl_file_that_is_not_utf8_says_so(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"caption": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.jsonl: .*1 of them not valid UTF-8; re-save"):
        list(plan_shards(resolve_sources([path])))


def test_a_damaged_saved_dataset_stops_with_a_hint_or_is_skipped_with_skip_bad(tmp_path):
    import datasets

    data = datasets.Dataset.from_dict({"caption": [f"a dog number {i}" * 9 for i in range(200)]})
    data.save_to_disk(str(tmp_path / "good"))
    cut, hollow = damaged_saved_datasets(data, tmp_path)
    for broken, why in ((cut, "OSError"), (hollow, "KeyError")):
        with pytest.raises(BadShardError) as stopped:
            list(plan_shards(resolve_sources([broken, tmp_path / "good"])))
        assert str(stopped.value).startswith(
            f"{broken}: not a readable dataset saved by datasets' save_to_disk ({why}: "
        )
        assert "save the dataset again with save_to_disk or remove the folder" in str(stopped.value)
        planned = list(plan_shards(resolve_sources([broken, tmp_path / "good"]), skip_bad=True))
        assert isinstance(planned[0], SkippedShard) and planned[0].label == str(broken)
        assert [(s.first_row, s.n_rows) for s in planned[1:]] == [(0, 200)]
    # damaged after planning: the worker reading it reports a bad shard
    data.save_to_disk(str(tmp_path / "later"))
    (shard,) = plan_shards(resolve_sources([tmp_path / "later"]))
    (arrow,) = (tmp_path / "later").glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:2048])
    with pytest.raises(BadShardError, match=r"later: not a readable dataset saved by"):
        list(shard.read(max_caption_chars=10_000, batch_rows=50))


def test_a_parquet_column_named_twice_is_one_clear_error_or_a_skipped_shard(tmp_path):
    path = tmp_path / "twice.parquet"
    table = pa.Table.from_arrays([pa.array(["a dog"]), pa.array(["a cat"])], ["caption", "caption"])
    pq.write_table(table, path)
    expected = f"{path}: 2 of its columns are named 'caption'; expected one of each name"
    with pytest.raises(InputError) as refused:
        list(plan_shards(resolve_sources([path])))
    assert str(refused.value).startswith(expected)
    (skipped,) = plan_shards(resolve_sources([path]), skip_bad=True)
    assert isinstance(skipped, SkippedShard) and skipped.reason.startswith(expected)


def test_a_json_line_nested_past_the_recursion_limit_is_bad_json(tmp_path):
    deep = '{"caption": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join([deep, '{"caption": "a dog"}', deep, '{"caption": "a cat"}']) + "\n")
    _, captions, ids, rows, skipped = read_all([path])
    assert (captions, ids, rows, skipped) == (["a dog", "a cat"], [1, 3], 4, {"bad_json": 2})


def test_an_empty_or_blank_jsonl_shard_holds_no_record_and_stops_nothing(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"caption": "a dog"}\n')
    (folder / "b.jsonl").write_text("")
    (folder / "c.jsonl").write_text("\n  \n")
    (folder / "d.jsonl").write_text('{"caption": "a cat"}\n')
    _, captions, ids, rows, skipped = read_all([folder])
    assert (captions, ids, rows, skipped) == (["a dog", "a cat"], [0, 1], 2, {})
    arrays = (
        tmp_path / "arrays.jsonl"
    )  # no object, yet not empty: refused, saying how far it looked
    arrays.write_text("[1]\n[2]\n")
    with pytest.raises(InputError, match=r"arrays\.jsonl: no JSON object in its first 2 lines"):
        read_all([arrays])


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_text_with_lines_ending_in_cr_alone_is_refused_not_read_as_one_caption(tmp_path, kind):
    lines = (
        ["a dog", "a cat"] if kind == "txt" else ['{"caption": "a dog"}', '{"caption": "a cat"}']
    )
    path = tmp_path / f"mac.{kind}"
    path.write_bytes(("\r".join(lines) + "\r").encode())
    with pytest.raises(
        InputError, match=r"mac\.\w+: its lines end in CR alone .* re-save it with LF"
    ):
        read_all([path])
    crlf = tmp_path / f"windows.{kind}"  # CRLF is fine
    crlf.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    assert read_all([crlf])[1] == ["a dog", "a cat"]


def test_text_that_is_utf16_without_a_mark_or_gzip_is_refused(tmp_path):
    wide = tmp_path / "wide.txt"
    wide.write_bytes("a dog\na cat\n".encode("utf-16-le"))
    with pytest.raises(InputError, match=r"wide\.txt: 12 of its first 24 bytes are NUL; expected"):
        read_all([wide])
    nul = tmp_path / "nul.txt"  # a stray NUL byte is a caption's
    nul.write_bytes(b"a\x00dog\na cat\n")
    assert read_all([nul])[1] == ["a\x00dog", "a cat"]
    zipped = tmp_path / "zipped.jsonl"
    zipped.write_bytes(gzip.compress(b'{"caption": "a dog"}\n'))
    with pytest.raises(InputError, match=r"zipped\.jsonl is gzip-compressed; decompress it"):
        read_all([zipped])
    named = tmp_path / "named.jsonl.gz"
    named.write_bytes(gzip.compress(b'{"caption": "a dog"}\n'))
    with pytest.raises(InputError, match=r"unknown file type '\.gz'.*; compressed files are not"):
        read_all([named])


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_text_in_a_legacy_encoding_is_refused_not_read_without_its_accented_captions(
    tmp_path, kind
):
    """A Windows-1252 file (a spreadsheet's export) read as UTF-8 would lose exactly its captions
    with accents, each skipped as not UTF-8, and the run would call itself complete; a UTF-8 file
    with a few bad lines among good ones is read, the bad ones counted."""
    texts = ["a dog", "un café au lait", "a cat", "crème brûlée", "façade", "naïve art", "piñata"]
    texts += ["Ångström", "a red car"]
    lines = (
        texts if kind == "txt" else [json.dumps({"caption": t}, ensure_ascii=False) for t in texts]
    )
    legacy = tmp_path / f"legacy.{kind}"
    legacy.write_bytes("\n".join(lines).encode("cp1252") + b"\n")
    accented = sum(not text.isascii() for text in texts)
    expected = (
        f"{legacy}: none of the {accented} lines with non-ASCII bytes in its first "
        f"{legacy.stat().st_size:,} bytes is valid UTF-8: it is in another encoding"
    )
    with pytest.raises(InputError) as refused:
        read_all([legacy])
    assert str(refused.value).startswith(expected)
    assert "iconv -f WINDOWS-1252 -t UTF-8" in str(refused.value)
    (skipped,) = plan_shards(resolve_sources([legacy]), skip_bad=True)
    assert isinstance(skipped, SkippedShard) and skipped.reason.startswith(expected)
    mostly = tmp_path / f"mostly.{kind}"  # UTF-8, but for a few damaged lines
    good = "\n".join(lines).encode("utf-8") + b"\n"
    damaged = lines[1:6]
    mostly.write_bytes(good + "\n".join(damaged).encode("cp1252") + b"\n")
    _, captions, _, rows, skipped_rows = read_all([mostly])
    n_bad = sum(not line.isascii() for line in damaged)
    assert captions == texts + [t for t in texts[1:6] if t.isascii()]
    assert rows == len(texts) + 5 and skipped_rows == {"not_utf8": n_bad}


def test_a_link_to_a_file_of_the_same_folder_is_refused_naming_both(tmp_path):
    folder = tmp_path / "linked"
    folder.mkdir()
    (folder / "a.txt").write_text("a dog\n")
    (folder / "b.txt").symlink_to("a.txt")
    with pytest.raises(InputError) as refused:
        resolve_sources([folder])
    assert str(refused.value) == (
        f"caption file {str(folder / 'b.txt')!r} (in {str(folder)!r}) is the same file as "
        f"{str(folder / 'a.txt')!r} (in {str(folder)!r}), through a link, so its captions would "
        "be counted twice; remove the link, or name the files to count"
    )


def test_compressed_caption_files_in_a_folder_are_left_out_and_said_so(tmp_path):
    folder = tmp_path / "laion"
    folder.mkdir()
    (folder / "part-0.jsonl").write_text('{"caption": "a dog"}\n')
    (folder / "part-1.jsonl.gz").write_bytes(gzip.compress(b'{"caption": "a cat"}\n'))
    (folder / "part-2.txt.bz2").write_bytes(b"BZh9")
    (folder / "backup.tar.gz").write_bytes(b"")  # no caption file, compressed or not
    (source,) = resolve_sources([folder])
    assert source.kind == "jsonl" and [p.name for p in source.files] == ["part-0.jsonl"]
    # not read, so listed: a corpus of gzipped shards is never counted as its one plain file
    assert source.left_out == ("part-1.jsonl.gz", "part-2.txt.bz2")
    (folder / "part-0.jsonl").unlink()
    with pytest.raises(
        InputError,
        match=r"no caption files it can read: 2 are compressed .*part-1\.jsonl\.gz.*"
        r"decompress them first",
    ):
        resolve_sources([folder])


def test_a_folder_of_csv_or_tsv_tables_says_to_convert_them(tmp_path):
    """Conceptual Captions ships as TSV: a folder of them names the tables and the conversion,
    as a table named alone does; beside caption files they are metadata, passed over."""
    folder = tmp_path / "cc3m"
    folder.mkdir()
    (folder / "train.tsv").write_text("a dog on a beach\thttp://x/1.jpg\n")
    (folder / "val.tsv").write_text("a cat\thttp://x/2.jpg\n")
    with pytest.raises(InputError) as refused:
        resolve_sources([folder])
    message = str(refused.value)
    assert message.startswith(
        f"folder {str(folder)!r} holds no caption files it can read: 2 are CSV or TSV tables "
        "(e.g. train.tsv); CSV and TSV files are not read: convert it to parquet first"
    )
    assert "read_csv" in message
    (folder / "extra.txt").write_text("a red car\n")
    (source,) = resolve_sources([folder])
    assert source.kind == "txt" and source.left_out == ()


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_a_text_file_gone_after_planning_is_a_bad_shard_naming_it(tmp_path, kind):
    path = tmp_path / f"part-0.{kind}"
    path.write_text("a dog\n" if kind == "txt" else '{"caption": "a dog"}\n')
    (shard,) = plan_shards(resolve_sources([path]))
    path.unlink()  # moved or deleted while the run counts other shards
    with pytest.raises(BadShardError) as failed:
        list(shard.read(max_caption_chars=100, batch_rows=2))
    assert failed.value.label == str(path)
    assert failed.value.reason.startswith("cannot be read (FileNotFoundError")


def _rewrite_later(path, data):
    """Write ``data`` to ``path`` with a modification time that differs from the planned one."""
    import os

    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


@pytest.mark.parametrize("kind", ["parquet", "txt", "jsonl"])
def test_a_file_changed_after_planning_is_a_bad_shard_not_counted_as_planned(tmp_path, kind):
    """A shard reads the rows its plan names; a file rewritten since (another export with as many
    row groups, a file still being written) would be counted as other rows under the identity of
    the first: refused, naming the file and the fix."""
    path = tmp_path / f"part-0.{kind}"
    if kind == "parquet":
        write_parquet(path, {"caption": ["a dog", "a cat"]})
        other = tmp_path / "other.parquet"
        write_parquet(other, {"caption": ["a bird", "a horse", "a cow"]})
        changed = other.read_bytes()  # one row group too, so the planned range still reads
    elif kind == "txt":
        path.write_text("a dog\na ca")  # a last line half written
        changed = b"a dog\na cat\n"
    else:
        path.write_text('{"caption": "a dog"}\n')
        changed = b'{"caption": "a cow"}\n'
    (shard,) = plan_shards(resolve_sources([path]))
    _rewrite_later(path, changed)
    with pytest.raises(BadShardError) as failed:
        list(shard.read(max_caption_chars=100, batch_rows=2))
    assert failed.value.label == str(path)
    assert failed.value.reason.startswith("the file changed since the run was planned")
    assert "run the same command again" in str(failed.value)


def test_a_file_changed_while_its_shard_is_read_is_a_bad_shard(tmp_path):
    path = tmp_path / "part-0.txt"
    path.write_text("".join(f"caption {i}\n" for i in range(10)))
    (shard,) = plan_shards(resolve_sources([path]))
    batches = shard.read(max_caption_chars=100, batch_rows=2)
    next(batches)  # the first lines read, then the file is rewritten
    _rewrite_later(path, b"".join(b"other %d\n" % i for i in range(10)))
    with pytest.raises(BadShardError, match="the file changed since the run was planned"):
        list(batches)


def test_an_unchanged_file_is_checked_by_a_stat_alone(tmp_path, monkeypatch):
    """The check before and after each shard costs a stat when size and time are as planned; the
    edges of the file are hashed again only when they are not (a copy without its times)."""
    path = write_parquet(tmp_path / "part-0.parquet", {"caption": ["a dog", "a cat"]})
    (shard,) = plan_shards(resolve_sources([path]))
    hashed = []
    original = readers.file_record
    monkeypatch.setattr(readers, "file_record", lambda p, **k: hashed.append(p) or original(p, **k))
    assert [c for b in shard.read(max_caption_chars=100, batch_rows=1) for c in b.captions] == [
        "a dog",
        "a cat",
    ]
    assert hashed == []
    os.utime(path, ns=(1, 1))  # the same bytes at another time: read, the content compared
    assert len(list(shard.read(max_caption_chars=100, batch_rows=1))) == 2
    assert len(hashed) == 2


@pytest.mark.parametrize("kind", ["parquet", "txt"])
def test_a_file_that_cannot_be_opened_is_a_bad_shard_naming_it(tmp_path, monkeypatch, kind):
    """A file of a folder that cannot be read (permission denied: simulated, as root reads any
    file) stops planning with a message naming it and the fix, or is skipped and listed with
    --skip-bad, the other files read whole; never a traceback."""
    for i in range(3):
        if kind == "parquet":
            write_parquet(tmp_path / f"part-{i}.parquet", {"caption": [f"a dog {i}", "a cat"]})
        else:
            (tmp_path / f"part-{i}.txt").write_text(f"a dog {i}\na cat\n")
    locked = str(tmp_path / f"part-1.{kind}")

    def denied(original):
        def opener(path, *args, **kwargs):
            if str(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return original(path, *args, **kwargs)

        return opener

    for name in ("file_record", "_parquet_file", "_open_binary"):
        monkeypatch.setattr(readers, name, denied(getattr(readers, name)))
    with pytest.raises(BadShardError) as stopped:
        read_all([tmp_path])
    assert stopped.value.label == locked
    assert "PermissionError: [Errno 13] Permission denied" in stopped.value.reason
    assert "--skip-bad" in str(stopped.value)
    sources = resolve_sources([tmp_path])
    planned = list(plan_shards(sources, skip_bad=True))
    assert [type(item).__name__ for item in planned] == ["Shard", "SkippedShard", "Shard"]
    assert planned[1].label == locked
    captions = [
        caption
        for shard in (planned[0], planned[2])
        for batch in shard.read(max_caption_chars=100, batch_rows=10)
        for caption in batch.captions
    ]
    assert captions == ["a dog 0", "a cat", "a dog 2", "a cat"]


def test_a_subfolder_that_cannot_be_listed_is_named_not_left_out_unsaid(tmp_path, monkeypatch):
    """pathlib's rglob passes over a folder it may not list (permission denied: simulated, as
    root lists any folder), which would leave its shards out of the corpus unsaid."""
    import os

    for part in ("a", "b"):
        (tmp_path / part).mkdir()
        write_parquet(tmp_path / part / "part-0.parquet", {"caption": [f"a dog in {part}"]})
    locked = str(tmp_path / "b")
    scandir = os.scandir

    def listing(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", listing)
    with pytest.raises(InputError) as refused:
        resolve_sources([tmp_path])
    message = str(refused.value)
    assert message.startswith(f"folder {str(tmp_path)!r}: cannot list {locked!r} (PermissionError")
    assert "make it readable" in message


def test_a_file_of_the_same_content_at_another_time_reads_as_planned(tmp_path):
    """What a shard checks is its file's content (size and edges), not its time: a Ray node's
    copy of the corpus made without its times reads as the driver's."""
    import os

    path = write_parquet(tmp_path / "part-0.parquet", {"caption": ["a dog", "a cat"]})
    (shard,) = plan_shards(resolve_sources([path]))
    os.utime(path, ns=(1, 1))
    assert [c for b in shard.read(max_caption_chars=100, batch_rows=2) for c in b.captions] == [
        "a dog",
        "a cat",
    ]


def test_a_folder_reads_one_caption_column_and_refuses_a_file_without_it(tmp_path):
    """The column no option names is picked once per source, by its first file: a later file
    without it is refused, naming the file, its columns and the fix, not read from another
    column of its own (one corpus, one column); skipped and listed with --skip-bad."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_parquet(folder / "a.parquet", {"caption": ["a dog"], "alt": ["A DOG"]})
    write_parquet(folder / "b.parquet", {"TEXT": ["a cat"], "alt": ["A CAT"]})
    with pytest.raises(InputError) as refused:
        read_all([folder])
    message = str(refused.value)
    assert message.startswith(f"{folder / 'b.parquet'}: no caption column 'caption'")
    assert str(folder / "a.parquet") in message  # where the folder's column was picked
    assert "its columns are TEXT, alt" in message and "--column" in message
    planned = list(plan_shards(resolve_sources([folder]), skip_bad=True))
    assert [type(item).__name__ for item in planned] == ["Shard", "SkippedShard"]
    assert planned[1].label == str(folder / "b.parquet")
    assert "no caption column 'caption'" in planned[1].reason
    # the column every file has, named, reads them all
    assert read_all([folder], column="alt")[1] == ["A DOG", "A CAT"]
    # another source picks its own: a file alone is a corpus of its own
    alone = write_parquet(tmp_path / "c.parquet", {"TEXT": ["a cow"]})
    assert read_all([folder / "a.parquet", alone])[1] == ["a dog", "a cow"]


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_a_folder_reads_one_id_column_and_refuses_a_file_without_it(tmp_path, kind):
    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = {
        "a": {"id": ["a0"], "caption": ["a dog"]},
        "b": {"key": ["b0"], "caption": ["a cat"]},
        "c": {"caption": ["a cow"]},
    }
    for name, columns in rows.items():
        if kind == "parquet":
            write_parquet(folder / f"{name}.parquet", columns)
        else:
            record = {column: values[0] for column, values in columns.items()}
            (folder / f"{name}.jsonl").write_text(json.dumps(record) + "\n")
    for lacking, columns in (("b", "key, caption"), ("c", "caption")):
        with pytest.raises(InputError) as refused:
            list(plan_shards(resolve_sources([folder])))
        message = str(refused.value)
        assert message.startswith(f"{folder / f'{lacking}.{kind}'}: no id column 'id'")
        assert f"its columns are {columns}" in message and "--id-column" in message
        (folder / f"{lacking}.{kind}").unlink()
    # a first file without an id column makes the folder's ids row numbers, for every file
    (folder / f"a.{kind}").unlink()
    for name in ("c", "d"):
        columns = rows["c"] if name == "c" else {"id": ["d0"], "caption": ["a hen"]}
        if kind == "parquet":
            write_parquet(folder / f"{name}.parquet", columns)
        else:
            record = {column: values[0] for column, values in columns.items()}
            (folder / f"{name}.jsonl").write_text(json.dumps(record) + "\n")
    assert read_all([folder])[1:3] == (["a cow", "a hen"], [0, 1])


def test_a_column_picked_for_a_folder_names_shards_as_the_same_column_named_does(tmp_path):
    """Where every file holds the column, shard identities are what they were: picking per
    source changes no key, so finished shards of earlier runs are reused."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("a", "b"):
        write_parquet(folder / f"{name}.parquet", {"id": [1], "caption": ["x"], "alt": ["y"]})
    sources = resolve_sources([folder])
    picked = list(plan_shards(sources))
    named = list(plan_shards(sources, column="caption", id_column="id"))
    assert [s.key for s in picked] == [s.key for s in named]
    assert [(s.column, s.id_column) for s in picked] == [("caption", "id")] * 2


@pytest.mark.parametrize(
    "values",
    [
        pa.array([{"en": "a dog"}, {"en": "a cat"}]),
        pa.array([["a dog"], ["a cat"]]),
        pa.array([1, 2]),
    ],
    ids=["struct", "list", "int"],
)
def test_a_caption_column_that_is_not_text_is_refused_when_planned(tmp_path, values):
    """A struct, list or number column would count every row as not_string after reading the
    whole corpus: refused at planning, naming the file, the column, its type and the fix."""
    path = write_parquet(
        tmp_path / "a.parquet", {"caption": values, "alt": ["x", "y"], "n": [1, 2]}
    )
    shown = str(pq.read_schema(path).field("caption").type)  # as the file holds it
    with pytest.raises(InputError) as refused:
        list(plan_shards(resolve_sources([path])))
    message = str(refused.value)
    assert message.startswith(f"{path}: caption column 'caption' is {shown}")
    assert "--column" in message and "its text columns are alt" in message
    (skipped,) = plan_shards(resolve_sources([path]), skip_bad=True)
    assert isinstance(skipped, SkippedShard) and f"is {shown}" in skipped.reason
    assert read_all([path], column="alt")[1] == ["x", "y"]
    with pytest.raises(InputError, match=r"column 'n' is int64.*its text columns are alt"):
        list(plan_shards(resolve_sources([path]), column="n"))
    bare = write_parquet(tmp_path / "b.parquet", {"caption": values})
    with pytest.raises(InputError, match=r"is .*; it has no text column"):
        list(plan_shards(resolve_sources([bare])))


def test_a_saved_dataset_whose_caption_column_is_not_text_is_refused(tmp_path):
    import datasets

    data = datasets.Dataset.from_dict({"caption": [["a dog"], ["a cat"]], "alt": ["x", "y"]})
    data.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(InputError, match=r"caption column 'caption' is list<item: string>.*alt$"):
        list(plan_shards(resolve_sources([tmp_path / "saved"])))


def test_a_caption_column_of_nulls_alone_is_read_as_nulls(tmp_path):
    """A shard whose captions are all missing (pandas writes a column of Nones as type null)
    is text that is absent, not a column of another type: its rows count as null."""
    path = write_parquet(tmp_path / "a.parquet", {"caption": pa.nulls(3)})
    assert read_all([path])[3:] == (3, {"null": 3})


def test_a_streamed_dataset_whose_caption_column_is_not_text_is_refused(tmp_path, monkeypatch):
    """A dataset whose features are known before its rows (parquet files) is checked as a file
    is, before any row is streamed."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "hub_like"
    folder.mkdir()
    write_parquet(folder / "part.parquet", {"caption": [["a dog"], ["a cat"]], "alt": ["x", "y"]})
    with pytest.raises(
        InputError, match=r"caption column 'caption' is list<.*its text columns are alt$"
    ):
        list(plan_shards(resolve_sources([f"hf:{folder}"])))


def test_a_column_message_names_the_option_and_the_keyword_alike(tmp_path):
    """The library said "(choose one with --column)" to a caller of count_coverage(column=...):
    a column message names both ways of choosing it, the flag and the keyword."""
    path = write_parquet(tmp_path / "a.parquet", {"caption": ["a"], "n": [1], "alt": ["b"]})
    plain = write_parquet(tmp_path / "b.parquet", {"url": ["x"]})
    numbers = write_parquet(tmp_path / "c.parquet", {"caption": [1], "alt": ["b"]})
    cases = [
        ([path], {"column": "text"}, "--column, or column= in Python"),
        ([plain], {}, "--column, or column= in Python"),
        ([path], {"id_column": "iid"}, "--id-column, or id_column= in Python"),
        ([numbers], {}, "--column, or column= in Python"),
    ]
    for specs, options, said in cases:
        with pytest.raises(InputError) as refused:
            read_all(specs, **options)
        assert said in str(refused.value), str(refused.value)
        assert "with --column)" not in str(refused.value)


def test_counts_in_reader_messages_agree_with_their_number(tmp_path):
    """ "1 are CSV or TSV tables": a count of one reads in the singular."""
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "x.csv").write_text("caption\na dog\n")
    with pytest.raises(InputError) as refused:
        resolve_sources([tables])
    assert "it can read: 1 is a CSV or TSV table (e.g. x.csv)" in str(refused.value)
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "a.jsonl.gz").write_bytes(gzip.compress(b'{"caption": "a cat"}\n'))
    with pytest.raises(InputError) as refused:
        resolve_sources([packed])
    assert "it can read: 1 is compressed (e.g. a.jsonl.gz), which is not read; decompress it " in (
        str(refused.value)
    )
    one_line = tmp_path / "one.jsonl"
    one_line.write_text("not json\n")
    with pytest.raises(InputError, match=r"no JSON object in its first 1 line;"):
        read_all([one_line])
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"a\x00")
    with pytest.raises(InputError, match=r"1 of its first 2 bytes is NUL;"):
        read_all([nul])


def _two_caption_columns(tmp_path, kind):
    """A source of ``kind`` whose rows hold both caption and TEXT (lower and upper case)."""
    rows = {"caption": ["a dog", "a cat"], "TEXT": ["A DOG", "A CAT"], "id": [1, 2]}
    if kind == "parquet":
        return str(write_parquet(tmp_path / "both.parquet", rows))
    if kind == "jsonl":
        path = tmp_path / "both.jsonl"
        records = [
            dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return str(path)
    import datasets

    if kind == "saved":
        datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
        return str(tmp_path / "saved")
    folder = tmp_path / "hub_like"  # a dataset streamed through datasets, as from the hub
    folder.mkdir()
    write_parquet(folder / "part.parquet", rows)
    return f"hf:{folder}"


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "saved", "stream"])
def test_a_source_holding_two_caption_columns_is_refused_unless_one_is_named(
    tmp_path, monkeypatch, kind
):
    """Which of caption and TEXT a file is read from was only to be seen in the manifest:
    with no column named, the ambiguity is refused, naming both and the fix; named, either is
    read. A file with one of them reads as before."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = _two_caption_columns(tmp_path, kind)
    with pytest.raises(InputError) as refused:
        read_all([spec])
    message = str(refused.value)
    assert "holds more than one caption column (caption, TEXT)" in message
    assert "name one with --column, or column= in Python" in message
    assert read_all([spec], column="TEXT")[1:3] == (["A DOG", "A CAT"], [1, 2])
    assert read_all([spec], column="caption")[1:3] == (["a dog", "a cat"], [1, 2])
    alone = write_parquet(tmp_path / "alone.parquet", {"TEXT": ["a cow"], "alt": ["x"]})
    assert read_all([alone])[1] == ["a cow"]


def test_a_file_holding_two_caption_columns_is_a_bad_shard_with_skip_bad(tmp_path):
    both = write_parquet(tmp_path / "both.parquet", {"text": ["a dog"], "TEXT": ["A DOG"]})
    (skipped,) = plan_shards(resolve_sources([both]), skip_bad=True)
    assert isinstance(skipped, SkippedShard)
    assert "more than one caption column (TEXT, text)" in skipped.reason


def test_a_hub_dataset_offline_says_why_and_how_to_read_it_here(monkeypatch):
    """`HF_HUB_OFFLINE=1 clipaudit coverage count hf:laion/laion400m` said only "Couldn't reach
    ... (OfflineModeIsEnabled); check ... the network": it names the setting and the way to read
    the dataset here (save_to_disk elsewhere, then the folder), as --images hf:NAME does."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(InputError) as err:
        read_all(["hf:clipaudit-test-org/never-cached-captions"])
    message = str(err.value)
    assert "'clipaudit-test-org/never-cached-captions'" in message
    assert "HF_HUB_OFFLINE is set (unset it to download)" in message
    assert "save_to_disk" in message
