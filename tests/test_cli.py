"""The command line as a user meets it: `python -m clipaudit`, help, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clipaudit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
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
