"""An auditor's walkthrough of zero-shot image sources as found: what a bad input says.

Each message must name the thing and the fix: a webdataset labelled by class number (``.cls``), a
shard cut off inside a sample, an iPhone photo (HEIC) saved under a ``.jpg`` name.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from clipaudit.errors import InputError
from clipaudit.images import BadImage, decode_image, open_images


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_samples_labelled_by_class_number_say_a_concept_name_is_needed(tmp_path, registry):
    """A ``.cls`` (webdataset's class index) holds a number, no concept: the run must say so,
    not that the sample has no label at all."""
    jpg = _jpeg()
    _write_tar(
        tmp_path / "shards" / "00000.tar",
        [("a.jpg", jpg), ("a.cls", b"3"), ("b.jpg", jpg), ("b.cls", b"7")],
    )
    with pytest.raises(InputError) as caught:
        open_images(tmp_path / "shards", registry)
    message = str(caught.value)
    assert "a.cls" not in message  # the sample is named, not its member
    assert "00000.tar/a" in message
    assert "class number 3 (.cls)" in message
    assert "concept's name" in message


def test_a_json_label_that_is_a_number_says_so(tmp_path, registry):
    jpg = _jpeg()
    _write_tar(
        tmp_path / "shards" / "00000.tar",
        [("a.jpg", jpg), ("a.json", json.dumps({"concept": 3}).encode())],
    )
    with pytest.raises(InputError) as caught:
        open_images(tmp_path / "shards", registry)
    message = str(caught.value)
    assert "json 'concept' is 3, a number" in message
    assert "concept's name" in message


def test_a_shard_cut_off_inside_a_sample_names_it_and_the_fix(tmp_path, registry):
    whole = tmp_path / "whole.tar"
    _write_tar(whole, [(f"{n}.jpg", _jpeg() + bytes(3000)) for n in range(3)] + [("0.txt", b"dog")])
    cut = tmp_path / "shards" / "00001.tar"
    cut.parent.mkdir()
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 100])  # inside the second image's data
    with pytest.raises(InputError) as caught:
        open_images(cut.parent, registry)
    message = str(caught.value)
    assert str(cut) in message
    assert "cut off" in message
    assert "copy or write the shard again" in message


@pytest.mark.parametrize("brand", [b"heic", b"mif1", b"heix"])
def test_a_heic_photo_named_jpg_is_skipped_saying_what_it_is_and_how_to_read_it(brand):
    # an ISO base-media file: a 24-byte ftyp box, then boxes Pillow does not read
    data = b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00mif1heic" + bytes(200)
    with pytest.raises(BadImage) as caught:
        decode_image(data)
    message = str(caught.value)
    assert "HEIC/HEIF" in message
    assert "convert it to JPEG or PNG" in message


def test_an_avif_image_this_pillow_cannot_read_is_named_as_avif_not_heic():
    # AVIF's ftyp lists mif1, a HEIF brand, among its compatible brands
    data = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(200)
    with pytest.raises(BadImage) as caught:
        decode_image(data)
    assert str(caught.value).startswith("an AVIF image, which this Pillow does not read")


def test_other_unrecognised_bytes_keep_the_plain_reason():
    with pytest.raises(
        BadImage, match=r"^not a recognised image \(corrupt, or not an image file\)$"
    ):
        decode_image(b"hello, not an image" * 10)


def test_a_concept_folder_the_registry_lacks_says_how_to_go_on(tmp_path):
    """A folder of a concept the registry does not have stops the run; the message names it
    and the ways on: rename it, move it out, or bring a registry that has it."""
    from clipaudit.registry import load_registry
    from tests.tiny_clip import write_image_folder

    write_image_folder(tmp_path, {"Color": {"red": 2, "blue": 2, "magenta": 1}}, size=(8, 8))
    with pytest.raises(InputError) as caught:
        open_images(tmp_path, load_registry("miniworld"))
    message = str(caught.value)
    assert "folder Color/ 'magenta' is no concept" in message
    assert "rename or remove those that are none" in message
    assert "--registry FILE" in message


def test_a_checkpoint_given_as_the_model_says_to_swap_them(tmp_path):
    """``--model X.safetensors --pretrained X.json``: the two are swapped."""
    from clipaudit.errors import ModelError
    from clipaudit.models import resolve_architecture
    from tests.tiny_clip import write_tiny_checkpoint

    weights = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    with pytest.raises(ModelError) as caught:
        resolve_architecture(str(weights))
    message = str(caught.value)
    assert f"{str(weights)!r} is a checkpoint file (weights), not a model" in message
    assert "give it as --pretrained" in message


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"embed_dim": 32, "vision_cfg": {}, "text_cfg": {}}\n', "is a model config (JSON)"),
        ("a photo of a {}\n", "is a text file"),
        (
            "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 6862324\n",
            "is a Git LFS pointer, not weights: fetch the weights with `git lfs pull`",
        ),
    ],
)
def test_a_text_file_given_as_weights_says_what_it_is_not_torchs_advice(tmp_path, text, said):
    from clipaudit.errors import ModelError
    from clipaudit.models import check_checkpoint

    path = tmp_path / "weights.pt"
    path.write_text(text)
    with pytest.raises(ModelError) as caught:
        check_checkpoint(str(path), "tiny")
    message = str(caught.value)
    assert said in message
    assert "not weights" in message
    assert "weights_only" not in message  # torch's advice to unpickle anything is not ours


def test_a_model_run_with_random_weights_is_said_to_be_no_trained_model(tmp_path, capsys):
    """``--pretrained`` forgotten: the model runs with seeded random weights, as documented;
    the summary says so in words, beside the '@random' of its label."""
    from clipaudit.cli import main
    from tests.tiny_clip import write_image_folder, write_tiny_checkpoint, write_tiny_config

    config = str(write_tiny_config(tmp_path))
    weights = str(write_tiny_checkpoint(tmp_path / "w.safetensors", seed=1))
    write_image_folder(tmp_path / "img", {"Color": {"red": 2, "blue": 2}}, size=(8, 8))
    common = ["--images", str(tmp_path / "img"), "--registry", "miniworld", "--no-cache"]
    common += ["--device", "cpu", "--workers", "0", "--quiet"]
    main(["zeroshot", "--model", config, "--out", str(tmp_path / "random"), *common])
    printed = " ".join(capsys.readouterr().out.split())
    assert (
        "tiny-clip@random has random weights (--pretrained none or not given): its scores "
        "are a chance baseline, not a trained model's" in printed
    )
    main(
        [
            "zeroshot",
            "--model",
            config,
            "--pretrained",
            weights,
            "--out",
            str(tmp_path / "w"),
            *common,
        ]
    )
    assert "random weights" not in capsys.readouterr().out


def test_photos_as_phones_and_browsers_save_them_are_read_or_said_unreadable(tmp_path):
    """``.jfif`` (a browser's JPEG) and ``.avif`` are images Pillow reads; an iPhone's ``.HEIC``
    is one it does not: listed with what to do, not as "not an image file extension"."""
    from clipaudit.registry import load_registry

    red = Image.new("RGB", (8, 8), (220, 20, 20))
    folder = tmp_path / "img" / "Color" / "red"
    folder.mkdir(parents=True)
    red.save(folder / "a.jfif", format="JPEG")
    red.save(folder / "b.avif", format="AVIF")
    (folder / "c.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    blue = tmp_path / "img" / "Color" / "blue"
    blue.mkdir()
    Image.new("RGB", (8, 8), (20, 20, 220)).save(blue / "d.png")
    found = open_images(tmp_path / "img", load_registry("miniworld"))
    assert sorted(Path(r.path).name for r in found.records) == ["a.jfif", "b.avif", "d.png"]
    assert found.ignored == [
        {
            "path": str(folder / "c.HEIC"),
            "reason": "a HEIC/HEIF image, which Pillow does not read; convert it to JPEG or PNG",
        }
    ]
    for record in found.records:  # and they decode
        assert decode_image(Path(record.path).read_bytes()).size == (8, 8)


def test_a_group_folder_given_as_the_images_says_to_give_the_folder_above(tmp_path):
    from clipaudit.registry import load_registry
    from tests.tiny_clip import write_image_folder

    write_image_folder(tmp_path / "img", {"Color": {"red": 1, "blue": 1}}, size=(8, 8))
    with pytest.raises(InputError) as caught:
        open_images(tmp_path / "img" / "Color", load_registry("miniworld"))
    assert str(caught.value) == (
        f"{tmp_path / 'img' / 'Color'} is the folder of group 'Color' (its folders blue, red are "
        f"its concepts); give the folder above it, {str(tmp_path / 'img')!r}, as the images: the "
        "layout is ROOT/<group>/<concept>/"
    )


# --------------------------------------------------------------------------- resuming, the summary


def _tiny_model(folder: Path, seed: int):
    from clipaudit.models import ModelSpec
    from tests.tiny_clip import write_tiny_checkpoint, write_tiny_config

    config = write_tiny_config(folder)
    return ModelSpec(str(config), str(write_tiny_checkpoint(folder / f"m{seed}.safetensors", seed)))


def _run(models, images, out, **options):
    from clipaudit.zeroshot import run_zeroshot

    options = {"cache_dir": None, "workers": 0, "device": "cpu", "progress": False, **options}
    return run_zeroshot(models, images, out, **options)


def test_the_same_image_folder_spelled_otherwise_resumes_the_run_as_first_spelled(
    tmp_path, monkeypatch
):
    """``good``, ``in/../good`` and its absolute path are one folder: a run started with one
    resumes with another (it was refused as other settings), and a model added under another
    spelling lists its images as the run's first spelling did, so that the merged predictions
    and the skipped images name each image once."""
    from tests.tiny_clip import write_image_folder

    monkeypatch.chdir(tmp_path)
    write_image_folder("good", {"Color": {"red": 2, "blue": 2}}, size=(8, 8))
    (tmp_path / "good" / "Color" / "red" / "bad.jpg").write_bytes(b"no image")
    (tmp_path / "in").mkdir()
    first, second = _tiny_model(tmp_path / "m", 1), _tiny_model(tmp_path / "m", 2)

    (tmp_path / "link").symlink_to(tmp_path / "good")
    started = _run([first], "in/../good", "run")
    for spelling in ("good", "./good/", str(tmp_path / "good"), "link"):
        again = _run([first], spelling, "run")
        assert again.reused, spelling
    both = _run([first, second], str(tmp_path / "good"), "run")
    assert not both.reused and both.models == [first.label, second.label]

    predictions = both.predictions()
    paths = {model: sorted(rows["path"]) for model, rows in predictions.groupby("model")}
    expected = sorted(
        f"in/../good/Color/{c}/{n:03d}.jpg" for c in ("red", "blue") for n in range(2)
    )
    assert paths == {first.label: expected, second.label: expected}
    assert [s["path"] for s in both.manifest["skipped_images"]] == ["in/../good/Color/red/bad.jpg"]
    assert both.manifest["settings"]["images"] == started.manifest["settings"]["images"]
    assert both.manifest["options"]["images"] == "in/../good"


def test_another_folder_is_still_refused_naming_both(tmp_path):
    from clipaudit.errors import RunFolderError
    from tests.tiny_clip import write_image_folder

    for name in ("one", "two"):
        write_image_folder(tmp_path / name, {"Color": {"red": 1, "blue": 1}}, size=(8, 8))
    model = _tiny_model(tmp_path / "m", 1)
    _run([model], tmp_path / "one", tmp_path / "run")
    with pytest.raises(RunFolderError, match=r"images: '.*one' -> '.*two'.*--overwrite"):
        _run([model], tmp_path / "two", tmp_path / "run")


def _zeroshot_printed(tmp_path, in_process, *options: str) -> str:
    """What ``clipaudit zeroshot`` prints for tmp_path/img with a tiny model and ``options``."""
    model = _tiny_model(tmp_path / "m", 1)
    code, out, err = in_process(
        "zeroshot", "--model", model.model, "--pretrained", model.pretrained,
        "--images", str(tmp_path / "img"), "--out", str(tmp_path / "run"), *options,
        "--no-cache", "--device", "cpu", "--workers", "0", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    return " ".join(out.split())


def test_the_summary_says_why_a_group_with_images_was_not_evaluated(tmp_path, in_process):
    """A group whose images are all of one concept, or whose other concept's images are all
    undecodable, is not scored: the summary names it with the reason and the fix
    (--all-concepts), apart from the registry's groups the images have none of, which are
    counted, not listed as if something had gone wrong with them."""
    from tests.tiny_clip import write_image_folder

    write_image_folder(
        tmp_path / "img",
        {"Color": {"red": 2, "blue": 2}, "Animal": {"dog": 3}, "Vehicle": {"bus": 1, "truck": 1}},
        size=(8, 8),
    )
    (tmp_path / "img" / "Vehicle" / "bus" / "000.jpg").write_bytes(b"no image")
    printed = _zeroshot_printed(tmp_path, in_process, "--registry", "cai2025")
    assert (
        "2 groups with images not evaluated: Animal: only 'dog' has images; 2 concepts are "
        "needed; Vehicle: only 'truck' has decodable images ('bus': its one image "
        "undecodable); 2 concepts are needed" in printed
    )
    assert (
        "--all-concepts (all_concepts=True) classifies the images of one concept among all"
        in printed
    )
    assert "12 groups of the registry have no images (see manifest.json)" in printed
    assert "Clothing" not in printed  # one of those: counted, not named
    assert "skipped groups" not in printed


def test_a_selected_group_without_images_is_named(tmp_path, in_process):
    from tests.tiny_clip import write_image_folder

    write_image_folder(tmp_path / "img", {"Color": {"red": 1, "blue": 1}}, size=(8, 8))
    printed = _zeroshot_printed(tmp_path, in_process, "--groups", "Color, Animal")
    assert "1 group of those selected has no images (see manifest.json): Animal" in printed
    assert "not evaluated" not in printed


def test_a_model_left_out_of_a_rerun_is_said_to_be_dropped_with_its_results(tmp_path, in_process):
    """Leaving a model out is how a failing one is dropped; its finished results go with it,
    which the summary and the manifest now say (they went unsaid)."""
    from tests.tiny_clip import write_image_folder

    write_image_folder(tmp_path / "img", {"Color": {"red": 1, "blue": 1}}, size=(8, 8))
    first, second = _tiny_model(tmp_path / "m", 1), _tiny_model(tmp_path / "m", 2)
    common = ["--images", str(tmp_path / "img"), "--out", str(tmp_path / "run"), "--no-cache"]
    common += ["--device", "cpu", "--workers", "0", "--quiet"]
    both = ["--model", first.model, "--pretrained", first.pretrained]
    both += ["--model", second.model, "--pretrained", second.pretrained]
    code, out, err = in_process("zeroshot", *both, *common)
    assert code == 0, err
    assert "dropped" not in out
    code, out, err = in_process("zeroshot", *both[:4], *common)
    assert code == 0, err
    printed = " ".join(out.split())
    assert (
        f"1 model dropped from the run (not given this time), its results deleted: "
        f"{second.label}" in printed
    )
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["dropped_models"] == [second.label]
    assert [m["label"] for m in manifest["models"]] == [first.label]
