"""The heap benchmark's reading of its runs (its runs themselves are whole ``finetune`` stages: minutes)."""

from benchmarks.heap import RUNS, SETTINGS, differing_outputs, network_row, stage_outputs


def a_run(seconds: float, outputs: dict[str, str], faults: int = 1000, first: dict[str, str] | None = None) -> dict:
    """A run as the benchmark records it, compared with the first kept run's outputs (``first``; itself if None)."""
    return {"seconds": seconds, "user_s": seconds, "system_s": seconds / 10, "page_faults": faults, "peak_mb": 1500.0,
            "outputs": outputs, "differing_from_kept_run_1": differing_outputs(first or outputs, outputs)}


def test_each_setting_reads_its_fastest_run_and_the_outputs_are_checked_in_every_run():
    same = {"models/phantom/VGG16/weights/fold1.weights.npz": "ab"}
    runs = {"kept": [a_run(40.0, same, 500), a_run(36.0, same, 400)],
            "glibc default": [a_run(50.0, same, 9000), a_run(48.0, same, 8000)]}
    row = network_row("VGG16", runs)
    assert row[:3] == ["VGG16", "48.0 / 36.0", "0.75×"]
    assert row[4] == "8,000 / 400"
    assert row[-1] == "yes"
    # One run of one setting wrote another file: reported, whichever run it was.
    runs["glibc default"][0] = a_run(50.0, {**same, "models/phantom/VGG16/training/history.csv": "cd"}, first=same)
    assert network_row("VGG16", runs)[-1] == "**no**, against kept run 1: glibc default run 1: 1 files"
    assert runs["glibc default"][0]["differing_from_kept_run_1"] == ["models/phantom/VGG16/training/history.csv"]
    # A file written differently (not only one more file) counts too.
    assert differing_outputs(same, {"models/phantom/VGG16/weights/fold1.weights.npz": "ef"}) == [
        "models/phantom/VGG16/weights/fold1.weights.npz"]


def test_outputs_are_every_file_the_stage_wrote_for_the_network(tmp_path):
    for relative in ["models/phantom/VGG16/weights/fold1.weights.npz", "models/phantom/VGG16/training/history.csv",
                     "data/features/phantom/VGG16/fold1.npz", "models/phantom/VGG19/weights/fold1.weights.npz"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(relative)
    digests = stage_outputs(tmp_path, "VGG16")
    assert sorted(digests) == ["data/features/phantom/VGG16/fold1.npz", "models/phantom/VGG16/training/history.csv",
                               "models/phantom/VGG16/weights/fold1.weights.npz"]
    (tmp_path / "data/features/phantom/VGG16/fold1.npz").write_text("changed")
    assert stage_outputs(tmp_path, "VGG16") != digests


def test_the_default_setting_is_glibcs_own_and_the_stage_is_timed_code():
    assert SETTINGS["glibc default"] == {"MALLOC_TOP_PAD_": "131072"} and SETTINGS["kept"] == {}
    assert RUNS == ("stages.finetune",)
