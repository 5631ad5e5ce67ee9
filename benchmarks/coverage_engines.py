"""Coverage engines: the Ray engine against the local process pool, in the same run.

    nice -n 10 python benchmarks/coverage_engines.py [--rows 8000000] [--repeats 3]

On the same parquet shards (``make_caption_corpus.py``: captions resampled from COCO val2017), every
repeat times, end to end through :func:`clipaudit.coverage.count_coverage` (hashing inputs,
planning, counting, writing records, merging), with 1 and with 2 workers:

- ``local``: the local engine (a process pool; one worker counts in-process);
- ``ray``: the Ray engine on a Ray already running (as on a cluster: ``ray.init`` once, its start
  not timed; ``workers`` caps the tasks at once);
- ``ray+start`` (2 workers only): the Ray engine as ``clipaudit coverage count --engine ray`` runs
  on a laptop, starting a local Ray for the run and shutting it down, all timed.

Engines alternate order from repeat to repeat, and every run's tables are compared byte for byte
with the first local run's. Medians are printed with the ratios ray/local (target >= 0.8) and
2 workers/1 worker. On a machine shared with other jobs, end-to-end wall times mostly measure how
the CPU was shared; so the script also times the engine alone, per shard, in one process: the same
shards counted alternately in the driver and as Ray tasks on a 1-CPU Ray (wall time per shard,
and the task's own CPU time), which gives what a Ray task costs beyond the counting itself. For the projection to LAION-2B-en, the script also measures what a LAION
caption costs: captions per CPU-second of shard work on captions resampled from the 9,591 LAION-400M
captions of ../shared (the local engine, ``--laion-rows``), and the bytes of a LAION caption column
in parquet (snappy, with and without dictionary encoding). All runs go to
``benchmarks/out/coverage_engines.json``.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from make_caption_corpus import SOURCES, build_corpus
from record import OUT, begin, finish

from clipaudit.coverage import CoverageSettings, count_coverage
from clipaudit.registry import load_registry

TARGET = 0.8  # ray/local captions per second, 2 workers
TABLES = ("concepts.csv", "groups.csv", "categories.csv", "examples.json")


def timed_run(corpus: Path, engine: str, workers: int, run_dir: Path) -> dict[str, Any]:
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = CoverageSettings(
        workers=workers, progress=False, engine="ray" if engine.startswith("ray") else "local"
    )
    clock = time.perf_counter()
    result = count_coverage([corpus], load_registry(), run_dir, settings)
    seconds = time.perf_counter() - clock
    timings = result.manifest["timings"]
    return {
        "engine": engine,
        "workers": workers,
        "captions": result.n_captions_read,
        "shards": result.manifest["n_shards"],
        "seconds": seconds,
        "seconds_counting": timings["seconds_counting"],
        "captions_per_s": result.n_captions_read / seconds,
        "captions_per_cpu_s": timings["captions_per_cpu_s"],
        "tables": {name: (run_dir / name).read_bytes() for name in TABLES},
    }


def start_ray(cpus: int) -> None:
    import ray

    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )


def per_shard_overhead(corpus: Path, n_shards: int, repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds per shard, counted in this process and as a Ray task, the two
    alternating shard by shard (so both meet the same machine)."""
    import ray

    from clipaudit import coverage
    from clipaudit.engines import RayExecutor
    from clipaudit.lexical import build_matcher
    from clipaudit.readers import plan_shards, resolve_sources

    registry = load_registry()
    matcher = build_matcher(registry, "curated")
    shards = list(plan_shards(resolve_sources([corpus])))[:n_shards]
    options = coverage._WorkerOptions(
        units_dir=None,  # records come back, as from Ray: nothing is written
        concept_groups=coverage._concept_groups(registry),
        per_caption=False,
        examples_per_concept=5,
        max_caption_chars=10_000,
        batch_rows=10_000,
    )
    coverage._init_worker(matcher, options, None, None)
    start_ray(1)
    executor = RayExecutor(coverage._init_worker, (matcher, options, None, None), workers=1)
    try:
        executor.submit(coverage._process_shard, shards[0]).result()  # the worker's set-up
        found: dict[str, list[tuple[float, float]]] = {"driver": [], "ray": []}
        for repeat in range(repeats):
            for shard in shards:
                modes = ("driver", "ray") if repeat % 2 == 0 else ("ray", "driver")
                for mode in modes:
                    clock = time.perf_counter()
                    if mode == "driver":
                        summary = coverage._process_shard(shard)
                    else:
                        summary = executor.submit(coverage._process_shard, shard).result()
                    wall = time.perf_counter() - clock
                    found[mode].append((wall, summary["record"]["cpu_seconds"]))
    finally:
        executor.shutdown()
        ray.shutdown()
    result = {"shard_rows": shards[0].n_rows, "shards": len(found["ray"])}
    for mode, values in found.items():
        result[f"{mode}_wall_s"] = statistics.median(wall for wall, _ in values)
        result[f"{mode}_cpu_s"] = statistics.median(cpu for _, cpu in values)
    return result


def laion_caption_bytes() -> dict[str, float]:
    """What the caption column of LAION metadata costs to read, per caption, from the 9,591
    LAION-400M captions of ../shared written as parquet (snappy), with and without dictionary
    encoding (metadata files differ); and their mean length in UTF-8 bytes."""
    captions = (
        pq.read_table(SOURCES["laion"], columns=["caption"]).column("caption").cast(pa.string())
    )
    n = len(captions)
    sizes = {}
    for name, dictionary in (("plain", False), ("dictionary", True)):
        buffer = io.BytesIO()
        pq.write_table(
            pa.table({"caption": captions}),
            buffer,
            compression="snappy",
            use_dictionary=dictionary,
            row_group_size=n,
        )
        meta = pq.read_metadata(io.BytesIO(buffer.getvalue()))
        sizes[f"bytes_per_caption_{name}"] = meta.row_group(0).column(0).total_compressed_size / n
    text_bytes = sum(len(c.encode()) for c in captions.to_pylist() if c is not None)
    return {**sizes, "utf8_bytes_per_caption": text_bytes / n, "captions": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--laion-rows", type=int, default=2_000_000)
    args = parser.parse_args()

    corpus = build_corpus(args.rows)
    laion = build_corpus(args.laion_rows, source="laion")
    machine = begin(f"corpus {corpus} ({args.rows:,} captions), {os.cpu_count()} cores")
    runs: list[dict[str, Any]] = []
    reference: dict[str, bytes] | None = None

    def record(run: dict[str, Any], repeat: int) -> None:
        nonlocal reference
        tables = run.pop("tables")
        reference = reference or tables
        run["identical_tables"] = tables == reference
        runs.append({**run, "repeat": repeat})
        print(
            f"  {run['engine']:9s} {run['workers']} worker(s), run {repeat + 1}: "
            f"{run['seconds']:6.1f} s, {run['captions_per_s']:>9,.0f} captions/s, "
            f"{run['captions_per_cpu_s']:>9,.0f} per CPU-s, tables identical: "
            f"{run['identical_tables']}"
        )

    for repeat in range(args.repeats):
        order = ["local", "ray"] if repeat % 2 == 0 else ["ray", "local"]
        for engine in order:
            if engine == "local":
                for workers in (2, 1):
                    record(timed_run(corpus, "local", workers, OUT / "engines_local"), repeat)
            else:
                record(timed_run(corpus, "ray+start", 2, OUT / "engines_ray_start"), repeat)
                import ray

                start_ray(2)
                try:
                    for workers in (2, 1):
                        record(timed_run(corpus, "ray", workers, OUT / "engines_ray"), repeat)
                finally:
                    ray.shutdown()

    laion_runs = []
    for repeat in range(args.repeats):
        run = timed_run(laion, "local", 2, OUT / "engines_laion")
        run.pop("tables")
        laion_runs.append(run)
        print(
            f"  LAION-like {args.laion_rows:,} captions, local, 2 workers, run {repeat + 1}: "
            f"{run['captions_per_cpu_s']:,.0f} captions per CPU-s"
        )
    caption_bytes = laion_caption_bytes()
    per_shard = per_shard_overhead(corpus, n_shards=8, repeats=args.repeats)

    medians: dict[str, dict[str, float]] = {}
    for engine, workers in (("local", 2), ("local", 1), ("ray", 2), ("ray", 1), ("ray+start", 2)):
        mine = [r for r in runs if r["engine"] == engine and r["workers"] == workers]
        medians[f"{engine} x{workers}"] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("seconds", "seconds_counting", "captions_per_s", "captions_per_cpu_s")
        }
    print(f"\nmedians over {args.repeats} repeat(s), {args.rows:,} captions")
    print(f"{'engine':16s} {'wall s':>8s} {'captions/s':>12s} {'per core':>10s} {'per CPU-s':>10s}")
    for name, m in medians.items():
        workers = int(name.rsplit("x", 1)[1])
        print(
            f"{name:16s} {m['seconds']:8.1f} {m['captions_per_s']:12,.0f} "
            f"{m['captions_per_s'] / workers:10,.0f} {m['captions_per_cpu_s']:10,.0f}"
        )

    def ratio(top: str, bottom: str) -> float:
        return medians[top]["captions_per_s"] / medians[bottom]["captions_per_s"]

    ratios = {
        "ray/local, 2 workers (Ray running)": ratio("ray x2", "local x2"),
        "ray/local, 1 worker (Ray running)": ratio("ray x1", "local x1"),
        "ray+start/local, 2 workers (Ray started for the run)": ratio("ray+start x2", "local x2"),
        "ray 2/1 workers": ratio("ray x2", "ray x1"),
        "local 2/1 workers": ratio("local x2", "local x1"),
    }
    for name, value in ratios.items():
        verdict = ""
        if name.startswith("ray/local, 2"):
            verdict = f" ({'meets' if value >= TARGET else 'MISSES'} the target of >= {TARGET}x)"
        print(f"{name}: {value:.2f}x{verdict}")
    laion_rate = statistics.median(r["captions_per_cpu_s"] for r in laion_runs)
    print(
        f"LAION-like captions: {laion_rate:,.0f} captions per CPU-second of shard work; caption "
        f"column {caption_bytes['bytes_per_caption_plain']:.1f} B/caption in parquet (snappy, "
        f"plain), {caption_bytes['bytes_per_caption_dictionary']:.1f} B (dictionary), "
        f"{caption_bytes['utf8_bytes_per_caption']:.1f} B of UTF-8 text"
    )
    overhead = per_shard["ray_wall_s"] - per_shard["driver_wall_s"]
    print(
        f"per shard of {per_shard['shard_rows']:,} captions, same process, alternating "
        f"({per_shard['shards']} each): counted here {per_shard['driver_wall_s']:.3f} s "
        f"({per_shard['driver_cpu_s']:.3f} CPU-s), as a Ray task {per_shard['ray_wall_s']:.3f} s "
        f"({per_shard['ray_cpu_s']:.3f} CPU-s): ray/local {per_shard['driver_wall_s'] / per_shard['ray_wall_s']:.2f}x, "
        f"{overhead * 1000:+.0f} ms per task"
    )
    identical = all(r["identical_tables"] for r in runs)
    print(f"tables identical across every run and engine: {identical}")
    finish(
        "coverage_engines",
        machine,
        {
            "rows": args.rows,
            "runs": runs,
            "medians": medians,
            "ratios": ratios,
            "target": TARGET,
            "laion": {"rows": args.laion_rows, "runs": laion_runs, "caption_bytes": caption_bytes},
            "per_shard": per_shard,
            "identical_tables": identical,
        },
    )


if __name__ == "__main__":
    main()
