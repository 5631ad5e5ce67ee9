"""Draw the unlabelled web-caption samples that become the web dev sets (run once; kept to show how).

For each of ../shared/data/laion_captions.parquet and cc3m_val_captions.parquet, 400 captions are
drawn as gold/coco_dev.jsonl was: 120 at random, then, among the rest, 240 with a case-insensitive
substring hit of a paper synonym (the paper's counting) and 40 without one. Seeded; each row keeps
its stratum. Labels are then added by reading, against the glosses and gold/LABELLING.md.

    .venv/bin/python tests/data/web_dev/draw.py   # writes <source>_sample.jsonl beside this file, unlabelled

A fresh LAION sample drawn the same way (seed 20261202) from the captions that are in neither the
LAION dev set nor the judged pool sample (benchmarks/results/laion_pool_hits_judged.jsonl), labelled
by readers who never ran a matcher, is the check set no rule was written from:

    .venv/bin/python tests/data/web_dev/draw.py --fresh   # writes laion_fresh_sample.jsonl

A second fresh LAION sample (seed 20261203, 2026-12-03), drawn when the first one's halves had
all been read, from the captions in none of the sets and pools above nor the second judged pool
(laion_pool2_hits_judged.jsonl):

    .venv/bin/python tests/data/web_dev/draw.py --fresh2   # writes laion_fresh2_sample.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from clipaudit.lexical import build_matcher
from clipaudit.registry import load_registry

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2].parent / "shared"
SOURCES = {"laion": "laion_captions.parquet", "cc3m": "cc3m_val_captions.parquet"}
STRATA = (("random", 120), ("paper_hit", 240), ("no_paper_hit", 40))


def draw(
    name: str, file: str, seed: int = 2026, exclude: frozenset[int] = frozenset()
) -> list[dict]:
    """The sample of ``file``'s captions, none of whose rows (positions) is in ``exclude``."""
    frame = pd.read_parquet(SHARED / "data" / file)
    matcher = build_matcher(load_registry("cai2025"), "paper")
    hit = np.array([bool(matcher.match_indices(c)) for c in frame["caption"]])
    rng = np.random.default_rng(seed)
    taken: set[int] = set(exclude)
    rows = []
    for stratum, size in STRATA:
        pool = np.arange(len(frame))
        if stratum == "paper_hit":
            pool = pool[hit]
        elif stratum == "no_paper_hit":
            pool = pool[~hit]
        pool = np.array([i for i in pool if i not in taken])
        for i in rng.choice(pool, size=size, replace=False).tolist():
            taken.add(i)
            rows.append(
                {"id": int(frame["id"][i]), "caption": frame["caption"][i], "stratum": stratum}
            )
    return rows


def seen_laion_rows(second: bool = False) -> frozenset[int]:
    """Rows of the LAION captions already read: the dev set's (by id) and the judged pool's; with
    ``second``, the first fresh set's and the second judged pool's too."""
    frame = pd.read_parquet(SHARED / "data" / SOURCES["laion"], columns=["id"])
    row_of = {int(i): row for row, i in enumerate(frame["id"])}
    results = HERE.parents[1].parent / "benchmarks" / "results"
    sets = ["laion_dev.jsonl", *(["laion_fresh.jsonl"] if second else [])]
    pools = ["laion_pool_hits_judged.jsonl", *(["laion_pool2_hits_judged.jsonl"] if second else [])]
    rows: set[int] = set()
    for name in sets:
        with open(HERE / name, encoding="utf-8") as handle:
            rows |= {row_of[json.loads(line)["id"]] for line in handle}
    for name in pools:
        with open(results / name, encoding="utf-8") as handle:
            rows |= {json.loads(line)["row"] for line in handle}
    return frozenset(rows)


def write(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(path.name, len(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="the fresh LAION sample")
    parser.add_argument("--fresh2", action="store_true", help="the second fresh LAION sample")
    args = parser.parse_args()
    if args.fresh2:
        second = draw("laion", SOURCES["laion"], seed=20261203, exclude=seen_laion_rows(True))
        write(second, HERE / "laion_fresh2_sample.jsonl")
    elif args.fresh:
        fresh = draw("laion", SOURCES["laion"], seed=20261202, exclude=seen_laion_rows())
        write(fresh, HERE / "laion_fresh_sample.jsonl")
    else:
        for name, file in SOURCES.items():
            write(draw(name, file), HERE / f"{name}_sample.jsonl")
