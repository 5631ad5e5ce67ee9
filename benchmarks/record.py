"""What every benchmark writes beside its figures: when it ran, on which machine, under what load.

On a shared 2-core machine another busy process changes a rate more than anything else, so each
script prints the load average before and after and keeps both in its JSON under `benchmarks/out/`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"


def _loads(load: tuple[float, ...]) -> str:
    return ", ".join(f"{x:.2f}" for x in load)


def begin(headline: str) -> dict[str, Any]:
    """Print the headline with the time and load average; return the machine record to finish."""
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load_before = os.getloadavg()
    print(f"{started}: {headline}")
    print(f"load average before: {_loads(load_before)} (1, 5, 15 min; other jobs slow every rate)")
    return {
        "started": started,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
    }


def finish(name: str, machine: dict[str, Any], figures: dict[str, Any]) -> Path:
    """Print the load average after, write `out/NAME.json` (the machine record and the figures)."""
    load_after = os.getloadavg()
    print(f"load average after: {_loads(load_after)} (1, 5, 15 min)")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    report = {
        "started": machine["started"],
        "machine": {
            **{k: v for k, v in machine.items() if k != "started"},
            "load_average_after": load_after,
        },
        **figures,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"all runs: {path}")
    return path
