"""The joined audit report: statistics against scipy on hand-built cases, figures' file names and
label layout, and reports built end to end from real coverage, zero-shot and theory runs (values
recomputed here from the input tables), the notebook in a real kernel, and the command line."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from html import escape as html_escape
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats as scipy_stats

from clipaudit.errors import InputError, RunFolderError, SettingsError
from clipaudit.report import Report, build_report, figures, stats
from clipaudit.runs import load_run

REPO = Path(__file__).resolve().parent.parent
N_BOOTSTRAP = 300

# --------------------------------------------------------------------------- statistics

# six concepts of a corpus of 1000 captions: chosen counts (one never captioned) and F1
COUNTS = np.array([0, 3, 12, 40, 150, 600])
F1 = np.array([0.10, 0.35, 0.30, 0.60, 0.75, 0.90])
N = 1000


def test_log_coverage_handles_zero_counts_explicitly():
    x = stats.log_coverage(COUNTS, N)
    assert x[0] == pytest.approx(np.log10(0.5 / 1000))
    assert x[3] == pytest.approx(np.log10(40.5 / 1000))
    assert np.all(np.isfinite(x)) and np.all(np.diff(x) > 0)


def test_statistics_match_scipy_on_a_hand_built_case():
    x = np.log10((COUNTS + 0.5) / N)  # the documented rule, computed here
    result = stats.correlate(x, F1, seed=7, n_bootstrap=1000)
    assert result["n"] == 6
    rho, rho_p = scipy_stats.spearmanr(x, F1)
    tau, tau_p = scipy_stats.kendalltau(x, F1)
    assert result["spearman"]["value"] == pytest.approx(rho)
    assert result["spearman"]["p_value"] == pytest.approx(rho_p)
    assert result["kendall"]["value"] == pytest.approx(tau)
    assert result["kendall"]["p_value"] == pytest.approx(tau_p)
    # by hand: ranks of F1 are 1 3 2 4 5 6 against 1..6: one swapped pair
    assert rho == pytest.approx(1 - 6 * 2 / (6 * 35))
    assert tau == pytest.approx((14 - 1) / 15)
    slope, intercept = np.polyfit(x, F1, 1)
    fit = result["fit"]
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(intercept)
    residual = F1 - (intercept + slope * x)
    stderr = np.sqrt(residual @ residual / 4 / ((x - x.mean()) @ (x - x.mean())))
    half = scipy_stats.t.ppf(0.975, 4) * stderr
    assert (fit["ci_low"], fit["ci_high"]) == pytest.approx((slope - half, slope + half))
    for name in ("spearman", "kendall"):
        interval = result[name]
        assert interval["ci_low"] <= interval["value"] <= interval["ci_high"]
        assert interval["ci_high"] - interval["ci_low"] > 0.05
        assert interval["reason"] is None and interval["n_valid"] > 500


def test_vectorised_kendall_equals_scipys_tau_b_with_ties():
    rng = np.random.default_rng(5)
    for n in (2, 9, 60):
        index = rng.integers(0, n, size=(30, n))  # bootstrap-like: repeated points
        xs = rng.integers(0, 4, n).astype(float)[index]
        ys = np.round(rng.normal(size=n), 1)[index]
        expected = [scipy_stats.kendalltau(a, b).statistic for a, b in zip(xs, ys, strict=True)]
        np.testing.assert_allclose(stats.kendall_tau_b(xs, ys), expected, atol=1e-12)


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-4, -0.5, 40))
    y = np.clip(0.3 + 0.15 * (x + 4) + rng.normal(0, 0.2, 40), 0, 1)
    first = stats.correlate(x, y, seed=3, n_bootstrap=400)
    again = stats.correlate(x, y, seed=3, n_bootstrap=400)
    other = stats.correlate(x, y, seed=4, n_bootstrap=400)
    for name in ("spearman", "kendall"):
        interval = (first[name]["ci_low"], first[name]["ci_high"])
        assert interval == (again[name]["ci_low"], again[name]["ci_high"])
        assert interval != (other[name]["ci_low"], other[name]["ci_high"])
        assert interval[0] <= first[name]["value"] <= interval[1]
    # a pair's stream depends on its names, not on which pairs come before it
    assert stats.stream_seed(0, "a", "m") == stats.stream_seed(0, "a", "m")
    assert stats.stream_seed(0, "a", "m") != stats.stream_seed(0, "b", "m")


def _loo_studentized(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Externally studentised residuals the long way: refit without each point and divide its
    prediction error by that prediction's standard error."""
    out = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        line = scipy_stats.linregress(x[keep], y[keep])
        residual = y[keep] - (line.intercept + line.slope * x[keep])
        s = np.sqrt(residual @ residual / (keep.sum() - 2))
        dx = x[keep] - x[keep].mean()
        se = s * np.sqrt(1 + 1 / keep.sum() + (x[i] - x[keep].mean()) ** 2 / (dx @ dx))
        out.append((y[i] - (line.intercept + line.slope * x[i])) / se)
    return np.array(out)


def test_planted_outliers_are_the_ones_found():
    x = np.linspace(-3.5, -0.5, 12)
    wiggle = np.array([0.02, -0.03, 0.01, 0.03, -0.02, 0.0, -0.01, 0.02, -0.03, 0.01, 0.0, -0.02])
    y = 0.2 + 0.2 * (x + 3.5) + wiggle
    y[1] = 0.97  # rarely captioned, yet the model knows it
    y[10] = 0.05  # often captioned, yet the model does not
    found = stats.flag_outliers(x, y)
    assert found["studentized"] == pytest.approx(_loo_studentized(x, y))
    assert found["direction"][1] == stats.RARELY_CAPTIONED_YET_KNOWN
    assert found["direction"][10] == stats.OFTEN_CAPTIONED_YET_UNKNOWN
    assert [i for i, d in enumerate(found["direction"]) if d] == [1, 10]
    # far below the fit but never captioned is no surprise: not in the auditor's list
    y2 = y.copy()
    y2[1], y2[10] = 0.2 + 0.2 * (x[1] + 3.5), 0.2 + 0.2 * (x[10] + 3.5)
    y2[0] = -0.6
    assert stats.flag_outliers(x, y2)["direction"][0] == stats.BELOW_THE_FIT


def test_far_above_the_fit_is_no_knowledge_at_a_trivial_classifiers_f1():
    """A model at chance names one concept for every image of its group: recall 1, F1 2p/(1+p),
    far above a flat fit. Rarely captioned, it was listed "rarely captioned yet known"."""
    from clipaudit.report.analysis import _trivial_f1

    x = np.linspace(-3.5, -0.5, 12)
    y = np.full(12, 0.02) + np.array([0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1]) * 0.005
    y[1] = 2 * 0.1 / 1.1  # p = 0.1: one concept in ten, named for all its group's images
    floor = np.full(12, 2 * 0.1 / 1.1)
    assert stats.flag_outliers(x, y)["direction"][1] == stats.RARELY_CAPTIONED_YET_KNOWN
    assert stats.flag_outliers(x, y, known_above=floor)["direction"][1] == stats.ABOVE_THE_FIT
    y[1] = 0.5  # well past it: known
    found = stats.flag_outliers(x, y, known_above=floor)
    assert found["direction"][1] == stats.RARELY_CAPTIONED_YET_KNOWN
    # the floor per concept: its share of its group's images; a group's: its chance
    part = pd.DataFrame({"group": ["A", "A", "B"], "support": [3, 7, 5]})
    groups = pd.DataFrame({"group": ["A", "B"], "n_images": [10, 20], "chance": [0.5, 0.25]})
    expected = [2 * 0.3 / 1.3, 2 * 0.7 / 1.7, 2 * 0.25 / 1.25]
    assert _trivial_f1(part, groups, "concept") == pytest.approx(expected)
    assert _trivial_f1(groups, groups, "group") == pytest.approx([0.5, 0.25])
    assert np.isnan(_trivial_f1(part.drop(columns="support"), groups, "concept")).all()


def test_a_never_captioned_concept_is_no_surprise_when_most_are_never_captioned():
    """Most concepts never captioned: the median is the lowest coverage, yet a concept at it,
    far below the fit, is not "often captioned yet unknown"."""
    x = np.array([-7.0] * 7 + [-3.0, -2.5, -2.0, -1.5, -1.0])
    y = np.array([0.3, 0.32, 0.29, 0.31, 0.3, 0.33, -0.9, 0.5, 0.55, 0.6, 0.65, 0.7])
    found = stats.flag_outliers(x, y)
    assert np.median(x) == x.min() and found["studentized"][6] < -stats.OUTLIER_THRESHOLD
    assert found["direction"][6] == stats.BELOW_THE_FIT
    assert stats.OFTEN_CAPTIONED_YET_UNKNOWN not in list(found["direction"])


@pytest.mark.parametrize(
    ("x", "y", "reason"),
    [
        ([1.0, 2.0], [0.1, 0.2], "only 2 points, fewer than the 3 needed"),
        ([], [], "0 points, fewer than the 3 needed"),
        ([-2.0, -2.0, -2.0, -2.0], [0.1, 0.5, 0.2, 0.9], "coverage is the same for every point"),
        ([-3.0, -2.0, -1.0, -0.5], [0.4, 0.4, 0.4, 0.4], "F1 is the same for every point"),
    ],
)
def test_small_or_constant_samples_give_nan_with_a_reason(x, y, reason):
    result = stats.correlate(x, y, seed=0, n_bootstrap=100)
    for name in ("spearman", "kendall"):
        assert np.isnan(result[name]["value"]) and result[name]["reason"] == reason
    if reason.startswith("F1"):  # the fit exists: a flat line
        assert result["fit"]["slope"] == 0.0 and result["fit"]["reason"]
    else:
        assert np.isnan(result["fit"]["slope"]) and result["fit"]["reason"] == reason
    assert stats.flag_outliers(x, y)["reason"]


def test_too_few_points_are_said_in_words_with_their_numbers():
    """The reasons read "n = 5 < 6 points", which report.md (escaping "<" as web text must be)
    showed as "n = 5 &lt; 6 points" to a reader using cat or less."""
    few = stats.MIN_OUTLIER_POINTS - 1
    x, y = np.arange(few, dtype=float), np.linspace(0.1, 0.9, few)
    reason = stats.flag_outliers(x, y)["reason"]
    assert reason == (
        f"only {few} points, fewer than the {stats.MIN_OUTLIER_POINTS} needed: "
        "no outliers are judged"
    )
    one = stats.correlate([0.5], [0.5], n_bootstrap=0)
    assert one["spearman"]["reason"] == f"only 1 point, fewer than the {stats.MIN_POINTS} needed"
    assert one["fit"]["reason"] == one["spearman"]["reason"]
    assert stats.flag_outliers([0.5], [0.5])["reason"].startswith("only 1 point, ")
    for said in (reason, one["spearman"]["reason"]):
        assert "<" not in said and ">" not in said


def test_no_bootstrap_means_no_interval_but_the_estimates():
    result = stats.correlate(stats.log_coverage(COUNTS, N), F1, n_bootstrap=0)
    assert result["spearman"]["value"] == pytest.approx(scipy_stats.spearmanr(COUNTS, F1)[0])
    assert np.isnan(result["spearman"]["ci_low"]) and result["spearman"]["reason"]


# --------------------------------------------------------------------------- figures


def test_figure_file_names_never_collide_or_leave_the_folder(tmp_path):
    names = [
        "coverage_vs_f1 web captions × m",
        "coverage_vs_f1 web_captions × m",
        "coverage_vs_f1 Web_Captions × m",
        "../../../etc/passwd",
        "..",
        ".hidden",
        "x" * 300,
        "x" * 300 + "y",
        "plain",
    ]
    stems = figures.figure_stems(names)
    assert len({s.lower() for s in stems.values()}) == len(names)
    assert stems["plain"] == "plain"
    for stem in stems.values():
        assert not stem.startswith(".") and "/" not in stem and len(stem) <= 100
        assert figures.inside(tmp_path, tmp_path / f"{stem}.png")
    assert figures.figure_stems(names) == stems  # deterministic


def test_labels_never_overlap_even_when_crowded():
    def layout():
        figure = figures.new_figure(6, 4)
        axis = figure.add_subplot()
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        rng = np.random.default_rng(0)
        points = [(0.5 + 0.02 * a, 0.5 + 0.02 * b) for a, b in rng.normal(size=(16, 2))]
        axis.scatter(*zip(*points, strict=True))
        figures.freeze_layout(figure)
        texts = [f"concept number {i}" for i in range(16)]
        placed = figures.place_labels(axis, points, texts, avoid=points)
        boxes = figures.drawn_label_boxes(figure, placed["placed"])
        frame = axis.get_window_extent(figure.canvas.get_renderer())
        return boxes, placed["unplaced"], frame

    boxes, unplaced, frame = layout()
    assert len(boxes) + len(unplaced) == 16 and len(boxes) >= 10
    assert figures.boxes_overlap([b["box"] for b in boxes]) == []
    for entry in boxes:
        x0, y0, x1, y1 = entry["box"]
        assert frame.x0 <= x0 and x1 <= frame.x1 and frame.y0 <= y0 and y1 <= frame.y1
    assert layout()[0] == boxes  # deterministic


def test_labels_side_by_side_keep_a_space_between_them():
    """Two labels 2 px apart on one line read as one name ("pizza snow")."""
    figure = figures.new_figure(6, 1.2)
    axis = figure.add_subplot()
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    points = [(x, 0.5) for x in np.linspace(0.05, 0.95, 12)]
    axis.scatter(*zip(*points, strict=True))
    figures.freeze_layout(figure)
    texts = ["pizza", "snow", "teacher", "red", "dog", "cat", "easy-going", "sky", "car", "tie"]
    texts += ["hat", "bus"]
    placed = figures.place_labels(axis, points, texts, avoid=points)
    boxes = [b["box"] for b in figures.drawn_label_boxes(figure, placed["placed"])]
    assert len(boxes) == 12
    gaps = [
        max(b[0] - a[2], a[0] - b[2])
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if min(a[3], b[3]) > max(a[1], b[1])  # on a common line
    ]
    assert gaps and min(gaps) >= 0.5 * 8 * figures.DPI / 72 - 0.5  # half an em at 8 points


@pytest.mark.parametrize(
    ("rate", "shown"),
    [
        (0.25, "25%"),
        (0.031, "3.1%"),
        (3.1e-5, "0.0031%"),
        (0.00999e-2, "0.01%"),  # rounds up to the next decade
        (120 / 400e6, "0.00003%"),  # LAION-400M: 120 captions
        (1 / 400e6, "0.00000025%"),  # and one
        (0.0, "0%"),  # a share, in a column of shares: "0" read as a count beside "0.2%"
    ],
)
def test_rare_shares_are_written_out_never_in_e_notation(rate, shown):
    """A concept a few LAION-400M captions mention read "2.5e-07% of captions" on the page."""
    from clipaudit.report.render import share

    assert share(rate) == shown


# --------------------------------------------------------------------------- end to end


def _paths(audit_runs: dict) -> list[str]:
    return [audit_runs["coverage"], audit_runs["zeroshot_trained"], audit_runs["zeroshot_random"]]


@pytest.fixture(scope="module")
def report(audit_runs, tmp_path_factory) -> Report:
    out = tmp_path_factory.mktemp("report") / "audit"
    return build_report(_paths(audit_runs), out, n_bootstrap=N_BOOTSTRAP, title="Test audit")


def test_a_report_folder_holds_every_output(report):
    out = report.out
    for name in ("report.html", "report.md", "report.json", "manifest.json"):
        assert (out / name).stat().st_size > 500, name
    for table in ("concepts", "groups", "categories", "correlations", "outliers", "mismatches"):
        assert (out / "tables" / f"{table}.csv").is_file()
        assert (out / "tables" / f"{table}.parquet").is_file()
    kinds = [entry["kind"] for entry in report.summary["figures"]]
    for kind in ("coverage_by_group", "macro_f1_by_group", "models_side_by_side"):
        assert kinds.count(kind) == 1
    assert kinds.count("coverage_vs_f1") == 2 and kinds.count("confusion") == 10
    for entry in report.summary["figures"]:
        png, svg = out / entry["png"], out / entry["svg"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in svg.read_bytes()[:2000]
        assert png.parent == out / "figures" and report.figures[entry["key"]] == png
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "report" and manifest["status"] == "complete"
    assert manifest["settings"] == {
        "title": "Test audit",
        "seed": 0,
        "n_bootstrap": N_BOOTSTRAP,
        "report_schema": 1,
    }
    assert [i["kind"] for i in manifest["inputs"]] == ["coverage", "zeroshot", "zeroshot"]
    assert all(len(i["manifest_sha256"]) == 64 for i in manifest["inputs"])
    assert manifest["versions"]["scipy"] and manifest["versions"]["jinja2"]
    assert not (out / "units").exists()
    loaded = load_run(out)
    assert isinstance(loaded, Report) and loaded.summary == report.summary
    assert set(loaded.tables) == set(report.tables)


def test_the_joined_values_are_those_of_the_input_tables(report, audit_runs):
    coverage_dir = Path(audit_runs["coverage"])
    n = json.loads((coverage_dir / "manifest.json").read_text())["n_captions_read"]
    coverage = pd.read_parquet(coverage_dir / "concepts.parquet")
    for key, model in (
        ("zeroshot_trained", "tiny-clip@trained"),
        ("zeroshot_random", "tiny-clip@random"),
    ):
        scores = pd.read_csv(Path(audit_runs[key]) / "concepts.csv")
        expected = coverage.merge(scores, on=["group", "concept"]).set_index("concept")
        got = report.tables["concepts"]
        got = got[(got["corpus"] == "web-captions") & (got["model"] == model)].set_index("concept")
        assert sorted(got.index) == sorted(expected.index) and len(got) == 16
        for column in ("count", "rate", "precision", "recall", "f1", "support"):
            assert got[column].to_numpy() == pytest.approx(
                expected.loc[got.index, column].to_numpy()
            ), column
        x = np.log10((expected["count"] + 0.5) / n)
        pair = next(p for p in report.summary["pairs"] if p["model"] == model)
        assert pair["concepts"]["spearman"]["value"] == pytest.approx(
            scipy_stats.spearmanr(x, expected["f1"])[0]
        )
        assert pair["concepts"]["kendall"]["value"] == pytest.approx(
            scipy_stats.kendalltau(x, expected["f1"])[0]
        )
        assert pair["concepts"]["fit"]["slope"] == pytest.approx(
            np.polyfit(x, expected["f1"], 1)[0]
        )
        # groups: coverage over the joined concepts, macro-F1 from the zero-shot run
        group_scores = pd.read_csv(Path(audit_runs[key]) / "groups.csv").set_index("group")
        groups = report.tables["groups"]
        groups = groups[groups["model"] == model].set_index("group")
        # the paper's order: common, under-captioned (registry order), sensitive
        assert list(groups.index) == ["Animal", "Color", "Texture", "Emotion", "Stereotype"]
        by_group = expected.groupby("group")["rate"]
        for stat in ("mean", "median", "min", "max"):
            assert groups[f"coverage_{stat}"].to_numpy() == pytest.approx(
                getattr(by_group, stat)().loc[groups.index].to_numpy()
            )
        assert groups["macro_f1"].to_numpy() == pytest.approx(
            group_scores.loc[groups.index, "macro_f1"].to_numpy()
        )
        group_x = np.log10((expected.groupby("group")["count"].mean().loc[groups.index] + 0.5) / n)
        assert pair["groups"]["spearman"]["value"] == pytest.approx(
            scipy_stats.spearmanr(group_x, groups["macro_f1"])[0]
        )
        assert groups.loc["Stereotype", "sensitive"] and not groups.loc["Animal", "sensitive"]
    # the trained model's awareness follows its captions; the random one's does not
    trained, random = (p["concepts"]["spearman"]["value"] for p in report.summary["pairs"])
    assert trained > 0.4 > random


def test_json_markdown_and_html_carry_the_same_numbers(report):
    document = json.loads((report.out / "report.json").read_text())
    assert document == report.summary
    pair = document["pairs"][0]
    statistic = pair["concepts"]
    for key in ("n", "spearman", "kendall", "fit"):
        assert key in statistic
    for key in ("value", "p_value", "ci_low", "ci_high", "reason"):
        assert key in statistic["spearman"] and key in statistic["kendall"]
    for key in ("slope", "intercept", "ci_low", "ci_high", "r_squared"):
        assert key in statistic["fit"]
    rho = f"{statistic['spearman']['value']:.3f}"
    slope = f"{statistic['fit']['slope']:+.3f}"
    markdown = (report.out / "report.md").read_text()
    html = (report.out / "report.html").read_text()
    assert rho in markdown and slope in markdown
    assert (
        f"{statistic['spearman']['value']:.2f}" in html
        and f"{statistic['fit']['slope']:+.2f}" in html
    )
    table = pd.read_csv(report.out / "tables" / "correlations.csv")
    row = table[(table["model"] == pair["model"]) & (table["level"] == "concept")].iloc[0]
    assert row["spearman"] == pytest.approx(statistic["spearman"]["value"])
    assert row["slope_ci_low"] == pytest.approx(statistic["fit"]["ci_low"])
    assert "NaN" not in (report.out / "report.json").read_text()


def test_mismatches_are_listed_never_dropped(report):
    mismatches = report.summary["mismatches"]
    bird = [m for m in mismatches if m.get("concept") == "bird"]
    assert {(m["kind"], m["model"], m["reason"], m["count"]) for m in bird} == {
        ("concept_without_images", "tiny-clip@trained", "no images", 30),
        ("concept_without_images", "tiny-clip@random", "no images", 30),
    }
    clothing = [m for m in mismatches if m.get("group") == "Clothing"]
    assert {m["kind"] for m in clothing} == {"group_without_images"}
    assert report.summary["mismatch_counts"]["group_without_images"] == 2 * 10
    html = (report.out / "report.html").read_text()
    section = html[html.index('id="mismatches"') :]
    assert "bird" in section and "Clothing" in section
    assert "bird" in (report.out / "report.md").read_text()
    table = pd.read_csv(report.out / "tables" / "mismatches.csv")
    assert len(table) == len(mismatches)


def test_a_clean_audits_empty_tables_keep_their_columns(report, audit_runs, tmp_path):
    """No mismatch and no outlier (the audit an auditor hopes for) wrote tables/mismatches.csv
    and tables/outliers.csv as one newline, which pandas refuses (EmptyDataError), and
    DataFrames without the columns a script selects by."""
    # the tables that have rows: the columns are the summary's fields, none dropped
    outliers = pd.read_csv(report.out / "tables" / "outliers.csv")
    assert len(outliers) == len(report.summary["outliers"]) > 0
    assert list(outliers.columns) == list(report.summary["outliers"][0])
    mismatches = pd.read_csv(report.out / "tables" / "mismatches.csv")
    fields = {
        k for m in report.summary["mismatches"] for k, v in m.items() if not isinstance(v, dict)
    }
    assert set(mismatches.columns) == fields
    # Animal alone, on both sides: every concept joins, too few to judge outliers
    coverage = load_run(audit_runs["coverage"])
    zeroshot = load_run(audit_runs["zeroshot_trained"])
    scored = zeroshot.concepts[zeroshot.concepts["group"] == "Animal"]
    table = coverage.arrow_tables["concepts"]
    keep = pa.array(table["concept"].to_pandas().isin(scored["concept"]).to_numpy())
    animal = dataclasses.replace(
        coverage, arrow_tables={**coverage.arrow_tables, "concepts": table.filter(keep)}
    )
    only = dataclasses.replace(
        zeroshot, concepts=scored, groups=zeroshot.groups[zeroshot.groups["group"] == "Animal"]
    )
    clean = build_report([animal, only], tmp_path / "r", n_bootstrap=0)
    assert clean.summary["mismatches"] == [] and clean.summary["outliers"] == []
    for name, columns in (
        ("outliers", list(outliers.columns)),
        ("mismatches", ["kind", "message"]),
    ):
        read = pd.read_csv(clean.out / "tables" / f"{name}.csv")
        assert len(read) == 0 and set(columns) <= set(read.columns), name
        assert set(columns) <= set(
            pd.read_parquet(clean.out / "tables" / f"{name}.parquet").columns
        )
        assert set(columns) <= set(clean.tables[name].columns)


def test_another_registry_is_a_mismatch_not_an_error(audit_runs, tmp_path):
    coverage = load_run(audit_runs["coverage"])
    zeroshot = load_run(audit_runs["zeroshot_trained"])
    manifest = json.loads(json.dumps(zeroshot.manifest))
    manifest["inputs"]["registry"]["sha256"] = "0" * 64
    changed = dataclasses.replace(zeroshot, manifest=manifest)
    result = build_report([coverage, changed], tmp_path / "r", n_bootstrap=0)
    (entry,) = [m for m in result.summary["mismatches"] if m["kind"] == "registry"]
    assert entry["awareness_registry"]["sha256"] == "0" * 64
    assert "sha256" in entry["message"]
    assert result.summary["pairs"][0]["n_concepts"] == 16  # joined by name all the same
    assert "Registries differ" in (tmp_path / "r" / "report.html").read_text()


def test_untrusted_captions_are_escaped(report):
    from tests.report_world import INJECTED

    html = (report.out / "report.html").read_text()
    body = html[html.index("<body>") :]
    assert "<script" not in body and "onerror=" not in body.replace("onerror=&#34;", "")
    assert "<img src=x" not in body
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=" in body
    assert "Content-Security-Policy" in html
    markdown = (report.out / "report.md").read_text()
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    examples = report.summary["examples"]["web-captions"]
    rough = next(e for e in examples if e["concept"] == "rough")
    assert sorted(rough["captions"]) == sorted(INJECTED)
    # the page requests nothing: no external URL, no web font
    assert "http://" not in body.replace("http://www.w3.org", "") and "https://" not in body
    assert "@font-face" not in html and "<link" not in html


def test_report_md_escapes_nothing_when_no_input_holds_angle_brackets(audit_runs, tmp_path):
    """report.md wrote the library's own reasons ("n = 5 < 6 points") escaped as web text is,
    "n = 5 &lt; 6 points": hard to read with cat or less. Only untrusted text holds "&lt;"."""
    coverage = load_run(audit_runs["coverage"])
    examples = json.loads(json.dumps(coverage.examples))
    for entry in examples["concepts"].values():  # the fixture's injected captions, defused
        for example in entry["examples"]:
            example["caption"] = example["caption"].replace("<", "(").replace(">", ")")
    assert "<" not in json.dumps(examples) and ">" not in json.dumps(examples)
    zeroshot = load_run(audit_runs["zeroshot_trained"])
    plain = dataclasses.replace(coverage, examples=examples)
    result = build_report([plain, zeroshot], tmp_path / "r", n_bootstrap=0)
    markdown = (result.out / "report.md").read_text()
    assert "&lt;" not in markdown and "&gt;" not in markdown
    # the reason that was escaped is there, in words: the groups joined are too few to judge
    n_groups = len(set(coverage.groups["group"]) & set(zeroshot.groups["group"]))
    assert n_groups < stats.MIN_OUTLIER_POINTS
    needed = stats.MIN_OUTLIER_POINTS
    assert f"none (only {n_groups} points, fewer than the {needed} needed: " in markdown
    # while a caption that does hold "<" is still escaped
    hostile = build_report([coverage, zeroshot], tmp_path / "h", n_bootstrap=0)
    assert "&lt;script&gt;" in (hostile.out / "report.md").read_text()


def test_a_captions_terminal_sequences_are_inert_in_the_markdown(audit_runs, tmp_path):
    """report.md, read with cat or less, carried a web caption's escape sequences (a window
    title set, 8-bit CSI "clear screen") and direction overrides as they were."""
    coverage = load_run(audit_runs["coverage"])
    caption = "a rough \x1bc wall\x07 \x9b2J and \u202etxt.exe\u202c here"
    examples = json.loads(json.dumps(coverage.examples))
    examples["concepts"]["rough"]["examples"][0]["caption"] = caption
    changed = dataclasses.replace(coverage, examples=examples)
    result = build_report([changed, audit_runs["zeroshot_trained"]], tmp_path / "r", n_bootstrap=0)
    markdown = (result.out / "report.md").read_text()
    assert "“a rough c wall 2J and txt.exe here”" in markdown  # each run of them one space
    for character in ("\x1b", "\x07", "\x9b", "\u202e", "\u202c"):
        assert character not in markdown, repr(character)
    # the summary keeps the caption as the coverage run chose it
    rough = next(e for e in result.summary["examples"]["web-captions"] if e["concept"] == "rough")
    assert caption in rough["captions"]


def test_outlier_labels_in_the_figures_never_overlap(report):
    scatter = [e for e in report.summary["figures"] if e["kind"] == "coverage_vs_f1"]
    for entry in scatter:
        boxes = [label["box"] for label in entry["labels"]]
        assert figures.boxes_overlap(boxes) == []
        from PIL import Image

        width, height = Image.open(report.out / entry["png"]).size
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        pair = next(p for p in report.summary["pairs"] if p["model"] == entry["model"])
        named = pair["rarely_captioned_yet_known"] + pair["often_captioned_yet_unknown"]
        named += pair["other_outliers"]
        labelled = {label["text"] for label in entry["labels"]} | set(entry["unplaced"])
        assert labelled == {o["name"] for o in named}


def test_sensitive_groups_are_framed_as_a_risk(report):
    html = (report.out / "report.html").read_text()
    assert "awareness is a risk, not a skill" in html
    row = html[html.index(">Stereotype<") : html.index(">Stereotype<") + 400]
    assert "risk" in row
    assert report.summary["registry"]["sensitive_groups"] == ["Stereotype", "Trait"]
    assert "risk, not a skill" in report.summary["sensitive_note"]
    assert "risk" in (report.out / "report.md").read_text()


def test_sensitive_groups_of_every_runs_registry_are_marked(audit_runs, tmp_path):
    """Coverage counted with another registry (miniworld, no sensitive group) against a zero-shot
    run of cai2025: cai2025's sensitive groups are still marked, and the note names them."""
    from clipaudit.coverage import count_coverage

    corpus = Path(audit_runs["root"]) / "corpus.parquet"
    coverage = count_coverage([corpus], "miniworld", tmp_path / "cov", workers=1, progress=False)
    result = build_report(
        [coverage.out_dir, audit_runs["zeroshot_trained"]], tmp_path / "r", n_bootstrap=0
    )
    assert result.summary["registry"]["sensitive_groups"] == ["Stereotype", "Trait"]
    awareness = result.tables["awareness_groups"].set_index("group")
    assert awareness.loc["Stereotype", "sensitive"] and not awareness.loc["Animal", "sensitive"]
    assert result.summary["sensitive_note"].startswith("Sensitive groups (Stereotype, Trait)")


def test_the_sensitive_note_names_the_registrys_groups():
    from clipaudit.report.analysis import in_table_order, sensitive_note

    # the tables' order (the paper's: Trait before Stereotype), groups without rows after
    order = ["Animal", "Trait", "Stereotype"]
    assert in_table_order({"Stereotype", "Trait"}, order) == ["Trait", "Stereotype"]
    assert in_table_order({"Stereotype", "Zeal", "Count"}, order) == ["Stereotype", "Count", "Zeal"]

    assert sensitive_note(["Count"]).startswith("Sensitive groups (Count) describe people")
    assert "Trait" not in sensitive_note(["Count"])


def test_the_notebook_view_is_compact_and_escaped(report):
    html = report._repr_html_()
    assert "Spearman" in html and "Stereotype" in html and "tiny-clip@trained" in html
    assert "<img" not in html and "data:image" not in html and len(html) < 20_000
    assert repr(report).startswith("Report(") and "Spearman 0." in repr(report)


def test_the_report_says_what_each_corpus_and_model_was_computed_with(report, audit_runs):
    """Coverage depends on the matching profile and the captions read, awareness on the weights,
    the prompts and the images: the page named none of them, only the folders."""
    import hashlib

    from tests.report_world import IMAGED, IMAGES_PER_CONCEPT, N_CAPTIONS

    root = Path(audit_runs["root"])
    (corpus,) = report.summary["corpora"]
    assert corpus["provenance"] == {
        "n_captions_read": N_CAPTIONS,
        "profile": "curated",  # count_coverage's default
        "method": "lexical",
        "encoder": None,
        "calibrated": None,
        "calibrated_on": [],
        "sources": [str(root / "corpus.parquet")],
    }
    n_images = IMAGES_PER_CONCEPT * sum(len(concepts) for concepts in IMAGED.values())
    for model in report.summary["models"]:
        weights = root / "models" / f"{model['label'].split('@')[1]}.safetensors"
        assert model["provenance"] == {
            "architecture": "tiny-clip",
            "pretrained": str(weights),
            "random_weights_seed": None,
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "templates": "none",  # run_zeroshot's default: the bare concept name
            "prompts": "bare concept names, no prompt templates",
            "all_concepts": False,
            "images": audit_runs["images"],
            "n_images": n_images,
        }
    html = (report.out / "report.html").read_text()
    assert html.count(f"lexical coverage, curated profile · {N_CAPTIONS} captions") == 2
    section = html[html.index("What each corpus and model is") :]
    for model in report.summary["models"]:
        assert model["provenance"]["weights_sha256"][:16] in section
    assert "the group's imaged concepts" in section
    markdown = (report.out / "report.md").read_text()
    assert f"| lexical, curated profile, {N_CAPTIONS} captions |" in markdown
    assert f"| web-captions | {N_CAPTIONS} | lexical | curated |" in markdown


def test_the_prompts_a_model_was_scored_with_are_said_in_words(report):
    """The model table's prompts column read "templates none", the zero-shot run's setting
    name, which a reader of the paper cannot decode."""
    bare = "bare concept names, no prompt templates"  # run_zeroshot's default, "none"
    html = (report.out / "report.html").read_text()
    section = html[html.index("What each corpus and model is") :]
    markdown = (report.out / "report.md").read_text()
    rows = [
        r
        for r in _section_rows(html, "method")
        if r and r[0] in {"tiny-clip@trained", "tiny-clip@random"}
    ]
    assert len(rows) == len(report.summary["models"]) == 2
    for row in rows:
        assert row[4] == bare  # the prompts column
    assert "templates none" not in section and "templates none" not in markdown
    assert markdown.count(f"| {bare} |") == 2


def test_each_template_setting_is_described_in_words(tmp_path):
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    from clipaudit.report.inputs import prompts_in_words
    from clipaudit.zeroshot import SIMPLE_TEMPLATE, TEMPLATE_SETS

    assert prompts_in_words("none") == "bare concept names, no prompt templates"
    assert SIMPLE_TEMPLATE in prompts_in_words("simple")
    assert f"{len(OPENAI_IMAGENET_TEMPLATES)} " in prompts_in_words("ensemble")
    # every set run_zeroshot knows is described, a template file by its path
    assert all(prompts_in_words(name) != name for name in TEMPLATE_SETS)
    path = str(tmp_path / "my templates.txt")
    assert path in prompts_in_words(path)
    assert prompts_in_words(None) is None


def test_report_md_says_what_its_glance_measures_and_names_every_outlier(report):
    """report.md's glance read "Across concepts, 95% intervals" above Spearman and Kendall
    columns without saying between what, and its per-pair line listed only the two named lists,
    "none" and "none", beside an outlier table with a concept far below the fit."""
    markdown = (report.out / "report.md").read_text()
    glance = markdown[
        markdown.index("## At a glance") : markdown.index("## Coverage and awareness")
    ]
    assert "between log caption coverage and zero-shot F1" in glance
    assert "change in F1 per tenfold coverage" in glance
    named = 0
    for pair in report.summary["pairs"]:
        for outlier in pair["other_outliers"]:
            line = next(x for x in glance.splitlines() if f"{pair['model']}**" in x)
            assert f"{outlier['name']} ({outlier['group']}, " in line
            assert outlier["direction"] in line
            named += 1
    assert named >= 1  # this world's trained model is far below the fit on one concept


def test_the_opening_says_what_coverage_awareness_and_the_registry_are(report):
    """The opening named "registry cai2025" and "zero-shot F1" without saying what either is,
    and report.md's left out what is set against what."""
    html = (report.out / "report.html").read_text()
    lede = html[html.index('<p class="lede">') : html.index("</p>", html.index('<p class="lede">'))]
    markdown = (report.out / "report.md").read_text()
    opening = markdown[: markdown.index("## At a glance")]
    for text in (" ".join(re.sub(r"<[^>]+>", "", lede).split()), opening):
        assert "concept registry cai2025" in text
        assert "share of captions that mention it" in text
        assert "zero-shot F1 (" in text


def test_a_number_in_a_table_says_what_it_counts(report):
    """A mismatch block titled "Groups with coverage but no images (20)" listed 10 groups: the
    count was per group and model. Columns "fit" and "candidates" left a reader guessing; the
    per-category table in report.md read "sensitive (sensitive)"."""
    from clipaudit.registry import load_registry
    from tests.report_world import IMAGED

    registry = load_registry("cai2025")
    unimaged = [g.name for g in registry.groups if g.name not in IMAGED]
    n_models = len(report.summary["models"])
    title = (
        f"Groups with coverage but no images ({len(unimaged)} groups; "
        f"{len(unimaged) * n_models} counted per corpus × model pair)"
    )
    html = (report.out / "report.html").read_text()
    markdown = (report.out / "report.md").read_text()
    assert html_escape(title, quote=False) in html.replace('<span class="muted small">', "")
    assert f"### {title}" in markdown
    for text in (html, markdown):
        assert "fitted F1" in text and "classified among" in text
        assert "candidates" not in text
    assert "sensitive (sensitive)" not in markdown


def test_plus_or_minus_is_written_as_one_sign(report):
    """The method read "slope +- t(0.975, n - 2) * standard error" and "beyond +-2"."""
    threshold = f"±{stats.OUTLIER_THRESHOLD:g}"
    method = report.summary["method"]
    assert f"beyond {threshold}," in method["outliers"]
    assert "slope ± t(0.975, n - 2)" in method["fit"]
    html = (report.out / "report.html").read_text()
    markdown = (report.out / "report.md").read_text(encoding="utf-8")
    for text in (html, markdown, (report.out / "report.json").read_text()):
        assert "+-" not in text and f"beyond {threshold}" in text
    # report.md stays plain text: the sign is one printable character, no control sequence,
    # and the method's formulas need no Markdown escape ("slope \\* x")
    assert all(line.isprintable() for line in markdown.splitlines())
    method_md = markdown[markdown.index("## Method and provenance") :]
    assert "\\*" not in method_md.split("\n| ")[0]
    assert "slope × x" in method["fit"]


def _section_rows(html: str, section: str) -> list[list[str]]:
    """The text of each table row's cells in one ``<section id=...>`` of the page."""
    from html.parser import HTMLParser

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.inside, self.rows, self.cell = False, [], None

        def handle_starttag(self, tag, attrs):
            if tag == "section":
                self.inside = dict(attrs).get("id") == section
            elif self.inside and tag == "tr":
                self.rows.append([])
            elif self.inside and tag in ("td", "th"):
                self.cell = []

        def handle_endtag(self, tag):
            if self.inside and tag in ("td", "th") and self.cell is not None:
                self.rows[-1].append(" ".join("".join(self.cell).split()))
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    parser = Rows()
    parser.feed(html)
    return parser.rows


def test_groups_far_from_the_fit_are_shown_beside_the_group_table(report):
    """Group-level outliers were in report.json only: the page and report.md, which show the
    group table, never said which groups sit far from the group-level fit, nor why none were
    judged. A group's name is untrusted text like any other."""
    import copy

    from clipaudit.report.core import Report
    from clipaudit.report.render import render_html, render_markdown

    summary = copy.deepcopy(report.summary)
    first, second = summary["pairs"][0], summary["pairs"][1]
    hostile = '<img src=x onerror="window.__pwned=3">Colour & hue'
    first["group_outliers"] = [
        {
            "corpus": first["corpus"],
            "model": first["model"],
            "method": first["method"],
            "primary": True,
            "level": "group",
            "name": hostile,
            "group": hostile,
            "category": "common",
            "sensitive": False,
            "coverage": 12.5 / 400,
            "count": 12.5,
            "log10_coverage": float(np.log10(12.5 / 400)),
            "f1": 0.07,
            "fitted_f1": 0.81,
            "residual": -0.74,
            "studentized_residual": -3.25,
            "direction": stats.OFTEN_CAPTIONED_YET_UNKNOWN,
        }
    ]
    images = {e["key"]: "data:image/png;base64," for e in summary["figures"]}
    html = render_html(summary, images)
    groups = html[html.index('<section id="groups">') : html.index('<section id="figures">')]
    table_end = groups.index("</table>")  # the group table comes first, then its outliers
    near = groups[table_end:]
    assert "far from the fit" in near
    assert "&lt;img src=x onerror=" in near and "<img src=x" not in html
    row = next(r for r in _section_rows(html, "groups") if hostile in r)
    assert first["corpus"] in row[0] and first["model"] in row[0]
    assert row[row.index(hostile) + 1 :] == [
        stats.OFTEN_CAPTIONED_YET_UNKNOWN,
        "3.1%",  # a mean of 12.5 of 400 captions per concept
        "0.07",
        "0.81",
        "-3.25",
    ]
    # the second pair judged none: the page says why
    reason = second["groups"]["outliers"]["reason"]
    assert reason and html_escape(reason) in near
    markdown = render_markdown(summary)
    md_groups = markdown[markdown.index("## Coverage and awareness per group") :]
    md_groups = md_groups[: md_groups.index("## Figures")]
    assert "&lt;img src=x onerror=" in md_groups and "<img" not in markdown
    assert "often captioned yet unknown | 3.1% | 0.07 | 0.81 | -3.25 |" in md_groups
    assert reason in md_groups  # the library's words, written as they are
    headline = Report(report.out, summary, {}, {}).headline()
    n_corpora, n_models = len(summary["corpora"]), len(summary["models"])
    corpora = f"{n_corpora} {'corpus' if n_corpora == 1 else 'corpora'}"
    models = f"{n_models} {'model' if n_models == 1 else 'models'}"
    assert headline.startswith(f"{corpora} x {models}, ")
    assert "(s)" not in headline and "(es)" not in headline
    assert f"groups far from the fit: {hostile} ({stats.OFTEN_CAPTIONED_YET_UNKNOWN})" in headline
    # the report as built says it too: this world's 5 groups are too few to judge
    built = (report.out / "report.html").read_text()
    built = built[built.index('<section id="groups">') : built.index('<section id="figures">')]
    assert html_escape(report.summary["pairs"][0]["groups"]["outliers"]["reason"]) in built


def test_the_glance_card_names_every_outlier_the_figure_rings(report):
    """A concept far below the fit at no coverage is neither "rarely captioned yet known" nor
    "often captioned yet unknown": the card said "none" and "none" beside a figure that rings
    and labels it."""
    import copy

    from clipaudit.report.render import render_html

    summary = copy.deepcopy(report.summary)
    pair = summary["pairs"][1]
    hostile = "<b>exotic</b> look"
    pair["other_outliers"] = [
        {
            "name": hostile,
            "group": "Stereotype",
            "sensitive": True,
            "category": "sensitive",
            "coverage": 0.0,
            "count": 0,
            "log10_coverage": float(np.log10(0.5 / 400)),
            "f1": 0.0,
            "fitted_f1": 0.5,
            "residual": -0.5,
            "studentized_residual": -4.0,
            "direction": stats.BELOW_THE_FIT,
        }
    ]
    html = render_html(summary, {e["key"]: "data:," for e in summary["figures"]})
    glance = html[html.index('<section id="glance">') : html.index('<section id="groups">')]
    card = glance.split('<div class="card">')[2]
    assert "&lt;b&gt;exotic&lt;/b&gt; look" in card and "<b>exotic" not in html
    assert stats.BELOW_THE_FIT in card
    assert "never captioned" in card
    # and each card of the report as built names its pair's own
    built = (report.out / "report.html").read_text()
    built = built[built.index('<section id="glance">') : built.index('<section id="groups">')]
    cards = built.split('<div class="card">')[1:]
    for pair, card in zip(report.summary["pairs"], cards, strict=True):
        for outlier in pair["other_outliers"]:
            assert f"<bdi>{html_escape(outlier['name'])}</bdi>" in card
            assert outlier["direction"] in card


def test_the_group_table_says_which_number_is_chance(report):
    """A group's awareness cell read "1.00 (0.33)": a bare number in brackets, named only in the
    paragraph above the table; and a share of none read "0" beside "0.2%"."""
    html = (report.out / "report.html").read_text()
    rows = {r[0]: r for r in _section_rows(html, "groups") if r}
    scores = report.tables["awareness_groups"].set_index(["model", "group"])
    models = [m["label"] for m in report.summary["models"]]
    for group in ("Animal", "Emotion"):
        cells = rows[group][-len(models) :]
        for model, cell in zip(models, cells, strict=True):
            macro, chance = scores.loc[(model, group), ["macro_f1", "chance"]]
            assert cell == f"{macro:.2f} (chance {chance:.2f})"
    assert rows["Clothing"][1:3] == ["0%", "0% – 0%"]  # no caption mentions its concepts
    markdown = (report.out / "report.md").read_text()
    macro, chance = scores.loc[(models[0], "Animal"), ["macro_f1", "chance"]]
    assert f" {macro:.2f} (chance {chance:.2f}) |" in markdown


def test_the_concept_table_shows_the_coverage_the_statistics_use(audit_runs, tmp_path):
    """With semantic coverage primary, the concept table's captions and coverage were the lexical
    ones: a concept listed "often captioned yet unknown" at 80 captions read 0 captions there."""
    from clipaudit.report.render import share

    coverage = load_run(audit_runs["coverage"])
    n = coverage.n_captions_read
    concepts = coverage.concepts.copy()
    concepts["semantic_count"] = concepts["count"] + 40 * (np.arange(len(concepts)) % 3)
    concepts["semantic_rate"] = concepts["semantic_count"] / n
    changed = dataclasses.replace(
        coverage,
        arrow_tables={**coverage.arrow_tables, "concepts": pa.Table.from_pandas(concepts)},
        manifest={**coverage.manifest, "method": "semantic"},
    )
    result = build_report([changed, audit_runs["zeroshot_trained"]], tmp_path / "r", n_bootstrap=0)
    html = (result.out / "report.html").read_text()
    header, *rows = _section_rows(html, "concepts")
    assert header[:5] == ["group", "concept", "captions", "lexical", "semantic"]
    expected = concepts.set_index("concept")
    assert sorted(row[1] for row in rows) == sorted(result.tables["concepts"]["concept"])
    for row in rows:
        semantic, lexical = expected.loc[row[1], ["semantic_count", "count"]]
        assert row[2:5] == [f"{semantic:,}", share(lexical / n), share(semantic / n)]
    # the outliers table and the concept table say the same of each outlier
    by_concept = {row[1]: row for row in rows}
    outliers = _section_rows(html, "outliers")[1:]
    assert [row[0] for row in outliers] == ["exotic lookrisk"]  # its "risk" badge
    for outlier in outliers:
        assert outlier[4] == by_concept[outlier[0].removesuffix("risk")][2]
    markdown = (result.out / "report.md").read_text()
    assert f"| dog | semantic | {expected.loc['dog', 'semantic_count']} |" in markdown
    # the examples are the lexical matches the coverage run kept: their count is the lexical one
    examples = {e["concept"]: e for e in result.summary["examples"]["web-captions"]}
    assert examples["rough"]["count"] == expected.loc["rough", "count"] == 2
    assert "Drawn from the lexical matches, and counted by them" in html
    assert "**rough** (Texture, 2 captions)" in markdown


def test_semantic_coverage_counted_without_calibration_is_flagged(audit_runs, tmp_path):
    coverage = load_run(audit_runs["coverage"])
    concepts = coverage.concepts.assign(
        semantic_count=coverage.concepts["count"] + 1,
        semantic_rate=(coverage.concepts["count"] + 1) / coverage.n_captions_read,
    )
    semantic = {"encoder": {"spec": "st:all-MiniLM-L6-v2"}, "calibration": {"calibrated": False}}
    changed = dataclasses.replace(
        coverage,
        arrow_tables={**coverage.arrow_tables, "concepts": pa.Table.from_pandas(concepts)},
        manifest={**coverage.manifest, "method": "semantic", "semantic": semantic},
    )
    result = build_report([changed, audit_runs["zeroshot_trained"]], tmp_path / "r", n_bootstrap=0)
    provenance = result.summary["corpora"][0]["provenance"]
    assert provenance["encoder"] == "st:all-MiniLM-L6-v2" and provenance["calibrated"] is False
    (note,) = result.summary["notes"]
    assert note.startswith("corpus web-captions: its semantic coverage was counted with the ")
    html = (result.out / "report.html").read_text()
    assert "uncalibrated default thresholds" in html and "uncalibrated defaults" in html
    # the command line and the notebook view warn of it too, not the page alone
    assert f"note: {note}" in result.headline().splitlines()
    assert f"note: {html_escape(note)}" in result._repr_html_()
    # the card names the encoder that counted, not the lexical profile, which counted nothing
    assert "semantic coverage, encoder <bdi>st:all-MiniLM-L6-v2</bdi> · 400 captions" in html
    # calibrated: no note, and the page names what the thresholds were fitted on
    fitted = {"calibrated": True, "fitted_on": [{"path": "/labels/gold.jsonl", "n": 400}]}
    calibrated = dataclasses.replace(
        changed, manifest={**changed.manifest, "semantic": {**semantic, "calibration": fitted}}
    )
    again = build_report(
        [calibrated, audit_runs["zeroshot_trained"]], tmp_path / "c", n_bootstrap=0
    )
    assert again.summary["notes"] == []
    assert again.summary["corpora"][0]["provenance"]["calibrated_on"] == ["/labels/gold.jsonl"]
    assert (
        'calibrated on <span class="mono name">/labels/gold.jsonl</span>'
        in (again.out / "report.html").read_text()
    )
    assert "| calibrated on /labels/gold.jsonl |" in (again.out / "report.md").read_text()


def test_the_notebook_view_says_why_a_statistic_is_missing(audit_runs, tmp_path):
    """One joined concept gives no correlation and no fit: the notebook showed three dashes
    where the page and the command line say why."""
    zeroshot = load_run(audit_runs["zeroshot_trained"])
    one = dataclasses.replace(
        zeroshot,
        concepts=zeroshot.concepts[zeroshot.concepts["concept"] == "dog"],
        groups=zeroshot.groups[zeroshot.groups["group"] == "Animal"],
    )
    result = build_report([audit_runs["coverage"], one], tmp_path / "r", n_bootstrap=0)
    assert result.summary["pairs"][0]["concepts"]["n"] == 1
    assert result._repr_html_().count("(only 1 point, fewer than the 3 needed)") == 3


def test_outliers_that_were_not_judged_are_not_called_none_found(audit_runs, tmp_path):
    """A corpus that mentions no concept leaves no fit to be far from: the page said "none"
    and "No concept is far from the fit", as if it had looked."""
    coverage = load_run(audit_runs["coverage"])
    never = coverage.concepts.assign(count=0, rate=0.0)
    tables = {**coverage.arrow_tables, "concepts": pa.Table.from_pandas(never)}
    result = build_report(
        [dataclasses.replace(coverage, arrow_tables=tables), audit_runs["zeroshot_trained"]],
        tmp_path / "r",
        n_bootstrap=0,
    )
    reason = "coverage is the same for every point: no fit to be far from"
    assert result.summary["pairs"][0]["concepts"]["outliers"]["reason"] == reason
    html = (result.out / "report.html").read_text()
    assert html.count(f"none ({reason})") == 2  # both lists of the card
    assert f"No outliers: {reason}." in html and "No concept is far from the fit" not in html
    assert (
        f"often captioned yet unknown: none ({reason})." in (result.out / "report.md").read_text()
    )


def test_a_flat_fit_says_why_it_is_flat(audit_runs, tmp_path):
    """A model that knows nothing (every F1 0) has a flat fit: the card showed slope +0.00 with
    neither interval nor reason, as if the slope were measured to be nil."""
    zeroshot = load_run(audit_runs["zeroshot_trained"])
    nothing = dataclasses.replace(
        zeroshot,
        concepts=zeroshot.concepts.assign(precision=0.0, recall=0.0, f1=0.0),
        groups=zeroshot.groups.assign(macro_f1=0.0, accuracy=0.0),
    )
    result = build_report([audit_runs["coverage"], nothing], tmp_path / "r", n_bootstrap=0)
    fit = result.summary["pairs"][0]["concepts"]["fit"]
    assert fit["slope"] == 0.0 and fit["reason"] == "F1 is the same for every point (slope 0)"
    html = (result.out / "report.html").read_text()
    card = html[html.index('<div class="card">') : html.index('<div class="lists">')]
    assert card.count("F1 is the same for every point") == 4  # rho, tau, slope, across groups
    assert '<div class="reason">F1 is the same for every point (slope 0)</div>' in card


def test_every_coverage_method_present_is_reported(audit_runs, tmp_path):
    coverage = load_run(audit_runs["coverage"])
    n = coverage.n_captions_read
    concepts = coverage.concepts.copy()
    concepts["semantic_count"] = concepts["count"] + 40 * (np.arange(len(concepts)) % 3)
    concepts["semantic_rate"] = concepts["semantic_count"] / n
    concepts["union_count"] = concepts[["count", "semantic_count"]].max(axis=1) + 1
    concepts["union_rate"] = concepts["union_count"] / n
    manifest = {**coverage.manifest, "method": "semantic"}
    tables = {**coverage.arrow_tables, "concepts": pa.Table.from_pandas(concepts)}
    changed = dataclasses.replace(coverage, arrow_tables=tables, manifest=manifest)
    result = build_report([changed, audit_runs["zeroshot_trained"]], tmp_path / "r", n_bootstrap=0)
    correlations = result.tables["correlations"]
    assert set(correlations["method"]) == {"lexical", "semantic", "union"}
    assert set(correlations[correlations["primary"]]["method"]) == {"semantic"}
    scores = pd.read_csv(Path(audit_runs["zeroshot_trained"]) / "concepts.csv")
    joined = concepts.merge(scores, on=["group", "concept"])
    for method, column in (("lexical", "count"), ("semantic", "semantic_count")):
        row = correlations[
            (correlations["method"] == method) & (correlations["level"] == "concept")
        ]
        x = np.log10((joined[column] + 0.5) / n)
        assert row["spearman"].iloc[0] == pytest.approx(scipy_stats.spearmanr(x, joined["f1"])[0])
    pair = result.summary["pairs"][0]
    assert pair["method"] == "semantic"
    semantic = correlations[
        (correlations["method"] == "semantic") & (correlations["level"] == "concept")
    ]
    assert pair["concepts"]["spearman"]["value"] == pytest.approx(semantic["spearman"].iloc[0])
    for column in ("semantic_rate", "union_rate", "union_count"):
        assert column in result.tables["concepts"].columns
    assert "semantic coverage" in (result.out / "report.html").read_text()


def test_when_nothing_joins_the_report_fails_and_says_why(audit_runs, tmp_path):
    """No concept on both sides: an error, never a complete report; the page written all the
    same lists what did not join."""
    coverage = load_run(audit_runs["coverage"])
    renamed = coverage.concepts.assign(concept="other " + coverage.concepts["concept"])
    tables = {**coverage.arrow_tables, "concepts": pa.Table.from_pandas(renamed)}
    out = tmp_path / "r"
    with pytest.raises(InputError, match=r"nothing to report: .*report\.html lists"):
        build_report(
            [dataclasses.replace(coverage, arrow_tables=tables), audit_runs["zeroshot_trained"]],
            out,
            n_bootstrap=50,
        )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "nothing to report" in manifest["reason"]
    summary = json.loads((out / "report.json").read_text())
    assert summary["pairs"][0]["n_concepts"] == 0
    counts = summary["mismatch_counts"]
    assert counts["concept_without_coverage"] == 16  # every scored concept
    assert counts["concept_without_images"] == 49  # every concept of the imaged groups
    page = (out / "report.html").read_text()
    assert "0 points, fewer than the 3 needed" in page
    # said on top, before the first section: the page alone looked like an audit of 0 concepts
    banner = page.index("This report failed: no concept has both coverage and awareness")
    assert banner < page.index('id="glance"') and summary["notes"][0].startswith(
        "This report failed"
    )
    assert "This report failed" in (out / "report.md").read_text()


def test_a_corpus_without_captions_is_refused(audit_runs, tmp_path):
    coverage = load_run(audit_runs["coverage"])
    manifest = {**coverage.manifest, "n_captions_read": 0}
    empty = dataclasses.replace(coverage, manifest=manifest)
    with pytest.raises(InputError, match="read no caption "):
        build_report([empty, audit_runs["zeroshot_trained"]], tmp_path / "r", n_bootstrap=0)


def test_colliding_names_get_distinct_figure_files(audit_runs, tmp_path):
    for name in ("web captions", "web_captions"):
        shutil.copytree(audit_runs["coverage"], tmp_path / name)
    result = build_report(
        [tmp_path / "web captions", tmp_path / "web_captions", audit_runs["zeroshot_trained"]],
        tmp_path / "report",
        n_bootstrap=0,
    )
    scatter = [e for e in result.summary["figures"] if e["kind"] == "coverage_vs_f1"]
    assert {e["corpus"] for e in scatter} == {"web captions", "web_captions"}
    files = {e["png"] for e in scatter}
    assert len(files) == 2
    for entry in scatter:
        assert (result.out / entry["png"]).is_file()
        assert Path(entry["png"]).parent == Path("figures")
        assert entry["stem"].startswith("coverage_vs_f1_web_captions_tiny-clip@trained-")


def test_a_report_is_rendered_again_only_when_its_inputs_change(audit_runs, tmp_path):
    runs = [tmp_path / "cov", tmp_path / "zs"]
    shutil.copytree(audit_runs["coverage"], runs[0])
    shutil.copytree(audit_runs["zeroshot_trained"], runs[1])
    out = tmp_path / "report"
    first = build_report(runs, out, n_bootstrap=0)
    assert not first.reused
    again = build_report(runs, out, n_bootstrap=0)
    assert again.reused and again.summary == first.summary
    manifest = json.loads((runs[1] / "manifest.json").read_text())
    manifest["created"] = "2030-01-01T00:00:00+00:00"  # the zero-shot run was done again
    (runs[1] / "manifest.json").write_text(json.dumps(manifest))
    changed = build_report(runs, out, n_bootstrap=0)
    assert not changed.reused
    recorded = json.loads((out / "manifest.json").read_text())["inputs"][1]["manifest_sha256"]
    assert recorded != first.manifest["inputs"][1]["manifest_sha256"]
    with pytest.raises(RunFolderError, match="seed: 0 -> 5"):
        build_report(runs, out, seed=5, n_bootstrap=0)
    assert (
        build_report(runs, out, seed=5, n_bootstrap=0, overwrite=True).summary["settings"]["seed"]
        == 5
    )


def test_what_cannot_be_reported_fails_with_a_typed_error(audit_runs, tmp_path, report):
    with pytest.raises(InputError, match="no zero-shot run given"):
        build_report([audit_runs["coverage"]], tmp_path / "a")
    with pytest.raises(InputError, match="no coverage run given"):
        build_report([audit_runs["zeroshot_trained"]], tmp_path / "b")
    with pytest.raises(InputError, match="no runs given"):
        build_report([], tmp_path / "c")
    with pytest.raises(InputError, match="holds a report run"):
        build_report([audit_runs["coverage"], report.out], tmp_path / "d")
    with pytest.raises(InputError, match="cannot report on an int;"):
        build_report(5, tmp_path / "e")
    with pytest.raises(InputError, match="cannot report on a dict"):
        build_report([{"coverage": 1}], tmp_path / "e")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(audit_runs["zeroshot_trained"], unfinished)
    manifest = json.loads((unfinished / "manifest.json").read_text())
    manifest.update(status="failed", reason="interrupted")
    (unfinished / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        RunFolderError,
        match=r"was stopped \(interrupted\), not complete; run the same command again to resume it",
    ):
        build_report([audit_runs["coverage"], unfinished], tmp_path / "f")
    with pytest.raises(SettingsError, match="seed must be an integer >= 0; got -1"):
        build_report([audit_runs["coverage"]], tmp_path / "g", seed=-1)
    with pytest.raises(SettingsError, match="n_bootstrap"):
        build_report([audit_runs["coverage"]], tmp_path / "g", n_bootstrap=1.5)
    assert not (tmp_path / "a").exists()


def test_damaged_runs_and_options_fail_with_a_typed_error(audit_runs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(audit_runs["coverage"], broken)
    (broken / "concepts.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(RunFolderError, match=r"broken holds a complete coverage run whose files"):
        build_report([broken, audit_runs["zeroshot_trained"]], tmp_path / "a")
    (broken / "concepts.parquet").unlink()
    with pytest.raises(RunFolderError, match=r"output 'concepts.parquet' is gone.*run the comm"):
        build_report([broken, audit_runs["zeroshot_trained"]], tmp_path / "b")
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "kind": ["coverage"]}))
    with pytest.raises(InputError, match="holds an unknown run"):
        build_report([broken, audit_runs["zeroshot_trained"]], tmp_path / "c")
    with pytest.raises(RunFolderError, match=r"unknown kind \['coverage'\]"):
        load_run(broken)
    # a zero-shot table overwritten with what holds none of its columns: damaged, not a KeyError
    awareness = tmp_path / "broken-zeroshot"
    shutil.copytree(audit_runs["zeroshot_trained"], awareness)
    (awareness / "concepts.csv").write_text("garbage,,\n")
    with pytest.raises(
        RunFolderError,
        match=r"broken-zeroshot holds a complete zeroshot run whose files cannot be read "
        r"\(ValueError: its concepts table has no column model, .*\); the folder is damaged",
    ):
        build_report([audit_runs["coverage"], awareness], tmp_path / "e")
    with pytest.raises(SettingsError, match=r"0 \(no intervals\) or at least 10; got 5"):
        build_report([audit_runs["coverage"]], tmp_path / "d", n_bootstrap=5)


def test_numpy_integers_are_accepted_as_seed_and_resamples(audit_runs, tmp_path):
    """``seed=np.int64(3)`` (a value read from an array or a DataFrame) was refused as no integer;
    it is one, and the manifest and summary record it as a plain JSON number."""
    runs = [audit_runs["coverage"], audit_runs["zeroshot_trained"]]
    result = build_report(runs, tmp_path / "r", seed=np.int64(3), n_bootstrap=np.uint16(20))
    assert result.summary["settings"]["seed"] == 3
    assert result.summary["settings"]["n_bootstrap"] == 20
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["settings"]["seed"] == 3 and manifest["settings"]["n_bootstrap"] == 20
    plain = build_report(runs, tmp_path / "p", seed=3, n_bootstrap=20)
    # the same settings as plain integers: the same intervals
    assert plain.summary["pairs"][0]["concepts"] == result.summary["pairs"][0]["concepts"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("seed", True),
        ("seed", np.bool_(True)),
        ("seed", 1.0),
        ("seed", np.float64(1.0)),
        ("seed", np.int64(-1)),
        ("n_bootstrap", np.float32(100)),
        ("n_bootstrap", False),
    ],
)
def test_bools_floats_and_negatives_are_refused_as_seed_and_resamples(
    audit_runs, tmp_path, name, value
):
    expected = re.escape(f"{name} must be an integer >= 0; got {value!r}")
    with pytest.raises(SettingsError, match=f"^{expected}$"):
        build_report([audit_runs["coverage"]], tmp_path / "r", **{name: value})
    assert not (tmp_path / "r").exists()


def _edited_copy(source, target: Path, manifest_changes=None, table=None, edit=None) -> Path:
    """A copy of a run folder with its manifest updated and ``edit`` applied to one CSV table."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, **(manifest_changes or {})}))
    if table is not None:
        frame = pd.read_csv(target / table)
        edit(frame)
        frame.to_csv(target / table, index=False)
    return target


@pytest.mark.parametrize(
    ("table", "column", "value", "message"),
    [
        ("concepts.csv", "f1", float("inf"), "concepts table holds inf in column f1; expected a share"),
        ("concepts.csv", "f1", "high", "concepts table holds 'high' in column f1, not a number"),
        ("concepts.csv", "f1", None, "concepts table has no f1 for 'dog'"),
        ("groups.csv", "macro_f1", 1.5, "groups table holds 1.5 in column macro_f1"),
    ],
)  # fmt: skip
def test_a_score_table_edited_or_cut_short_is_a_damaged_run(
    audit_runs, tmp_path, table, column, value, message
):
    def edit(frame):
        frame[column] = frame[column].astype(object)
        frame.loc[0, column] = value

    awareness = _edited_copy(audit_runs["zeroshot_trained"], tmp_path / "z", table=table, edit=edit)
    with pytest.raises(RunFolderError, match=rf"z holds a complete run whose {message}.*damaged"):
        build_report([audit_runs["coverage"], awareness], tmp_path / "r", n_bootstrap=0)
    assert not (tmp_path / "r").exists()


def test_manifest_fields_of_another_type_are_read_or_refused_plainly(audit_runs, tmp_path):
    # fields the report only reads the registry from: as if absent, the report is built
    coverage = _edited_copy(
        audit_runs["coverage"], tmp_path / "c", {"settings": "x", "registry": 5}
    )
    awareness = _edited_copy(audit_runs["zeroshot_trained"], tmp_path / "z", {"inputs": [1]})
    result = build_report([coverage, awareness], tmp_path / "r", n_bootstrap=0)
    assert result.summary["pairs"][0]["n_concepts"] == 16
    # what it lists as skipped must be records
    skipped = _edited_copy(audit_runs["zeroshot_trained"], tmp_path / "s", {"skipped_groups": [1]})
    with pytest.raises(RunFolderError, match=r"skipped_groups is no list of records with group"):
        build_report([audit_runs["coverage"], skipped], tmp_path / "r2", n_bootstrap=0)


def test_runs_of_one_name_are_told_apart_by_their_folders(audit_runs, tmp_path):
    for parent in ("laion", "coco", "odd $\\foo$ name"):
        shutil.copytree(audit_runs["coverage"], tmp_path / parent / "web-captions")
    runs = [tmp_path / parent / "web-captions" for parent in ("laion", "coco", "odd $\\foo$ name")]
    result = build_report([*runs, audit_runs["zeroshot_trained"]], tmp_path / "r", n_bootstrap=0)
    assert [c["label"] for c in result.summary["corpora"]] == [
        "laion/web-captions",
        "coco/web-captions",
        "odd $\\foo$ name/web-captions",
    ]  # and a "$" in a name is drawn as text, not parsed as math


def test_one_object_holding_both_runs_is_reported_alone(audit_runs, tmp_path):
    from types import SimpleNamespace

    audit = SimpleNamespace(
        coverage=load_run(audit_runs["coverage"]), zeroshot=load_run(audit_runs["zeroshot_trained"])
    )  # as an audit or a demo holds them
    result = build_report(audit, tmp_path / "r", n_bootstrap=0)
    assert len(result.summary["pairs"]) == 1 and result.summary["pairs"][0]["n_concepts"] == 16


def test_a_run_changed_in_memory_is_reported_again_not_reused(audit_runs, tmp_path):
    """A loaded run changed in memory keeps its manifest; the report of the tables as they were
    was returned as up to date (16 joined concepts where 13 remained)."""
    import pyarrow.compute as pc

    coverage = load_run(audit_runs["coverage"])
    zeroshot = load_run(audit_runs["zeroshot_trained"])
    out = tmp_path / "r"
    first = build_report([coverage, zeroshot], out, n_bootstrap=0)
    joined = first.tables["concepts"]
    dropped = int((joined["group"] == "Stereotype").sum())
    assert dropped > 0 and not first.reused
    table = coverage.arrow_tables["concepts"]
    without = dataclasses.replace(
        coverage,
        arrow_tables={
            **coverage.arrow_tables,
            "concepts": table.filter(pc.not_equal(table["group"], "Stereotype")),
        },
    )
    changed = build_report([without, zeroshot], out, n_bootstrap=0)
    assert not changed.reused
    assert changed.summary["pairs"][0]["n_concepts"] == len(joined) - dropped
    assert "Stereotype" not in set(changed.tables["concepts"]["group"])
    # the zero-shot side too: one group's rows filtered out in memory
    fewer = dataclasses.replace(
        zeroshot, concepts=zeroshot.concepts[zeroshot.concepts["group"] != "Color"]
    )
    again = build_report([coverage, fewer], out, n_bootstrap=0)
    assert not again.reused and "Color" not in set(again.tables["concepts"]["group"])
    # unchanged runs, loaded again or given by path, still reuse the report
    build_report([coverage, zeroshot], out, n_bootstrap=0)
    paths = [audit_runs["coverage"], audit_runs["zeroshot_trained"]]
    assert build_report(paths, out, n_bootstrap=0).reused


def test_a_table_or_a_mapping_given_as_runs_is_refused_naming_it(audit_runs, tmp_path):
    """Each was iterated: a DataFrame's column names and a dict's keys read as run folders
    ("concept does not exist; expected a run folder")."""
    coverage = load_run(audit_runs["coverage"])
    zeroshot = load_run(audit_runs["zeroshot_trained"])
    with pytest.raises(InputError, match=r"cannot report on a DataFrame; expected a run folder"):
        build_report(coverage.concepts, tmp_path / "a")
    with pytest.raises(InputError, match=r"cannot report on a dict; .*list\(runs\.values\(\)\)"):
        build_report({"coverage": coverage, "zeroshot": zeroshot}, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_report_is_drawn_again_when_an_output_is_gone(audit_runs, tmp_path):
    runs = [audit_runs["coverage"], audit_runs["zeroshot_trained"]]
    first = build_report(runs, tmp_path / "r", n_bootstrap=0)
    (first.out / "report.html").unlink()
    again = build_report(runs, tmp_path / "r", n_bootstrap=0)
    assert not again.reused and (again.out / "report.html").is_file()


@pytest.mark.parametrize("damaged", ["report.json", "tables/concepts.parquet"])
def test_a_report_is_drawn_again_when_an_output_is_damaged(audit_runs, tmp_path, damaged):
    """The same command on a report whose report.json or a table was cut short (a full disk, a
    copy stopped part-way) stopped with JSONDecodeError's or pyarrow's traceback, though the
    report is a pure function of its inputs and a deleted output is drawn again."""
    runs = [audit_runs["coverage"], audit_runs["zeroshot_trained"]]
    first = build_report(runs, tmp_path / "r", n_bootstrap=0)
    path = first.out / damaged
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RunFolderError, match="files cannot be read"):
        load_run(first.out)
    again = build_report(runs, tmp_path / "r", n_bootstrap=0)
    assert not again.reused
    assert json.loads((again.out / "report.json").read_text()) == first.summary
    assert pd.read_parquet(again.out / "tables" / "concepts.parquet").equals(
        first.tables["concepts"]
    )
    assert build_report(runs, tmp_path / "r", n_bootstrap=0).reused  # whole again: reused


def test_a_world_shows_its_chosen_rates_and_two_worlds_are_refused(audit_runs, tmp_path):
    """Two world runs (say a sweep's rates 0 and 0.5) were read one after the other and the last
    silently won: the page showed one world's chosen rates beside a corpus counted from the
    other's captions."""
    from clipaudit.world.settings import DEFAULT_MISALIGNMENT, WorldSettings
    from clipaudit.world.world import render_world_run

    runs = [audit_runs["coverage"], audit_runs["zeroshot_trained"]]
    tiny = {"image_size": 32, "n_train": 256, "n_eval_per_group": 8}
    first = render_world_run(WorldSettings(**tiny, seed=0), tmp_path / "w0")
    second = render_world_run(
        WorldSettings(**tiny, misalignment={**DEFAULT_MISALIGNMENT, "Texture": 0.5}, seed=1),
        tmp_path / "w1",
    )
    chosen = json.loads((first.out / "world.json").read_text())["rates"]["Texture"]
    result = build_report([*runs, first.out], tmp_path / "one", n_bootstrap=0)
    assert result.summary["truth"]["Texture"]["chosen_selection"] == chosen["chosen_selection"]
    (texture,) = [
        g
        for section in result.summary["overview"]
        for g in section["groups"]
        if g["group"] == "Texture"
    ]
    assert texture["truth"]["chosen_selection"] == chosen["chosen_selection"] != 0.5
    with pytest.raises(
        InputError, match=r"two world runs given \(.*w0, .*w1\); a report shows one"
    ):
        build_report([*runs, first.out, second.out], tmp_path / "two", n_bootstrap=0)
    assert not (tmp_path / "two").exists()


def test_chance_is_a_uniform_guess_among_the_concepts_an_image_is_classified(audit_runs, tmp_path):
    """With all_concepts every concept of a group is a candidate, imaged or not: chance is the
    macro-F1 of a uniform guess among them, over the imaged concepts (as many images each here),
    2 / (imaged + candidates), not 1 / candidates."""
    from clipaudit.models import ModelSpec
    from clipaudit.registry import load_registry
    from clipaudit.zeroshot import run_zeroshot
    from tests.report_world import IMAGED

    root = Path(audit_runs["root"])
    spec = ModelSpec(
        str(root / "models" / "tiny-clip.json"), str(root / "models" / "trained.safetensors")
    )
    run = run_zeroshot(spec, audit_runs["images"], tmp_path / "zs", groups=("Animal", "Color"),
                       all_concepts=True, cache_dir=None, workers=0, device="cpu", progress=False)  # fmt: skip
    registry = load_registry("cai2025")
    sizes = {g: len(registry.concepts_in(g)) for g in ("Animal", "Color")}
    groups = load_run(run.out).groups.set_index("group")
    for group, size in sizes.items():
        assert groups.loc[group, "n_concepts"] == len(IMAGED[group]) < size
        assert groups.loc[group, "n_candidates"] == size
    result = build_report([audit_runs["coverage"], run.out], tmp_path / "r", n_bootstrap=0)
    awareness = result.tables["awareness_groups"].set_index("group")
    joined = result.tables["groups"].set_index("group")
    for group, size in sizes.items():
        chance = 2 / (len(IMAGED[group]) + size)
        assert awareness.loc[group, "chance"] == pytest.approx(chance)
        assert joined.loc[group, "chance"] == pytest.approx(chance)


def test_a_concepts_trivial_f1_is_over_its_own_models_images(audit_runs, tmp_path, monkeypatch):
    """The bar a rarely captioned concept must pass to be called known is a trivial classifier's
    F1, 2p / (1 + p), p the concept's share of its group's images. A reviewer feared that with
    several models every model's shares were taken over the first model's image counts."""
    from clipaudit.models import ModelSpec
    from clipaudit.report import analysis
    from clipaudit.zeroshot import run_zeroshot
    from tests.report_world import IMAGED, IMAGES_PER_CONCEPT
    from tests.tiny_clip import write_image_folder

    # the second model is scored on other images: 1, 2, 3, ... per concept, so that each group
    # holds another number of images than in the first model's run (6 per concept)
    uneven = {g: {c: i + 1 for i, c in enumerate(cs)} for g, cs in IMAGED.items()}
    write_image_folder(tmp_path / "images", uneven, concept_colours=True)
    root = Path(audit_runs["root"]) / "models"
    spec = ModelSpec(str(root / "tiny-clip.json"), str(root / "random.safetensors"))
    run = run_zeroshot(spec, tmp_path / "images", tmp_path / "zs", groups=tuple(IMAGED),
                       cache_dir=None, workers=0, device="cpu", progress=False)  # fmt: skip
    images = {
        load_run(audit_runs["zeroshot_trained"]).models[0]: {
            g: dict.fromkeys(cs, IMAGES_PER_CONCEPT) for g, cs in IMAGED.items()
        },
        load_run(run.out).models[0]: uneven,
    }
    assert len(images) == 2

    floors = []
    trivial_f1 = analysis._trivial_f1

    def recorded(part, group_part, level):
        floor = trivial_f1(part, group_part, level)
        if level == "concept":
            floors.extend(zip(part["model"], part["group"], part["concept"], floor, strict=True))
        return floor

    monkeypatch.setattr(analysis, "_trivial_f1", recorded)
    paths = [audit_runs["coverage"], audit_runs["zeroshot_trained"], run.out]
    build_report(paths, tmp_path / "report", n_bootstrap=0)
    assert {model for model, *_ in floors} == set(images)
    for model, group, concept, floor in floors:
        share = images[model][group][concept] / sum(images[model][group].values())
        assert floor == pytest.approx(2 * share / (1 + share)), (model, group, concept)


def test_the_command_line_prints_the_headline_and_the_page(audit_runs, tmp_path, capsys):
    from clipaudit.cli import main

    out = tmp_path / "cli-report"
    main(["report", *_paths(audit_runs), "--out", str(out), "--n-bootstrap", "50", "--seed", "3"])
    printed = capsys.readouterr().out
    assert "web-captions x tiny-clip@trained: 16 concepts, Spearman 0." in printed
    assert f"report: {out / 'report.html'}" in printed
    saved = json.loads((out / "report.json").read_text())
    per_pair = saved["mismatch_counts"]
    # each concept or group named once, however many models miss its images
    distinct = {
        "concept_without_images": {
            (m["group"], m["concept"])
            for m in saved["mismatches"]
            if m["kind"] == "concept_without_images"
        },
        "group_without_images": {
            m["group"] for m in saved["mismatches"] if m["kind"] == "group_without_images"
        },
    }
    nouns = {"concept_without_images": ("concept", "concepts"), "group_without_images": ("group", "groups")}  # fmt: skip
    said = [  # "10 groups without images": the noun agrees with its count
        f"{len(distinct[kind])} {nouns[kind][len(distinct[kind]) != 1]} without images"
        + (f" ({n} over the corpus x model pairs)" if n != len(distinct[kind]) else "")
        for kind, n in per_pair.items()
    ]
    assert max(per_pair.values()) > 1, per_pair
    assert len(distinct["group_without_images"]) <= 15  # the registry's groups
    line = next(
        x for x in printed.splitlines() if x.startswith("mismatches (listed in the report): ")
    )
    assert sorted(line.split(": ", 1)[1].split(", ")) == sorted(said)
    # the page's menu counts them so too
    n_distinct = sum(len(names) for names in distinct.values())
    assert f"Mismatches ({n_distinct})</a>" in (out / "report.html").read_text(encoding="utf-8")
    assert json.loads((out / "manifest.json").read_text())["settings"]["seed"] == 3
    with pytest.raises(SystemExit) as exited:
        main(["report", audit_runs["coverage"], "--out", str(tmp_path / "x")])
    assert exited.value.code == 2
    assert "error: no zero-shot run given" in capsys.readouterr().err


# --------------------------------------------------------------------------- a theory run


@pytest.fixture(scope="module")
def theory_run(tmp_path_factory):
    """Two tiny scenarios (a few seconds of training): s1, s2 selected in one; s1 perturbed in
    the other (its coverage 0), as tests/test_theory.py's tiny check, smaller."""
    from clipaudit.theory.config import EvaluationSettings, Scenario, training_profile
    from clipaudit.theory.sweep import run_sweep

    scenarios = [
        Scenario(n_semantics=4, n_modality=1, selected="1-2"),
        Scenario(n_semantics=4, n_modality=1, selected="1-3", perturbed="1", change_prob=1.0),
    ]
    training = training_profile(
        "quick", steps=60, batch_size=128, hidden_widths=(16, 16), temperature=1.0
    )
    evaluation = EvaluationSettings(
        n_fit=300,
        n_val=100,
        n_test=300,
        kernel_components=50,
        n_prototypes=200,
        kernel_gammas=(1.0,),
        ridge_alphas=(0.1,),
    )
    out = tmp_path_factory.mktemp("theory")
    return run_sweep(scenarios, training, evaluation, out, progress=False)


def test_a_theory_run_is_reported_per_scenario(theory_run, tmp_path):
    result = build_report([theory_run.out], tmp_path / "theory-report", n_bootstrap=N_BOOTSTRAP)
    coverage = pd.read_parquet(theory_run.out / "coverage" / "concepts.parquet")
    awareness = pd.read_csv(theory_run.out / "zeroshot" / "concepts.csv")
    pairs = result.summary["pairs"]
    assert [p["kind"] for p in pairs] == ["theory", "theory"]
    assert [p["corpus"] for p in pairs] == [s.name for s in theory_run.scenarios]
    assert all(p["corpus"] == p["model"] for p in pairs)
    for pair in pairs:
        scenario = pair["corpus"]
        joined = coverage[coverage["model"] == scenario].merge(
            awareness[awareness["model"] == scenario], on=["group", "concept"]
        )
        n = (joined["count"] / joined["rate"])[joined["rate"] > 0].median()
        x = np.log10((joined["count"] + 0.5) / n)
        assert pair["concepts"]["n"] == len(joined) == 20
        assert pair["concepts"]["spearman"]["value"] == pytest.approx(
            scipy_stats.spearmanr(x, joined["f1"])[0]
        )
    # the perturbed scenario's s1 is a perturbed group there, invariant in the other
    groups = result.tables["groups"].set_index(["corpus", "group"])["category"]
    first, second = (s.name for s in theory_run.scenarios)
    assert groups[(first, "s1")] == "invariant" and groups[(second, "s1")] == "perturbed"
    assert result.summary["mismatches"] == []
    html = (result.out / "report.html").read_text()
    assert "theory scenario" in html and f"{pairs[0]['concepts']['spearman']['value']:.2f}" in html


# --------------------------------------------------------------------------- the notebook


@pytest.mark.parametrize("damage", ["missing", "not parquet", "no model column"])
def test_a_theory_run_with_a_damaged_table_is_refused(theory_run, tmp_path, damage):
    out = tmp_path / "theory"
    shutil.copytree(theory_run.out, out)
    table = out / "coverage" / "concepts.parquet"
    if damage == "missing":
        table.unlink()
        expected = r"output 'coverage/concepts.parquet' is gone \(1 of its files missing\)"
    elif damage == "not parquet":
        table.write_bytes(b"PAR1 not parquet")
        expected = r"coverage/concepts.parquet cannot be read \(ArrowInvalid"
    else:
        pd.read_parquet(table).drop(columns="model").to_parquet(table)
        expected = r"coverage/concepts.parquet has no column model"
    with pytest.raises(
        RunFolderError, match=rf"theory holds a complete (theory )?run whose {expected}"
    ):
        build_report([out], tmp_path / "r", n_bootstrap=0)


def test_a_theory_run_whose_manifest_settings_were_edited_is_still_reported(theory_run, tmp_path):
    out = tmp_path / "theory"
    shutil.copytree(theory_run.out, out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "settings": "x"}))
    result = build_report([out], tmp_path / "r", n_bootstrap=0)
    assert [p["corpus"] for p in result.summary["pairs"]] == [s.name for s in theory_run.scenarios]


def test_the_notebook_runs_in_a_real_kernel(audit_runs, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    notebook = REPO / "notebooks" / "audit_analysis.ipynb"
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps({**audit_runs, "report": str(tmp_path / "notebook-report")}))
    monkeypatch.setenv("CLIPAUDIT_AUDIT_RUNS", str(runs))
    document = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        document,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    client.execute()
    outputs = [o for cell in document.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(
        o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert "tiny-clip@trained" in text and "tiny-clip@random" in text
    last = document.cells[-1] if document.cells[-1].cell_type == "code" else document.cells[-2]
    assert "compare" in last.source.lower() or "model" in last.source.lower()
    assert (tmp_path / "notebook-report" / "report.html").is_file()


# --------------------------------------------------------------------------- confusion figures


def _counting_confusion(monkeypatch) -> list[str]:
    """The titles the one confusion drawing (figures.confusion) is called with, in order."""
    drawn: list[str] = []
    original = figures.confusion

    def counted(frame, title):
        drawn.append(title)
        return original(frame, title)

    monkeypatch.setattr(figures, "confusion", counted)
    return drawn


def _zeroshot_again(audit_runs, out: Path):
    from clipaudit.models import ModelSpec
    from clipaudit.zeroshot import run_zeroshot
    from tests.report_world import IMAGED

    models = Path(audit_runs["root"]) / "models"
    spec = ModelSpec(str(models / "tiny-clip.json"), str(models / "trained.safetensors"))
    return run_zeroshot(
        spec, audit_runs["images"], out, groups=tuple(IMAGED),
        cache_dir=None, workers=0, device="cpu", progress=False,
    )  # fmt: skip


def test_an_audit_draws_each_confusion_matrix_once(audit_runs, tmp_path, monkeypatch):
    """The zero-shot stage and the report each drew every confusion matrix, with two functions
    of their own (two looks for one figure): now the zero-shot run draws each once and records
    what it drew, and the report copies those figures instead of drawing them again."""
    from tests.report_world import IMAGED

    drawn = _counting_confusion(monkeypatch)
    zeroshot = _zeroshot_again(audit_runs, tmp_path / "zeroshot")
    label = zeroshot.models[0]
    assert sorted(drawn) == sorted(
        f"{label} / {group}: macro-F1 {score:.2f}"
        for group, score in zeroshot.groups.set_index("group")["macro_f1"].items()
    )
    assert len(drawn) == len(IMAGED)
    report = build_report([audit_runs["coverage"], zeroshot], tmp_path / "report", n_bootstrap=0)
    assert len(drawn) == len(IMAGED)  # none drawn again
    shown = [e for e in report.summary["figures"] if e["kind"] == "confusion"]
    assert sorted(e["group"] for e in shown) == sorted(IMAGED)
    for entry in shown:
        source = zeroshot.out / "confusion" / label / entry["group"]
        for fmt in ("png", "svg"):
            copied = (report.out / entry[fmt]).read_bytes()
            assert copied == source.with_suffix(f".{fmt}").read_bytes()
        # the page's size of the figure is the image's own
        assert (entry["width"], entry["height"]) == _png_size(report.out / entry["png"])
    # a report of a run that recorded no figures (an older one) draws them all, the same
    older = _edited_copy(zeroshot.out, tmp_path / "older", {"confusion_figures": None})
    again = build_report([audit_runs["coverage"], older], tmp_path / "again", n_bootstrap=0)
    assert len(drawn) == 2 * len(IMAGED)
    for entry, other in zip(report.summary["figures"], again.summary["figures"], strict=True):
        assert (again.out / other["png"]).read_bytes() == (report.out / entry["png"]).read_bytes()
        assert other == entry


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def test_a_stale_confusion_figure_is_drawn_again(audit_runs, tmp_path, monkeypatch):
    """A recorded figure is reused only when it is of the matrix and title the report shows and
    its files are those the run wrote: not when its table changed since, nor when its image was
    swapped for another's, nor when the record points out of the run's folder."""
    source = Path(audit_runs["zeroshot_trained"])
    label = load_run(source).models[0]
    folder = tmp_path / "zeroshot"
    shutil.copytree(source, folder)
    matrices = folder / "confusion" / label
    # Animal's counts changed: the figure on disk is of other data
    table = pd.read_csv(matrices / "Animal.csv", dtype=str, keep_default_na=False)
    counts = table.iloc[:, 1:].astype(int)
    table.iloc[:, 1:] = counts.to_numpy()[:, ::-1].astype(str)
    table.to_csv(matrices / "Animal.csv", index=False)
    # Color's image is Texture's: the file is not the one recorded
    for fmt in ("png", "svg"):
        shutil.copyfile(matrices / f"Texture.{fmt}", matrices / f"Color.{fmt}")
    # Emotion's record points out of the folder, at a copy of its own files
    manifest = json.loads((folder / "manifest.json").read_text())
    for record in manifest["confusion_figures"]:
        if record["group"] == "Emotion":
            for fmt in ("png", "svg"):
                outside = tmp_path / f"Emotion.{fmt}"
                shutil.copyfile(matrices / f"Emotion.{fmt}", outside)
                record[fmt]["path"] = f"../{outside.name}"
    (folder / "manifest.json").write_text(json.dumps(manifest))

    drawn = _counting_confusion(monkeypatch)
    report = build_report([audit_runs["coverage"], folder], tmp_path / "report", n_bootstrap=0)
    assert sorted(title.split(":")[0] for title in drawn) == [
        f"{label} / {group}" for group in ("Animal", "Color", "Emotion")
    ]
    shown = {e["group"]: e for e in report.summary["figures"] if e["kind"] == "confusion"}
    fresh = build_report(
        [
            audit_runs["coverage"],
            _edited_copy(folder, tmp_path / "plain", {"confusion_figures": []}),
        ],
        tmp_path / "fresh",
        n_bootstrap=0,
    )  # every figure drawn by the report itself
    for entry in fresh.summary["figures"]:
        if entry["kind"] == "confusion":
            ours = report.out / shown[entry["group"]]["png"]
            assert ours.read_bytes() == (fresh.out / entry["png"]).read_bytes(), entry["group"]
    assert (report.out / shown["Animal"]["png"]).read_bytes() != (
        matrices / "Animal.png"
    ).read_bytes()


def test_a_confusion_figure_draws_dollar_signs_as_written(tmp_path):
    """Names are text, not mathtext: an unknown command between "$" fails no run."""
    labels = ["$\\undefinedcmd$ Colour", "$x^{2}$"]
    frame = pd.DataFrame([[2, 1], [0, 3]], index=labels, columns=labels)
    written = figures.write_confusion(frame, "model $\\bad$ on $\\undefinedcmd$", tmp_path, "m")
    assert written["png"].read_bytes()[:4] == b"\x89PNG"
    assert "$\\undefinedcmd$ Colour" in written["svg"].read_text()


def _relative_luminance(rgb) -> float:
    channels = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]


def test_a_confusion_matrixs_counts_are_legible_on_their_cells():
    """A count was white wherever its row share passed one half: on the Blues map's middle
    blues that is 2.8:1 (share 0.55), below WCAG AA's 4.5:1; black there is 7.6:1."""
    import matplotlib
    from matplotlib.colors import to_rgb

    # row shares from 0.5 to 1: the middle blues, where the ink's choice matters
    counts = [[11, 9], [3, 2], [2, 1], [3, 1], [9, 1], [1, 1], [0, 5]]
    rows = [f"t{i}" for i in range(len(counts))]
    frame = pd.DataFrame(counts, index=rows, columns=["p0", "p1"])
    with matplotlib.rc_context({"text.parse_math": False}):
        figure = figures.confusion(frame, "m / g")
    axis = figure.axes[0]
    blues = matplotlib.colormaps["Blues"]
    texts = [t for t in axis.texts if t.get_text().strip()]
    assert len(texts) == np.count_nonzero(counts)
    for text in texts:
        col, row = (round(v) for v in text.get_position())
        share = counts[row][col] / sum(counts[row])
        cell = _relative_luminance(blues(share)) + 0.05
        ink = _relative_luminance(to_rgb(text.get_color())) + 0.05
        ratio = max(cell, ink) / min(cell, ink)
        assert ratio >= 4.5, f"{text.get_text()} at share {share:.2f}: {ratio:.2f}:1"


def test_a_long_concept_name_leaves_the_confusion_matrix_whole(tmp_path, recwarn):
    """A concept named by one word of 120 letters took the figure's whole width: the layout
    collapsed (the axis labels fell off, the name was cut at the edge). Names are shortened on
    the axes, keeping their start and end; the table beside the figure holds them whole."""
    long = "photograph" * 12
    labels = [long, "cat", "horse"]
    frame = pd.DataFrame([[5, 1, 0], [0, 6, 0], [1, 0, 5]], index=labels, columns=labels)
    written = figures.write_confusion(frame, "model / Animal: macro-F1 0.80", tmp_path, "m")
    assert [str(w.message) for w in recwarn if "layout" in str(w.message)] == []
    figure = figures.confusion(frame, "model / Animal: macro-F1 0.80")
    figures.freeze_layout(figure)
    axis = figure.axes[0]
    box = axis.get_window_extent()
    assert box.width > 0.4 * figure.bbox.width and box.height > 0.4 * figure.bbox.height
    renderer = figure.canvas.get_renderer()
    shown = [*axis.get_xticklabels(), *axis.get_yticklabels(), axis.xaxis.label, axis.yaxis.label]
    for text in shown:
        extent = text.get_window_extent(renderer)
        assert extent.x0 >= 0 and extent.y0 >= 0, text.get_text()
        assert extent.x1 <= figure.bbox.width and extent.y1 <= figure.bbox.height, text.get_text()
    ticks = [t.get_text() for t in axis.get_yticklabels()]
    assert ticks[1:] == ["cat", "horse"]
    assert ticks[0].startswith(long[:8]) and ticks[0].endswith(long[-8:]) and "…" in ticks[0]
    assert len(ticks[0]) < 40
    assert _png_size(written["png"])[0] < 700


def test_runs_of_two_registries_are_said_to_differ_on_top_and_few_points_are_no_finding(
    audit_runs, tmp_path
):
    """Coverage counted with miniworld joined with a zero-shot run of cai2025 exited 0, joined a
    few colour concepts by name and headlined "Spearman 0.11 [-1.00, 1.00]": the mismatch sat in
    a list further down, and an interval spanning every correlation was shown as a finding. The
    notes on top (page, Markdown, command line) say which registries and how many concepts
    joined; a statistic whose interval is all of [-1, 1] is n/a with its reason, as too few
    points are, its estimate kept in the data."""
    from html import unescape as html_unescape

    from clipaudit.coverage import count_coverage
    from clipaudit.registry import load_registry
    from clipaudit.report.render import markdown_text

    corpus = Path(audit_runs["root"]) / "corpus.parquet"
    coverage = count_coverage([corpus], "miniworld", tmp_path / "cov", workers=1, progress=False)
    zeroshot = load_run(audit_runs["zeroshot_trained"])
    # F1 of the colours not in the order of their coverage (the trained model knows all four)
    scores = zeroshot.concepts.copy()
    shuffled = {"red": 0.5, "blue": 0.2, "green": 0.6, "yellow": 0.3}
    scores["f1"] = [
        shuffled.get(c, f) for c, f in zip(scores["concept"], scores["f1"], strict=True)
    ]
    zeroshot = dataclasses.replace(zeroshot, concepts=scores)
    result = build_report([coverage.out_dir, zeroshot], tmp_path / "r", n_bootstrap=N_BOOTSTRAP)
    mini, cai = load_registry("miniworld"), load_registry("cai2025")
    scored = set(zip(zeroshot.concepts["group"], zeroshot.concepts["concept"], strict=True))
    joined = {(c.group, c.name) for c in mini.concepts} & scored
    assert 2 < len(joined) < 10  # a handful of colours: the join is by name, across registries
    (pair,) = result.summary["pairs"]
    assert pair["n_concepts"] == len(joined)
    note = result.summary["notes"][0]  # first: what the page shows on top
    for said in (
        f"registry 'miniworld' (sha256 {mini.sha256[:12]})",
        f"registry 'cai2025' (sha256 {cai.sha256[:12]})",
        f"{len(joined)} concepts joined by name",
        pair["corpus"],
        pair["model"],
    ):
        assert said in note, (said, note)
    page = (result.out / "report.html").read_text(encoding="utf-8")
    top = page.index('<div class="warn">')
    assert note in html_unescape(page[top : page.index("</div>", top)])
    markdown = (result.out / "report.md").read_text(encoding="utf-8")
    assert f"> {markdown_text(note)}" in markdown
    headline = result.headline()
    assert f"note: {note}" in headline

    # the interval of so few points: computed here from the joined rows, all of [-1, 1]
    rows = result.tables["concepts"]
    x = stats.log_coverage(rows["count"], result.summary["corpora"][0]["n_captions"])
    again = stats.correlate(
        x,
        rows["f1"],
        seed=stats.stream_seed(0, pair["corpus"], pair["model"], pair["method"], "concept"),
        n_bootstrap=N_BOOTSTRAP,
    )
    for name in ("spearman", "kendall"):
        assert (again[name]["ci_low"], again[name]["ci_high"]) == pytest.approx((-1, 1))
        shown = pair["concepts"][name]
        assert shown["value"] is None
        assert shown["estimate"] == pytest.approx(again[name]["value"])
        assert "-1 to 1" in shown["reason"]
    line = next(line for line in headline.splitlines() if line.startswith(f"  {pair['corpus']}"))
    assert "Spearman n/a (" in line and "[-1.00, 1.00]" not in line
