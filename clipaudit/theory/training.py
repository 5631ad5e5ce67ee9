"""Train the encoders of many scenarios at once, as one batched model.

Each scenario ``c`` has its own mixings, encoders, data stream and loss; they are stacked along a
leading axis (:mod:`clipaudit.theory.stacked`) and every step runs one batched matmul per layer for
all scenarios. Different input, hidden and output sizes are zero-padded to the largest; padded
weights start at zero and, getting exactly zero gradient, stay there. Each scenario's loss is the
mean over its own batch, with negatives only from its own batch, and the optimiser step is
elementwise (AdamW) with a per-scenario gradient-norm clip, so training scenario ``c`` in a group
computes what training it alone computes (up to float rounding in the batched matmuls). With
whitened outputs the loss ignores the last layer's shift and scale, whose gradients are then
rounding noise that Adam turns into full-size steps: there a group's losses and gradients equal each
scenario's own, but trained weights drift apart with the group's composition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from clipaudit.errors import SettingsError
from clipaudit.provenance import atomic_write_bytes
from clipaudit.theory.config import Scenario, TrainingSettings, encoder_sizes
from clipaudit.theory.generative import (
    MIXING_SLOPE,
    LatentModel,
    Mixing,
    build_latent_model,
    build_mixing,
    sample_latents,
    torch_generator,
    view_latents,
)
from clipaudit.theory.stacked import mlp_forward, pad_stack

ENCODER_SLOPE = 0.01


@dataclass
class EncoderStack:
    """Stacked MLP encoders, one per scenario; ``sizes[c]`` are scenario c's true layer sizes."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    sizes: list[list[int]]

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return mlp_forward(inputs, self.weights, self.biases, ENCODER_SLOPE)

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def single(self, index: int, inputs: torch.Tensor) -> torch.Tensor:
        """Scenario ``index``'s encoder alone on unpadded ``(N, in)`` inputs: ``(N, out)``."""
        sizes = self.sizes[index]
        weights = [
            w[index : index + 1, :i, :o]
            for w, i, o in zip(self.weights, sizes, sizes[1:], strict=False)
        ]
        biases = [b[index : index + 1, :, :o] for b, o in zip(self.biases, sizes[1:], strict=True)]
        return mlp_forward(inputs[None], weights, biases, ENCODER_SLOPE)[0]


def init_encoder_stack(
    sizes: list[list[int]], generators: Sequence[torch.Generator], device: str
) -> EncoderStack:
    """Per-scenario init as ``torch.nn.Linear`` does (uniform in +-1/sqrt(fan_in)), zero-padded."""
    depth = len(sizes[0]) - 1
    weights, biases = [], []
    for layer in range(depth):
        in_max = max(s[layer] for s in sizes)
        out_max = max(s[layer + 1] for s in sizes)
        w_blocks, b_blocks = [], []
        for s, generator in zip(sizes, generators, strict=True):
            bound = 1.0 / math.sqrt(s[layer])
            w_blocks.append(
                (torch.rand(s[layer], s[layer + 1], generator=generator, device=device) * 2 - 1)
                * bound
            )
            b_blocks.append(
                (torch.rand(1, s[layer + 1], generator=generator, device=device) * 2 - 1) * bound
            )
        weights.append(pad_stack(w_blocks, (in_max, out_max)).requires_grad_())
        biases.append(pad_stack(b_blocks, (1, out_max)).requires_grad_())
    return EncoderStack(weights, biases, sizes)


WHITENING_EPS = 1e-4
WHITENING_SAMPLES = 20_000


def whitening_transform(outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(C, 1, e)`` and lower Cholesky factor ``(C, e, e)`` of the covariance of each
    scenario's ``(C, N, e)`` outputs, its diagonal raised by :data:`WHITENING_EPS` times the largest
    variance (relative, as the outputs' scale is free; the largest, as zero-padded units add
    nothing to it)."""
    mean = outputs.mean(1, keepdim=True)
    centred = outputs - mean
    covariance = centred.transpose(1, 2) @ centred / (outputs.shape[1] - 1)
    scale = covariance.diagonal(dim1=1, dim2=2).amax(1).clamp(min=1e-12)
    eye = torch.eye(outputs.shape[2], dtype=outputs.dtype, device=outputs.device)
    return mean, torch.linalg.cholesky(covariance + WHITENING_EPS * scale[:, None, None] * eye)


def whiten(outputs: torch.Tensor, mean: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``(outputs - mean) @ factor^-T``: unit covariance under the statistics given. Zero-padded
    output units stay exactly zero (their covariance block is a multiple of the identity)."""
    centred = (outputs - mean).transpose(1, 2)
    return torch.linalg.solve_triangular(factor, centred, upper=False).transpose(1, 2)


def batch_whiten(outputs: torch.Tensor) -> torch.Tensor:
    """Each scenario's batch whitened by its own statistics (gradients flow through them)."""
    return whiten(outputs, *whitening_transform(outputs))


def symmetric_infonce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-scenario symmetric InfoNCE ``(C,)`` of paired ``(C, B, e)`` embeddings: logits are
    ``-||a_i - b_j||^2 / temperature`` and the positives sit on the diagonal (in-batch negatives).

    Written as log-sum-exp over rows and columns of one logits matrix minus the positives' logits
    (the cross-entropy in both directions): no transposed copy, the cost is the matrix itself.
    """
    sq_a = (a * a).sum(-1)
    sq_b = (b * b).sum(-1)
    logits = (
        2 * torch.bmm(a, b.transpose(1, 2)) - sq_a[:, :, None] - sq_b[:, None, :]
    ) / temperature
    positives = -((a - b) ** 2).sum(-1) / temperature
    image_to_text = torch.logsumexp(logits, dim=2) - positives
    text_to_image = torch.logsumexp(logits, dim=1) - positives
    return 0.5 * (image_to_text + text_to_image).mean(1)


def same_modality_infonce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-scenario loss ``(C,)`` of Daunhawer et al.'s (2023) simulation code (``LpSimCLRLoss``):
    the pair's squared distance plus, for each modality, the log-mean-exp of ``-d^2 / temperature``
    over the other samples of that modality and the positive, averaged over both modalities.

    Its negatives are same-modality samples, so the second term rewards each encoder for spreading
    its own outputs, whatever they encode, while cross-modal InfoNCE rewards information that also
    tells a positive text from negative texts. Their code draws a fresh batch for the
    negatives; the other samples of the batch are draws from the same distribution.
    """
    positives = ((a - b) ** 2).sum(-1) / temperature
    self_slot = torch.eye(a.shape[1], dtype=torch.bool, device=a.device)

    def uniformity(u: torch.Tensor) -> torch.Tensor:
        sq = (u * u).sum(-1)
        distances = (sq[:, :, None] + sq[:, None, :] - 2 * torch.bmm(u, u.transpose(1, 2))) / (
            temperature
        )
        # a sample's distance to itself is replaced by its positive's, as their code appends the
        # positive to the negatives
        distances = torch.where(self_slot, positives[:, :, None], distances)
        return torch.logsumexp(-distances, dim=2) - math.log(u.shape[1])

    return (positives + 0.5 * (uniformity(a) + uniformity(b))).mean(1)


LOSSES = {"cross-modal": symmetric_infonce, "same-modality": same_modality_infonce}


def clip_per_scenario(parameters: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` applied to each scenario's slice separately; returns the norms ``(C,)``."""
    squares = sum(p.grad.pow(2).flatten(1).sum(1) for p in parameters)
    norms = squares.sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in parameters:
        p.grad.mul_(scale.view(-1, *([1] * (p.grad.dim() - 1))))
    return norms


class BatchedSimulation:
    """The scenarios of one group: their latent models, mixings, encoders, optimiser and data."""

    def __init__(self, scenarios: Sequence[Scenario], training: TrainingSettings):
        self.scenarios = list(scenarios)
        self.training = training
        device = training.device
        self.models: list[LatentModel] = [build_latent_model(s) for s in self.scenarios]
        self.mixings: list[Mixing] = [
            build_mixing(
                s, training.mixing_layers, training.mixing, training.mixing_condition_quantile
            )
            for s in self.scenarios
        ]
        x_max = max(s.x_dim for s in self.scenarios)
        t_max = max(s.t_dim for s in self.scenarios)
        self.x_mixing = [
            pad_stack([m.x_weights[layer] for m in self.mixings], (x_max, x_max)).to(device)
            for layer in range(training.mixing_layers)
        ]
        self.t_mixing = [
            pad_stack([m.t_weights[layer] for m in self.mixings], (t_max, t_max)).to(device)
            for layer in range(training.mixing_layers)
        ]
        init = [torch_generator(s.seed, "encoders", device) for s in self.scenarios]
        self.f_x = init_encoder_stack(
            [encoder_sizes(s.x_dim, s.representation_size, training) for s in self.scenarios],
            init,
            device,
        )
        self.f_t = init_encoder_stack(
            [encoder_sizes(s.t_dim, s.representation_size, training) for s in self.scenarios],
            init,
            device,
        )
        self.parameters = [*self.f_x.parameters(), *self.f_t.parameters()]
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=training.learning_rate, weight_decay=training.weight_decay
        )
        # cosine decay to zero: the invariance the check measures is a late, second-order gain of
        # the loss, which a decaying step size reaches in far fewer steps than a constant one
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            (
                lambda step: (
                    0.5 * (1 + math.cos(math.pi * min(step, training.steps) / training.steps))
                )
            )
            if training.lr_schedule == "cosine"
            else (lambda step: 1.0),
        )
        self.data_streams = [torch_generator(s.seed, "training", device) for s in self.scenarios]
        self.step = 0
        self.loss_log: list[tuple[int, list[float]]] = []
        self._whitening: dict[int, tuple[tuple[torch.Tensor, torch.Tensor], ...]] = {}

    # -- data ---------------------------------------------------------------------------------
    def mix(
        self, z_x: list[torch.Tensor], z_t: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack per-scenario unmixed ``(N, d_c)`` inputs and apply g_x, g_t: ``(C, N, d_max)``."""
        x_max, t_max = self.x_mixing[0].shape[1], self.t_mixing[0].shape[1]
        n = z_x[0].shape[0]
        x = mlp_forward(pad_stack(z_x, (n, x_max)), self.x_mixing, None, MIXING_SLOPE)
        t = mlp_forward(pad_stack(z_t, (n, t_max)), self.t_mixing, None, MIXING_SLOPE)
        return x, t

    def _training_chunk(self, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views for ``steps`` steps of every scenario, ``(C, steps, B, d_max)``, one draw each."""
        batch = self.training.batch_size
        z_x, z_t = [], []
        for model, stream in zip(self.models, self.data_streams, strict=True):
            zx, zt = view_latents(model.scenario, sample_latents(model, steps * batch, stream))
            z_x.append(zx)
            z_t.append(zt)
        x, t = self.mix(z_x, z_t)
        n_configs = len(self.scenarios)
        return x.view(n_configs, steps, batch, -1), t.view(n_configs, steps, batch, -1)

    # -- training -----------------------------------------------------------------------------
    def train(
        self,
        checkpoint: Path | None = None,
        on_steps: Callable[[int, list[float]], None] | None = None,
        log_every: int = 100,
    ) -> None:
        """Run the remaining steps (all of them, or those after a loaded checkpoint).

        Data come in chunks of ``chunk_steps`` steps; checkpoints are written at chunk boundaries
        (so resuming replays the same random draws) about every ``checkpoint_every`` steps.
        """
        training = self.training
        self._whitening.clear()
        chunk = training.chunk_steps
        checkpoint_chunks = max(1, training.checkpoint_every // chunk)
        while self.step < training.steps:
            steps = min(chunk, training.steps - self.step)
            x_chunk, t_chunk = self._training_chunk(steps)
            for k in range(steps):
                image, text = self.f_x(x_chunk[:, k]), self.f_t(t_chunk[:, k])
                if training.whiten_outputs:
                    try:
                        image, text = batch_whiten(image), batch_whiten(text)
                    except torch.linalg.LinAlgError:  # outputs no longer finite
                        raise self._diverged("outputs that cannot be whitened") from None
                losses = LOSSES[training.negatives](image, text, self.temperature_at(self.step))
                self.optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                clip_per_scenario(self.parameters, training.grad_clip)
                self.optimizer.step()
                self.schedule.step()
                self.step += 1
                if self.step % log_every == 0 or self.step == training.steps:
                    values = losses.detach().cpu().tolist()
                    if not all(math.isfinite(v) for v in values):  # checked where logged
                        raise self._diverged(f"losses {values}")
                    self.loss_log.append((self.step, values))
                    if on_steps is not None:
                        on_steps(self.step, values)
            # also at the end, so that a run killed while evaluating does not train again
            at_boundary = (self.step // chunk) % checkpoint_chunks == 0
            if checkpoint is not None and (at_boundary or self.step == training.steps):
                self.save(checkpoint)

    def _diverged(self, what: str) -> SettingsError:
        return SettingsError(
            f"training diverged: {what} at step {self.step}; lower the learning rate (now "
            f"{self.training.learning_rate}) or raise the temperature"
        )

    def temperature_at(self, step: int) -> float:
        """The loss temperature at ``step``: fixed, or moving from ``temperature`` to
        ``final_temperature`` along a half cosine over the training steps."""
        start, end = self.training.temperature, self.training.final_temperature
        if end is None:
            return start
        progress = min(step, self.training.steps) / self.training.steps
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))

    # -- checkpoints --------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write everything needed to resume exactly (tensors and plain values only)."""
        import io

        state = {
            "names": [s.name for s in self.scenarios],
            "step": self.step,
            "weights": [p.detach().cpu() for p in self.parameters],
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "streams": [g.get_state() for g in self.data_streams],
            "loss_log": [[step, values] for step, values in self.loss_log],
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load(self, path: Path) -> bool:
        """Resume from ``path`` when it holds this group's state; False (and untouched) otherwise."""
        if not path.exists():
            return False
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        # written atomically, so damaged only by a bad disk or a copy cut short: it holds no
        # progress to resume from, and the group trains again from its seeds (the same numbers)
        except Exception:  # torch raises many types (RuntimeError, UnpicklingError, EOFError)
            return False
        if not isinstance(state, dict) or state.get("names") != [s.name for s in self.scenarios]:
            return False
        # this group's names but tensors that do not fit (edited, or written by other code) hold
        # no progress either; checked before anything is loaded, so nothing is half overwritten
        if not self._fits(state):
            return False
        self._whitening.clear()
        with torch.no_grad():
            for parameter, saved in zip(self.parameters, state["weights"], strict=True):
                parameter.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        for generator, saved in zip(self.data_streams, state["streams"], strict=True):
            generator.set_state(saved)
        self.step = int(state["step"])
        self.loss_log = [(int(step), list(values)) for step, values in state["loss_log"]]
        return True

    def _fits(self, state: dict) -> bool:
        """Whether a checkpoint's values have the types and shapes of this group's: weights,
        optimiser moments, data streams, step and loss log (what :meth:`load` copies in)."""

        def tensor_like(value: object, like: torch.Tensor) -> bool:
            return (
                isinstance(value, torch.Tensor)
                and value.shape == like.shape
                and value.dtype == like.dtype
            )

        step, weights, optimizer = state.get("step"), state.get("weights"), state.get("optimizer")
        streams, loss_log = state.get("streams"), state.get("loss_log")
        if not (
            isinstance(step, int)
            and not isinstance(step, bool)
            and 0 <= step <= self.training.steps
            and isinstance(weights, list)
            and len(weights) == len(self.parameters)
            and all(tensor_like(w, p) for w, p in zip(weights, self.parameters, strict=False))
            and isinstance(optimizer, dict)
            and isinstance(optimizer.get("state"), dict)
            and isinstance(state.get("schedule"), dict)
            and state["schedule"].keys() == self.schedule.state_dict().keys()
            and isinstance(streams, list)
            and len(streams) == len(self.data_streams)
            and all(
                tensor_like(saved, generator.get_state())
                for saved, generator in zip(streams, self.data_streams, strict=False)
            )
            and isinstance(loss_log, list)
        ):
            return False
        groups = [g.get("params") for g in optimizer.get("param_groups") or [{}]]
        if groups != [g["params"] for g in self.optimizer.state_dict()["param_groups"]]:
            return False
        # AdamW's moments have their parameter's shape, its step count none
        for index, moments in optimizer["state"].items():
            if not (isinstance(index, int) and 0 <= index < len(self.parameters)):
                return False
            parameter = self.parameters[index]
            if not isinstance(moments, dict) or not all(
                isinstance(value, torch.Tensor) and value.shape in (parameter.shape, torch.Size([]))
                for value in moments.values()
            ):
                return False
        n_scenarios = len(self.scenarios)
        return all(
            isinstance(entry, (list, tuple))
            and len(entry) == 2
            and isinstance(entry[1], list)
            and len(entry[1]) == n_scenarios
            for entry in loss_log
        )

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self, index: int, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scenario ``index``'s image and text representations of its own unpadded views
        (whitened by population statistics when the encoders were trained whitened)."""
        image, text = self.f_x.single(index, x), self.f_t.single(index, t)
        if not self.training.whiten_outputs:
            return image, text
        (x_mean, x_factor), (t_mean, t_factor) = self._population_whitening(index)
        return (
            whiten(image[None], x_mean, x_factor)[0],
            whiten(text[None], t_mean, t_factor)[0],
        )

    @torch.no_grad()
    def _population_whitening(self, index: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """The whitening statistics of both encoders of scenario ``index`` on fresh samples of its
        own ``whitening`` stream (cached until the weights change: ``train`` and ``load`` clear it)."""
        if index not in self._whitening:
            scenario, model = self.scenarios[index], self.models[index]
            generator = torch_generator(scenario.seed, "whitening", self.training.device)
            latents = sample_latents(model, WHITENING_SAMPLES, generator)
            x, t = self.views(index, *view_latents(scenario, latents))
            self._whitening[index] = (
                whitening_transform(self.f_x.single(index, x)[None]),
                whitening_transform(self.f_t.single(index, t)[None]),
            )
        return self._whitening[index]

    @torch.no_grad()
    def views(
        self, index: int, z_x: torch.Tensor, z_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply scenario ``index``'s mixings alone to its unmixed inputs."""
        mixing, device = self.mixings[index], self.training.device
        x = mlp_forward(
            z_x[None], [w.to(device)[None] for w in mixing.x_weights], None, MIXING_SLOPE
        )[0]
        t = mlp_forward(
            z_t[None], [w.to(device)[None] for w in mixing.t_weights], None, MIXING_SLOPE
        )[0]
        return x, t
