"""The demo benchmark's timing and comparison, on a two-stage DVC project made here (the demo itself is minutes)."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.demo import (
    RUNS,
    DemoRun,
    comparison_rows,
    demo_stage_modules,
    main,
    metrics_difference,
    run_demo,
    stage_times,
)

DVC_YAML = """stages:
  first:
    cmd: python first.py
    outs: [a.txt]
  second:
    cmd: python second.py
    deps: [a.txt]
    metrics: [{metrics/m.json: {cache: false}}]
"""
SCRIPTS = {"first.py": "import time\ntime.sleep(0.6)\nopen('a.txt', 'w').write('a')\n",
           "second.py": "import json\nauc = float(open('a.txt').read() == 'a')\n"
                        "json.dump({'auc': auc}, open('metrics/m.json', 'w'))\n"}


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_the_timed_stages_are_those_the_demo_runs_not_those_its_params_leave_without_an_entry():
    pipeline = {"stages": {
        "folds": {"foreach": "${datasets}", "do": {"cmd": "python -m stages.folds ${item}"}},
        "external": {"matrix": {"pair": "${external}", "model": "${models}"}, "cmd": "python -m stages.external"},
        "report": {"cmd": "python -m stages.report"}}}
    assert demo_stage_modules(pipeline, {"datasets": ["phantom"], "external": [], "models": ["VGG16"]}) == (
        "stages.folds", "stages.report")
    both = {"datasets": ["phantom"], "external": [{"train": "a", "test": "b"}], "models": ["VGG16"]}
    assert demo_stage_modules(pipeline, both) == ("stages.external", "stages.folds", "stages.report")
    assert "stages.finetune" in RUNS and "stages.external" not in RUNS          # the repository's own demo


def test_each_stage_runs_from_its_line_to_the_next_and_the_last_to_the_end():
    lines = [(0.5, "Running stage 'download@phantom':"), (0.7, "> python -m stages.download phantom"),
             (2.0, "Running stage 'finetune@phantom-VGG16':"), (9.0, "Updating lock file 'dvc.lock'")]
    assert stage_times(lines, end=10.0) == {"download@phantom": 1.5, "finetune@phantom-VGG16": 8.0}


def test_a_real_dvc_repro_is_timed_per_stage_from_a_fresh_clone_and_its_metrics_kept(tmp_path):
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "metrics/.gitkeep").write_text("")
    for name, script in SCRIPTS.items():
        (repo / name).write_text(script)
    git("init", "-q", cwd=repo)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "two stages", cwd=repo)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                            text=True).stdout.strip()
    run = run_demo(commit, tmp_path / "scratch", repo=repo)
    assert list(run.stages) == ["first", "second"]
    assert run.stages["first"] >= 0.6 and run.whole_s >= sum(run.stages.values())
    assert run.metrics == {str(Path("metrics/m.json")): b'{"auc": 1.0}'}
    assert not (tmp_path / "scratch" / commit).exists()          # the clone is removed


def test_the_table_has_every_stage_of_either_run_and_the_whole_and_names_differing_metrics():
    baseline = DemoRun("aaa", {"download@x": 2.0, "features@x": 10.0}, 40.0, {"metrics/m.json": b"1"})
    today = DemoRun("bbb", {"download@x": 1.0, "finetune@x": 20.0}, 30.0, {"metrics/m.json": b"2",
                                                                           "metrics/new.json": b"3"})
    rows = comparison_rows(baseline, today)
    assert rows == [["`download@x`", "2.0", "1.0", "0.50×"], ["`finetune@x`", "—", "20.0", "—"],
                    ["`features@x`", "10.0", "—", "—"], ["**whole run**", "40.0", "30.0", "0.75×"]]
    assert metrics_difference(baseline, today) == ["metrics/m.json", "metrics/new.json"]
    assert metrics_difference(baseline, baseline) == []


def test_no_rounds_is_refused_before_any_run_and_nothing_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["--baseline", "HEAD", "--rounds", "0", "--results-dir", str(tmp_path)])
    assert refused.value.code == 2
    assert "--rounds 0: give at least 1" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
