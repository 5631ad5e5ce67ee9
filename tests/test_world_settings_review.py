"""How `clipaudit world render` and `clipaudit demo` take and check their settings: each mistake a
user types is one line naming the option, exit 2, no traceback, no folder made; a tiny world's
printed caption rates are those of the captions it wrote."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clipaudit.errors import SettingsError
from clipaudit.world.settings import TrainSettings, WorldSettings, parse_misalignment, parse_rates

TINY = ["--n-train", "60", "--n-eval-per-group", "6"]
REGISTRY = Path(__file__).resolve().parents[1] / "concepts" / "miniworld.yaml"


def _refused(in_process, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "run"
    code, printed, said = in_process(*args, "--out", str(out), "--quiet")
    lines = [line for line in (printed + said).splitlines() if line.strip()]
    assert code == 2, printed + said
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()  # refused before any work: nothing to clean up


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "Texture=abc"], r"--set 'Texture=abc': the rate must be a number .*got 'abc'"),
        (["--set", "=0.2"], r"--set '=0.2': .*the group is missing.*e\.g\. Texture=0\.5"),
        (["--set", "Textur=0.5"], r"got 'Textur' \(did you mean 'Texture'\?\)"),
        (["--n-train", "0"], r"n_train .* >= 1, got 0; change --n-train \(n_train= in Python\)"),
        (
            ["--image-size", "3"],
            r"image size must be a multiple of 16 in \[32, 256\].*got 3; change --image-size",
        ),
        (["--seed", "-1"], r"seed must be an integer >= 0, got -1; change --seed"),
    ],
)
def test_world_render_refuses_a_mistyped_setting_in_one_line(in_process, tmp_path, args, message):
    _refused(in_process, tmp_path, ["world", "render", *TINY, *args], message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--sweep", "Texture", "--rates", "0,0.05,,1"],
            r"--rates: expected numbers .*got '0,0\.05,,1' \(rate 3 is empty",
        ),
        (
            ["--sweep", "Texture", "--rates", "1,0.5"],
            r"--rates: expected rates in increasing order.*got '1,0\.5'",
        ),
        (["--sweep", "Texture", "--rates", "-0.1"], r"--rates: expected rates in \[0, 1\].*-0\.1"),
        (["--sweep", "Texture", "--rates", ""], r"--rates: expected .*got none"),
        (["--sweep", "Texture", "--rates", "0,x"], r"'x' is not a number"),
        (["--steps", "0"], r"steps must be an integer >= 1, got 0; change --steps"),
        (["--threads", "0"], r"threads must be an integer >= 1, got 0; change --threads"),
        (["--device", "gpu"], r"got 'gpu' \(did you mean 'cpu'\?\); change --device"),
    ],
)
def test_demo_refuses_a_mistyped_setting_before_any_work(
    in_process, tmp_path, monkeypatch, args, message
):
    def trained(*args, **kwargs):  # a setting let through would train a whole demo here
        raise AssertionError("the demo started instead of refusing its settings")

    monkeypatch.setattr("clipaudit.demo.run_demo", trained)
    _refused(in_process, tmp_path, ["demo", *args], message)


def test_the_python_arguments_name_their_option_too():
    with pytest.raises(SettingsError, match=r"got 40; change --image-size \(image_size= in"):
        WorldSettings(image_size=40)
    with pytest.raises(SettingsError, match=r"got 2; change --n-eval-per-group"):
        WorldSettings(n_eval_per_group=2)
    with pytest.raises(SettingsError, match=r"got True; change --image-size"):
        WorldSettings(image_size=True)
    with pytest.raises(SettingsError, match=r"change --steps \(steps= in Python\)"):
        TrainSettings(steps=0)


def test_rates_and_sets_that_are_right_are_taken():
    assert parse_rates("0, 0.05,0.2,1,") == (0.0, 0.05, 0.2, 1.0)
    with pytest.raises(SettingsError, match=r"0\.5 is given twice"):
        parse_rates("0,0.5,0.5")
    world = parse_misalignment([" Texture = 0.5", "Background.perturbation=0"], WorldSettings())
    assert world.misalignment["Texture"].selection == 0.5
    assert world.misalignment["Background"].perturbation == 0.0
    assert world.misalignment["Background"].selection == 1.0  # the other rate kept


def _mentions(captions: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """Per group, from the written captions alone: the share that name any of its values, the
    share of those naming a wrong one, and the share naming the picture's own value. A caption
    word is a concept's synonym, optionally pluralised (the matcher's inflections)."""
    concepts = yaml.safe_load(REGISTRY.read_text())["concepts"]
    shares = {}
    for group in dict.fromkeys(c["group"] for c in concepts):
        patterns = {
            c["name"]: re.compile(
                r"\b(" + "|".join(re.escape(s) for s in c["synonyms"]) + r")(e?s)?\b", re.I
            )
            for c in concepts
            if c["group"] == group
        }
        named = [{n for n, p in patterns.items() if p.search(t)} for t in captions["caption"]]
        said = sum(bool(n) for n in named)
        true = sum(label in n for n, label in zip(named, captions[group], strict=True))
        shares[group] = (said / len(named), (said - true) / max(said, 1), true / len(named))
    return shares


def test_printed_rates_are_those_of_the_written_captions(in_process, tmp_path):
    out = tmp_path / "world"
    args = ["world", "render", "--out", str(out), "--n-train", "200", "--n-eval-per-group", "6"]
    code, printed, _ = in_process(*args, "--set", "Texture.perturbation=0.5")
    assert code == 0, printed
    shown = {}
    for line in printed.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 6 and cells[0] in WorldSettings().misalignment:
            shown[cells[0]] = cells
    measured = _mentions(pd.read_parquet(out / "captions.parquet"))
    assert set(shown) == set(measured)
    for group, (said, _, true) in measured.items():
        _, _, _, realised, _, true_shown = shown[group]
        assert realised == f"{said:.1%}", group
        assert true_shown == f"{true:.1%}", group
    # the realised share of wrong mentions, said only for the groups chosen to have some
    perturbed = {"Background": "50%", "Texture": "50%"}
    for group, chosen in perturbed.items():
        wrong = measured[group][1]
        assert f"{group}: {wrong:.1%} of its mentions are wrong (chosen {chosen})" in printed
    assert sum("of its mentions are wrong" in line for line in printed.splitlines()) == 2


def test_a_rerun_with_other_settings_is_refused_and_the_same_one_resumes(in_process, tmp_path):
    out = tmp_path / "world"
    base = ["world", "render", "--out", str(out), *TINY]
    assert in_process(*base)[0] == 0
    code, printed, _ = in_process(*base)
    assert code == 0 and "nothing was rendered" in printed
    code, _, said = in_process(*base, "--set", "Texture=0.9")
    assert code == 2
    assert "Texture.selection: 0.3 -> 0.9" in said and "--overwrite" in said
