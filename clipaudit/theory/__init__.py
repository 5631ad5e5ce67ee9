"""The synthetic latent-variable experiment of Cai et al. (2025): does contrastive learning identify
exactly the semantics that captions carry unperturbed? Read with the OpenCLIP audit's own metrics.

- :mod:`.config`: scenarios, training profiles, evaluation settings (validated before training);
- :mod:`.generative`: latents, selection and perturbation, invertible mixings;
- :mod:`.stacked` and :mod:`.training`: many scenarios trained as one batched model;
- :mod:`.evaluation`: R^2 probes, the theory's population ceilings, audit-style tables;
- :mod:`.sweep`: run folders, the check and its verdict; :mod:`.figures`: heat maps and scatter.
"""

from clipaudit.theory.config import (
    PROFILES,
    EvaluationSettings,
    Scenario,
    TrainingSettings,
    default_sweep,
    training_profile,
)
from clipaudit.theory.sweep import (
    SweepResult,
    check_markdown,
    run_check,
    run_scenario,
    run_sweep,
    summarise,
)

__all__ = [
    "PROFILES",
    "EvaluationSettings",
    "Scenario",
    "SweepResult",
    "TrainingSettings",
    "check_markdown",
    "default_sweep",
    "run_check",
    "run_scenario",
    "run_sweep",
    "summarise",
    "training_profile",
]
