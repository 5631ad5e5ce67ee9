"""Settings of the synthetic misalignment experiment, validated before any training starts.

Three frozen dataclasses:

- :class:`Scenario`: one data-generating process (latent sizes, selected set I_theta, perturbed
  set I_beta, change probability, causal dependence, encoding size, seed). Indices are 1-based,
  as in the paper and on the command line (``"1-5"``, ``"1,2"``, ``"1-3,7"``).
- :class:`TrainingSettings`: how the encoders are trained; the profiles ``paper`` (the published
  hyperparameters, for a GPU) and ``quick`` (small enough for a 2-core CPU) are in :data:`PROFILES`.
- :class:`EvaluationSettings`: sample sizes of the probes and the thresholds of the check.

:func:`default_sweep` builds the paper's grid of scenarios.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import numbers
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clipaudit.errors import CheckedFields, SettingsError, did_you_mean

LATENT_MODES = ("independent", "dependent")
SWEEP_KINDS = ("selection", "perturbation")
MIXING_KINDS = ("orthogonal", "conditioned")
NEGATIVES = ("cross-modal", "same-modality")
LR_SCHEDULES = ("constant", "cosine")
PERTURBATION_COVARIANCES = ("semantics", "identity", "wishart")

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _out_of_range(what: str, n: int, part: str, text: object) -> SettingsError:
    # the whole list only where it says more than the part (not "got '0' in '0'")
    given = "" if isinstance(text, str) and part == text.strip() else f" in {text!r}"
    return SettingsError(
        f"{what}: indices are 1-based and must lie in 1..{n} (--n-semantics {n}); got {part!r}{given}"
    )


def parse_index_list(text: str | Iterable[int], n: int, what: str) -> tuple[int, ...]:
    """Sorted 1-based indices from ``"1-5"``, ``"1,2"``, ``"1-3,7"`` or ``""``/``"none"`` (empty).

    Also accepts an iterable of ints. Raises :class:`SettingsError` for anything malformed, out of
    ``1..n`` or repeated, naming ``what`` (e.g. ``"--selected"``).
    """
    if isinstance(text, str):
        stripped = text.strip().lower()
        if stripped in ("", "none"):
            return ()
        indices: list[int] = []
        for part in stripped.split(","):
            match = _RANGE.match(part.strip())
            if match is None:
                raise SettingsError(
                    f"{what}: expected 1-based indices such as '1-5', '1,2' or '1-3,7'; got {text!r}"
                )
            low = int(match.group(1))
            high = int(match.group(2) or low)
            if high < low:
                raise SettingsError(
                    f"{what}: expected ranges written low-high such as '{high}-{low}'; "
                    f"got {part.strip()!r}"
                )
            if low < 1 or high > n:  # before expanding: '1-99999999999' is no list to build
                raise _out_of_range(what, n, part.strip(), text)
            indices.extend(range(low, high + 1))
    else:
        indices = list(text)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise SettingsError(f"{what}: expected integer indices; got {indices!r}")
    bad = [i for i in indices if not 1 <= i <= n]
    if bad:
        raise _out_of_range(what, n, ",".join(map(str, bad)), text)
    repeated = sorted(i for i, count in Counter(indices).items() if count > 1)
    if repeated:
        raise SettingsError(
            f"{what}: expected each index once; got {repeated[0]} more than once in {text!r}"
        )
    return tuple(sorted(indices))


# latent dimensions of a scenario (n_semantics + n_modality; the paper's is 15): the mixings draw
# and invert square matrices of it (2000 of them for a conditioned mixing's threshold), so memory
# and time grow with its square and cube; past this a run fails for memory or takes hours
MAX_LATENT_DIM = 256

# seeds seed numpy's and torch's generators, which take 32-bit seeds everywhere; each seed trains
# every scenario once, so ten thousand of them is already weeks of work
MAX_SEED = 2**32 - 1
MAX_SEEDS = 10_000


def parse_seeds(text: str) -> int | tuple[int, ...]:
    """``--seeds``: a count (``"2"``: seeds 0 and 1) or explicit seeds (``"2,3"``, ``"2-5"``,
    ``"7,"`` for seed 7 alone), so that a check can run on seeds no profile was tuned on."""
    stripped = text.strip()
    if stripped.isdigit():
        count = int(stripped)
        if not 1 <= count <= MAX_SEEDS:
            # "0" is most likely seed 0 alone, which a count cannot say
            fix = (
                ": for seed 0 alone give --seeds 0, (with its comma; seeds=(0,) in Python)"
                if count == 0
                else ""
            )
            raise SettingsError(
                f"--seeds: expected a count from 1 to {MAX_SEEDS}; got {text!r}{fix}"
            )
        return count
    seeds: list[int] = []
    for part in (p.strip() for p in stripped.split(",")):
        if not part:
            continue
        match = _RANGE.match(part)
        if match is None:
            # the two slips a general message left unexplained: a sign, and a range cut short
            if re.fullmatch(r"-\d+", part):
                why = "seeds are 0 or more, as numpy and torch take them"
            elif re.fullmatch(r"\d+-", part):
                why = f"a range needs both ends, e.g. '{part}{int(part[:-1]) + 3}'"
            else:
                why = "expected a count ('2') or seeds such as '2,3', '2-5' or '7,'"
            raise SettingsError(f"--seeds: {why}; got {text!r}")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise SettingsError(f"--seeds: expected ranges written low-high; got {part!r}")
        if high > MAX_SEED:
            raise SettingsError(f"--seeds: expected seeds from 0 to {MAX_SEED}; got {part!r}")
        if len(seeds) + high - low + 1 > MAX_SEEDS:
            raise SettingsError(f"--seeds: expected at most {MAX_SEEDS} seeds; got {text!r}")
        seeds.extend(range(low, high + 1))
    if not seeds:
        raise SettingsError(
            "--seeds: expected a count ('2') or seeds such as '2,3' or '2-5'; got nothing"
        )
    repeated = sorted(seed for seed, n in Counter(seeds).items() if n > 1)
    if repeated:
        raise SettingsError(
            f"--seeds: expected distinct seeds; got {text!r} "
            f"(repeated: {', '.join(map(str, repeated))})"
        )
    return tuple(seeds)


def format_index_list(indices: Sequence[int]) -> str:
    """Compact 1-based form of sorted indices: ``(1, 2, 3, 7) -> "1-3,7"``; ``() -> "none"``."""
    if not indices:
        return "none"
    parts: list[str] = []
    start = previous = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == previous + 1:
            previous = i
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if i is not None:
            start = previous = i
    return ",".join(parts)


# where each part's settings go in Python, for the fix of a refused one
_IN_SCENARIO = "Scenario"
_IN_TRAINING = "TrainingSettings or training_overrides"
_IN_EVALUATION = "EvaluationSettings or evaluation_overrides"


def _give(name: str, example: object, python: str) -> str:
    """The fix of a refused setting: its command-line flag (``--set KEY=VALUE`` where it has no
    option of its own) with a valid example, and where it goes in Python."""
    flag = _FLAGS.get(name)
    shown = f"{flag} {example}" if flag else f"--set {name}={example}"
    return f"give {shown} ({name}={example!r} in {python} in Python)"


def _default(settings: Any, name: str) -> object:
    return next(f.default for f in dataclasses.fields(settings) if f.name == name)


@dataclass(frozen=True)
class Scenario(CheckedFields):
    """One data-generating process of the paper's simulation.

    ``selected`` (I_theta) are the semantics the text carries, ``perturbed`` (I_beta, inside I_theta)
    those whose text value is altered, each with probability ``change_prob`` per sample. The
    theory's identified block is ``invariant`` = I_theta minus I_beta. ``selected=None`` means all
    semantics; ``encoding_size=None`` means ``len(invariant)`` (the theory's bottleneck). The
    theorem assumes that bottleneck: with encoders of another size it says nothing about which
    semantics are identified, so such a scenario is probed but not judged (:attr:`within_theorem`).

    ``perturbation_covariance`` is Sigma_a, the covariance of the perturbation eps:
    ``"semantics"`` (Sigma_a = Sigma_s, as the paper's code draws both from one seed: the identity
    for independent latents), ``"identity"``, or ``"wishart"`` (its own Wishart(n_s, I) draw).
    """

    n_semantics: int = 10
    n_modality: int = 5
    selected: tuple[int, ...] | str | None = None
    perturbed: tuple[int, ...] | str = ()
    change_prob: float = 0.75
    causal_dependence: bool = False
    encoding_size: int | None = None
    seed: int = 0
    perturbation_covariance: str = "semantics"

    def __post_init__(self) -> None:
        for name, low in (("n_semantics", 1), ("n_modality", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SettingsError(
                    f"{name} must be an integer >= {low}; got {value!r}: "
                    + _give(name, _default(self, name), _IN_SCENARIO)
                )
        if self.x_dim > MAX_LATENT_DIM:
            raise SettingsError(
                f"n_semantics + n_modality is {self.x_dim} ({self.n_semantics} + "
                f"{self.n_modality}); at most {MAX_LATENT_DIM} latent dimensions are supported "
                "(the paper's are 10 + 5): the mixings grow with its square"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise SettingsError(
                f"seed must be a non-negative integer; got {self.seed!r}: "
                + _give("seed", 0, _IN_SCENARIO)
            )
        if not isinstance(self.causal_dependence, bool):  # "no" would count as on
            raise SettingsError(
                f"causal_dependence must be true or false; got {self.causal_dependence!r}"
            )
        selected = (
            tuple(range(1, self.n_semantics + 1))
            if self.selected is None
            else parse_index_list(self.selected, self.n_semantics, "--selected")
        )
        if not selected:
            raise SettingsError(
                "the selected set (--selected) is empty: the text must carry at least one semantic; "
                "give e.g. --selected 1-5"
            )
        perturbed = parse_index_list(self.perturbed, self.n_semantics, "--perturbed")
        outside = sorted(set(perturbed) - set(selected))
        if outside:
            them = "it" if len(outside) == 1 else "them"
            raise SettingsError(
                "the perturbed set (--perturbed) must lie inside the selected set "
                f"{format_index_list(selected)} (--selected); got perturbed indices "
                f"{format_index_list(outside)} that the text never carries: add {them} to "
                f"--selected or drop {them} from --perturbed (selected= and perturbed= of "
                "Scenario in Python)"
            )
        object.__setattr__(self, "selected", selected)
        object.__setattr__(self, "perturbed", perturbed)
        if (
            not isinstance(self.change_prob, (int, float))
            or isinstance(self.change_prob, bool)
            or not 0.0 < float(self.change_prob) <= 1.0
        ):
            raise SettingsError(
                f"change_prob must be in (0, 1]; got {self.change_prob!r}: "
                f"{_give('change_prob', 0.75, _IN_SCENARIO)}; for no perturbation, leave "
                "--perturbed out"
            )
        object.__setattr__(self, "change_prob", float(self.change_prob))
        if self.perturbation_covariance not in PERTURBATION_COVARIANCES:
            raise SettingsError(
                f"perturbation_covariance (--perturbation-covariance) must be one of "
                f"{list(PERTURBATION_COVARIANCES)}; got {self.perturbation_covariance!r}"
                f"{did_you_mean(str(self.perturbation_covariance), PERTURBATION_COVARIANCES)}"
            )
        # encoding_size stays as given (None = the bottleneck), so dataclasses.replace() of the
        # selected or perturbed set recomputes it; representation_size is the resolved value
        if self.encoding_size is None:
            if not self.invariant:
                raise SettingsError(
                    "encoding size 0: every selected semantic is perturbed, so the invariant block "
                    "I_theta \\ I_beta is empty; perturb fewer semantics or set --encoding-size"
                )
        elif (
            not isinstance(self.encoding_size, int)
            or isinstance(self.encoding_size, bool)
            or self.encoding_size < 1
        ):
            raise SettingsError(
                f"encoding_size must be an integer >= 1; got {self.encoding_size!r}: "
                f"{_give('encoding_size', len(self.invariant) or 1, _IN_SCENARIO)}, or leave it "
                "out for the invariant block's size, which the theorem assumes"
            )
        elif self.encoding_size > MAX_LATENT_DIM:  # the encoders' last layers grow with it
            raise SettingsError(
                f"encoding_size must be at most {MAX_LATENT_DIM}; got {self.encoding_size}: "
                + _give("encoding_size", MAX_LATENT_DIM, _IN_SCENARIO)
            )

    @property
    def representation_size(self) -> int:
        """The encoders' output size: ``encoding_size``, or by default ``len(invariant)``."""
        return self.encoding_size or len(self.invariant)

    @property
    def within_theorem(self) -> bool:
        """Whether the theorem applies: its encoders output ``len(invariant)`` dimensions. Wider
        ones have room for more than the invariant block (perturbed or unselected semantics,
        modality-specific latents), narrower ones not for all of it; the theorem covers neither."""
        return self.representation_size == len(self.invariant)

    @property
    def invariant(self) -> tuple[int, ...]:
        """I_theta \\ I_beta: the semantics the theory says are identified (1-based)."""
        return tuple(i for i in self.selected if i not in self.perturbed)

    @property
    def x_dim(self) -> int:
        """Size of the image's latents (s, m_x), the input of g_x."""
        return self.n_semantics + self.n_modality

    @property
    def t_dim(self) -> int:
        """Size of the text's latents (s~ of I_theta, m_t), the input of g_t."""
        return len(self.selected) + self.n_modality

    @property
    def name(self) -> str:
        """Readable, unique within a sweep: ``ind_sel1-3_seed0``, ``dep_sel1-10_pert1-2_seed1``."""
        parts = [
            "dep" if self.causal_dependence else "ind",
            f"sel{format_index_list(self.selected)}",
        ]
        if self.perturbed:
            parts.append(f"pert{format_index_list(self.perturbed)}")
            if self.change_prob != 0.75:
                # every digit: :g kept 6, naming 0.9999999 as 1 (repr writes a value of up to 6
                # digits as :g did, so the results of earlier runs keep their names)
                parts.append(f"p{self.change_prob!r}".removesuffix(".0"))
            if self.perturbation_covariance != "semantics":
                parts.append(f"eps-{self.perturbation_covariance}")
        if self.representation_size != len(self.invariant):
            parts.append(f"enc{self.representation_size}")
        if (self.n_semantics, self.n_modality) != (10, 5):
            parts.append(f"ns{self.n_semantics}nm{self.n_modality}")
        parts.append(f"seed{self.seed}")
        return "_".join(parts)

    @property
    def family(self) -> str:
        """The name without the seed: the column a figure averages seeds into."""
        return self.name.rsplit("_seed", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with the name, the invariant block and the resolved size."""
        record = dataclasses.asdict(self)
        record["name"] = self.name
        record["invariant"] = list(self.invariant)
        record["representation_size"] = self.representation_size
        return record


def _check_positive(settings: object, names: Iterable[str], python: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)  # nan <= 0 is False
            or value <= 0
        ):
            raise SettingsError(
                f"{name} must be a positive finite number; got {value!r}: "
                + _give(name, _default(settings, name), python)
            )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_at_least(name: str, value: int, minimum: int, why: str) -> None:
    """A probe size below its minimum, refused with the minimum, the reason and the fix."""
    if value < minimum:
        raise SettingsError(
            f"{name} must be >= {minimum} ({why}); got {value}: give --set {name}={minimum} "
            f"({name}={minimum} in EvaluationSettings or evaluation_overrides in Python)"
        )


def _landmarks_needed(minimum: str) -> str:
    # The kernel probe's RBF (Nystroem) features depend on a representation only through its
    # distances to min(n_fit, kernel_components) landmarks drawn from the fit sample. Distances
    # to d landmarks or fewer cannot tell apart a point and its mirror image across the landmarks'
    # hyperplane, so a variable that differs between them is beyond any fit: d + 1 are needed.
    return (
        "the kernel probe tells representations apart by their distances to min(n_fit, "
        f"kernel_components) landmark samples, and needs d + 1 of them for d dimensions: {minimum}"
    )


def _check_choice(name: str, value: object, choices: Sequence[str], python: str) -> None:
    """``value`` must be one of ``choices`` (``device`` also ``cuda:N``); a value of another type
    (``--set device=3`` reads 3 as a number) is refused as plainly as a misspelt one."""
    if isinstance(value, str) and (
        value in choices or (name == "device" and re.fullmatch(r"cuda:\d+", value))
    ):
        return
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    shown = " or ".join(f"'{c}'" for c in choices) + (" or 'cuda:N'" if name == "device" else "")
    closest = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
    raise SettingsError(
        f"{name} must be {shown}; got {value!r}{hint}: "
        + _give(name, (closest or [choices[0]])[0], python)
    )


@dataclass(frozen=True)
class TrainingSettings(CheckedFields):
    """How the encoders are trained, and how hard the mixings are to invert. Shared by every
    scenario of a sweep (they train together).

    Encoders are leaky-ReLU MLPs with hidden layers ``hidden_widths``, multiplied by the encoder's
    input size when ``widths_scale_with_input`` (the paper's ``n * (10, 50, 50, 50, 50, 10)``).
    The loss works on the negative squared Euclidean distance divided by a ``temperature``, fixed
    as in the paper's code (the identifiability results hold for any fixed temperature, and a
    learnable one would only rescale the unnormalised embeddings), or, with ``final_temperature``,
    moved from ``temperature`` to ``final_temperature`` along a half cosine over the steps, so
    that the last steps train the objective at (nearly) ``final_temperature``. ``negatives``:
    ``"cross-modal"`` is CLIP's symmetric InfoNCE over in-batch negatives (a text's negatives are
    the other images); ``"same-modality"`` is the loss of Daunhawer et al.'s simulation code
    (alignment plus each modality's log-mean-exp over its own other samples). ``whiten_outputs``
    ends each encoder with batch whitening (its batch centred and decorrelated to unit covariance,
    as decorrelated batch normalisation; population statistics at evaluation), so that the loss
    weighs every direction of the representation alike; the temperature then sets how sharp the
    loss is on a fixed scale. AdamW (``weight_decay`` 0: plain Adam) with a constant or cosine
    ``lr_schedule``, per-scenario gradient-norm clipping at ``grad_clip``.

    ``mixing``: ``"conditioned"`` draws Gaussian mixing weights and rejects those whose condition
    number exceeds the ``mixing_condition_quantile`` quantile of random draws (the paper's recipe);
    ``"orthogonal"`` draws Haar-orthogonal weights (condition number 1). Both are invertible
    3-layer leaky-ReLU MLPs; the orthogonal ones can be inverted by an encoder in a CPU budget.
    """

    profile: str = "quick"
    steps: int = 3000
    batch_size: int = 512
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    hidden_widths: tuple[int, ...] = (128, 128, 128)
    widths_scale_with_input: bool = False
    temperature: float = 1.0
    final_temperature: float | None = None
    negatives: str = "cross-modal"
    whiten_outputs: bool = False
    grad_clip: float = 2.0
    mixing: str = "orthogonal"
    mixing_layers: int = 3
    mixing_condition_quantile: float = 0.001
    chunk_steps: int = 25
    checkpoint_every: int = 500
    group_size: int | str = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        ints = ("steps", "batch_size", "mixing_layers", "chunk_steps", "checkpoint_every")
        _check_positive(self, (*ints, "learning_rate", "temperature", "grad_clip"), _IN_TRAINING)
        for name in ints:
            if not isinstance(getattr(self, name), int):
                raise SettingsError(
                    f"{name} must be an integer; got {getattr(self, name)!r}: "
                    + _give(name, _default(self, name), _IN_TRAINING)
                )
        if self.batch_size < 2:
            raise SettingsError(
                f"batch_size must be >= 2 (in-batch negatives); got {self.batch_size}: "
                + _give("batch_size", _default(self, "batch_size"), _IN_TRAINING)
            )
        # a scalar (hidden_widths=64 on the command line) is no sequence of widths
        widths = tuple(self.hidden_widths) if isinstance(self.hidden_widths, (list, tuple)) else ()
        if not widths or not all(
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths
        ):
            raise SettingsError(
                "hidden_widths must be positive integers, e.g. (128, 128) (--set "
                f"hidden_widths=[128,128] on the command line); got {self.hidden_widths!r}"
            )
        object.__setattr__(self, "hidden_widths", widths)
        for name in ("whiten_outputs", "widths_scale_with_input"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(f"{name} must be true or false; got {getattr(self, name)!r}")
        if self.final_temperature is not None and not (
            _is_number(self.final_temperature) and 0 < self.final_temperature < math.inf
        ):
            raise SettingsError(
                "final_temperature must be > 0 and finite (or None: fixed); got "
                f"{self.final_temperature!r}"
            )
        # NaN passes "< 0"; torch refuses it only once training starts
        if not (_is_number(self.weight_decay) and 0 <= self.weight_decay < math.inf):
            raise SettingsError(
                f"weight_decay must be a finite number >= 0; got {self.weight_decay!r}"
            )
        for name, choices in (
            ("lr_schedule", LR_SCHEDULES),
            ("negatives", NEGATIVES),
            ("mixing", MIXING_KINDS),
            ("device", ("cpu", "cuda")),
        ):
            _check_choice(name, getattr(self, name), choices, _IN_TRAINING)
        if not (
            _is_number(self.mixing_condition_quantile)
            and 0.0 < self.mixing_condition_quantile <= 1.0
        ):
            raise SettingsError(
                f"mixing_condition_quantile must be in (0, 1]; got {self.mixing_condition_quantile!r}"
            )
        size = self.group_size
        if size != "auto" and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise SettingsError(
                "group_size must be an integer >= 0 (0 = all scenarios at once) or 'auto' "
                f"(by model size and device); got {size!r}"
            )


@dataclass(frozen=True)
class EvaluationSettings(CheckedFields):
    """Probe sample sizes (fresh samples, never the training ones) and the check's thresholds.

    Regressors fit on ``n_fit`` samples, choose kernel-ridge hyperparameters on ``n_val`` and report
    R^2 on ``n_test``; the kernel is approximated by ``kernel_components`` Nystroem features, so
    the fit sample can be large enough for the probe not to cap what it measures. A
    predicted-identified variable agrees when its nonlinear R^2 is at least
    ``identified_threshold``; any other variable when it is at most its ceiling plus ``margin``.
    """

    n_fit: int = 20_000
    n_val: int = 5000
    n_test: int = 5000
    kernel_components: int = 1500
    n_prototypes: int = 5000
    n_bins: int = 5
    identified_threshold: float = 0.8
    margin: float = 0.15
    kernel_gammas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    ridge_alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)

    def __post_init__(self) -> None:
        counts = ("n_fit", "n_val", "n_test", "kernel_components", "n_prototypes", "n_bins")
        _check_positive(self, counts, _IN_EVALUATION)
        for name in counts:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise SettingsError(
                    f"{name} must be an integer; got {value!r}: "
                    + _give(name, _default(self, name), _IN_EVALUATION)
                )
        if self.n_bins < 2:
            raise SettingsError(
                f"n_bins must be >= 2; got {self.n_bins}: "
                + _give("n_bins", _default(self, "n_bins"), _IN_EVALUATION)
            )
        # the minima whatever the scenario (a representation has at least one dimension); those
        # of a scenario's representation are checked by check_representations before training
        for name in ("n_fit", "kernel_components"):
            _check_at_least(name, getattr(self, name), 2, _landmarks_needed("2 for the fewest"))
        # R^2 on fewer than two samples is undefined, and would fail only after the training
        for name in ("n_val", "n_test"):
            _check_at_least(name, getattr(self, name), 2, "an R^2 needs two samples")
        if self.n_prototypes < 10 * self.n_bins:
            raise SettingsError(
                f"n_bins (--n-bins) {self.n_bins} needs at least 10 prototypes per bin "
                f"({10 * self.n_bins}), and n_prototypes is {self.n_prototypes}: use at most "
                f"{self.n_prototypes // 10} bins, or more prototypes (--set "
                f"n_prototypes={10 * self.n_bins})"
            )
        # a value of another type met the comparisons below as a TypeError
        if not (_is_number(self.identified_threshold) and 0.0 < self.identified_threshold <= 1.0):
            raise SettingsError(
                f"identified_threshold must be in (0, 1]; got {self.identified_threshold!r}: "
                + _give(
                    "identified_threshold", _default(self, "identified_threshold"), _IN_EVALUATION
                )
            )
        if not (_is_number(self.margin) and 0.0 <= self.margin < 1.0):
            raise SettingsError(
                f"margin must be in [0, 1); got {self.margin!r}: "
                + _give("margin", _default(self, "margin"), _IN_EVALUATION)
            )
        for name in ("kernel_gammas", "ridge_alphas"):
            given = getattr(self, name)
            values = (
                tuple(given) if isinstance(given, Iterable) and not isinstance(given, str) else ()
            )
            # finite too: an infinite gamma failed in the probe only after the training, and an
            # infinite alpha predicted the mean, an R^2 of 0 for every variable
            if not values or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < math.inf
                for v in values
            ):
                raise SettingsError(
                    f"{name} must be positive finite numbers, e.g. (0.1, 1.0); got {given!r}"
                )
            object.__setattr__(self, name, tuple(float(v) for v in values))

    def check_representations(self, scenarios: Sequence[Scenario]) -> None:
        """Refuse (:class:`SettingsError`) a probe too small for the widest representation of
        ``scenarios``: ``n_fit`` and ``kernel_components`` must exceed its size, or the kernel
        probe cannot tell some of its points apart (mirror images across the landmarks'
        hyperplane), and a variable the representation holds can read as not identified. It
        needs the scenarios, so it runs with them, before any training."""
        widest = max(scenarios, key=lambda scenario: scenario.representation_size)
        size = widest.representation_size
        why = _landmarks_needed(f"{size + 1} for the {size} outputs of {widest.name}'s encoders")
        for name in ("n_fit", "kernel_components"):
            _check_at_least(name, getattr(self, name), size + 1, why)


PROFILES: dict[str, TrainingSettings] = {
    # The published setting (Daunhawer et al. 2023, Cai et al. 2025): a GPU job per scenario.
    "paper": TrainingSettings(
        profile="paper",
        steps=100_001,
        batch_size=6144,
        learning_rate=1e-4,
        hidden_widths=(10, 50, 50, 50, 50, 10),
        widths_scale_with_input=True,
        mixing="conditioned",
        checkpoint_every=2000,
        group_size="auto",
    ),
    # Under a minute per configuration on a 2-core CPU (see benchmarks/RESULTS.md for what it
    # agrees on). Whitened outputs: unwhitened, the loss favours high-variance directions, so
    # under dependent latents encoders kept perturbed semantics in place of small-variance
    # directions of the invariant block (64 of 76 at temperature 0.3). Temperature 1.5 rising to
    # 3: near its first order (high temperature) the whitened loss is a sum of canonical
    # correlations, which drops perturbed semantics but is as happy with a folded (non-injective)
    # code; the sharper start first spreads the code out (measured in RESULTS).
    # groups of 10: larger stacks stop fitting in cache (38 at once cost 1.7x more per step). Not
    # "auto", which would train this size one by one on a CPU: its recorded agreement was measured
    # in groups of 10, and whitened training depends slightly on a group's composition
    "quick": TrainingSettings(
        profile="quick",
        temperature=1.5,
        final_temperature=3.0,
        whiten_outputs=True,
        lr_schedule="cosine",
        group_size=10,
    ),
}


# Batched training pays on a CPU only while per-step overhead outweighs the arithmetic. Measured with
# benchmarks/theory_batching.py (10 configurations, 1 thread, 2-core CPU, 2026-12-01; RESULTS.md):
# batched/sequential 3.67x at 2.8 MFLOP per configuration-step, 1.40x at 17.5, 0.78x at 128 and
# at 221 (the quick profile); the ratio crosses 1 near 50 MFLOP.
BATCHING_PAYS_BELOW_FLOPS = 50e6
AUTO_CPU_GROUP = 16  # below the threshold: enough to amortise overhead, small enough for cache


def encoder_sizes(in_dim: int, out_dim: int, training: TrainingSettings) -> list[int]:
    """Layer sizes ``[in, h1, ..., out]``; the paper's hidden widths are multiples of ``in``."""
    scale = in_dim if training.widths_scale_with_input else 1
    return [in_dim, *(w * scale for w in training.hidden_widths), out_dim]


def step_flops(training: TrainingSettings, n_inputs: int, n_outputs: int) -> float:
    """Floating-point operations of one training step of one configuration: both encoders'
    matrix products, forward and backward (3x the forward's 2 per multiply-add)."""
    sizes = encoder_sizes(n_inputs, n_outputs, training)
    multiply_adds = sum(a * b for a, b in itertools.pairwise(sizes))
    return 2 * 6.0 * training.batch_size * multiply_adds


def training_bytes(training: TrainingSettings, scenario: Scenario) -> float:
    """Less memory than ``scenario`` trains in: both encoders' float32 weights with their
    gradients and AdamW's two moments, and one batch's activations kept for the backward pass
    (a group's zero-padding and what torch allocates besides are not counted)."""
    total = 0
    for in_dim in (scenario.x_dim, scenario.t_dim):
        sizes = encoder_sizes(in_dim, scenario.representation_size, training)
        weights = sum(a * b for a, b in itertools.pairwise(sizes))
        total += 4 * weights + training.batch_size * sum(sizes)
    return 4.0 * total


def resolve_group_size(
    training: TrainingSettings, n_scenarios: int, n_inputs: int, n_outputs: int
) -> int:
    """``training.group_size``, with ``"auto"`` resolved: every scenario at once on a GPU; on a
    CPU, groups of :data:`AUTO_CPU_GROUP` where batching pays (:data:`BATCHING_PAYS_BELOW_FLOPS`),
    else one scenario at a time."""
    if training.group_size != "auto":
        return training.group_size or n_scenarios
    if training.device.startswith("cuda"):
        return n_scenarios
    pays = step_flops(training, n_inputs, n_outputs) < BATCHING_PAYS_BELOW_FLOPS
    return min(n_scenarios, AUTO_CPU_GROUP) if pays else 1


def training_profile(name: str, **overrides: Any) -> TrainingSettings:
    """The named profile with some fields replaced (``None`` values are ignored). A
    ``temperature`` given without a ``final_temperature`` is a fixed temperature, whatever the
    profile's schedule (here only: ``dataclasses.replace`` on a profile keeps its schedule)."""
    if name not in PROFILES:
        raise SettingsError(
            f"unknown profile {name!r} (--profile); expected one of {sorted(PROFILES)}"
            f"{did_you_mean(name, PROFILES)}"
        )
    changes = {k: v for k, v in overrides.items() if v is not None}
    fields = [f.name for f in dataclasses.fields(TrainingSettings) if f.name != "profile"]
    for key in changes:
        if key not in fields:
            raise SettingsError(
                f"unknown training setting {key!r}; expected one of {fields}{did_you_mean(key, fields)}"
            )
    if "temperature" in changes and "final_temperature" not in changes:
        changes["final_temperature"] = None
    return dataclasses.replace(PROFILES[name], **changes)


# evaluation settings that `theory run` and `check` take as options of their own
_OWN_OPTIONS = {
    "n_bins": "--n-bins",
    "identified_threshold": "--identified-threshold",
    "margin": "--margin",
}

# every setting with an option of its own (the rest are given as --set KEY=VALUE)
_FLAGS = {
    **_OWN_OPTIONS,
    **{
        name: "--" + name.replace("_", "-")
        for name in (
            "steps",
            "batch_size",
            "learning_rate",
            "device",
            "n_semantics",
            "n_modality",
            "change_prob",
            "encoding_size",
            "seed",
        )
    },
}


def whole_numbers(name: str, value: Any, annotation: str, python: str = "") -> Any:
    """The value of setting ``name`` (a field annotated ``annotation``) with a float that is an
    exact integer taken as that integer where the field holds integers: the command line reads
    ``1e3`` and ``2.0`` as floats, and ``--set n_fit=1e3`` means 1000. A float that is not whole
    is refused, naming ``--set`` and ``python``, where the setting goes in Python (e.g.
    "EvaluationSettings or evaluation_overrides"); a value of another type is left to the
    settings' own checks."""
    where = f" ({name}=... in {python} in Python)" if python else ""
    if annotation in ("int", "int | str") and isinstance(value, float):
        if value.is_integer():  # False for inf and nan too
            return int(value)
        raise SettingsError(
            f"{name} must be an integer (a whole number: 2000, 2e3 or 2000.0); got {value!r}: "
            f"give --set {name}=... a whole number{where}"
        )
    if annotation == "tuple[int, ...]" and isinstance(value, (list, tuple)):
        floats = [v for v in value if isinstance(v, float)]
        if any(not v.is_integer() for v in floats):
            raise SettingsError(
                f"{name} must be integers (whole numbers: [64,64] or [64.0,6.4e1]); got "
                f"{list(value)!r}: give --set {name}=... whole numbers{where}"
            )
        return type(value)(int(v) if isinstance(v, float) else v for v in value)
    return value


def split_settings(
    settings: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``KEY=VALUE`` settings (``--set``) split into training settings (for
    :func:`training_profile`) and evaluation settings (the probe sizes of
    :class:`EvaluationSettings`, e.g. ``n_fit``), integer ones given as whole floats (``1e3``)
    taken as integers (:func:`whole_numbers`). A key of neither, or one with an option of its
    own (``n_bins``), or one of the scenario's, is a :class:`SettingsError` saying where it goes."""
    annotations = {
        f.name: f.type
        for part in (TrainingSettings, EvaluationSettings)
        for f in dataclasses.fields(part)
    }
    training_fields = [f.name for f in dataclasses.fields(TrainingSettings) if f.name != "profile"]
    evaluation_fields = [
        f.name for f in dataclasses.fields(EvaluationSettings) if f.name not in _OWN_OPTIONS
    ]
    scenario_fields = [f.name for f in dataclasses.fields(Scenario)]
    training: dict[str, Any] = {}
    evaluation: dict[str, Any] = {}
    for key, value in settings.items():
        if key in training_fields:
            training[key] = whole_numbers(
                key, value, annotations[key], "TrainingSettings or training_overrides"
            )
        elif key in evaluation_fields:
            evaluation[key] = whole_numbers(
                key, value, annotations[key], "EvaluationSettings or evaluation_overrides"
            )
        elif key in _OWN_OPTIONS:
            raise SettingsError(f"{key!r} has its own option: give {_OWN_OPTIONS[key]}")
        elif key in scenario_fields:
            # theory check sweeps its scenarios' seeds (--seeds) and sets the rest itself
            option = (
                "--seed (theory run) or --seeds (theory check)"
                if key == "seed"
                else (f"--{key.replace('_', '-')} (theory run)")
            )
            raise SettingsError(
                f"{key!r} is a setting of the scenario, not of its training: give {option}"
            )
        elif key == "profile":
            raise SettingsError("'profile' is chosen by --profile (quick or paper)")
        else:
            known = [*training_fields, *evaluation_fields]
            raise SettingsError(
                f"unknown setting {key!r}; expected a training setting ({', '.join(training_fields)}) "
                f"or a probe setting ({', '.join(evaluation_fields)}){did_you_mean(key, known)}"
            )
    return training, evaluation


def default_sweep(
    seeds: int | Sequence[int] = 2,
    latents: Sequence[str] = LATENT_MODES,
    kinds: Sequence[str] = SWEEP_KINDS,
    n_semantics: int = 10,
    n_modality: int = 5,
    change_prob: float = 0.75,
    perturbation_covariance: str = "semantics",
) -> list[Scenario]:
    """The paper's grid: selection prefixes {1}, {1,2}, ..., {1..n} with no perturbation, and
    perturbation prefixes {1}, ..., {1..n-1} of the fully selected text, for each latent mode
    (independent / causally dependent semantics) and seed (``seeds`` = a count or explicit seeds).
    """
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise SettingsError("the sweep needs at least one seed; got none")
    for values, allowed, what, argument in (
        (latents, LATENT_MODES, "latent mode", "latents"),
        (kinds, SWEEP_KINDS, "sweep kind", "kinds"),
    ):
        where = f"--{argument} ({argument}= in Python)"
        if not values:
            raise SettingsError(
                f"the sweep needs at least one {what}; expected some of {list(allowed)}: give "
                f"{where} e.g. {','.join(allowed)}"
            )
        for value in values:
            if value not in allowed:
                raise SettingsError(
                    f"unknown {what} {value!r} in {where}; expected some of {list(allowed)}"
                    f"{did_you_mean(value, allowed)}"
                )
    everything = tuple(range(1, n_semantics + 1))
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    if "selection" in kinds:
        shapes += [(everything[:k], ()) for k in range(1, n_semantics + 1)]
    if "perturbation" in kinds:
        shapes += [(everything, everything[:k]) for k in range(1, n_semantics)]
    return [
        Scenario(
            n_semantics=n_semantics,
            n_modality=n_modality,
            selected=selected,
            perturbed=perturbed,
            change_prob=change_prob,
            causal_dependence=mode == "dependent",
            seed=seed,
            perturbation_covariance=perturbation_covariance,
        )
        for seed in seed_list
        for mode in latents
        for selected, perturbed in shapes
    ]


__all__ = [
    "LATENT_MODES",
    "PERTURBATION_COVARIANCES",
    "PROFILES",
    "SWEEP_KINDS",
    "EvaluationSettings",
    "Scenario",
    "TrainingSettings",
    "default_sweep",
    "format_index_list",
    "parse_index_list",
    "split_settings",
    "training_profile",
    "whole_numbers",
]
