"""The embedded demo: what clipaudit measures on the caption world equals what the world planted."""

from __future__ import annotations

import json

import pytest

from clipaudit.demo import DemoSettings, run_demo, world_captions
from clipaudit.errors import SettingsError


def test_world_is_seeded_and_mentions_groups_at_the_chosen_rates(registry):
    settings = DemoSettings(n_captions=4000, seed=3)
    captions, planted = world_captions(registry, settings)
    assert (captions, planted) == world_captions(registry, settings)
    assert world_captions(registry, DemoSettings(n_captions=4000, seed=4))[0] != captions
    group_of = {c.name: c.group for c in registry.concepts}
    for group, rate in settings.mention_rates.items():
        share = sum(any(group_of[c] == group for c in p) for p in planted) / len(planted)
        # binomial standard error at n=4000 is at most 0.008: 5 of them is a loose, honest bound
        assert abs(share - rate) < 0.04, (group, share, rate)


def test_demo_measures_exactly_the_planted_coverage(tmp_path):
    summary = run_demo(tmp_path, DemoSettings(n_captions=1500, workers=1), echo=lambda _: None)
    assert summary["planted_mentions_found"]["fp"] == 0
    assert summary["planted_mentions_found"]["fn"] == 0
    for row in summary["coverage"]:
        assert row["measured_rate"] == pytest.approx(row["planted_rate"]), row
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["settings"]["seed"] == 0
    assert written["registry"]["name"] == "cai2025"
    assert (tmp_path / "coverage" / "groups.csv").exists()


def test_bad_demo_settings_fail_before_any_work():
    with pytest.raises(SettingsError, match="n_captions must be an integer >= 100, got 5"):
        DemoSettings(n_captions=5)
    with pytest.raises(SettingsError, match="mention rate of 'Color' must lie in"):
        DemoSettings(mention_rates={"Color": 1.5})
