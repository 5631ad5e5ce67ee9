"""Image sources (folder, webdataset shards, Hugging Face datasets) and the bad-image zoo."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipaudit.errors import InputError, SettingsError
from clipaudit.images import (
    BadImage,
    DecodedImages,
    check_image_source,
    collate_decoded,
    decode_image,
    open_images,
)
from tests.conftest import damaged_saved_datasets
from tests.tiny_clip import write_image_folder


def image_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def png_claiming_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header is rewritten to claim ``width`` x ``height`` (a decompression bomb's shape)."""
    data = bytearray(image_bytes(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The Hugging Face hub as hf:NAME image sources see it, without the network: an empty
    datasets cache, the hub clients online, huggingface.co reachable (``hub.up = False`` takes it
    away); ``hub.tried`` lists the hosts the reachability check tried."""
    from types import SimpleNamespace

    import datasets
    from huggingface_hub import constants

    hub = SimpleNamespace(up=True, tried=[], cache=tmp_path / "datasets-cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hub.cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(
        "clipaudit.hub.reachable", lambda host, timeout=3.0: hub.tried.append(host) or hub.up
    )
    return hub


# --------------------------------------------------------------------------- folders


def test_folder_names_match_registry_names_ignoring_case_and_separators(tmp_path, registry):
    write_image_folder(
        tmp_path, {"animal": {"DOG": 2, "Cat": 1}, "POV": {"Wide_Shot": 1, "close-up": 1}}
    )
    (tmp_path / "animal" / "DOG" / "notes.txt").write_text("not an image")
    (tmp_path / "readme.md").write_text("stray")
    images = open_images(tmp_path, registry)
    found = sorted((r.group, r.concept) for r in images.records)
    assert found == [
        ("Animal", "cat"),
        ("Animal", "dog"),
        ("Animal", "dog"),
        ("Viewpoint", "close-up"),
        ("Viewpoint", "wide shot"),
    ]
    assert images.kind == "folder"
    assert sorted(Path(i["path"]).name for i in images.ignored) == ["notes.txt", "readme.md"]
    record = next(r for r in images.records if r.concept == "cat")
    assert images.read_bytes(record) == Path(record.path).read_bytes()


def test_hidden_entries_are_listed_not_read_as_groups_concepts_or_images(tmp_path, registry):
    """A cloned dataset's .git, Jupyter's checkpoints and macOS's AppleDouble files are no part
    of the layout: a hidden folder at the top is no group name that stops the run."""
    write_image_folder(tmp_path, {"Animal": {"dog": 2, "cat": 1}}, size=(8, 8))
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "objects" / "pack.jpg").write_bytes(b"not an image")
    (tmp_path / ".gitattributes").write_text("*.jpg filter=lfs")
    (tmp_path / "Animal" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "Animal" / "dog" / "._000.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "Animal" / "dog" / ".thumbs" / "small").mkdir(parents=True)
    (tmp_path / "Animal" / "dog" / ".thumbs" / "small" / "000.jpg").write_bytes(b"thumb")
    images = open_images(tmp_path, registry)
    assert sorted(Path(r.path).relative_to(tmp_path).as_posix() for r in images.records) == [
        "Animal/cat/000.jpg",
        "Animal/dog/000.jpg",
        "Animal/dog/001.jpg",
    ]
    hidden = "hidden (its name starts with '.'), not read"
    assert sorted(
        (Path(i["path"]).relative_to(tmp_path).as_posix(), i["reason"]) for i in images.ignored
    ) == [
        (".git", hidden),
        (".gitattributes", hidden),
        ("Animal/.ipynb_checkpoints", hidden),
        ("Animal/dog/._000.jpg", hidden),
        ("Animal/dog/.thumbs", hidden),
    ]


def test_category_level_folders_and_group_selection(tmp_path, registry):
    write_image_folder(tmp_path / "common", {"Animal": {"dog": 2, "cat": 2}})
    write_image_folder(tmp_path / "under-captioned", {"Viewpoint": {"aerial": 3}})
    images = open_images(tmp_path, registry, groups=["Animal"])
    assert sorted({r.concept for r in images.records}) == ["cat", "dog"]
    assert len(images.records) == 4
    assert images.n_unselected == 3


def test_unknown_folder_names_are_one_error_listing_all_with_suggestions(tmp_path, registry):
    write_image_folder(tmp_path, {"Animl": {"dog": 1}, "Animal": {"dgo": 1, "red": 1, "cat": 1}})
    with pytest.raises(InputError) as raised:
        open_images(tmp_path, registry)
    message = str(raised.value)
    assert message.startswith("3 name(s)")
    assert "'Animl' is no group or category (did you mean 'Animal'?)" in message
    assert "'dgo' is no concept (did you mean 'dog'?)" in message
    assert "concept 'red' is in group 'Color', not 'Animal'" in message


def test_concept_folders_without_their_group_folder_are_told_where_they_go(tmp_path, registry):
    write_image_folder(tmp_path, {"dog": {"a": 1}, "Red": {"b": 1}})  # ROOT/<concept>/ only
    with pytest.raises(InputError) as raised:
        open_images(tmp_path, registry)
    message = str(raised.value)
    assert message.startswith("2 name(s)")
    assert (
        "folder 'Red' is a concept, not a group; move it into its group's folder (Color/Red/"
        in (message)
    )
    assert (
        "folder 'dog' is a concept, not a group; move it into its group's folder (Animal/dog/"
        in (message)
    )


def test_a_missing_source_says_what_was_expected(tmp_path, registry):
    with pytest.raises(InputError, match=r"does not exist; expected an image folder"):
        open_images(tmp_path / "nowhere", registry)


# --------------------------------------------------------------------------- webdataset


def write_shard(path: Path, samples: list[dict]) -> None:
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)


def test_webdataset_shards_label_from_json_or_txt(tmp_path, registry):
    dog = image_bytes(noise(20, 10, 1), "JPEG")
    cat = image_bytes(noise(12, 12, 2), "PNG")
    write_shard(
        tmp_path / "00000.tar",
        [
            {
                "__key__": "000000000",
                "jpg": dog,
                "json": json.dumps({"concept": "Dog", "caption": "a pup"}).encode(),
            },
            {"__key__": "000000001", "png": cat, "txt": b"cat\n"},
        ],
    )
    write_shard(
        tmp_path / "00001.tar",
        [
            {
                "__key__": "000010000",
                "jpg": dog,
                "json": json.dumps({"caption": "no label"}).encode(),
            },
            {
                "__key__": "000010001",
                "webp": image_bytes(noise(8, 8, 3), "WEBP"),
                "json": b'{"concept": "red"}',
            },
        ],
    )
    images = open_images(tmp_path, registry)
    assert images.kind == "webdataset"
    assert [(r.group, r.concept) for r in images.records] == [
        ("Animal", "dog"),
        ("Animal", "cat"),
        ("Color", "red"),
    ]
    assert images.read_bytes(images.records[0]) == dog
    assert images.read_bytes(images.records[1]) == cat
    assert images.records[0].path.endswith("00000.tar/000000000.jpg")
    assert [i["reason"] for i in images.ignored] == [
        "no concept label (json 'concept' or txt); its json has keys caption: choose one with "
        "--label-field"
    ]
    pattern = open_images(str(tmp_path / "{00000..00001}.tar"), registry, groups=["Color"])
    assert [r.concept for r in pattern.records] == ["red"] and pattern.n_unselected == 2
    # macOS's AppleDouble file beside a shard is no shard: listed, not read
    (tmp_path / "._00000.tar").write_bytes(b"\x00\x05\x16\x07 resource fork")
    again = open_images(tmp_path, registry)
    assert [(r.group, r.concept) for r in again.records] == [
        (r.group, r.concept) for r in images.records
    ]
    assert again.ignored[0] == {
        "path": str(tmp_path / "._00000.tar"),
        "reason": "hidden (its name starts with '.'), not read",
    }


def test_webdataset_unknown_labels_are_listed(tmp_path, registry):
    jpg = image_bytes(noise(8, 8), "JPEG")
    write_shard(
        tmp_path / "a.tar",
        [
            {"__key__": "0", "jpg": jpg, "txt": b"doggo"},
            {"__key__": "1", "jpg": jpg, "txt": b"zebraa"},
        ],
    )
    with pytest.raises(
        InputError,
        match=r"the labels are the samples' \.txt \(none has a json.*The 2 labels: .*'doggo'"
        r".*'zebraa' is no concept \(did you mean 'zebra'\?\)",
    ):
        open_images(tmp_path / "a.tar", registry)


def test_unknown_labels_are_listed_once_each_with_how_often_they_were_met(tmp_path, registry):
    """A dataset's rows repeat their labels: 30 rows of one unknown label filled the message
    with it 25 times, the next one never named."""
    import datasets

    png = image_bytes(noise(8, 8), "PNG")
    labels = ["tabby"] * 30 + ["dog"] * 2 + ["zebraa"] * 3
    rows = {"image": [{"bytes": png, "path": None}] * len(labels), "label": labels}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(InputError) as raised:
        open_images(tmp_path / "ds", registry)
    message = str(raised.value)
    assert message.startswith(
        f"2 name(s) in {tmp_path / 'ds'} match no registry entry: label 'tabby' is no concept"
    )
    assert message.count("label 'tabby'") == 1
    assert "(did you mean 'cat'? 'tabby' is a synonym of it) (30 times);" in message
    assert "label 'zebraa' is no concept (did you mean 'zebra'?) (3 times). Names must" in message


def test_a_shard_cut_off_between_samples_is_refused_not_read_short(tmp_path, registry):
    jpg = image_bytes(noise(8, 8), "JPEG")
    samples = [{"__key__": f"{n}", "jpg": jpg, "txt": b"dog"} for n in range(4)]
    write_shard(tmp_path / "whole.tar", samples)
    assert len(open_images(tmp_path / "whole.tar", registry).records) == 4
    import tarfile

    with tarfile.open(tmp_path / "whole.tar") as tar:
        second = next(m for m in tar if m.name.startswith("2."))  # sample 2 starts here
    cut = tmp_path / "cut" / "00000.tar"
    cut.parent.mkdir()
    cut.write_bytes((tmp_path / "whole.tar").read_bytes()[: second.offset])  # a 512-byte boundary
    with pytest.raises(
        InputError,
        match=rf"shard '.*00000.tar' is cut off or damaged after byte {second.offset} of "
        rf"{second.offset} \(2 samples read\).*copy or write the shard again",
    ):
        open_images(cut.parent, registry)


def test_files_another_user_owns_are_listed_or_named_not_a_traceback(
    tmp_path, registry, monkeypatch
):
    """A permission-denied image is listed with the reason and the others are read; a
    permission-denied shard (all its samples) is one error naming it. Simulated (the tests may
    run as root, who reads every file): ``open`` of a file named locked.* is refused."""
    import builtins
    import errno

    import clipaudit.images as images

    def guarded_open(file, *args, **kwargs):
        if Path(file).name.startswith("locked."):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(images, "open", guarded_open, raising=False)
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 2, "cat": 2}}, size=(8, 8))
    (tmp_path / "img" / "Animal" / "dog" / "locked.jpg").write_bytes(b"whatever")
    found = open_images(tmp_path / "img", registry)
    assert sorted(Path(r.path).name for r in found.records) == [
        "000.jpg",
        "000.jpg",
        "001.jpg",
        "001.jpg",
    ]
    assert found.ignored == [
        {
            "path": str(tmp_path / "img" / "Animal" / "dog" / "locked.jpg"),
            "reason": "cannot be read (Permission denied)",
        }
    ]
    (tmp_path / "shards").mkdir()
    write_shard(tmp_path / "shards" / "00000.tar", [{"__key__": "0", "jpg": b"x", "txt": b"dog"}])
    write_shard(tmp_path / "shards" / "locked.tar", [{"__key__": "0", "jpg": b"x", "txt": b"dog"}])
    with pytest.raises(
        InputError, match=r"shard '.*locked.tar' cannot be read \(Permission denied\); make it"
    ):
        open_images(tmp_path / "shards", registry)


def test_shards_whose_json_lacks_the_label_key_name_the_keys_and_the_option(tmp_path, registry):
    jpg = image_bytes(noise(8, 8), "JPEG")
    write_shard(
        tmp_path / "a.tar",
        [{"__key__": "0", "jpg": jpg, "json": json.dumps({"label": "dog", "url": "u"}).encode()}],
    )
    with pytest.raises(
        InputError,
        match=r"1 files ignored, e\.g\. .*a\.tar/0: no concept label \(json 'concept' or txt\); "
        r"its json has keys label, url: choose one with --label-field",
    ):
        open_images(tmp_path / "a.tar", registry)
    assert [
        r.concept for r in open_images(tmp_path / "a.tar", registry, label_field="label").records
    ] == ["dog"]


# --------------------------------------------------------------------------- Hugging Face


def test_hugging_face_dataset_with_class_label_column(tmp_path, registry):
    import datasets

    write_image_folder(tmp_path / "src", {"x": {"a": 3}}, suffix="png")
    files = sorted((tmp_path / "src").rglob("*.png"))
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["Dog", "ice_cream", "duck"]),
        }
    )
    dataset = datasets.Dataset.from_dict(
        {"image": [str(f) for f in files], "label": [0, 1, 0]}, features=features
    )
    dataset.save_to_disk(str(tmp_path / "ds"))
    images = open_images(tmp_path / "ds", registry)
    assert images.kind == "huggingface"
    assert [(r.group, r.concept) for r in images.records] == [
        ("Animal", "dog"),
        ("Food", "ice cream"),
        ("Animal", "dog"),
    ]
    assert images.read_bytes(images.records[1]) == files[1].read_bytes()
    food_only = open_images(tmp_path / "ds", registry, groups=["Food"])
    assert [r.concept for r in food_only.records] == ["ice cream"]


def test_a_dataset_built_again_from_changed_images_gets_new_identities(tmp_path, registry):
    """datasets fingerprints a dataset built from image paths by the paths: built again after
    the images changed, it keeps its fingerprint, and the embedding cache (keyed by identity)
    would give the old images' embeddings."""
    import datasets

    write_image_folder(tmp_path / "src", {"x": {"a": 2}}, suffix="png")
    files = sorted((tmp_path / "src").rglob("*.png"))

    def build(folder: Path) -> tuple[str, list[str]]:
        rows = {"image": [str(f) for f in files], "label": ["dog", "cat"]}
        dataset = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
        dataset.save_to_disk(str(folder))
        images = open_images(folder, registry)
        assert images.read_bytes(images.records[0]) == files[0].read_bytes()
        return dataset._fingerprint, [r.identity for r in images.records]

    before = build(tmp_path / "first")
    assert [r.identity for r in open_images(tmp_path / "first", registry).records] == before[1]
    noise(40, 30, seed=9).save(files[0])
    after = build(tmp_path / "again")
    assert after[0] == before[0]  # why: the paths are what datasets hashed
    assert not set(after[1]) & set(before[1])


def test_a_hugging_face_row_without_an_image_is_skipped_saying_so(tmp_path, registry):
    import datasets
    from torchvision.transforms import ToTensor

    png = image_bytes(noise(8, 8), "PNG")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    rows = {"image": [{"bytes": png, "path": None}, None], "label": ["dog", "cat"]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    images = open_images(tmp_path / "ds", registry)
    decoded = DecodedImages(images, range(2), ToTensor())
    assert decoded[0][1].shape == (3, 8, 8)
    assert decoded[1] == (1, None, "no image: row 1's 'image' is empty")


def test_hugging_face_rows_without_a_label_are_listed_as_ignored(tmp_path, registry):
    """datasets marks an unlabelled row -1 in a class-label column (a test split's rows): it
    was a bare ValueError of int2str; a missing string label was read as a concept "None"."""
    import datasets

    png = image_bytes(noise(8, 8), "PNG")
    classes = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["dog", "cat"])}
    )
    strings = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    for name, features, labels, kept, unlabelled in (
        ("classes", classes, [0, -1, 1], [("dog", 0), ("cat", 2)], [1]),
        ("strings", strings, ["cat", None, ""], [("cat", 0)], [1, 2]),
    ):
        rows = {"image": [{"bytes": png, "path": None}] * 3, "label": labels}
        datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / name))
        images = open_images(tmp_path / name, registry)
        assert [(r.concept, r.row) for r in images.records] == kept
        assert [entry["path"] for entry in images.ignored] == [
            f"{tmp_path / name}#{row}" for row in unlabelled
        ]
        assert all("no label in column 'label'" in e["reason"] for e in images.ignored)
    only = datasets.Dataset.from_dict(
        {"image": [{"bytes": png, "path": None}], "label": [-1]}, features=classes
    )
    only.save_to_disk(str(tmp_path / "none"))
    with pytest.raises(InputError, match=r"no images .*#0: no label in column 'label'"):
        open_images(tmp_path / "none", registry)


def test_hugging_face_string_labels_splits_and_missing_columns(tmp_path, registry):
    import datasets

    png = image_bytes(noise(8, 8), "PNG")
    split = datasets.Dataset.from_dict(
        {"img": [{"bytes": png, "path": None}] * 2, "name": ["cat", "horse"]},
        features=datasets.Features({"img": datasets.Image(), "name": datasets.Value("string")}),
    )
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match=r"has splits train, test; choose one with --split"):
        open_images(tmp_path / "dd", registry, label_field="name", image_column="img")
    with pytest.raises(
        InputError, match=r"no column .label..*columns are img, name.*--label-field"
    ):
        open_images(tmp_path / "dd", registry, image_column="img", split="test")
    images = open_images(
        tmp_path / "dd", registry, label_field="name", image_column="img", split="test"
    )
    assert [r.concept for r in images.records] == ["cat", "horse"]
    assert images.read_bytes(images.records[0]) == png


def test_a_damaged_saved_dataset_is_one_clear_error(tmp_path, registry):
    import datasets

    png = image_bytes(noise(64, 64), "PNG")
    split = datasets.Dataset.from_dict(
        {"image": [{"bytes": png, "path": None}] * 3, "label": ["cat", "dog", "cat"]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    split.save_to_disk(str(tmp_path / "good"))
    assert [r.concept for r in open_images(tmp_path / "good", registry).records] == [
        "cat", "dog", "cat"
    ]  # fmt: skip
    cut, hollow = damaged_saved_datasets(split, tmp_path)
    for broken, why in ((cut, "OSError"), (hollow, "KeyError")):
        with pytest.raises(InputError) as stopped:
            open_images(broken, registry)
        assert str(stopped.value).startswith(
            f"image source {str(broken)!r} is not a readable dataset saved by datasets' "
            f"save_to_disk ({why}: "
        )
        assert str(stopped.value).endswith("; save the dataset again with save_to_disk")


def test_a_hub_dataset_that_cannot_be_opened_is_one_clear_error(hub, monkeypatch, registry):
    import datasets

    asked = []

    def unreachable(name, *args, **kwargs):
        asked.append(name)
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.setattr(datasets, "get_dataset_split_names", unreachable)  # asked first
    with pytest.raises(InputError) as stopped:
        open_images("hf:someorg/nonexist", registry, split="test")
    assert str(stopped.value) == (
        "cannot open Hugging Face dataset 'someorg/nonexist' (split 'test'): ConnectionError: "
        "Couldn't reach 'someorg/nonexist' on the Hub (LocalEntryNotFoundError); check the name, "
        "the split (--split; --image-split in clipaudit audit) and the network"
    )
    # a URL of files is no hub dataset name: refused before anything is asked of the hub
    with pytest.raises(InputError, match=r"name a Hugging Face hub dataset as hf:NAME"):
        open_images("hf://datasets/someorg/nonexist/data/train.parquet", registry)
    with pytest.raises(InputError, match=r"\(hf:someorg/nonexist\)$"):
        open_images("hf://datasets/someorg/nonexist", registry)
    assert asked == ["someorg/nonexist"]


# --------------------------------------------------------------------------- the bad-image zoo


def test_undecodable_images_raise_bad_image_with_the_reason():
    jpeg = image_bytes(noise(64, 64), "JPEG", quality=95)
    cases = {
        "empty file": b"",
        "not a recognised image": b"this is not an image, just text" * 10,
        "truncated": jpeg[: len(jpeg) // 2],
        "too large.*decompression.bomb": png_claiming_size(100_000, 100_000),
    }
    for reason, data in cases.items():
        with pytest.raises(BadImage, match=reason):
            decode_image(data)
    with pytest.raises(BadImage, match=r"40x30 = 1200 pixels exceeds"):
        decode_image(image_bytes(noise(40, 30), "PNG"), max_pixels=1000)


def test_the_pixel_limit_message_says_how_to_raise_it():
    with pytest.raises(BadImage, match=r"raise it with --max-pixels \(max_pixels= in Python\)"):
        decode_image(image_bytes(noise(40, 30), "PNG"), max_pixels=1000)


def test_a_pixel_limit_above_pillows_own_lets_a_large_image_decode(monkeypatch):
    """Pillow refuses any image over twice its MAX_IMAGE_PIXELS when opening it: a user who
    raises --max-pixels for trusted large images (aerial photos, scans) gets them decoded."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow refuses over 2,000 pixels
    picture = noise(60, 50)  # 3,000 pixels
    data = image_bytes(picture, "PNG")
    with pytest.raises(BadImage, match="too large"):
        decode_image(data, max_pixels=1_000)
    decoded = decode_image(data, max_pixels=5_000)
    assert decoded.size == (60, 50)
    assert np.array_equal(np.asarray(decoded), np.asarray(picture.convert("RGB")))
    assert Image.MAX_IMAGE_PIXELS == 1_000  # Pillow's own limit is left as it was


def test_a_jpeg_is_held_to_the_pixel_limit_at_the_scale_it_is_decoded_at():
    """A phone's 108-megapixel JPEG decodes at 1/8 scale in draft mode: the limit guards what
    decoding costs, so it is checked there, while a PNG (no draft) is held to its full size."""
    photo = image_bytes(noise(1600, 1200), "JPEG", quality=90)  # 1.92 Mpx; 1/8 scale: 200x150
    with pytest.raises(BadImage, match=r"1600x1200 = 1920000 pixels exceeds"):
        decode_image(photo, max_pixels=100_000)
    drafted = decode_image(photo, draft_size=150, max_pixels=100_000)
    assert drafted.size == (200, 150) and drafted.mode == "RGB"
    with pytest.raises(BadImage, match=r"400x300 = 120000 pixels exceeds"):  # 1/4 scale covers 300
        decode_image(photo, draft_size=300, max_pixels=100_000)
    with pytest.raises(BadImage, match="exceeds"):
        decode_image(image_bytes(noise(400, 300), "PNG"), draft_size=150, max_pixels=100_000)
    # without draft mode asked for, a JPEG over the limit is drafted to the model's side alone
    resized = decode_image(photo, scaled_side=150, max_pixels=100_000)
    assert resized.size == (200, 150)
    assert decode_image(photo, scaled_side=150).size == (1600, 1200)  # under the limit: whole


def test_decodable_odd_images_become_rgb_with_the_right_pixels():
    cmyk_red = decode_image(
        image_bytes(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=100)
    )
    grey = decode_image(image_bytes(Image.new("L", (8, 8), 77), "PNG"))
    sixteen = decode_image(
        image_bytes(Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)), "PNG")
    )
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    gif = image_bytes(
        frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0
    )
    animated = decode_image(gif)
    rgba = decode_image(image_bytes(Image.new("RGBA", (8, 8), (10, 20, 30, 0)), "PNG"))
    for image in (cmyk_red, grey, sixteen, animated, rgba):
        assert image.mode == "RGB" and image.size == (8, 8)
    assert np.abs(np.asarray(cmyk_red)[4, 4].astype(int) - [255, 0, 0]).max() <= 8
    assert tuple(np.asarray(grey)[0, 0]) == (77, 77, 77)
    assert tuple(np.asarray(sixteen)[0, 0]) == (
        128,
        128,
        128,
    )  # 32896 / 65535 * 255, scaled not clipped
    assert tuple(np.asarray(animated)[0, 0]) == (255, 0, 0)  # the first frame
    assert tuple(np.asarray(rgba)[0, 0]) == (255, 255, 255)  # transparent: on white


def test_jpeg_draft_decodes_at_a_reduced_size_that_still_covers_the_target():
    jpeg = image_bytes(noise(640, 480), "JPEG")
    assert decode_image(jpeg).size == (640, 480)
    assert decode_image(jpeg, draft_size=100).size == (
        160,
        120,
    )  # 1/4 scale: the smallest >= 100 per side
    assert decode_image(jpeg, draft_size=224).size == (320, 240)


def test_one_bad_file_never_stops_a_dataloader(tmp_path, registry):
    import torch
    from torchvision.transforms import ToTensor

    write_image_folder(tmp_path, {"Animal": {"dog": 2, "cat": 2}}, size=(8, 8), suffix="png")
    (tmp_path / "Animal" / "dog" / "empty.jpg").write_bytes(b"")
    (tmp_path / "Animal" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nrubbish")
    images = open_images(tmp_path, registry)
    dataset = DecodedImages(images, range(len(images.records)), ToTensor())
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, num_workers=2, collate_fn=collate_decoded
    )
    good, bad = [], []
    for indices, batch, failures in loader:
        assert batch is None or batch.shape == (len(indices), 3, 8, 8)
        good += indices
        bad += [(Path(images.records[i].path).name, reason) for i, reason in failures]
    assert len(good) == 4
    assert sorted(name for name, _ in bad) == ["broken.png", "empty.jpg"]
    assert dict(bad)["empty.jpg"] == "empty file (0 bytes)"


def test_deep_grayscale_is_scaled_by_its_depth_not_its_content():
    from PIL import Image

    from clipaudit.images import to_rgb

    dark = Image.fromarray(np.full((2, 2), 200, dtype=np.uint16))  # I;16: 0.3% of 65535
    assert dark.mode == "I;16"
    assert np.asarray(to_rgb(dark))[0, 0].tolist() == [1, 1, 1]
    half = Image.fromarray(np.full((2, 2), 0.5, dtype=np.float32))
    assert np.asarray(to_rgb(half))[0, 0].tolist() == [128, 128, 128]
    wide = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert np.asarray(to_rgb(wide))[0].tolist() == [[0, 0, 0], [255, 255, 255]]


# the damaged EXIF block below is Pillow's to warn about when it opens the file
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_exif_orientation_turns_an_image_as_viewers_show_it():
    """Cameras store a photo sideways with an orientation tag; it was labelled upright. The
    expected pixels are made here with numpy, from the EXIF standard's table."""
    rng = np.random.default_rng(3)
    upright = rng.integers(0, 256, size=(6, 10, 3), dtype=np.uint8)  # 10 wide, 6 high
    # what a camera stores for each tag: the transform that the tag's display transform undoes
    stored = {
        1: upright,
        2: upright[:, ::-1],
        3: upright[::-1, ::-1],
        4: upright[::-1],
        5: upright.transpose(1, 0, 2),
        6: np.rot90(upright, 1),  # shown turned 90 degrees clockwise
        7: np.rot90(upright, 2).transpose(1, 0, 2),
        8: np.rot90(upright, -1),  # shown turned 90 degrees anticlockwise
    }
    for tag, pixels in stored.items():
        exif = Image.Exif()
        exif[0x0112] = tag
        data = image_bytes(Image.fromarray(np.ascontiguousarray(pixels)), "PNG", exif=exif)
        assert np.array_equal(np.asarray(decode_image(data)), upright), f"orientation {tag}"
    # a damaged EXIF block is ignored, as viewers ignore it: the pixels as stored
    broken = image_bytes(
        Image.fromarray(upright),
        "JPEG",
        quality=95,
        exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff",
    )
    assert decode_image(broken).size == (10, 6)


def test_an_image_too_elongated_for_the_models_resize_is_refused_before_decoding():
    strip = image_bytes(Image.new("RGB", (2000, 1), (0, 0, 255)), "PNG")
    # scaled to a 32-pixel shorter side it would be 64,000 x 32 = 2,048,000 pixels
    assert decode_image(strip, max_pixels=2_048_000, scaled_side=32).size == (2000, 1)
    with pytest.raises(BadImage, match=r"too elongated: 2000x1 .* 2048000 pixels, over the limit"):
        decode_image(strip, max_pixels=2_047_999, scaled_side=32)
    tall = image_bytes(Image.new("L", (3, 1000)), "PNG")  # ceil(32 * 1000 / 3) = 10,667 wide
    with pytest.raises(BadImage, match=r"is 341344 pixels"):
        decode_image(tall, max_pixels=341_343, scaled_side=32)
    assert decode_image(tall, max_pixels=341_343).size == (3, 1000)  # no model side: no limit


def test_an_image_source_is_checked_before_anything_is_listed(tmp_path, hub):
    """What the audit checks before its coverage stage: a brace pattern of shards that exist is a
    source (it was refused as a path that does not exist), a text file or a missing path is not."""
    for index in range(2):
        (tmp_path / f"{index:05d}.tar").write_bytes(b"")
    check_image_source(f"{tmp_path}/{{00000..00001}}.tar")
    check_image_source(tmp_path)
    check_image_source("hf:someorg/images")  # the hub reachable: its files are checked when opened
    with pytest.raises(InputError, match=r"1 shard\(s\) of .* do not exist, e\.g\. .*00002\.tar"):
        check_image_source(f"{tmp_path}/{{00000..00002}}.tar")
    (tmp_path / "notes.txt").write_text("no images")
    with pytest.raises(InputError, match=r"is a file but not a \.tar shard"):
        check_image_source(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="does not exist; expected an image folder"):
        check_image_source(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"split": "test"}, ["--split"]),
        ({"label_field": "class"}, ["--label-field"]),
        ({"image_column": "img", "split": "test"}, ["--image-column", "--split"]),
    ],
)
def test_an_option_a_folder_of_images_has_no_use_for_is_refused(tmp_path, registry, options, named):
    """--split, --label-field and --image-column pick from a Hugging Face dataset (the label
    field from webdataset too): given with a folder of images they were ignored, and the run
    counted what the user did not mean."""
    write_image_folder(tmp_path, {"animal": {"dog": 1, "cat": 1}})
    with pytest.raises(SettingsError, match="not apply to") as err:
        open_images(tmp_path, registry, **options)
    assert [option in str(err.value) for option in named] == [True] * len(named)
    assert "a folder of images" in str(err.value)
    assert len(open_images(tmp_path, registry, image_column="image").records) == 2  # the default


def test_a_split_of_webdataset_shards_is_refused_and_their_label_field_is_read(tmp_path, registry):
    sample = {"__key__": "0", "png": image_bytes(noise(8, 8), "PNG"), "json": b'{"class": "dog"}'}
    write_shard(tmp_path / "00000.tar", [sample])
    with pytest.raises(SettingsError, match=r"--split \(for Hugging Face.*webdataset shards"):
        open_images(tmp_path, registry, split="train")
    [record] = open_images(tmp_path, registry, label_field="class").records
    assert record.concept == "dog"


def test_an_image_column_of_other_values_is_refused_before_any_image_is_read(tmp_path, registry):
    """An integer column given as the image column was opened as file descriptors: reading
    row 0's "image" read and closed stdin, row 1's stdout, and so on."""
    import datasets

    png = image_bytes(noise(8, 8), "PNG")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "n": datasets.Value("int64"),
            "label": datasets.Value("string"),
        }
    )
    rows = {"image": [{"bytes": png, "path": None}] * 3, "n": [0, 1, 2], "label": ["cat"] * 3}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(InputError) as refused:
        open_images(tmp_path / "ds", registry, image_column="n")
    assert str(refused.value) == (
        f"{str(tmp_path / 'ds')!r}: column 'n' (--image-column) holds int64 values, not images "
        "(an Image column, file paths as text, or encoded image bytes); the image columns are "
        "image: choose one with --image-column"
    )
    os.fstat(1)  # stdout is still open


def test_an_image_column_of_encoded_bytes_or_paths_is_read(tmp_path, registry):
    import datasets

    pngs = [image_bytes(noise(8, 8, seed), "PNG") for seed in range(2)]
    for name, png in zip("ab", pngs, strict=True):
        (tmp_path / f"{name}.png").write_bytes(png)
    features = datasets.Features(
        {
            "data": datasets.Value("binary"),
            "file": datasets.Value("string"),
            "label": datasets.Value("string"),
        }
    )
    files = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    rows = {"data": pngs, "file": files, "label": ["cat", "dog"]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    for column in ("data", "file"):
        images = open_images(tmp_path / "ds", registry, image_column=column)
        assert [images.read_bytes(r) for r in images.records] == pngs


def test_a_label_column_that_holds_no_names_is_refused_naming_the_columns(tmp_path, registry):
    """An image column given as the label column was decoded whole, then each picture's repr
    listed as an unknown concept."""
    import datasets

    png = image_bytes(noise(8, 8), "PNG")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "tags": datasets.Sequence(datasets.Value("string")),
            "label": datasets.Value("string"),
        }
    )
    rows = {
        "image": [{"bytes": png, "path": None}] * 2,
        "tags": [["cat"]] * 2,
        "label": ["cat"] * 2,
    }
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    for column, held in (("image", "images"), ("tags", "lists")):
        with pytest.raises(InputError) as refused:
            open_images(tmp_path / "ds", registry, label_field=column)
        assert str(refused.value) == (
            f"{str(tmp_path / 'ds')!r}: column {column!r} (--label-field) holds {held}, not "
            "concept names (text, or class labels); columns of names: label: choose one with "
            "--label-field"
        )


def test_labels_none_of_which_names_a_concept_say_where_they_come_from_and_the_fix(
    tmp_path, registry
):
    """Labels of another kind altogether (class numbers, captions, another taxonomy's names)
    were listed one by one as unknown concepts, with no word of the column or key they came
    from nor of the option that picks another."""
    import datasets

    png = image_bytes(noise(8, 8), "PNG")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.Value("int64"),
            "name": datasets.Value("string"),
        }
    )
    rows = {"image": [{"bytes": png, "path": None}] * 3, "label": [3, 5, 3], "name": ["x"] * 3}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(InputError) as refused:
        open_images(tmp_path / "ds", registry)
    message = str(refused.value)
    assert message.startswith(
        f"no label in {tmp_path / 'ds'} names a concept of registry {registry.name!r}: the labels "
        "are column 'label' (--label-field), which holds integers without class names (cast it "
        "to a ClassLabel of the names, or choose a column of names); columns are image, label, "
        "name. The 2 labels: label '3' is no concept (2 times); label '5' is no concept"
    )
    assert message.endswith(
        "Choose the labels with --label-field, or give the registry of these concepts with "
        "--registry; see `clipaudit concepts list`"
    )
    # img2dataset's shards: a json without the key, and the caption in the .txt
    jpg = image_bytes(noise(8, 8), "JPEG")
    write_shard(
        tmp_path / "a.tar",
        [
            {
                "__key__": str(n),
                "jpg": jpg,
                "txt": f"photo {n} of a street".encode(),
                "json": json.dumps({"caption": f"photo {n} of a street", "url": "u"}).encode(),
            }
            for n in range(2)
        ],
    )
    with pytest.raises(InputError) as refused:
        open_images(tmp_path / "a.tar", registry)
    assert str(refused.value).startswith(
        f"no label in {tmp_path / 'a.tar'} names a concept of registry {registry.name!r}: the "
        "labels are the samples' .txt (img2dataset writes captions there), read where their "
        "json has no key 'concept' (--label-field); the json has keys caption, url. The 2 "
        "labels: label 'photo 0 of a street' is no concept"
    )


def test_a_label_that_is_a_concepts_synonym_names_that_concept(tmp_path, registry):
    """A pet dataset's "beagle" was no concept with a spelling suggestion at best: the concept
    that lists it as a synonym is the one meant, and is named (the label is not taken for it:
    a synonym is a caption's word, and may be another group's concept's as well)."""
    write_image_folder(tmp_path / "img", {"Animal": {"beagle": 1, "cat": 1}}, size=(8, 8))
    with pytest.raises(InputError) as raised:
        open_images(tmp_path / "img", registry)
    assert (
        "folder Animal/ 'beagle' is no concept (did you mean 'dog'? 'beagle' is a synonym of it)"
        in str(raised.value)
    )
    jpg = image_bytes(noise(8, 8), "JPEG")
    write_shard(
        tmp_path / "a.tar",
        [{"__key__": str(n), "jpg": jpg, "txt": label} for n, label in enumerate([b"cat", b"pup"])],
    )
    with pytest.raises(
        InputError,
        match=r"label 'pup' is no concept \(did you mean 'dog'\? 'pup' is a synonym of it\)",
    ):
        open_images(tmp_path / "a.tar", registry)


def test_an_image_reached_twice_in_one_group_is_counted_once(tmp_path, registry):
    """A file linked into a concept folder twice, or into two concepts of one group, and a
    shard named twice in a brace pattern, were classified and scored once per way in."""
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 1, "cat": 1}, "Color": {"red": 1}})
    dog = tmp_path / "img" / "Animal" / "dog" / "000.jpg"
    (tmp_path / "img" / "Animal" / "dog" / "001.jpg").symlink_to(dog)
    (tmp_path / "img" / "Animal" / "cat" / "001.jpg").symlink_to(dog)
    (tmp_path / "img" / "Color" / "red" / "001.jpg").symlink_to(dog)  # another group: its own
    images = open_images(tmp_path / "img", registry)
    found = sorted((r.group, r.concept, Path(r.path).relative_to(tmp_path)) for r in images.records)
    assert found == [
        ("Animal", "cat", Path("img/Animal/cat/000.jpg")),
        ("Animal", "dog", Path("img/Animal/dog/000.jpg")),
        ("Color", "red", Path("img/Color/red/000.jpg")),
        ("Color", "red", Path("img/Color/red/001.jpg")),
    ]
    assert sorted((Path(i["path"]).relative_to(tmp_path), i["reason"]) for i in images.ignored) == [
        (
            Path("img/Animal/cat/001.jpg"),
            f"the same image as {dog} (dog), read once in group Animal",
        ),
        (
            Path("img/Animal/dog/001.jpg"),
            f"the same image as {dog} (dog), read once in group Animal",
        ),
    ]
    jpg = image_bytes(noise(8, 8), "JPEG")
    write_shard(tmp_path / "0.tar", [{"__key__": "a", "jpg": jpg, "txt": b"dog"}])
    twice = open_images(str(tmp_path / "{0,0}.tar"), registry)
    assert [r.path for r in twice.records] == [f"{tmp_path / '0.tar'}/a.jpg"]


def test_a_hub_dataset_neither_cached_nor_reachable_fails_at_once_naming_the_fix(
    hub, tmp_path, monkeypatch, registry
):
    """Offline, hf:NAME spent half a minute in the hub client's retries before an error; the
    audit learnt it only after its coverage stage. A dataset in the datasets cache (which datasets
    reads offline, HF_DATASETS_OFFLINE or not) is still opened."""
    import datasets

    (tmp_path / "a.png").write_bytes(image_bytes(noise(8, 8), "PNG"))
    rows = datasets.Dataset.from_dict({"image": [str(tmp_path / "a.png")], "label": ["dog"]})
    asked = []
    monkeypatch.setattr(
        datasets, "get_dataset_split_names", lambda name, **kwargs: asked.append(name) or ["train"]
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kwargs: asked.append(name) or rows)
    hub.up = False
    for check in (open_images, lambda source, _: check_image_source(source)):
        with pytest.raises(InputError) as stopped:
            check("hf:someorg/pets", registry)
        assert str(stopped.value) == (
            f"Hugging Face dataset 'someorg/pets' is not in the datasets cache {hub.cache} "
            "(HF_DATASETS_CACHE or HF_HOME move it) and huggingface.co cannot be reached; on a "
            "machine that reaches the hub, save it with datasets' save_to_disk and give that "
            "folder as --images (images=), or run where huggingface.co can be reached"
        )
    assert asked == [] and hub.tried == ["huggingface.co"] * 2
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # HF_DATASETS_OFFLINE=1
    with pytest.raises(InputError, match=r" and HF_DATASETS_OFFLINE is set \(unset it to "):
        open_images("hf:someorg/pets", registry)
    assert asked == [] and hub.tried == ["huggingface.co"] * 2  # offline: nothing tried
    # loaded once: datasets' cache holds it prepared, as org___name/config/version/hash
    (hub.cache / "someorg___pets" / "default" / "0.0.0" / ("0" * 16)).mkdir(parents=True)
    assert [r.concept for r in open_images("hf:someorg/pets", registry).records] == ["dog"]
    check_image_source("hf:someorg/pets")
    assert asked == ["someorg/pets"] * 2 and hub.tried == ["huggingface.co"] * 2
    # a local folder that datasets loads by its path asks nothing of the hub either
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local" / "pets").mkdir(parents=True)
    open_images("hf:local/pets", registry)
    assert hub.tried == ["huggingface.co"] * 2


def test_a_hub_dataset_behind_a_mirror_names_the_mirror_it_could_not_reach(
    hub, monkeypatch, registry
):
    """With HF_ENDPOINT naming a mirror, the hub client downloads from the mirror only: that is the
    host tried, and the one the fix asks to reach, never huggingface.co."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://hf-mirror.local:8080")
    hub.up = False
    with pytest.raises(InputError) as stopped:
        check_image_source("hf:someorg/pets")
    message = str(stopped.value)
    assert " and hf-mirror.local:8080 cannot be reached; " in message
    assert message.endswith(", or run where hf-mirror.local:8080 can be reached")
    assert "huggingface.co" not in message and hub.tried == ["hf-mirror.local:8080"]


def test_a_hub_dataset_of_several_splits_is_refused_before_any_is_downloaded(
    hub, monkeypatch, registry
):
    """hf:NAME without --split downloaded every split (ImageNet's train is 140 GB) and then
    asked for one."""
    import datasets

    downloads = []
    monkeypatch.setattr(
        datasets, "get_dataset_split_names", lambda name, **kwargs: ["train", "validation"]
    )
    monkeypatch.setattr(
        datasets, "load_dataset", lambda name, **kwargs: downloads.append(kwargs) or 1 / 0
    )
    with pytest.raises(InputError) as refused:
        open_images("hf:someorg/pets", registry)
    assert str(refused.value) == (
        "'hf:someorg/pets' has splits train, validation; choose one with --split (--image-split "
        "in clipaudit audit)"
    )
    with pytest.raises(InputError) as refused:
        open_images("hf:someorg/pets", registry, split="valid")
    assert str(refused.value) == (
        "'hf:someorg/pets' has no split 'valid' (did you mean 'validation'?); splits are train, "
        "validation"
    )
    assert downloads == []


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz"])
def test_compressed_tar_shards_are_refused_saying_how_to_decompress_them(
    tmp_path, registry, suffix
):
    """Images are read in place by their offset in a shard, which a gzip stream has none of: a
    folder (or a file, or a pattern) of compressed shards is told how to decompress them, not
    reported as stray files of an image folder."""
    import gzip

    dog = image_bytes(noise(20, 10, 1), "JPEG")
    for index in range(2):
        plain = tmp_path / "plain" / f"{index:05d}.tar"
        plain.parent.mkdir(exist_ok=True)
        write_shard(plain, [{"__key__": f"{index:09d}", "jpg": dog, "txt": b"dog"}])
        packed = tmp_path / "shards" / f"{index:05d}{suffix}"
        packed.parent.mkdir(exist_ok=True)
        packed.write_bytes(gzip.compress(plain.read_bytes()))
    folder = tmp_path / "shards"
    decompress = re.escape(f"decompress them first: gunzip {folder}/*{suffix}")
    for source in (folder, folder / f"00000{suffix}", f"{folder}/{{00000..00001}}{suffix}"):
        with pytest.raises(InputError, match=rf"compressed tar shard.*\.tar shards.*{decompress}"):
            open_images(source, registry)
        with pytest.raises(InputError, match=rf"compressed tar shard.*{decompress}"):
            check_image_source(source)
    # a compressed shard beside the .tar it was decompressed into (gunzip --keep) is that shard
    for index in range(2):
        plain = (tmp_path / "plain" / f"{index:05d}.tar").read_bytes()
        (folder / f"{index:05d}.tar").write_bytes(plain)
    assert [r.concept for r in open_images(folder, registry).records] == ["dog", "dog"]
    # one left compressed would be read short, unsaid
    (folder / "00001.tar").unlink()
    with pytest.raises(InputError, match=rf"1 compressed tar shard.*00001{suffix}"):
        open_images(folder, registry)
    # an archive beside the groups of an image folder is a stray file of that folder
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 1, "cat": 1}})
    (tmp_path / "img" / f"backup{suffix}").write_bytes((folder / f"00000{suffix}").read_bytes())
    assert len(open_images(tmp_path / "img", registry).records) == 2


@pytest.mark.parametrize(
    ("compress", "kind", "suffix", "tool"),
    [
        ("gzip", "gzip", ".gz", "gunzip"),
        ("bz2", "bzip2", ".bz2", "bunzip2"),
        ("lzma", "xz", ".xz", "unxz"),
    ],
)
def test_a_compressed_shard_named_tar_is_refused_saying_what_it_is_and_how_to_decompress(
    tmp_path, registry, compress, kind, suffix, tool
):
    """A .tar.gz renamed .tar (or a download saved under the wrong name) was 'not a readable
    uncompressed tar: invalid header'; it is told apart by its first bytes, like a .tar.gz."""
    import importlib

    packer = importlib.import_module(compress)
    dog = image_bytes(noise(20, 10, 1), "JPEG")
    write_shard(tmp_path / "plain.tar", [{"__key__": "a", "jpg": dog, "txt": b"dog"}])
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "00000.tar").write_bytes((tmp_path / "plain.tar").read_bytes())
    packed = folder / "00001.tar"
    packed.write_bytes(packer.compress((tmp_path / "plain.tar").read_bytes()))
    fix = re.escape(f"mv {packed} {packed}{suffix} && {tool} {packed}{suffix}")
    expected = (
        rf"1 compressed tar shard\(s\) named \.tar, e\.g\. '{re.escape(str(packed))}' "
        rf"\({kind}-compressed\); clipaudit reads uncompressed \.tar shards.*{fix}"
    )
    for source in (folder, packed, f"{folder}/{{00000..00001}}.tar"):
        with pytest.raises(InputError, match=expected):
            check_image_source(source)
        with pytest.raises(InputError, match=expected):
            open_images(source, registry)
    # decompressed as told, the shard is read
    os.rename(packed, f"{packed}{suffix}")
    (folder / f"00001.tar{suffix}").unlink()
    packed.write_bytes((tmp_path / "plain.tar").read_bytes())
    assert len(open_images(folder, registry).records) == 2


def test_a_tar_whose_first_member_name_looks_like_a_compression_header_is_a_tar(tmp_path, registry):
    """Only the first bytes of a compressed stream are looked at where a tar has no ustar
    header: a sample named like bzip2's magic ("BZh...") is still read."""
    dog = image_bytes(noise(8, 8, 1), "JPEG")
    write_shard(tmp_path / "0.tar", [{"__key__": "BZh91AY&SY", "jpg": dog, "txt": b"dog"}])
    assert [r.concept for r in open_images(tmp_path / "0.tar", registry).records] == ["dog"]


def test_file_names_that_are_not_utf8_are_read_and_shown_escaped(tmp_path, registry):
    """A file named in another encoding (Latin-1 'é' from an old archive) stopped the listing
    with a UnicodeEncodeError; it is read, and shown with the odd byte escaped (results are
    text files, which cannot hold the raw byte)."""
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 1}})
    latin = os.fsencode(tmp_path / "img" / "Animal" / "dog") + b"/caf\xe9.jpg"
    pixels = image_bytes(noise(8, 8, 5), "JPEG")
    with open(latin, "wb") as handle:
        handle.write(pixels)
    (tmp_path / "img" / "Animal" / "dog" / "caf\u00e9.jpg").write_bytes(pixels)  # UTF-8 'é'
    images = open_images(tmp_path / "img", registry)
    shown = sorted(Path(r.path).name for r in images.records)
    assert shown == ["000.jpg", "caf\\xe9.jpg", "caf\u00e9.jpg"]
    for record in images.records:
        record.path.encode("utf-8")  # writable to results
        assert images.read_bytes(record)
    assert len({r.identity for r in images.records}) == 3
    # in a shard, a member named so
    import tarfile

    with tarfile.open(tmp_path / "0.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in ((b"caf\xe9.jpg", pixels), (b"caf\xe9.txt", b"dog")):
            info = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shard = open_images(tmp_path / "0.tar", registry)
    assert [r.path for r in shard.records] == [f"{tmp_path / '0.tar'}/caf\\xe9.jpg"]
    assert shard.read_bytes(shard.records[0]) == pixels


@pytest.mark.filterwarnings("error")  # Pillow's "Palette images with Transparency..." too
def test_transparent_images_are_shown_on_white_whatever_colour_hides_under_them():
    """A transparent pixel's colour is undefined (encoders keep or drop it), and viewers show it
    on the page's white, as img2dataset (which made the LAION and DataComp shards OpenCLIP
    trained on) flattened it; dropping the alpha showed whatever was hidden, black as often.
    Expected: c * a / 255 + 255 - a per channel, rounded."""
    colour = np.array([10, 20, 30])
    for alpha in (0, 128, 255):
        expected = np.rint(colour * alpha / 255 + 255 - alpha)
        for fmt, options in (("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {})):
            data = image_bytes(Image.new("RGBA", (4, 4), (*colour, alpha)), fmt, **options)
            got = np.asarray(decode_image(data))[0, 0].astype(int)
            assert np.abs(got - expected).max() <= 1, (fmt, alpha, got)
    grey = np.asarray(decode_image(image_bytes(Image.new("LA", (4, 4), (200, 0)), "PNG")))
    assert grey[0, 0].tolist() == [255, 255, 255]
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    palette.putpixel((1, 0), 1)
    for fmt in ("PNG", "GIF"):
        shown = np.asarray(decode_image(image_bytes(palette, fmt, transparency=0)))
        assert shown[0].tolist() == [[255, 255, 255], [255, 0, 0]], fmt
    # a palette whose entries are partly transparent (an alpha byte each), which Pillow warned
    # about in every decoding worker when converted to RGB
    partly = np.rint(np.array([255, 0, 0]) * 128 / 255 + 255 - 128)
    shown = np.asarray(decode_image(image_bytes(palette, "PNG", transparency=bytes([0, 128]))))
    assert shown[0, 0].tolist() == [255, 255, 255]
    assert np.abs(shown[0, 1].astype(int) - partly).max() <= 1
    # a PNG's colour key (tRNS in an RGB image): that colour is transparent
    keyed = Image.new("RGB", (2, 1), (0, 0, 0))
    keyed.putpixel((1, 0), (0, 0, 255))
    shown = np.asarray(decode_image(image_bytes(keyed, "PNG", transparency=(0, 0, 0))))
    assert shown[0].tolist() == [[255, 255, 255], [0, 0, 255]]


def test_image_paths_listed_twice_in_a_dataset_are_read_once_per_group(
    tmp_path, registry, monkeypatch, hub
):
    """A dataset of file paths (a CSV listing saved as a dataset) naming one file twice, under
    one concept or two of a group, classified and scored it once per row, as a file linked into
    a folder twice was; and a file changed in place kept its cached embedding (its row was its
    identity)."""
    import datasets

    for name, seed in (("a.png", 1), ("b.png", 2)):
        (tmp_path / name).write_bytes(image_bytes(noise(8, 8, seed), "PNG"))
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    rows = {"image": [a, b, a, a, a], "label": ["dog", "cat", "dog", "cat", "red"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    images = open_images(tmp_path / "ds", registry)
    source = str(tmp_path / "ds")
    assert [(r.path, r.concept) for r in images.records] == [
        (f"{source}#0", "dog"),
        (f"{source}#1", "cat"),
        (f"{source}#4", "red"),  # another group: its own
    ]
    same = f"the same image as {source}#0 (dog), read once in group Animal"
    assert images.ignored == [
        {"path": f"{source}#2", "reason": same},
        {"path": f"{source}#3", "reason": same},
    ]
    before = {r.path: r.identity for r in images.records}
    (tmp_path / "b.png").write_bytes(image_bytes(noise(8, 8, 3), "PNG"))
    after = {r.path: r.identity for r in open_images(tmp_path / "ds", registry).records}
    assert after[f"{source}#0"] == before[f"{source}#0"]
    assert after[f"{source}#1"] != before[f"{source}#1"]
    # an Image column that lists its files (an image folder loaded from the hub's cache) too
    listed = datasets.Dataset.from_dict(
        {"image": [{"bytes": None, "path": p} for p in (a, b, a)], "label": ["dog", "cat", "dog"]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    monkeypatch.setattr(datasets, "get_dataset_split_names", lambda name, **kwargs: ["train"])
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kwargs: listed)
    hub = open_images("hf:someorg/pets", registry)
    assert [r.path for r in hub.records] == ["hf:someorg/pets#0", "hf:someorg/pets#1"]
    assert [i["path"] for i in hub.ignored] == ["hf:someorg/pets#2"]


def test_shards_named_in_upper_case_are_shards(tmp_path, registry):
    """A shard written on a system that keeps names in capitals ("00000.TAR") is a shard, alone,
    in a folder or in a brace pattern, as its lower-case name would be."""
    sample = {"__key__": "000000000", "jpg": image_bytes(noise(20, 10, 1), "JPEG"),
              "json": json.dumps({"concept": "dog"}).encode()}  # fmt: skip
    write_shard(tmp_path / "00000.TAR", [sample])
    for source in (tmp_path, tmp_path / "00000.TAR", f"{tmp_path}/{{00000..00000}}.TAR"):
        images = open_images(source, registry)
        assert images.kind == "webdataset", source
        assert [(r.group, r.concept) for r in images.records] == [("Animal", "dog")]
