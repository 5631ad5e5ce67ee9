"""`clipaudit audit`: coverage, zero-shot and the report in one resumable run folder."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from clipaudit.errors import RunFolderError
from tests.test_cli import run_cli


def _models(audit_runs: dict) -> tuple[str, str, str]:
    models = Path(audit_runs["root"]) / "models"
    return (
        str(models / "tiny-clip.json"),
        str(models / "trained.safetensors"),
        str(models / "random.safetensors"),
    )


def test_audit_on_coco_captions_with_two_tiny_models(
    audit_runs, coco_captions_path, tmp_path, in_process
):
    config, trained, untrained = _models(audit_runs)
    out = tmp_path / "audit"
    args = [
        "audit", "--captions", str(coco_captions_path), "--images", audit_runs["images"],
        "--model", config, "--pretrained", trained, "--model", config, "--pretrained", untrained,
        "--out", str(out), "--device", "cpu", "--no-cache", "--quiet", "--title", "COCO audit",
    ]  # fmt: skip
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "1/3 caption coverage" in result.stdout and "3/3 report" in result.stdout
    assert f"report: {out / 'report' / 'report.html'}" in result.stdout
    summary = json.loads((out / "report" / "report.json").read_text())
    assert summary["title"] == "COCO audit"
    assert [m["label"] for m in summary["models"]] == ["tiny-clip@trained", "tiny-clip@random"]
    assert [c["label"] for c in summary["corpora"]] == ["coco_val2017_captions"]
    # the joined table holds the coverage run's counts beside each model's zero-shot F1
    concepts = pd.read_parquet(out / "report" / "tables" / "concepts.parquet")
    coverage = pd.read_csv(out / "coverage" / "concepts.csv").set_index("concept")
    awareness = pd.read_csv(out / "zeroshot" / "concepts.csv")
    dog = concepts[(concepts["concept"] == "dog") & (concepts["model"] == "tiny-clip@trained")]
    count_columns = [c for c in dog.columns if c.endswith("count")]
    assert coverage.loc["dog", "count"] in dog[count_columns].to_numpy()
    f1 = awareness[(awareness["model"] == "tiny-clip@trained") & (awareness["concept"] == "dog")]
    assert dog["f1"].iloc[0] == pytest.approx(f1["f1"].iloc[0])
    stages = ("coverage", "zeroshot", "report")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "audit" and manifest["status"] == "complete"
    assert manifest["models"] == ["tiny-clip@trained", "tiny-clip@random"]
    # the stages are named relative to the audit folder: a moved or copied audit stays whole
    assert manifest["outputs"] == [f"{stage}/manifest.json" for stage in stages]
    recorded = {k: v for k, v in manifest.items() if k != "command"}  # the command line as typed
    assert str(out) not in json.dumps(recorded)

    before = {stage: (out / stage / "manifest.json").read_text() for stage in stages}
    # in this process: what is checked is the command's exit code and output
    code, stdout, stderr = in_process(*args)  # a finished audit: every stage is reused as it is
    assert code == 0, stderr
    assert "already up to date" in stdout
    assert {stage: (out / stage / "manifest.json").read_text() for stage in stages} == before
    code, _, stderr = in_process(*args, "--profile", "paper")
    assert code == 2
    assert "coverage.profile: 'curated' -> 'paper'" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_an_audit_resumes_and_loads_back(audit_runs, tmp_path):
    import clipaudit

    config, trained, _ = _models(audit_runs)
    captions = ["a dog on a red sofa", "a cat", "a photo of nothing", "a blue horse"]
    out = tmp_path / "audit"

    def audit(**zeroshot: str):
        return clipaudit.run_audit(
            captions,
            audit_runs["images"],
            (config, trained),
            out,
            zeroshot={"cache_dir": None, "device": "cpu", "workers": 0, **zeroshot},
            progress=False,
            echo=lambda _: None,
        )

    first = audit()
    assert first.coverage.concepts.set_index("concept")["count"]["dog"] == 1
    # this very audit again: every stage reused, and the manifest keeps the provenance of the
    # session that computed it (it was rewritten with the code, time and seconds of the check)
    written = (out / "manifest.json").read_bytes()
    same = audit()
    assert same.coverage.reused and same.zeroshot.reused and same.report.reused
    assert (out / "manifest.json").read_bytes() == written
    assert same.manifest == json.loads(written) and same.manifest["status"] == "complete"
    loaded = clipaudit.load_run(out)
    assert loaded.zeroshot.models == ["tiny-clip@trained"]
    pd.testing.assert_frame_equal(loaded.coverage.groups, first.coverage.groups)
    assert loaded.report.summary["pairs"] == first.report.summary["pairs"]
    assert "tiny-clip@trained" in repr(loaded) and loaded.html_path.is_file()
    # a stage deleted by hand: the audit read back was "RUN/coverage does not exist; expected a
    # run folder (the --out of a run)", as though the audit's own folder were mistyped
    shutil.rmtree(out / "coverage")
    with pytest.raises(RunFolderError) as info:
        clipaudit.load_run(out)
    assert str(info.value) == (
        f"{out} holds a complete audit run whose output 'coverage/manifest.json' is gone (1 of "
        "its files missing); run the command that wrote it again to write them anew"
    )
    again = audit()
    assert not again.coverage.reused and again.zeroshot.reused
    pd.testing.assert_frame_equal(clipaudit.load_run(out).coverage.groups, first.coverage.groups)
    with pytest.raises(RunFolderError, match=r"zeroshot.templates: 'none' -> 'simple'"):
        audit(templates="simple")


def test_an_audit_checks_every_stage_before_counting_anything(audit_runs, tmp_path):
    import clipaudit
    from clipaudit.errors import InputError, ModelError, RegistryError, SettingsError

    config, trained, _ = _models(audit_runs)
    captions = ["a dog on a red sofa", "a cat"]
    base = {"cache_dir": None, "device": "cpu", "workers": 0}

    def audit(out, images=audit_runs["images"], model=(config, trained), **options):
        return clipaudit.run_audit(
            captions, images, model, tmp_path / out, progress=False, echo=lambda _: None,
            **{"zeroshot": base, **options},
        )  # fmt: skip

    notes = tmp_path / "images.txt"
    notes.write_text("not images")
    for name, call, error, message in [
        ("a", lambda: audit("a", zeroshot={**base, "batchsize": 8}), SettingsError,
         r"unknown zeroshot option 'batchsize' \(did you mean 'batch_size'\?\)"),
        ("b", lambda: audit("b", report={"titel": "x"}), SettingsError,
         r"unknown report option 'titel' \(did you mean 'title'\?\)"),
        ("c", lambda: audit("c", zeroshot={**base, "registry": "miniworld"}), SettingsError,
         "unknown zeroshot option 'registry'"),
        ("d", lambda: audit("d", zeroshot={**base, "templates": "bogus"}), SettingsError,
         "templates must be one of"),
        ("e", lambda: audit("e", images=tmp_path / "nowhere"), InputError, "does not exist"),
        ("k", lambda: audit("k", images=notes), InputError, "is a file but not a .tar shard"),
        ("l", lambda: audit("l", images=f"{tmp_path}/{{0..1}}.tar"), InputError,
         r"2 shard\(s\) of .* do not exist"),
        ("f", lambda: audit("f", model=(config, str(tmp_path / "x.safetensors"))), ModelError,
         "does not exist"),
        ("g", lambda: audit("g", report={"n_bootstrap": 5}), SettingsError, "at least 10"),
        ("j", lambda: audit("j", zeroshot={**base, "groups": ("Animl",)}), RegistryError,
         r"no group 'Animl' .*\(did you mean 'Animal'\?\)"),
    ]:  # fmt: skip
        with pytest.raises(error, match=message):
            call()
        assert not (tmp_path / name / "coverage").exists()  # refused before the first stage
    # the CLI's --captions are sources: a mistyped one fails, it is never counted as a caption
    with pytest.raises(InputError, match="caption source 'corpsu' does not exist"):
        clipaudit.run_audit(
            clipaudit.CaptionSources(["corpsu"]), audit_runs["images"], (config, trained),
            tmp_path / "i", progress=False, echo=lambda _: None, zeroshot=base,
        )  # fmt: skip
    # the group corrected, the same folder runs (once counted, its coverage would refuse it)
    assert audit("j", zeroshot={**base, "groups": ("Animal",)}).zeroshot.models
    first = audit("h")
    # a mistyped option given to a finished audit is refused, and the audit stays complete
    with pytest.raises(SettingsError, match="unknown report option 'titel'"):
        audit("h", report={"titel": "x"})
    assert json.loads((tmp_path / "h" / "manifest.json").read_text())["status"] == "complete"
    retitled = audit("h", report={"title": "Another title"})  # no other audit: no refusal
    assert retitled.report.summary["title"] == "Another title"
    assert retitled.coverage.reused and first.coverage.n_captions_read == 2


def test_an_audit_takes_every_option_its_messages_suggest(audit_runs, tmp_path, capsys):
    """A corrupt caption shard suggests --skip-bad, images of no selected group --groups: the
    audit takes them, and the other input options of coverage and zeroshot, to the stage's
    settings."""
    import typer

    from clipaudit.cli import app, main

    config, trained, _ = _models(audit_runs)
    captions = tmp_path / "captions"
    captions.mkdir()
    pd.DataFrame(
        {"key": ["a", "b", "c"], "caption": ["a dog on a sofa", "a red cat", "a blue car"]}
    ).to_parquet(captions / "good.parquet")
    (captions / "bad.parquet").write_bytes(b"PAR1 not a parquet file")
    (tmp_path / "empty").mkdir()
    command = typer.main.get_command(app).commands["audit"]
    options = {name for parameter in command.params for name in parameter.opts}
    base = ["audit", "--model", config, "--pretrained", trained, "--device", "cpu", "--quiet"]

    def suggested(*args: str) -> set[str]:
        with pytest.raises(SystemExit) as exited:
            main([*base, *args])
        assert exited.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        found = set(re.findall(r"--[a-z][a-z-]*", line))
        assert found <= options, line  # nothing the audit would answer with "No such option"
        return found

    images = audit_runs["images"]
    corrupt = suggested("-c", str(captions), "-i", images, "-o", str(tmp_path / "a"), "--no-cache")
    assert "--skip-bad" in corrupt
    empty = ("-c", str(captions / "good.parquet"), "-i", str(tmp_path / "empty"))
    assert "--groups" in suggested(*empty, "-o", str(tmp_path / "b"), "--no-cache")
    with pytest.raises(SystemExit):  # a caption split where the captions have none
        main([*base, *empty[:2], "-i", images, "-o", str(tmp_path / "d"), "--caption-split", "val"])
    assert "'val' selects a split" in capsys.readouterr().err

    # a hub dataset's options reach the image stage, which refuses them for a folder of images
    with pytest.raises(SystemExit):
        main(
            [
                *base, *empty[:2], "-i", images, "-o", str(tmp_path / "e"),
                "--label-field", "concept", "--image-column", "picture", "--image-split", "test",
            ]
        )  # fmt: skip
    error = capsys.readouterr().err
    assert "a folder of images" in error and "--image-split in clipaudit audit" in error
    assert "--label-field" in error and "--image-column" in error

    out = tmp_path / "c"
    main(
        [
            *base, "-c", str(captions), "-i", images, "-o", str(out), "--skip-bad",
            "--groups", "Animal, Color", "--id-column", "key",
            "--cache-dir", str(tmp_path / "cache"), "--caption-split", "train",
            "--max-pixels", "100000", "--all-concepts", "--decode-workers", "0",
        ]
    )  # fmt: skip
    coverage = json.loads((out / "coverage" / "manifest.json").read_text())
    assert coverage["n_captions_read"] == 3
    assert [Path(s["shard"]).name for s in coverage["skipped_shards"]] == ["bad.parquet"]
    assert set(pd.read_csv(out / "zeroshot" / "groups.csv")["group"]) == {"Animal", "Color"}
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert {c["id"] for i in coverage["inputs"] for c in i["columns"]} == {"key"}
    assert settings["zeroshot"]["groups"] == ["Animal", "Color"]
    assert settings["zeroshot"]["max_pixels"] == 100_000
    zeroshot = json.loads((out / "zeroshot" / "manifest.json").read_text())
    assert zeroshot["settings"]["max_pixels"] == 100_000
    assert settings["zeroshot"]["all_concepts"] is zeroshot["settings"]["all_concepts"] is True
    assert zeroshot["options"]["workers"] == 0  # --decode-workers: the zero-shot stage's
    assert len(list((tmp_path / "cache").glob("*/*.emb.npy"))) == 1  # the one model's shard


def test_run_audit_takes_coverage_settings_as_a_dict_and_names_a_mistyped_one(audit_runs, tmp_path):
    import clipaudit
    from clipaudit.errors import SettingsError

    config, trained, _ = _models(audit_runs)

    def audit(out: str, coverage: object):
        return clipaudit.run_audit(
            ["a dog", "a red cat"], audit_runs["images"], (config, trained), tmp_path / out,
            coverage=coverage, zeroshot={"cache_dir": None, "device": "cpu", "workers": 0},
            progress=False, echo=lambda _: None,
        )  # fmt: skip

    with pytest.raises(SettingsError, match=r"'wrkers' \(did you mean 'workers'\?\)"):
        audit("a", {"wrkers": 2})
    with pytest.raises(SettingsError, match="coverage must be CoverageSettings, a dict"):
        audit("b", ["paper"])
    assert audit("c", {"profile": "paper"}).coverage.manifest["profile"] == "paper"


def test_an_audit_whose_run_folder_lies_inside_its_images_is_refused_before_coverage(audit_runs):
    import clipaudit
    from clipaudit.errors import SettingsError

    config, trained, _ = _models(audit_runs)
    out = Path(audit_runs["images"]) / "audit-run"
    with pytest.raises(SettingsError, match=r"lies inside the image source"):
        clipaudit.run_audit(["a dog"], audit_runs["images"], (config, trained), out, progress=False)
    assert not out.exists()  # refused before the run folder (and the coverage stage) was made


@pytest.mark.parametrize(("given", "expected"), [([], 7), (["-w", "1"], 1)])
def test_an_audit_counts_on_every_core_unless_told(given, expected, monkeypatch, tmp_path):
    """coverage count uses every core by default; the audit's coverage stage used one, so a
    LAION audit counted on one process unless the user knew to pass --workers."""
    import clipaudit.audit
    from clipaudit.cli import main

    seen = {}

    def fake_audit(captions, images, models, out, **options):
        seen["workers"] = options["coverage"].workers
        raise SystemExit(0)

    monkeypatch.setattr(clipaudit.audit, "run_audit", fake_audit)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)  # not 1: the old default must not pass
    args = ["audit", "-c", str(tmp_path), "-i", str(tmp_path), "-m", "ViT-B-32", "-o", "o"]
    with pytest.raises(SystemExit):
        main([*args, *given])
    assert seen == {"workers": expected}


def test_an_audit_killed_while_a_rerun_changes_a_stage_is_not_complete_and_resumes(
    audit_runs, tmp_path, capsys
):
    """A finished audit rerun with a model added, killed (kill -9) while the new model ran: its
    manifest kept saying complete, with the old models, while its zero-shot stage was running;
    read back, the message sent the user to the stage's folder as though it were a run of its
    own."""
    import signal
    import subprocess
    import sys

    import clipaudit
    from clipaudit.cli import main

    config, trained, untrained = _models(audit_runs)
    captions = tmp_path / "captions.parquet"
    pd.DataFrame({"caption": ["a dog on a red sofa", "a cat", "a blue horse"]}).to_parquet(captions)
    out = tmp_path / "audit"
    args = [
        "audit", "-c", str(captions), "-i", audit_runs["images"], "-o", str(out),
        "-m", config, "-p", trained, "--device", "cpu", "--no-cache", "--quiet",
    ]  # fmt: skip
    main(args)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    added = [*args, "-m", config, "-p", untrained]
    # the rerun, stopped for good inside the one model it has to evaluate (the first is a unit)
    child = (
        "import sys\n"
        "import clipaudit.zeroshot\n"
        "from clipaudit.cli import main\n"
        "def evaluating(spec, *args, **kwargs):\n"
        "    print('evaluating', spec.label, flush=True)\n"
        "    sys.stdin.read()\n"
        "clipaudit.zeroshot._evaluate_spec = evaluating\n"
        "main(sys.argv[1:])\n"
    )

    def stopped(by: signal.Signals) -> subprocess.CompletedProcess:
        rerun = subprocess.Popen(
            [sys.executable, "-c", child, *added],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            while (line := rerun.stdout.readline()) and not line.startswith("evaluating"):
                pass
            assert line.strip() == "evaluating tiny-clip@random"
        finally:
            rerun.send_signal(by)
            stdout, stderr = rerun.communicate()
        return subprocess.CompletedProcess(rerun.args, rerun.returncode, stdout, stderr)

    stopped(signal.SIGKILL)
    for manifest in (out / "manifest.json", out / "zeroshot" / "manifest.json"):
        assert json.loads(manifest.read_text())["status"] == "running"

    expected = (
        f"{out} holds an audit run whose zeroshot stage is running, not complete; run the "
        "command that wrote it again to resume it"
    )
    with pytest.raises(RunFolderError) as info:
        clipaudit.load_run(out)
    assert str(info.value) == expected
    with pytest.raises(SystemExit) as exited:  # the CLI reads it back through the report
        main(["report", str(out), "-o", str(tmp_path / "report")])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {expected}"

    # SIGTERM (Slurm's, Kubernetes') at the same point: the stage and the audit say so, as
    # after Ctrl-C, and the folder is no longer locked
    terminated = stopped(signal.SIGTERM)
    assert terminated.returncode == 143
    assert terminated.stderr.strip().splitlines()[-1] == (
        "stopped by SIGTERM; finished work is kept: run the same command again to resume"
    )
    for manifest in (out / "manifest.json", out / "zeroshot" / "manifest.json"):
        manifest = json.loads(manifest.read_text())
        assert (manifest["status"], manifest["reason"]) == (
            "failed",
            "stopped by SIGTERM; run the same command again to resume",
        )
    assert not list(out.glob("**/.lock"))

    main(added)  # the same command finishes it
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["models"]) == (
        "complete",
        ["tiny-clip@trained", "tiny-clip@random"],
    )
    assert clipaudit.load_run(out).zeroshot.models == manifest["models"]


def test_an_audit_of_another_registrys_images_is_refused_before_counting_and_then_restarts(
    audit_runs, tmp_path
):
    """`clipaudit audit` of the miniworld's pictures without `-r miniworld` counted the whole
    corpus under cai2025, then failed on the images' names; the corrected command was then
    refused ("run the same command to resume it")."""
    import clipaudit
    from clipaudit.errors import InputError
    from clipaudit.registry import load_registry
    from tests.tiny_clip import write_image_folder

    miniworld = load_registry("miniworld")
    layout = {g.name: dict.fromkeys((c.name for c in miniworld.concepts_in(g.name)), 1)
              for g in miniworld.groups}  # fmt: skip
    images = tmp_path / "eval"
    write_image_folder(images, layout)
    config, trained, _ = _models(audit_runs)
    out = tmp_path / "audit"

    def audit(**options):
        return clipaudit.run_audit(
            ["a red circle on sand", "a blue star"], images, (config, trained), out,
            progress=False, echo=lambda _: None,
            zeroshot={"cache_dir": None, "device": "cpu", "workers": 0}, **options,
        )  # fmt: skip

    with pytest.raises(InputError) as info:
        audit()
    message = str(info.value)
    # groups cai2025 lacks (Shape, Size, ...) and concepts of groups both have (Color's orange)
    assert "these are the groups and concepts of the built-in registry 'miniworld': pass " \
        "--registry miniworld" in message  # fmt: skip
    assert message.index("--registry miniworld") < message.index("'Position'")
    assert not (out / "coverage").exists()  # refused before the first stage
    result = audit(registry="miniworld")  # the corrected command is not refused
    assert result.manifest["status"] == "complete"
    assert result.manifest["registry"]["name"] == "miniworld"


def test_an_audit_with_its_groups_spelled_or_ordered_otherwise_is_the_same_audit(
    audit_runs, tmp_path
):
    """The groups selected make the audit, not how they were typed: `--groups Color,Animal` and
    `--groups animal,color` select the same groups, so the second resumes the first."""
    import clipaudit

    config, trained, _ = _models(audit_runs)

    def audit(groups):
        return clipaudit.run_audit(
            ["a dog on a red sofa", "a cat"], audit_runs["images"], (config, trained),
            tmp_path / "audit", progress=False, echo=lambda _: None,
            zeroshot={"cache_dir": None, "device": "cpu", "workers": 0, "groups": groups},
        )  # fmt: skip

    first = audit(("Color", "Animal"))
    again = audit(("animal", "color", "Animal"))
    assert again.coverage.reused and again.zeroshot.reused and again.report.reused
    assert again.manifest["settings"] == first.manifest["settings"]
    assert first.manifest["settings"]["zeroshot"]["groups"] == ["Animal", "Color"]


def test_decode_workers_are_the_zero_shot_stages_and_default_as_zeroshot_does(
    monkeypatch, in_process
):
    """The audit's --workers are coverage's: the zero-shot stage's decoding workers had no
    option, and always were its default."""
    from types import SimpleNamespace

    import clipaudit.audit
    from clipaudit import zeroshot
    from clipaudit.models import ModelSpec
    from clipaudit.zeroshot import ZeroShotSettings

    given = []

    def run_audit(*args, **options):
        given.append(options)
        return SimpleNamespace(report=SimpleNamespace(headline=lambda: ""), html_path="")

    monkeypatch.setattr(clipaudit.audit, "run_audit", run_audit)
    base = ("audit", "-c", "captions", "-i", "images", "-m", "RN50", "-o", "out")
    assert in_process(*base, "--decode-workers", "3", "--workers", "5")[0] == 0
    assert given[-1]["zeroshot"]["workers"] == 3 and given[-1]["coverage"].workers == 5
    assert in_process(*base)[0] == 0
    # the settings' default, as `clipaudit zeroshot` leaves it
    assert "workers" not in given[-1]["zeroshot"]
    assert ZeroShotSettings((ModelSpec("RN50"),), "images").workers == zeroshot.default_workers()
    code, _, error = in_process(*base, "--decode-workers", "-1")  # not the zero-shot's --workers
    assert (
        code == 2 and "Invalid value for '--decode-workers': -1 is not in the range x>=0" in error
    )
    assert len(given) == 2
