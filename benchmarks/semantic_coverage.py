"""``coverage count --method both`` and ``--method checked`` with all-MiniLM-L6-v2 on the shared COCO,
CC3M and LAION captions; where the encoder should run.

    python benchmarks/semantic_coverage.py calibrate   # fit on COCO dev + the even ids of the web dev sets
    python benchmarks/semantic_coverage.py runs        # both, then checked, on each corpus
    python benchmarks/semantic_coverage.py placement [--captions 2000]

``calibrate`` fits the calibration the runs use with ``clipaudit coverage calibrate`` on
``../shared/gold/coco_dev.jsonl`` and the **even-id halves** of ``tests/data/web_dev/*_dev.jsonl``
(the odd ids are the web forecast: nothing is fitted on them), and keeps the command's printed
cross-validation in ``benchmarks/out/semantic_coverage_calibrate.txt``.

``runs`` runs the CLI exactly as a user would (``--workers 2``, a fresh run folder each time):
``--method both`` first, which encodes every caption into an embedding store shared by the runs
(``--embedding-store``), then ``--method checked``, which reuses those embeddings; the wall time of
each command, captions/s over it, and the per-group coverage of every view are written to
``benchmarks/out/semantic_coverage_runs.json`` and printed as Markdown.

``placement`` measures what the run's design chose (the encoder in the driver, one process using
every core) against the alternative of one model per worker process: the same COCO captions
encoded by one process with torch's default threads, and split in two halves encoded at once by
two processes with one thread each; wall time and peak RSS of each process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
OUT = REPO / "benchmarks" / "out"
CALIBRATION = OUT / "minilm_calibration.json"
CORPORA = {
    "coco": SHARED / "data" / "coco_val2017_captions.parquet",
    "cc3m": SHARED / "data" / "cc3m_val_captions.parquet",
    "laion": SHARED / "data" / "laion_captions.parquet",
}
CLI = [sys.executable, "-m", "clipaudit", "coverage"]


def machine() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }


def even_halves() -> list[Path]:
    """The even-id halves of the web dev sets, written to benchmarks/out/."""
    halves = []
    for path in sorted((REPO / "tests" / "data" / "web_dev").glob("*_dev.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        target = OUT / f"{path.stem}_even.jsonl"
        target.write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] % 2 == 0))
        halves.append(target)
    return halves


def calibrate() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    gold = [SHARED / "gold" / "coco_dev.jsonl", *even_halves()]
    command = [*CLI, "calibrate", *map(str, gold), "--out", str(CALIBRATION), "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
    (OUT / "semantic_coverage_calibrate.txt").write_text(done.stdout)
    print(done.stdout)


def runs() -> None:
    import pandas as pd

    store = OUT / "semantic_store"
    results: dict = {"machine": machine(), "calibration": str(CALIBRATION), "runs": {}}
    for name, path in CORPORA.items():
        for method in ("both", "checked"):
            out = OUT / "semantic_runs" / f"{name}-{method}"
            command = [
                *CLI, "count", str(path), "--out", str(out), "--overwrite", "--method", method,
                "--calibration", str(CALIBRATION), "--embedding-store", str(store),
                "--workers", "2", "--no-progress", "--device", "cpu",
            ]  # fmt: skip
            clock = time.perf_counter()
            subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
            seconds = time.perf_counter() - clock
            manifest = json.loads((out / "manifest.json").read_text())
            groups = pd.read_parquet(out / "groups.parquet")
            n = manifest["n_captions_read"]
            results["runs"][f"{name}-{method}"] = {
                "captions": n,
                "wall_s": round(seconds, 1),
                "captions_per_s": round(n / seconds, 1),
                "embeddings": manifest["semantic"]["embeddings"]["this_session"],
                "checked": manifest["semantic"].get("checked"),
                "load_average": os.getloadavg(),
                "groups": groups.to_dict("records"),
            }
            print(f"{name} {method}: {n} captions, {seconds:.1f} s ({n / seconds:.1f}/s)")
    (OUT / "semantic_coverage_runs.json").write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = ["| corpus | method | captions | wall s | captions/s | encoded (captions/s) |"]
    lines.append("|---|---|---|---|---|---|")
    for key, run in results["runs"].items():
        corpus, method = key.split("-")
        encoded = run["embeddings"]
        rate = encoded["captions_per_s"] or "-"
        lines.append(
            f"| {corpus} | {method} | {run['captions']:,} | {run['wall_s']} | "
            f"{run['captions_per_s']} | {encoded['rows_encoded']:,} ({rate}) |"
        )
    lines.append("")
    for corpus in CORPORA:
        both = results["runs"][f"{corpus}-both"]["groups"]
        checked = {g["group"]: g for g in results["runs"][f"{corpus}-checked"]["groups"]}
        lines.append(f"{corpus}: group coverage, lexical / semantic / union / checked")
        lines.append("| group | lexical | semantic | union | checked |")
        lines.append("|---|---|---|---|---|")
        for g in both:
            cells = [
                g["rate"],
                g["semantic_rate"],
                g["union_rate"],
                checked[g["group"]]["checked_rate"],
            ]
            lines.append(f"| {g['group']} | " + " | ".join(f"{100 * c:.2f}%" for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


PLACEMENT = """
import json, resource, sys, time, torch
threads, start, stop = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if threads:
    torch.set_num_threads(threads)
import pandas as pd
from clipaudit.semantic.encoders import EncoderSpec, load_encoder, minilm_path
captions = pd.read_parquet(sys.argv[4])["caption"].tolist()[start:stop]
encoder = load_encoder(EncoderSpec("sentence-transformers", str(minilm_path()), device="cpu"))
encoder.encode(captions[:64])
clock = time.perf_counter()
encoder.encode(captions)
print(json.dumps({"seconds": time.perf_counter() - clock, "threads": torch.get_num_threads(),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def placement(n: int, repeats: int) -> None:
    coco = str(CORPORA["coco"])
    rounds = []
    for _ in range(repeats):
        clock = time.perf_counter()
        one = subprocess.run(
            [sys.executable, "-c", PLACEMENT, "0", "0", str(n), coco],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        one_wall = time.perf_counter() - clock
        half = n // 2
        clock = time.perf_counter()
        twins = [
            subprocess.Popen(
                [sys.executable, "-c", PLACEMENT, "1", str(a), str(b), coco],
                stdout=subprocess.PIPE,
                text=True,
            )
            for a, b in ((0, half), (half, n))
        ]
        outs = [json.loads(t.communicate()[0]) for t in twins]
        two_wall = time.perf_counter() - clock
        single = json.loads(one.stdout)
        rounds.append(
            {
                "driver": {
                    **single,
                    "captions_per_s": n / single["seconds"],
                    "process_wall_s": one_wall,
                },
                "per_worker": {
                    "seconds": max(o["seconds"] for o in outs),
                    "captions_per_s": n / max(o["seconds"] for o in outs),
                    "peak_rss_mib_sum": sum(o["peak_rss_mib"] for o in outs),
                    "process_wall_s": two_wall,
                },
                "load_average": os.getloadavg(),
            }
        )
        print(json.dumps(rounds[-1]))
    result = {"machine": machine(), "captions": n, "rounds": rounds}
    (OUT / "semantic_coverage_placement.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("calibrate", "runs", "placement"))
    parser.add_argument("--captions", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.part == "calibrate":
        calibrate()
    elif args.part == "runs":
        runs()
    else:
        placement(args.captions, args.repeats)


if __name__ == "__main__":
    main()
