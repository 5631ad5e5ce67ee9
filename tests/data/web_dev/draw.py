"""Draw the unlabelled web-caption samples that become the web dev sets (run once; kept to show how).

For each of ../shared/data/laion_captions.parquet and cc3m_val_captions.parquet, 400 captions are
drawn as gold/coco_dev.jsonl was: 120 at random, then, among the rest, 240 with a case-insensitive
substring hit of a paper synonym (the paper's counting) and 40 without one. Seeded; each row keeps
its stratum. Labels are then added by reading, against the glosses and gold/LABELLING.md.

    .venv/bin/python tests/data/web_dev/draw.py   # writes <source>_sample.jsonl beside this file, unlabelled
"""

from __future__ import annotations

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


def draw(name: str, file: str, seed: int = 2026) -> list[dict]:
    frame = pd.read_parquet(SHARED / "data" / file)
    matcher = build_matcher(load_registry("cai2025"), "paper")
    hit = np.array([bool(matcher.match_indices(c)) for c in frame["caption"]])
    rng = np.random.default_rng(seed)
    taken: set[int] = set()
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


if __name__ == "__main__":
    for name, file in SOURCES.items():
        rows = draw(name, file)
        with open(HERE / f"{name}_sample.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(name, len(rows))
