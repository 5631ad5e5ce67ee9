"""``--ray-address auto`` as a user on a node types it: it joins the one Ray running on this
machine, and the manifest names that cluster; with none running, one line says so before a run
folder is made. Skipped where Ray is absent; these run their own Ray, so each skips where other
Rays run on this machine (``auto`` would find them)."""

from __future__ import annotations

import json
import os
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import short_temp_dir
from tests.test_coverage import REPO, cli
from tests.test_coverage_ray import local_ray  # skips this module too where Ray is absent

pytestmark = pytest.mark.usefixtures("one_ray_at_a_time")


def running_rays() -> int:
    import psutil

    return sum(1 for p in psutil.process_iter(["name"]) if p.info["name"] == "gcs_server")


def count_auto(tmp_path, env=None):
    corpus = tmp_path / "one.parquet"
    pq.write_table(pa.table({"caption": ["a red cat", "a dog"]}), corpus)
    args = ("count", str(corpus), "--out", str(tmp_path / "run"), "--no-progress")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | (env or {})
    return subprocess.run(
        cli(*args, "--engine", "ray", "--ray-address", "auto"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ray_address_auto_with_no_ray_running_is_one_line_before_a_run_folder(tmp_path):
    if running_rays():
        pytest.skip("a Ray runs on this machine: auto would find it")
    failed = count_auto(tmp_path)
    assert failed.returncode == 2, failed.stderr
    (error,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: --ray-address auto found no Ray running on this machine")
    assert "--address flag" not in error  # Ray's own CLI flag, not clipaudit's
    assert "drop --ray-address" in error
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ray_address_auto_joins_the_ray_running_here_and_the_manifest_names_it(tmp_path):
    if running_rays():
        pytest.skip("a Ray already runs on this machine: auto would not know which to join")
    with short_temp_dir("r") as temp, local_ray(temp, num_cpus=1) as address:
        done = count_auto(tmp_path)
    assert done.returncode == 0, done.stderr
    timings = json.loads((tmp_path / "run" / "manifest.json").read_text())["timings"]
    assert timings["ray_address"] == address  # the cluster joined, not the word "auto"
