"""The CPU kernels benchmark's configurations (its runs are whole folds: see benchmarks/cpu_kernels.py)."""

from benchmarks.cpu_kernels import CONFIGURATIONS, configuration_environment


def test_only_the_heap_row_runs_with_glibcs_default_heap_whatever_the_caller_set(monkeypatch):
    monkeypatch.setenv("MALLOC_TOP_PAD_", "999")
    by_label = {label: configuration_environment(backend, env) for label, backend, _, _, env in CONFIGURATIONS}
    heap_rows = [label for label, env in by_label.items() if "MALLOC_TOP_PAD_" in env]
    assert heap_rows == ["TensorFlow, op determinism, glibc's default heap"]
    assert by_label[heap_rows[0]]["MALLOC_TOP_PAD_"] == "131072"
    default = by_label["TensorFlow, op determinism (the default)"]
    assert default["KERAS_BACKEND"] == "tensorflow" and "TF_ENABLE_ONEDNN_OPTS" not in default
    assert by_label["TensorFlow, op determinism, no oneDNN"]["TF_ENABLE_ONEDNN_OPTS"] == "0"
