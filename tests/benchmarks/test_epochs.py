from benchmarks import epochs


def test_every_path_is_timed_per_epoch_and_the_cached_ones_are_the_stages_paths():
    times = {name: epochs.epoch_times("VGG16", 0.15, name, 32, 8, 3, 4) for name in epochs.PATHS}
    assert times["plain"]["path"] == "plain fit"
    assert times["cached"]["path"] == "frozen-prefix cache memory"
    assert times["memory-mapped"]["path"] == "frozen-prefix cache memory-mapped file"
    for measured in times.values():
        assert measured["steady_s"] > 0 and measured["peak_mb"] > 100


def test_the_table_says_where_a_cached_path_is_slower_than_plain():
    row = {"model": "InceptionV3", "image_size": 80, "ft_fraction": 0.5, "plain_epoch_s": 2.35,
           "cached_epoch_s": 2.61, "mapped_epoch_s": 2.2, "speedup": 2.35 / 2.61, "mapped_speedup": 2.35 / 2.2,
           "ideal_speedup": 1.59, "plain_fixed_s": 13.3, "cached_fixed_s": 11.7, "mapped_fixed_s": 12.0,
           "plain_peak_mb": 900.0, "cached_peak_mb": 800.0, "mapped_peak_mb": 700.0}
    table = epochs.epochs_table([row])
    assert "| 2.35 " in table and "| 2.61 " in table and "| 0.90× / 1.07× " in table and "| 1.59× " in table
