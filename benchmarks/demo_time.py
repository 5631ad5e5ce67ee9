"""How long `clipaudit demo` takes at its default size, stage by stage, and what it finds.

    .venv/bin/python benchmarks/demo_time.py [--repeats 1] [--seed 0]

Runs the command line exactly as `make demo` does (a subprocess, a fresh run folder each time),
times it from outside (start-up included), reads the stages' own timings and each group's numbers
from the run's manifest, and prints the machine's load average before and after each run: on a
2-core machine another busy process changes the training time more than anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET_S = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    walls = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "demo"
            before = os.getloadavg()[0]
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "clipaudit", "demo", "--out", str(out), "--quiet",
                 "--seed", str(args.seed)],
                cwd=REPO, check=True, capture_output=True,
            )  # fmt: skip
            wall = time.perf_counter() - started
            manifest = json.loads((out / "manifest.json").read_text())
        walls.append(wall)
        timings = manifest["timings"]
        stages = ", ".join(
            f"{name.removesuffix('_s')} {timings[name]:.1f} s"
            for name in ("world_s", "train_s", "coverage_s", "zeroshot_s", "report_s")
        )
        print(
            f"run {repeat + 1}: {wall:.1f} s wall (budget {BUDGET_S:.0f} s); {stages}; load "
            f"{before:.1f} -> {os.getloadavg()[0]:.1f}"
        )
        for row in manifest["groups"]:
            print(
                f"  {row['group']:16s} true mentions {row['true_mention_rate']:6.1%}  coverage "
                f"{row['coverage']:6.1%}  macro-F1 {row['macro_f1']:.3f} (chance {row['chance']:.3f})"
            )
        print(
            f"  Spearman (true mentions, macro-F1): {manifest['spearman_true_mentions_awareness']:.3f}"
        )
    print(
        f"\nmedian {statistics.median(walls):.1f} s over {len(walls)} run(s), "
        f"{statistics.median(walls) / BUDGET_S:.2f} of the 5-minute budget; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}"
    )


if __name__ == "__main__":
    main()
