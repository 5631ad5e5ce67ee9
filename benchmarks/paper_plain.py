"""The paper's caption counting run the simplest way: pyahocorasick over parquet, nothing else.

    python benchmarks/paper_plain.py CORPUS_FOLDER OUT.json [REGISTRY.yaml]

The baseline of ``coverage_end_to_end.py``: lower-case each caption, find every paper synonym in
it as a substring with one Aho-Corasick automaton (a synonym listed by two concepts counts for
the last, as in the paper's synonym dict), count the captions per concept, write the counts.
"""

import json
import sys
from collections import Counter
from pathlib import Path

import ahocorasick
import pyarrow.parquet as pq
import yaml

REGISTRY = Path(__file__).resolve().parents[1] / "concepts" / "cai2025.yaml"
corpus, out = Path(sys.argv[1]), Path(sys.argv[2])
registry = Path(sys.argv[3]) if len(sys.argv) > 3 else REGISTRY
automaton = ahocorasick.Automaton()
for concept in yaml.load(registry.read_text("utf-8"), Loader=yaml.CSafeLoader)["concepts"]:
    for synonym in concept.get("paper_synonyms", []):
        automaton.add_word(synonym.lower(), concept["name"])
automaton.make_automaton()
counts: Counter[str] = Counter()
n_captions = 0
for path in sorted(corpus.glob("*.parquet")):
    for batch in pq.ParquetFile(path).iter_batches(columns=["caption"]):
        for caption in batch.column(0).to_pylist():
            n_captions += 1
            if caption:
                counts.update({name for _, name in automaton.iter(caption.lower())})
out.write_text(json.dumps({"n_captions": n_captions, "counts": dict(counts)}, indent=1))
