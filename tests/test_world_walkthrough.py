"""What a researcher met using `clipaudit world render`: no way to render a world smaller (or of
another picture size) than the demo's 16,000 pairs of 32x32 from the command line, so a quick
look, or a check of an odd size, needed Python (the tests themselves patched the library)."""

from __future__ import annotations

import json

import numpy as np

from clipaudit.world import WORLD_GROUPS


def test_world_render_takes_the_worlds_sizes(tmp_path, in_process):
    out = tmp_path / "w"
    code, printed, err = in_process(
        "world", "render", "--out", str(out), "--n-train", "64", "--n-eval-per-group", "6",
        "--image-size", "48", "-q",
    )  # fmt: skip
    assert code == 0, err
    info = json.loads((out / "world.json").read_text())
    assert (info["n_train"], info["image_size"], info["n_eval_images"]) == (64, 48, 6 * 7)
    assert np.load(out / "train_images.npy").shape == (64, 48, 48, 3)
    for group in WORLD_GROUPS:
        assert len(list((out / "eval" / group).rglob("*.png"))) == 6
    assert "64 pairs, 42 held-out pictures" in " ".join(printed.split())


def test_sizes_the_world_cannot_take_are_refused_in_one_line(tmp_path, in_process):
    for option, value, said in (
        ("--image-size", "40", "image size must be a multiple of 16"),
        ("--n-train", "0", "n_train (training pairs) must be an integer >= 1"),
        ("--n-eval-per-group", "5", "n_eval_per_group (held-out images per group)"),
    ):
        code, _, err = in_process("world", "render", "--out", str(tmp_path / "x"), option, value)
        assert code == 2, (option, err)
        assert len(err.strip().splitlines()) == 1 and said in err, err
    assert not (tmp_path / "x").exists()  # refused before any folder is made


def test_the_default_sizes_are_the_worlds():
    """Left out, the sizes are WorldSettings' own (the demo's world), not a second copy of them."""
    import typer

    from clipaudit.cli import app

    world = typer.main.get_command(app).commands["world"]
    defaults = {p.name: p.default for p in world.commands["render"].params}
    for name in ("n_train", "image_size", "n_eval_per_group"):
        assert defaults[name] is None, name


def test_the_help_says_the_worlds_default_sizes(in_process):
    from clipaudit.world import WorldSettings

    code, printed, _ = in_process("world", "render", "--help")
    assert code == 0
    shown = " ".join(printed.split())
    defaults = WorldSettings()
    for said in (
        f"default {defaults.n_train:,}",
        f"default {defaults.image_size})",
        f"default {defaults.n_eval_per_group})",
    ):
        assert said in shown, said
