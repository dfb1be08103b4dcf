"""End to end: the real DVC pipeline in a scratch copy of the repository.

The slow tests of the suite (``-m "not slow"`` leaves them out): tiny params,
two models, then experiments, a real queue, the protocol command and a Dask sweep.
"""

import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import merged
from tests.scratch_repository import TINY, copy_repository, run, tiny_params

# One process under pytest -n builds its study once (tests/conftest.py, SHARED_STUDY_MODULES).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(trained_tiny_study, tmp_path_factory):
    """The trained TINY study (tests.scratch_repository), copied for this module's experiments."""
    repo = trained_tiny_study.copy_to(tmp_path_factory.mktemp("repo"))
    return repo, [sys.executable, "-m", "dvc"], trained_tiny_study.repro


def test_repro_runs_every_stage_and_writes_metrics(pipeline):
    repo, dvc, repro = pipeline
    for stage in ["download@phantom", "normalize@phantom", "folds@phantom", "finetune@phantom-VGG16",
                  "finetune@phantom-ResNet50", "evaluate@phantom-ResNet50", "report"]:
        assert f"Running stage '{stage}'" in repro.stdout
    assert "fold 3/3" in repro.stdout
    for model in TINY["models"]:
        metrics = json.loads((repo / f"metrics/cv/phantom/{model}.json").read_text())
        for classifier in ("dense", "svm"):
            image = metrics["image"][classifier]
            assert image["roc_auc_ci_low"] <= image["roc_auc"] <= image["roc_auc_ci_high"]
            assert {"sensitivity", "specificity", "ppv", "npv", "brier", "ece", "tp", "fn"} <= set(image)
            assert 0.0 <= metrics["folds"][classifier]["argmax_accuracy"] <= 1.0
            assert {"roc_auc", "threshold", "sensitivity", "argmax_sensitivity", "brier"} <= set(
                metrics["folds"][classifier])
        assert metrics["case"]["svm"]["roc_auc"] is not None and metrics["operating_point"] == "youden"
        assert len(list((repo / f"models/phantom/{model}/weights").glob("fold*.weights.npz"))) == 3
        assert len(list((repo / f"data/features/phantom/{model}").glob("fold*.npz"))) == 3
    summary = (repo / "metrics/summary.md").read_text()
    assert "phantom SVM" in summary and "ResNet50" in summary and "## Primary comparison" in summary
    assert "up to date" in run(dvc + ["repro"], repo).stdout


def test_plots_render_offline_and_name_every_plot(pipeline):
    repo, dvc, _ = pipeline
    run(dvc + ["plots", "show", "-o", "plots_out"], repo)
    html = (repo / "plots_out" / "index.html").read_text()
    for name in ["metrics/plots/confusion/phantom/VGG16.svm.csv", "metrics/plots/roc/phantom/ResNet50.csv",
                 "metrics/plots/training_loss/phantom/VGG16.csv", "metrics/plots/calibration/phantom/VGG16.csv",
                 "metrics/plots/training_accuracy/phantom/ResNet50.csv"]:
        assert name in html, name
    assert "<script src=" not in html            # nothing fetched from a CDN
    assert "vegaEmbed" in html and "function" in html[:200_000]   # the libraries are inlined


def run_queue(repo: Path, dvc: list[str], experiments: dict[str, list[str]]) -> dict[str, str]:
    """Queue named experiments (``dvc exp run --queue``), run the queue, return each one's log."""
    for name, overrides in experiments.items():
        run(dvc + ["exp", "run", "--queue", "--name", name, *overrides], repo)
    run(dvc + ["queue", "start"], repo)
    deadline = time.monotonic() + 900
    while True:
        status = run(dvc + ["queue", "status"], repo).stdout
        if not re.search(r"\b(Queued|Running)\b", status) or time.monotonic() > deadline:
            break
        time.sleep(2)
    run(dvc + ["queue", "stop"], repo, check=False)
    for name in experiments:
        assert re.search(rf"{name}.*Success", status), status
    return {name: run(dvc + ["queue", "logs", name], repo).stdout for name in experiments}


def test_queued_experiments_rerun_only_what_their_params_touch_and_one_applied_diffs_against_the_baseline(pipeline):
    """Queued experiments run in a temporary copy and rerun only the stages their parameters reach; an applied one
    shows in ``dvc metrics diff`` and beside the baseline in ``compare``.  (That a later experiment finds a finished
    ``finetune`` in DVC's run-cache is the Dask sweep test's assembly check.)"""
    repo, dvc, _ = pipeline
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "baseline"], repo)
    before = json.loads((repo / "metrics/cv/phantom/ResNet50.json").read_text())
    logs = run_queue(repo, dvc, {"svm-only": ["-S", "svm.C_grid=[0.01,1.0]"], "half": ["-S", "ft_fraction=0.5"]})
    # check_params runs whenever a parameter changed, and folds whenever an svm parameter did (it checks the
    # inner splits the SVM needs); each takes about a second, and its output is unchanged, so it never makes
    # another stage rerun.  The data stages are reused.
    ran = {name: set(re.findall(r"Running stage '([^'@]+)", log)) - {"check_params", "folds"}
           for name, log in logs.items()}
    assert ran["svm-only"] == {"evaluate", "report"}, logs["svm-only"]
    assert ran["half"] == {"finetune", "evaluate", "report"}, logs["half"]
    try:
        run(dvc + ["exp", "apply", "half"], repo)
        after = json.loads((repo / "metrics/cv/phantom/ResNet50.json").read_text())
        assert before["layers_trained"] == 16 and after["layers_trained"] == 53
        diff = run(dvc + ["metrics", "diff", "--json"], repo).stdout
        changes = json.loads(diff)["metrics/cv/phantom/ResNet50.json"]
        assert changes["layers_trained"] == {"old": 16, "new": 53, "diff": 37}
        table = run(dvc + ["metrics", "diff"], repo).stdout
        assert "metrics/cv/phantom/ResNet50.json" in table and "layers_trained" in table
        shown = json.loads(run(dvc + ["exp", "show", "--json"], repo).stdout)
        assert shown  # experiments are listed
        compared = run([sys.executable, "-m", "ultrasound_transfer", "compare"], repo).stdout
        table = [[cell.strip() for cell in line.split("|")[1:-1]] for line in compared.splitlines()
                 if line.startswith("| ResNet50")]
        assert {(row[1], row[3] != "—", row[4] != "—") for row in table} >= {("0.15", True, True), ("0.5", True, True)}
        assert "Best ft_fraction per model" in compared
        assert (repo / "metrics/compare/roc_auc_vs_ft_fraction.html").is_file()
    finally:        # back to the baseline for the next tests
        run(["git", "checkout", "--", "."], repo)             # params.yaml, dvc.lock and the uncached metrics
        run(dvc + ["checkout", "--force"], repo)


def test_protocol_grid_is_rerunnable_and_leaves_params_yaml_alone(pipeline):
    repo, dvc, _ = pipeline
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "baseline"], repo)
    params_before = (repo / "params.yaml").read_bytes()
    # The demo protocol, at the tiny settings of this repository.
    command = [sys.executable, "-m", "ultrasound_transfer", "protocol", "demo", "--strategies", "0.15,0",
               "-S", "image_size=32", "-S", "finetune.epochs=1", "-S", "finetune.batch_size=8"]
    first = run(command, repo)
    assert first.stdout.count("dvc exp run --name demo-ft") == 2
    assert "Running stage 'download" not in first.stdout and "Running stage 'normalize" not in first.stdout
    names = run(dvc + ["exp", "list", "--name-only"], repo).stdout.split()
    assert {"demo-ft0.15", "demo-ft0"} <= set(names)
    second = run(command, repo)                     # a second call: nothing left to do, no name clash
    assert second.stdout.count("exists, skipped") == 2 and "dvc exp run --name" not in second.stdout
    assert (repo / "params.yaml").read_bytes() == params_before


def test_bad_param_fails_with_message_and_no_partial_outputs(pipeline):
    repo, dvc, _ = pipeline
    result = run(dvc + ["exp", "run", "-S", "image_size=16"], repo, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "image_size = 16: must be an integer in [32, 2048]" in output and "Traceback" not in output
    assert "Running stage 'normalize" not in output                # refused before any work
    assert not list((repo / "data/prepared").glob(".*tmp*"))


def test_real_dataset_layouts_download_normalize_and_fold(tmp_path):
    """dvc repro normalize folds on miniatures of the four real datasets: BUSI from a loopback
    server, Rodrigues from an archive placed by hand, DDTI and salivary glands unpacked by hand."""
    import hashlib

    from tests import miniatures
    from tests.http_server import LoopbackServer

    repo = tmp_path / "repo"
    copy_repository(repo)
    miniatures.make_busi(tmp_path / "busi")
    busi_zip = miniatures.zip_folder(tmp_path / "busi")
    miniatures.make_rodrigues(tmp_path / "rodrigues")
    (repo / "data/raw/_downloads").mkdir(parents=True)
    (repo / "data/raw/_downloads/rodrigues.zip").write_bytes(miniatures.zip_folder(tmp_path / "rodrigues"))
    miniatures.make_ddti(repo / "data/raw/ddti")
    miniatures.make_salivary(repo / "data/raw/salivary")
    with LoopbackServer() as server:
        server.files.content["/Dataset_BUSI.zip"] = busi_zip
        params = merged(yaml.safe_load((repo / "params.yaml").read_text()), {
            "datasets": ["busi", "rodrigues", "ddti", "salivary"],
            "cv": {"n_splits": 3},
            "svm": {"C_grid": []},      # the miniatures have 1 or 2 cases of a class in some SVM training parts
            "download": {"busi": {"url": server.url("/Dataset_BUSI.zip"),
                                  "sha256": hashlib.sha256(busi_zip).hexdigest()},
                         "rodrigues": {"url": None}},
        })
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run(["git", "init", "-q"], repo)
        run(["git", "add", "-A"], repo)
        run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "miniatures"], repo)
        result = run([sys.executable, "-m", "dvc", "repro", "normalize", "folds"], repo)
    assert "Running stage 'finetune" not in result.stdout
    reports = {d: json.loads((repo / f"data/prepared/{d}/report.json").read_text())
               for d in ("busi", "rodrigues", "ddti", "salivary")}
    assert reports["busi"]["classes"] == {"benign": 5, "malignant": 5}
    assert reports["rodrigues"]["classes"] == {"benign": 5, "malignant": 7}
    assert reports["ddti"]["ignored_files"]["case has no TI-RADS"] == 2
    assert reports["salivary"]["groups"] == 8
    import pandas as pd

    for dataset in reports:
        manifest = pd.read_csv(repo / f"data/prepared/{dataset}/manifest.csv", dtype=str, keep_default_na=False)
        folds = json.loads((repo / f"data/folds/{dataset}.json").read_text())["folds"]
        fold_of = {}
        for k, fold in enumerate(folds):
            for i in fold["test_indices"]:
                fold_of[i] = k
        for group, rows in manifest.groupby("group"):
            assert len({fold_of[i] for i in rows.index}) == 1, (dataset, group)


def experiment_metrics(repo: Path, dvc: list[str], name: str) -> dict[str, dict]:
    """The metrics files of experiment ``name``, from ``dvc exp show --json``."""
    def find(node):
        if isinstance(node, dict):
            if node.get("name") == name and "data" in node:
                return node["data"]["metrics"]
            node = list(node.values())
        if isinstance(node, list):
            for child in node:
                found = find(child)
                if found is not None:
                    return found
        return None

    metrics = find(json.loads(run(dvc + ["exp", "show", "--json"], repo).stdout))
    assert metrics, f"no experiment {name} in {repo}"
    return {path: entry["data"] for path, entry in metrics.items() if path.startswith("metrics/cv/")}


class KillFirstFinetune(threading.Thread):
    """Kills the first ``stages.finetune`` process started under ``folder``, once, as a crash would."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder, self.killed, self.stop = str(folder), None, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.killed is None:
            for proc in Path("/proc").iterdir():
                try:
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    where = os.readlink(proc / "cwd")
                except OSError:
                    continue
                if "stages.finetune" in command and where.startswith(self.folder):
                    time.sleep(3)          # mid-run: the network is being built or trained
                    os.kill(int(proc.name), signal.SIGKILL)
                    self.killed = command
                    return
            time.sleep(0.2)


def test_sweep_on_two_dask_workers_gives_the_plain_experiments_metrics(pipeline, tmp_path):
    """Two strategies of one network on a LocalCluster of 2 workers and a local-folder remote, one unit killed
    once: the same metrics as plain ``dvc exp run``, bit for bit, and no finetune at assembly.  One network keeps
    the test short: the units of a second would run the same code."""
    plain_repo, dvc, _ = pipeline
    repo = tmp_path / "repo"
    copy_repository(repo)
    one_network = tiny_params(models=["VGG16"])
    (repo / "params.yaml").write_text(one_network)
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "tiny params"], repo)
    killer = KillFirstFinetune(repo / ".dvc/tmp/sweep")
    killer.start()
    sweep = run([sys.executable, "-m", "ultrasound_transfer", "sweep", "-S", "ft_fraction=0.15,0", "--workers", "2",
                 "--remote", str(tmp_path / "remote"), "--retries", "2"], repo)
    killer.stop.set()
    log = sweep.stdout
    assert killer.killed, "no finetune was seen to kill"
    assert "attempt failed" in log and "FAILED" not in log, log
    assert log.count(": queued") == 2 and log.count(": done on worker") == 2, log
    assert {"worker 0", "worker 1"} <= set(re.findall(r"running on (worker \d)", log)), log
    assert log.count("experiment assembled (1 finetune stage(s) from the run-cache; ran ") == 2, log
    assert "ran again" not in log, log
    names = set(run(dvc + ["exp", "list", "--name-only"], repo).stdout.split())
    assert {"sweep-ft0.15", "sweep-ft0"} <= names
    # The same grid with plain dvc exp run, one by one, in the repository of the other tests
    # (whose finished stages DVC may restore: they are plain runs' results too).
    (plain_repo / "params.yaml").write_text(one_network)
    run(["git", "add", "-A"], plain_repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "plain"],
        plain_repo)
    for ft in ("0.15", "0"):
        run(dvc + ["exp", "run", "--temp", "--name", f"plain-ft{ft}", "-S", f"ft_fraction={ft}"], plain_repo)
        assert experiment_metrics(repo, dvc, f"sweep-ft{ft}") == experiment_metrics(plain_repo, dvc, f"plain-ft{ft}")
    again = run([sys.executable, "-m", "ultrasound_transfer", "sweep", "-S", "ft_fraction=0.15,0", "--workers", "2",
                 "--remote", str(tmp_path / "remote")], repo)
    assert again.stdout.count("exists, skipped") == 2 and "queued" not in again.stdout
