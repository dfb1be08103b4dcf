from benchmarks import epochs


def test_both_paths_are_timed_per_epoch_and_the_cached_one_is_the_stages_path():
    plain = epochs.epoch_times("VGG16", 0.15, False, 32, 8, 3, 4)
    cached = epochs.epoch_times("VGG16", 0.15, True, 32, 8, 3, 4)
    assert plain["path"] == "plain fit" and cached["path"] == "frozen-prefix cache"
    assert plain["steady_s"] > 0 and cached["steady_s"] > 0
    assert plain["peak_mb"] > 100 and cached["peak_mb"] > 100


def test_the_table_says_where_the_cached_path_is_slower_than_plain():
    row = {"model": "InceptionV3", "image_size": 80, "ft_fraction": 0.5, "plain_epoch_s": 2.35,
           "cached_epoch_s": 2.61, "speedup": 2.35 / 2.61, "ideal_speedup": 1.59, "plain_fixed_s": 13.3,
           "cached_fixed_s": 11.7, "plain_peak_mb": 900.0, "cached_peak_mb": 800.0}
    assert "| InceptionV3 | 80   | 0.5           | 2.35             | 2.61              | 0.90×     | 1.59×" \
        in epochs.epochs_table([row])
