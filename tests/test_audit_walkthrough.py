"""`clipaudit audit` walked through as an auditor with their own data would (helper 116): what the
run says it counted and reused, what --overwrite keeps, what the help tells a newcomer, and the
numbers of its outputs recomputed from the inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.report_world import MENTIONS
from tests.test_audit import _models


def _audit(audit_runs: dict, out: Path, models, lines: list[str], **options):
    import clipaudit

    zeroshot = {"cache_dir": None, "device": "cpu", "workers": 0, **options.pop("zeroshot", {})}
    return clipaudit.run_audit(
        [Path(audit_runs["root"]) / "corpus.parquet"],
        audit_runs["images"],
        models,
        out,
        zeroshot=zeroshot,
        progress=False,
        echo=lines.append,
        **options,
    )


@pytest.mark.slow
def test_an_audit_says_what_each_stage_counted_scored_and_reused(audit_runs, tmp_path):
    """The audit printed "1/3 caption coverage", "2/3 zero-shot awareness", "3/3 report" and
    nothing of the stages' results: not the captions read, not what each model scored, not that
    a model without --pretrained is a chance baseline, and on a resumed run not what was reused."""
    config, trained, _ = _models(audit_runs)
    out, lines = tmp_path / "audit", []
    # the second model without weights: random, as a forgotten --pretrained leaves it
    first = _audit(audit_runs, out, [(config, trained), config], lines)
    said = "\n".join(lines)
    assert "400 captions read from 1 shard; this session: 1 shard counted" in said
    groups = first.zeroshot.groups
    for model in first.zeroshot.models:
        scores = groups[groups["model"] == model]["macro_f1"]
        n_images = int(groups[groups["model"] == model]["n_images"].sum())
        assert (
            f"{model}: macro-F1 {scores.min():.2f}-{scores.max():.2f} over {len(scores)} groups "
            f"({n_images} images); this session: {n_images} encoded, 0 from cache, 0 from an "
            "earlier session" in said
        )
    assert (
        "tiny-clip@random has random weights (no --pretrained): its scores are a chance "
        "baseline" in said
    )
    assert "open report/report.html in a browser" in said

    lines.clear()
    _audit(audit_runs, out, [(config, trained), config], lines)
    said = "\n".join(lines)
    assert "400 captions read from 1 shard; already counted: reused" in said
    assert "this session: 0 encoded, 0 from cache, 96 from an earlier session" in said
    # other captions: counted, and the earlier ones said to be left out of the counts
    lines.clear()
    import clipaudit

    clipaudit.run_audit(
        ["a dog", "a red cat"], audit_runs["images"], [(config, trained), config], out,
        zeroshot={"cache_dir": None, "device": "cpu", "workers": 0}, progress=False,
        echo=lines.append,
    )  # fmt: skip
    assert (
        "    2 captions read from 1 shard; this session: 1 shard counted, 1 of inputs no longer "
        "given kept out of the counts" in lines
    )


@pytest.mark.slow
def test_overwrite_of_a_zero_shot_setting_keeps_the_counted_coverage(audit_runs, tmp_path):
    """--overwrite with only the zero-shot templates changed emptied the whole audit, its
    coverage stage too: a LAION count of hours done again for a prompt change."""
    config, trained, _ = _models(audit_runs)
    out, lines = tmp_path / "audit", []
    _audit(audit_runs, out, (config, trained), lines)
    counted_at = json.loads((out / "coverage" / "manifest.json").read_text())["created"]
    lines.clear()
    again = _audit(
        audit_runs, out, (config, trained), lines, zeroshot={"templates": "simple"}, overwrite=True
    )
    assert again.coverage.reused and not again.zeroshot.reused
    assert json.loads((out / "coverage" / "manifest.json").read_text())["created"] == counted_at
    assert again.zeroshot.manifest["templates"]["setting"] == "simple"
    assert again.manifest["settings"]["zeroshot"]["templates"] == "simple"
    assert again.manifest["status"] == "complete"
    assert (
        "--overwrite: zeroshot.templates: 'none' -> 'simple'; the stages whose settings "
        "changed are done again, the others kept" in lines
    )
    # and a coverage setting changed: the count is redone, the models' results kept
    other = _audit(
        audit_runs, out, (config, trained), lines, zeroshot={"templates": "simple"},
        coverage={"profile": "paper"}, overwrite=True,
    )  # fmt: skip
    assert not other.coverage.reused and other.zeroshot.reused
    assert other.coverage.manifest["profile"] == "paper"


def test_the_help_says_which_stage_each_option_is_for(in_process):
    """Twenty-six options in one list: a newcomer could not tell that --workers is the caption
    count's and --decode-workers the images', or which options the report takes."""
    import typer

    from clipaudit.cli import app

    command = typer.main.get_command(app).commands["audit"]
    stages = {
        "coverage": {"--captions", "--column", "--id-column", "--caption-split", "--skip-bad",
                     "--profile", "--workers"},
        "zero-shot": {"--images", "--model", "--pretrained", "--decode-workers", "--groups",
                      "--label-field", "--image-column", "--image-split", "--templates",
                      "--all-concepts", "--device", "--batch-size", "--max-pixels", "--cache-dir",
                      "--no-cache"},
        "report": {"--title"},
    }  # fmt: skip
    for stage, options in stages.items():
        for parameter in command.params:
            if set(parameter.opts) & options:
                assert parameter.help.startswith(f"[{stage}] "), (parameter.opts, parameter.help)
    code, out, _ = in_process("audit", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "[coverage], [zero-shot] and [report] mark the stage an option is for" in text


def test_an_audits_numbers_recomputed_from_its_inputs(audit_runs, tmp_path):
    """A concept's caption count, by a plain regex over the caption file; a group's macro-F1,
    by sklearn from predictions.parquet; both as the report's joined table holds them."""
    from sklearn.metrics import f1_score

    config, trained, _ = _models(audit_runs)
    out = tmp_path / "audit"
    _audit(audit_runs, out, (config, trained), [])
    captions = pd.read_parquet(Path(audit_runs["root"]) / "corpus.parquet")["caption"]
    joined = pd.read_parquet(out / "report" / "tables" / "concepts.parquet").set_index("concept")
    for concept in ("dog", "yellow", "tired"):
        count = int(captions.str.contains(rf"\b{concept}\b", regex=True).sum())
        assert count == MENTIONS[concept]
        assert joined.loc[concept, "count"] == count
    predictions = pd.read_parquet(out / "zeroshot" / "predictions.parquet")
    groups = pd.read_parquet(out / "report" / "tables" / "groups.parquet").set_index("group")
    for group in ("Texture", "Emotion"):
        rows = predictions[predictions["group"] == group]
        expected = f1_score(
            rows["concept"], rows["predicted"], labels=sorted(set(rows["concept"])),
            average="macro", zero_division=0,
        )  # fmt: skip
        assert groups.loc[group, "macro_f1"] == pytest.approx(expected)


def test_an_audit_names_an_image_it_skipped_and_why(audit_runs, tmp_path):
    """The audit said "1 image skipped: listed in RUN/zeroshot/manifest.json": which image, and
    why, took opening the manifest; `clipaudit zeroshot` names them."""
    import shutil

    config, trained, _ = _models(audit_runs)
    images = tmp_path / "images"
    shutil.copytree(audit_runs["images"], images)
    broken = images / "Animal" / "dog" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a JPEG after all")
    lines: list[str] = []
    import clipaudit

    clipaudit.run_audit(
        [Path(audit_runs["root"]) / "corpus.parquet"], images, (config, trained),
        tmp_path / "audit", zeroshot={"cache_dir": None, "device": "cpu", "workers": 0},
        progress=False, echo=lines.append,
    )  # fmt: skip
    (line,) = [line for line in lines if "skipped" in line]
    assert line.startswith(f"    1 image skipped: listed in {tmp_path / 'audit' / 'zeroshot'}")
    assert f"(e.g. {broken}: " in line
