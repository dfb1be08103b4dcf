import json
import re

from benchmarks import gpu


def test_the_gpu_benchmark_runs_on_the_cpu_at_tiny_sizes_and_writes_its_results(tmp_path, capsys):
    gpu.main(["--models", "VGG16", "--precisions", "float32", "mixed_bfloat16", "--image-size", "32",
              "--batch-size", "4", "--steps", "2", "--warmup", "1", "--results-dir", str(tmp_path)])
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert results["device"] == "CPU" and [r["precision"] for r in results["rows"]] == ["float32", "mixed_bfloat16"]
    for row in results["rows"]:
        assert row["prefix_macs"] > 0 and row["tail_macs"] > 0
        assert min(row["plain_images_per_s"], row["cached_images_per_s"], row["extract_images_per_s"]) > 0
        assert row["plain_limit_images_per_s"] is None        # no card, no peak: no limit claimed
    markdown = (tmp_path / "gpu.md").read_text()
    assert re.search(r"\| VGG16 +\| float32 ", markdown) and "no limit, the card's peak is not known" in markdown
    assert "device: CPU" in capsys.readouterr().out


def test_the_limit_is_the_peak_over_the_multiply_adds_of_each_path():
    assert gpu.peak_macs_per_s("NVIDIA H200", "float32", None) == 67.0e12 / 2
    assert gpu.peak_macs_per_s("NVIDIA H200", "mixed_bfloat16", None) == 989.0e12 / 2
    assert gpu.peak_macs_per_s("Some new card", "float32", None) is None
    row = gpu.with_limits({"prefix_macs": 3, "tail_macs": 1, "plain_images_per_s": 3.0, "cached_images_per_s": 6.0,
                           "extract_images_per_s": 10.0}, peak=60.0)
    assert row["plain_limit_images_per_s"] == 10.0 and row["plain_share_of_limit"] == 0.3   # 60 / (3 + 3 x 1)
    assert row["cached_limit_images_per_s"] == 20.0 and row["extract_limit_images_per_s"] == 15.0
    assert row["cached_over_plain"] == 2.0
