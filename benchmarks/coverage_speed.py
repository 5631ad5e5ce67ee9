"""Caption coverage speed: the paper's substring matching vs clipaudit ``curated`` vs spaCy on everything.

    nice -n 10 python benchmarks/coverage_speed.py [--rows 2000000] [--workers 2] [--repeats 3]

On the same parquet shards (built once by ``make_caption_corpus.py``, >= 2M captions resampled from
COCO val2017) and with the same number of worker processes, measures:

(a) ``paper``: the paper's method, Aho-Corasick substring matching of its synonyms (pyahocorasick),
    run through :func:`clipaudit.coverage.count_coverage` with ``profile="paper"``;
(b) ``curated``: clipaudit's default profile, through the same ``count_coverage`` call;
(c) ``spacy``: a spaCy pipeline over every caption (``spacy.blank("en")`` with the lookup
    lemmatizer, ``nlp.pipe`` over lower-cased captions), then spaCy's ``PhraseMatcher`` on lemmas
    against the curated synonyms. It is timed on a sample read from the same shards
    (``--spacy-sample``) and its per-caption rate extrapolated. The rate used is the warm one (the
    second half of each worker's sample, once spaCy's vocabulary caches hold the corpus's words),
    which favours spaCy; the cold-start rate over the whole sample is recorded beside it.

(a) and (b) are timed end to end, as a user meets them: hashing the inputs, building the matcher,
starting workers, reading, matching, writing the run folder. Peak memory is the largest sum of the
resident memory of this process and all its children, sampled every 50 ms. Rates per core are
captions / wall seconds / workers. Medians over ``--repeats`` runs are printed, and all runs are
written to ``benchmarks/out/coverage_speed.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
from make_caption_corpus import build_corpus
from record import OUT, begin, finish

from clipaudit.coverage import CoverageSettings, count_coverage
from clipaudit.registry import load_registry
from clipaudit.text import normalize

TARGETS = {"curated/paper": 0.5, "curated/spacy": 10.0}


class PeakMemory:
    """Largest RSS of this process plus its children (workers), sampled in a thread."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        while True:
            total = me.memory_info().rss
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a worker that just ended
                    total += child.memory_info().rss
            self.peak = max(self.peak, total)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def time_profile(corpus: Path, profile: str, workers: int, run_dir: Path) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = CoverageSettings(profile=profile, workers=workers, progress=False)
    with PeakMemory() as memory:
        clock = time.perf_counter()
        result = count_coverage([corpus], load_registry(), run_dir, settings)
        seconds = time.perf_counter() - clock
    n = result.n_captions_read
    return {
        "method": profile,
        "captions": n,
        "seconds": seconds,
        "per_core": n / seconds / workers,
        "per_cpu_s": result.manifest["timings"]["captions_per_cpu_s"],
        "peak_rss_mib": memory.peak / 2**20,
        "n_with_any_concept": result.manifest["n_with_any_concept"],
    }


# --------------------------------------------------------------------------- (c) spaCy baseline

_NLP: Any = None
_MATCHER: Any = None


def _spacy_init() -> None:
    """Per worker: the pipeline, and a lemma phrase matcher over every curated synonym."""
    global _NLP, _MATCHER
    import spacy
    from spacy.matcher import PhraseMatcher

    _NLP = spacy.blank("en")
    _NLP.add_pipe("lemmatizer", config={"mode": "lookup"})
    _NLP.initialize()
    _MATCHER = PhraseMatcher(_NLP.vocab, attr="LEMMA")
    for concept in load_registry().concepts:
        _MATCHER.add(concept.name, [_NLP(normalize(s)) for s in concept.synonyms])


def _spacy_count(captions: list[str]) -> dict[str, float]:
    """Lower-case, tokenise, lemmatise and match every caption; times for the whole list and for
    its second half (by then spaCy's vocabulary caches hold most of the corpus's words)."""
    half = len(captions) // 2
    clock, cpu_clock = time.perf_counter(), time.process_time()
    half_clock = half_cpu = 0.0
    with_match = 0
    docs = _NLP.pipe((caption.lower() for caption in captions), batch_size=1000)
    for index, doc in enumerate(docs):
        if index == half:
            half_clock, half_cpu = time.perf_counter(), time.process_time()
        with_match += bool(_MATCHER(doc))
    end, cpu_end = time.perf_counter(), time.process_time()
    return {
        "n": len(captions),
        "n_warm": len(captions) - half,
        "with_match": with_match,
        "seconds": end - clock,
        "cpu_seconds": cpu_end - cpu_clock,
        "warm_seconds": end - half_clock,
        "warm_cpu_seconds": cpu_end - half_cpu,
    }


def time_spacy(corpus: Path, workers: int, sample: int) -> dict:
    files = sorted(corpus.glob("*.parquet"))
    per_file = -(-sample // len(files))
    captions: list[str] = []
    for path in files:  # the first rows of every shard, so the sample spans the corpus
        captions += pq.ParquetFile(path).read_row_group(0).column("caption").to_pylist()[:per_file]
    captions = captions[:sample]
    parts = [captions[i::workers] for i in range(workers)]
    context = get_context("spawn")
    with (
        PeakMemory() as memory,
        ProcessPoolExecutor(workers, mp_context=context, initializer=_spacy_init) as pool,
    ):
        clock = time.perf_counter()
        results = list(pool.map(_spacy_count, parts))
        seconds = time.perf_counter() - clock
    # per core: each worker's own rate, pipeline loading excluded (amortised on a full corpus);
    # the rates that count are the warm ones (the second half), the conservative comparison
    return {
        "method": "spacy",
        "captions": len(captions),
        "seconds": seconds,
        "per_core": statistics.mean(r["n_warm"] / r["warm_seconds"] for r in results),
        "per_cpu_s": sum(r["n_warm"] for r in results)
        / sum(r["warm_cpu_seconds"] for r in results),
        "per_core_cold_start": statistics.mean(r["n"] / r["seconds"] for r in results),
        "per_cpu_s_cold_start": len(captions) / sum(r["cpu_seconds"] for r in results),
        "peak_rss_mib": memory.peak / 2**20,
        "n_with_any_concept": sum(r["with_match"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spacy-sample", type=int, default=100_000)
    args = parser.parse_args()

    corpus = build_corpus(args.rows)
    machine = begin(f"corpus {corpus} ({args.rows:,} captions), {args.workers} worker processes")
    runs: list[dict] = []
    for repeat in range(args.repeats):
        for profile in ("paper", "curated"):
            run = time_profile(corpus, profile, args.workers, OUT / f"coverage_speed_{profile}")
            runs.append({**run, "repeat": repeat})
            print(
                f"  {profile:8s} run {repeat + 1}: {run['seconds']:.1f} s, "
                f"{run['per_core']:,.0f} captions/s per core"
            )
        spacy_run = time_spacy(corpus, args.workers, args.spacy_sample)
        runs.append({**spacy_run, "repeat": repeat})
        print(
            f"  spacy    run {repeat + 1}: {spacy_run['per_core']:,.0f} captions/s per core "
            f"({spacy_run['captions']:,} sampled captions)"
        )

    medians = {}
    for method in ("paper", "curated", "spacy"):
        mine = [r for r in runs if r["method"] == method]
        medians[method] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("per_core", "per_cpu_s", "seconds", "peak_rss_mib")
        }
    spacy_full = args.rows / (medians["spacy"]["per_core"] * args.workers)
    print(f"\nmedians over {args.repeats} run(s), {args.workers} processes, {args.rows:,} captions")
    print(
        f"{'method':28s} {'captions/s/core':>16s} {'captions/CPU-s':>15s} {'wall s':>8s} "
        f"{'peak RSS MiB':>13s}"
    )
    labels = {
        "paper": "(a) paper (pyahocorasick)",
        "curated": "(b) clipaudit curated",
        "spacy": "(c) spaCy on every caption",
    }
    for method, label in labels.items():
        m = medians[method]
        wall = f"{m['seconds']:.1f}" if method != "spacy" else f"~{spacy_full:.0f}*"
        print(
            f"{label:28s} {m['per_core']:16,.0f} {m['per_cpu_s']:15,.0f} {wall:>8s} "
            f"{m['peak_rss_mib']:13,.0f}"
        )
    cold = [r for r in runs if r["method"] == "spacy"]
    print(
        "captions/s/core: (a), (b) end to end (wall, start-up and writing included) / workers; "
        "(c) per worker, warm, pipeline loading excluded.\n"
        "captions/CPU-s: (a), (b) the workers' CPU time on their shards (reading, matching, "
        "tallying, writing); (c) the workers' CPU time in the pipeline and phrase matcher.\n"
        f"* (c) extrapolated from {args.spacy_sample:,} sampled captions; its cold-start rate "
        f"over the whole sample: "
        f"{statistics.median(r['per_core_cold_start'] for r in cold):,.0f} captions/s/core, "
        f"{statistics.median(r['per_cpu_s_cold_start'] for r in cold):,.0f} captions/CPU-s"
    )
    ratios = {}
    for basis in ("per_core", "per_cpu_s"):
        for name, (top, bottom) in {
            "curated/paper": ("curated", "paper"),
            "curated/spacy": ("curated", "spacy"),
        }.items():
            value = medians[top][basis] / medians[bottom][basis]
            ratios[f"{name} ({basis})"] = value
            verdict = "meets" if value >= TARGETS[name] else "MISSES"
            print(f"{name} by {basis}: {value:.2f}x ({verdict} the target of >= {TARGETS[name]}x)")
    finish(
        "coverage_speed",
        machine,
        {
            "rows": args.rows,
            "workers": args.workers,
            "runs": runs,
            "medians": medians,
            "ratios": ratios,
            "targets": TARGETS,
        },
    )


if __name__ == "__main__":
    main()
