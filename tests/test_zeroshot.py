"""Zero-shot awareness runs: hand-computed metrics, templates, the embedding cache, outputs and the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from PIL import Image

from clipaudit.errors import InputError, RunFolderError, SettingsError
from clipaudit.images import open_images
from clipaudit.models import LoadedModel, ModelSpec
from clipaudit.registry import load_registry, parse_registry
from clipaudit.zeroshot import (
    ZeroShotRun,
    ZeroShotSettings,
    class_embeddings,
    confusion_from_table,
    embed_images,
    evaluate_model,
    resolve_templates,
    run_zeroshot,
)
from tests.tiny_clip import write_image_folder, write_tiny_checkpoint, write_tiny_config

# --------------------------------------------------------------------------- a model whose every prediction is known

# Text side: each colour word is a direction in (r, g, b, other); concepts that are no colour of the
# test images point along "other", so an image (which has no "other" part) never prefers them.
COLOUR_VECTORS = {
    "red": (1, 0, 0, 0),
    "green": (0, 1, 0, 0),
    "blue": (0, 0, 1, 0),
    "orange": (1, 0.6, 0, 0),
    "yellow": (1, 1, 0, 0),
    "black": (0, 0, 0, 1),
    "white": (0.01, 0, 0, 1),
    "pink": (0, 0.01, 0, 1),
    "gray": (0, 0, 0.01, 1),
    "brown": (0.01, 0.01, 0, 1),
}


class ColourModel(torch.nn.Module):
    """Image embedding = mean (r, g, b, 0); text embedding = the colour word's vector."""

    def __init__(self):
        super().__init__()
        self.images_encoded = 0

    def encode_image(self, images, normalize=False):
        self.images_encoded += len(images)
        features = torch.cat([images.mean(dim=(2, 3)), torch.zeros(len(images), 1)], dim=1)
        return torch.nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_text(self, vectors, normalize=False):
        return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors


class ColourTokenizer:
    """Maps each text to the vector of the colour word it contains; remembers the texts it saw."""

    def __init__(self):
        self.texts: list[str] = []

    def __call__(self, texts):
        self.texts += texts
        return torch.tensor(
            [
                next(
                    v
                    for word, v in COLOUR_VECTORS.items()
                    if word in text.split() or f"{word}." in text.split()
                )
                for text in texts
            ],
            dtype=torch.float32,
        )


def colour_model() -> LoadedModel:
    from torchvision.transforms import ToTensor

    return LoadedModel(
        label="colour",
        model=ColourModel(),
        preprocess=ToTensor(),
        tokenizer=ColourTokenizer(),
        device=torch.device("cpu"),
        precision="fp32",
        image_size=8,
        identity={"model": "colour"},
        info={"label": "colour", "device": "cpu", "precision": "fp32"},
    )


def write_colour_images(root: Path) -> None:
    """10 images of the Color group; the three marked * are misleading on purpose."""
    layout = {
        "red": [(255, 0, 0)] * 3
        + [(255, 153, 0)],  # *orange-looking red: red among red/green/blue, orange among all
        "green": [(0, 255, 0)] * 2 + [(255, 0, 0)],  # *looks red
        "blue": [(0, 0, 255)] * 2 + [(0, 200, 40)],  # *looks green
    }
    for concept, colours in layout.items():
        folder = root / "Color" / concept
        folder.mkdir(parents=True)
        for number, colour in enumerate(colours):
            Image.new("RGB", (8, 8), colour).save(folder / f"{number}.png")


@pytest.fixture()
def colour_images(tmp_path, registry):
    write_colour_images(tmp_path / "img")
    return open_images(tmp_path / "img", registry, groups=["Color"])


def test_metrics_on_a_hand_computed_case(colour_images, registry):
    result = evaluate_model(colour_model(), colour_images, registry.select(["Color"]))
    # predictions: red 4/4 right; green 2 right + 1 as red; blue 2 right + 1 as green
    # red   P = 4/5, R = 1,   F1 = 8/9
    # green P = 2/3, R = 2/3, F1 = 2/3
    # blue  P = 1,   R = 2/3, F1 = 4/5
    scores = result.concepts.set_index("concept")
    assert scores.loc["red", ["precision", "recall", "f1", "support"]].tolist() == pytest.approx(
        [4 / 5, 1, 8 / 9, 4]
    )
    assert scores.loc["green", ["precision", "recall", "f1"]].tolist() == pytest.approx(
        [2 / 3, 2 / 3, 2 / 3]
    )
    assert scores.loc["blue", ["precision", "recall", "f1"]].tolist() == pytest.approx(
        [1, 2 / 3, 4 / 5]
    )
    group = result.groups.iloc[0]
    assert group["macro_f1"] == pytest.approx((8 / 9 + 2 / 3 + 4 / 5) / 3)
    assert group["accuracy"] == pytest.approx(8 / 10)
    assert (group["n_images"], group["n_concepts"]) == (10, 3)
    # candidates are only the concepts with images: red, blue, green (registry order)
    assert set(result.predictions["predicted"]) == {"red", "green", "blue"}
    assert result.predictions["top5"].map(len).eq(3).all()
    matrix = result.confusions["Color"]
    assert (
        matrix.loc["green", "red"] == 1
        and matrix.loc["blue", "green"] == 1
        and matrix.loc["red", "red"] == 4
    )
    assert [s["concept"] for s in result.skipped_concepts] == [
        "yellow",
        "black",
        "white",
        "orange",
        "pink",
        "gray",
        "brown",
    ]


def test_all_concepts_makes_distractors_errors_never_labels(colour_images, registry):
    result = evaluate_model(
        colour_model(), colour_images, registry.select(["Color"]), all_concepts=True
    )
    # now "orange" competes: the orange-looking red image is predicted orange, an error for red,
    # and orange (no images) gets no row of its own
    # red   P = 3/4, R = 3/4; green and blue as before
    scores = result.concepts.set_index("concept")
    assert sorted(scores.index) == ["blue", "green", "red"]
    assert scores.loc["red", ["precision", "recall", "f1"]].tolist() == pytest.approx(
        [3 / 4, 3 / 4, 3 / 4]
    )
    group = result.groups.iloc[0]
    assert group["macro_f1"] == pytest.approx((3 / 4 + 2 / 3 + 4 / 5) / 3)
    assert group["accuracy"] == pytest.approx(7 / 10)
    assert group["n_concepts"] == 3
    assert (result.predictions["predicted"] == "orange").sum() == 1
    assert result.predictions["top5"].map(len).eq(5).all()
    matrix = result.confusions["Color"]
    assert list(matrix.index) == ["red", "blue", "green"] and "orange" in matrix.columns
    assert matrix.loc["red", "orange"] == 1


def test_a_concept_embedding_averages_all_its_prompt_and_template_texts():
    registry = parse_registry(
        "groups:\n  - name: Color\n    category: common\nconcepts:\n"
        "  - {name: red, group: Color, gloss: g, synonyms: [red], prompts: [red, yellow]}\n"
        "  - {name: green, group: Color, gloss: g, synonyms: [green]}\n"
    )
    loaded = colour_model()
    weights = class_embeddings(loaded, registry.concepts, ["{}", "the {} one"], bare_names=False)
    # texts: red, the red one, yellow, the yellow one -> (1,0,0,0) twice and (1,1,0,0)/sqrt 2 twice
    red = np.array([1, 0, 0, 0]) + np.array([1, 1, 0, 0]) / np.sqrt(2)
    np.testing.assert_allclose(weights[0], red / np.linalg.norm(red), rtol=1e-6)
    np.testing.assert_allclose(weights[1], [0, 1, 0, 0], atol=1e-7)
    bare = class_embeddings(loaded, registry.concepts, ["{}"], bare_names=True)
    np.testing.assert_allclose(bare[0], [1, 0, 0, 0], atol=1e-7)


def test_templates_none_uses_bare_names_and_group_templates_apply_otherwise(
    colour_images, tmp_path
):
    registry = parse_registry(
        "groups:\n  - name: Color\n    category: common\n    templates: ['a {} thing', 'the colour {}']\n"
        "concepts:\n"
        + "".join(
            f"  - name: {name}\n    group: Color\n    gloss: g\n    synonyms: [{name}]\n"
            f"    prompts: [{name}{', ' + name + ' hue' if name == 'red' else ''}]\n"
            for name in ("red", "green", "blue")
        )
    )
    bare = colour_model()
    evaluate_model(bare, colour_images, registry, templates="none")
    assert sorted(bare.tokenizer.texts) == ["blue", "green", "red"]
    grouped = colour_model()
    evaluate_model(grouped, colour_images, registry, templates="ensemble")
    assert sorted(grouped.tokenizer.texts) == sorted(
        [f"a {p} thing" for p in ("red", "red hue", "green", "blue")]
        + [f"the colour {p}" for p in ("red", "red hue", "green", "blue")]
    )
    template_file = tmp_path / "templates.txt"
    template_file.write_text("# CLIP_benchmark style\nart of a {c}.\n\na photo of the {}.\n")
    assert resolve_templates(str(template_file)) == ("art of a {}.", "a photo of the {}.")
    assert resolve_templates("simple") == ("a photo of a {}.",)
    ensemble = resolve_templates("ensemble")
    assert (
        len(ensemble) == 80
        and "a photo of a {}." in ensemble
        and all(t.count("{}") == 1 for t in ensemble)
    )
    with pytest.raises(SettingsError, match="none, simple, ensemble or a text file"):
        resolve_templates("fancy")
    # a file that is not there is said to be none, and a set's name misspelt is named
    with pytest.raises(SettingsError, match=r"'nofile\.txt' \(no set's name and no file\)"):
        resolve_templates("nofile.txt")
    with pytest.raises(SettingsError, match=r"no file \(did you mean 'ensemble'\?\)"):
        resolve_templates("ensamble")
    with pytest.raises(SettingsError, match=r"\(a folder\)"):
        resolve_templates(str(template_file.parent))
    # every template formats with the concept alone, checked before any model loads
    for bad in ("a photo of a {} in {style}.", "a {} photo :{", "a photo of {c} and {0}"):
        template_file.write_text(f"a photo of a {{}}.\n{bad}\n")
        with pytest.raises(SettingsError, match="each with '\\{\\}' once"):
            resolve_templates(str(template_file))


# --------------------------------------------------------------------------- runs with the tiny OpenCLIP model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    return {
        "config": str(write_tiny_config(folder)),
        "a": str(write_tiny_checkpoint(folder / "a.safetensors", seed=1)),
        "b": str(write_tiny_checkpoint(folder / "b.pt", seed=2)),
    }


def run_for(tiny, tmp_path, **changes) -> ZeroShotRun:
    """A zero-shot run of the tiny model on ``tmp_path/img`` into ``tmp_path/run``."""
    values = dict(
        models=(ModelSpec(tiny["config"], tiny["a"]),),
        images=str(tmp_path / "img"),
        out=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        workers=0,
        device="cpu",
        batch_size=8,
        progress=False,
    )
    return run_zeroshot(**{**values, **changes})


def count_encoded_images(monkeypatch) -> list[int]:
    """Wrap load_model so every model's encode_image counts the images it is given."""
    import clipaudit.zeroshot as zeroshot

    counts: list[int] = []
    real_load = zeroshot.load_model

    def load(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        encode = loaded.model.encode_image
        counts.append(0)

        def counting(images, *a, **k):
            counts[-1] += len(images)
            return encode(images, *a, **k)

        loaded.model.encode_image = counting
        return loaded

    monkeypatch.setattr(zeroshot, "load_model", load)
    return counts


def test_a_killed_encoding_resumes_from_what_it_flushed_to_the_cache(colour_images, tmp_path):
    from clipaudit.embedding_cache import EmbeddingCache

    loaded = colour_model()
    encode = loaded.model.encode_image

    def dies_on_third_batch(images, **kwargs):
        if loaded.model.images_encoded >= 4:
            raise KeyboardInterrupt
        return encode(images, **kwargs)

    loaded.model.encode_image = dies_on_third_batch
    with pytest.raises(KeyboardInterrupt):
        embed_images(
            loaded, colour_images, cache=EmbeddingCache(tmp_path, "k"), batch_size=2, flush_every=2
        )
    loaded.model.encode_image = encode
    resumed = embed_images(loaded, colour_images, cache=EmbeddingCache(tmp_path, "k"), batch_size=2)
    assert (resumed.n_cached, resumed.n_encoded) == (4, 6)
    assert loaded.model.images_encoded == 4 + 6
    fresh = embed_images(colour_model(), colour_images)
    np.testing.assert_array_equal(resumed.features, fresh.features)


def test_an_interrupted_encoding_keeps_what_it_encoded_since_the_last_flush(
    colour_images, tmp_path
):
    from clipaudit.embedding_cache import EmbeddingCache

    loaded = colour_model()
    encode = loaded.model.encode_image

    def interrupted_on_third_batch(images, **kwargs):
        if loaded.model.images_encoded >= 4:
            raise KeyboardInterrupt  # Ctrl-C long before the 4096 images of a periodic flush
        return encode(images, **kwargs)

    loaded.model.encode_image = interrupted_on_third_batch
    with pytest.raises(KeyboardInterrupt):
        embed_images(loaded, colour_images, cache=EmbeddingCache(tmp_path, "k"), batch_size=2)
    loaded.model.encode_image = encode
    resumed = embed_images(loaded, colour_images, cache=EmbeddingCache(tmp_path, "k"), batch_size=2)
    assert (resumed.n_cached, resumed.n_encoded) == (4, 6)
    np.testing.assert_array_equal(
        resumed.features, embed_images(colour_model(), colour_images).features
    )


def test_running_out_of_device_memory_names_the_batch_size_and_keeps_the_encoded(
    colour_images, tmp_path
):
    """A large model's batch fills the GPU: torch's OutOfMemoryError was a traceback."""
    from clipaudit.embedding_cache import EmbeddingCache

    loaded = colour_model()
    encode = loaded.model.encode_image

    def out_of_memory_on_third_batch(images, **kwargs):
        if loaded.model.images_encoded >= 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(images, **kwargs)

    loaded.model.encode_image = out_of_memory_on_third_batch
    with pytest.raises(
        SettingsError,
        match=r"^cpu ran out of memory encoding images with colour in batches of 8; lower "
        r"--batch-size \(e\.g\. 2\) and run the same command again; the images encoded so far "
        r"are cached$",
    ):
        embed_images(loaded, colour_images, cache=EmbeddingCache(tmp_path, "k"), batch_size=8)
    with pytest.raises(SettingsError, match=r"\(e\.g\. 1\) and run the same command again$"):
        embed_images(loaded, colour_images, batch_size=2)  # no cache: nothing said kept
    resumed = embed_images(colour_model(), colour_images, cache=EmbeddingCache(tmp_path, "k"))
    assert (resumed.n_cached, resumed.n_encoded) == (8, 2)  # the first batch of 8 was kept


def test_cached_embeddings_are_reused_across_templates_and_registries(tiny, tmp_path, monkeypatch):
    write_image_folder(
        tmp_path / "img", {"Animal": {"dog": 3, "cat": 3}, "Color": {"red": 2, "blue": 2}}
    )
    counts = count_encoded_images(monkeypatch)
    first = run_for(tiny, tmp_path)
    assert counts == [10]
    again = run_for(tiny, tmp_path, out=tmp_path / "run2")
    assert counts == [10, 0]
    pd.testing.assert_frame_equal(first.concepts, again.concepts)
    own = tmp_path / "own.yaml"
    own.write_text(
        Path(load_registry().path).read_text().replace("registry: cai2025", "registry: mine")
    )
    other = run_for(tiny, tmp_path, out=tmp_path / "run3", templates="ensemble", registry=str(own))
    assert counts == [10, 0, 0]
    assert other.manifest["models"][0]["n_cached"] == 10
    touched = next((tmp_path / "img" / "Animal" / "dog").iterdir())
    os.utime(touched, ns=(1, 1))  # an edited image (new mtime) is encoded again; the rest is not
    run_for(tiny, tmp_path, out=tmp_path / "run4")
    assert counts == [10, 0, 0, 1]
    run_for(tiny, tmp_path, out=tmp_path / "run5", cache_dir=None)
    assert counts[-1] == 10


def test_a_run_writes_every_output_and_reports_what_it_skipped(tiny, tmp_path):
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 3, "cat": 2}, "Food": {"pizza": 2}})
    (tmp_path / "img" / "Animal" / "cat" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 corrupt")
    (tmp_path / "img" / "Animal" / "horse").mkdir()
    (tmp_path / "img" / "Animal" / "horse" / "empty.png").write_bytes(b"")
    run = run_for(
        tiny,
        tmp_path,
        groups=("Animal", "Food"),
        models=(
            ModelSpec(tiny["config"], tiny["a"]),
            ModelSpec(tiny["config"], tiny["b"]),
        ),
    )
    out = tmp_path / "run"
    groups = pd.read_csv(out / "groups.csv")
    assert list(groups.columns) == [
        "model",
        "group",
        "category",
        "macro_f1",
        "accuracy",
        "n_images",
        "n_concepts",
        "n_candidates",
        "chance",
    ]
    assert groups[["model", "group", "n_images", "n_concepts", "n_candidates"]].values.tolist() == [
        ["tiny-clip@a", "Animal", 5, 2, 2],
        ["tiny-clip@b", "Animal", 5, 2, 2],
    ]
    # a uniform guess between dog (3 images) and cat (2): F1 2p / (2p + 1), (6/11 + 4/9) / 2
    assert groups["chance"].tolist() == pytest.approx([49 / 99] * 2)
    concepts = pd.read_csv(out / "concepts.csv")
    assert list(concepts.columns) == [
        "model",
        "group",
        "concept",
        "precision",
        "recall",
        "f1",
        "support",
    ]
    assert concepts.groupby("model")["support"].sum().tolist() == [5, 5]
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert {"model", "path", "group", "concept", "predicted", "top5", "top5_scores"} <= set(
        predictions.columns
    )
    assert len(predictions) == 10 and predictions["top5"].map(len).eq(2).all()
    accuracy = predictions.groupby("model")["correct"].mean()
    assert groups.set_index("model")["accuracy"].to_dict() == pytest.approx(accuracy.to_dict())
    for model in ("tiny-clip@a", "tiny-clip@b"):
        table = pd.read_csv(
            out / "confusion" / model / "Animal.csv", index_col=0
        )  # as pandas writes
        assert table.to_numpy().sum() == 5
        assert (out / "confusion" / model / "Animal.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "zeroshot" and manifest["status"] == "complete"
    assert sorted(
        (Path(s["path"]).name, s["reason"].split(" ")[0]) for s in manifest["skipped_images"]
    ) == [
        ("bad.jpg", "undecodable"),
        ("empty.png", "empty"),
    ]
    assert manifest["skipped_concepts"][0] == {
        "group": "Animal",
        "concept": "horse",
        "reason": "its one image undecodable",
    }
    assert {
        "group": "Food",
        "reason": "only 'pizza' has images; 2 concepts are needed",
    } in manifest["skipped_groups"]
    first = manifest["models"][0]
    assert first["checkpoint_sha256"] and first["precision"] == "fp32" and first["device"] == "cpu"
    assert manifest["templates"]["setting"] == "none" and manifest["versions"]["open_clip_torch"]
    assert list(run.macro_f1_table().columns) == ["tiny-clip@a", "tiny-clip@b"]


def test_a_complete_run_given_fewer_models_holds_only_those(tiny, tmp_path):
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 1, "cat": 1}})
    both = (ModelSpec(tiny["config"], tiny["a"]), ModelSpec(tiny["config"], tiny["b"]))
    run_for(tiny, tmp_path, models=both)
    fewer = run_for(tiny, tmp_path, models=both[1:])
    assert fewer.models == ["tiny-clip@b"] and not fewer.reused
    assert pd.read_csv(tmp_path / "run" / "groups.csv")["model"].tolist() == ["tiny-clip@b"]
    assert run_for(tiny, tmp_path, models=both[1:]).reused  # now unchanged


def test_run_folders_of_other_kinds_are_refused(tiny, tmp_path):
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 1, "cat": 1}})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text('{"kind": "coverage"}')
    with pytest.raises(RunFolderError, match="holds a coverage run"):
        run_for(tiny, tmp_path)
    (tmp_path / "run" / "manifest.json").unlink()
    (tmp_path / "run" / "mine.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="not empty but holds no clipaudit run"):
        run_for(tiny, tmp_path)
    with pytest.raises(SettingsError, match="the same model is given twice"):
        run_for(tiny, tmp_path, models=(ModelSpec(tiny["config"], tiny["a"]),) * 2)


def test_cli_runs_several_models_side_by_side(tiny, tmp_path, capsys):
    from clipaudit.cli import main

    write_image_folder(tmp_path / "img", {"Color": {"red": 2, "green": 2}})
    args = [
        "zeroshot",
        "--model",
        tiny["config"],
        "--pretrained",
        tiny["a"],
        "--model",
        tiny["config"],
        "--pretrained",
        "none",
        "--images",
        str(tmp_path / "img"),
        "--out",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--device",
        "cpu",
        "--workers",
        "1",
        "--templates",
        "simple",
        "--all-concepts",
        "--quiet",
    ]
    main(args)
    printed = capsys.readouterr().out
    assert "tiny-clip@a" in printed and "tiny-clip@random" in printed and "Color" in printed
    groups = pd.read_csv(tmp_path / "run" / "groups.csv")
    assert groups["model"].tolist() == ["tiny-clip@a", "tiny-clip@random"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["settings"]["all_concepts"] is True and manifest["options"]["workers"] == 1
    assert manifest["templates"]["by_group"]["Color"] == ["a photo of a {}."]
    with pytest.raises(SystemExit) as exited:
        main(
            [
                *args[:5],
                "--model",
                tiny["config"],
                "--images",
                str(tmp_path / "img"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: got 2 --model but 1 --pretrained; give one --pretrained per --model (use 'none' for random "
        "weights) or none at all"
    ]


def test_the_summary_table_shows_a_label_from_a_file_name_inert(tiny, tmp_path, capsys, recwarn):
    """A model's label is its checkpoint's file name: an escape sequence in it went to the
    terminal through the table (which clears it, here), though printed lines are made inert."""
    import shutil

    from clipaudit.cli import main

    write_image_folder(tmp_path / "img", {"Color": {"red": 1, "green": 1}})
    checkpoint = shutil.copyfile(tiny["a"], tmp_path / "x\x1b[2Jy.safetensors")
    images, out = str(tmp_path / "img"), str(tmp_path / "run")
    options = ["--no-cache", "--device", "cpu", "--workers", "0", "--quiet"]
    main(
        ["zeroshot", "-m", tiny["config"], "-p", str(checkpoint), "-i", images, "-o", out, *options]
    )
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "tiny-clip@x [2Jy" in printed
    assert not [w for w in recwarn if "missing from font" in str(w.message)]  # the figure's title


def test_other_settings_are_refused_unless_overwritten_and_models_resume(
    tiny, tmp_path, monkeypatch
):
    from clipaudit.runs import load_run

    write_image_folder(tmp_path / "img", {"Color": {"red": 2, "green": 2}})
    counts = count_encoded_images(monkeypatch)
    first = run_for(tiny, tmp_path, cache_dir=None)
    again = run_for(tiny, tmp_path, cache_dir=None, batch_size=2, workers=1)  # not results
    assert again.reused and counts == [4]
    with pytest.raises(RunFolderError, match=r"templates: 'none' -> 'simple'"):
        run_for(tiny, tmp_path, templates="simple", cache_dir=None)
    assert not (tmp_path / "run" / ".lock").exists()
    two = (ModelSpec(tiny["config"], tiny["a"]), ModelSpec(tiny["config"], tiny["b"]))
    # models are the run's units: a second model joins, the first one's results are reused
    both = run_for(tiny, tmp_path, models=two, cache_dir=None)
    assert counts == [4, 4] and both.models == ["tiny-clip@a", "tiny-clip@b"]
    pd.testing.assert_frame_equal(
        both.groups[both.groups["model"] == "tiny-clip@a"].reset_index(drop=True), first.groups
    )
    simple = run_for(tiny, tmp_path, templates="simple", cache_dir=None, overwrite=True)
    assert counts == [4, 4, 4] and simple.manifest["templates"]["setting"] == "simple"
    loaded = load_run(tmp_path / "run")
    pd.testing.assert_frame_equal(loaded.groups, simple.groups)
    assert loaded.models == ["tiny-clip@a"] and "tiny-clip@a" in repr(loaded)
    assert first.groups["macro_f1"].notna().all()


def test_a_run_resumed_where_auto_is_another_precision_redoes_the_models_done_before(
    tiny, tmp_path, monkeypatch
):
    """A run begun on a GPU (auto: bf16) and resumed on a CPU (auto: fp32) kept the bf16
    results beside the fp32 ones, the manifest naming one precision for all."""
    import clipaudit.models as models
    import clipaudit.zeroshot as zeroshot

    write_image_folder(tmp_path / "img", {"Color": {"red": 2, "green": 2}})
    real = models.resolve_precision

    def as_on_a_gpu(precision, device):
        return "bf16" if precision == "auto" else real(precision, device)

    for module in (models, zeroshot):
        monkeypatch.setattr(module, "resolve_precision", as_on_a_gpu)
    run_for(tiny, tmp_path, cache_dir=None)  # the first model, then the machine was lost
    for module in (models, zeroshot):
        monkeypatch.setattr(module, "resolve_precision", real)
    counts = count_encoded_images(monkeypatch)
    two = (ModelSpec(tiny["config"], tiny["a"]), ModelSpec(tiny["config"], tiny["b"]))
    both = run_for(tiny, tmp_path, models=two, cache_dir=None)
    assert counts == [4, 4]  # the first model again, at this machine's precision
    assert [m["precision"] for m in both.manifest["models"]] == ["fp32", "fp32"]


def test_a_run_where_every_image_failed_is_failed(tiny, tmp_path, capsys):
    from clipaudit.errors import RunFailedError

    for concept in ("red", "green"):
        folder = tmp_path / "img" / "Color" / concept
        folder.mkdir(parents=True)
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(RunFailedError, match=r"all 2 images failed, e\.g\. .*: undecodable"):
        run_for(tiny, tmp_path)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "all 2 images failed" in manifest["reason"]
    line = cli_error(
        capsys,
        "zeroshot",
        "--model",
        tiny["config"],
        "--images",
        str(tmp_path / "img"),
        "--out",
        str(tmp_path / "cli"),
        "--no-cache",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--quiet",
    )  # exit 2 and one line on stderr
    assert line.startswith(
        "error: no group could be evaluated (all 2 images failed, e.g. "
        f"{tmp_path / 'img' / 'Color' / 'green' / 'broken.jpg'}: undecodable"
    )


def test_a_model_whose_every_image_failed_fails_the_run_beside_a_good_one(tiny, tmp_path):
    """Weights that make every embedding NaN leave that model no result: the run is failed,
    naming it, not complete with the other model's column alone."""
    from safetensors.torch import save_file

    from clipaudit.errors import RunFailedError
    from tests.tiny_clip import tiny_state_dict

    broken = tmp_path / "nan.safetensors"
    save_file(
        {
            k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v).contiguous()
            for k, v in tiny_state_dict(seed=4).items()
        },
        str(broken),
    )
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 2, "cat": 2}}, size=(8, 8))
    good = ModelSpec(tiny["config"], tiny["a"])
    both = (good, ModelSpec(tiny["config"], str(broken)))
    with pytest.raises(
        RunFailedError,
        match=r"model tiny-clip@nan evaluated no group \(4 of 4 images failed, e.g. .*not "
        r"finite.*leave it out and run again",
    ):
        run_for(tiny, tmp_path, models=both, cache_dir=None)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "tiny-clip@nan" in manifest["reason"]
    alone = run_for(tiny, tmp_path, models=(good,), cache_dir=None)  # left out: complete
    assert alone.manifest["status"] == "complete" and alone.models == ["tiny-clip@a"]


@pytest.mark.gpu
def test_cuda_bf16_embeddings_agree_with_cpu_fp32(tiny, tmp_path):
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 8, "cat": 8}}, size=(64, 48))
    cpu = run_for(tiny, tmp_path, cache_dir=None)
    gpu = run_for(
        tiny,
        tmp_path,
        out=tmp_path / "gpu",
        device="cuda",
        precision="auto",
        workers=2,
        cache_dir=None,
    )
    assert gpu.manifest["device"].startswith("cuda") and gpu.manifest["precision"] in (
        "bf16",
        "fp16",
    )
    agree = (
        pd.read_parquet(tmp_path / "run" / "predictions.parquet")["predicted"]
        == pd.read_parquet(tmp_path / "gpu" / "predictions.parquet")["predicted"]
    ).mean()
    assert agree >= 0.9
    assert (
        np.isfinite(gpu.groups["macro_f1"]).all()
        and cpu.groups["n_images"].tolist() == gpu.groups["n_images"].tolist()
    )


def test_the_cache_is_bounded_and_evicts_the_least_recently_used_shards(tmp_path):
    from clipaudit.embedding_cache import EmbeddingCache

    rows = np.ones((10, 25), dtype=np.float32)  # 1,000 bytes of embeddings per shard
    first = EmbeddingCache(tmp_path, "model-a" * 5, max_bytes=10**9)
    first.put([f"a{i}" for i in range(10)], rows)
    os.utime(next((tmp_path / ("model-a" * 5)[:32]).glob("*.emb.npy")), ns=(1, 1))  # long ago
    second = EmbeddingCache(tmp_path, "model-b" * 5, max_bytes=10**9)
    second.put([f"b{i}" for i in range(10)], rows)
    size = sum(p.stat().st_size for p in tmp_path.glob("*/*.npy"))
    # a third shard that does not fit beside both: the least recently used one (model a's) goes
    third = EmbeddingCache(tmp_path, "model-b" * 5, max_bytes=size)
    third.put([f"c{i}" for i in range(10)], rows)
    assert len(EmbeddingCache(tmp_path, "model-a" * 5)) == 0
    assert len(EmbeddingCache(tmp_path, "model-b" * 5)) == 20
    assert sum(p.stat().st_size for p in tmp_path.glob("*/*.npy")) <= size


def test_damaged_cache_shards_are_dropped_and_encoded_again(tmp_path):
    from clipaudit.embedding_cache import EmbeddingCache

    rows = np.arange(20, dtype=np.float32).reshape(4, 5)
    cache = EmbeddingCache(tmp_path, "model", max_bytes=10**9)
    cache.put(["a", "b"], rows[:2])
    cache.put(["c", "d"], rows[2:])
    first, second = sorted((tmp_path / "model").glob("*.emb.npy"))
    first.write_bytes(first.read_bytes()[:-8])  # truncated
    np.save(second, np.zeros((1, 5), dtype=np.float32))  # one row for two identities
    reopened = EmbeddingCache(tmp_path, "model")
    assert len(reopened) == 0 and not list((tmp_path / "model").glob("*.npy"))
    reopened.put(["a"], rows[:1])
    found, vectors = EmbeddingCache(tmp_path, "model").get(["a", "c"])
    assert found == [0] and vectors.tolist() == rows[:1].tolist()


def test_the_cache_key_holds_what_decides_the_embeddings_and_the_refusals():
    from clipaudit.zeroshot import cache_key

    model = colour_model()
    keys = {cache_key(model, False, None), cache_key(model, True, None)}
    keys |= {cache_key(model, False, 10), cache_key(model, False, 10**8)}
    assert len(keys) == 4


@pytest.mark.parametrize("value", ["20G", "-1", "nan", "inf"])
def test_a_bad_cache_size_in_the_environment_is_named(monkeypatch, value):
    from clipaudit.embedding_cache import default_max_bytes

    monkeypatch.setenv("CLIPAUDIT_CACHE_MAX_GB", value)
    with pytest.raises(SettingsError, match=f"CLIPAUDIT_CACHE_MAX_GB must be a number.*{value!r}"):
        default_max_bytes()
    monkeypatch.setenv("CLIPAUDIT_CACHE_MAX_GB", "0.5")
    assert default_max_bytes() == 1 << 29


def test_an_image_folder_has_one_spelling_in_the_runs_settings():
    spec = (ModelSpec("ViT-B-32", "openai"),)
    spelled = {ZeroShotSettings(models=spec, images=x).images for x in ("img", "img/", "./img")}
    assert spelled == {"img"}
    assert ZeroShotSettings(models=spec, images="hf://datasets/o/n").images == "hf://datasets/o/n"


def test_confusion_files_of_names_a_slug_makes_alike_stay_apart(tiny, tmp_path):
    """Groups with dots ("Mr. Men", "Era 1.5") or that a slug makes alike ("Größe", "Grüße"),
    and two models whose labels slug alike, each keep their own confusion matrix."""
    import shutil

    groups = {
        "Mr. Men": ("tickle", "bump"),
        "Era 1.5": ("early", "late"),
        "Größe": ("big", "small"),
        "Grüße": ("hello", "bye"),
    }  # fmt: skip
    registry = tmp_path / "names.yaml"
    registry.write_text(
        "groups:\n"
        + "".join(f"  - name: {g}\n    category: common\n" for g in groups)
        + "concepts:\n"
        + "".join(
            f"  - name: {c}\n    group: {g}\n    gloss: g\n    synonyms: [{c}]\n"
            for g, concepts in groups.items()
            for c in concepts
        ),
        encoding="utf-8",
    )
    write_image_folder(tmp_path / "img", {g: dict.fromkeys(c, 2) for g, c in groups.items()})
    shutil.copyfile(tiny["a"], tmp_path / "ep 1.safetensors")
    shutil.copyfile(tiny["b"], tmp_path / "ep_1.pt")
    models = tuple(
        ModelSpec(tiny["config"], str(tmp_path / n)) for n in ("ep 1.safetensors", "ep_1.pt")
    )
    run = run_for(tiny, tmp_path, models=models, registry=str(registry))
    assert run.models == ["tiny-clip@ep 1", "tiny-clip@ep_1"]
    predictions = run.predictions()
    for model in run.models:
        for group, concepts in groups.items():
            matrix = run.confusion(model, group)
            assert list(matrix.index) == list(concepts)
            mine = predictions[(predictions["model"] == model) & (predictions["group"] == group)]
            assert int(matrix.to_numpy().sum()) == len(mine) == 4
            expected = pd.crosstab(mine["concept"], mine["predicted"])
            for true, row in expected.iterrows():
                for predicted, n in row.items():
                    assert matrix.loc[true, predicted] == n


def test_concepts_named_as_the_confusion_tables_columns_keep_their_counts(tiny, tmp_path):
    """A concept named "true" (the label column runs used to write), "model" or "predicted" (name
    columns a table reader keeps as text) or "NA" runs, and its confusion matrix reads back as
    integer counts, from this run's files and from files as older runs wrote them."""
    concepts = ["true", "false", "model", "predicted", "NA"]
    registry = tmp_path / "truth.yaml"
    registry.write_text(
        "groups:\n  - name: Truth\n    category: common\nconcepts:\n"
        + "".join(
            f"  - name: '{c}'\n    group: Truth\n    gloss: g\n    synonyms: ['{c}']\n"
            for c in concepts
        ),
        encoding="utf-8",
    )
    write_image_folder(tmp_path / "img", {"Truth": dict.fromkeys(concepts, 2)})
    run = run_for(tiny, tmp_path, registry=str(registry))
    [model] = run.models
    predictions = run.predictions()
    expected = (
        pd.crosstab(predictions["concept"], predictions["predicted"])
        .reindex(index=concepts, columns=concepts, fill_value=0)
        .to_numpy()
    )
    matrix = run.confusion(model, "Truth")
    assert list(matrix.index) == list(matrix.columns) == concepts
    assert (matrix.dtypes == np.int64).all() and (matrix.to_numpy() == expected).all()
    path = run.out / "confusion" / model / "Truth.csv"
    header, *rows = path.read_text(encoding="utf-8").splitlines()
    assert header == ",true,false,model,predicted,NA"  # the label column's name is no concept's
    assert [row.split(",")[0] for row in rows] == concepts
    # older runs named the label column "true": they read alike
    path.write_text("\n".join(["true" + header, *rows]) + "\n", encoding="utf-8")
    assert run.confusion(model, "Truth").equals(matrix)
    path.write_text(f"{header}\ntrue,1,x,0,0,0\n", encoding="utf-8")  # damaged
    with pytest.raises(InputError, match="is no confusion matrix"):
        run.confusion(model, "Truth")
    # and a model unit they left behind (resumed by a newer version) too
    older = pd.DataFrame(
        expected[:, 1:], index=pd.Index(concepts, name="true"), columns=concepts[1:]
    )
    older = confusion_from_table(older.reset_index())
    assert list(older.index) == concepts and (older.to_numpy() == expected[:, 1:]).all()


def test_checkpoints_of_one_name_in_other_folders_are_told_apart(tiny, tmp_path):
    import shutil

    write_image_folder(tmp_path / "img", {"Animal": {"dog": 1, "cat": 1}})
    paths = []
    for folder in ("run1", "run2"):
        (tmp_path / folder).mkdir()
        paths.append(shutil.copyfile(tiny["a"], tmp_path / folder / "epoch_32.safetensors"))
    run = run_for(tiny, tmp_path, models=tuple(ModelSpec(tiny["config"], str(p)) for p in paths))
    assert run.models == ["tiny-clip@run1/epoch_32", "tiny-clip@run2/epoch_32"]
    with pytest.raises(SettingsError, match="the same model is given twice: tiny-clip@epoch_32"):
        run_for(tiny, tmp_path, models=(ModelSpec(tiny["config"], str(paths[0])),) * 2)
    other = shutil.copyfile(tiny["b"], tmp_path / "run1" / "epoch_32.pt")  # one folder, two kinds
    settings = ZeroShotSettings(
        models=(ModelSpec(tiny["config"], str(paths[0])), ModelSpec(tiny["config"], str(other))),
        images=str(tmp_path / "img"),
    )
    assert [m.label for m in settings.models] == [
        "tiny-clip@epoch_32.safetensors",
        "tiny-clip@epoch_32.pt",
    ]


def test_model_labels_alike_but_for_case_are_told_apart_or_refused(tiny, tmp_path):
    """Each label names a folder (confusion/<model>/): "tiny-clip@Ep" and "tiny-clip@ep" would
    be one on macOS's and Windows' file systems, the second model's matrices over the first's."""
    import shutil

    write_image_folder(tmp_path / "img", {"Animal": {"dog": 1, "cat": 1}})
    paths = []
    for folder, name in (("run1", "Ep.safetensors"), ("run2", "ep.safetensors")):
        (tmp_path / folder).mkdir()
        paths.append(shutil.copyfile(tiny["a"], tmp_path / folder / name))
    run = run_for(tiny, tmp_path, models=tuple(ModelSpec(tiny["config"], str(p)) for p in paths))
    assert run.models == ["tiny-clip@run1/Ep", "tiny-clip@run2/ep"]
    folders = [p.name.casefold() for p in (run.out / "confusion").iterdir()]
    assert len(set(folders)) == len(folders) == 2
    # one folder, names alike but for case (or two names given so): nothing tells them apart
    alike = [
        (ModelSpec(tiny["config"], str(tmp_path / "A.pt")), "'tiny-clip@A' and 'tiny-clip@a'"),
        (ModelSpec(tiny["config"], str(tmp_path / "a.pt")), None),
    ]
    named = (ModelSpec("hf-hub:org/one", name="Mine"), ModelSpec("hf-hub:org/two", name="mine"))
    for models, shown in (
        (tuple(spec for spec, _ in alike), alike[0][1]),
        (named, "'Mine' and 'mine'"),
    ):
        with pytest.raises(SettingsError, match=f"labels {shown} differ only in case"):
            ZeroShotSettings(models=models, images=str(tmp_path / "img"))
    # the same label twice, of two models that are not checkpoint files, is refused as such
    with pytest.raises(SettingsError, match="two models are labelled 'Mine'"):
        ZeroShotSettings(models=(named[0], ModelSpec("hf-hub:org/two", name="Mine")), images="i")


# --------------------------------------------------------------------------- bad settings: refused before work


def cli_error(capsys, *args: str) -> str:
    """The one line ``clipaudit`` prints for a refused command (exit 2, never a traceback)."""
    from clipaudit.cli import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--cache-dir", "afile", "cache_dir (--cache-dir) 'afile' is a file, not a folder"),
        (
            "--cache-dir",
            "afile/sub",
            "cache_dir (--cache-dir) 'afile/sub' cannot be made: 'afile' is a file",
        ),
        ("--templates", "t3.txt", "template file 't3.txt' is not UTF-8 text (byte 0)"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_any_model_loads(
    tiny, tmp_path, monkeypatch, capsys, option, value, message
):
    import clipaudit.zeroshot as zeroshot

    write_image_folder(tmp_path / "img", {"Color": {"red": 1, "green": 1}})
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "t3.txt").write_bytes(b"\xff\xfe{}\n")  # UTF-16's byte-order mark: no UTF-8
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(zeroshot, "load_model", lambda *a, **k: pytest.fail("a model loaded"))
    line = cli_error(
        capsys, "zeroshot", "--model", tiny["config"], "--images", "img", "--out", "run",
        "--device", "cpu", "--workers", "0", "--quiet", option, value,
    )  # fmt: skip
    assert line.startswith(f"error: {message}")
    assert not (tmp_path / "run").exists()  # no run folder, let alone a failed one


def test_every_models_weights_are_checked_before_the_first_model_runs(tiny, tmp_path, monkeypatch):
    """A mistyped tag or checkpoint of the last model was found only after every model before it
    had encoded every image (hours on a real audit)."""
    from clipaudit.errors import ModelError

    write_image_folder(tmp_path / "img", {"Animal": {"dog": 1, "cat": 1}})
    counts = count_encoded_images(monkeypatch)
    good = ModelSpec(tiny["config"], tiny["a"])
    for bad, message in (
        (ModelSpec(tiny["config"], "laion2b_s34b_b79k"), "unknown pretrained tag"),
        (ModelSpec(tiny["config"], str(tmp_path / "gone.pt")), "gone.pt' does not exist"),
    ):
        with pytest.raises(ModelError, match=message):
            run_for(tiny, tmp_path, models=(good, bad))
        assert counts == [] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("inside", ["run", "Color/run"])
def test_a_run_folder_inside_the_image_folder_is_refused_before_it_is_made(tiny, tmp_path, inside):
    write_image_folder(tmp_path / "img", {"Color": {"red": 1, "green": 1}})
    out = tmp_path / "img" / inside
    with pytest.raises(SettingsError, match=r"the run folder '.*' \(--out\) lies inside the image"):
        run_for(tiny, tmp_path, out=out)
    assert not out.exists()


def test_a_template_file_saved_with_a_byte_order_mark_reads_as_its_text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("# my templates\na photo of a {}.\n".encode("utf-8-sig"))
    assert resolve_templates(str(path)) == ("a photo of a {}.",)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("all_concepts", "no", r"all_concepts must be True or False, got 'no'"),
        ("jpeg_draft", 1, r"jpeg_draft must be True or False, got 1"),
        ("templates", ["a {}"], r"templates must be one of none, simple, ensemble or the path"),
        ("device", None, r"device must be one of auto, cpu, cuda, mps \(or cuda:N\), got NoneType"),
        ("cache_dir", 3, r"cache_dir must be a folder path or None \(no cache\), got int 3"),
        ("label_field", 3, r"label_field must be a string or None, got int 3"),
        ("image_column", None, r"image_column must be a string, got NoneType None"),
    ],
)
def test_options_of_another_type_are_refused_naming_the_option(option, value, message):
    with pytest.raises(SettingsError, match=message):
        ZeroShotSettings(models=(ModelSpec("ViT-B-32"),), images="img", **{option: value})


def test_groups_given_as_one_string_is_that_group_not_its_letters(tmp_path):
    settings = ZeroShotSettings(
        models=(ModelSpec("ViT-B-32"),), images="img", groups="Animal", cache_dir=None
    )
    assert settings.groups == ("Animal",)
    names = (name for name in ("Animal", "Color"))  # read once, checked and kept
    assert ZeroShotSettings(
        models=(ModelSpec("ViT-B-32"),), images="img", groups=names, cache_dir=None
    ).groups == ("Animal", "Color")
    templates = tmp_path / "t.txt"
    templates.write_text("a photo of a {}.\n")
    path_given = ZeroShotSettings(
        models=(ModelSpec("ViT-B-32"),), images="img", templates=templates, cache_dir=None
    )
    assert path_given.templates == str(templates)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_cache_dir_that_cannot_be_made_is_refused_even_where_access_says_yes(tmp_path):
    # /proc takes no new folders, whoever asks (os.access tells root it may write there)
    with pytest.raises(SettingsError, match=r"'/proc/nope' cannot be made \("):
        ZeroShotSettings(models=(ModelSpec("ViT-B-32"),), images="img", cache_dir="/proc/nope")


def test_checking_a_cache_dir_that_does_not_exist_yet_leaves_nothing(tmp_path):
    folder = tmp_path / "new" / "cache"
    settings = ZeroShotSettings(models=(ModelSpec("ViT-B-32"),), images="img", cache_dir=folder)
    assert settings.cache_dir == folder and not (tmp_path / "new").exists()


def test_run_zeroshot_names_the_option_meant_by_a_mistyped_one(tiny, tmp_path):
    write_image_folder(tmp_path / "img", {"Color": {"red": 1, "green": 1}})
    with pytest.raises(
        SettingsError, match=r"unknown zeroshot option 'devce' \(did you mean 'device'\?\)"
    ):
        run_for(tiny, tmp_path, devce="cpu")
    with pytest.raises(SettingsError, match=r"'overwite' \(did you mean 'overwrite'\?\)"):
        run_for(tiny, tmp_path, overwite=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("models", [5, None, 2.5])
def test_a_model_spec_of_another_type_is_refused_naming_what_a_model_can_be(tmp_path, models):
    with pytest.raises(SettingsError, match="models must be a name or config path, a"):
        run_zeroshot(models, tmp_path / "img", tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_summary_counts_the_images_evaluated_and_those_skipped(tiny, tmp_path, capsys):
    from clipaudit.cli import main

    # 5 images evaluated (Animal), 2 undecodable, 1 in a group that cannot be evaluated (Food)
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 3, "cat": 2}, "Food": {"pizza": 1}})
    (tmp_path / "img" / "Animal" / "dog" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 corrupt")
    (tmp_path / "img" / "Animal" / "cat" / "empty.png").write_bytes(b"")
    main(
        [
            "zeroshot", "--model", tiny["config"], "--pretrained", tiny["a"], "--images",
            str(tmp_path / "img"), "--out", str(tmp_path / "run"), "--no-cache", "--device", "cpu",
            "--workers", "0", "--quiet",
        ]
    )  # fmt: skip
    printed = " ".join(capsys.readouterr().out.split())  # the title wraps on narrow terminals
    assert "macro-F1 per group (5 images evaluated, 2 skipped, templates none)" in printed


def test_the_summary_names_the_files_ignored_that_were_never_classified(tiny, tmp_path, capsys):
    from clipaudit.cli import main

    write_image_folder(tmp_path / "img", {"Animal": {"dog": 2, "cat": 2}})
    loose = tmp_path / "img" / "Animal" / "loose.jpg"  # in a group folder, outside any concept's
    loose.write_bytes((tmp_path / "img" / "Animal" / "dog" / "000.jpg").read_bytes())
    main(
        [
            "zeroshot", "--model", tiny["config"], "--pretrained", tiny["a"], "--images",
            str(tmp_path / "img"), "--out", str(tmp_path / "run"), "--no-cache", "--device", "cpu",
            "--workers", "0", "--quiet",
        ]
    )  # fmt: skip
    printed = "".join(capsys.readouterr().out.split())  # a long path wraps anywhere
    expected = f"1 file ignored (see manifest.json), e.g. {loose}: not inside a <concept>/ folder"
    assert "".join(expected.split()) in printed
    assert "macro-F1pergroup(4imagesevaluated,templatesnone)" in printed


def test_a_hub_model_updated_since_is_evaluated_again_and_one_unchanged_is_not(
    offline_hub, tmp_path
):
    from tests.tiny_clip import hub_snapshot, write_tiny_local_dir

    cache, _ = offline_hub
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 2, "cat": 2}})
    repo, first, second = "clipaudit-tests/tiny", "1" * 40, "2" * 40
    write_tiny_local_dir(hub_snapshot(cache, repo, first), seed=5)
    options = dict(cache_dir=tmp_path / "cache", workers=0, device="cpu", progress=False)

    def run(model: ModelSpec, out: str = "run", **changes) -> ZeroShotRun:
        return run_zeroshot(model, tmp_path / "img", tmp_path / out, **{**options, **changes})

    spec = ModelSpec(f"hf-hub:{repo}")
    assert run(spec).manifest["models"][0]["hub"] == {"repo": repo, "revision": first}
    assert run(spec).reused  # nothing changed: nothing to do
    # the model updated on the hub and downloaded again
    updated_folder = write_tiny_local_dir(hub_snapshot(cache, repo, second), seed=6)
    updated = run(spec)
    info = updated.manifest["models"][0]
    assert not updated.reused and info["hub"] == {"repo": repo, "revision": second}
    assert (info["n_encoded"], info["n_cached"]) == (4, 0)  # the first weights' embeddings unused
    # the results of the new weights, as a folder holding them gives
    expected = run(ModelSpec(f"local-dir:{updated_folder}"), "expected", cache_dir=None)
    columns = ["path", "predicted", "score"]
    assert updated.predictions()[columns].equals(expected.predictions()[columns])


def test_a_hub_model_is_kept_under_the_commit_it_loaded_not_the_one_asked_before(
    offline_hub, tmp_path, monkeypatch
):
    """The hub is asked which commit a model is at before a run; should the load read another
    (the hub moved on in between), the results are those of the commit loaded, and a run at that
    commit later reuses them."""
    from clipaudit import hub
    from tests.tiny_clip import hub_snapshot, write_tiny_local_dir

    cache, _ = offline_hub
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 2, "cat": 2}})
    repo, loaded = "clipaudit-tests/tiny", "1" * 40
    write_tiny_local_dir(hub_snapshot(cache, repo, loaded), seed=5)
    options = dict(workers=0, device="cpu", progress=False)
    spec = ModelSpec(f"hf-hub:{repo}")
    monkeypatch.setattr(hub, "hub_head", lambda repo: "3" * 40)
    first = run_zeroshot(spec, tmp_path / "img", tmp_path / "run", **options)
    assert first.manifest["models"][0]["hub"]["revision"] == loaded
    monkeypatch.setattr(hub, "hub_head", lambda repo: None)  # offline: the cache's commit
    assert run_zeroshot(spec, tmp_path / "img", tmp_path / "run", **options).reused


def test_the_summary_shows_each_models_own_image_count_where_they_differ(
    tiny, tmp_path, capsys, monkeypatch
):
    """An image whose embedding fails for one model (NaN) but not the other: each model's
    scores are over its own images, and the table says how many, not the first model's count."""
    from clipaudit import zeroshot
    from clipaudit.cli import main

    write_image_folder(tmp_path / "img", {"Animal": {"dog": 3, "cat": 2}, "Color": {"red": 1}})
    for concept in ("Animal/dog", "Color/green"):  # Color keeps 1 concept for model b: skipped
        (tmp_path / "img" / concept).mkdir(exist_ok=True)
        Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "img" / concept / "flat.png")
    load = zeroshot.load_model

    def failing_on_flat_images(spec, *args, **kwargs):
        loaded = load(spec, *args, **kwargs)
        if spec.pretrained == tiny["b"]:  # model b cannot embed an image of one colour
            encode = loaded.model.encode_image

            def encode_image(pixels, *a, **k):
                features = encode(pixels, *a, **k)
                flat = pixels.flatten(2).std(dim=2).amax(dim=1) < 1e-6
                return torch.where(flat[:, None], torch.nan, features)

            loaded.model.encode_image = encode_image
        return loaded

    monkeypatch.setattr(zeroshot, "load_model", failing_on_flat_images)
    main(
        [
            "zeroshot", "--model", tiny["config"], "--pretrained", tiny["a"], "--model",
            tiny["config"], "--pretrained", tiny["b"], "--images", str(tmp_path / "img"), "--out",
            str(tmp_path / "run"), "--no-cache", "--device", "cpu", "--workers", "0", "--quiet",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    groups = pd.read_csv(tmp_path / "run" / "groups.csv").set_index(["group", "model"])
    scores = groups["macro_f1"]
    n_a, n_b = 3 + 2 + 1, 3 + 2  # Animal: every image, and all but the flat one

    def cells(group: str) -> list[str]:
        (row,) = [line for line in printed.splitlines() if line.startswith(f"│ {group} ")]
        return [cell.strip() for cell in row.strip("│ ").split("│")]

    assert cells("Animal") == [
        "Animal",
        f"{n_b}-{n_a}",
        f"{scores['Animal', 'tiny-clip@a']:.3f} ({n_a})",
        f"{scores['Animal', 'tiny-clip@b']:.3f} ({n_b})",
    ]
    assert ("Color", "tiny-clip@b") not in scores.index
    assert cells("Color") == ["Color", "2", f"{scores['Color', 'tiny-clip@a']:.3f}", "-"]
    flat = " ".join(printed.split())
    assert f"({n_b}-{n_a + 2} images evaluated per model, 2 skipped, templates none)" in flat


def test_a_confusion_matrix_of_an_unknown_group_or_model_names_what_there_is(tmp_path):
    """A mistyped group was answered with the models (and "did you mean" the model given), a
    name that is no string with a bare TypeError."""
    from clipaudit.zeroshot import confusion_table

    groups = pd.DataFrame({"model": ["m@a", "m@a", "m@b"], "group": ["Animal", "Color", "Animal"]})
    run = ZeroShotRun(tmp_path, groups, pd.DataFrame(), {})
    matrix = pd.DataFrame([[2, 0], [1, 1]], index=["dog", "cat"], columns=["dog", "cat"])
    folder = tmp_path / "confusion" / "m@a"
    folder.mkdir(parents=True)
    confusion_table(matrix).to_csv(folder / "Animal.csv", index=False)
    assert run.confusion("m@a", "Animal").to_numpy().tolist() == [[2, 0], [1, 1]]
    with pytest.raises(
        InputError, match=r"'Anmal' .*; its groups are Animal, Color \(did you mean 'Animal'\?\)$"
    ):
        run.confusion("m@a", "Anmal")
    with pytest.raises(
        InputError, match=r"no model 'm@c' in .*; models are m@a, m@b \(did you mean"
    ):
        run.confusion("m@c", "Animal")
    with pytest.raises(SettingsError, match=r"a model name must be a string, got int 3"):
        run.confusion(3, "Animal")
    with pytest.raises(SettingsError, match=r"a group name must be a string, got NoneType None"):
        run.confusion("m@a", None)


# --------------------------------------------------------------------------- images as found, checked against open_clip


def test_photos_as_found_score_as_open_clip_scores_them_upright(tiny, tmp_path):
    """Every score and the macro-F1 equal open_clip's own computation, written here: an EXIF-
    rotated photo is seen upright (as it was labelled), CMYK, palette and grey images in RGB."""
    import open_clip
    from PIL import ImageOps
    from sklearn.metrics import f1_score

    paths = write_image_folder(tmp_path / "img", {"Animal": {"dog": 3, "cat": 3}}, seed=5)
    dog = tmp_path / "img" / "Animal" / "dog"
    upright = Image.open(paths[0])
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned anticlockwise, shown turned back
    upright.transpose(Image.Transpose.ROTATE_90).save(dog / "sideways.png", exif=exif)
    upright.convert("CMYK").save(dog / "cmyk.jpg", quality=95)
    upright.convert("P", palette=Image.Palette.ADAPTIVE).save(dog / "palette.png")
    upright.convert("L").save(tmp_path / "img" / "Animal" / "cat" / "grey.png")
    run = run_for(tiny, tmp_path, templates="simple")
    predictions = run.predictions().set_index("path")

    open_clip.add_model_config(tiny["config"])
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-clip", pretrained=tiny["a"])
    model.eval()
    tokenizer = open_clip.get_tokenizer("tiny-clip")
    names = ["dog", "cat"]  # registry order
    prompts = {c.name: c.prompts for c in load_registry().concepts_in("Animal")}
    with torch.no_grad():
        text = [
            torch.nn.functional.normalize(
                model.encode_text(tokenizer([f"a photo of a {p}." for p in prompts[n]])), dim=-1
            ).mean(0)
            for n in names
        ]
        classes = torch.nn.functional.normalize(torch.stack(text), dim=-1)
        files = sorted((tmp_path / "img").rglob("*.*"))
        pixels = [preprocess(ImageOps.exif_transpose(Image.open(f)).convert("RGB")) for f in files]
        scores = (
            torch.nn.functional.normalize(model.encode_image(torch.stack(pixels)), dim=-1)
            @ classes.T
        )
    expected = [names[i] for i in scores.argmax(1).tolist()]
    assert [predictions.loc[str(f), "predicted"] for f in files] == expected
    np.testing.assert_allclose(
        [predictions.loc[str(f), "score"] for f in files], scores.max(1).values, atol=1e-6
    )
    truth = [f.parent.name for f in files]
    assert run.groups["macro_f1"].iloc[0] == pytest.approx(
        f1_score(truth, expected, labels=names, average="macro", zero_division=0), abs=1e-6
    )
    sideways, same = predictions.loc[str(dog / "sideways.png")], predictions.loc[str(paths[0])]
    assert sideways["top5_scores"].tolist() == pytest.approx(same["top5_scores"].tolist(), abs=1e-6)


def test_results_made_with_older_decoding_are_redone_not_reused(tiny, tmp_path, monkeypatch):
    """A run folder (and the cache) filled before decoding changed, e.g. before EXIF orientation
    was applied, is classified again: its embeddings were made of other pixels."""
    import clipaudit.zeroshot as zeroshot

    write_image_folder(tmp_path / "img", {"Animal": {"dog": 2, "cat": 2}})
    counts = count_encoded_images(monkeypatch)
    with monkeypatch.context() as older:
        older.setattr(zeroshot, "DECODE_VERSION", zeroshot.DECODE_VERSION - 1)
        run_for(tiny, tmp_path)
    again = run_for(tiny, tmp_path)
    assert not again.reused and counts == [4, 4]
    assert run_for(tiny, tmp_path).reused and counts == [4, 4]


def test_cached_rows_that_are_no_embedding_are_encoded_again(tiny, tmp_path, monkeypatch):
    """A shard damaged in place (zeroed blocks after a crash, NaN) keeps its shape: its rows
    would have classified every image as the group's first concept with score 0."""
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 3, "cat": 3}}, seed=2)
    counts = count_encoded_images(monkeypatch)
    first = run_for(tiny, tmp_path).predictions()
    for number, damage in enumerate((0.0, np.nan)):
        (shard,) = (tmp_path / "cache").glob("*/*.emb.npy")
        rows = np.load(shard)
        data = shard.read_bytes()
        shard.write_bytes(data[: -rows.nbytes] + np.full_like(rows, damage).tobytes())
        again = run_for(tiny, tmp_path, out=tmp_path / f"run{number}")
        assert counts[-1] == 6 and again.manifest["models"][0]["n_cached"] == 0
        pd.testing.assert_frame_equal(again.predictions(), first)
        for damaged in shard.parent.glob(f"{shard.name.split('.')[0]}.*"):
            damaged.unlink()  # the new shard alone: damaged next


def test_an_embedding_with_no_direction_is_skipped_saying_so(colour_images, registry):
    """NaN (an fp16 overflow) would have been classified as the first concept with score 0."""
    loaded = colour_model()
    encode = loaded.model.encode_image

    def one_nan(images, **kwargs):
        features = encode(images, **kwargs)
        features[0] = float("nan")
        return features

    loaded.model.encode_image = one_nan
    result = evaluate_model(loaded, colour_images, registry.select(["Color"]), batch_size=4)
    bad = [colour_images.records[i].path for i in (0, 4, 8)]  # first of each batch of 4
    assert [f["path"] for f in result.failures] == bad
    assert all("not finite" in f["reason"] for f in result.failures)
    assert set(result.predictions["path"]) == {r.path for r in colour_images.records} - set(bad)
    assert result.n_encoded == 7


def test_a_strip_too_thin_for_the_models_resize_is_skipped_saying_so(tiny, tmp_path):
    """Scaled to the tiny model's 32-pixel side, a 2000x1 strip is 2,048,000 pixels (and
    100,000 x 1 would be 5 billion for a 224-pixel model): over max_pixels, it is listed."""
    write_image_folder(tmp_path / "img", {"Animal": {"dog": 2, "cat": 2}})
    strip = tmp_path / "img" / "Animal" / "dog" / "strip.png"
    Image.new("RGB", (2000, 1), (0, 0, 255)).save(strip)
    run = run_for(tiny, tmp_path, max_pixels=1_000_000)
    (skipped,) = run.manifest["skipped_images"]
    assert skipped["path"] == str(strip) and skipped["reason"].startswith(
        "too elongated: 2000x1 scaled to the model's 32-pixel side is 2048000 pixels"
    )
    assert str(strip) not in set(run.predictions()["path"])


def test_max_pixels_on_the_command_line_sets_the_decompression_bomb_limit(tiny, tmp_path, capsys):
    """The 40x30 images (1,200 pixels) pass a limit of 2,000; a 50x50 one (2,500) is skipped,
    saying how to let it in; an audit passes the option on to its zero-shot stage alike."""
    from clipaudit.cli import app, main

    write_image_folder(tmp_path / "img", {"Animal": {"dog": 2, "cat": 2}})
    large = tmp_path / "img" / "Animal" / "dog" / "large.png"
    Image.new("RGB", (50, 50), (0, 0, 255)).save(large)
    args = ["zeroshot", "-m", tiny["config"], "-p", tiny["a"], "-i", str(tmp_path / "img")]
    common = ["--device", "cpu", "--workers", "0", "--no-cache", "--quiet"]
    main([*args, "-o", str(tmp_path / "run"), *common, "--max-pixels", "2000"])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["settings"]["max_pixels"] == 2000
    (skipped,) = manifest["skipped_images"]
    assert skipped["path"] == str(large)
    assert "2500 pixels exceeds the decompression-bomb limit of 2000" in skipped["reason"]
    assert "--max-pixels" in skipped["reason"]
    assert "1 skipped" in capsys.readouterr().out

    main([*args, "-o", str(tmp_path / "default"), *common])
    manifest = json.loads((tmp_path / "default" / "manifest.json").read_text())
    assert manifest["settings"]["max_pixels"] == Image.MAX_IMAGE_PIXELS
    assert manifest["skipped_images"] == []

    with pytest.raises(SystemExit) as exited:
        main([*args, "-o", str(tmp_path / "zero"), *common, "--max-pixels", "0"])
    assert exited.value.code == 2
    assert "max_pixels (--max-pixels) must be an integer >= 1, got 0" in capsys.readouterr().err
    audit = typer.main.get_command(app).commands["audit"]
    assert "--max-pixels" in {name for parameter in audit.params for name in parameter.opts}


@pytest.mark.parametrize("command", ["zeroshot", "audit"])
def test_no_cache_with_a_cache_folder_is_refused_not_one_of_them_ignored(command, tmp_path, capsys):
    from clipaudit.cli import main

    captions = ["--captions", str(tmp_path / "c.jsonl")] if command == "audit" else []
    with pytest.raises(SystemExit) as exited:
        main(
            [
                command,
                *captions,
                "--model",
                "ViT-B-32",
                "--images",
                str(tmp_path / "img"),
                "--out",
                str(tmp_path / "run"),
                "--no-cache",
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --no-cache and --cache-dir {str(tmp_path / 'cache')!r} ask for no cache and a "
        "cache; give one"
    )
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_complete_run_whose_table_was_damaged_writes_it_again_from_its_units(
    tiny, tmp_path, monkeypatch
):
    """Reading a complete run back to reuse it crashed on a table cut short (pandas'
    ParserError), and every rerun crashed the same way: the models' units hold the results."""
    from clipaudit.runs import load_run

    write_image_folder(tmp_path / "img", {"Color": {"red": 2, "green": 2}})
    first = run_for(tiny, tmp_path)
    expected = first.groups.copy()
    (tmp_path / "run" / "groups.csv").write_text('group,"model\n"unclosed')
    with pytest.raises(RunFolderError, match="files cannot be read"):
        load_run(tmp_path / "run")
    counts = count_encoded_images(monkeypatch)
    again = run_for(tiny, tmp_path)
    assert not again.reused and counts == []  # written from the units: no image encoded
    pd.testing.assert_frame_equal(again.groups, expected)
    pd.testing.assert_frame_equal(load_run(tmp_path / "run").groups, expected)


@pytest.mark.parametrize("bad", [float("nan"), 0.0])
def test_a_concept_whose_text_embedding_has_no_direction_fails_the_model(
    colour_images, registry, bad
):
    """A text embedding of NaN (an fp16 overflow) or zeros was compared with every image as
    NaN: that concept was never predicted, its recall 0 and its group's macro-F1 lower, unsaid."""
    from clipaudit.errors import ModelError

    loaded = colour_model()
    encode = loaded.model.encode_text

    def no_direction_for_green(vectors, **kwargs):
        features = encode(vectors, **kwargs).clone()
        features[vectors[:, 1] == 1] = bad  # green's vector (0, 1, 0, 0)
        return features

    loaded.model.encode_text = no_direction_for_green
    with pytest.raises(ModelError) as failed:
        evaluate_model(loaded, colour_images, registry.select(["Color"]))
    assert str(failed.value) == (
        "model 'colour' gives the concept green a text embedding that is not finite or is zero "
        "(NaN or inf: try --precision fp32): no image can be classified against it"
    )


def test_a_slow_encoding_is_flushed_to_the_cache_by_time_as_well(colour_images, tmp_path):
    """Only every 4096 images went to disk: a large model on a CPU (a few images a second) lost
    the last quarter hour's embeddings to a kill. What a kill would leave is what is on disk."""
    from clipaudit.embedding_cache import EmbeddingCache

    loaded = colour_model()
    encode = loaded.model.encode_image
    identities = [r.identity for r in colour_images.records]
    on_disk: list[int] = []

    def looking_at_the_disk(images, **kwargs):
        on_disk.append(len(EmbeddingCache(tmp_path, "k").get(identities)[0]))
        return encode(images, **kwargs)

    loaded.model.encode_image = looking_at_the_disk
    embed_images(
        loaded, colour_images, cache=EmbeddingCache(tmp_path, "k"), batch_size=4, flush_s=0.0
    )
    assert on_disk == [0, 4, 8]  # each batch was on disk before the next was encoded


def test_a_model_whose_unit_files_were_damaged_is_evaluated_again(tiny, tmp_path):
    """A finished model's record stood for its tables: with one of them deleted or cut short
    (a partial copy, a clean-up), merging crashed on it at every rerun, which only --overwrite
    got past, redoing every model."""
    write_image_folder(tmp_path / "img", {"Color": {"red": 2, "green": 2}})
    first = run_for(tiny, tmp_path)
    (unit,) = [p for p in (tmp_path / "run" / "units").iterdir() if p.is_dir()]
    (unit / "concepts.parquet").unlink()
    (unit / "groups.parquet").write_bytes((unit / "groups.parquet").read_bytes()[:40])
    both = (ModelSpec(tiny["config"], tiny["a"]), ModelSpec(tiny["config"], tiny["b"]))
    again = run_for(tiny, tmp_path, models=both)
    assert again.models == ["tiny-clip@a", "tiny-clip@b"]
    pd.testing.assert_frame_equal(
        again.groups[again.groups["model"] == "tiny-clip@a"].reset_index(drop=True),
        first.groups,
    )


def test_groups_spelled_or_ordered_otherwise_resume_the_same_run(tiny, tmp_path):
    """--groups names groups as the registry looks them up (any case, any order, a group named
    twice once): the same groups are the same run, resumed, not refused as another."""
    write_image_folder(
        tmp_path / "img", {"Animal": {"dog": 1, "cat": 1}, "Food": {"pizza": 1, "burger": 1}}
    )
    first = run_for(tiny, tmp_path, groups=["Food", "Animal"])
    assert sorted(first.groups["group"]) == ["Animal", "Food"]
    again = run_for(tiny, tmp_path, groups=["animal", "FOOD", "Animal"])
    assert again.reused
    assert again.manifest["settings"]["groups"] == ["Animal", "Food"]  # the registry's order


def test_all_concepts_scores_a_group_whose_images_are_of_one_concept(tmp_path, registry):
    """Among all of a group's concepts, the images of one concept are classified meaningfully
    (chance a uniform guess's macro-F1 among them); among the concepts with images alone there
    would be one."""
    for number, colour in enumerate([(255, 0, 0)] * 3 + [(255, 153, 0)]):  # the last: orange
        (tmp_path / "img" / "Color" / "red").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), colour).save(tmp_path / "img" / "Color" / "red" / f"{number}.png")
    images = open_images(tmp_path / "img", registry, groups=["Color"])
    color = registry.select(["Color"])
    alone = evaluate_model(colour_model(), images, color)
    assert alone.groups.empty and alone.skipped_groups == [
        {"group": "Color", "reason": "only 'red' has images; 2 concepts are needed"}
    ]
    result = evaluate_model(colour_model(), images, color, all_concepts=True)
    # red predicted 3 times, rightly: P = 1, R = 3/4, F1 = 6/7; the orange-looking one is orange
    group = result.groups.iloc[0]
    assert group["macro_f1"] == pytest.approx(6 / 7) and group["accuracy"] == pytest.approx(3 / 4)
    n_colours = len(registry.concepts_in("Color"))
    assert (group["n_images"], group["n_concepts"], group["n_candidates"]) == (4, 1, n_colours)
    assert result.predictions["predicted"].tolist() == ["red", "red", "red", "orange"]
    assert result.skipped_groups == []


def test_a_run_of_one_concept_per_group_needs_all_concepts_and_says_so(tiny, tmp_path):
    from clipaudit.errors import RunFailedError

    write_image_folder(tmp_path / "img", {"Color": {"red": 2}, "Animal": {"dog": 1}})
    groups = ("Animal", "Color")
    with pytest.raises(RunFailedError) as refused:
        run_for(tiny, tmp_path, cache_dir=None, groups=groups)
    assert str(refused.value) == (
        "no group could be evaluated (no group has images of 2 concepts); 2 groups with images not "
        "evaluated: Animal: only 'dog' has images; 2 concepts are needed; Color: only 'red' has "
        "images; 2 concepts are needed; --all-concepts (all_concepts=True) classifies the images of "
        "one concept among all of its group's concepts"
    )
    run = run_for(tiny, tmp_path, cache_dir=None, groups=groups, all_concepts=True, overwrite=True)
    groups = run.groups.set_index("group")
    assert groups.loc[["Animal", "Color"], "n_concepts"].tolist() == [1, 1]
    assert groups.loc["Color", "n_candidates"] == len(load_registry().concepts_in("Color"))
    assert run.concepts["support"].tolist() == [1, 2]


def test_a_resumed_runs_summary_counts_what_this_call_encoded(tiny, tmp_path, monkeypatch, capsys):
    """A run killed after its first model and resumed printed the first model's encoding of the
    killed session as this one's: the summary counts what this call encoded, read from the
    cache and took from the earlier session's results."""
    import clipaudit.zeroshot as zeroshot
    from clipaudit.cli import main

    write_image_folder(tmp_path / "img", {"Color": {"red": 2, "green": 2}})
    real_load, loads = zeroshot.load_model, []

    def killed_at_the_second_model(spec, *args, **kwargs):
        loads.append(spec.label)
        if len(loads) == 2:
            raise KeyboardInterrupt
        return real_load(spec, *args, **kwargs)

    monkeypatch.setattr(zeroshot, "load_model", killed_at_the_second_model)
    command = [
        "zeroshot", "-m", tiny["config"], "-p", tiny["a"], "-m", tiny["config"], "-p", tiny["b"],
        "-i", str(tmp_path / "img"), "-o", str(tmp_path / "run"),
        "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--workers", "0", "--quiet",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as killed:
        main(command)
    assert killed.value.code == 130
    capsys.readouterr()

    def model_lines() -> list[str]:  # as one line each, however narrow the console wraps them
        printed = " ".join(capsys.readouterr().out.split())
        lines = re.findall(r"tiny-clip@\w: .*? cpu fp32", printed)
        return [re.sub(r"\d+ images/s", "R images/s", line) for line in lines]

    main(command)  # resumed: the first model's results kept, the second's made now
    assert loads == ["tiny-clip@a", "tiny-clip@b", "tiny-clip@b"]
    assert model_lines() == [
        "tiny-clip@a: 0 encoded (no images encoded), 0 from cache, 4 from an earlier session's "
        "results, cpu fp32",
        "tiny-clip@b: 4 encoded (R images/s), 0 from cache, cpu fp32",
    ]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    counts = [(m["n_encoded"], m["n_cached"], m["n_resumed"]) for m in manifest["models"]]
    assert counts == [(0, 0, 4), (4, 0, 0)]
    main(command)  # complete: nothing done
    assert model_lines() == [
        f"tiny-clip@{w}: 0 encoded (no images encoded), 0 from cache, 4 from an earlier "
        "session's results, cpu fp32"
        for w in "ab"
    ]
    shutil.rmtree(tmp_path / "run")  # a new run: the cache holds both models' embeddings
    main(command)
    assert model_lines() == [
        f"tiny-clip@{w}: 0 encoded (no images encoded), 4 from cache, cpu fp32" for w in "ab"
    ]
