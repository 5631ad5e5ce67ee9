"""Build (once) a large caption corpus in parquet shards, resampled from the COCO val2017 captions.

    python benchmarks/make_caption_corpus.py [--rows 2000000] [--shard-rows 100000] [--seed 2025]

Writes ``benchmarks/data/coco_resampled_<rows>/part-NNNNN.parquet`` (columns ``id``: row number,
``coco_id``: the COCO caption id it was drawn from, ``caption``) and ``corpus.json`` last; a corpus
whose ``corpus.json`` matches the parameters is reused. ``build_corpus(..., source=LAION,
name="laion")`` resamples the LAION-400M caption sample of ``../shared`` instead. Captions are drawn with replacement by a
seeded generator, so the same parameters always give the same corpus.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
COCO = REPO.parent / "shared" / "data" / "coco_val2017_captions.parquet"
LAION = REPO.parent / "shared" / "data" / "laion_captions.parquet"
DATA = REPO / "benchmarks" / "data"


def build_corpus(
    rows: int = 2_000_000,
    shard_rows: int = 100_000,
    seed: int = 2025,
    source: Path = COCO,
    name: str = "coco",
) -> Path:
    """The corpus folder, built unless an identical one is already there."""
    folder = DATA / f"{name}_resampled_{rows}"
    params = {"rows": rows, "shard_rows": shard_rows, "seed": seed, "source": source.name}
    marker = folder / "corpus.json"
    if marker.is_file() and json.loads(marker.read_text())["params"] == params:
        return folder
    if not source.is_file():
        raise SystemExit(f"{source} is absent: the corpus is resampled from ../shared's captions")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    coco = pq.read_table(source, columns=["id", "caption"])
    rng = np.random.default_rng(seed)
    for part, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        picks = pa.array(rng.integers(0, coco.num_rows, size=n))
        table = pa.table(
            {
                "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
                "coco_id": coco.column("id").take(picks),
                "caption": coco.column("caption").take(picks),
            }
        )
        pq.write_table(table, folder / f"part-{part:05d}.parquet", row_group_size=50_000)
    marker.write_text(json.dumps({"params": params, "n_shards": part + 1}, indent=2) + "\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--shard-rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args()
    print(build_corpus(args.rows, args.shard_rows, args.seed))


if __name__ == "__main__":
    main()
