"""OpenCLIP models, loaded through open_clip's own factory.

A model is named like open_clip names it, plus two local forms so custom and tiny models run like
named ones:

- ``--model ViT-B-32 --pretrained laion2b_s34b_b79k``: an architecture and a pretrained tag;
- ``--model hf-hub:org/repo`` or ``--model local-dir:/path``: config and weights together
  (``--pretrained`` must then be left out, open_clip would ignore it);
- ``--model path/to/config.json``: an open_clip model config (``embed_dim``, ``vision_cfg``,
  ``text_cfg``), registered on the fly under its file stem;
- ``--pretrained path/to/checkpoint.safetensors`` (or ``.pt``/``.pth``/``.bin``): a local checkpoint,
  read without unpickling arbitrary objects (safetensors, or ``torch.load(weights_only=True)``);
- no ``--pretrained``: random weights, seeded (useful for speed measurements and tests).

Loading records what determines the embeddings (architecture, config, a hash of the weights,
preprocessing, precision) so that image embeddings can be cached under that identity.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch

from clipaudit import hub
from clipaudit.errors import (
    CheckedFields,
    ModelError,
    SettingsError,
    did_you_mean,
    whole_line,
)
from clipaudit.hub import (
    cached_commit,
    download_refused,
    hub_cache_words,
    hub_refused,
    in_hub_cache,
    valid_repo_id,
)
from clipaudit.provenance import sha256_file

SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
RANDOM_WEIGHTS = (
    "none",
    "random",
)  # --pretrained values meaning "no checkpoint: seeded random weights"
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# the weights open_clip looks for in a hub repo, in its order (safetensors first)
HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class ModelSpec(CheckedFields):
    """Which model to load: an open_clip model name or config JSON, and its weights."""

    model: str
    pretrained: str | None = None
    name: str | None = None  # the label to use instead of the one made from model and weights

    def __post_init__(self) -> None:
        for key in ("model", "pretrained"):  # a path object is a path: keep it as text
            if isinstance(getattr(self, key), os.PathLike):
                object.__setattr__(self, key, os.fspath(getattr(self, key)))
        if not isinstance(self.model, str):
            raise SettingsError(
                f"a model is a name or a path, got {type(self.model).__name__} {self.model!r}"
            )
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise SettingsError(
                f"pretrained weights are a tag or a checkpoint path, got "
                f"{type(self.pretrained).__name__} {self.pretrained!r}"
            )
        if not self.model.strip():
            raise SettingsError(
                "a model name is empty; expected e.g. ViT-B-32 or a config JSON path"
            )
        if self.pretrained is not None and not self.pretrained.strip():
            raise SettingsError(
                f"the pretrained value for {self.model!r} is empty; give a tag, a checkpoint "
                f"file, or 'none' for random weights"
            )
        if self.model.startswith(SCHEMA_PREFIXES) and not self.is_random:
            raise SettingsError(
                f"{self.model!r} carries its own weights, got --pretrained {self.pretrained!r} as well; "
                "leave --pretrained out (or 'none') for hf-hub: and local-dir: models"
            )

    @property
    def is_random(self) -> bool:
        return self.pretrained is None or self.pretrained.lower() in RANDOM_WEIGHTS

    @property
    def is_checkpoint_file(self) -> bool:
        if self.is_random:
            return False
        path = Path(self.pretrained)
        return path.suffix in CHECKPOINT_SUFFIXES or path.is_file()

    @property
    def label(self) -> str:
        """A short name for tables: ``ViT-B-32@laion2b_s34b_b79k``, ``tiny@ckpt``, ``hf-hub:org/repo``
        (or ``name`` when given)."""
        if self.name is not None:
            return self.name
        name = Path(self.model).stem if self.model.endswith(".json") else self.model
        if self.model.startswith(SCHEMA_PREFIXES):
            return name
        if self.is_random:
            return f"{name}@random"
        weights = Path(self.pretrained).stem if self.is_checkpoint_file else self.pretrained
        return name if weights == name else f"{name}@{weights}"  # a config saved with its weights


@dataclass
class LoadedModel:
    """A model ready to embed images and texts, with what identifies its embeddings.

    ``identity`` holds everything the image embeddings depend on (architecture and config, weights
    hash, preprocessing, precision); ``info`` is what the manifest records about the model.
    """

    label: str
    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]
    device: torch.device
    precision: str
    image_size: int
    identity: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """``torch.inference_mode`` plus autocast when the precision is bf16 or fp16."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None),
        ):
            yield


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; explicit devices are checked to exist."""
    if not isinstance(device, str):
        raise SettingsError(
            f"device must be one of {', '.join(DEVICES)} (or cuda:N), got "
            f"{type(device).__name__} {device!r}"
        )
    base = device.split(":", 1)[0]
    if base not in DEVICES:
        raise SettingsError(
            f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}"
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise SettingsError(
            f"device {device!r} was asked for but CUDA is not available; use --device cpu"
        )
    if base == "cuda" and device != "cuda":  # cuda:N, with N one of this machine's GPUs
        index, count = device.split(":", 1)[1], torch.cuda.device_count()
        if not index.isdigit() or int(index) >= count:
            raise SettingsError(
                f"device {device!r} was asked for but this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    if base == "mps" and not torch.backends.mps.is_available():
        raise SettingsError(
            f"device {device!r} was asked for but MPS is not available; use --device cpu"
        )
    return torch.device(device)


def describe_device(device: torch.device) -> dict[str, Any]:
    """What a run's timings and rounding depend on, for its record: the GPU's name, compute
    capability and CUDA (or ROCm) version, or the CPU's, and the threads torch computes with."""
    import platform

    record: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        record.update(
            name=torch.cuda.get_device_name(device),
            capability=f"{major}.{minor}",
            cuda=torch.version.cuda,
            hip=torch.version.hip,
        )
    else:
        record["name"] = platform.processor() or platform.machine()
        record["threads"] = torch.get_num_threads()
    return record


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 autocast on a GPU that computes in bf16 (compute capability 8 on, or
    ROCm), fp16 on an older one, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        # not torch.cuda.is_bf16_supported(): it says yes where bf16 is only emulated (a T4, a
        # V100: many times slower than fp16), and of the current GPU, not of ``device``
        native = torch.version.hip is not None or torch.cuda.get_device_capability(device)[0] >= 8
        return "bf16" if native else "fp16"
    if precision == "fp16" and device.type == "cpu":
        raise SettingsError("fp16 autocast is for GPUs; on CPU use --precision fp32 or bf16")
    return precision


def resolve_architecture(model: str) -> str:
    """The open_clip model name for ``model``, registering a config JSON file on the fly."""
    if model.startswith("local-dir:"):
        folder = Path(model.removeprefix("local-dir:"))
        if not (folder / "open_clip_config.json").is_file():
            raise ModelError(
                f"local-dir model {str(folder)!r} has no open_clip_config.json; expected a folder with "
                "open_clip_config.json and a checkpoint (open_clip's local-dir layout)"
            )
        return model
    if model.startswith("hf-hub:"):
        _check_hub_model_reachable(model.removeprefix("hf-hub:"))
        return model
    if model.endswith(".json"):
        return _register_config(Path(model))
    if Path(model).suffix.lower() in CHECKPOINT_SUFFIXES and Path(model).is_file():
        raise ModelError(
            f"{model!r} is a checkpoint file (weights), not a model; give it as --pretrained, "
            "with the architecture it was trained as --model (an open_clip name or its "
            "model-config JSON)"
        )
    known = open_clip.list_models()
    if model not in known:
        raise ModelError(
            f"unknown open_clip model {model!r}{did_you_mean(model, known)}; use a name from "
            "open_clip.list_models(), hf-hub:org/repo, local-dir:PATH, or the path of a model-config JSON"
        )
    return model


def _register_config(path: Path) -> str:
    if not path.is_file():
        raise ModelError(
            f"model config {str(path)!r} does not exist; expected an open_clip model-config JSON"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model config {str(path)!r} is not valid JSON: {exc}") from None
    except RecursionError:  # nested past the parser's recursion limit: no model config does
        raise ModelError(f"model config {str(path)!r} is nested too deeply to be one") from None
    required = ("embed_dim", "vision_cfg", "text_cfg")
    if not isinstance(config, dict) or not all(key in config for key in required):
        got = sorted(config) if isinstance(config, dict) else type(config).__name__
        hint = (
            " (an open_clip_config.json with model_cfg: use --model local-dir:FOLDER)"
            if (isinstance(config, dict) and "model_cfg" in config)
            else ""
        )
        raise ModelError(
            f"model config {str(path)!r} must have keys {', '.join(required)}, got {got}{hint}"
        )
    builtin = Path(open_clip.__file__).parent / "model_configs" / path.name
    if builtin.is_file() and json.loads(builtin.read_text(encoding="utf-8")) != config:
        # open_clip names a config by its file's stem: this one would replace the built-in
        # architecture for every later model of the process
        raise ModelError(
            f"model config {str(path)!r} has the name of open_clip's built-in {path.stem!r} but "
            "another config; rename the file (its name is the architecture's)"
        )
    open_clip.add_model_config(path)
    return path.stem


def check_pretrained(spec: ModelSpec, architecture: str) -> str | None:
    """The value to pass to open_clip as ``pretrained`` (None for random weights), checked. An
    hf-hub: or local-dir: model's own weights file is checked as a ``pretrained`` one is."""
    if spec.model.startswith(SCHEMA_PREFIXES):
        _check_folder_weights(spec)
        return None
    if spec.is_random:
        return None
    if spec.is_checkpoint_file:
        if not Path(spec.pretrained).is_file():
            raise ModelError(
                f"checkpoint file {spec.pretrained!r} does not exist; give an existing .safetensors/.pt "
                "file or a pretrained tag"
            )
        shapes = check_checkpoint(spec.pretrained, spec.label)
        if shapes is not None:
            check_weights_fit(spec, architecture, shapes)
        return spec.pretrained
    tags = open_clip.list_pretrained_tags_by_model(architecture)
    if spec.pretrained not in tags and ("/" in spec.pretrained or os.sep in spec.pretrained):
        # no tag holds a path separator: this was meant as a checkpoint file
        raise ModelError(
            f"checkpoint file {spec.pretrained!r} does not exist (nor is it a pretrained tag); "
            "give an existing .safetensors/.pt file or a pretrained tag"
        )
    if spec.pretrained not in tags:
        raise ModelError(
            f"unknown pretrained tag {spec.pretrained!r} for {architecture!r}"
            f"{did_you_mean(spec.pretrained, tags)}; tags for it are {', '.join(tags) or 'none'}, "
            "or give a checkpoint file"
        )
    _check_weights_reachable(architecture, spec.pretrained)
    return spec.pretrained


def _text_instead_of_weights(path: str) -> str | None:
    """What a checkpoint file that is text holds ("is a model config (JSON)", "is a text file"),
    or None for a binary file: weights are a pickle, a zip, safetensors or numpy, never text."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None  # the loader says why
    if not head or b"\0" in head:
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not a character cut at the end of the block
            return None
    if head.startswith(b"version https://git-lfs"):  # a clone made without git-lfs
        return "is a Git LFS pointer, not weights: fetch the weights with `git lfs pull`"
    if head.lstrip().startswith(b"{") and b'"embed_dim"' in head:
        return (
            "is a model config (JSON), not weights: give it as --model and the weights as "
            "--pretrained"
        )
    return (
        "is a text file, not weights: give the checkpoint file (.safetensors, .pt) as --pretrained"
    )


def check_checkpoint(path: str, label: str) -> dict[str, tuple[int, ...]] | None:
    """Read the checkpoint file ``path`` as a state dict, unpickling nothing but tensors, and
    return its tensors' shapes by name (None for numpy weights, which open_clip converts), or raise
    :class:`ModelError` saying what it holds instead. Read here before open_clip reads it: when
    torch's safe loader raises a TypeError (a crafted pickle can make it), open_clip loads the file
    again with torch's default, which unpickles anything (and runs its code) before torch 2.6 or
    with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD set. A zip-format checkpoint (torch.save's since torch 1.6) is memory-mapped, so its tensors are not
    read; an older one is read whole."""
    import zipfile

    prefix = f"could not load model {label!r}: checkpoint {path!r}"
    suffix = Path(path).suffix
    if suffix in (".npz", ".npy"):  # big_vision weights: numpy's loader, no pickle
        return None
    if suffix.lower() == ".safetensors" and suffix != ".safetensors":
        # open_clip picks its reader by the suffix as written: this one would go to torch.load
        raise ModelError(
            f"{prefix} is named with {suffix!r}; open_clip reads a safetensors file only by the "
            f"lower-case suffix: rename it to {str(Path(path).with_suffix('.safetensors'))!r}"
        )
    text = _text_instead_of_weights(path)
    if text is not None:  # torch's reason would be an unpickling error and advice to unpickle
        raise ModelError(f"{prefix} cannot be read as tensors alone: it {text}")
    try:
        if path.endswith(".safetensors"):  # tensors alone by design: their names say enough
            from safetensors import safe_open

            with safe_open(path, framework="pt") as handle:  # reads the header alone
                names = handle.keys()  # a handle, not a dict: it has no `in`
                state: Any = {
                    name: torch.empty(handle.get_slice(name).get_shape(), device="meta")
                    for name in names
                }
        else:
            with _quiet_checkpoint_warnings():
                state = torch.load(
                    path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
                )
    except Exception as exc:  # torch and safetensors raise many types for a file they refuse
        reason = f"{type(exc).__name__}: {whole_line(exc)}"
        if path.endswith(".safetensors"):  # holds tensors alone by design: unreadable is damaged
            raise ModelError(
                f"{prefix} is no readable safetensors file ({reason}): it is damaged or cut "
                "short; download or save it again"
            ) from None
        raise ModelError(
            f"{prefix} cannot be read as tensors alone, unpickling nothing else ({reason}); "
            "give a checkpoint that holds only tensors (a state dict saved with safetensors or "
            "torch.save), or, if it was cut short, download or save it again"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:  # a training checkpoint, as open_clip
        state = state["state_dict"]
    if (
        isinstance(state, dict)
        and state
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        return {name: tuple(tensor.shape) for name, tensor in state.items()}
    if isinstance(state, dict):
        found = (
            f"a dict of {len(state)} entries, e.g. {', '.join(map(repr, list(state)[:5]))}"
            if state
            else "an empty dict"
        )
    else:
        found = f"a {type(state).__name__}"
    raise ModelError(
        f"{prefix} holds {found}, not a state dict (tensor names to tensors, or such a dict under "
        "'state_dict'); give the checkpoint of an open_clip model"
    )


def check_weights_fit(
    spec: ModelSpec, architecture: str, shapes: dict[str, tuple[int, ...]]
) -> None:
    """Raise :class:`ModelError` when a checkpoint's tensors (``shapes``, by name) do not fit
    ``architecture``, naming the tensors that differ. The model is built on torch's meta device
    (no weights allocated) and the names and shapes are made over as open_clip's
    ``load_checkpoint`` makes them over before its strict load, so that whatever open_clip loads
    passes. Architectures this cannot build offline pass unchecked: the load checks them."""
    differences = weights_misfit(architecture, shapes)
    if differences:
        config = f" (model config {spec.model!r})" if spec.model.endswith(".json") else ""
        raise ModelError(
            f"could not load model {spec.label!r}: checkpoint {spec.pretrained!r} does not fit "
            f"the architecture {architecture!r}{config}: {'; '.join(differences)}; give as "
            "--model (ModelSpec.model in Python) the config the weights were trained with, or "
            "as --pretrained (ModelSpec.pretrained) weights trained with this one"
        )


def weights_misfit(architecture: str, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """How a checkpoint's tensors (``shapes``, by name) do not fit ``architecture``, in words
    (the tensors that differ); empty when open_clip's strict load would take them, or when the
    architecture cannot be built offline (the load checks it)."""
    model = _meta_model(architecture)
    if model is None or not shapes:
        return []
    state = _as_open_clip_loads(model, shapes)
    if state is None:
        return []
    try:
        model.load_state_dict(state, strict=True)  # tensors on meta: compares, copies nothing
    except RuntimeError as exc:
        return _differences(
            {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()},
            {name: tuple(tensor.shape) for name, tensor in state.items()},
        ) or [whole_line(exc, 400)]
    return []


def _check_folder_weights(spec: ModelSpec) -> None:
    """Refuse an hf-hub: or local-dir: model whose weights open_clip would not load, before
    anything runs: a folder without a weights file (open_clip would go on with random weights,
    saying so only in a log line), a damaged or pickled-object one, or one of another config. A
    hub model is checked in the hub cache alone: one not cached is downloaded by the load."""
    found = _folder_files(spec.model)
    if found is None:
        return
    config, weights, fix = found
    try:
        shapes = check_checkpoint(str(weights), spec.label)
        differences = weights_misfit(f"local-dir:{config.parent}", shapes or {})
        if differences:
            raise ModelError(
                f"could not load model {spec.label!r}: its weights file {str(weights)!r} does "
                f"not fit the model_cfg of {str(config)!r}: {'; '.join(differences)}; {fix}"
            )
    except ModelError:
        if not _superseded(spec.model, config):
            raise


def _folder_files(model: str) -> tuple[Path, Path, str] | None:
    """The config and weights files open_clip reads for an hf-hub: or local-dir: ``model``, and
    the fix for weights that do not fit the config; None for a hub model not in the hub cache."""
    if model.startswith("local-dir:"):
        folder = Path(model.removeprefix("local-dir:"))
        config = folder / "open_clip_config.json"
        _read_folder_config(config)
        # open_clip's own choice (by name, safetensors first), so that the file checked is the
        # one it loads; an open_clip before local-dir: support has none, and loads no folder
        find = getattr(open_clip.factory, "_find_checkpoint_in_dir", None)
        if find is None:
            return None
        weights = find(folder)
        if weights is None:
            others = sorted(p.name for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
            seen = f"; found {', '.join(others)}" if others else ""
            raise ModelError(
                f"local-dir folder {str(folder)!r} has no weights file (open_clip looks for "
                f"*.safetensors, *.bin, *.pth{seen}), so open_clip would run it with random "
                "weights; put the weights in it as open_clip_model.safetensors, or for random "
                "weights give its model_cfg as a config JSON (--model FILE.json, ModelSpec.model)"
            )
        fix = (
            f"put in {str(folder)!r} the weights trained with that model_cfg, or the model_cfg "
            "they were trained with (--model local-dir:FOLDER, ModelSpec.model in Python)"
        )
        return config, Path(weights), fix
    repo = model.removeprefix("hf-hub:")
    if not valid_repo_id(repo):
        return None
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo, "open_clip_config.json")
    weights = next(
        (
            path
            for name in HUB_WEIGHTS  # open_clip's order: safetensors first
            if isinstance(path := try_to_load_from_cache(repo, name), str)
        ),
        None,
    )
    if not isinstance(config, str) or weights is None:
        return None
    snapshot = Path(config).parent
    _read_folder_config(Path(config))
    fix = (
        f"the cached hf-hub:{repo} (commit {snapshot.name}) is damaged or mixed: delete "
        f"{str(snapshot.parent.parent)!r} and download it again, or give another model as --model"
    )
    return Path(config), Path(weights), fix


def _superseded(model: str, config: Path) -> bool:
    """Whether the hub holds a newer commit of the hf-hub: ``model`` than the cached snapshot
    holding ``config``: the load, online, downloads that one, which may fit. Asked only before
    refusing, so that a fitting cached model costs no request."""
    from huggingface_hub import constants

    if not model.startswith("hf-hub:") or constants.is_offline_mode():
        return False
    return hub.hub_head(model.removeprefix("hf-hub:")) not in (None, config.parent.name)


def _read_folder_config(path: Path) -> None:
    """Refuse an open_clip_config.json that open_clip cannot read a model_cfg from."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(
            f"{str(path)!r} is not a readable JSON file ({type(exc).__name__}: {whole_line(exc)}); "
            "expected open_clip's model config with model_cfg and preprocess_cfg"
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        got = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ModelError(
            f"{str(path)!r} has no model_cfg (got {got}); expected open_clip's model config with "
            "model_cfg (embed_dim, vision_cfg, text_cfg) and preprocess_cfg"
        )


def _meta_model(architecture: str) -> torch.nn.Module | None:
    """``architecture`` as open_clip creates it for a checkpoint, with its tensors on the meta
    device; None for one built with a Hugging Face text tower (its config is read from the hub)
    or one that cannot be built on meta."""
    config = open_clip.get_model_config(architecture)
    if config is None or "hf_model_name" in config.get("text_cfg", {}):
        return None
    try:
        # a local-dir's weights are checked, not loaded (an open_clip before local-dir: support
        # has no load_weights, and needs none)
        folder = {"load_weights": False} if architecture.startswith("local-dir:") else {}
        with torch.device("meta"), _quiet_random_weights_warning(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return open_clip.create_model(
                architecture,
                device="meta",
                pretrained_image=False,
                pretrained_text=False,
                **folder,
            )
    except Exception:  # a tower whose building reads real tensors: never refuse what loads
        return None


def _as_open_clip_loads(
    model: torch.nn.Module, shapes: dict[str, tuple[int, ...]]
) -> dict[str, torch.Tensor] | None:
    """Meta tensors of ``shapes`` named and shaped as open_clip's ``load_state_dict`` and
    ``load_checkpoint`` (open_clip 3.x) pass them to the model's strict ``load_state_dict``;
    None for a third-party layout that open_clip converts and meta tensors cannot go through."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import (
        convert_to_custom_text_state_dict,
        resize_pos_embed,
        resize_text_pos_embed,
    )

    state = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    if next(iter(state)).startswith("module"):  # as open_clip: judged by the first name alone
        state = {name[7:]: tensor for name, tensor in state.items()}
    try:
        state = convert_state_dict(model, state)
    except Exception:
        return None
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for name in ("logit_scale", "logit_bias"):  # a scalar saved as 1-d, or the other way
        target = getattr(model, name, None)
        if name in state and target is not None and target.ndim != state[name].ndim:
            with contextlib.suppress(RuntimeError):  # its size differs: compared below
                state[name] = state[name].reshape(target.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None:
        state["logit_bias"] = torch.empty_like(model.logit_bias)
    state.pop("text.transformer.embeddings.position_ids", None)
    # position embeddings of another grid or context length are resized; a width that differs
    # (open_clip asserts) or a grid that is not square stay as they are, and differ below
    for resize in (resize_pos_embed, resize_text_pos_embed):
        with contextlib.suppress(Exception):
            resize(state, model)
    return state


def _differences(
    model: dict[str, tuple[int, ...]], checkpoint: dict[str, tuple[int, ...]]
) -> list[str]:
    """The tensors whose shapes differ (the first three, in the model's order), then those one
    side lacks, in words."""
    shown = 3
    found = [
        f"{name} is {checkpoint[name]} in the checkpoint but {shape} in the model"
        for name, shape in model.items()
        if name in checkpoint and checkpoint[name] != shape
    ]
    if len(found) > shown:
        found = [*found[:shown], f"{len(found) - shown} more tensor(s) differ in shape"]
    for names, side, other in (
        ([n for n in model if n not in checkpoint], "the model", "the checkpoint"),
        ([n for n in checkpoint if n not in model], "the checkpoint", "the model"),
    ):
        if names:
            examples = ", ".join(map(repr, names[:shown]))
            plural = "s" if len(names) > 1 else ""
            found.append(f"{side} has {len(names)} tensor{plural} {other} lacks, e.g. {examples}")
    return found


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` inside loads weights only, including those open_clip makes again
    without ``weights_only`` (see :func:`check_checkpoint`) on a hub or local-dir model's weights;
    torch reads these variables at each load."""
    names = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    saved = {name: os.environ.get(name) for name in names}
    os.environ[names[0]] = "1"
    os.environ.pop(names[1], None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_weights_reachable(architecture: str, tag: str) -> None:
    """Fail in seconds when a pretrained tag's weights are neither cached nor downloadable:
    offline, the hub client would retry for about a minute and then blame the checkpoint."""
    cfg = open_clip.get_pretrained_cfg(architecture, tag)
    if _cached_weights(cfg):
        return
    hub = bool(cfg.get("hf_hub"))
    refused = hub_refused() if hub else download_refused(urllib.parse.urlparse(cfg["url"]).hostname)
    if refused:
        cache = hub_cache_words() if hub else "the cache"
        raise ModelError(
            f"the weights of {architecture} {tag!r} are not downloaded and {refused}; download "
            'them first on a machine with network (e.g. python -c "import open_clip; '
            f"open_clip.create_model('{architecture}', pretrained='{tag}')\") and copy them into "
            f"{cache}, or give a local checkpoint file (.safetensors or .pt) instead of {tag!r}"
        )


def _check_hub_model_reachable(repo: str) -> None:
    """Fail in seconds when an ``hf-hub:`` model's config or weights are not in the hub cache and
    the hub cannot be reached: offline, the hub client would retry for half a minute, then blame
    the model name (or, the config cached, go on with random weights)."""
    if not valid_repo_id(repo):
        return  # the hub client refuses it itself, without the network
    if in_hub_cache(repo, ["open_clip_config.json"]) and in_hub_cache(repo, HUB_WEIGHTS):
        return
    refused = hub_refused()
    if refused:
        raise ModelError(
            f"model hf-hub:{repo} is not downloaded and {refused}; download it first on a "
            'machine with network (e.g. python -c "import open_clip; '
            f"open_clip.create_model('hf-hub:{repo}')\") and copy it into {hub_cache_words()}, "
            "or copy its open_clip_config.json and weights into a folder and give "
            f"local-dir:FOLDER instead of hf-hub:{repo}"
        )


def _cached_weights(cfg: dict[str, Any]) -> bool:
    """Whether open_clip would find the weights without the network (hub or URL cache)."""
    if cfg.get("file"):
        return Path(cfg["file"]).is_file()
    if cfg.get("hf_hub"):
        return in_hub_cache(*_tag_hub_files(cfg["hf_hub"]))
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clip"
    return (cache / Path(urllib.parse.urlparse(cfg["url"]).path).name).is_file()


def _tag_hub_files(hf_hub: str) -> tuple[str, list[str]]:
    """The repo and weights files of a pretrained tag's ``hf_hub`` entry (``org/name/`` for the
    default weights, or ``org/name/file``), as open_clip downloads them."""
    repo, filename = hf_hub.rstrip("/"), None
    if not hf_hub.endswith("/"):
        repo, filename = hf_hub.rsplit("/", 1)
    names = [filename] if filename else []
    return repo, [*names, *HUB_WEIGHTS]


def _hub_files(spec: ModelSpec) -> tuple[str, list[str]] | None:
    """The Hugging Face hub repo whose files loading ``spec`` reads (an hf-hub: model, or a
    pretrained tag: open_clip downloads the weights of every tag the hub serves from there),
    with those files, weights first; None for weights from elsewhere."""
    if spec.model.startswith("hf-hub:"):
        repo = spec.model.removeprefix("hf-hub:")
        return (repo, [*HUB_WEIGHTS, "open_clip_config.json"]) if valid_repo_id(repo) else None
    if spec.is_random or spec.is_checkpoint_file or spec.model.startswith("local-dir:"):
        return None
    name = Path(spec.model).stem if spec.model.endswith(".json") else spec.model
    hf_hub = open_clip.get_pretrained_cfg(name, spec.pretrained).get("hf_hub")
    return _tag_hub_files(hf_hub) if hf_hub else None


def hub_revision(spec: ModelSpec, *, ask_hub: bool = True) -> dict[str, str | None] | None:
    """The hub repo and commit whose weights loading ``spec`` reads; None when they come from
    no hub. With ``ask_hub`` (and the hub client not offline), the commit is the repo's newest,
    which a load downloads when the cache holds an older one; else, or when the hub does not
    answer, the one the hub cache names (``refs/main``), which a load then reads. The commit is
    None when neither knows it: the model is then neither cached nor reachable."""
    found = _hub_files(spec)
    if found is None:
        return None
    repo, names = found
    return {
        "repo": repo,
        "revision": (ask_hub and hub.hub_head(repo)) or cached_commit(repo, names),
    }


@contextlib.contextmanager
def _quiet_checkpoint_warnings() -> Iterator[None]:
    """torch.load warns on stderr about a checkpoint it then refuses to read safely (a pickle
    protocol other than torch's, a TorchScript archive): the ModelError after it says it clearly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Detected pickle protocol", UserWarning)
        warnings.filterwarnings("ignore", r"'torch.load' received a zip file", UserWarning)
        yield


@contextlib.contextmanager
def _quiet_random_weights_warning() -> Iterator[None]:
    """open_clip warns on the root logger when no weights are loaded: asked for, here."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): identifies weights without a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_model(
    spec: ModelSpec, device: str = "auto", precision: str = "auto", seed: int = 0
) -> LoadedModel:
    """Load ``spec`` with ``open_clip.create_model_and_transforms`` in eval mode on ``device``.

    The model stays in fp32; ``precision`` bf16/fp16 is applied as autocast by
    :meth:`LoadedModel.inference`. Random weights are drawn after ``torch.manual_seed(seed)``.
    """
    torch_device = resolve_device(device)
    resolved_precision = resolve_precision(precision, torch_device)
    architecture = resolve_architecture(spec.model)
    pretrained = check_pretrained(spec, architecture)
    torch.manual_seed(seed)
    try:
        with _quiet_random_weights_warning(), _quiet_checkpoint_warnings(), _weights_only_loads():
            model, _, preprocess = open_clip.create_model_and_transforms(
                architecture,
                pretrained=pretrained,
                device=torch_device,
                precision="fp32",
                weights_only=True,
            )
        tokenizer = open_clip.get_tokenizer(architecture)
    except torch.OutOfMemoryError:
        raise ModelError(
            f"model {spec.label!r} does not fit in the memory of {torch_device}; free it (another "
            "process may hold it), or use another device (--device cuda:N or cpu)"
        ) from None
    except Exception as exc:  # open_clip raises bare RuntimeError/ValueError/UnpicklingError
        reason = whole_line(exc, 400)
        if spec.is_checkpoint_file:  # read as a state dict already: its tensors fit no such model
            raise ModelError(
                f"could not load model {spec.label!r}: checkpoint {spec.pretrained!r} does not fit "
                f"the architecture {architecture!r} ({type(exc).__name__}: {reason}); give the "
                "model (config) its weights were trained with"
            ) from exc
        raise ModelError(
            f"could not load model {spec.label!r} ({type(exc).__name__}: {reason}); check the model "
            "name, and that the checkpoint matches the architecture and holds only tensors"
        ) from exc
    model.eval()
    if torch_device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    random_weights = spec.is_random and not architecture.startswith(SCHEMA_PREFIXES)
    checkpoint_sha = sha256_file(pretrained) if spec.is_checkpoint_file else None
    weights_id = checkpoint_sha or weights_sha256(model)
    preprocess_cfg = dict(model.visual.preprocess_cfg)
    size = preprocess_cfg["size"]
    # a hub or folder model's config is its own file: the built modules stand for it (a
    # quick_gelu switched in open_clip_config.json changes the activations, not the weights)
    config = (
        {"modules_sha256": hashlib.sha256(repr(model).encode("utf-8")).hexdigest()}
        if architecture.startswith(SCHEMA_PREFIXES)
        else open_clip.get_model_config(architecture)
    )
    identity = {
        "architecture": architecture,
        "config": config,
        "weights": weights_id,
        "preprocess": preprocess_cfg,
        "precision": resolved_precision,
    }
    info = {
        "label": spec.label,
        "model": spec.model,
        "architecture": architecture,
        "pretrained": None if spec.is_random else spec.pretrained,
        "pretrained_tag": None if spec.is_random or spec.is_checkpoint_file else spec.pretrained,
        "checkpoint_sha256": checkpoint_sha,
        # the hub commit read, by what the cache names now the load is done (a newer one
        # downloaded by the load included)
        "hub": hub_revision(spec, ask_hub=False),
        # without a checkpoint file (random, tag, hub, local-dir): a hash of the loaded weights
        "weights_sha256": None if checkpoint_sha else weights_id,
        "random_weights_seed": seed if random_weights else None,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "preprocess": preprocess_cfg,
        "device": str(torch_device),
        "device_info": describe_device(torch_device),
        "precision": resolved_precision,
    }
    return LoadedModel(
        label=spec.label,
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        device=torch_device,
        precision=resolved_precision,
        image_size=min(size) if isinstance(size, (tuple, list)) else int(size),
        identity=identity,
        info=info,
    )
