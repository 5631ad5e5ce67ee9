"""A semantic coverage count looks at its inputs before it loads the encoder (seconds to minutes):
a missing source, a wrong column, a damaged parquet file or a folder without captions is refused
at once, as the lexical count refuses it, and no run folder is left behind.

The encoder loader is replaced by one that records its calls: a refused input never calls it,
and a good input does (the control that shows the replacement is the loader the count uses).
"""

from __future__ import annotations

import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import clipaudit.semantic.encoders as encoders
from clipaudit.coverage import CaptionSources, count_coverage
from clipaudit.errors import InputError, ModelError
from tests.test_coverage import TINY_REGISTRY


class EncoderLoaded(Exception):
    """Raised by the recording loader: the count got as far as loading the encoder."""


@pytest.fixture
def loads(monkeypatch):
    calls = []

    def record(spec):
        calls.append(spec)
        raise EncoderLoaded(spec.label)

    monkeypatch.setattr(encoders, "load_encoder", record)
    return calls


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"id": [1, 2], "caption": ["a dog", "a cat"]}), good)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not a parquet file " * 8)
    empty = tmp_path / "no_captions"
    empty.mkdir()
    (empty / "notes.md").write_text("no captions here\n")
    registry = tmp_path / "tiny.yaml"
    registry.write_text(TINY_REGISTRY)
    return {
        "good": good,
        "corrupt": corrupt,
        "empty": empty,
        "missing": tmp_path / "nothere.parquet",
        "registry": registry,
    }


REFUSED = {
    "missing": ("missing", {}, "does not exist"),
    "column": ("good", {"column": "nope"}, "no caption column 'nope'"),
    "corrupt": ("corrupt", {}, "corrupt"),
    "no caption files": ("empty", {}, "holds no caption files"),
}


@pytest.mark.parametrize("method", ["semantic", "both", "checked"])
@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_input_is_refused_before_the_encoder_loads(files, loads, tmp_path, method, case):
    source, changes, message = REFUSED[case]
    out = tmp_path / "run"
    with pytest.raises(InputError, match=message):
        count_coverage(
            CaptionSources([files[source]]),
            files["registry"],
            out,
            method=method,
            progress=False,
            **changes,
        )
    assert loads == []
    assert not out.exists()  # no run folder left behind by a refused input


def test_a_good_input_reaches_the_encoder(files, loads, tmp_path):
    """The control: the recording loader is the one the count calls."""
    out = tmp_path / "run"
    with pytest.raises(EncoderLoaded):
        count_coverage(str(files["good"]), files["registry"], out, method="checked", progress=False)
    assert len(loads) == 1


def test_lexical_refusal_leaves_no_run_folder(files, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InputError, match="does not exist"):
        count_coverage(CaptionSources([files["missing"]]), files["registry"], out, progress=False)
    assert not out.exists()


def test_a_missing_encoder_folder_is_refused_before_torch_loads(monkeypatch, tmp_path):
    # torch and sentence-transformers take seconds to import: refused without either
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    folder = tmp_path / "no" / "model"
    with pytest.raises(ModelError, match="no such folder") as caught:
        encoders.load_encoder(encoders.parse_encoder(f"st:{folder}"))
    assert str(folder) in str(caught.value)
