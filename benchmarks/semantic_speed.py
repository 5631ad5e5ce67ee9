"""Semantic coverage speed: FAISS counting vs numpy, a 10M-caption IVF-PQ query, text encoding.

    nice -n 10 python benchmarks/semantic_speed.py count  [--rows 2000000] [--repeats 3]
    nice -n 10 python benchmarks/semantic_speed.py index  [--rows 10000000] [--queries 12]
    nice -n 10 python benchmarks/semantic_speed.py encode [--captions 2000] [--clip-captions 256]
    python benchmarks/semantic_speed.py all

(a) ``count``: ``--rows`` random 512-d unit vectors (seeded, generated in chunks), stored as float16
    parts of 65,536 rows in an :class:`~clipaudit.semantic.store.EmbeddingStore` (what a run writes),
    counted against 146 random concept vectors with per-concept thresholds (about 1% of pairs hit)
    by (1) :class:`~clipaudit.semantic.counting.SemanticCounter` (FAISS range search, top-5 nearest
    kept) over the store's batches (``EmbeddingStore.iter_batches``, which casts float16 to
    float32 on several threads), (2) the plain numpy baseline: each part memory-mapped
    (``read_part``), ``np.asarray(part, dtype=np.float32)``, ``(x @ C.T >= tau).sum(0)``, and (3)
    numpy returning the same per-caption hits as FAISS (``np.nonzero``), read the same plain way.
    To separate the two things that differ, (4) numpy's count over the store's batches (the
    same reading and cast as FAISS: FAISS/(4) is FAISS's search against numpy's product alone)
    and a read-only pass over the store's batches are timed too. Every method runs with
    ``OMP_WAIT_POLICY=PASSIVE``; FAISS is also run without it (``faiss_spinning``: libgomp's default,
    whose spinning threads cost a CPU shared with other work dearly). Each method runs in a fresh process (so its
    peak RSS, ``ru_maxrss``, is its own) on a quarter of the corpus and on all of it: flat memory
    means the same peak at both sizes. Each round runs every method once (interleaved, so a busy
    spell hits them alike); medians over ``--repeats`` rounds, ratios paired by round; counts are
    checked equal.
(b) ``index``: ``--rows`` clustered 512-d unit vectors (2,000 random centres; each vector
    normalise(centre + s * noise / sqrt(512)), s uniform in [0.5, 2], so cosine to its centre is
    0.45-0.9; the noise is the normalised sum of two rows drawn from a fixed bank of 65,536 Gaussian
    rows, which is ten times cheaper than fresh normals), generated in seeded chunks and written as
    float16 parts (never all in memory);
    exact counts of every query are computed chunk by chunk while generating. Then an IVF-PQ
    :class:`~clipaudit.semantic.index.CaptionIndex` (nlist 256, m 64, nbits 8, nprobe 16, trained
    on 50,000 vectors) is built, saved, loaded, and each query (a centre, perturbed) is timed at
    thresholds 0.5/0.6/0.7: count, 10 nearest, exact re-scoring from the store.
(c) ``encode``: captions/s of all-MiniLM-L6-v2 and of a ViT-B-32 text tower (random weights, no
    download) on CPU, on the first COCO captions of ../shared (or generated ones): 2,000 for
    MiniLM, 256 for ViT-B-32 (a 12-layer text tower over 77 tokens is slow on a CPU).

Everything is written to ``benchmarks/out/semantic_speed_<part>.json``; the stores are kept under
``benchmarks/out/semantic/`` (delete them afterwards: the 10M store is 10 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out"
WORK = OUT / "semantic"
DIM = 512
N_CONCEPTS = 146
PART_ROWS = 65_536
IDENTITY = {"kind": "synthetic", "model": "random-unit", "weights": "seed-0", "dim": DIM}


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def unit_rows(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


# --------------------------------------------------------------------------- (a) counting


def random_store(rows: int):
    from clipaudit.semantic.store import EmbeddingStore

    folder = WORK / f"random_{rows}"
    store = EmbeddingStore.open(folder, {**IDENTITY, "rows": rows}, DIM)
    key = "000-00000-0000"
    if store.is_done(key):
        return store
    n_parts = 0
    for part, start in enumerate(range(0, rows, PART_ROWS)):
        n = min(PART_ROWS, rows - start)
        if not store.has_part(key, part):
            x = unit_rows(np.random.default_rng([0, part]), n)
            store.write_part(key, part, x, np.arange(start, start + n))
        n_parts = part + 1
    store.finish(key, n_parts, rows)
    return store


def concepts_and_thresholds() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(123)
    # cosines of random 512-d unit vectors have sd 1/sqrt(512) = 0.044: 0.09-0.12 hits ~0.3-2%
    return unit_rows(rng, N_CONCEPTS), rng.uniform(0.09, 0.12, N_CONCEPTS).astype(np.float32)


def plain_parts(store):
    """The store's parts read the plain way: memory-mapped, cast by ``np.asarray`` in one thread."""
    from clipaudit.semantic.store import EmbeddingBatch

    keys = store.keys()  # the completed units of work, in order
    for key in keys:
        for part in range(store.n_parts(key)):
            vectors, ids = store.read_part(key, part)
            yield EmbeddingBatch(np.asarray(vectors, dtype=np.float32), ids)


def run_count(method: str, rows: int, repeats: int) -> dict:
    """One method on one corpus size, in this (fresh) process."""
    from clipaudit.semantic.counting import SemanticCounter
    from clipaudit.semantic.store import EmbeddingStore

    store = EmbeddingStore.load(WORK / f"random_{rows}")
    concepts, tau = concepts_and_thresholds()
    times, counts, hits = [], None, 0
    for _ in range(repeats):
        clock = time.perf_counter()
        if method.startswith("faiss"):
            counter = SemanticCounter(concepts, tau, top_k=5)
            hits = 0
            for batch in store.iter_batches():
                hits += len(counter.add(batch.vectors, batch.ids).rows)
            counts = counter.counts
        elif method in ("numpy", "numpy_store"):
            counts = np.zeros(N_CONCEPTS, dtype=np.int64)
            batches = plain_parts(store) if method == "numpy" else store.iter_batches()
            for batch in batches:
                counts += (batch.vectors @ concepts.T >= tau).sum(axis=0)
        elif method == "numpy_hits":
            counts = np.zeros(N_CONCEPTS, dtype=np.int64)
            hits = 0
            for batch in plain_parts(store):
                scores = batch.vectors @ concepts.T
                r, c = np.nonzero(scores >= tau)
                kept = scores[r, c]
                counts += np.bincount(c, minlength=N_CONCEPTS)
                hits += len(kept)
        elif method == "read":
            counts = np.zeros(N_CONCEPTS, dtype=np.int64)
            for batch in store.iter_batches():
                counts[0] += len(batch.vectors)
        times.append(time.perf_counter() - clock)
    seconds = statistics.median(times)
    return {
        "method": method,
        "rows": rows,
        "seconds": seconds,
        "captions_per_s": rows / seconds,
        "all_seconds": times,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "counts_sha": int(np.asarray(counts, dtype=np.int64) @ np.arange(1, N_CONCEPTS + 1)),
        "n_hits": int(hits),
    }


def bench_count(args: argparse.Namespace) -> dict:
    sizes = [args.rows // 4, args.rows]
    for rows in sizes:
        clock = time.perf_counter()
        random_store(rows)
        print(f"store of {rows:,} ready ({time.perf_counter() - clock:.0f} s)", flush=True)
    methods = ("read", "faiss", "faiss_spinning", "numpy", "numpy_hits", "numpy_store")
    rounds: list[dict] = []
    for repeat in range(args.repeats):  # methods interleaved: a busy spell hits them all alike
        for rows in sizes:
            for method in methods:
                env = dict(os.environ)
                if method == "faiss_spinning":
                    env.pop("OMP_WAIT_POLICY", None)  # libgomp's default: spin, then sleep
                else:
                    env["OMP_WAIT_POLICY"] = "PASSIVE"
                out = subprocess.run(
                    [sys.executable, __file__, "_count", method, str(rows), "1"],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env,
                )
                run = json.loads(out.stdout.strip().splitlines()[-1])
                rounds.append({**run, "repeat": repeat})
                print(
                    f"round {repeat} {method:>14} {rows:>10,}: {run['captions_per_s']:>10,.0f} "
                    f"captions/s ({run['seconds']:.2f} s), peak RSS {run['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
    runs = []
    for rows in sizes:
        for method in methods:
            mine = [r for r in rounds if r["rows"] == rows and r["method"] == method]
            seconds = statistics.median(r["seconds"] for r in mine)
            runs.append(
                {
                    **mine[0],
                    "seconds": seconds,
                    "captions_per_s": rows / seconds,
                    "all_seconds": [r["seconds"] for r in mine],
                    "peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
                }
            )
            print(
                f"median {method:>14} {rows:>10,}: {rows / seconds:>10,.0f} captions/s, "
                f"peak RSS {runs[-1]['peak_rss_mib']:.0f} MiB"
            )

    def paired(a: str, b: str) -> float:
        """Median over rounds of the speed ratio a/b on the full corpus (same round, same load)."""
        ratios = []
        for repeat in range(args.repeats):
            pick = {
                r["method"]: r["seconds"]
                for r in rounds
                if r["repeat"] == repeat and r["rows"] == args.rows
            }
            ratios.append(pick[b] / pick[a])
        return statistics.median(ratios)

    full = {r["method"]: r for r in runs if r["rows"] == args.rows}
    quarter = {r["method"]: r for r in runs if r["rows"] == args.rows // 4}
    assert (
        full["faiss"]["counts_sha"]
        == full["numpy"]["counts_sha"]
        == full["numpy_hits"]["counts_sha"]
        == full["numpy_store"]["counts_sha"]
    )
    assert full["faiss"]["n_hits"] == full["numpy_hits"]["n_hits"]
    summary = {
        "faiss/numpy speed (median of paired rounds)": paired("faiss", "numpy"),
        "faiss (spinning OpenMP)/numpy speed": paired("faiss_spinning", "numpy"),
        "faiss/numpy_hits speed": paired("faiss", "numpy_hits"),
        "faiss/numpy_store speed (search against product, same reading)": paired(
            "faiss", "numpy_store"
        ),
        "faiss peak RSS full/quarter": full["faiss"]["peak_rss_mib"]
        / quarter["faiss"]["peak_rss_mib"],
        "hit rate": full["faiss"]["n_hits"] / (args.rows * N_CONCEPTS),
    }
    for name, value in summary.items():
        print(f"{name}: {value:.4g}")
    return {"machine": machine(), "runs": runs, "rounds": rounds, "summary": summary}


# --------------------------------------------------------------------------- (b) index


def bench_index(args: argparse.Namespace) -> dict:
    from clipaudit.semantic.index import CaptionIndex, IndexSettings
    from clipaudit.semantic.store import EmbeddingStore

    rows, chunk, n_clusters = args.rows, 100_000, 2000
    centres = unit_rows(np.random.default_rng(2026), n_clusters)
    qrng = np.random.default_rng(7)
    picks = qrng.choice(n_clusters, args.queries, replace=False)
    queries = centres[picks] + 0.3 * qrng.standard_normal((args.queries, DIM)).astype(
        np.float32
    ) / np.sqrt(DIM)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    thresholds = np.array([0.5, 0.6, 0.7] * args.queries, dtype=np.float32)[: args.queries]

    folder = WORK / f"clustered_{rows}"
    store = EmbeddingStore.open(folder, {**IDENTITY, "model": "clustered", "rows": rows}, DIM)
    key = "000-00000-0000"
    exact_file = folder / "exact_counts.json"
    clock = time.perf_counter()
    if not store.is_done(key) or not exact_file.is_file():
        exact = np.zeros(args.queries, dtype=np.int64)
        # noise: the mean of two rows of a fixed Gaussian bank (65,536 x 512), a pair drawn per
        # vector: 2^32 distinct noise vectors at the cost of a gather, not 512 normals each
        bank = np.random.default_rng(99).standard_normal((65_536, DIM), dtype=np.float32)
        for part, start in enumerate(range(0, rows, chunk)):
            rng = np.random.default_rng([1, part])
            n = min(chunk, rows - start)
            label = rng.integers(0, n_clusters, n)
            pair = rng.integers(0, len(bank), (n, 2))
            spread = rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32) / np.sqrt(2 * DIM)
            x = centres[label] + spread * (bank[pair[:, 0]] + bank[pair[:, 1]])
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            x16 = x.astype(np.float16)
            # exact counts on the stored (float16) vectors, as the index re-scores them
            exact += (x16.astype(np.float32) @ queries.T >= thresholds).sum(axis=0)
            store.write_part(key, part, x16, np.arange(start, start + n))
            if part % 10 == 0:
                print(f"generated {start + n:,} ({time.perf_counter() - clock:.0f} s)", flush=True)
        store.finish(key, (rows + chunk - 1) // chunk, rows)
        exact_file.write_text(json.dumps(exact.tolist()))
    exact = np.array(json.loads(exact_file.read_text()))
    generate_s = time.perf_counter() - clock

    settings = IndexSettings(kind="ivfpq", nlist=1024, m=64, nbits=8, nprobe=32, train_rows=100_000)
    clock = time.perf_counter()
    index = CaptionIndex.build(store, settings, folder=WORK / f"index_{rows}")
    build_s = time.perf_counter() - clock
    print(f"built in {build_s:.0f} s, margin {index.margin:.4f}", flush=True)
    del index
    clock = time.perf_counter()
    index = CaptionIndex.load(WORK / f"index_{rows}")
    load_s = time.perf_counter() - clock
    results = []
    for q in range(args.queries):
        times = []
        for _ in range(3):
            result = index.query(queries[q], float(thresholds[q]), k=10)
            times.append(result.seconds)
        error = (result.count - exact[q]) / exact[q]
        results.append(
            {
                "threshold": float(thresholds[q]),
                "exact": int(exact[q]),
                "count": result.count,
                "relative_error": error,
                "median_s": statistics.median(times),
                "first_s": times[0],
                "n_candidates": result.n_candidates,
            }
        )
        print(
            f"query {q:2d} tau {thresholds[q]:.1f}: exact {exact[q]:6d}, index {result.count:6d} "
            f"({error:+.2%}), {statistics.median(times) * 1000:.0f} ms (first "
            f"{times[0] * 1000:.0f} ms), {result.n_candidates} candidates",
            flush=True,
        )
    summary = {
        "max_abs_relative_error": max(abs(r["relative_error"]) for r in results),
        "median_query_s": statistics.median(r["median_s"] for r in results),
        "max_query_s": max(r["median_s"] for r in results),
        "max_first_query_s": max(r["first_s"] for r in results),
        "generate_s": generate_s,
        "build_s": build_s,
        "load_s": load_s,
        "index_bytes": sum(f.stat().st_size for f in (WORK / f"index_{rows}").iterdir()),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    for name, value in summary.items():
        print(f"{name}: {value:.4g}")
    return {
        "machine": machine(),
        "rows": rows,
        "settings": settings.__dict__,
        "margin": index.margin,
        "queries": results,
        "summary": summary,
    }


# --------------------------------------------------------------------------- (c) encoding


def captions_for_encoding(n: int) -> list[str]:
    path = REPO.parent / "shared" / "data" / "coco_val2017_captions.parquet"
    if path.is_file():
        import pandas as pd

        return pd.read_parquet(path)["caption"].head(n).tolist()
    rng = np.random.default_rng(0)
    words = [
        "a",
        "dog",
        "cat",
        "red",
        "car",
        "on",
        "the",
        "beach",
        "in",
        "a",
        "park",
        "at",
        "night",
    ]
    return [" ".join(rng.choice(words, 10)) for _ in range(n)]


def bench_encode(args: argparse.Namespace) -> dict:
    import torch

    from clipaudit.semantic.encoders import EncoderSpec, load_encoder, minilm_path

    captions = captions_for_encoding(max(args.captions, args.clip_captions))
    sizes = {
        "all-MiniLM-L6-v2": args.captions,
        "ViT-B-32 text tower (random weights)": args.clip_captions,
    }
    specs = {
        "all-MiniLM-L6-v2": EncoderSpec(
            "sentence-transformers", str(minilm_path()), device="cpu", batch_size=256
        ),
        "ViT-B-32 text tower (random weights)": EncoderSpec(
            "open_clip", "ViT-B-32", None, device="cpu", batch_size=256
        ),
    }
    runs = {}
    for name, spec in specs.items():
        encoder = load_encoder(spec)
        texts = captions[: sizes[name]]
        encoder.encode(texts[:32])  # warm-up
        times = []
        for _ in range(args.repeats):
            clock = time.perf_counter()
            encoder.encode(texts)
            times.append(time.perf_counter() - clock)
        seconds = statistics.median(times)
        runs[name] = {
            "captions": len(texts),
            "median_s": seconds,
            "captions_per_s": len(texts) / seconds,
            "seconds_per_million": 1e6 * seconds / len(texts),
            "dim": encoder.dim,
            "torch_threads": torch.get_num_threads(),
        }
        print(
            f"{name}: {len(texts) / seconds:,.0f} captions/s "
            f"({1e6 * seconds / len(texts) / 3600:.2f} h per million)",
            flush=True,
        )
        del encoder
    names = list(runs)
    ratio = runs[names[0]]["captions_per_s"] / runs[names[1]]["captions_per_s"]
    print(f"MiniLM / ViT-B-32 text tower: {ratio:.2f}x")
    return {"machine": machine(), "runs": runs, "minilm_over_vitb32": ratio}


# --------------------------------------------------------------------------- main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_count":
        method, rows, repeats = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(run_count(method, rows, repeats)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["count", "index", "encode", "all"])
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--captions", type=int, default=2000, help="MiniLM's")
    parser.add_argument("--clip-captions", type=int, default=256, help="ViT-B-32's (slow on CPU)")
    parser.add_argument("--clean", action="store_true", help="delete the stores afterwards")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    parts = ["count", "index", "encode"] if args.part == "all" else [args.part]
    for part in parts:
        local = argparse.Namespace(**vars(args))
        if local.rows is None:
            local.rows = {"count": 2_000_000, "index": 10_000_000}.get(part)
        print(f"== {part} ==", flush=True)
        result = {"count": bench_count, "index": bench_index, "encode": bench_encode}[part](local)
        (OUT / f"semantic_speed_{part}.json").write_text(json.dumps(result, indent=2, default=str))
    if args.clean:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
