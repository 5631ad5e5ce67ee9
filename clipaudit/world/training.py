"""Train a tiny OpenCLIP on a rendered world, resumably, and save it for clipaudit's zero-shot audit.

The model is open_clip's own ``CLIP`` built from a model-config dict, trained with open_clip's
``ClipLoss`` (symmetric InfoNCE over the batch), AdamW (weight decay on matrices only, as
open_clip's trainer does), a linear warm-up then cosine decay of the learning rate, and the
logit scale clamped at 100. Speed comes from the world, not from shortcuts in the method: pictures
are normalised into one tensor and captions tokenised into another before the first step (no PIL
and no tokenizer in the loop), the context is as short as the longest caption, and AdamW runs as
one fused kernel.

:func:`train_world_model` writes into the folder it is given:

- ``<name>.json``: the open_clip model config (``--model`` takes it), ``<name>.safetensors``: the
  weights (``--pretrained`` takes it); :func:`clipaudit.models.load_model` opens the pair;
- ``train_log.csv``: step, loss, learning rate and logit scale of every step;
- ``training.json``: settings, world, timings, the checkpoint's sha256 (a checkpoint damaged
  since is trained again) and ``status`` (``complete`` at the end);
- while training, ``train_state.safetensors`` every ``checkpoint_every`` steps (model, optimiser
  and log; written atomically, without pickle). A killed training called again with the same
  settings resumes from it and ends with the same weights as an uninterrupted one on the same
  number of threads: the batch of every step is a function of the seed and the step alone, and
  nothing else draws random numbers (a different thread count sums in another order, which moves
  weights by about 1e-6). A damaged one is refused with its path and the fix.

A loss that is not finite (NaN or inf), or weights that stop being finite, stop the training with a
:class:`~clipaudit.errors.SettingsError` naming the step and the fix (a lower learning rate); the
checkpoint written before stays, and none is written of the diverged weights.
"""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipaudit.errors import InputError, RunFolderError, SettingsError, one_line
from clipaudit.provenance import (
    atomic_write_bytes,
    atomic_write_text,
    base_manifest,
    sha256_file,
    write_json,
)
from clipaudit.text import slug
from clipaudit.world.settings import TrainSettings
from clipaudit.world.world import RenderedWorld

if TYPE_CHECKING:
    import torch

LIBRARIES = ("torch", "open_clip_torch", "safetensors", "numpy")
DEFAULT_NAME = "miniworld-clip"
STATE_FILE = "train_state.safetensors"
LOG_FILE = "train_log.csv"
RECORD_FILE = "training.json"
MIN_CONTEXT = 16  # room for zero-shot prompt templates when the captions are shorter
# every step's progress: (step done, steps in all, loss of that step)
Progress = Callable[[int, int, float], None]
# settings that do not change the numbers a training computes; a resume may change them
_NOT_IDENTITY = ("device", "threads", "checkpoint_every")


@dataclass(frozen=True)
class TrainedModel:
    """A trained world model: its config and checkpoint (``ModelSpec(config, checkpoint)``)."""

    config: Path
    checkpoint: Path
    log: Path
    record: dict[str, Any]
    reused: bool = False  # the folder already held this finished model: nothing was trained

    @property
    def losses(self) -> list[float]:
        """The loss of every training step, read from ``train_log.csv``."""
        import pandas as pd

        return pd.read_csv(self.log)["loss"].tolist()


def usable_cores() -> int:
    """Cores this process may run on (its affinity, where the platform tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def batch_too_large(batch_size: int, n_train: int) -> str:
    """What a batch larger than the world's training pairs is told (a batch is drawn from one
    epoch)."""
    return (
        f"batch size {batch_size} exceeds the world's {n_train} training pairs; lower the batch "
        "size or render more pairs (n_train)"
    )


def lr_at(step: int, settings: TrainSettings) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to zero at ``steps``."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    span = max(1, settings.steps - settings.warmup_steps)
    return 0.5 * settings.lr * (1 + math.cos(math.pi * (step - settings.warmup_steps) / span))


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """The training pairs of ``step``: epochs are seeded permutations, cut into whole batches.

    A function of its arguments alone, so a resumed training sees the batches an uninterrupted one
    would have seen."""
    epoch, within = divmod(step, n // batch_size)
    return _epoch_order(n, seed, epoch)[within * batch_size : (within + 1) * batch_size]


@functools.lru_cache(maxsize=1)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(n)


def caption_tokens(captions: Sequence[str], context_length: int | None) -> torch.Tensor:
    """Token ids of ``captions`` with open_clip's tokenizer (the one ``get_tokenizer`` returns for
    the world's model config), padded to ``context_length``, or, when None, to
    :func:`fitting_context`. Refuses to truncate: a cut caption would carry less than the
    coverage counted from its text."""
    import torch

    tokenizer, unique, inverse, encoded = _encode(captions)
    longest = max(len(ids) for ids in encoded) + 2  # start and end of text
    if context_length is None:
        context_length = max(longest, MIN_CONTEXT)
    elif longest > context_length:
        raise SettingsError(
            f"context length {context_length} is too short for the world's captions: the longest "
            f"takes {longest} tokens; raise context_length or leave it None to fit the captions"
        )
    table = torch.zeros((len(unique), context_length), dtype=torch.long)
    for row, ids in enumerate(encoded):
        table[row, : len(ids) + 2] = torch.tensor(
            [tokenizer.sot_token_id, *ids, tokenizer.eot_token_id]
        )
    return table[torch.from_numpy(inverse.reshape(-1))]


def fitting_context(captions: Sequence[str]) -> int:
    """The context length that holds the longest of ``captions`` (at least :data:`MIN_CONTEXT`)."""
    encoded = _encode(captions)[3]
    return max(max(len(ids) for ids in encoded) + 2, MIN_CONTEXT)


def _encode(captions: Sequence[str]) -> tuple[Any, np.ndarray, np.ndarray, list[list[int]]]:
    """open_clip's SimpleTokenizer, the distinct captions, where each caption is among them, and
    their BPE ids (without start and end of text)."""
    import open_clip

    tokenizer = open_clip.SimpleTokenizer(context_length=77)
    unique, inverse = np.unique(np.asarray(captions, dtype=object), return_inverse=True)
    return tokenizer, unique, inverse, [tokenizer.encode(text) for text in unique]


def normalised_pixels(images: np.ndarray) -> torch.Tensor:
    """``(n, S, S, 3)`` uint8 -> ``(n, 3, S, S)`` float32, exactly as open_clip's eval transform
    turns a PNG of that size into a tensor (to tensor, /255, normalise by its default mean/std)."""
    import torch
    from open_clip.transform import PreprocessCfg

    cfg = PreprocessCfg()
    mean = torch.tensor(cfg.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(cfg.std, dtype=torch.float32)[:, None, None]
    out = torch.empty((images.shape[0], 3, *images.shape[1:3]), dtype=torch.float32)
    for start in range(0, len(images), 4096):
        chunk = torch.from_numpy(images[start : start + 4096]).permute(0, 3, 1, 2)
        out[start : start + 4096] = chunk.float().div(255).sub_(mean).div_(std)
    return out


def load_captions(world: RenderedWorld) -> list[str]:
    """The world's training captions, caption ``i`` describing picture ``i``."""
    import pandas as pd

    frame = pd.read_parquet(world.captions_path, columns=["id", "caption"])
    if not np.array_equal(frame["id"].to_numpy(), np.arange(len(frame))):
        raise InputError(
            f"the captions of the world in {str(world.path)!r} are not numbered 0..{len(frame) - 1}; "
            "render it again"
        )
    return frame["caption"].tolist()


def load_pairs(world: RenderedWorld) -> tuple[np.ndarray, list[str]]:
    """The world's training pictures (uint8) and captions, row-aligned."""
    images = np.load(world.images_path, allow_pickle=False)
    captions = load_captions(world)
    if len(captions) != len(images):
        raise InputError(
            f"the world in {str(world.path)!r} has {len(images)} pictures but {len(captions)} "
            "captions; render it again"
        )
    return images, captions


def build_model(config: dict[str, Any], seed: int) -> torch.nn.Module:
    """open_clip's ``CLIP`` for ``config``, its weights drawn after ``torch.manual_seed(seed)``
    (:func:`train_world_model` keeps the caller's random state around the whole training)."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    return open_clip.CLIP(**config)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's trainer's split: no weight decay on gains, biases, 1-d tensors, logit scale."""
    decay, rest = [], []
    for name, param in model.named_parameters():
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
        (rest if exclude or "logit_scale" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """Fused AdamW over :func:`param_groups`, with open_clip's CLIP betas (0.9, 0.98), eps 1e-6."""
    import torch

    return torch.optim.AdamW(
        param_groups(model, settings.weight_decay),
        lr=settings.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=True,
    )


class ThreadChooser:
    """How many threads the training steps run on: a fixed count, or (``threads=None``) the faster
    of one thread and every usable core, chosen by timing and chosen again when steps slow down.

    Small steps gain about 1.4x from a second core on a quiet 2-core machine, and lose ten times
    over on a busy one: OpenMP threads spin-wait for each other at every operation, and a
    descheduled sibling makes each wait last a scheduler tick. So the chooser times a forward and
    backward pass on one batch with each count (gradients then dropped: the model does not change),
    then watches the step time: when the median of the last :attr:`WINDOW` steps exceeds
    :attr:`SLOWDOWN` times the median of the first ones after the choice, or every
    :attr:`RECHECK_EVERY` steps, it times both again. On a GPU the count does not matter.
    """

    WINDOW = 20
    SLOWDOWN = 1.5
    RECHECK_EVERY = 500
    REPEATS = 2

    def __init__(self, fixed: int | None, trial: Callable[[], None], device: torch.device):
        self.candidates = (fixed,) if fixed else tuple(sorted({1, usable_cores()}))
        self.adaptive = len(self.candidates) > 1 and device.type == "cpu"
        self.trial = trial
        self.threads = self.candidates[-1]
        self.history: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.reference: float | None = None
        self.chosen_at = 0

    def choose(self, step: int) -> None:
        """Time the candidates (when adaptive) and set torch's thread count to the faster."""
        import torch

        seconds: dict[str, float] = {}
        if self.adaptive:
            for threads in self.candidates:
                torch.set_num_threads(threads)
                runs = []
                for _ in range(self.REPEATS + 1):  # the first run warms up
                    mark = time.perf_counter()
                    self.trial()
                    runs.append(time.perf_counter() - mark)
                seconds[str(threads)] = min(runs[1:])
            self.threads = int(min(seconds, key=seconds.__getitem__))
        torch.set_num_threads(self.threads)
        self.history.append({"step": step, "threads": self.threads, "trial_s": seconds})
        self.times, self.reference, self.chosen_at = [], None, step

    def after_step(self, step: int, seconds: float) -> None:
        """Record a step's wall time; choose again when steps slowed down or it is time to."""
        if not self.adaptive:
            return
        self.times.append(seconds)
        recent = statistics.median(self.times[-self.WINDOW :])
        if self.reference is None and len(self.times) == self.WINDOW:
            self.reference = recent
        slowed = self.reference is not None and recent > self.SLOWDOWN * self.reference
        if slowed or step - self.chosen_at >= self.RECHECK_EVERY:
            self.choose(step)


def resolve_train_device(device: str) -> torch.device:
    """The training device (:func:`clipaudit.models.resolve_device`: ``auto``, or one that is
    there)."""
    from clipaudit.models import resolve_device

    return resolve_device(device)


def train_world_model(
    world: RenderedWorld,
    out_dir: str | Path,
    settings: TrainSettings,
    *,
    name: str = DEFAULT_NAME,
    progress: Progress | None = None,
) -> TrainedModel:
    """Train the world's model (see the module docstring); resume or return what ``out_dir`` holds."""
    import torch
    from open_clip.loss import ClipLoss

    if not isinstance(name, str) or slug(name) != name or name.startswith("."):
        raise SettingsError(
            f"a model name is a plain file name (letters, digits, '.', '_', '@', '+', '-'), "
            f"written inside the output folder; got {name!r}"
        )
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, captions = load_pairs(world)
    if len(images) < settings.batch_size:
        raise SettingsError(batch_too_large(settings.batch_size, len(images)))
    tokens = caption_tokens(captions, settings.context_length)
    config = settings.model_config(images.shape[1], tokens.shape[1])
    identity = _identity(settings, world, config)

    finished = _finished(out, name, identity)
    if finished is not None:
        return finished
    device = resolve_train_device(settings.device)
    previous_threads = torch.get_num_threads()
    # the seed alone decides the weights and the training's draws; the caller's random state
    # is as it was afterwards
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            model = build_model(config, settings.seed).to(device)
            optimizer = make_optimizer(model, settings)
            log = np.zeros((settings.steps, 3), dtype=np.float64)  # loss, lr, logit scale
            start = _resume(out, identity, model, optimizer, log)
            resumed_from = start
            pixels = normalised_pixels(images).to(device)
            tokens = tokens.to(device)
            loss_fn = ClipLoss()
            model.train()
            sample = torch.arange(settings.batch_size, device=device)

            def trial() -> None:
                loss_fn(*model(pixels[sample], tokens[sample])).backward()
                model.zero_grad(set_to_none=True)

            threads = ThreadChooser(settings.threads, trial, device)
            threads.choose(start)
            # the step of the checkpoint on disk: kept, and named, if the training diverges
            saved_at = start or None
            prepared_s = time.perf_counter() - started
            mark, cpu_mark = time.perf_counter(), time.process_time()
            for step in range(start, settings.steps):
                step_mark = time.perf_counter()
                lr = lr_at(step, settings)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                rows = torch.from_numpy(
                    batch_indices(step, len(images), settings.batch_size, settings.seed)
                ).to(device)
                image_features, text_features, scale = model(pixels[rows], tokens[rows])
                loss = loss_fn(image_features, text_features, scale)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                value = float(loss.detach())
                done = step + 1
                if not math.isfinite(value):  # it would make every later step NaN, and the model
                    raise _diverged(out, done, settings, saved_at, f"the loss is {value}")
                log[step] = (value, lr, float(scale.detach()))
                if done % settings.checkpoint_every == 0 and done < settings.steps:
                    # a finite loss can still have stepped to NaN weights: never saved as progress
                    _check_weights(model, out, done, settings, saved_at)
                    _save_state(out, identity, model, optimizer, log, done)
                    saved_at = done
                if progress is not None:
                    progress(done, settings.steps, value)
                if done < settings.steps:
                    threads.after_step(done, time.perf_counter() - step_mark)
            train_s = time.perf_counter() - mark
            train_cpu_s = time.process_time() - cpu_mark
            _check_weights(model, out, settings.steps, settings, saved_at)
        finally:
            torch.set_num_threads(previous_threads)

    config_path = out / f"{name}.json"
    checkpoint_path = out / f"{name}.safetensors"
    atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
    atomic_write_bytes(checkpoint_path, _safetensors_bytes(_cpu_state(model)))
    checkpoint_sha256 = sha256_file(checkpoint_path)  # what a later call checks it is still
    _write_log(out / LOG_FILE, log)
    from clipaudit.models import describe_device

    record = base_manifest("world-training", LIBRARIES)
    record.update(
        status="complete",
        identity=identity,
        name=name,
        files={"config": config_path.name, "checkpoint": checkpoint_path.name, "log": LOG_FILE},
        checkpoint_sha256=checkpoint_sha256,
        world=str(world.path),
        device=str(device),
        device_info=describe_device(device),
        threads=threads.threads,
        thread_choices=threads.history,
        resumed_from_step=resumed_from,
        n_parameters=sum(p.numel() for p in model.parameters()),
        final_loss=float(log[-1, 0]),
        timings={
            "prepare_s": prepared_s,
            "train_s": train_s,
            "train_cpu_s": train_cpu_s,  # CPU time of all threads: wall time x busy cores
            "total_s": time.perf_counter() - started,
        },
        seconds_per_step=train_s / max(1, settings.steps - resumed_from),
    )
    write_json(out / RECORD_FILE, record)
    (out / STATE_FILE).unlink(missing_ok=True)
    return TrainedModel(config_path, checkpoint_path, out / LOG_FILE, record)


def _diverged(
    out: Path, step: int, settings: TrainSettings, saved_at: int | None, what: str
) -> SettingsError:
    """The error of a training whose loss or weights stopped being finite at ``step``; the
    checkpoint written before (``saved_at``), if any, stays where it is."""
    kept = (
        f"the checkpoint of step {saved_at} is kept in {str(out / STATE_FILE)!r}; "
        if saved_at is not None
        else "no checkpoint was written before it; "
    )
    again = (
        "train in another folder, or delete that checkpoint (it resumes only these settings)"
        if saved_at is not None
        else "train again"
    )
    return SettingsError(
        f"training diverged at step {step} of {settings.steps}: {what}; {kept}lower the learning "
        f"rate (lr, now {settings.lr}) and {again}"
    )


def _check_weights(
    model: torch.nn.Module, out: Path, step: int, settings: TrainSettings, saved_at: int | None
) -> None:
    """Refuse weights that are no longer finite before they are saved as a checkpoint or model."""
    import torch

    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise _diverged(out, step, settings, saved_at, "the weights are no longer finite")


def _identity(settings: TrainSettings, world: RenderedWorld, config: dict[str, Any]) -> dict:
    """What the trained numbers depend on: a resume or a re-run must match it."""
    train = {k: v for k, v in settings.describe().items() if k not in _NOT_IDENTITY}
    return {"train": train, "world": world.info["settings"], "model_config": config}


_RECORD_FILES = ("config", "checkpoint", "log")  # in TrainedModel's order


def _finished(out: Path, name: str, identity: dict) -> TrainedModel | None:
    record_path = out / RECORD_FILE
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):  # written atomically: only a hand edit or a bad disk
        record = None
    files = record.get("files") if isinstance(record, dict) else None
    paths = [
        out / name
        for name in (files.get(key) if isinstance(files, dict) else None for key in _RECORD_FILES)
        if isinstance(name, str) and name and Path(name).name == name
    ]
    if len(paths) != len(_RECORD_FILES) or not all(path.is_file() for path in paths):
        # a damaged record, or files gone, prove nothing: the model is trained again from its seed
        return None
    if record.get("identity") != json.loads(json.dumps(identity)) or record.get("name") != name:
        raise RunFolderError(
            f"{str(out)!r} holds a model trained with other settings or on another world; "
            "choose another folder"
        )
    recorded = record.get("checkpoint_sha256")  # records before it was kept: taken as they are
    if isinstance(recorded, str) and sha256_file(paths[1]) != recorded:
        return None  # a damaged checkpoint: as the files gone, trained again from its seed
    return TrainedModel(*paths, record, reused=True)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def _safetensors_bytes(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def _save_state(
    out: Path,
    identity: dict,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    log: np.ndarray,
    step: int,
) -> None:
    """Model, optimiser moments and the log so far, as one safetensors file written atomically."""
    import torch

    tensors = {f"model.{k}": v for k, v in _cpu_state(model).items()}
    state = optimizer.state_dict()["state"]
    for index, moments in state.items():
        for key, value in moments.items():
            tensors[f"optim.{index}.{key}"] = value.detach().to("cpu").contiguous()
    tensors["log"] = torch.from_numpy(log[:step].copy())
    metadata = {"step": str(step), "identity": json.dumps(identity, sort_keys=True)}
    atomic_write_bytes(out / STATE_FILE, _safetensors_bytes(tensors, metadata))


def _resume(
    out: Path,
    identity: dict,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    log: np.ndarray,
) -> int:
    """Load ``train_state.safetensors`` into model, optimiser and log; the step to go on from."""
    from safetensors import SafetensorError, safe_open

    path = out / STATE_FILE
    if not path.is_file():
        return 0
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if json.loads(metadata.get("identity", "null")) != json.loads(json.dumps(identity)):
                raise RunFolderError(
                    f"{str(path)!r} is the checkpoint of a training with other settings or on "
                    "another world; choose another folder, or delete it to start over"
                )
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        device = next(model.parameters()).device
        model.load_state_dict(
            {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        )
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value.to(device)
        saved = optimizer.state_dict()
        saved["state"] = state
        optimizer.load_state_dict(saved)
        step = int(metadata["step"])
        log[:step] = tensors["log"].numpy()
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        # cut by a full disk or a crash, or edited: what it held is lost, the seed is not
        raise RunFolderError(
            f"{str(path)!r} is damaged ({one_line(exc)}), so the training cannot resume from it; "
            "delete it and run the same command again to train from step 0"
        ) from None
    return step


def _write_log(path: Path, log: np.ndarray) -> None:
    lines = ["step,loss,lr,logit_scale"]
    lines += [f"{i + 1},{loss:.6f},{lr:.6e},{scale:.4f}" for i, (loss, lr, scale) in enumerate(log)]
    atomic_write_text(path, "\n".join(lines) + "\n")
