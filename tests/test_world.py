"""The miniature world: settings, seeded rendering, captions and their record, training that
resumes exactly, the sweep, and (on a small seeded world) the paper's finding itself."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipaudit.errors import RunFolderError, SettingsError
from clipaudit.images import open_images
from clipaudit.lexical import build_matcher
from clipaudit.registry import load_registry
from clipaudit.world import (
    WORLD_GROUPS,
    CausalLink,
    Misalignment,
    TrainSettings,
    WorldSettings,
    open_world,
    recaption_world,
    render_world,
    sweep_rates,
    train_world_model,
    world_registry,
)
from clipaudit.world.captions import write_captions
from clipaudit.world.render import TABLES
from clipaudit.world.scenes import group_values, sample_scenes
from clipaudit.world.training import (
    RECORD_FILE,
    STATE_FILE,
    ThreadChooser,
    batch_indices,
    caption_tokens,
    fitting_context,
    lr_at,
    normalised_pixels,
    usable_cores,
)

# A world and a model small enough for seconds: every test but the finding's uses them.
TINY_WORLD = WorldSettings(image_size=32, n_train=512, n_eval_per_group=24, seed=0)
TINY_TRAIN = TrainSettings(
    steps=10,
    batch_size=64,
    warmup_steps=2,
    embed_dim=32,
    width=32,
    layers=1,
    text_width=32,
    text_layers=1,
    checkpoint_every=4,
    threads=1,
    device="cpu",
)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    return render_world(TINY_WORLD, tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def trained_tiny(tiny_world, tmp_path_factory):
    return train_world_model(tiny_world, tmp_path_factory.mktemp("model"), TINY_TRAIN)


def safetensors_equal(a: Path, b: Path) -> bool:
    """Same tensor names and bitwise-equal values."""
    from safetensors.torch import load_file

    left, right = load_file(str(a)), load_file(str(b))
    return left.keys() == right.keys() and all(left[k].equal(right[k]) for k in left)


# -- registry and settings ---------------------------------------------------------------------


def test_registry_loads_by_name_and_path_and_matches_the_renderer():
    by_name = load_registry("miniworld")
    by_path = load_registry(Path(__file__).resolve().parent.parent / "concepts" / "miniworld.yaml")
    assert by_name.sha256 == by_path.sha256
    assert [g.name for g in by_name.groups] == list(WORLD_GROUPS)
    names = [c.name for c in by_name.concepts]
    assert len(names) == len(set(names))
    for group in WORLD_GROUPS:
        assert {c.name for c in by_name.concepts_in(group)} == set(TABLES[group])
    assert by_name.group("Color").category == by_name.group("Background").category == "common"
    assert len(by_name.concepts_in("Color")) == len(by_name.concepts_in("Background"))
    world_registry()  # the world's own check passes


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Misalignment(1.5), r"selection rate must lie in \[0, 1\], got 1.5"),
        (lambda: Misalignment(0.5, -0.1), r"perturbation rate must lie in \[0, 1\], got -0.1"),
        (lambda: Misalignment(True), r"selection rate must be a number .* got True"),
        (
            lambda: WorldSettings(misalignment={"Shape": 1.0}),
            r"must give every group of the world; missing Color, Background",
        ),
        (
            lambda: WorldSettings(misalignment={**_rates(), "Colour": 1.0}),
            r"expected one of the world's groups .* got 'Colour' \(did you mean 'Color'\?\)",
        ),
        (lambda: WorldSettings(image_size=40), r"multiple of 16 .* got 40"),
        (lambda: WorldSettings(n_eval_per_group=3), r"n_eval_per_group .* >= 6, got 3"),
        (
            lambda: WorldSettings(
                causal_links=(
                    CausalLink("Color", "Background", 0.5),
                    CausalLink("Background", "Color", 0.5),
                )
            ),
            r"must not form a cycle, got (Color -> Background -> Color|Background -> Color -> Background)",
        ),
        (lambda: CausalLink("Color", "Color", 0.5), r"two different groups"),
        (lambda: TrainSettings(width=48), r"width must be a multiple of 32 .* got 48"),
        (lambda: TrainSettings(device="gpu"), r"device must be one of auto, cpu, cuda, got 'gpu'"),
        (lambda: TrainSettings(steps=0), r"steps must be an integer >= 1, got 0"),
        (  # torch.manual_seed refused it, but only after the world was rendered
            lambda: TrainSettings(seed=2**64),
            r"seed must be an integer in \[0, 18446744073709551615\], got 18446744073709551616",
        ),
        (lambda: TrainSettings(patch_size=7).model_config(32, 16), r"patch size must divide"),
    ],
)
def test_settings_say_what_was_expected_and_got(make, message):
    with pytest.raises(SettingsError, match=message):
        make()


def test_the_largest_training_seed_builds_a_model():
    from clipaudit.world.training import build_model

    settings = TrainSettings(seed=2**64 - 1, embed_dim=32, width=32, layers=1)
    assert build_model(settings.model_config(32, 16), settings.seed) is not None


def render_small(monkeypatch, *, n_train: int, n_eval_per_group: int) -> None:
    """`world render` makes a world of this size (its default is too large for a test)."""
    from clipaudit.world import world as world_module

    real = world_module.render_world_run

    def small(settings, out, overwrite=False):
        tiny = dataclasses.replace(settings, n_train=n_train, n_eval_per_group=n_eval_per_group)
        return real(tiny, out, overwrite=overwrite)

    monkeypatch.setattr(world_module, "render_world_run", small)


# the sizes `world render` takes, left out (called as a function, its options are no defaults)
SIZES_LEFT_OUT = {"n_train": None, "image_size": None, "n_eval_per_group": None}


def test_world_render_prints_whole_names_and_the_chosen_rates_in_80_columns(
    tmp_path, monkeypatch, capsys
):
    """Rich cut "Post-processing" and "under-captioned" in 80 columns, and a chosen rate of 0.005
    was printed "0%", the rate of a group never mentioned."""
    from rich.console import Console

    from clipaudit.cli import world as cli_world

    render_small(monkeypatch, n_train=512, n_eval_per_group=24)
    monkeypatch.setattr(cli_world, "console", Console(width=80, markup=False, emoji=False))
    cli_world.render(
        out=tmp_path / "w",
        seed=0,
        set_rates=["Size=0.005", "Background.perturbation=0.125"],
        overwrite=False,
        **SIZES_LEFT_OUT,
    )
    table = [line for line in capsys.readouterr().out.splitlines() if line[:1] in "┏┃┡│└"]
    assert max(len(line) for line in table) <= 80
    rows = {line.split("│")[1].strip(): line for line in table if line.startswith("│")}
    assert set(WORLD_GROUPS) <= set(rows)
    assert "under-captioned" in rows["Size"] and "nuisance" in rows["Post-processing"]
    assert [cell.strip() for cell in rows["Size"].split("│")][3] == "0.5%"
    assert [cell.strip() for cell in rows["Background"].split("│")][5] == "12.5%"
    assert "already complete" not in capsys.readouterr().out
    # the same command again renders nothing, and says so
    mark = (tmp_path / "w" / "train_images.npy").stat().st_mtime_ns
    cli_world.render(
        out=tmp_path / "w",
        seed=0,
        set_rates=["Size=0.005", "Background.perturbation=0.125"],
        overwrite=False,
        **SIZES_LEFT_OUT,
    )
    printed = capsys.readouterr().out.splitlines()
    assert (
        printed[-1] == f"the world in {tmp_path / 'w'} was already complete: nothing was rendered"
    )
    assert (tmp_path / "w" / "train_images.npy").stat().st_mtime_ns == mark


def _rates() -> dict[str, float]:
    return {g: 1.0 for g in WORLD_GROUPS}


# -- scenes, captions and their record -----------------------------------------------------------


def _binomial_bound(p: float, n: int) -> float:
    """Four standard errors of a share of ``n`` Bernoulli(p) draws (zero when p is 0 or 1)."""
    return 4 * math.sqrt(p * (1 - p) / n)


def test_realised_rates_match_the_chosen_ones_within_binomial_error():
    rates = {
        "Shape": Misalignment(1.0),
        "Color": Misalignment(0.9, 0.1),
        "Background": Misalignment(0.7, 0.5),
        "Texture": Misalignment(0.3),
        "Size": Misalignment(0.05, 0.3),
        "Position": Misalignment(0.0, 0.4),
        "Post-processing": Misalignment(0.5, 0.75),
    }
    settings = WorldSettings(misalignment=rates, n_train=20_000, seed=3)
    registry = world_registry()
    values = group_values(registry)
    n = settings.n_train
    scenes = sample_scenes(settings, values, n, np.random.default_rng(0))
    captions = write_captions(scenes, registry, settings, np.random.default_rng(1))
    for group, chosen in rates.items():
        said = captions.said[group]
        mentioned = said >= 0
        assert abs(mentioned.mean() - chosen.selection) <= _binomial_bound(chosen.selection, n)
        n_mentioned = int(mentioned.sum())
        if n_mentioned:
            wrong = captions.perturbed[group][mentioned].mean()
            bound = _binomial_bound(chosen.perturbation, n_mentioned)
            assert abs(wrong - chosen.perturbation) <= bound, group
        # values are uniform: every value's share within binomial error of 1/K
        k = len(values[group])
        shares = np.bincount(scenes[group], minlength=k) / n
        assert np.all(np.abs(shares - 1 / k) <= _binomial_bound(1 / k, n))


def test_perturbation_writes_a_uniform_wrong_value_of_the_same_group():
    settings = WorldSettings(
        misalignment={**_rates(), "Background": Misalignment(1.0, 1.0)}, n_train=12_000
    )
    registry = world_registry()
    values = group_values(registry)
    scenes = sample_scenes(settings, values, settings.n_train, np.random.default_rng(0))
    captions = write_captions(scenes, registry, settings, np.random.default_rng(1))
    said, truth = captions.said["Background"], scenes["Background"]
    assert captions.perturbed["Background"].all()
    assert np.all(said != truth) and np.all((said >= 0) & (said < len(values["Background"])))
    # each wrong value equally often: (said - truth) mod K is uniform on 1..K-1
    k = len(values["Background"])
    offsets = np.bincount((said - truth) % k, minlength=k)[1:] / len(said)
    assert np.all(np.abs(offsets - 1 / (k - 1)) <= _binomial_bound(1 / (k - 1), len(said)))
    for group in WORLD_GROUPS:
        if group != "Background":
            assert not captions.perturbed[group].any()
            assert np.array_equal(captions.said[group], scenes[group])


def test_captions_say_exactly_what_their_record_says(tiny_world):
    """The curated matcher finds in every caption exactly the planted and perturbed concepts."""
    frame = pd.read_parquet(tiny_world.captions_path)
    matcher = build_matcher(world_registry())
    found = matcher.match_batch(frame["caption"].tolist())
    names = matcher.concept_names
    for row, hits in zip(frame.itertuples(), found, strict=True):
        recorded = set(row.planted) | set(row.perturbed)
        assert {names[i] for i in hits} == recorded, row.caption
    # planted concepts are the truth, perturbed ones never are
    registry = world_registry()
    for row in frame.itertuples():
        truth = {frame.at[row.Index, g] for g in WORLD_GROUPS}
        assert set(row.planted) <= truth
        assert not set(row.perturbed) & truth
        groups = [registry.concept(c).group for c in [*row.planted, *row.perturbed]]
        assert len(groups) == len(set(groups))  # at most one value said per group
    # wording varies: plurals, other synonyms, both orders of background and colour phrases
    text = " ".join(frame["caption"])
    assert "circles" in text or "squares" in text or "stars" in text
    assert sum(c.startswith(("a ", "an ", "the ", "A ", "An ", "The ")) for c in frame.caption) > 0
    assert len(set(frame["caption"])) > 0.5 * len(frame)


def test_caption_texts_mention_and_alter_each_group_at_the_chosen_rates(tmp_path):
    """Counted from the written captions alone (the matcher on the text, against the true value
    columns), not from the generator's own record: every group mentioned and altered at its
    chosen rates, and world.json's realised rates are those counts."""
    rates = {
        "Shape": Misalignment(0.9, 0.2),
        "Color": Misalignment(0.8, 0.3),
        "Background": Misalignment(0.7, 0.5),
        "Texture": Misalignment(0.6, 0.4),
        "Size": Misalignment(0.5, 0.6),
        "Position": Misalignment(0.4, 0.7),
        "Post-processing": Misalignment(0.1, 0.9),
    }
    settings = WorldSettings(misalignment=rates, n_train=4000, n_eval_per_group=6, seed=11)
    world = render_world(settings, tmp_path)
    frame = pd.read_parquet(world.captions_path)
    matcher = build_matcher(world_registry())
    group_of = {c.name: c.group for c in world_registry().concepts}
    said: list[dict[str, str]] = []
    for hits in matcher.match_batch(frame["caption"].tolist()):
        words = [matcher.concept_names[h] for h in hits]
        said.append({group_of[w]: w for w in words})
    n = len(frame)
    for group, chosen in rates.items():
        mentioned = np.array([group in s for s in said])
        wrong = np.array(
            [group in s and s[group] != t for s, t in zip(said, frame[group], strict=True)]
        )
        assert abs(mentioned.mean() - chosen.selection) <= _binomial_bound(chosen.selection, n)
        share_wrong = wrong.sum() / mentioned.sum()
        bound = _binomial_bound(chosen.perturbation, int(mentioned.sum()))
        assert abs(share_wrong - chosen.perturbation) <= bound, group
        recorded = world.info["rates"][group]
        assert recorded["n_mentioned"] == mentioned.sum() and recorded["n_perturbed"] == wrong.sum()
        assert recorded["true_mention_rate"] == pytest.approx((mentioned & ~wrong).mean())


def test_world_json_records_chosen_and_realised_rates(tiny_world):
    info = tiny_world.info
    frame = pd.read_parquet(tiny_world.captions_path)
    registry = world_registry()
    group_of = {c.name: c.group for c in registry.concepts}
    for group in WORLD_GROUPS:
        rates = info["rates"][group]
        planted = frame["planted"].map(lambda cs, g=group: any(group_of[c] == g for c in cs))
        perturbed = frame["perturbed"].map(lambda cs, g=group: any(group_of[c] == g for c in cs))
        assert rates["n_mentioned"] == int((planted | perturbed).sum())
        assert rates["n_perturbed"] == int(perturbed.sum())
        assert rates["true_mention_rate"] == pytest.approx(planted.mean())
        assert rates["chosen_selection"] == TINY_WORLD.misalignment[group].selection
    assert info["settings"] == TINY_WORLD.describe()
    assert info["n_train"] == len(frame) == TINY_WORLD.n_train


def test_causal_link_shifts_the_child_and_held_out_sets_intervene(tmp_path):
    settings = dataclasses.replace(
        TINY_WORLD, causal_links=(CausalLink("Background", "Color", 1.0),), n_train=600
    )
    world = render_world(settings, tmp_path / "w")
    frame = pd.read_parquet(world.captions_path)
    values = group_values(world_registry())
    background = frame["Background"].map(values["Background"].index)
    colour = frame["Color"].map(values["Color"].index)
    assert np.array_equal(colour, background % len(values["Color"]))
    # held-out Color pictures are balanced over colours whatever the backdrop
    counts = {p.name: len(list(p.glob("*.png"))) for p in (world.eval_path / "Color").iterdir()}
    assert set(counts.values()) == {settings.n_eval_per_group // 6}


# -- rendering ---------------------------------------------------------------------------------


def test_rendering_is_seeded_and_deterministic(tmp_path, tiny_world):
    again = render_world(TINY_WORLD, tmp_path / "again")
    other = render_world(dataclasses.replace(TINY_WORLD, seed=1), tmp_path / "other")
    for name in ("train_images.npy", "captions.parquet"):
        assert (tiny_world.path / name).read_bytes() == (again.path / name).read_bytes()
        assert (tiny_world.path / name).read_bytes() != (other.path / name).read_bytes()
    pngs = sorted(p.relative_to(tiny_world.eval_path) for p in tiny_world.eval_path.rglob("*.png"))
    assert pngs == sorted(p.relative_to(again.eval_path) for p in again.eval_path.rglob("*.png"))
    assert all(
        (tiny_world.eval_path / p).read_bytes() == (again.eval_path / p).read_bytes() for p in pngs
    )
    images = np.load(tiny_world.images_path, allow_pickle=False)
    size = TINY_WORLD.image_size
    assert images.shape == (TINY_WORLD.n_train, size, size, 3) and images.dtype == np.uint8


def test_held_out_sets_are_balanced_and_read_by_the_zero_shot_reader(tiny_world):
    registry = world_registry()
    images = open_images(tiny_world.eval_path, registry)
    counts = Counter((r.group, r.concept) for r in images.records)
    for group in WORLD_GROUPS:
        per_concept = [counts[(group, c.name)] for c in registry.concepts_in(group)]
        assert sum(per_concept) == TINY_WORLD.n_eval_per_group
        assert max(per_concept) - min(per_concept) <= 1
    assert tiny_world.info["n_eval_images"] == len(images.records)


def test_render_world_leaves_a_foreign_eval_folder_alone(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "mine.txt").write_text("not a world's")
    with pytest.raises(RunFolderError, match="more than a world's held-out pictures"):
        render_world(TINY_WORLD, tmp_path)
    assert (tmp_path / "eval" / "mine.txt").is_file()


def test_render_world_replaces_an_earlier_world_in_its_folder(tmp_path):
    render_world(dataclasses.replace(TINY_WORLD, n_eval_per_group=30), tmp_path)
    world = render_world(TINY_WORLD, tmp_path)
    assert len(list(world.eval_path.rglob("*.png"))) == 7 * TINY_WORLD.n_eval_per_group
    assert open_world(tmp_path).info["settings"] == TINY_WORLD.describe()
    assert not list(tmp_path.glob(".eval*"))


@pytest.mark.parametrize("lost", ["captions.parquet", "train_images.npy", "eval/Texture"])
def test_a_world_run_missing_a_file_is_rendered_again(tmp_path, lost):
    import shutil

    from clipaudit.world.world import render_world_run

    first = render_world_run(TINY_WORLD, tmp_path / "w")
    captions = pd.read_parquet(first.world.captions_path)
    target = tmp_path / "w" / lost
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    again = render_world_run(TINY_WORLD, tmp_path / "w")
    assert target.exists()
    assert len(list((again.world.eval_path / "Texture").rglob("*.png"))) == 24
    pd.testing.assert_frame_equal(pd.read_parquet(again.world.captions_path), captions)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda info: info.pop("rates"), "expected 'rates' and 'groups' mapping each group"),
        (lambda info: info["rates"].update(Shape=None), "got rates {'Shape': None"),
        (
            lambda info: info["rates"]["Size"].update(true_mention_rate="x"),
            "Size's true_mention_rate must be a share in \\[0, 1\\]; got 'x'",
        ),
        (
            lambda info: info["rates"]["Size"].update(selection=float("nan")),
            "Size's selection must be a share in \\[0, 1\\]; got nan",
        ),
        # these were taken as a complete world: the demo then failed on a KeyError, or used a
        # record that no longer described its pictures
        (lambda info: info.pop("files"), "expected 'files' naming its train_images, captions"),
        (lambda info: info["files"].pop("eval"), "expected 'files' naming its train_images"),
        (lambda info: info.pop("settings"), "its settings cannot be read"),
        (lambda info: info["settings"].update(seed="x"), "its settings cannot be read.*seed"),
        (lambda info: info.update(n_eval_images="x"), "n_eval_images must be a count; got 'x'"),
        (lambda info: info["settings"].update(seed=5), "describes another world than"),
        (
            lambda info: info["files"].update(captions="../captions.parquet"),
            "names files other than its own",
        ),
    ],
)
def test_a_hand_edited_world_json_is_refused_and_rendered_again(tmp_path, edit, message):
    from clipaudit.errors import InputError
    from clipaudit.runs import load_run
    from clipaudit.world.world import render_world_run

    render_world_run(TINY_WORLD, tmp_path)
    good = json.loads((tmp_path / "world.json").read_text())
    info = json.loads((tmp_path / "world.json").read_text())
    edit(info)
    (tmp_path / "world.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match=rf"{message}.*run the command that rendered it again"):
        load_run(tmp_path)
    # and that command repairs it
    repaired = render_world_run(TINY_WORLD, tmp_path).world.info
    for key in ("rates", "settings", "files", "n_eval_images"):
        assert repaired[key] == good[key], key
    assert load_run(tmp_path).world.info == repaired


def test_pictures_become_what_open_clips_eval_transform_makes_of_the_pngs(tiny_world):
    import open_clip
    from PIL import Image

    preprocess = open_clip.image_transform(TINY_WORLD.image_size, is_train=False)
    images = np.load(tiny_world.images_path, allow_pickle=False)[:8]
    expected = np.stack([preprocess(Image.fromarray(im)).numpy() for im in images])
    np.testing.assert_allclose(normalised_pixels(images).numpy(), expected, atol=1e-6)


# -- training ----------------------------------------------------------------------------------


def test_tokens_are_what_the_zero_shot_tokenizer_makes(tiny_world, trained_tiny):
    import open_clip

    from clipaudit.models import resolve_architecture

    captions = pd.read_parquet(tiny_world.captions_path)["caption"].tolist()
    tokens = caption_tokens(captions, None)  # as long as the longest caption, as in training
    tokenizer = open_clip.get_tokenizer(resolve_architecture(str(trained_tiny.config)))
    assert tokens.shape[1] == tokenizer.context_length
    assert np.array_equal(tokens.numpy(), tokenizer(captions).numpy())
    with pytest.raises(SettingsError, match=r"context length 5 is too short .* takes"):
        caption_tokens(captions, 5)


def test_learning_rate_warms_up_then_decays_to_zero():
    settings = TrainSettings(steps=110, warmup_steps=10, lr=1e-3)
    assert lr_at(0, settings) == pytest.approx(1e-4)
    assert lr_at(9, settings) == pytest.approx(1e-3)
    assert lr_at(10, settings) == pytest.approx(1e-3)
    assert lr_at(60, settings) == pytest.approx(5e-4)
    assert lr_at(109, settings) < 1e-6


def test_batches_of_an_epoch_are_disjoint_and_depend_only_on_seed_and_step():
    batches = [batch_indices(step, 100, 32, seed=4) for step in range(3)]
    assert len(np.unique(np.concatenate(batches))) == 96
    assert not np.array_equal(batch_indices(3, 100, 32, 4), batches[0])  # a new epoch
    assert np.array_equal(batch_indices(1, 100, 32, 4), batches[1])


@pytest.mark.skipif(usable_cores() < 2, reason="choosing a thread count needs 2 cores")
def test_thread_chooser_takes_the_faster_count_and_chooses_again_when_steps_slow_down():
    import torch

    cores = usable_cores()
    slow_on = {"threads": cores}

    def trial() -> None:  # pretend that one count is slow: the chooser must take the other
        time.sleep(0.02 if torch.get_num_threads() == slow_on["threads"] else 0.001)

    previous = torch.get_num_threads()
    try:
        chooser = ThreadChooser(None, trial, torch.device("cpu"))
        chooser.choose(0)
        assert chooser.threads == 1 and torch.get_num_threads() == 1
        slow_on["threads"] = 1
        for step in range(1, ThreadChooser.WINDOW + 1):
            chooser.after_step(step, 0.01)
        assert len(chooser.history) == 1  # steady: no new choice
        for step in range(ThreadChooser.WINDOW + 1, 3 * ThreadChooser.WINDOW):
            chooser.after_step(step, 0.05)  # five times slower: choose again
            if len(chooser.history) > 1:
                break
        assert chooser.threads == cores and torch.get_num_threads() == cores
        assert [c["threads"] for c in chooser.history] == [1, cores]
        fixed = ThreadChooser(1, trial, torch.device("cpu"))
        fixed.choose(0)
        assert fixed.history == [{"step": 0, "threads": 1, "trial_s": {}}]
    finally:
        torch.set_num_threads(previous)


def test_training_resumes_exactly_after_an_interruption(tmp_path, tiny_world, trained_tiny):
    class Killed(Exception):
        pass

    def kill_at_step_7(step: int, steps: int, loss: float) -> None:
        if step == 7:
            raise Killed

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        train_world_model(tiny_world, out, TINY_TRAIN, progress=kill_at_step_7)
    assert (out / STATE_FILE).is_file()
    assert not (out / "miniworld-clip.safetensors").exists()
    seen: list[int] = []
    resumed = train_world_model(
        tiny_world, out, TINY_TRAIN, progress=lambda step, steps, loss: seen.append(step)
    )
    assert seen[0] == 5  # from the checkpoint at step 4
    assert resumed.record["resumed_from_step"] == 4
    assert safetensors_equal(resumed.checkpoint, trained_tiny.checkpoint)
    assert resumed.losses == trained_tiny.losses
    assert len(resumed.losses) == TINY_TRAIN.steps
    assert not (out / STATE_FILE).exists()


# a child that trains, reports each step on stdout, and stops to be killed after ``stop_after``
_TRAIN_CHILD = """
import json, sys, time
from clipaudit.world import TrainSettings, open_world, train_world_model
world, out, settings, stop_after = sys.argv[1:]
def report(step, steps, loss):
    print(step, flush=True)
    if step == int(stop_after):
        time.sleep(600)
train_world_model(open_world(world), out, TrainSettings(**json.loads(settings)), progress=report)
"""


def test_training_killed_in_another_process_resumes_to_the_uninterrupted_weights(
    tmp_path, tiny_world, trained_tiny
):
    """A real process killed (SIGKILL: nothing of it runs on) mid-training; the same call then
    resumes from its last checkpoint and ends with the uninterrupted training's bytes."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "killed"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _TRAIN_CHILD,
            str(tiny_world.path),
            str(out),
            json.dumps(TINY_TRAIN.describe()),
            "6",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        steps = [int(line) for _, line in zip(range(6), child.stdout, strict=False)]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (out / STATE_FILE).is_file() and not (out / RECORD_FILE).exists()
    resumed = train_world_model(tiny_world, out, TINY_TRAIN)
    assert resumed.record["resumed_from_step"] == 4
    assert resumed.checkpoint.read_bytes() == trained_tiny.checkpoint.read_bytes()
    assert resumed.losses == trained_tiny.losses
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [resumed.config.name, resumed.checkpoint.name, resumed.log.name, RECORD_FILE]
    )


def test_a_finished_training_is_returned_and_other_settings_refused(tmp_path, trained_tiny):
    world = open_world(trained_tiny.record["world"])
    calls: list[int] = []
    again = train_world_model(
        world, trained_tiny.config.parent, TINY_TRAIN, progress=lambda *a: calls.append(1)
    )
    assert not calls and again.checkpoint == trained_tiny.checkpoint
    changed = dataclasses.replace(TINY_TRAIN, lr=1e-4)
    with pytest.raises(RunFolderError, match="other settings"):
        train_world_model(world, trained_tiny.config.parent, changed)


@pytest.mark.parametrize(
    "damage",
    ["cut", "deep", "files", "gone", "checkpoint"],
)
def test_a_damaged_training_record_trains_again(tmp_path, trained_tiny, damage):
    """A record that is no JSON, nests past the parser, names files that leave the folder, or
    whose checkpoint is gone or damaged (it was returned, and the zero-shot stage refused it as
    no checkpoint) proves no finished model: the same seed trains the same one."""
    import shutil

    world = open_world(trained_tiny.record["world"])
    out = tmp_path / "model"
    shutil.copytree(trained_tiny.config.parent, out)
    record = out / RECORD_FILE
    if damage == "cut":
        record.write_text(record.read_text()[:40])
    elif damage == "deep":
        record.write_text("[" * 100_000)
    elif damage == "files":
        text = json.loads(record.read_text())
        text["files"]["checkpoint"] = "../elsewhere.safetensors"
        record.write_text(json.dumps(text))
    elif damage == "gone":
        (out / trained_tiny.checkpoint.name).unlink()
    else:
        checkpoint = out / trained_tiny.checkpoint.name
        data = bytearray(checkpoint.read_bytes())
        data[len(data) // 2] ^= 0xFF
        checkpoint.write_bytes(bytes(data))
    steps: list[int] = []
    again = train_world_model(world, out, TINY_TRAIN, progress=lambda s, *a: steps.append(s))
    assert steps == list(range(1, TINY_TRAIN.steps + 1))
    assert safetensors_equal(again.checkpoint, trained_tiny.checkpoint)
    assert json.loads(record.read_text())["files"] == trained_tiny.record["files"]


def test_checkpoint_loads_with_clipaudit_and_is_zero_shot_evaluated(
    tiny_world, trained_tiny, tmp_path
):
    from clipaudit.models import ModelSpec, load_model

    loaded = load_model(ModelSpec(str(trained_tiny.config), str(trained_tiny.checkpoint)), "cpu")
    assert loaded.info["checkpoint_sha256"] is not None
    config = json.loads(trained_tiny.config.read_text())
    assert set(config) == {"embed_dim", "vision_cfg", "text_cfg"}
    from clipaudit.zeroshot import run_zeroshot

    run = run_zeroshot(
        ModelSpec(str(trained_tiny.config), str(trained_tiny.checkpoint)),
        tiny_world.eval_path,
        tmp_path / "zeroshot",
        registry="miniworld",
        cache_dir=None,
        workers=0,
        device="cpu",
        progress=False,
    )
    assert list(run.groups["group"]) == list(WORLD_GROUPS)
    assert run.groups["macro_f1"].between(0, 1).all()


# -- sweep -------------------------------------------------------------------------------------


def test_sweep_rates_that_would_share_a_folder_are_refused(tmp_path):
    for rates in ([0.0, -0.0], [0.1234561, 0.1234562]):
        with pytest.raises(SettingsError, match="must differ from each other"):
            sweep_rates(TINY_WORLD, "Texture", rates, tmp_path / "sweep", TINY_TRAIN)
    assert not (tmp_path / "sweep").exists()


def test_sweep_shares_pictures_and_trains_one_model_per_rate(tmp_path):
    train = dataclasses.replace(TINY_TRAIN, steps=3, checkpoint_every=100)
    sweep = sweep_rates(TINY_WORLD, "Texture", [0.0, 1.0], tmp_path / "sweep", train)
    assert [p.rate for p in sweep.points] == [0.0, 1.0]
    low, high = sweep.points
    assert low.world.images_path == high.world.images_path == sweep.pictures.images_path
    assert low.world.eval_path == sweep.pictures.eval_path
    assert len(list((tmp_path / "sweep").rglob("train_images.npy"))) == 1
    assert low.world.info["rates"]["Texture"]["selection"] == 0.0
    assert high.world.info["rates"]["Texture"]["selection"] == 1.0
    for group in WORLD_GROUPS:
        if group != "Texture":
            assert low.world.info["rates"][group] == high.world.info["rates"][group]
    assert low.model.checkpoint.name == "miniworld-clip-selection-0.safetensors"
    assert high.model.checkpoint.name == "miniworld-clip-selection-1.safetensors"
    # one architecture: the context holds the longest caption of either rate
    low_config, high_config = (json.loads(p.model.config.read_text()) for p in sweep.points)
    assert low_config == high_config
    assert high_config["text_cfg"]["context_length"] == fitting_context(
        pd.read_parquet(high.world.captions_path)["caption"].tolist()
    )
    assert not safetensors_equal(low.model.checkpoint, high.model.checkpoint)


def test_recaptioning_refuses_settings_that_change_the_pictures(tiny_world, tmp_path):
    with pytest.raises(SettingsError, match="only the misalignment may change; image_size"):
        recaption_world(tiny_world, dataclasses.replace(TINY_WORLD, image_size=48), tmp_path)


# -- the finding -------------------------------------------------------------------------------


def test_training_leaves_the_callers_random_state(tiny_world, tmp_path):
    import torch

    from clipaudit.world.training import train_world_model

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    short = dataclasses.replace(TINY_TRAIN, steps=2, warmup_steps=1)
    train_world_model(tiny_world, tmp_path / "model", short)
    assert torch.equal(torch.rand(3), expected)


def test_a_model_name_stays_inside_its_folder(tiny_world, tmp_path):
    from clipaudit.world.training import train_world_model

    for name in ("../../escaped", "a/b", ".hidden", ""):
        with pytest.raises(SettingsError, match="a model name is a plain file name"):
            train_world_model(tiny_world, tmp_path / "model", TINY_TRAIN, name=name)
    assert not (tmp_path.parent / "escaped.json").exists()


def test_a_damaged_checkpoint_is_refused_with_its_path_and_the_fix(tmp_path, tiny_world):
    """A cut train_state.safetensors stopped the training with safetensors' bare
    SafetensorError, naming no file."""

    class Killed(Exception):
        pass

    def kill_at_step_7(step: int, steps: int, loss: float) -> None:
        if step == 7:
            raise Killed

    out = tmp_path / "model"
    with pytest.raises(Killed):
        train_world_model(tiny_world, out, TINY_TRAIN, progress=kill_at_step_7)
    state = out / STATE_FILE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(RunFolderError, match=r"train_state.safetensors' is damaged .*delete it"):
        train_world_model(tiny_world, out, TINY_TRAIN)
    assert state.is_file()  # left for the user to look at


def test_a_sweep_on_given_pictures_renders_none_and_rewrites_no_caption(tmp_path, tiny_world):
    """The demo's sweep rendered the demo's pictures a second time into sweep/world, and every
    rerun rewrote each rate's captions, which the coverage stage then counted again."""
    train = dataclasses.replace(TINY_TRAIN, steps=2, checkpoint_every=100)
    out = tmp_path / "sweep"
    sweep = sweep_rates(TINY_WORLD, "Size", [1.0], out, train, pictures=tiny_world)
    assert not (out / "world").exists() and sweep.pictures == tiny_world
    assert sweep.points[0].world.images_path == tiny_world.images_path
    captions = sweep.points[0].world.captions_path
    written = captions.stat().st_mtime_ns
    again = sweep_rates(TINY_WORLD, "Size", [1.0], out, train, pictures=tiny_world)
    assert captions.stat().st_mtime_ns == written and again.points[0].model.reused
    other = dataclasses.replace(TINY_WORLD, seed=1)
    with pytest.raises(SettingsError, match="holds pictures of other world settings"):
        sweep_rates(other, "Size", [1.0], tmp_path / "other", train, pictures=tiny_world)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        # Python's own TypeError said only "unexpected keyword argument"
        (
            lambda: TrainSettings(stpes=10),
            r"TrainSettings has no setting 'stpes' \(did you mean 'steps'\?\); its settings are "
            r"steps, batch_size",
        ),
        (
            lambda: dataclasses.replace(TINY_TRAIN, learning_rate=1e-3),
            r"TrainSettings has no setting 'learning_rate'",
        ),
        (
            lambda: WorldSettings(n_trian=10),
            r"WorldSettings has no setting 'n_trian' \(did you mean 'n_train'\?\)",
        ),
        (
            lambda: CausalLink("Color", "Shape", strenght=0.5),
            r"CausalLink has no setting 'strenght' \(did you mean 'strength'\?\)",
        ),
        (
            lambda: TINY_WORLD.with_misalignment("Size", what="--set", selction=0.5),
            r"--set: Misalignment has no setting 'selction' \(did you mean 'selection'\?\)",
        ),
    ],
)
def test_a_setting_of_an_unknown_name_is_refused_with_the_closest(make, message):
    with pytest.raises(SettingsError, match=message):
        make()


@pytest.mark.parametrize("failure", ["loss", "gradient"])
def test_a_non_finite_loss_stops_the_training_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_world, monkeypatch, failure
):
    """A NaN loss trained on to the end: NaN weights saved as the model, and as checkpoints."""
    import open_clip.loss
    import torch
    from safetensors import safe_open

    class InfiniteGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value):
            return value.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * math.inf

    calls = 0
    # the loss is finite up to step 5, then NaN at step 6; or finite throughout, but its gradient
    # at step 8 (a checkpoint's step) infinite, which makes the weights NaN just before the save
    bad_step = 6 if failure == "loss" else 8

    class Failing(open_clip.loss.ClipLoss):
        def forward(self, *args, **kwargs):
            nonlocal calls
            calls += 1
            loss = super().forward(*args, **kwargs)
            if calls < bad_step:
                return loss
            return loss * math.nan if failure == "loss" else InfiniteGradient.apply(loss)

    monkeypatch.setattr(open_clip.loss, "ClipLoss", Failing)
    out = tmp_path / "model"
    what = "the loss is nan" if failure == "loss" else "the weights are no longer finite"
    with pytest.raises(
        SettingsError,
        match=rf"training diverged at step {bad_step} of 10: {what}; the checkpoint of step 4 is "
        rf"kept in '.*train_state.safetensors'; lower the learning rate \(lr, now 0.002\)",
    ):
        train_world_model(tiny_world, out, TINY_TRAIN)
    with safe_open(str(out / STATE_FILE), framework="pt") as handle:
        assert handle.metadata()["step"] == "4"
        for key in handle.keys():  # noqa: SIM118
            assert torch.isfinite(handle.get_tensor(key)).all(), key
    assert not (out / "miniworld-clip.safetensors").exists()
    assert not (out / RECORD_FILE).exists()


def test_world_render_takes_quiet_as_every_stage_does(tmp_path, monkeypatch, in_process):
    """`world render --out X -q` said "No such option: -q", while demo, zeroshot, report, audit,
    theory and coverage count take -q/--quiet: a script quieting every stage stopped on it.
    Rendering draws no progress bar, so the lines printed are the same."""
    from rich.console import Console

    from clipaudit.cli import world as cli_world

    render_small(monkeypatch, n_train=256, n_eval_per_group=12)
    # wide enough that no folder name wraps the table's title
    monkeypatch.setattr(cli_world, "console", Console(width=400, markup=False, emoji=False))
    said = {}
    for flag in ("", "-q", "--quiet"):
        out = tmp_path / f"w{flag}"
        code, printed, err = in_process("world", "render", "--out", str(out), *filter(None, [flag]))
        assert code == 0, err
        assert (out / "world.json").is_file()
        said[flag] = " ".join(printed.replace(str(out), "OUT").split())
    assert said["-q"] == said["--quiet"] == said[""]
