"""Figures of a theory run: R^2 heat maps and coverage against awareness.

Both read the run's tables (plain DataFrames), never the models, so they can be redrawn from a
finished run folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipaudit.provenance import atomic_write_bytes
from clipaudit.theory.config import Scenario

ENCODER_LABELS = {"x": "image encoder f_x", "t": "text encoder f_t"}


def _variable_order(variables: Sequence[str]) -> list[str]:
    """s1..sN, then s~i, then m_x, m_t: the reading order of the paper's figures."""

    def key(name: str) -> tuple[int, int]:
        if name.startswith("s~"):
            return (1, int(name[2:]))
        if name.startswith("s"):
            return (0, int(name[1:]))
        return (2, 0 if name == "m_x" else 1)

    return sorted(set(variables), key=key)


def _save(figure: Any, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_r2_heatmaps(r2: Any, scenarios: Sequence[Scenario], out_dir: Path) -> list[Path]:
    """One PNG per encoder (``r2_x.png``, ``r2_t.png``): variables x configurations, linear and
    nonlinear R^2 side by side, seeds averaged; cells the theory predicts identified are outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    families = list(dict.fromkeys(s.family for s in scenarios))
    family_of = {s.name: s.family for s in scenarios}
    table = r2.assign(family=r2["config"].map(family_of))
    variables = _variable_order(table["variable"])
    paths = []
    for encoder in ("x", "t"):
        rows = table[table["encoder"] == encoder]
        means = rows.groupby(["variable", "family"])[["r2_linear", "r2_nonlinear"]].mean()
        predicted = rows.groupby(["variable", "family"])["predicted_identified"].any()
        width = max(6.0, 0.32 * len(families) * 2 + 3)
        figure, axes = plt.subplots(
            1, 2, figsize=(width, 0.3 * len(variables) + 2.5), sharey=True, squeeze=False
        )
        for axis, column, title in zip(
            axes[0], ("r2_linear", "r2_nonlinear"), ("linear R²", "nonlinear R²"), strict=True
        ):
            grid = np.full((len(variables), len(families)), np.nan)
            for (variable, family), value in means[column].items():
                grid[variables.index(variable), families.index(family)] = value
            image = axis.imshow(np.clip(grid, 0, 1), vmin=0, vmax=1, cmap="viridis", aspect="auto")
            for (variable, family), flag in predicted.items():
                if flag:
                    axis.add_patch(
                        plt.Rectangle(
                            (families.index(family) - 0.5, variables.index(variable) - 0.5),
                            1,
                            1,
                            fill=False,
                            edgecolor="white",
                            linewidth=1.2,
                        )
                    )
            axis.set_xticks(range(len(families)), families, rotation=90, fontsize=7)
            axis.set_yticks(range(len(variables)), variables, fontsize=8)
            axis.set_title(f"{ENCODER_LABELS[encoder]}: {title}", fontsize=9)
        figure.colorbar(
            image, ax=axes[0].tolist(), shrink=0.8, label="R² (outlined: predicted identified)"
        )
        paths.append(_save(figure, out_dir / f"r2_{encoder}.png"))
    return paths


def plot_coverage_awareness(coverage_groups: Any, awareness_groups: Any, out_dir: Path) -> Path:
    """``coverage_awareness.png``: each semantic of each configuration as a point, its caption
    coverage (share of texts carrying it unperturbed) against its awareness (zero-shot macro-F1),
    coloured by role; the dashed line is chance (1 / number of bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    joined = coverage_groups.merge(
        awareness_groups, on=["model", "group", "category"], suffixes=("_coverage", "")
    )
    figure, axis = plt.subplots(figsize=(5.5, 4.2))
    colours = {"invariant": "tab:green", "perturbed": "tab:orange", "unselected": "tab:gray"}
    for category, points in joined.groupby("category"):
        axis.scatter(
            points["rate"],
            points["macro_f1"],
            s=14,
            alpha=0.6,
            color=colours.get(category, "tab:blue"),
            label=category,
        )
    chance = 1.0 / float(joined["n_concepts"].iloc[0])
    axis.axhline(chance, color="black", linestyle="--", linewidth=0.8, label="chance")
    axis.set_xlabel("caption coverage (texts carrying s_i unperturbed)")
    axis.set_ylabel("awareness (zero-shot macro-F1 over bins)")
    axis.set_xlim(-0.03, 1.03)
    axis.set_ylim(0, 1.03)
    axis.legend(fontsize=8, loc="upper left")
    return _save(figure, out_dir / "coverage_awareness.png")
