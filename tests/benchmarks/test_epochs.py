import pytest

from benchmarks import epochs


def test_every_path_is_timed_per_epoch_in_every_round_and_the_cached_ones_are_the_stages_paths(monkeypatch):
    # In this process rather than a fresh one each (the benchmark's isolation, not what is tested here).
    monkeypatch.setattr(epochs, "in_fresh_process", epochs.epoch_times)
    row = epochs.epoch_row("VGG16", 0.15, image_size=32, images=8, epochs=3, batch_size=4, rounds=2)
    runs = row["runs"]
    assert {run["path"] for run in runs["plain"]} == {"plain fit"}
    assert {run["path"] for run in runs["cached"]} == {"frozen-prefix cache memory"}
    assert {run["path"] for run in runs["memory-mapped"]} == {"frozen-prefix cache memory-mapped file"}
    for path_runs in runs.values():
        assert len(path_runs) == 2
        assert all(run["steady_s"] > 0 and run["peak_mb"] > 100 for run in path_runs)
    # The headline ratio is of the fastest rounds; the per-round ones pair each round's runs.
    assert row["plain_epoch_s"] == min(run["steady_s"] for run in runs["plain"])
    assert row["round_speedups"] == pytest.approx(
        [p["steady_s"] / c["steady_s"] for p, c in zip(runs["plain"], runs["cached"])])
    assert row["round_mapped_speedups"] == pytest.approx(
        [p["steady_s"] / m["steady_s"] for p, m in zip(runs["plain"], runs["memory-mapped"])])


def test_the_table_says_where_a_cached_path_is_slower_than_plain_and_how_far_its_rounds_spread():
    row = {"model": "InceptionV3", "image_size": 80, "ft_fraction": 0.5, "plain_epoch_s": 2.35,
           "cached_epoch_s": 2.61, "mapped_epoch_s": 2.2, "speedup": 2.35 / 2.61, "mapped_speedup": 2.35 / 2.2,
           "round_speedups": [0.9, 1.12, 0.95], "round_mapped_speedups": [1.07, 1.0, 1.2],
           "ideal_speedup": 1.59, "plain_fixed_s": 13.3, "cached_fixed_s": 11.7, "mapped_fixed_s": 12.0,
           "plain_peak_mb": 900.0, "cached_peak_mb": 800.0, "mapped_peak_mb": 700.0}
    table = epochs.epochs_table([row])
    assert "| 2.35 " in table and "| 2.61 " in table and "| 0.90× / 1.07× " in table and "| 1.59× " in table
    assert "| 0.90–1.12× / 1.00–1.20× " in table
