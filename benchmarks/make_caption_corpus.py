"""Build (once) a large caption corpus in parquet shards, resampled from captions in ../shared.

    python benchmarks/make_caption_corpus.py [--rows 2000000] [--shard-rows 100000] [--seed 2025]
        [--source coco|laion|cc3m]

Writes ``benchmarks/data/<source>_resampled_<rows>/part-NNNNN.parquet`` (columns ``id``: row
number, ``source_id``: the id of the caption it was drawn from, ``caption``) and ``corpus.json``
last; a corpus whose ``corpus.json`` matches the parameters is reused. Captions are drawn with
replacement by a seeded generator, so the same parameters always give the same corpus. ``coco``
(the default) draws from the 25,014 COCO val2017 captions; ``laion`` from the 9,591 LAION-400M
alt-texts (product titles and all: the kind of text the LAION corpora hold); ``cc3m`` from the
15,433 Conceptual Captions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
SOURCES = {
    name: REPO.parent / "shared" / "data" / f"{file}.parquet"
    for name, file in {
        "coco": "coco_val2017_captions",
        "laion": "laion_captions",
        "cc3m": "cc3m_val_captions",
    }.items()
}
DATA = REPO / "benchmarks" / "data"


def build_corpus(
    rows: int = 2_000_000, shard_rows: int = 100_000, seed: int = 2025, source: str = "coco"
) -> Path:
    """The corpus folder, built unless an identical one is already there."""
    folder = DATA / f"{source}_resampled_{rows}"
    path = SOURCES[source]
    params = {"rows": rows, "shard_rows": shard_rows, "seed": seed, "source": path.name}
    marker = folder / "corpus.json"
    if marker.is_file() and json.loads(marker.read_text())["params"] == params:
        return folder
    if not path.is_file():
        raise SystemExit(f"{path} is absent: the corpus is resampled from ../shared's captions")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    captions = pq.read_table(path, columns=["id", "caption"])
    rng = np.random.default_rng(seed)
    for part, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        picks = pa.array(rng.integers(0, captions.num_rows, size=n))
        table = pa.table(
            {
                "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
                "source_id": captions.column("id").take(picks),
                "caption": captions.column("caption").take(picks),
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
    parser.add_argument("--source", choices=sorted(SOURCES), default="coco")
    args = parser.parse_args()
    print(build_corpus(args.rows, args.shard_rows, args.seed, args.source))


if __name__ == "__main__":
    main()
