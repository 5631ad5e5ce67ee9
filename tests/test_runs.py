"""The run-folder contract's rules for emptying a folder: only what clipaudit wrote, and never
finished work without --overwrite."""

from __future__ import annotations

import json

import pytest

from clipaudit.errors import RunFolderError, SettingsError
from clipaudit.runs import RunFolder, load_run


def failed_run(path, kind: str, settings: dict) -> None:
    with pytest.raises(RuntimeError), RunFolder(path, kind, settings):
        raise RuntimeError("stopped")
    assert json.loads((path / "manifest.json").read_text())["status"] == "failed"


def test_overwrite_never_empties_a_folder_that_holds_no_run(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with (
            pytest.raises(RunFolderError, match="not empty but holds no clipaudit run"),
            RunFolder(mine, "coverage", {"a": 1}, overwrite=overwrite),
        ):
            pass
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_a_run_that_failed_before_any_unit_restarts_with_new_settings(tmp_path):
    run = tmp_path / "run"
    failed_run(run, "coverage", {"column": "text"})
    (run / "inputs").mkdir()
    (run / "inputs" / "staged.parquet").write_text("half written")
    with RunFolder(run, "coverage", {"column": "caption"}) as folder:
        assert folder.restarted and "column" in folder.restarted
    assert not (run / "inputs").exists()


def test_a_failed_run_keeps_a_finished_stage_unless_overwrite(tmp_path):
    audit = tmp_path / "audit"
    failed_run(audit, "audit", {"templates": "one"})
    stage = audit / "coverage"
    with RunFolder(stage, "coverage", {"column": "caption"}) as folder:
        folder.complete()
    with (
        pytest.raises(RunFolderError, match=r"audit run with other settings \(templates"),
        RunFolder(audit, "audit", {"templates": "two"}),
    ):
        pass
    assert json.loads((stage / "manifest.json").read_text())["status"] == "complete"
    with RunFolder(audit, "audit", {"templates": "two"}, overwrite=True) as folder:
        assert folder.restarted == "--overwrite"
    assert not stage.exists()


def test_a_failed_stage_keeps_its_finished_units(tmp_path):
    audit = tmp_path / "audit"
    failed_run(audit, "audit", {"templates": "one"})
    with pytest.raises(RuntimeError), RunFolder(audit / "coverage", "coverage", {}) as stage:
        stage.save_unit("shard-1", {"bytes": 10}, {"counts": [1]})
        raise RuntimeError("interrupted in the second shard")
    with (
        pytest.raises(RunFolderError, match=r"audit run with other settings \(templates"),
        RunFolder(audit, "audit", {"templates": "two"}),
    ):
        pass
    assert (audit / "coverage" / "units" / "shard-1.json").is_file()


@pytest.mark.parametrize("label", ["..", ".", "../../etc", "a/../../b", "", "con cept/x"])
def test_names_from_user_strings_stay_inside_their_folder(tmp_path, label):
    from clipaudit.runs import unit_key
    from clipaudit.text import slug

    for name in (slug(label), unit_key(label, {"x": 1})):
        assert name and "/" not in name and name not in (".", "..")
        assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_name_columns_read_back_as_the_names_written(tmp_path):
    """A concept named "null", "NA" or "1" is that name when a run's CSV table is read back;
    an empty number stays missing."""
    import pandas as pd

    from clipaudit.provenance import read_table_csv, write_table

    frame = pd.DataFrame(
        {
            "group": ["None", "Count"],
            "concept": ["null", "1"],
            "predicted": ["NA", "nan"],
            "f1": [0.5, float("nan")],
            "n_images": [3, 4],
        }
    )
    (path,) = write_table(frame, tmp_path / "concepts", ("csv",))
    back = read_table_csv(path)
    assert back["concept"].tolist() == ["null", "1"]
    assert back["group"].tolist() == ["None", "Count"]
    assert back["predicted"].tolist() == ["NA", "nan"]
    assert back["f1"].iloc[0] == 0.5 and pd.isna(back["f1"].iloc[1])
    assert back["n_images"].tolist() == [3, 4]


def test_temporary_files_of_a_killed_run_are_removed_when_it_resumes(tmp_path):
    run = tmp_path / "run"
    failed_run(run, "coverage", {"column": "text"})
    left = [run / ".matches.parquet.123.tmp", run / "units" / ".abc.json.9.tmp"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half written")
    (run / "notes.tmp").write_text("not ours to remove: no leading dot")
    with RunFolder(run, "coverage", {"column": "text"}):
        assert not any(path.exists() for path in left)
    assert (run / "notes.tmp").exists()


def test_a_run_folder_that_cannot_be_made_is_one_clear_error(tmp_path):
    (tmp_path / "afile").write_text("")
    folder = RunFolder(tmp_path / "afile" / "sub", "coverage", {})
    with pytest.raises(RunFolderError, match=r"cannot make the run folder .*afile/sub .*--out"):
        folder.__enter__()


ZEROSHOT_GROUPS = (
    "model,group,category,macro_f1,accuracy,n_images,n_concepts\nm,Animal,common,1.0,1.0,2,2\n"
)
ZEROSHOT_CONCEPTS = "model,group,concept,precision,recall,f1,support\nm,Animal,dog,1.0,1.0,1.0,1\n"


def zeroshot_folder(path, groups: str = ZEROSHOT_GROUPS, concepts: str = ZEROSHOT_CONCEPTS):
    """A complete zero-shot run folder as load_run reads it: its manifest and two tables."""
    path.mkdir()
    (path / "manifest.json").write_text('{"kind": "zeroshot", "status": "complete"}')
    (path / "groups.csv").write_text(groups)
    (path / "concepts.csv").write_text(concepts)
    return path


def test_a_table_without_the_columns_its_readers_need_is_a_damaged_folder(tmp_path):
    good = load_run(zeroshot_folder(tmp_path / "good"))
    assert good.models == ["m"] and list(good.concepts["concept"]) == ["dog"]
    damaged = zeroshot_folder(tmp_path / "damaged", concepts="garbage,,\n")
    with pytest.raises(RunFolderError) as info:
        load_run(damaged)
    assert str(info.value) == (
        f"{damaged} holds a complete zeroshot run whose files cannot be read (ValueError: its "
        "concepts table has no column model, group, concept, precision, recall, f1, support); "
        "the folder is damaged: run the command that wrote it again, which writes them anew from "
        "its finished work"
    )
    no_score = zeroshot_folder(
        tmp_path / "no-score", groups=ZEROSHOT_GROUPS.replace("macro_f1", "f")
    )
    with pytest.raises(RunFolderError, match=r"its groups table has no column macro_f1\)"):
        load_run(no_score)


@pytest.mark.parametrize("given", [None, 5, ["runs/x"]])
def test_a_run_folder_of_another_type_than_a_path_is_a_settings_error(given):
    with pytest.raises(
        SettingsError, match=rf"a run folder is a path .*, got {type(given).__name__}"
    ):
        load_run(given)


def test_a_unit_record_edited_by_hand_is_redone(tmp_path):
    with RunFolder(tmp_path / "run", "zeroshot", {}) as folder:
        folder.save_unit("m", {"weights": 1}, {"f1": 0.5})
        assert folder.load_unit("m", {"weights": 1}) == {"identity": {"weights": 1}, "f1": 0.5}
        path = folder.unit_path("m")
        record = json.loads(path.read_text())
        for edited in ({**record, "f1": 0.9}, [record]):
            path.write_text(json.dumps(edited))
            assert folder.load_unit("m", {"weights": 1}) is None
        del record["digest"]  # a record written before digests: taken as it is
        path.write_text(json.dumps(record))
        assert folder.load_unit("m", {"weights": 1}) == {"identity": {"weights": 1}, "f1": 0.5}


def test_a_manifest_damaged_by_hand_is_refused_with_the_fix(tmp_path):
    run = tmp_path / "run"
    with RunFolder(run, "coverage", {"a": 1}) as folder:
        folder.complete()
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "settings": "abc"}))
    with pytest.raises(RunFolderError) as info, RunFolder(run, "coverage", {"a": 1}):
        pass
    assert str(info.value) == (
        f"{run} holds a different coverage run (settings: 'abc' -> a record of settings); run "
        "the same command to resume it, pass --overwrite (overwrite=True in Python) to replace it, or "
        "choose another --out (out= in Python)"
    )
    with RunFolder(run, "coverage", {"a": 1}, overwrite=True) as folder:
        assert folder.restarted == "--overwrite"
    (run / "manifest.json").write_text('{"kind": "cov')
    with pytest.raises(RunFolderError) as info, RunFolder(run, "coverage", {"a": 1}):
        pass
    assert str(info.value).endswith(
        "the folder is damaged: delete the folder or choose another --out, and run the command "
        "again"
    )


def test_a_run_folder_on_a_read_only_disk_says_so_and_how_to_go_on(tmp_path, monkeypatch):
    """The lock is a run's first write: on a read-only or full disk it was a bare OSError."""
    import builtins
    import errno

    def read_only(file, *args, **kwargs):
        if str(file).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr("clipaudit.runs.open", read_only, raising=False)
    with pytest.raises(RunFolderError) as refused, RunFolder(tmp_path / "run", "coverage", {}):
        pass
    assert str(refused.value).startswith(
        f"cannot write into the run folder {tmp_path / 'run'} (Read-only file system); free space"
    )
    assert "run the same command again" in str(refused.value)


@pytest.mark.parametrize("kind", [["coverage"], {"name": "coverage"}, None, 3])
def test_a_manifest_whose_kind_was_edited_into_another_type_is_refused_plainly(tmp_path, kind):
    """A list or mapping as the kind was a bare TypeError (unhashable) from the alias lookup."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"kind": kind, "status": "complete"}))
    with pytest.raises(RunFolderError) as refused, RunFolder(run, "coverage", {"a": 1}):
        pass
    assert str(refused.value) == (
        f"{run} holds a run of unknown kind, not a coverage run; choose another --out folder"
    )
    assert not (run / ".lock").exists()  # released on the way out


def test_settings_of_a_shape_the_kinds_comparison_cannot_read_are_a_different_run(tmp_path):
    """A kind's own comparison (the theory's unpacks each part as a mapping) met a part edited
    into a list with a bare TypeError; such a record resumes nothing, as a non-mapping one."""
    run = tmp_path / "run"

    def by_part(before, now):  # as clipaudit.theory.sweep's: each part a mapping
        return [part for part in now if {**before.get(part, {})} != now[part]]

    with RunFolder(run, "theory", {"training": {"steps": 2}}, compare=by_part) as folder:
        folder.complete()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["settings"] = {"training": [2]}
    (run / "manifest.json").write_text(json.dumps(manifest))
    with (
        pytest.raises(RunFolderError, match=r"holds a different theory run \(settings: "),
        RunFolder(run, "theory", {"training": {"steps": 2}}, compare=by_part),
    ):
        pass
    with RunFolder(
        run, "theory", {"training": {"steps": 2}}, compare=by_part, overwrite=True
    ) as folder:
        assert folder.restarted == "--overwrite"


def test_a_manifest_that_cannot_be_read_is_one_clear_error(tmp_path, monkeypatch):
    """An unreadable manifest (another user's run on a shared disk) was a bare PermissionError,
    which the command line shows as a traceback, from load_run and from a resumed run alike."""
    import errno
    import pathlib

    run = tmp_path / "run"
    with RunFolder(run, "coverage", {"a": 1}) as folder:
        folder.complete()
    read_text = pathlib.Path.read_text

    def refused(self, *args, **kwargs):
        if self.name == "manifest.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", refused)
    expected = (
        f"cannot read {run / 'manifest.json'} (Permission denied); make it readable, or give "
        "another run folder"
    )
    with pytest.raises(RunFolderError) as info:
        load_run(run)
    assert str(info.value) == expected
    with pytest.raises(RunFolderError) as info, RunFolder(run, "coverage", {"a": 1}):
        pass
    assert str(info.value) == expected
    assert not (run / ".lock").exists()


def test_a_complete_run_whose_outputs_were_deleted_is_made_again_not_reused(tmp_path):
    """A complete manifest is no complete run when files it lists are gone: a kind that reuses a
    complete run read the missing file (a zero-shot run's FileNotFoundError traceback)."""
    run = tmp_path / "run"
    with RunFolder(run, "coverage", {"a": 1}) as folder:
        (run / "groups.csv").write_text("group\n")
        (run / "tables").mkdir()
        (run / "tables" / "concepts.csv").write_text("concept\n")
        folder.complete(outputs=["groups.csv", "tables/concepts.csv"])
    with RunFolder(run, "coverage", {"a": 1}) as folder:
        assert folder.was_complete
    (run / "tables" / "concepts.csv").unlink()
    with RunFolder(run, "coverage", {"a": 1}) as folder:
        assert not folder.was_complete
        # not complete until this session writes them again, and its own writing of them
        # does not make the run it opened complete part-way
        assert json.loads((run / "manifest.json").read_text())["status"] == "running"
        (run / "tables" / "concepts.csv").write_text("concept\n")
        assert not folder.was_complete


@pytest.mark.parametrize("stage_manifest", ["[1]", '"complete"', "{", ""])
def test_a_damaged_stage_manifest_holds_no_finished_work(tmp_path, stage_manifest):
    """A failed audit restarted with new settings read its stages' manifests by hand: one that
    was JSON but no object (a list) was an AttributeError."""
    audit = tmp_path / "audit"
    failed_run(audit, "audit", {"templates": "one"})
    (audit / "coverage").mkdir()
    (audit / "coverage" / "manifest.json").write_text(stage_manifest)
    with RunFolder(audit, "audit", {"templates": "two"}) as folder:
        assert folder.restarted and "templates" in folder.restarted
    assert not (audit / "coverage").exists()


def test_a_manifest_records_the_folder_its_relative_paths_are_relative_to(tmp_path, monkeypatch):
    """A run given "captions/" records that spec as typed; the working folder tells, later and
    elsewhere, which captions those were."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with RunFolder("run", "coverage", {"column": "caption"}) as folder:
        folder.complete()
    manifest = json.loads((tmp_path / "work" / "run" / "manifest.json").read_text())
    assert manifest["working_directory"] == str(tmp_path / "work")


def test_a_complete_run_whose_stage_an_interrupted_session_changed_is_no_longer_complete(tmp_path):
    """An audit rerun with a model added changes its zero-shot stage (the models are units, not
    settings); interrupted, the audit's manifest kept saying complete, with the old models,
    while its stage had failed."""
    audit = tmp_path / "audit"

    def stage(models: list[str]) -> None:
        with RunFolder(audit / "zeroshot", "zeroshot", {"templates": "none"}) as zeroshot:
            if not (zeroshot.was_complete and zeroshot.previous["models"] == models):
                zeroshot.complete(models=models)

    with RunFolder(audit, "audit", {"templates": "none"}) as folder:
        stage(["a"])
        folder.complete(models=["a"])
    # a rerun that reuses every stage and is interrupted leaves the complete run as it was
    with pytest.raises(KeyboardInterrupt), RunFolder(audit, "audit", {"templates": "none"}):
        stage(["a"])
        raise KeyboardInterrupt
    manifest = json.loads((audit / "manifest.json").read_text())
    assert (manifest["status"], manifest["models"]) == ("complete", ["a"])
    # one whose stage took a second model, interrupted before the run itself was done
    with pytest.raises(KeyboardInterrupt), RunFolder(audit, "audit", {"templates": "none"}):
        stage(["a", "b"])
        raise KeyboardInterrupt
    manifest = json.loads((audit / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["reason"].startswith("interrupted")
    with pytest.raises(
        RunFolderError, match=r"holds an audit run that was stopped \(interrupted\)"
    ):
        load_run(audit)
    assert not (audit / ".lock").exists()


def test_a_run_another_process_is_writing_is_not_called_one_to_resume(tmp_path):
    """load_run (a researcher in Jupyter) on a folder a command is still writing said to run the
    command again to resume it: a second run, which the lock then refuses."""
    import subprocess
    import sys

    run = tmp_path / "run"
    code = (
        "import sys, time\n"
        "from clipaudit.runs import RunFolder\n"
        f"with RunFolder({str(run)!r}, 'coverage', {{'a': 1}}):\n"
        "    print('writing', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        with pytest.raises(RunFolderError) as info:
            load_run(run)
        assert str(info.value) == (
            f"{run} holds a coverage run that another clipaudit process is writing now; wait for "
            "it to finish, then read it"
        )
    finally:
        writer.communicate("")
    assert writer.returncode == 0
    # a run killed while running (its lock file left, no process holding it) resumes
    (run / ".lock").touch()
    with pytest.raises(RunFolderError, match="that is running, not complete; run the command"):
        load_run(run)


def test_a_damaged_complete_run_is_written_anew_by_the_command_its_message_names(tmp_path):
    """The message said to run the command again "with --overwrite", which with the same settings
    empties nothing: the same command alone writes the damaged tables anew."""
    import clipaudit

    out = tmp_path / "run"
    captions = ["a dog", "a red cat", "a dog and a cat"]
    clipaudit.count_coverage(texts=captions, out=out, progress=False)
    (out / "concepts.parquet").write_bytes(b"PAR1 no table")
    with pytest.raises(RunFolderError) as info:
        load_run(out)
    assert str(info.value).endswith(
        "the folder is damaged: run the command that wrote it again, which writes them anew "
        "from its finished work"
    )
    clipaudit.count_coverage(texts=captions, out=out, progress=False)
    counts = load_run(out).concepts.set_index("concept")["count"]
    assert (counts["dog"], counts["cat"], counts["red"], counts["horse"]) == (2, 2, 1, 0)


def test_the_error_that_stopped_a_run_is_the_one_raised_when_its_failure_cannot_be_written(
    tmp_path, monkeypatch
):
    """A bad shard on a disk that has just filled: marking the run failed cannot be written, and
    that OSError took the place of the shard's message (the CLI then spoke of manifest.json)."""
    import errno

    from clipaudit import runs
    from clipaudit.errors import InputError

    run = tmp_path / "run"
    written = runs.write_json

    def full_once_failing(path, manifest):
        if manifest.get("status") == "failed":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written(path, manifest)

    monkeypatch.setattr(runs, "write_json", full_once_failing)
    with (
        pytest.raises(InputError, match=r"shard-7\.parquet is not a parquet file"),
        RunFolder(run, "coverage", {"a": 1}),
    ):
        raise InputError("shard-7.parquet is not a parquet file")
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"  # resumes
    assert not (run / ".lock").exists()


def test_a_run_folder_whose_file_system_cannot_lock_is_not_called_busy(tmp_path, monkeypatch):
    """An NFS mount without its lock daemon answers every lock with ENOLCK: that was "another
    clipaudit run is writing into ...; wait for it", which no waiting ends."""
    import errno
    import fcntl

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    killed = tmp_path / "killed"
    with RunFolder(killed, "coverage", {}):
        pass
    (killed / ".lock").touch()  # kept, as a kill -9 keeps it
    monkeypatch.setattr(fcntl, "flock", no_locks)
    # read back, such a folder's run is one to resume, not one another process is writing
    with pytest.raises(RunFolderError, match="that is running, not complete; run the command"):
        load_run(killed)
    run = tmp_path / "run"
    with pytest.raises(RunFolderError) as refused, RunFolder(run, "coverage", {}):
        pass
    assert str(refused.value) == (
        f"cannot lock the run folder {run} (No locks available): its file system keeps no file "
        "locks; give --out a folder on a disk that does (a local one)"
    )
    assert not (run / ".lock").exists()


def test_an_overwrite_interrupted_while_emptying_leaves_a_folder_clipaudit_still_knows(
    tmp_path, monkeypatch
):
    """Ctrl-C while --overwrite emptied a big folder: where manifest.json went first, the rest
    was "not empty but holds no clipaudit run", to be deleted by hand."""
    import pathlib

    from clipaudit import runs

    run = tmp_path / "run"
    with RunFolder(run, "coverage", {"column": "text"}) as folder:
        (run / "store").mkdir()
        (run / "store" / "part-0.npy").write_bytes(b"x" * 10)
        folder.complete()
    listed = pathlib.Path.iterdir

    def manifest_first(path):  # the order a file system may list them in
        return sorted(listed(path), key=lambda entry: entry.name != "manifest.json")

    def interrupted(path, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pathlib.Path, "iterdir", manifest_first)
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(runs.shutil, "rmtree", interrupted)
        RunFolder(run, "coverage", {"column": "caption"}, overwrite=True).__enter__()
    assert not (run / ".lock").exists()
    with RunFolder(run, "coverage", {"column": "caption"}, overwrite=True) as folder:
        assert folder.restarted == "--overwrite"
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json"]


def test_a_run_starting_while_a_reader_looks_at_its_lock_is_not_refused(tmp_path, monkeypatch):
    """load_run asks whether a folder's lock is held by taking it shared for an instant: a run
    starting in that instant was refused as though another run were writing there."""
    import errno
    import fcntl

    real, calls = fcntl.flock, []

    def read_once(handle, operation):
        calls.append(operation)
        if len(calls) == 1:  # the reader's shared lock, held at this very moment
            raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable")
        return real(handle, operation)

    monkeypatch.setattr(fcntl, "flock", read_once)
    with RunFolder(tmp_path / "run", "coverage", {"a": 1}) as folder:
        folder.complete()
    assert len(calls) >= 2


def test_a_complete_run_whose_stage_a_kill_left_running_is_resumed_not_kept(tmp_path):
    """kill -9 while a stage of a complete audit changed, where the audit could not be marked
    first (the stage's own command run on its folder, or a clipaudit before audits were marked),
    left the audit's manifest complete and the stage running: the audit read back, or opened
    again, is not complete."""
    audit = tmp_path / "audit"
    with RunFolder(audit, "audit", {"templates": "none"}) as folder:
        with RunFolder(audit / "zeroshot", "zeroshot", {}) as stage:
            stage.complete(models=["a"])
        folder.complete(models=["a"])
    # what the killed process wrote: the stage marked running; gone, its lock is a file no one
    # holds
    stage = RunFolder(audit / "zeroshot", "zeroshot", {}).__enter__()
    stage.update(models=["a", "b"])
    stage._release()
    (audit / "zeroshot" / ".lock").touch()
    assert json.loads((audit / "manifest.json").read_text())["status"] == "complete"

    with pytest.raises(RunFolderError) as info:
        load_run(audit)
    assert str(info.value) == (
        f"{audit} holds an audit run whose zeroshot stage is running, not complete; run the "
        "command that wrote it again to resume it"
    )
    with RunFolder(audit, "audit", {"templates": "none"}) as folder:
        assert not folder.was_complete
        assert json.loads((audit / "manifest.json").read_text())["status"] == "running"


def test_a_run_stopped_by_sigterm_is_recorded_as_stopped_and_resumes(tmp_path):
    """SIGTERM (what Slurm and Kubernetes send before they kill) ended the process at once: the
    manifest kept saying running, as after kill -9, and the reason was lost."""
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    code = (
        "import signal, sys\n"
        "from clipaudit.runs import RunFolder\n"
        f"with RunFolder({str(run)!r}, 'coverage', {{'a': 1}}) as folder:\n"
        "    folder.save_unit('shard-1', {'bytes': 10}, {'counts': [1]})\n"
        "    print('writing', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.send_signal(signal.SIGTERM)
        _, error = writer.communicate()
    assert writer.returncode != 0 and "Stopped: stopped by SIGTERM" in error
    manifest = json.loads((run / "manifest.json").read_text())
    assert (manifest["status"], manifest["reason"]) == (
        "failed",
        "stopped by SIGTERM; run the same command again to resume",
    )
    assert not (run / ".lock").exists()
    with pytest.raises(
        RunFolderError, match=r"that was stopped \(by SIGTERM\), not complete; run the"
    ):
        load_run(run)
    with RunFolder(run, "coverage", {"a": 1}) as folder:  # the same run resumes
        assert folder.load_unit("shard-1", {"bytes": 10})["counts"] == [1]


def test_a_run_takes_sigterm_only_while_open_and_leaves_a_handler_of_its_callers(tmp_path):
    """A program embedding clipaudit keeps its own SIGTERM handler, during a run and after; a
    run opened outside the main thread (where no handler can be set) runs as before."""
    import signal
    import threading

    from clipaudit.errors import Stopped

    before = signal.getsignal(signal.SIGTERM)
    assert before is signal.SIG_DFL
    with pytest.raises(Stopped), RunFolder(tmp_path / "a", "coverage", {}):
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        with RunFolder(tmp_path / "a" / "stage", "coverage", {}):  # a stage inside: one handler
            pass
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["reason"].startswith(
        "stopped by SIGTERM"
    )

    def theirs(signum, frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, theirs)
    try:
        with RunFolder(tmp_path / "b", "coverage", {}):
            assert signal.getsignal(signal.SIGTERM) is theirs
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        signal.signal(signal.SIGTERM, before)

    opened = []

    def in_a_thread() -> None:
        with RunFolder(tmp_path / "c", "coverage", {}) as folder:
            opened.append(folder.complete()["status"])

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert opened == ["complete"] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_complete_run_is_marked_running_before_its_session_changes_a_stage(tmp_path):
    """An audit rerun with a model added, killed (kill -9) between its zero-shot stage, finished
    with both models, and its report: every stage said complete, and so did the audit, with the
    old models and a report without the new one. A kill leaves no chance to mark it afterwards:
    the audit is marked running before its first stage changes."""
    audit = tmp_path / "audit"

    def stage(name: str, models: list[str]) -> None:
        with RunFolder(audit / name, name, {}) as opened:
            if not (opened.was_complete and opened.previous["models"] == models):
                opened.complete(models=models)

    with RunFolder(audit, "audit", {"templates": "none"}) as folder:
        stage("zeroshot", ["a"])
        stage("report", ["a"])
        folder.complete(models=["a"])
    complete = (audit / "manifest.json").read_bytes()
    with RunFolder(audit, "audit", {"templates": "none"}):  # nothing changes: kept as it was
        stage("zeroshot", ["a"])
        stage("report", ["a"])
    assert (audit / "manifest.json").read_bytes() == complete

    killed = RunFolder(audit, "audit", {"templates": "none"}).__enter__()
    stage("zeroshot", ["a", "b"])
    killed._release()  # killed here: its lock a file no one holds
    (audit / ".lock").touch()
    assert json.loads((audit / "zeroshot" / "manifest.json").read_text())["status"] == "complete"
    assert json.loads((audit / "manifest.json").read_text())["status"] == "running"
    with pytest.raises(RunFolderError, match="holds an audit run that is running, not complete"):
        load_run(audit)


def test_refusals_of_a_run_folder_name_the_fix(tmp_path, monkeypatch):
    """A file given as the run folder, a lock that keeps changing hands, a kind this clipaudit
    does not know: each message said what was wrong and not what to do."""
    import os

    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(RunFolderError) as info, RunFolder(afile, "coverage", {}):
        pass
    assert str(info.value) == (
        f"{afile} is a file, not a folder; give --out a new folder, or the folder of the run to "
        "resume"
    )

    class Replaced:  # the lock file removed and made again by another run, every time
        st_ino = -1

    busy = tmp_path / "busy"
    with monkeypatch.context() as patch, pytest.raises(RunFolderError) as info:
        patch.setattr(os, "fstat", lambda fd: Replaced)
        RunFolder(busy, "coverage", {}).__enter__()
    assert str(info.value) == (
        f"could not lock {busy}: other clipaudit runs keep starting and ending there; wait for "
        "them to finish, or choose another --out"
    )

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "manifest.json").write_text(json.dumps({"kind": "mystery", "status": "complete"}))
    with pytest.raises(RunFolderError) as info:
        load_run(unknown)
    assert str(info.value).endswith(
        "; a newer clipaudit may have written it: read it with that version"
    )


def test_a_failed_run_with_finished_work_and_other_settings_is_refused_saying_it_failed(tmp_path):
    """An audit that failed (the wrong registry) after counting its captions was refused, when
    the corrected command ran, with "run the same command to resume it": that one failed."""
    from clipaudit.errors import InputError

    run = tmp_path / "run"
    why = "folder 'Position' is no group or category (did you mean 'Emotion'?)"
    with pytest.raises(InputError), RunFolder(run, "audit", {"registry": "cai2025"}) as folder:
        folder.save_unit("shard-1", {"bytes": 10}, {"counts": [1]})
        raise InputError(why)
    with pytest.raises(RunFolderError) as info, RunFolder(run, "audit", {"registry": "miniworld"}):
        pass
    assert str(info.value) == (
        f"{run} holds an audit run with other settings (registry: 'cai2025' -> 'miniworld') "
        f"that failed after finishing part of its work ({why}); pass --overwrite "
        "(overwrite=True in Python) to start again with these settings (its finished work is "
        "deleted), run the earlier command again to resume it, or choose another --out (out= in "
        "Python)"
    )
    assert (run / "units" / "shard-1.json").is_file()
    with RunFolder(run, "audit", {"registry": "miniworld"}, overwrite=True) as folder:
        assert folder.restarted == "--overwrite"
    assert not (run / "units" / "shard-1.json").exists()


def test_a_stopped_run_is_named_stopped_when_read_back_or_refused(tmp_path):
    """Ctrl-C records the run as failed with the reason "interrupted" (the status many places
    read); load_run called it "a coverage run that failed", and a command of other settings
    said to resume it with "the same command"."""
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), RunFolder(run, "coverage", {"a": 1}) as folder:
        folder.save_unit("shard-1", {"bytes": 10}, {"counts": [1]})
        raise KeyboardInterrupt
    with pytest.raises(RunFolderError) as info:
        load_run(run)
    assert str(info.value) == (
        f"{run} holds a coverage run that was stopped (interrupted), not complete; run the same "
        "command again to resume it"
    )
    with pytest.raises(RunFolderError) as info, RunFolder(run, "coverage", {"a": 2}):
        pass
    assert str(info.value) == (
        f"{run} holds a coverage run with other settings (a: 1 -> 2) that was stopped "
        "(interrupted) after finishing part of its work; pass --overwrite (overwrite=True in "
        "Python) to start again with these settings (its finished work is deleted), run the "
        "earlier command again to resume it, or choose another --out (out= in Python)"
    )
