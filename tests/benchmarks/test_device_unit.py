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
           "DEVICE_RUN_BATCH_SIZE": "8", "DEVICE_RUN_BACKEND_S": "500", "DEVICE_RUN_MODELS": "VGG16"}
    done = subprocess.run(["bash", str(REPO / "benchmarks/device_run.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / f"device_unit_{backend}.json").read_text())
    rows = results["rows"]
    assert results["device"] == "CPU"
    # one network of the two (a second runs the same code), each strategy in each precision
    assert {(r["model"], r["ft_fraction"], r["precision"]) for r in rows} == {
        ("VGG16", f, p) for f in (0.15, 1.0) for p in ("float32", "mixed_bfloat16")}
    for row in rows:
        assert row["path"] == ("full network" if row["ft_fraction"] == 1.0 else "frozen-prefix cache")
        assert row["fit_images"] == 16 and row["validation_images"] == 4
        assert row["training_images_per_s"] > 0 and row["host_peak_mb"] > 0
        # the limit is this CPU's measured matrix rate, which no training step reaches
        assert row["matrix_macs_per_s"] > 1e9 and 0 < row["share_of_limit"] < 1
        assert row["unit_estimate_s"] > 5 * 15 * row["steady_epoch_s"]
        assert row["unit_step_overhead_s"] > 0 and row["unit_floor_s"] > 0
    markdown = tmp_path / f"device_unit_{backend}.md"
    assert recorded_timed_code(markdown) == ("device_unit", timed_code("device_unit"))
    assert "device: CPU" in (tmp_path / "device_run.log").read_text()


def unit_row(**changes) -> dict:
    """One fold's measurements: 100 images (64 fit, 16 validation, 20 test), tail 10 and prefix 30 multiply-adds."""
    return {"tail_macs": 10, "prefix_macs": 30, "cached": True, "images": 100, "fit_images": 64,
            "validation_images": 16, "steady_epoch_s": 2.0, "before_training_s": 5.0, "first_epoch_s": 4.0,
            "test_and_features_s": 1.0, "later_test_and_features_s": 0.5} | changes


def test_the_limit_counts_the_frozen_prefix_only_on_the_full_network_path():
    cached = device_unit.with_rates(unit_row(), 6000.0, unit_epochs=10)
    assert cached["training_images_per_s"] == 32.0 and cached["limit_images_per_s"] == 200.0   # 6000 / (3 x 10)
    plain = device_unit.with_rates(unit_row(cached=False), 6000.0, unit_epochs=10)
    assert plain["limit_images_per_s"] == 100.0                                                # 6000 / (30 + 30)
    # fixed cost (5 + 4 - 2) once, then five folds of ten steady epochs and the test and features: the first
    # fold's reads, which trace, and four later ones
    assert cached["unit_estimate_s"] == 7.0 + 5 * 10 * 2.0 + 1.0 + 4 * 0.5


def test_the_unit_splits_into_arithmetic_per_step_overhead_and_fixed_cost_that_sum_to_it():
    unit = device_unit.with_rates(unit_row(), 6000.0, unit_epochs=10)
    epoch_floor = (64 * 3 * 10 + 16 * 10) / 6000           # training and validation of one steady epoch
    # the prefix once, 5 folds x 10 epochs, and per fold the test fold and every image's features
    assert unit["unit_floor_s"] == pytest.approx((100 * 30 + 50 * 6000 * epoch_floor + 5 * (20 + 100) * 10) / 6000)
    assert unit["unit_step_overhead_s"] == pytest.approx(50 * (2.0 - epoch_floor))
    assert unit["unit_floor_s"] + unit["unit_step_overhead_s"] + unit["unit_fixed_s"] == pytest.approx(
        unit["unit_estimate_s"])
    assert unit["unit_fixed_s"] > 0
