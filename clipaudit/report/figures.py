"""The report's figures, drawn on :class:`matplotlib.figure.Figure` objects (no pyplot, no global
backend switch) in the Okabe-Ito palette, which stays distinguishable under colour-vision
deficiency; written as PNG and SVG under ``figures/``.

File names are slugs of the figures' names; names that slug alike (or differ only in case) get a
hash suffix each, so no figure overwrites another, and no name leaves the folder.

Outlier labels in the coverage-against-F1 plots are placed by :func:`place_labels`, a
deterministic search over positions around each point (nearest first) that never lets two labels
overlap or leave the axes; its result is checked on the drawn figure, and a label that finds no
free place is listed under the figure instead.

Confusion matrices are drawn here for the zero-shot run as well (:func:`write_confusion`), which
records what each shows; a report copies those figures instead of drawing them again.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipaudit.text import inert_line, slug

# Okabe & Ito (2008), "Color Universal Design"
OKABE_ITO = {
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
    "black": "#000000",
}
MODEL_COLOURS = [OKABE_ITO[c] for c in ("blue", "orange", "bluish green", "reddish purple")] + [
    OKABE_ITO[c] for c in ("sky blue", "vermillion", "black", "yellow")
]
CATEGORY_COLOURS = {
    "common": OKABE_ITO["blue"],
    "under-captioned": OKABE_ITO["orange"],
    "nuisance": OKABE_ITO["bluish green"],
    "sensitive": OKABE_ITO["vermillion"],
    "invariant": OKABE_ITO["bluish green"],
    "perturbed": OKABE_ITO["orange"],
    "unselected": OKABE_ITO["reddish purple"],
}
OTHER_COLOURS = [OKABE_ITO[c] for c in ("sky blue", "reddish purple", "black", "yellow")]
SENSITIVE_SHADE = "#FBE3D6"  # a light tint of vermillion behind sensitive groups
# vermillion darkened for text: Okabe-Ito's is 3.9:1 on white, below WCAG AA's 4.5:1 for small text
SENSITIVE_TEXT = "#B34D00"
DPI = 110
MAX_STEM = 80


def category_colours(categories: Sequence[str]) -> dict[str, str]:
    colours, spare = {}, iter(OTHER_COLOURS * 4)
    for category in categories:
        colours[category] = CATEGORY_COLOURS.get(category) or next(spare)
    return colours


def model_colours(models: Sequence[str]) -> dict[str, str]:
    return {m: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, m in enumerate(models)}


# --------------------------------------------------------------------------- file names


def figure_stems(names: Sequence[str]) -> dict[str, str]:
    """A file stem for each figure name: its slug (at most 80 characters, no leading dot; a
    longer one keeps its start and its end, where a confusion matrix's group is), with
    ``-<hash>`` appended when two names would share a stem, also ignoring case (as a
    case-insensitive file system would) or when the slug was shortened."""
    base = {}
    for name in names:
        stem = slug(name).lstrip(".-") or "figure"
        if len(stem) > MAX_STEM:
            stem = f"{stem[: MAX_STEM - 30]}_{stem[-29:]}"
        base[name] = stem
    folded: dict[str, list[str]] = {}
    for name, stem in base.items():
        folded.setdefault(stem.lower(), []).append(name)
    stems = {}
    for name, stem in base.items():
        shortened = len(slug(name).lstrip(".-")) > MAX_STEM
        if len(folded[stem.lower()]) > 1 or shortened:
            digest = hashlib.blake2b(name.encode("utf-8"), digest_size=4).hexdigest()
            stem = f"{stem}-{digest}"
        stems[name] = stem
    return stems


def inside(folder: Path, path: Path) -> bool:
    return path.resolve().parent == folder.resolve()


def save(figure: Any, folder: Path, stem: str) -> dict[str, Path]:
    """Write ``folder/stem.png`` and ``folder/stem.svg`` atomically (text kept as text in the
    SVG, no timestamps, fixed ids: the same figure gives the same bytes)."""
    import matplotlib

    from clipaudit.errors import InputError
    from clipaudit.provenance import atomic_write_bytes

    paths = {fmt: folder / f"{stem}.{fmt}" for fmt in ("png", "svg")}
    for path in paths.values():
        if not inside(folder, path):
            raise InputError(f"figure file {path} would leave {folder}")
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "clipaudit"}):
        for fmt, path in paths.items():
            buffer = io.BytesIO()
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            figure.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
            atomic_write_bytes(path, buffer.getvalue())
            figure.set_layout_engine("none")  # laid out once: the SVG keeps the PNG's layout
    return paths


def new_figure(width: float, height: float) -> Any:
    """A figure with its own Agg canvas (text can be measured; nothing global changes) and
    constrained layout (legends placed "outside" get room of their own)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def freeze_layout(figure: Any) -> None:
    """Run the layout once and keep it, so that positions measured now stay true when saved."""
    figure.canvas.draw()
    figure.set_layout_engine("none")


def wrap_to_width(figure: Any, text: str, width: float, fontsize: float) -> str:
    """``text`` with its lines wrapped (at spaces, or inside a word longer than a line) so that
    none is wider than ``width`` pixels at ``fontsize`` on ``figure``: long corpus and model
    names would otherwise run into each other or off the figure."""
    import textwrap

    renderer = figure.canvas.get_renderer()
    probe = figure.text(0, 0, "", fontsize=fontsize)

    def fits(line: str) -> bool:
        probe.set_text(line)
        return probe.get_window_extent(renderer).width <= width

    lines = []
    for line in text.split("\n"):
        columns = len(line)
        wrapped = [line]
        while columns > 8 and not all(fits(part) for part in wrapped):
            columns -= max(1, columns // 12)
            wrapped = textwrap.wrap(line, columns, break_on_hyphens=False) or [line]
        lines += wrapped
    probe.remove()
    return "\n".join(lines)


def _title_within(axis: Any, text: str, fontsize: float, *, loc: str = "center") -> None:
    """Title ``axis`` with ``text`` wrapped to fit the figure (and, centred, the axes' own width,
    so that side-by-side panels' titles never meet), measured on the laid-out figure."""
    figure = axis.figure
    axis.set_title(text, fontsize=fontsize, loc=loc)
    figure.canvas.draw()  # the layout as it will be, this title's first line included
    frame = axis.get_window_extent()
    if loc == "left":
        room = figure.bbox.width - frame.x0
    else:
        centre = (frame.x0 + frame.x1) / 2
        room = min(2 * min(centre, figure.bbox.width - centre), frame.width + 16)
    axis.set_title(wrap_to_width(figure, text, room - 8, fontsize), fontsize=fontsize, loc=loc)


def _percent(value: float) -> str:
    """A decade of coverage as a share, written out as the page writes shares ("0.00001%", never
    "1e-05%"), whole percents plain ("1%", not "1.0%")."""
    from clipaudit.report.render import share

    if 100 * value >= 1:
        return f"{100 * value:.0f}%"
    return share(value)


def _share_ticks(
    low: float, high: float, n: float | None, step: int = 1
) -> list[tuple[float, str]]:
    """(position, label) of every ``step``-th whole decade of coverage in [low, high], labelled as
    shares, then 'none' where zero counts sit (0.5 / n) when that is in range."""
    import math

    decades = [
        t
        for t in range(math.floor(low), math.ceil(high) + 1)
        if low - 1e-9 <= t <= high + 1e-9 and t <= 0 and t % step == 0
    ]
    if not n or not low - 1e-9 <= math.log10(0.5 / n) <= high + 1e-9:
        return [(t, _percent(10.0**t)) for t in decades]
    zero = math.log10(0.5 / n)
    return [(t, _percent(10.0**t)) for t in decades if abs(t - zero) > 0.35] + [(zero, "none")]


def _log_axis(axis: Any, low: float, high: float, n: float | None) -> None:
    """x ticks at whole decades of coverage, labelled as shares; 'none' where zero counts sit."""
    ticks = _share_ticks(low, high, n)
    axis.set_xticks([t for t, _ in ticks], labels=[label for _, label in ticks])


def _spaced_share_ticks(
    axis: Any, low: float, high: float, n: float | None, fontsize: float = 8
) -> None:
    """The x ticks of :func:`_log_axis`, thinned to every second (third, ...) decade where the
    written-out shares of a web-scale corpus ("0.000001%") would run into each other at the
    axis's laid-out width, and without a decade whose label would meet 'none'. Call once the
    figure is laid out."""
    figure = axis.figure
    renderer = figure.canvas.get_renderer()
    probe = figure.text(0, 0, "", fontsize=fontsize)
    gap = 0.6 * fontsize * figure.dpi / 72.0  # more than a space between two labels

    def span(tick: tuple[float, str]) -> tuple[float, float]:
        probe.set_text(tick[1])
        width = probe.get_window_extent(renderer).width
        centre = axis.transData.transform((tick[0], 0))[0]
        return (centre - width / 2, centre + width / 2)

    def apart(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[1] + gap <= b[0] or b[1] + gap <= a[0]

    for step in range(1, 12):
        ticks = _share_ticks(low, high, n, step)
        none = [span(t) for t in ticks if t[1] == "none"]
        ticks = [t for t in ticks if t[1] == "none" or all(apart(span(t), z) for z in none)]
        spans = sorted(span(t) for t in ticks)
        if all(apart(a, b) for a, b in itertools.pairwise(spans)):
            break
    probe.remove()
    axis.set_xticks([t for t, _ in ticks], labels=[label for _, label in ticks])


# --------------------------------------------------------------------------- label placement

_DIRECTIONS = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
_RADII = [6, 12, 20, 30, 42, 56, 72, 90, 110]


def _overlap(
    a: Sequence[float], b: Sequence[float], pad: float = 0.0, pad_x: float | None = None
) -> bool:
    """Whether boxes ``a`` and ``b`` come closer than ``pad`` (``pad_x`` side by side)."""
    side = pad if pad_x is None else pad_x
    return not (
        a[2] + side <= b[0] or b[2] + side <= a[0] or a[3] + pad <= b[1] or b[3] + pad <= a[1]
    )


def boxes_overlap(boxes: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """Pairs of boxes ``(x0, y0, x1, y1)`` that overlap (the check of a layout)."""
    return [
        (i, j)
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if _overlap(boxes[i], boxes[j])
    ]


def place_labels(
    axes: Any,
    points: Sequence[tuple[float, float]],
    texts: Sequence[str],
    *,
    avoid: Sequence[tuple[float, float]] = (),
    fontsize: float = 8,
) -> dict[str, Any]:
    """Label ``points`` (data coordinates) with ``texts``, in the given order, each at the
    nearest free position around its point: inside the axes, clear of every placed label (by
    2 pixels, and side by side by a space's width, so that two labels never read as one name),
    preferring spots that cover none of the ``avoid`` points. Deterministic.

    Returns ``{"placed": [(text, artist)], "unplaced": [text]}``; the caller checks the drawn
    result with :func:`drawn_label_boxes`.
    """
    import numpy as np

    figure = axes.figure
    renderer = figure.canvas.get_renderer()
    frame = axes.get_window_extent(renderer)
    bounds = (frame.x0 + 2, frame.y0 + 2, frame.x1 - 2, frame.y1 - 2)
    pixels_per_point = figure.dpi / 72.0
    space = 0.5 * fontsize * pixels_per_point  # about a space's width at this size
    data = np.asarray(points, dtype=float).reshape(-1, 2)
    anchors = axes.transData.transform(data)
    obstacles = (
        axes.transData.transform(np.asarray(avoid, dtype=float).reshape(-1, 2))
        if len(avoid)
        else np.zeros((0, 2))
    )
    taken: list[tuple[float, float, float, float]] = []
    placed, unplaced = [], []
    for (px, py), point, text in zip(anchors, data, texts, strict=True):
        probe = axes.text(0, 0, text, fontsize=fontsize)
        extent = probe.get_window_extent(renderer)
        width, height = extent.width, extent.height
        probe.remove()
        best = None
        for radius in _RADII:
            for dx, dy in _DIRECTIONS:
                ox, oy = dx * radius, dy * radius * 0.8
                cx, cy = px + ox * pixels_per_point, py + oy * pixels_per_point
                x0 = cx if dx > 0 else (cx - width if dx < 0 else cx - width / 2)
                y0 = cy if dy > 0 else (cy - height if dy < 0 else cy - height / 2)
                box = (x0, y0, x0 + width, y0 + height)
                if not (
                    box[0] >= bounds[0]
                    and box[1] >= bounds[1]
                    and box[2] <= bounds[2]
                    and box[3] <= bounds[3]
                ):
                    continue
                if any(_overlap(box, other, pad=2, pad_x=space) for other in taken):
                    continue
                covered = int(
                    np.sum(
                        (obstacles[:, 0] >= box[0] - 3)
                        & (obstacles[:, 0] <= box[2] + 3)
                        & (obstacles[:, 1] >= box[1] - 3)
                        & (obstacles[:, 1] <= box[3] + 3)
                    )
                )
                if best is None or covered < best[0]:
                    best = (covered, ox, oy, dx, dy, box)
                if covered == 0:
                    break
            if best is not None and best[0] == 0:
                break
        if best is None:
            unplaced.append(text)
            continue
        _, ox, oy, dx, dy, box = best
        taken.append(box)
        artist = axes.annotate(
            text,
            xy=tuple(point),
            xytext=(ox, oy),
            textcoords="offset points",
            ha="left" if dx > 0 else ("right" if dx < 0 else "center"),
            va="bottom" if dy > 0 else ("top" if dy < 0 else "center"),
            fontsize=fontsize,
            arrowprops={
                "arrowstyle": "-",
                "color": "#555555",
                "lw": 0.6,
                "shrinkA": 0,
                "shrinkB": 3,
            }
            if max(abs(ox), abs(oy)) > 8
            else None,
            annotation_clip=False,
        )
        placed.append((text, artist))
    return {"placed": placed, "unplaced": unplaced}


def drawn_label_boxes(figure: Any, placed: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Each placed label's box on the drawn figure, in PNG pixels (origin bottom left)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = []
    from matplotlib.text import Text

    for text, artist in placed:
        extent = Text.get_window_extent(artist, renderer)  # the text alone, not its leader line
        boxes.append(
            {
                "text": text,
                "box": [round(float(v), 2) for v in (extent.x0, extent.y0, extent.x1, extent.y1)],
            }
        )
    return boxes


# --------------------------------------------------------------------------- the figures


def _group_ticks(axis: Any, groups: Sequence[str], sensitive: set[str]) -> None:
    labels = [f"{g} (sensitive)" if g in sensitive else g for g in groups]
    axis.set_yticks(range(len(groups)), labels=labels, fontsize=8)
    for tick, group in zip(axis.get_yticklabels(), groups, strict=True):
        if group in sensitive:
            tick.set_color(SENSITIVE_TEXT)
    axis.set_ylim(len(groups) - 0.5, -0.5)


def _category_rules(axis: Any, groups: Sequence[str], category_of: dict[str, str]) -> None:
    """Thin lines between categories (groups are sorted by category)."""
    for index in range(1, len(groups)):
        if category_of.get(groups[index]) != category_of.get(groups[index - 1]):
            axis.axhline(index - 0.5, color="#888888", linewidth=0.7)


def _sensitive_bands(axis: Any, groups: Sequence[str], sensitive: set[str]) -> None:
    for index, group in enumerate(groups):
        if group in sensitive:
            axis.axhspan(index - 0.5, index + 0.5, color=SENSITIVE_SHADE, zorder=0, linewidth=0)


def _legend_below(figure: Any, handles: Sequence[Any], columns: int) -> None:
    """One legend under the axes (constrained layout makes room for it, so it never overlaps),
    as wide as the figure at most: long labels (model names) are wrapped, and the legend takes
    fewer columns, until it fits."""
    renderer = figure.canvas.get_renderer()
    width = figure.bbox.width - 8
    for handle in handles:
        handle.set_label(wrap_to_width(figure, handle.get_label(), width * 0.45, 8))
    for ncol in range(min(len(handles), columns), 0, -1):
        legend = figure.legend(
            handles=handles, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False
        )
        if ncol == 1 or legend.get_window_extent(renderer).width <= width:
            return
        legend.remove()


def coverage_by_group(
    coverage: Any,
    corpora: Sequence[dict[str, Any]],
    groups: Sequence[str],
    category_of: dict[str, str],
    sensitive: set[str],
    categories: Sequence[str],
) -> Any:
    """Strips: each concept's caption coverage (log scale), one row per group in the paper's
    order, one panel per corpus; hollow markers are concepts no caption mentions; a black bar
    marks each group's median."""
    import numpy as np
    from matplotlib.lines import Line2D

    colours = category_colours(categories)
    n_panels = len(corpora)
    figure = new_figure(max(7.6, 2.4 + 3.4 * n_panels), 1.5 + 0.3 * len(groups))
    axes_list = figure.subplots(1, n_panels, sharey=True, squeeze=False)[0]
    limits = []
    for axis, corpus in zip(axes_list, corpora, strict=True):
        part = coverage[coverage["corpus"] == corpus["label"]]
        xs = part["log10_coverage"].to_numpy(dtype=float)
        finite = xs[np.isfinite(xs)]
        low = float(finite.min()) - 0.25 if len(finite) else -4
        high = max(float(finite.max()) + 0.25 if len(finite) else 0, low + 1)
        high = min(high, 0.1)
        limits.append((low, high))
        _sensitive_bands(axis, groups, sensitive)
        for row, group in enumerate(groups):
            members = part[part["group"] == group]
            if members.empty:
                continue
            values = members["log10_coverage"].to_numpy(dtype=float)
            jitter = ((np.arange(len(values)) * 0.618034) % 1 - 0.5) * 0.5
            zero = members["coverage"].to_numpy(dtype=float) == 0
            colour = colours[category_of.get(group, "")] if group in category_of else "#777777"
            axis.scatter(values[~zero], row + jitter[~zero], s=16, color=colour, alpha=0.85, lw=0)
            axis.scatter(
                values[zero], row + jitter[zero], s=16, facecolors="none", edgecolors=colour, lw=0.9
            )
            axis.plot([np.median(values)] * 2, [row - 0.32, row + 0.32], color="black", lw=1.6)
        _category_rules(axis, groups, category_of)
        axis.set_xlim(low, high)
        _log_axis(axis, low, high, corpus.get("n_captions"))
        axis.tick_params(axis="x", labelsize=8)
        axis.set_title(corpus["label"], fontsize=9)  # wrapped to its panel once laid out
        axis.set_xlabel("caption coverage (share of captions, log scale)", fontsize=8)
        axis.grid(axis="x", color="#dddddd", linewidth=0.6)
        axis.set_axisbelow(True)
    _group_ticks(axes_list[0], groups, sensitive)
    handles = [
        Line2D([], [], marker="o", ls="", color=colours[c], label=c)
        for c in categories
        if c in colours
    ]
    handles += [
        Line2D([], [], marker="o", ls="", mfc="none", mec="#444444", label="never captioned"),
        Line2D([], [], color="black", lw=1.6, label="group median"),
    ]
    _legend_below(figure, handles, columns=4)
    for axis, corpus in zip(axes_list, corpora, strict=True):  # long names would run together
        _title_within(axis, corpus["label"], 9)
    for axis, corpus, (low, high) in zip(axes_list, corpora, limits, strict=True):
        _spaced_share_ticks(axis, low, high, corpus.get("n_captions"))
    return figure


def macro_f1_by_group(
    awareness_groups: Any,
    models: Sequence[str],
    groups: Sequence[str],
    category_of: dict[str, str],
    sensitive: set[str],
) -> Any:
    """Horizontal bars: each model's macro-F1 per group (paper order), with chance (the
    macro-F1 of a uniform guess among the concepts classified) marked; sensitive groups are
    shaded, their awareness being a risk."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    colours = model_colours(models)
    scored = set(awareness_groups["group"])
    groups = [g for g in groups if g in scored]  # groups without images are listed as mismatches
    figure = new_figure(7.6, 1.5 + 0.22 * len(groups) * max(1.4, len(models) * 0.75))
    axis = figure.add_subplot()
    _sensitive_bands(axis, groups, sensitive)
    height = 0.8 / max(len(models), 1)
    for k, model in enumerate(models):
        part = awareness_groups[awareness_groups["model"] == model].set_index("group")
        rows = [i for i, g in enumerate(groups) if g in part.index]
        values = [float(part.loc[groups[i], "macro_f1"]) for i in rows]
        offsets = [i - 0.4 + height * (k + 0.5) for i in rows]
        axis.barh(offsets, values, height=height * 0.92, color=colours[model], label=model)
        for i in rows:
            chance = float(part.loc[groups[i], "chance"])
            axis.plot(
                [chance, chance], [i - 0.42, i + 0.42], color="black", lw=1.0, ls=(0, (2, 1.5))
            )
    _category_rules(axis, groups, category_of)
    _group_ticks(axis, groups, sensitive)
    axis.set_xlim(0, 1.0)
    axis.set_xlabel("zero-shot macro-F1", fontsize=8)
    axis.tick_params(axis="x", labelsize=8)
    axis.grid(axis="x", color="#dddddd", linewidth=0.6)
    axis.set_axisbelow(True)
    handles = [Patch(color=colours[m], label=m) for m in models]
    handles.append(Line2D([], [], color="black", lw=1.0, ls=(0, (2, 1.5)), label="chance"))
    if sensitive & set(groups):
        handles.append(Patch(color=SENSITIVE_SHADE, label="sensitive: awareness is a risk"))
    _legend_below(figure, handles, columns=4)
    return figure


def models_side_by_side(
    awareness_groups: Any, models: Sequence[str], groups: Sequence[str], sensitive: set[str]
) -> Any:
    """Groups x models heat map of macro-F1 (cividis, readable without colour vision), values
    written in."""
    import numpy as np

    present = [g for g in groups if g in set(awareness_groups["group"])]
    grid = np.full((len(present), len(models)), np.nan)
    for j, model in enumerate(models):
        part = awareness_groups[awareness_groups["model"] == model].set_index("group")
        for i, group in enumerate(present):
            if group in part.index:
                grid[i, j] = float(part.loc[group, "macro_f1"])
    figure = new_figure(3.4 + 1.2 * len(models), 1.6 + 0.3 * len(present))
    axis = figure.add_subplot()
    image = axis.imshow(grid, cmap="cividis", vmin=0, vmax=1, aspect="auto")
    for i in range(len(present)):
        for j in range(len(models)):
            if np.isfinite(grid[i, j]):
                axis.text(
                    j,
                    i,
                    f"{grid[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if grid[i, j] > 0.55 else "white",
                )
    axis.set_xticks(range(len(models)), labels=models, rotation=20, ha="right", fontsize=8)
    _group_ticks(axis, present, sensitive)
    colourbar = figure.colorbar(image, ax=axis, shrink=0.8)
    colourbar.set_label("macro-F1", fontsize=8)
    colourbar.ax.tick_params(labelsize=7)
    return figure


def coverage_against_f1(
    part: Any,
    fitted: dict[str, Any],
    outliers: Sequence[dict[str, Any]],
    categories: Sequence[str],
    n_captions: float | None,
    title: str,
) -> tuple[Any, dict[str, Any]]:
    """Each concept's F1 against its log coverage, coloured by category (sensitive concepts as
    diamonds), the log-linear fit, and the outliers ringed and labelled (never overlapping)."""
    import numpy as np
    from matplotlib.lines import Line2D

    colours = category_colours(categories)
    figure = new_figure(7.6, 5.4)
    axis = figure.add_subplot()
    x = part["log10_coverage"].to_numpy(dtype=float)
    y = part["f1"].to_numpy(dtype=float)
    finite = np.isfinite(x)
    low = float(x[finite].min()) - 0.3 if finite.any() else -4
    high = min(max(float(x[finite].max()) + 0.3 if finite.any() else 0, low + 1), 0.15)
    axis.set_xlim(low, high)
    axis.set_ylim(-0.06, 1.08)
    for category in categories:
        for sensitive, marker in ((False, "o"), (True, "D")):
            chosen = (part["category"] == category).to_numpy() & (
                part["sensitive"].to_numpy(dtype=bool) == sensitive
            )
            if chosen.any():
                axis.scatter(
                    x[chosen],
                    y[chosen],
                    s=26 if not sensitive else 22,
                    marker=marker,
                    color=colours[category],
                    alpha=0.85,
                    lw=0,
                    zorder=3,
                )
    slope, intercept = fitted.get("slope"), fitted.get("intercept")
    if slope is not None and intercept is not None and np.isfinite(slope):
        line_x = np.linspace(low, high, 50)
        axis.plot(line_x, intercept + slope * line_x, color="black", lw=1.1, zorder=2)
    ringed = [(o["log10_coverage"], o["f1"]) for o in outliers]
    if ringed:
        rx, ry = zip(*ringed, strict=True)
        axis.scatter(rx, ry, s=90, facecolors="none", edgecolors="black", lw=1.0, zorder=4)
    _log_axis(axis, low, high, n_captions)
    axis.tick_params(labelsize=8)
    axis.set_xlabel("caption coverage (share of captions, log scale)", fontsize=9)
    axis.set_ylabel("zero-shot F1", fontsize=9)
    axis.grid(color="#e5e5e5", linewidth=0.6)
    axis.set_axisbelow(True)
    handles = [
        Line2D([], [], marker="o", ls="", color=colours[c], label=c)
        for c in categories
        if (part["category"] == c).any()
    ]
    if (part["sensitive"] & (part["category"] != "sensitive")).any():
        handles.append(Line2D([], [], marker="D", ls="", color="#555555", label="sensitive group"))
    handles.append(Line2D([], [], color="black", lw=1.1, label="log-linear fit"))
    if ringed:
        handles.append(
            Line2D([], [], marker="o", ls="", mfc="none", mec="black", ms=9, label="outlier")
        )
    _legend_below(figure, handles, columns=6)
    _title_within(axis, title, 9, loc="left")
    freeze_layout(figure)
    _spaced_share_ticks(axis, low, high, n_captions)

    def strength(outlier: dict[str, Any]) -> float:  # None: infinite (the rest on a line)
        value = outlier["studentized_residual"]
        return float("inf") if value is None else abs(value)

    order = sorted(
        range(len(outliers)), key=lambda i: (-strength(outliers[i]), outliers[i]["name"])
    )
    layout = place_labels(
        axis,
        [(outliers[i]["log10_coverage"], outliers[i]["f1"]) for i in order],
        [outliers[i]["name"] for i in order],
        avoid=list(zip(x[finite], y[finite], strict=True)),
    )
    boxes = drawn_label_boxes(figure, layout["placed"])
    clashes = boxes_overlap([b["box"] for b in boxes])
    dropped = sorted({j for _, j in clashes})
    for j in reversed(dropped):  # cannot happen by construction; never leave an overlap drawn
        layout["placed"][j][1].remove()
        layout["unplaced"].append(boxes[j]["text"])
        del boxes[j]
    return figure, {"labels": boxes, "unplaced": layout["unplaced"]}


# --------------------------------------------------------------------------- confusion matrices

# Drawn here only. A zero-shot run draws each of its matrices as it finishes
# (``confusion/<model>/<group>.png|svg``) and records what each shows (:func:`confusion_record`);
# a report copies the figures whose record is of the matrix and title it shows and whose files
# are those recorded (:func:`recorded_confusion`), and draws only the others.

# the drawing's version, part of a figure's identity: bumped when :func:`confusion` draws
# differently, so that figures recorded before are drawn again, never shown beside new ones
CONFUSION_STYLE = 2
# characters of a concept's name on an axis: a longer one keeps its start and end (the figure's
# table, beside it in the run and the report, holds it whole)
CONFUSION_LABEL = 24


def confusion_title(model: str, group: str, macro_f1: float | None) -> str:
    """The title of a model's confusion matrix on a group, the same wherever it is drawn."""
    import math

    shown = macro_f1 is not None and math.isfinite(macro_f1)
    return f"{model} / {group}" + (f": macro-F1 {macro_f1:.2f}" if shown else "")


def confusion_identity(frame: Any, title: str) -> str:
    """A hash of what a confusion figure shows: its title, labels and counts, and the drawing's
    version. Two figures of one identity are the same picture."""
    import json

    shown = {
        "style": CONFUSION_STYLE,
        "title": title,
        "true": [str(i) for i in frame.index],
        "predicted": [str(c) for c in frame.columns],
        "counts": [[int(v) for v in row] for row in frame.to_numpy()],
    }
    text = json.dumps(shown, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_confusion(frame: Any, title: str, folder: Path, stem: str) -> dict[str, Path]:
    """Draw a confusion matrix and write it as ``folder/stem.png`` and ``.svg``. Names are drawn
    as written: "$" in a model's or a concept's name starts no mathtext (which fails on an
    unknown command and renders a known one as something else)."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        return save(confusion(frame, title), folder, stem)


def confusion_record(frame: Any, title: str, written: dict[str, Path], root: Path) -> dict:
    """What a run records of a confusion figure it wrote under ``root``: its identity, and each
    file's path (relative to ``root``) and SHA-256, so that a copy swapped or left over from
    other data is told from it."""
    record: dict[str, Any] = {"identity": confusion_identity(frame, title)}
    for fmt, path in written.items():
        data = path.read_bytes()
        record[fmt] = {
            "path": path.relative_to(root).as_posix(),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    return record


def recorded_confusion(
    records: Sequence[Any], root: Path, frame: Any, title: str
) -> dict[str, bytes] | None:
    """The PNG and SVG bytes of the figure a run recorded (``records`` as
    :func:`confusion_record` makes them, read from its manifest: untrusted) with the identity
    of ``frame`` drawn with ``title``, when both files are inside ``root`` and are those
    recorded; else None (the figure is to be drawn)."""
    identity = confusion_identity(frame, title)
    base = root.resolve()
    for record in records:
        if not isinstance(record, dict) or record.get("identity") != identity:
            continue
        files = {}
        for fmt in ("png", "svg"):
            entry = record.get(fmt)
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                break
            path = (base / entry["path"]).resolve()
            if not path.is_relative_to(base) or not path.is_file():
                break
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                break
            files[fmt] = data
        else:
            return files
    return None


def copy_figure(files: dict[str, bytes], folder: Path, stem: str) -> dict[str, Path]:
    """Write figure files already drawn (format -> bytes) as ``folder/stem.<format>``."""
    from clipaudit.errors import InputError
    from clipaudit.provenance import atomic_write_bytes

    paths = {fmt: folder / f"{stem}.{fmt}" for fmt in files}
    for fmt, path in paths.items():
        if not inside(folder, path):
            raise InputError(f"figure file {path} would leave {folder}")
        atomic_write_bytes(path, files[fmt])
    return paths


def png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height in pixels (its header's, the first chunk's)."""
    import struct

    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _short_label(name: str) -> str:
    name = inert_line(name)  # a control character has no glyph
    if len(name) <= CONFUSION_LABEL:
        return name
    keep = (CONFUSION_LABEL - 1) // 2
    return f"{name[:keep]}…{name[-keep:]}"


def _ink_on(rgba: Sequence[float]) -> str:
    """Black or white, whichever is the more legible on a cell of colour ``rgba`` (WCAG 2's
    contrast ratio: one of them always reaches 4.5:1)."""

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgba[:3])
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "black" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "white"


def confusion(frame: Any, title: str) -> Any:
    """A confusion matrix: colour is the row share (recall), numbers are counts."""
    import matplotlib
    import numpy as np

    counts = frame.to_numpy()
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    n_rows, n_cols = counts.shape
    figure = new_figure(max(3.6, 0.45 * n_cols + 2.4), max(3.0, 0.4 * n_rows + 2.0))
    axis = figure.add_subplot()
    colours = matplotlib.colormaps["Blues"]
    axis.imshow(shares, cmap=colours, vmin=0, vmax=1, aspect="auto")
    axis.set_xticks(
        range(n_cols),
        labels=[_short_label(str(c)) for c in frame.columns],
        rotation=40,
        ha="right",
        fontsize=7,
    )
    axis.set_yticks(range(n_rows), labels=[_short_label(str(i)) for i in frame.index], fontsize=7)
    axis.set_xlabel("predicted", fontsize=8)
    axis.set_ylabel("true", fontsize=8)
    for row in range(n_rows):
        for col in range(n_cols):
            if counts[row, col]:
                axis.text(
                    col,
                    row,
                    str(int(counts[row, col])),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color=_ink_on(colours(shares[row, col])),
                )
    _title_within(axis, inert_line(title), 8)
    return figure
