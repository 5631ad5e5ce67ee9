"""The paper's data-generating process: latents, selection and perturbation, invertible mixings.

- semantics ``s ~ N(0, Sigma_s)``, image-specific ``m_x ~ N(0, Sigma_mx)``, text-specific
  ``m_t ~ N(0, Sigma_mt)``; every Sigma is the identity, or, with causal dependence, a draw from
  Wishart(dim, I) seeded by the scenario's seed;
- perturbation: ``s~_i = s_i + b_i * eps_i`` with ``b_i ~ Bernoulli(change_prob)`` for i in I_beta
  (``b_i = 0`` elsewhere) and ``eps ~ N(0, Sigma_a)``; Sigma_a is Sigma_s by default (the paper's
  code), or the identity, or a Wishart draw of its own (``Scenario.perturbation_covariance``);
- views: ``x = g_x(s, m_x)`` and ``t = g_t(s~[I_theta], m_t)`` with fixed random invertible MLPs
  (square layers, leaky-ReLU 0.2; weights either Haar-orthogonal or, as in the paper, Gaussian
  with unit-norm columns, rejecting draws whose condition number exceeds a low quantile of the
  condition numbers of random draws).

Every random quantity comes from a stream derived from the scenario's seed and the stream's name
(:func:`stream_seed`), so a scenario produces the same numbers whatever sweep it runs in.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from clipaudit.theory.config import Scenario

MIXING_SLOPE = 0.2
CONDITION_POOL = 2000


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named random stream of a scenario seed (independent streams)."""
    state = np.random.SeedSequence([seed, zlib.crc32(stream.encode())]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def torch_generator(seed: int, stream: str, device: str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded for the named stream of ``seed`` (:func:`stream_seed`)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(stream_seed(seed, stream))
    return generator


def wishart_covariance(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A draw from Wishart(df=dim, scale=I): the paper's random covariance of dependent latents."""
    from scipy.stats import wishart

    draw = wishart.rvs(df=dim, scale=np.eye(dim), random_state=rng)
    return np.atleast_2d(np.asarray(draw, dtype=np.float64))


@dataclass(frozen=True)
class LatentModel:
    """The covariances of one scenario (float64 numpy, identity when independent)."""

    scenario: Scenario
    sigma_s: np.ndarray
    sigma_a: np.ndarray
    sigma_mx: np.ndarray
    sigma_mt: np.ndarray

    @property
    def perturbation_variance(self) -> np.ndarray:
        """Var(s~_i) - Var(s_i) = change_prob * Sigma_a[i, i] for perturbed i, 0 elsewhere."""
        extra = np.zeros(self.scenario.n_semantics)
        for i in self.scenario.perturbed:
            extra[i - 1] = self.scenario.change_prob * self.sigma_a[i - 1, i - 1]
        return extra


def build_latent_model(scenario: Scenario) -> LatentModel:
    """The covariances of ``scenario``: identities, or Wishart draws of its ``covariance`` stream
    with causal dependence; Sigma_a as ``scenario.perturbation_covariance`` says."""
    n_s, n_m = scenario.n_semantics, scenario.n_modality
    rng = np.random.default_rng(stream_seed(scenario.seed, "covariance"))
    if scenario.causal_dependence:
        sigma_s = wishart_covariance(n_s, rng)
        # drawn whatever Sigma_a is, so that the other covariances do not depend on that choice
        own_draw = wishart_covariance(n_s, rng)
        sigma_mx = wishart_covariance(n_m, rng) if n_m else np.eye(0)
        sigma_mt = wishart_covariance(n_m, rng) if n_m else np.eye(0)
    else:
        sigma_s, sigma_mx, sigma_mt = np.eye(n_s), np.eye(n_m), np.eye(n_m)
        own_draw = wishart_covariance(n_s, rng)
    sigma_a = {
        "semantics": sigma_s,
        "identity": np.eye(n_s),
        "wishart": own_draw,
    }[scenario.perturbation_covariance]
    return LatentModel(scenario, sigma_s, sigma_a, sigma_mx, sigma_mt)


@dataclass(frozen=True)
class Latents:
    """``n`` samples of one scenario; ``changed[k, i]`` says whether s~_i differs from s_i."""

    s: torch.Tensor
    s_tilde: torch.Tensor
    changed: torch.Tensor
    m_x: torch.Tensor
    m_t: torch.Tensor


def _cholesky(sigma: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(
        np.linalg.cholesky(sigma).T if sigma.size else sigma, dtype=torch.float32, device=device
    )


def sample_latents(
    model: LatentModel, n: int, generator: torch.Generator, perturb: bool = True
) -> Latents:
    """Draw ``n`` latent samples. ``perturb=False`` gives faithful texts (``s~ = s``), as a prompt
    written by an auditor is; the random draws are the same either way."""
    scenario, device = model.scenario, generator.device
    n_s, n_m = scenario.n_semantics, scenario.n_modality
    s = torch.randn(n, n_s, generator=generator, device=device) @ _cholesky(model.sigma_s, device)
    m_x = torch.randn(n, n_m, generator=generator, device=device) @ _cholesky(
        model.sigma_mx, device
    )
    m_t = torch.randn(n, n_m, generator=generator, device=device) @ _cholesky(
        model.sigma_mt, device
    )
    eps = torch.randn(n, n_s, generator=generator, device=device) @ _cholesky(model.sigma_a, device)
    coin = torch.rand(n, n_s, generator=generator, device=device)
    perturbable = torch.zeros(n_s, dtype=torch.bool, device=device)
    if perturb:
        for i in scenario.perturbed:
            perturbable[i - 1] = True
    changed = (coin < scenario.change_prob) & perturbable
    return Latents(s=s, s_tilde=s + changed * eps, changed=changed, m_x=m_x, m_t=m_t)


def view_latents(scenario: Scenario, latents: Latents) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixings' inputs: ``(s, m_x)`` for the image, ``(s~[I_theta], m_t)`` for the text."""
    selected = [i - 1 for i in scenario.selected]
    z_x = torch.cat([latents.s, latents.m_x], dim=1)
    z_t = torch.cat([latents.s_tilde[:, selected], latents.m_t], dim=1)
    return z_x, z_t


def invertible_mlp_weights(
    dim: int, n_layers: int, kind: str, condition_quantile: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[float]]:
    """Square ``(dim, dim)`` weights (row-vector convention ``h @ W``) of an invertible leaky-ReLU MLP
    and their condition numbers.

    ``kind="conditioned"`` (the paper's recipe): Gaussian draws with unit-norm columns, rejected
    while the condition number exceeds the ``condition_quantile`` quantile of the condition numbers
    of :data:`CONDITION_POOL` such draws. ``kind="orthogonal"``: Haar-random orthogonal draws
    (condition number 1, the best-conditioned invertible layer).
    """

    def draw(size: tuple[int, ...]) -> np.ndarray:
        matrices = rng.standard_normal((*size, dim, dim))
        return matrices / np.linalg.norm(matrices, axis=-2, keepdims=True)

    if kind == "orthogonal":
        weights = []
        for _ in range(n_layers):
            q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
            weights.append(q * np.sign(np.diag(r)))  # sign fix makes the draw Haar-distributed
        return weights, [float(np.linalg.cond(w)) for w in weights]
    threshold = float(np.quantile(np.linalg.cond(draw((CONDITION_POOL,))), condition_quantile))
    weights, conditions = [], []
    for _ in range(n_layers):
        while True:
            candidate = draw(())
            condition = float(np.linalg.cond(candidate))
            if condition <= threshold:
                break
        weights.append(candidate)
        conditions.append(condition)
    return weights, conditions


@dataclass(frozen=True)
class Mixing:
    """The fixed mixings g_x and g_t of one scenario, as float32 weight lists."""

    x_weights: list[torch.Tensor]
    t_weights: list[torch.Tensor]
    x_conditions: list[float]
    t_conditions: list[float]


def build_mixing(scenario: Scenario, n_layers: int, kind: str, condition_quantile: float) -> Mixing:
    """g_x and g_t of ``scenario`` (:func:`invertible_mlp_weights`), from its ``mixing`` stream."""
    rng = np.random.default_rng(stream_seed(scenario.seed, "mixing"))
    x_weights, x_conditions = invertible_mlp_weights(
        scenario.x_dim, n_layers, kind, condition_quantile, rng
    )
    t_weights, t_conditions = invertible_mlp_weights(
        scenario.t_dim, n_layers, kind, condition_quantile, rng
    )
    as_tensors = lambda ws: [torch.as_tensor(w, dtype=torch.float32) for w in ws]  # noqa: E731
    return Mixing(as_tensors(x_weights), as_tensors(t_weights), x_conditions, t_conditions)
