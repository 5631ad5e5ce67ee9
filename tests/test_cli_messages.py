"""Messages a README walkthrough found wrong or missing: what the audit says of random weights, of
a reused coverage stage, of zero-shot groups not scored and models dropped; `coverage query -q`;
where a missing caption source or a fractional `--set` value came from; `world render`'s paths."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from clipaudit.errors import InputError, SettingsError
from tests.tiny_clip import write_image_folder, write_tiny_checkpoint, write_tiny_config


@pytest.fixture(scope="module")
def small_audit(tmp_path_factory) -> dict:
    """Labelled images of two Animal concepts and one Color concept (a group of one concept is
    not scored), and a tiny model given two weights: a checkpoint, and 'none'."""
    root = tmp_path_factory.mktemp("audit")
    write_image_folder(
        root / "images", {"Animal": {"dog": 3, "cat": 3}, "Color": {"red": 3}}, size=(24, 24)
    )
    config = write_tiny_config(root)
    trained = write_tiny_checkpoint(root / "trained.safetensors", seed=1)
    return {
        "root": root,
        "images": str(root / "images"),
        "config": str(config),
        "trained": str(trained),
    }


def _audit(small_audit: dict, models: list, **options) -> list[str]:
    import clipaudit

    said: list[str] = []
    clipaudit.run_audit(
        ["a dog on a red sofa", "a cat", "a blue horse"],
        small_audit["images"],
        models,
        small_audit["root"] / "audit",
        zeroshot={"cache_dir": None, "device": "cpu", "workers": 0},
        echo=said.append,
        **options,
    )
    return said


def test_the_audit_says_why_weights_are_random_what_it_did_not_score_and_reuses_no_bar(
    small_audit, capsys
):
    config, trained = small_audit["config"], small_audit["trained"]
    said = _audit(small_audit, [(config, "none"), (config, trained)], progress=True)
    # --pretrained none was given: "(no --pretrained)" told the user they had forgotten it
    assert (
        "    tiny-clip@random has random weights (--pretrained none given): its scores are a "
        "chance baseline, not a trained model's"
    ) in said
    assert not any("no --pretrained" in line for line in said)
    # Color holds images of 'red' alone: not scored, and said so with the reason and the fix
    assert (
        "    1 group with images not evaluated: Color: only 'red' has images; 2 concepts are "
        "needed; --all-concepts (all_concepts=True) classifies the images of one concept among "
        "all of its group's concepts"
    ) in said
    assert "coverage:" in capsys.readouterr().err  # the counting's bar, this first time

    # again, one model fewer: the coverage stage is reused (no empty bar), the model dropped
    said = _audit(small_audit, [(config, trained)], progress=True, overwrite=True)
    assert "already counted: reused" in said[1]
    assert "coverage:" not in capsys.readouterr().err
    assert (
        "    1 model dropped from the zero-shot run (not given this time), its results "
        "deleted: tiny-clip@random"
    ) in said
    # a third time, all reused: the dropping was this earlier call's, not this one's
    said = _audit(small_audit, [(config, trained)], progress=False)
    assert not any("dropped" in line for line in said)
    assert any(line.startswith("    1 group with images not evaluated") for line in said)


def test_a_missing_caption_source_of_an_audit_names_captions(small_audit, tmp_path, monkeypatch):
    import clipaudit
    from clipaudit.coverage import check_captions

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        clipaudit.run_audit(
            "nonexist/", small_audit["images"], (small_audit["config"], "none"), "out"
        )
    message = str(info.value)
    assert message.startswith("caption source 'nonexist/' does not exist; expected ")
    assert message.endswith(" (given as --captions, or captions= in Python)")
    assert not (tmp_path / "out").exists()
    # coverage count's CAPTIONS is an argument, not --captions: its message names neither
    with pytest.raises(InputError) as info:
        check_captions("nonexist/")
    assert "--captions" not in str(info.value) and "given as" not in str(info.value)


@pytest.mark.parametrize("flag", ["-q", "--quiet"])
def test_coverage_query_takes_quiet_as_the_other_coverage_commands_do(
    flag, in_process, monkeypatch
):
    found = SimpleNamespace(
        count=3, threshold=0.5, method="flat", seconds=0.002, nearest=[], run_concept=None
    )
    monkeypatch.setattr("clipaudit.coverage_semantic.query_run", lambda *a, **k: found)
    code, printed, err = in_process("coverage", "query", "run", "dog", flag)
    assert code == 0, err
    assert printed.startswith("3 captions with cosine >= 0.500 to 'dog'")


@pytest.mark.parametrize(
    ("key", "value", "python"),
    [
        ("n_fit", 2.5, "n_fit=... in EvaluationSettings or evaluation_overrides"),
        ("steps", 10.5, "steps=... in TrainingSettings or training_overrides"),
        ("hidden_widths", [8, 8.5], "hidden_widths=... in TrainingSettings or training_overrides"),
    ],
)
def test_a_fractional_set_value_names_the_set_option_and_the_python_argument(key, value, python):
    from clipaudit.theory.config import split_settings

    with pytest.raises(SettingsError) as info:
        split_settings({key: value})
    message = str(info.value)
    assert message.startswith(f"{key} must be")
    assert f"got {value!r}: give --set {key}=... " in message
    assert message.endswith(f" ({python} in Python)")


def test_world_render_prints_its_paths_as_the_out_was_given(tmp_path, in_process, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, printed, err = in_process(
        "world", "render", "--out", "runs/small", "--n-train", "16", "--n-eval-per-group", "6"
    )
    assert code == 0, err
    lines = printed.splitlines()
    assert f"captions: {Path('runs/small/captions.parquet')}" in lines
    assert f"held-out pictures: {Path('runs/small/eval')}" in lines
    assert (tmp_path / "runs" / "small" / "eval").is_dir()


def _micro_row(out: str) -> list[str]:
    """The cells after "micro (all)" of the table `coverage eval` prints."""
    line = next(line for line in out.splitlines() if "micro (all)" in line)
    return [cell.strip() for cell in line.split("│") if cell.strip()][1:]


def test_coverage_eval_shows_a_score_of_nothing_as_undefined_and_where_disagreements_are(
    tmp_path, in_process
):
    """A gold file without labels has no recall (0/0), and a matcher that predicts nothing no
    precision: "-", never a 0.000 that reads as a measured failure."""
    import json

    gold = tmp_path / "gold.jsonl"
    rows = [
        {"id": 1, "caption": "a dog on a sofa", "concepts": []},  # the matcher's dog: fp
        {"id": 2, "caption": "an empty room", "concepts": []},
    ]
    gold.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, out, err = in_process("coverage", "eval", str(gold), "--profile", "curated")
    assert code == 0, err
    # precision 0/1, recall 0/0, F1 2tp/(2tp+fp+fn) = 0/1
    assert _micro_row(out) == ["0.000", "-", "0.000", "0", "1", "0"]
    assert "micro precision 0.000 (0.000-0.000), recall - (undefined): " in out
    assert "1 caption where curated and the gold disagree (--json FILE lists them)" in out
    code, out, _ = in_process(
        "coverage", "eval", str(gold), "--profile", "curated", "--json", str(tmp_path / "e.json")
    )
    assert "1 caption where curated and the gold disagree\n" in out
    gold.write_text(json.dumps(rows[1]) + "\n")  # nothing predicted, nothing labelled
    code, out, _ = in_process("coverage", "eval", str(gold), "--profile", "curated")
    assert _micro_row(out) == ["-", "-", "-", "0", "0", "0"]
    assert "0 captions where curated and the gold disagree\n" in out
