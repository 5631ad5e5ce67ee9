"""The command line as a user meets it: `python -m clipaudit`, help, and one-line errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``clipaudit ARGS`` in a new process; ``env``: variables set on top of this one's."""
    return subprocess.run(
        [sys.executable, "-m", "clipaudit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_help_lists_the_command_groups_without_loading_heavy_libraries():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("concepts", "coverage", "zeroshot", "theory", "demo"):
        assert command in result.stdout
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, clipaudit.cli; print(sorted({'torch', 'open_clip', 'spacy', 'faiss', 'pandas', 'sklearn'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr


def test_validate_reports_the_size_of_the_builtin_registry():
    result = run_cli("concepts", "validate", "concepts/cai2025.yaml")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "146 concepts in 15 groups" in text


def test_a_bad_registry_is_one_line_on_stderr_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "groups:\n  - name: A\n    category: c\nconcepts:\n  - name: x\n    group: A\n    gloss: g\n    synonym: [x]\n"
    )
    result = run_cli("concepts", "validate", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {bad}:8: unknown key 'synonym'")
    assert "Traceback" not in result.stderr


def test_show_and_list(tmp_path):
    shown = run_cli("concepts", "show", "police officer")
    assert shown.returncode == 0 and "police officer" in shown.stdout
    listed = run_cli("concepts", "list", "--group", "Emotion")
    assert listed.returncode == 0 and "nervous" in listed.stdout and "dog" not in listed.stdout
    missing = run_cli("concepts", "show", "hoody")
    assert missing.returncode == 2 and "did you mean 'hoodie'" in missing.stderr


def _leaf_commands() -> list[list[str]]:
    """Every command path of the app (``coverage count``, ``zeroshot``, ...), found from the app
    itself so that a new command is covered without editing this test."""
    import typer.main

    from clipaudit.cli import app

    def walk(command, path):
        children = getattr(command, "commands", None)
        if not children:
            return [path]
        return [p for name, child in children.items() for p in walk(child, [*path, name])]

    return walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("command", _leaf_commands(), ids=" ".join)
def test_a_usage_mistake_is_two_lines_and_exit_code_2(command, capsys):
    from clipaudit.cli import main

    with pytest.raises(SystemExit) as exited:
        main([*command, "--no-such-flag"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 2, error
    assert error[0] == "error: No such option: --no-such-flag"
    assert error[1].startswith(f"Usage: clipaudit {' '.join(command)} ")
    assert "Traceback" not in "\n".join(error)


def test_a_full_disk_met_by_any_command_is_one_line_with_the_fix(monkeypatch, capsys):
    """A write refused by a full or read-only disk, wherever a command meets it, is the one place
    in the CLI's message and exit code 2, not a traceback."""
    import errno

    from clipaudit.cli import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/demo/world/pixels.npy")

    monkeypatch.setattr("clipaudit.cli.concepts.load_registry", full)
    with pytest.raises(SystemExit) as exited:
        main(["concepts", "list"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "error: cannot write /runs/demo/world/pixels.npy (No space left on device); free space on "
        "its disk or make it writable, then run the same command again: it resumes after what "
        "finished"
    ]
    monkeypatch.setattr(
        "clipaudit.cli.concepts.load_registry",
        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")),
    )
    with pytest.raises(OSError, match="I/O error"):  # other OS errors are no disk to free
        main(["concepts", "list"])


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (["coverage", "count", "corpus.parquet"], "error: Missing option '--out' / '-o'."),
        (
            ["coverage", "count", "x", "--out", "y", "--workers", "two"],
            "error: Invalid value for '--workers' / '-w': 'two' is not a valid int.",
        ),
        (
            ["coverage", "count", "x", "--out", "y", "--wokers", "2"],
            "error: No such option: --wokers",
        ),
        (["covrage"], "error: No such command 'covrage'. Did you mean 'coverage'?"),
        (["coverage", "cont"], "error: No such command 'cont'. Did you mean 'count'?"),
    ],
)
def test_usage_errors_name_the_option_and_what_was_expected(args, first_line):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(first_line), result.stderr
    assert lines[1].startswith("Usage: clipaudit ")


def test_sweep_options_without_a_sweep_are_refused_before_any_work(tmp_path):
    result = run_cli("demo", "--rates", "0,1", "--out", str(tmp_path / "demo"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --sweep-kind and --rates shape a sweep: add --sweep GROUP (e.g. Texture)"
    ]
    assert not (tmp_path / "demo").exists()


def test_demo_threads_reach_the_training_settings(tmp_path):
    """--threads is the training's thread count (a fixed count repeats the weights bit for bit):
    a count the training settings refuse is refused before any work."""
    result = run_cli("demo", "--threads", "0", "--out", str(tmp_path / "demo"))
    assert result.returncode == 2
    assert "threads" in result.stderr and "0" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "demo").exists()


def test_brackets_in_paths_and_captions_print_as_written(tmp_path):
    """rich reads "[/b]" as markup; the CLI prints user strings as they are."""
    captions = tmp_path / "c[red].txt"
    captions.write_text("a dog [/b] on the grass :cat:\n")
    out = tmp_path / "o[/b]"
    result = run_cli("coverage", "count", str(captions), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"results in {out}" in result.stdout
    assert (out / "manifest.json").is_file()
    from clipaudit.cli._common import plain_console

    console = plain_console()
    with console.capture() as captured:
        console.print("a dog [/b] :cat:")
    assert captured.get() == "a dog [/b] :cat:\n"


def test_a_path_longer_than_the_terminal_prints_whole_on_its_line(tmp_path):
    """rich broke a line at the terminal's width (80 columns where output is piped), so a long
    run folder printed as "results in" and the path split over two lines, which no one can
    copy; the table keeps its width."""
    out = tmp_path / ("a-run-folder-with-a-long-name-" * 3)
    captions = tmp_path / "c.txt"
    captions.write_text("a dog on the grass\n")
    result = run_cli("coverage", "count", str(captions), "--out", str(out), env={"COLUMNS": "60"})
    assert result.returncode == 0, result.stderr
    assert len(f"results in {out}") > 60
    assert f"results in {out}" in result.stdout.splitlines()
    table = [line for line in result.stdout.splitlines() if line.startswith(("┏", "│", "└"))]
    assert table and all(len(line) <= 60 for line in table)


def test_library_errors_are_one_line_and_flags_show_as_flags(tmp_path):
    result = run_cli(
        "coverage", "count", str(tmp_path), "--out", str(tmp_path / "r"), "--max-chars", "0"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: max_caption_chars (--max-chars) must be a positive integer, got 0"
    ]
    helped = run_cli("coverage", "count", "--help")
    assert "<bool>" not in helped.stdout and "--per-caption " in helped.stdout
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": 1, "caption": "a dog", "concepts": ["dog"]}\n')
    fitted = run_cli("coverage", "calibrate", str(gold), "--out", str(tmp_path))
    assert fitted.returncode == 2 and "is a folder; give a file to write" in fitted.stderr
    scored = run_cli("coverage", "eval", str(gold), "--json", str(tmp_path))
    assert scored.returncode == 2 and scored.stdout == ""  # refused before any scoring
    assert (
        scored.stderr.strip()
        == f"error: --json {tmp_path} is a folder; give a file to write, e.g. {tmp_path / 'eval.json'}"
    )


def test_ctrl_c_is_one_line_exit_130_and_no_worker_tracebacks(ctrl_c_count):
    ctrl_c_count("--workers", "2")  # the checks are the fixture's


def test_a_mistyped_caption_source_is_an_error_never_a_caption(tmp_path):
    """The CLI's arguments are caption sources: a name that is none fails (before, a list of
    strings that named nothing was counted as captions: "typo_dir" as one caption)."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "c.txt").write_text("a dog\n")
    result = run_cli("coverage", "count", "corpsu", "--out", "run", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "caption source 'corpsu' does not exist" in result.stderr
    assert not (tmp_path / "run" / "concepts.csv").exists()


def test_semantic_settings_are_refused_in_one_line_before_any_encoder_loads(tmp_path):
    """Each of these was refused only after the encoder had loaded (seconds), or not at all."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "bad.json").write_text("{not json")
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        "".join(f'{{"id": {i}, "caption": "a dog", "concepts": ["dog"]}}\n' for i in range(3))
    )
    count = ["coverage", "count", str(tmp_path), "--out", str(tmp_path / "run")]
    cases = [
        ([*count, "--method", "semantic", "--embedding-store", str(tmp_path / "afile")],
         f"embedding_store (--embedding-store) '{tmp_path / 'afile'}' is a file; name a folder"),
        ([*count, "--method", "checked", "--calibration", str(tmp_path / "bad.json")],
         f"{tmp_path / 'bad.json'}: unreadable calibration file"),
        (["coverage", "calibrate", str(gold), "--out", str(tmp_path / "c.json"), "--folds", "1"],
         "folds (--folds) must be an integer >= 2, got 1"),
        (["coverage", "query", str(tmp_path / "run"), "a fox", "--threshold", "5"],
         "threshold must be a cosine in [-1, 1], got 5.0"),
        (["coverage", "query", str(tmp_path / "run"), ""], "a query text must hold a word, got ''"),
        (["coverage", "index", str(tmp_path / "run"), "--query", "x", "--threshold", "-2"],
         "threshold must be a cosine in [-1, 1], got -2.0"),
        (["coverage", "index", str(tmp_path / "run"), "--threshold", "0.4"],  # no --query
         "--threshold applies to --query; got --threshold 0.4 without it: add --query TEXT, or "
         "ask after the build: clipaudit coverage query RUN TEXT --threshold 0.4"),
    ]  # fmt: skip
    for args, message in cases:
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "bad.json", "gold.jsonl"]


def test_a_registry_value_of_the_wrong_kind_is_named_in_words(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  - [Animal, common]\nconcepts: []\n")
    result = run_cli("concepts", "validate", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {bad}:2: a group must be a mapping of keys to values, got a list "
        "['Animal', 'common']"
    )  # not the loader's own class (_LineList)


def test_theory_tables_keep_names_whole_in_an_80_column_terminal(monkeypatch):
    """A log or a terminal of 80 columns (rich's width when output is piped) shows every
    configuration name and every cell whole, never cut with an ellipsis."""
    from rich.console import Console

    from clipaudit.cli import theory

    printed = io.StringIO()
    monkeypatch.setattr(theory, "console", Console(file=printed, width=80, markup=False))
    names = [f"s{i}" for i in range(1, 11)]
    variables = [
        {"variable": name, "predicted_identified": True, "ceiling": 1.0, "x_linear": 0.96,
         "x_nonlinear": 0.98, "t_linear": -0.0, "t_nonlinear": 0.99, "agrees": True}
        for name in [*names, "s~1", "m_x"]
    ]  # fmt: skip
    summary = {
        "config": "ind_sel1-10_pert1-2_seed0",  # the longest name of the default sweep
        "agrees": False,
        "description": "independent latents",
        "predicted_identified": names,
        "variables": variables,
    }
    theory._print([summary], verbose=True)
    shown = printed.getvalue()
    assert "…" not in shown, shown
    assert "ind_sel1-10_pert1-2_seed0" in shown and "identified" in shown


def test_zeroshot_model_labels_are_never_cut_in_an_80_column_terminal(monkeypatch):
    """Two LAION checkpoints of one architecture differ only at the end of their labels: the
    table of macro-F1 shows each label whole (wrapped), never cut to a shared prefix."""
    from types import SimpleNamespace

    import pandas as pd
    from rich.console import Console

    from clipaudit.cli import zeroshot

    printed = io.StringIO()
    monkeypatch.setattr(zeroshot, "console", Console(file=printed, width=80, markup=False))
    labels = ["ViT-B-32@laion400m_e32", "ViT-B-32@laion2b_s34b_b79k"]
    groups = ["Animal", "Post-processing"]
    timings = {"images_per_s": 100.0}
    info = {
        "timings": timings,
        "n_encoded": 10,
        "n_cached": 0,
        "device": "cpu",
        "precision": "fp32",
    }
    run = SimpleNamespace(
        manifest={
            "skipped_images": [],
            "templates": {"setting": "none"},
            "models": [{**info, "label": label} for label in labels],
            "skipped_groups": [],
            "skipped_concepts": [],
        },
        groups=pd.DataFrame(  # one row per group and model, as a run's groups table has
            {
                "group": groups * len(labels),
                "model": [label for label in labels for _ in groups],
                "n_images": 5,
            }
        ),
        macro_f1_table=lambda: pd.DataFrame({label: [0.5, 0.25] for label in labels}, index=groups),
        reused=False,
        out=Path("runs/zs"),
    )
    zeroshot._print_run(run)
    shown = printed.getvalue()
    header = [line.split("┃")[1:-1] for line in shown.splitlines() if line.startswith("┃")]
    columns = ["".join(cell.strip() for cell in column) for column in zip(*header, strict=True)]
    assert "…" not in shown and columns == ["group", "images", *labels], shown


def _query_lines(monkeypatch, nearest: list[dict], count: int, width: int) -> list[str]:
    """The lines `coverage query "a fox"` prints when the search finds ``count`` captions, of
    which ``nearest`` (each counted) are shown, on a terminal ``width`` columns wide."""
    from types import SimpleNamespace

    from clipaudit.cli import _common, coverage

    printed = io.StringIO()
    console = _common._PlainConsole(file=printed, width=width, markup=False, emoji=False)
    monkeypatch.setattr(coverage, "console", console)
    found = SimpleNamespace(
        count=count,
        threshold=0.5,
        method="flat",
        seconds=0.002,
        nearest=[{**near, "counted": True} for near in nearest],
        run_concept=None,
    )
    monkeypatch.setattr("clipaudit.coverage_semantic.query_run", lambda *a, **k: found)
    coverage._query(Path("run"), "a fox", None, 2)
    return printed.getvalue().splitlines()


def test_query_prints_web_captions_inert_and_one_to_a_line(monkeypatch):
    """A caption's escape sequences, line breaks and direction overrides reach the terminal as
    spaces: alt-text cannot recolour the terminal, rename its window or fake a line of output."""
    long = "a red fox in the snow, " * 5  # wider than the 80 columns of a pipe
    nearest = [
        {"id": "7\x1b[2J", "score": 0.91, "caption": "red fox\x1b]0;pwned\x07 in snow"},
        {"id": "8", "score": 0.52, "caption": "line one\r\n9  0.99  forged\u202egpj.exe"},
        {"id": "9", "score": 0.50, "caption": long},
    ]
    lines = _query_lines(monkeypatch, nearest, count=1, width=80)
    assert lines == [
        "1 caption with cosine >= 0.500 to 'a fox' (flat, 2 ms)",
        "  0.910  7 [2J  red fox ]0;pwned  in snow",
        "  0.520  8  line one 9  0.99  forged gpj.exe",
        f"  0.500  9  {long}",
    ]


def test_count_says_when_per_caption_ids_cannot_be_joined_back(tmp_path):
    """Two files numbered from 0 each: matches.parquet keeps every row, and the summary says
    how many ids are missing or repeated, and how to name a unique id column."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text('{"id": 0, "caption": "a dog"}\n{"caption": "a cat"}\n')
    (corpus / "b.jsonl").write_text('{"id": 0, "caption": "a red bus"}\n')
    out = tmp_path / "run"
    args = ["coverage", "count", str(corpus), "--out", str(out), "--no-progress"]
    result = run_cli(*args, "--per-caption")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert "matches.parquet: 1 row without an id and 1 whose id an earlier row has" in said
    assert "--id-column" in said
    plain = run_cli(*args[:-2], str(tmp_path / "plain"), "--no-progress")
    assert plain.returncode == 0 and "without an id" not in plain.stdout


def test_control_characters_in_a_message_never_reach_the_terminal(tmp_path, monkeypatch, capsys):
    """A path (or a caption, a label) named in an error is text a user or the web wrote: an
    escape sequence in it retitled the terminal, and a line break split the one-line message."""
    from clipaudit.cli import main
    from clipaudit.registry import list_registries

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["report", "runs\x1b]0;owned\x07/cov\nerase", "--out", "report"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "error: runs ]0;owned /cov erase does not exist; expected a run folder (the --out of a "
        "run)\n"
    )
    with pytest.raises(SystemExit) as exited:
        main(["concepts", "show", "dog", "--registry", "x\x1b[2J.yaml"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "error: registry file 'x\\x1b[2J.yaml' does not exist; pass an existing YAML file or a "
        f"built-in registry name ({', '.join(list_registries())})\n"
    )


def test_file_names_a_command_prints_are_inert(tmp_path):
    """A shard or image named with an escape sequence (a corpus off the web) reached the terminal
    as it was when a command listed it: rich passes ESC through."""
    import pandas as pd

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pd.DataFrame({"caption": ["a dog", "a cat"]}).to_parquet(corpus / "good.parquet")
    (corpus / "bad\x1b[2J.parquet").write_bytes(b"PAR1 not a parquet file")
    counted = run_cli(
        "coverage", "count", "corpus", "--out", "run", "--skip-bad", "--no-progress", cwd=tmp_path
    )
    assert counted.returncode == 0, counted.stderr
    skipped = [line for line in counted.stdout.splitlines() if line.startswith("skipped shard")]
    assert len(skipped) == 1 and skipped[0].startswith("skipped shard corpus/bad [2J.parquet: ")
    assert "\x1b" not in counted.stdout


def test_eval_refuses_a_json_path_under_a_file_before_it_scores(tmp_path, monkeypatch, capsys):
    """--json under a file (a typo of one folder) was a FileExistsError traceback once every
    caption had been scored."""
    from clipaudit.cli import main

    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": 1, "caption": "a dog", "concepts": ["dog"]}\n')
    (tmp_path / "scores").write_text("a file, not a folder")
    scored = []
    monkeypatch.setattr("clipaudit.goldeval.evaluate_gold", lambda *a, **k: scored.append(a))
    with pytest.raises(SystemExit) as exited:
        main(["coverage", "eval", str(gold), "--json", str(tmp_path / "scores" / "eval.json")])
    assert exited.value.code == 2 and scored == []
    assert capsys.readouterr().err == (
        f"error: --json {tmp_path / 'scores' / 'eval.json'} cannot be made: "
        f"{tmp_path / 'scores'} is a file; give the path of a JSON file to write (its folder is "
        "made when missing)\n"
    )


def test_every_command_with_a_progress_bar_is_quieted_by_the_same_option():
    """zeroshot, audit, demo, report and theory take --quiet/-q; coverage count took only
    --no-progress, so a script quieting every stage failed on it with "No such option"."""
    import typer.main

    from clipaudit.cli import app

    def options(path: list[str]) -> set[str]:
        command = typer.main.get_command(app)
        for name in path:
            command = command.commands[name]
        return {name for parameter in command.params for name in parameter.opts}

    quieted = {
        " ".join(path): "--quiet" in options(path) and "-q" in options(path)
        for path in _leaf_commands()
        if options(path) & {"--quiet", "--progress"}
    }
    assert "coverage count" in quieted and "zeroshot" in quieted
    assert all(quieted.values()), quieted


def test_coverage_count_keeps_the_records_of_inputs_dropped_and_prune_removes_them(tmp_path):
    """Counted again without a file, the run says it kept that file's record; --prune removes it
    and says so; the counts are the named file's alone either way."""
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("a red cat\n")
    second.write_text("a dog\n")
    out = tmp_path / "run"
    assert (
        run_cli("coverage", "count", str(first), str(second), "-o", str(out), "-q").returncode == 0
    )
    kept = run_cli("coverage", "count", str(second), "-o", str(out), "-q")
    assert kept.returncode == 0, kept.stderr
    assert "1 no longer in the inputs kept (--prune removes)" in " ".join(kept.stdout.split())
    assert len(list((out / "units").glob("*.json"))) == 2
    pruned = run_cli("coverage", "count", str(second), "-o", str(out), "-q", "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "1 no longer in the inputs removed" in " ".join(pruned.stdout.split())
    assert len(list((out / "units").glob("*.json"))) == 1
    import pandas as pd

    counts = pd.read_csv(out / "concepts.csv").set_index("concept")["count"]
    assert (counts["dog"], counts["cat"]) == (1, 0)


def _argument_metavars(command) -> list[str]:
    """An argument as the usage convention writes it, from the parameter itself: its name
    upper-case, "..." when it takes several, in brackets when it may be left out."""
    shown = []
    for parameter in command.params:
        if parameter.param_type_name != "argument":
            continue
        name = parameter.name.upper() + ("..." if parameter.nargs != 1 else "")
        shown.append(name if parameter.required else f"[{name}]")
    return shown


def test_arguments_read_as_upper_case_names_in_usage_help_and_errors(capsys):
    """typer wrote a required argument as "{runs}..." in the usage and "runs..." in the help:
    every command's arguments now read as RUNS..., NAME, RUN TEXT."""
    import typer.main

    from clipaudit.cli import app, main

    helped = run_cli("report", "--help")
    assert helped.stdout.splitlines()[0] == "Usage: clipaudit report [OPTIONS] RUNS..."
    assert "\n  RUNS...  Run folders" in helped.stdout
    queried = run_cli("coverage", "query", "--help")
    assert queried.stdout.splitlines()[0] == "Usage: clipaudit coverage query [OPTIONS] RUN TEXT"
    with_arguments = 0
    for path in _leaf_commands():
        command = typer.main.get_command(app)
        for name in path:
            command = command.commands[name]
        expected = _argument_metavars(command)
        with_arguments += bool(expected)
        main([*path, "--help"])
        shown = capsys.readouterr().out
        usage = " ".join(["Usage: clipaudit", *path, "[OPTIONS]", *expected])
        assert shown.splitlines()[0] == usage, (path, shown)
        for metavar in expected:  # the Arguments section names them as the usage does
            assert f"\n  {metavar.strip('[]')} " in shown, (path, metavar, shown)
    assert with_arguments >= 6  # report, concepts show/validate, coverage count/eval/... at least
    with pytest.raises(SystemExit) as exited:
        main(["report", "--out", "r"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == "error: Missing argument 'RUNS...'."


def test_help_lists_the_commands_as_a_user_meets_them():
    """Commands were listed as registered (zeroshot first, the groups last): the demo comes
    first, then the audit, its parts in the order they run, and the world and theory."""
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("\nCommands:\n", 1)[1]
    listed = [
        line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.strip()
    ]
    assert listed == [
        "demo", "audit", "concepts", "coverage", "zeroshot", "report", "world", "theory"
    ]  # fmt: skip


def test_a_short_flag_means_the_same_option_in_every_command():
    """-m was --method in `coverage count` and --model in `audit`, which took `-m both` for a
    model named "both"; -p was --profile and --pretrained, -c --column and --captions, -g --group
    and --groups, and `coverage index -q` once --query. A short flag is one long option wherever
    it is taken, groups' own options too."""
    import typer.main

    from clipaudit.cli import app

    meanings: dict[str, dict[str, list[str]]] = {}

    def walk(command, path):
        for parameter in command.params:
            names = [*parameter.opts, *getattr(parameter, "secondary_opts", [])]
            # an option with no long name (-k) is known by its parameter's name
            meaning = "/".join(n for n in names if n.startswith("--")) or parameter.name
            for short in (n for n in names if len(n) == 2 and n.startswith("-")):
                meanings.setdefault(short, {}).setdefault(meaning, []).append(path or "clipaudit")
        for name, child in getattr(command, "commands", {}).items():
            walk(child, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    assert "coverage count" in meanings["-o"]["--out"]  # the walk reached the subcommands
    clashes = {short: found for short, found in meanings.items() if len(found) > 1}
    assert not clashes, clashes


def test_printed_counts_say_one_in_the_singular(tmp_path, monkeypatch):
    """ "from 1 shards", "1 worker(s)", "1 parts encoded": a count of one reads in the singular,
    any other in the plural."""
    from clipaudit.cli import _common, coverage

    captions = tmp_path / "a.txt"
    captions.write_text("a red cat\n")
    counted = run_cli(
        "coverage", "count", str(captions), "-o", str(tmp_path / "r"), "-w", "1", "-q"
    )
    assert counted.returncode == 0, counted.stderr
    text = " ".join(counted.stdout.split())
    assert "1 caption read (0 empty) from 1 shard this session: 1 shard counted;" in text, text
    assert text.endswith(f"(1 worker) results in {tmp_path / 'r'}"), text
    assert "(s)" not in text
    timings = {
        "session_seconds": 1.0, "rows_this_session": 4, "shards_this_session": 2,
        "shards_resumed": 1, "shards_replaced": 1, "shards_kept_unused": 2, "workers": 2,
    }  # fmt: skip
    line = coverage.session_line(timings, reused=False)
    assert line.startswith("this session: 2 shards counted (1 of them recounted: ")
    assert line.endswith(
        ", 1 reused from an earlier session, 2 no longer in the inputs kept (--prune removes); "
        "1.0 s, 4 captions/s (2 workers)"
    )
    printed = io.StringIO()
    console = _common._PlainConsole(file=printed, width=400, markup=False, emoji=False)
    monkeypatch.setattr(coverage, "console", console)
    session = {
        "parts_encoded": 1, "rows_encoded": 1, "seconds": 0.5, "captions_per_s": 2,
        "parts_resumed": 1,
    }  # fmt: skip
    calibration = {
        "calibrated": True, "path": "/cal.json",
        "shared": {"semantic": 0.5, "sense": -2.0, "additions": 2.0},
        "concepts_fitted": {"semantic": 1, "sense": 0, "additions": 0},
        "concepts_not_calibrated": {"absent": ["dog"], "changed": ["cat", "red"]},
    }  # fmt: skip
    semantic = {
        "encoder": {"spec": "st:x", "dim": 8, "weights": "ab" * 32},
        "calibration": calibration,
        "embeddings": {"store": "embeddings", "this_session": session},
    }
    coverage._print_semantic(semantic, tmp_path)
    lines = printed.getvalue().splitlines()
    assert "thresholds of their own for 1 concept (semantic), 0 (sense)" in lines[1]
    assert "1 concept absent from it takes its shared thresholds: dog" in lines
    assert "2 concepts changed since it was fitted take its shared thresholds: cat, red" in lines
    assert lines[-1] == (
        f"embeddings in {tmp_path / 'embeddings'}: 1 part encoded (1 caption, 0.5 s, "
        "2 captions/s), 1 reused"
    )
    printed.seek(0)
    printed.truncate()
    agreement = {"median_cosine": 0.99876, "n_captions": 32, "threshold": 0.5}
    semantic["embeddings"] = {"source": "laion text_emb", "files": [], "agreement": agreement}
    coverage._print_semantic(semantic, tmp_path)
    assert printed.getvalue().splitlines()[-1] == (
        "embeddings read from the corpus's files; they agree with the encoder: median cosine "
        "0.999 over 32 captions encoded again (refused below 0.5)"
    )


def test_calibrate_prints_its_thresholds_in_words(tmp_path, monkeypatch, capsys):
    """calibrate printed Python dicts ({'semantic': 46, ...}); it now says them as count does."""
    from types import SimpleNamespace

    from clipaudit.cli import main

    scores = {"precision": 1.0, "recall": 0.5, "f1": 0.667}
    fitted = SimpleNamespace(
        cross_validation={"folds": 2, "n_captions": 4, "methods": {"semantic": scores}},
        calibration=SimpleNamespace(
            origin={
                "semantic": ("fitted", "fitted", "shared"),
                "sense": ("shared", "fitted", "shared"),
                "additions": ("shared", "shared", "shared"),
            },
            shared={"semantic": 0.41234, "sense": -2.0, "additions": 2.0},
            encoder={"model": "st:x"},
        ),
        path=tmp_path / "cal.json",
    )
    monkeypatch.setattr("clipaudit.coverage_semantic.calibrate", lambda *a, **k: fitted)
    main(["coverage", "calibrate", str(tmp_path / "gold.jsonl"), "--out", str(fitted.path)])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "thresholds of their own for 2 concepts (semantic), 1 (sense), 0 (additions); the others "
        "take the shared ones: semantic 0.412, sense -2 (keep all), additions 2 (add none)"
    ) in text, text
    assert "{" not in text and "'" not in text


def test_an_option_coverage_commands_share_says_the_same_in_each():
    """calibrate's --device said only "Where the encoder runs." and eval's --spacy-model its own
    words, where count lists the devices and what the pipeline is for; -k read "<int range>"."""
    import typer.main

    from clipaudit.cli import app

    group = typer.main.get_command(app).commands["coverage"]
    helps: dict[str, set[str]] = {}
    for command in group.commands.values():
        for parameter in command.params:
            helps.setdefault(parameter.opts[0], set()).add(parameter.help)
    for option in ("--device", "--spacy-model"):
        assert len(helps[option]) == 1, (option, helps[option])
    assert "cuda:N or mps" in next(iter(helps["--device"]))
    queried = run_cli("coverage", "query", "--help")
    assert "  -k <int>  " in queried.stdout, queried.stdout


def test_every_long_running_coverage_command_takes_quiet():
    """`coverage eval`, `calibrate` and `index` refused -q, which count, audit, zeroshot, report
    and demo take: a script passing -q to each long-running command stopped there."""
    import typer.main

    from clipaudit.cli import app

    group = typer.main.get_command(app).commands["coverage"]
    for name in ("count", "eval", "calibrate", "index"):
        options = {opt for p in group.commands[name].params for opt in p.opts}
        assert {"-q", "--quiet"} <= options, name


def test_ids_repeated_across_inputs_are_no_warning_and_repeats_name_their_input(tmp_path):
    """Two files with ids from 0 each were told to name a unique id column with --id-column,
    which neither has: rows are joined back by (input, id), so only an id repeated within one
    input is warned of, naming that input."""
    import pandas as pd

    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pd.DataFrame({"id": [0, 1], "caption": ["a dog", "a cat"]}).to_parquet(first)
    pd.DataFrame({"id": [0, 1], "caption": ["a red bus", "a kitten"]}).to_parquet(second)
    args = ["coverage", "count", str(first), str(second), "--per-caption", "-q"]
    counted = run_cli(*args, "--out", str(tmp_path / "run"))
    assert counted.returncode == 0, counted.stderr
    assert "matches.parquet" not in counted.stdout and "--id-column" not in counted.stdout
    twice = tmp_path / "twice.parquet"
    pd.DataFrame({"id": [5, 5], "caption": ["a dog", "a cat"]}).to_parquet(twice)
    counted = run_cli(*args, str(twice), "--out", str(tmp_path / "again"))
    said = " ".join(counted.stdout.split())
    assert "1 whose id an earlier row has within the same input" in said, said
    assert f"(in {twice})" in said and "--id-column" in said


def test_query_names_the_input_and_file_of_each_nearest_caption(monkeypatch):
    nearest = [
        {"id": 0, "score": 0.9, "caption": "a fox", "input": 1, "file": "b.parquet"},
        {"id": 0, "score": 0.8, "caption": "a fox", "input": 2, "file": None},
    ]
    lines = _query_lines(monkeypatch, nearest, count=2, width=200)
    assert lines[1:] == [
        "  0.900  b.parquet  0  a fox",
        "  0.800  input 2  0  a fox",
    ]


def test_every_flag_coverage_messages_name_is_an_option_of_coverage_count():
    """Settings errors name the flag that sets a field (coverage.FLAGS); each must be one
    `coverage count` takes, or the fix a message gives is refused as 'No such option'."""
    import typer

    from clipaudit.cli import app
    from clipaudit.coverage import FLAGS

    count = typer.main.get_command(app).commands["coverage"].commands["count"]
    options = {opt for p in count.params for opt in (*p.opts, *p.secondary_opts)}
    missing = [
        (field, flag) for field, flags in FLAGS.items() for flag in flags.split("/")
        if flag not in options
    ]  # fmt: skip
    assert missing == []


def test_encode_batch_reaches_the_encoder_batch_size(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import clipaudit.coverage
    from clipaudit.cli import app

    given = {}

    def count_coverage(sources, registry, out, settings, **options):
        given["settings"] = settings
        raise SystemExit(0)

    monkeypatch.setattr(clipaudit.coverage, "count_coverage", count_coverage)
    source = tmp_path / "a.txt"
    source.write_text("a dog\n")
    args = ["coverage", "count", str(source), "--out", str(tmp_path / "run"), "-q"]
    result = CliRunner().invoke(app, [*args, "--method", "semantic", "--encode-batch", "64"])
    assert result.exit_code == 0, result.output
    assert given["settings"].encode_batch == 64


def test_a_query_prints_the_file_of_each_nearest_caption_from_a_real_run(tmp_path, tiny_files):
    """End to end: two files whose ids both start at 0, counted semantically, indexed and
    queried: each nearest caption's line names its file (as the run's spec named it) before
    its id."""
    import pandas as pd

    (tmp_path / "corpora").mkdir()
    captions = {
        "corpora/a.parquet": ["a dog on a sofa", "a red fox at night", "a cat in the park"],
        "corpora/b.parquet": ["a fox in the snow", "a horse near a car", "a puppy smiling"],
    }
    for name, texts in captions.items():
        pd.DataFrame({"id": range(len(texts)), "caption": texts}).to_parquet(tmp_path / name)
    config, checkpoint = tiny_files
    encoder = f"open_clip:{config}@{checkpoint}"
    counted = run_cli("coverage", "count", "corpora", "--out", "run", "-q", "--method",
                      "semantic", "--encoder", encoder, "--workers", "1", cwd=tmp_path)  # fmt: skip
    assert counted.returncode == 0, counted.stderr
    queried = run_cli("coverage", "index", "run", "--query", "a fox", "--threshold", "-1",
                      "-k", "6", cwd=tmp_path)  # fmt: skip
    assert queried.returncode == 0, queried.stderr
    lines = [line.split("  ") for line in queried.stdout.splitlines() if line.startswith("  ")]
    expected = {
        (name, str(i), text) for name, texts in captions.items() for i, text in enumerate(texts)
    }
    assert {(file, row_id, text) for _, _, file, row_id, text in lines} == expected
