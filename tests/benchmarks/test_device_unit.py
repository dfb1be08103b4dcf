"""The prepared GPU run, dry-run on the CPU at tiny sizes: the script as a device machine runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from benchmarks import device_unit
from benchmarks.results import recorded_timed_code, timed_code

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_device_run_script_measures_every_row_on_the_cpu_and_writes_its_results_to_out(tmp_path):
    backend = keras.backend.backend()
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "DEVICE_RUN_BACKENDS": backend,
           "DEVICE_RUN_IMAGES": "25", "DEVICE_RUN_IMAGE_SIZE": "32", "DEVICE_RUN_EPOCHS": "2",
           "DEVICE_RUN_BATCH_SIZE": "8", "DEVICE_RUN_BACKEND_S": "500"}
    done = subprocess.run(["bash", str(REPO / "benchmarks/device_run.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / f"device_unit_{backend}.json").read_text())
    rows = results["rows"]
    assert results["device"] == "CPU"
    assert {(r["model"], r["ft_fraction"], r["precision"]) for r in rows} == {
        (m, f, p) for m in ("ResNet50", "VGG16") for f in (0.15, 1.0) for p in ("float32", "mixed_bfloat16")}
    for row in rows:
        assert row["path"] == ("full network" if row["ft_fraction"] == 1.0 else "frozen-prefix cache")
        assert row["fit_images"] == 16 and row["validation_images"] == 4
        assert row["training_images_per_s"] > 0 and row["host_peak_mb"] > 0
        assert row["limit_images_per_s"] is None                 # no card: no limit claimed
        assert row["unit_estimate_s"] > 5 * 15 * row["steady_epoch_s"]
    markdown = tmp_path / f"device_unit_{backend}.md"
    assert recorded_timed_code(markdown) == ("device_unit", timed_code("device_unit"))
    assert "device: CPU" in (tmp_path / "device_run.log").read_text()


def test_the_limit_counts_the_frozen_prefix_only_on_the_full_network_path():
    row = {"tail_macs": 10, "prefix_macs": 30, "cached": True, "fit_images": 60, "steady_epoch_s": 2.0,
           "before_training_s": 5.0, "first_epoch_s": 4.0, "test_and_features_s": 1.0}
    cached = device_unit.with_rates(dict(row), 600.0, unit_epochs=10)
    assert cached["training_images_per_s"] == 30.0 and cached["limit_images_per_s"] == 20.0   # 600 / (3 x 10)
    plain = device_unit.with_rates(dict(row, cached=False), 600.0, unit_epochs=10)
    assert plain["limit_images_per_s"] == 10.0                                                 # 600 / (30 + 30)
    # fixed cost (5 + 4 - 2) once, then five folds of ten steady epochs and the test and features
    assert cached["unit_estimate_s"] == 7.0 + 5 * (10 * 2.0 + 1.0)
